//! The sum of amounts per user, in the public table `user_to_amount`, fed by JSON events
//! `{"user": "<id>", "amount": <int>}` on the topic `transactions`.
//!
//! `cargo run --example user_to_amount` runs a short demo on an embedded broker: it sends
//! 1,000 transactions, waits until the table holds every user's total, and prints it.
//! With arguments it is a normal faust-rs app: `cargo run --example user_to_amount --
//! worker` runs a worker (`--help` for more; several workers with the same broker share
//! the work, each with its own `--datadir`), and `cargo run --example user_to_amount --
//! send transactions '{"user": "u1", "amount": 5}'` feeds it.
use std::collections::BTreeMap;
use std::time::Duration;

use faust::{App, Table};
use serde::{Deserialize, Serialize};

/// One transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transaction {
    user: String,
    amount: i64,
}

fn app() -> (App, Table<String, i64>) {
    let app = App::new("user-to-amount").topic_partitions(8);
    let transactions = app.topic::<String, Transaction>("transactions");
    let totals = app
        .table::<String, i64>("user_to_amount")
        .default(0)
        .public(true)
        .help("the sum of amounts per user");
    let table = totals.clone();
    app.agent("sum", &transactions, move |stream| {
        let totals = table.clone();
        async move {
            // Repartition by user: each user's transactions reach the worker that owns
            // the user's partition of the table (whatever key the producer used).
            let mut by_user = stream.group_by(|tx: &Transaction| tx.user.clone(), "by-user");
            while let Some(tx) = by_user.next().await {
                totals.update(&tx.user, |total| *total += tx.amount)?;
            }
            Ok(())
        }
    });
    (app, totals)
}

fn main() -> anyhow::Result<()> {
    let (app, totals) = app();
    if std::env::args().len() > 1 {
        app.main();
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let datadir = tempfile::tempdir()?;
        let worker = app.datadir(datadir.path()).without_web().start().await?;
        println!(
            "worker started on the embedded broker at {}",
            worker.bootstrap_servers()
        );
        let transactions = worker.app().topic::<String, Transaction>("transactions");
        let mut expected = BTreeMap::<String, i64>::new();
        let mut deliveries = Vec::new();
        for i in 0..1000u64 {
            // A small deterministic pseudo-random sequence: 10 users, amounts 1..=100.
            let x = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 33;
            let tx = Transaction {
                user: format!("u{}", x % 10),
                amount: (x % 100 + 1) as i64,
            };
            *expected.entry(tx.user.clone()).or_default() += tx.amount;
            deliveries.push(transactions.send_soon(Some(&tx.user), &tx).await?);
        }
        for d in deliveries {
            d.await?;
        }
        println!("sent 1000 transactions");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut done = true;
            for (user, total) in &expected {
                done &= totals.get(user)? == Some(*total);
            }
            if done {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the table did not add up in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{:<6} {:>8}", "user", "total");
        for user in expected.keys() {
            println!("{user:<6} {:>8}", totals.get_or_default(user)?);
        }
        println!("all 1000 transactions are in the table user_to_amount; stopping");
        worker.shutdown().await?;
        Ok(())
    })
}
