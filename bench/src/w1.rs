//! W1 "passthrough count": the cost of the faust-rs framework over the bare client.
//!
//! 1,000,000 JSON events `{"user": "u<k>", "amount": <int>}` (10,000 distinct users) are
//! produced once, lz4-compressed and partitioned by key with murmur2 (Kafka's Java
//! partitioner), into a 4-partition topic of an in-process mock cluster; the watermarks
//! are checked so that no event was dropped by the mock's 5 MiB-per-partition cap. Then,
//! per trial, a faust-rs agent and a bare rdkafka-async consume loop each read all of
//! them, decode the JSON and count events per user. Timed from the first event to the
//! last; CPU is the whole process's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use rdkafka_async::{
    ClientConfig, Compression, Consumer, MockCluster, Offset, Producer, Record, TopicPartitionList,
};
use serde::{Deserialize, Serialize};

use crate::measure::{thousands, Run, Span, Trials};

pub(crate) const TOPIC: &str = "w1-transactions";

/// Options of `faust-bench w1`.
#[derive(Debug, clap::Args)]
pub(crate) struct W1Args {
    /// Events to produce and count.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Distinct users (keys).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) users: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    pub(crate) partitions: i32,
    /// Trials per contender (the best counts; a trial takes about a second).
    #[arg(long, default_value_t = 5)]
    pub(crate) trials: usize,
    /// Run only the faust-rs agent (for profiling); no ratios line.
    #[arg(long)]
    pub(crate) only_agent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Transaction {
    pub(crate) user: String,
    pub(crate) amount: i64,
}

/// The events W1 (and W2) produce, in order: a fixed xorshift sequence, so every run and
/// every benchmark sees the same data.
pub(crate) fn transactions(events: u64, users: u64) -> impl Iterator<Item = Transaction> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..events).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Transaction {
            user: format!("u{}", x % users),
            amount: (x >> 20) as i64 % 1000,
        }
    })
}

fn consumer_settings(config: ClientConfig) -> ClientConfig {
    // The same fetch settings as the client benchmark, for both contenders.
    config
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", "1")
}

pub(crate) fn run(runtime: &tokio::runtime::Runtime, args: W1Args) -> Result<()> {
    runtime.block_on(async {
        let cluster = MockCluster::new(1)?;
        cluster.create_topic(TOPIC, args.partitions, 1)?;
        let bootstrap = cluster.bootstrap_servers();
        let expected = produce(&bootstrap, &args).await?;
        println!(
            "W1: {} JSON events, {} users, {} partitions, lz4 + murmur2 key partitioning; watermarks checked (nothing dropped)",
            args.events, args.users, args.partitions
        );
        let mut raw = Trials::default();
        let mut agent = Trials::default();
        for trial in 0..args.trials {
            // Alternate who goes first.
            let order = if trial % 2 == 0 { [false, true] } else { [true, false] };
            for faust_first in order {
                if args.only_agent && !faust_first {
                    continue;
                }
                if faust_first {
                    let r = faust_trial(&cluster, &bootstrap, &args, trial, &expected).await?;
                    eprintln!("  trial {trial}: faust-rs agent {}/s", thousands(r.rate()));
                    agent.runs.push(r);
                } else {
                    let r = raw_trial(&bootstrap, &args, &expected).await?;
                    eprintln!("  trial {trial}: raw consume loop {}/s", thousands(r.rate()));
                    raw.runs.push(r);
                }
            }
        }
        if args.only_agent {
            println!("faust-rs agent: {}/s, {:.3} CPU s/M", thousands(agent.best_rate()), agent.best_cpu_per_million());
            return Ok(());
        }
        println!("{:<36} {:>14} {:>14}", "contender", "best events/s", "CPU s/M events");
        for (name, t) in [("faust-rs agent (App + agent)", &agent), ("rdkafka-async consume loop", &raw)] {
            println!("{name:<36} {:>14} {:>14.3}", thousands(t.best_rate()), t.best_cpu_per_million());
        }
        println!("ratios w1_vs_raw_consume={:.2}", agent.best_rate() / raw.best_rate());
        Ok(())
    })
}

