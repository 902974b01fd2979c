//! Total amount per user, from JSON events `{"user": "<id>", "amount": <int>}` on the topic
//! `transactions`.
//!
//! `cargo run --example user_to_amount` runs a short demo on an embedded broker: it sends
//! 1,000 random transactions and prints each user's total. With arguments it is a normal
//! faust-rs app: `cargo run --example user_to_amount -- worker` runs a worker (`--help` for
//! more), and `cargo run --example user_to_amount -- send transactions '{"user": "u1",
//! "amount": 5}'` feeds it.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faust::App;
use serde::{Deserialize, Serialize};

/// One transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transaction {
    user: String,
    amount: i64,
}

type Totals = Arc<Mutex<BTreeMap<String, i64>>>;

fn app(totals: Totals) -> App {
    let app = App::new("user-to-amount").topic_partitions(4);
    let transactions = app.topic::<String, Transaction>("transactions");
    app.agent("sum", &transactions, move |stream| {
        let totals = totals.clone();
        async move {
            // Repartition by user, so that each user's transactions reach one worker.
            let mut by_user = stream.group_by(|tx: &Transaction| tx.user.clone(), "by-user");
            while let Some(tx) = by_user.next().await {
                *totals.lock().unwrap().entry(tx.user).or_default() += tx.amount;
            }
            Ok(())
        }
    });
    app
}

fn main() -> anyhow::Result<()> {
    let totals = Totals::default();
    let app = app(totals.clone());
    if std::env::args().len() > 1 {
        app.main();
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let worker = app.without_web().start().await?;
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
        while *totals.lock().unwrap() != expected {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "totals did not add up in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{:<6} {:>8}", "user", "total");
        for (user, total) in totals.lock().unwrap().iter() {
            println!("{user:<6} {total:>8}");
        }
        println!("all 1000 transactions counted; stopping");
        worker.shutdown().await?;
        Ok(())
    })
}