/// Produces the events; returns the expected count per user.
pub(crate) async fn produce(bootstrap: &str, args: &W1Args) -> Result<HashMap<String, u64>> {
    let producer = Producer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .compression(Compression::Lz4)
            .linger(Duration::from_millis(50))
            .set("partitioner", "murmur2_random")
            .set("batch.num.messages", "100000")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "2000000"),
    )?;
    let mut expected = HashMap::new();
    let mut pending = Vec::with_capacity(args.events as usize);
    for tx in transactions(args.events, args.users) {
        *expected.entry(tx.user.clone()).or_default() += 1;
        let value = serde_json::to_vec(&tx)?;
        pending.push(
            producer
                .send(Record::to(TOPIC).key(&tx.user).value(&value))
                .await?,
        );
    }
    for d in pending {
        d.await?;
    }
    let total = crate::measure::stored_records(bootstrap, TOPIC, args.partitions).await?;
    ensure!(
        total as u64 == args.events,
        "{total} events stored, expected {}",
        args.events
    );
    Ok(expected)
}

fn tpl(args: &W1Args) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_range(TOPIC, 0..args.partitions, Offset::Beginning);
    tpl
}

/// The bare client: decode and count per user.
async fn raw_trial(bootstrap: &str, args: &W1Args, expected: &HashMap<String, u64>) -> Result<Run> {
    let mut consumer = Consumer::new(consumer_settings(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id("w1-raw"),
    ))?;
    consumer.assign(&tpl(args)).await?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut count = |m: &rdkafka_async::Message| -> Result<()> {
        let tx: Transaction = serde_json::from_slice(m.payload().unwrap_or_default())?;
        *counts.entry(tx.user).or_default() += 1;
        Ok(())
    };
    count(&consumer.recv().await?)?;
    let span = Span::start();
    for _ in 1..args.events {
        count(&consumer.recv().await?)?;
    }
    let run = span.stop(args.events - 1);
    ensure!(&counts == expected, "the raw loop's counts are wrong");
    consumer.close().await?;
    Ok(run)
}

/// The framework: an App with one agent that decodes and counts per user.
pub(crate) async fn faust_trial(
    cluster: &MockCluster,
    bootstrap: &str,
    args: &W1Args,
    trial: usize,
    expected: &HashMap<String, u64>,
) -> Result<Run> {
    let id = format!("w1-faust-{trial}");
    // The mock has no CreateTopics: the app's tasks topic is made beforehand.
    cluster.create_topic(&format!("{id}-__assignor"), args.partitions, 1)?;
    let app = faust::App::new(id).broker(bootstrap)?.without_web();
    app.configure(|s| {
        s.kafka.insert("fetch.queue.backoff.ms".into(), "10".into());
        s.kafka.insert("fetch.wait.max.ms".into(), "1".into());
    });
    let topic = app
        .topic::<String, Transaction>(TOPIC)
        .partitions(args.partitions);
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let seen = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Run>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let n = args.events;
    {
        let (counts, seen) = (counts.clone(), seen.clone());
        app.agent("count", &topic, move |mut stream| {
            let (counts, seen, done_tx) = (counts.clone(), seen.clone(), done_tx.clone());
            async move {
                let mut local: HashMap<String, u64> = HashMap::new();
                let mut span = None;
                while let Some(tx) = stream.next().await {
                    *local.entry(tx.user).or_default() += 1;
                    let i = seen.fetch_add(1, Ordering::Relaxed) + 1;
                    if i == 1 {
                        span = Some(Span::start());
                    }
                    if i == n {
                        let run = span.take().map(|s| s.stop(n - 1));
                        *counts.lock().unwrap() = std::mem::take(&mut local);
                        if let (Some(run), Some(tx)) = (run, done_tx.lock().unwrap().take()) {
                            let _ = tx.send(run);
                        }
                    }
                }
                Ok(())
            }
        });
    }
    let worker = app.start().await?;
    let run = tokio::time::timeout(Duration::from_secs(300), done_rx)
        .await
        .context("the faust-rs agent did not count every event in time")??;
    worker.shutdown().await?;
    ensure!(
        &*counts.lock().unwrap() == expected,
        "the agent's counts are wrong"
    );
    Ok(run)
}
