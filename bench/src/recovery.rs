//! Recovery: rebuilding a table from its changelog into an empty data directory.
//!
//! 1. 1,000,000 events with distinct keys (`k0000000` ...; value: the key's number) are
//!    produced (lz4, murmur2 key partitioning) into a 16-partition topic of an in-process
//!    mock cluster; a table app (`Table<String, i64>`, 16 partitions) sets `state[key] =
//!    value` for each, then stops: its flushes wrote the changelog
//!    `recovery-bench-state-changelog`, 1,000,000 data records (one per key) plus the commit
//!    markers. The changelog is read back to count them, and its low watermarks must be 0
//!    (the mock drops data past 5 MiB per partition: 16 partitions keep each far below).
//! 2. A fresh worker of the same app starts with an EMPTY data directory: on assignment it
//!    restores every partition from the changelog before processing. Timed from just before
//!    `App::start` until both `recovered_records` (records applied to LMDB by recovery)
//!    reaches the changelog's committed data-record count and every task is active (a task
//!    becomes active when its restore ended); the time to the first applied record
//!    (start-up: group join, assignment, watermark look-ups) is shown apart. Then the table
//!    must hold every key with its value.
//!
//! Between the two, the benchmark waits until the mock broker has emptied the group the
//! first worker left: the mock keeps such a group rebalancing for the session timeout
//! minus 1 s (44 s with librdkafka's default `session.timeout.ms`) before it admits a new
//! member, which a real broker does not do; both apps use a 2 s session timeout for this.
//!
//! The last line is `ratios recovery_records_per_s=X` (records/s from the worker's start).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka_async::{
    ClientConfig, Compression, Consumer, MockCluster, Offset, Producer, Record, TopicPartitionList,
};

use crate::measure::{process_cpu_time, thousands};
use crate::w2::{check_changelog, TempDir};

const APP_ID: &str = "recovery-bench";
const TOPIC: &str = "recovery-events";
const TABLE: &str = "state";
const SESSION_TIMEOUT_MS: u64 = 2000;
/// As written by faust-rs's table flushes (`table::changelog`).
const MARKER_HEADER: &str = "faust-marker";

/// Options of `faust-bench recovery`.
#[derive(Debug, clap::Args)]
pub(crate) struct RecoveryArgs {
    /// Distinct keys (one changelog data record each).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Partitions of the topic, the table and its changelog.
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Leave librdkafka's fetch settings at their defaults (by default the benchmark sets
    /// `fetch.queue.backoff.ms=10` and `fetch.wait.max.ms=1` for the apps, as W1 and W2).
    #[arg(long)]
    librdkafka_fetch_defaults: bool,
}

fn key(i: u64) -> String {
    format!("k{i:07}")
}

/// The app, its table and its source topic.
type Parts = (
    faust::App,
    faust::Table<String, i64>,
    faust::Topic<String, i64>,
);

fn app(bootstrap: &str, args: &RecoveryArgs, datadir: &std::path::Path) -> Result<Parts> {
    let app = faust::App::new(APP_ID)
        .broker(bootstrap)?
        .without_web()
        .datadir(datadir)
        .topic_partitions(args.partitions);
    app.configure(|s| {
        // The mock broker keeps a group whose last member left rebalancing for
        // `session.timeout.ms` - 1 s before a new member is admitted: short, so that the
        // rebuild can wait it out (see `run`).
        s.kafka
            .insert("session.timeout.ms".into(), SESSION_TIMEOUT_MS.to_string());
        s.kafka.insert("heartbeat.interval.ms".into(), "200".into());
    });
    if !args.librdkafka_fetch_defaults {
        app.configure(|s| {
            s.kafka.insert("fetch.queue.backoff.ms".into(), "10".into());
            s.kafka.insert("fetch.wait.max.ms".into(), "1".into());
        });
    }
    let topic = app.topic::<String, i64>(TOPIC).partitions(args.partitions);
    let table = app.table::<String, i64>(TABLE).partitions(args.partitions);
    Ok((app, table, topic))
}

pub(crate) fn run(runtime: &tokio::runtime::Runtime, args: RecoveryArgs) -> Result<()> {
    runtime.block_on(async {
        let cluster = MockCluster::new(1)?;
        let bootstrap = cluster.bootstrap_servers();
        let changelog = format!("{APP_ID}-{TABLE}-changelog");
        // The mock has no CreateTopics: every topic of the app is made beforehand.
        for name in [TOPIC.to_owned(), changelog.clone(), format!("{APP_ID}-__assignor")] {
            cluster.create_topic(&name, args.partitions, 1)?;
        }
        // The cluster map of workers with tables (one partition).
        cluster.create_topic(&format!("{APP_ID}-__cluster"), 1, 1)?;

        // 1. Build the changelog through a table app.
        let started = Instant::now();
        produce(&bootstrap, &args).await?;
        let produced_s = started.elapsed().as_secs_f64();
        let build_dir = TempDir::new("recovery-build")?;
        let started = Instant::now();
        build(&bootstrap, &args, build_dir.path()).await?;
        let build_s = started.elapsed().as_secs_f64();
        let build_left = Instant::now();
        drop(build_dir);
        let offsets = check_changelog(&bootstrap, &changelog, args.partitions).await?;
        let census = read_changelog(&bootstrap, &changelog, args.partitions).await?;
        ensure!(
            census.distinct_keys == args.keys,
            "the changelog holds {} distinct keys, expected {}",
            census.distinct_keys,
            args.keys
        );
        ensure!(
            census.data == args.keys,
            "the changelog holds {} data records, expected one per key ({})",
            census.data,
            args.keys
        );
        ensure!(
            census.committed == census.data,
            "{} of the changelog's {} data records are not followed by a commit marker",
            census.data - census.committed,
            census.data
        );
        println!(
            "recovery: changelog {changelog}: {} partitions, {} data records ({} distinct keys), {} commit markers, {} offsets; low watermarks 0 (nothing dropped)",
            args.partitions,
            thousands(census.data as f64),
            thousands(census.distinct_keys as f64),
            thousands(census.markers as f64),
            thousands(offsets as f64)
        );
        println!(
            "  built in {build_s:.2} s by the table app ({} events produced in {produced_s:.2} s before)",
            thousands(args.keys as f64)
        );
        if args.librdkafka_fetch_defaults {
            println!("  librdkafka fetch settings: defaults");
        } else {
            println!("  librdkafka fetch settings: fetch.queue.backoff.ms=10 fetch.wait.max.ms=1");
        }

        // 2. Rebuild into an empty data directory. First the mock's group, left by the
        // build worker, must be empty again (its rebalance timer: session timeout - 1 s);
        // a real broker's group is empty as soon as its last member leaves.
        let group_empty = build_left + Duration::from_millis(SESSION_TIMEOUT_MS);
        tokio::time::sleep_until(group_empty.into()).await;
        let empty = TempDir::new("recovery-rebuild")?;
        let (rebuilt, table, _topic) = app(&bootstrap, &args, empty.path())?;
        let cpu0 = process_cpu_time();
        let t0 = Instant::now();
        let worker = rebuilt.start().await?;
        let started_s = t0.elapsed().as_secs_f64();
        let mut first = None;
        let mut data_at = None;
        let mut active_at = None;
        let deadline = t0 + Duration::from_secs(300);
        let total_s = loop {
            let n = worker.monitor().snapshot().recovered_records;
            let at = t0.elapsed().as_secs_f64();
            if n > 0 && first.is_none() {
                first = Some((at, n));
            }
            if n >= census.committed && data_at.is_none() {
                data_at = Some(at);
            }
            if active_at.is_none() && worker.active_tasks().len() == args.partitions as usize {
                active_at = Some(at);
            }
            if data_at.is_some() && active_at.is_some() {
                break at;
            }
            if Instant::now() > deadline {
                bail!(
                    "after 300 s the rebuild applied {n} of {} records; {} of {} tasks active",
                    census.committed,
                    worker.active_tasks().len(),
                    args.partitions
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let cpu = process_cpu_time().saturating_sub(cpu0).as_secs_f64();
        let recovered = worker.monitor().snapshot().recovered_records;
        ensure!(
            recovered == census.committed,
            "recovery applied {recovered} records; the changelog has {} committed",
            census.committed
        );
        // Every key with its value.
        let mut held = 0u64;
        for p in 0..args.partitions {
            for (k, v) in table.partition_items(p)? {
                let i: u64 = k
                    .strip_prefix('k')
                    .and_then(|d| d.parse().ok())
                    .with_context(|| format!("an unexpected key {k:?} in the rebuilt table"))?;
                ensure!(i < args.keys && v == i as i64, "rebuilt state[{k}] = {v}");
                held += 1;
            }
        }
        ensure!(held == args.keys, "the rebuilt table holds {held} keys, expected {}", args.keys);

        // 3. Standby takeover: a second worker joins (it restores the tasks it gets and
        // keeps standby copies of the others); once its copies are current, the first
        // worker stops, and the second takes every task over.
        let second_dir = TempDir::new("recovery-standby")?;
        let (app2, _table2, _topic2) = app(&bootstrap, &args, second_dir.path())?;
        let second = app2.start().await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let standby_caught_up = loop {
            let n = second.monitor().snapshot().recovered_records;
            let shared = !second.active_tasks().is_empty()
                && second.active_tasks().len() + worker.active_tasks().len()
                    == args.partitions as usize;
            if shared && n >= census.committed {
                break n;
            }
            if Instant::now() > deadline {
                bail!("the second worker holds {n} of {} records after 300 s", census.committed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let moving = worker.active_tasks().len();
        let t1 = Instant::now();
        worker.shutdown().await?;
        let stopped_s = t1.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(300);
        while second.active_tasks().len() < args.partitions as usize {
            if Instant::now() > deadline {
                bail!("the standby did not take every task over within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let takeover_s = t1.elapsed().as_secs_f64();
        let replayed = second.monitor().snapshot().recovered_records - standby_caught_up;
        println!(
            "standby takeover: {moving} tasks moved to the worker holding their standby copies in {takeover_s:.3} s after the owner began stopping (its graceful stop took {stopped_s:.3} s; the rest is the group's rebalance, session.timeout.ms={SESSION_TIMEOUT_MS} on the mock); {replayed} changelog records replayed"
        );
        second.shutdown().await?;

        let (first_s, first_n) = first.unwrap_or((total_s, recovered));
        let data_s = data_at.unwrap_or(total_s);
        let active_s = active_at.unwrap_or(total_s);
        let rate = recovered as f64 / total_s;
        let apply_rate = (recovered - first_n) as f64 / (data_s - first_s).max(1e-9);
        println!(
            "rebuild into an empty data dir: {} records in {total_s:.3} s from the worker's start to all {} partitions restored = {} records/s, {:.3} CPU s/M records",
            thousands(recovered as f64),
            args.partitions,
            thousands(rate),
            cpu / (recovered as f64 / 1e6)
        );
        println!(
            "  App::start returned after {started_s:.3} s; first records applied after {first_s:.3} s; all records in LMDB after {data_s:.3} s ({} records/s from the first); all tasks active after {active_s:.3} s",
            thousands(apply_rate)
        );
        println!("  check: the rebuilt table holds all {} keys with their values", thousands(held as f64));
        println!("ratios recovery_records_per_s={rate:.0} standby_takeover_s={:.3}", takeover_s);
        Ok(())
    })
}

/// Produces one event per key; checks that the topic holds all of them.
async fn produce(bootstrap: &str, args: &RecoveryArgs) -> Result<()> {
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
    let mut pending = Vec::with_capacity(args.keys as usize);
    for i in 0..args.keys {
        let value = serde_json::to_vec(&(i as i64))?;
        pending.push(
            producer
                .send(Record::to(TOPIC).key(&key(i)).value(&value))
                .await?,
        );
    }
    for d in pending {
        d.await?;
    }
    let total = crate::measure::stored_records(bootstrap, TOPIC, args.partitions).await?;
    ensure!(
        total as u64 == args.keys,
        "{total} events stored, expected {}",
        args.keys
    );
    Ok(())
}

/// Runs the table app over every event (one `set` each), then stops it (its last flush).
async fn build(bootstrap: &str, args: &RecoveryArgs, datadir: &std::path::Path) -> Result<()> {
    let (app, table, topic) = app(bootstrap, args, datadir)?;
    let n = args.keys;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(done_tx)));
    {
        let table = table.clone();
        app.agent("set", &topic, move |mut stream| {
            let (table, done_tx) = (table.clone(), done_tx.clone());
            async move {
                while let Some((k, v)) = stream.next_item().await {
                    table.set(&k.unwrap_or_default(), v)?;
                    if table.writes() == n {
                        if let Some(tx) = done_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                    }
                }
                Ok(())
            }
        });
    }
    let worker = app.start().await?;
    tokio::time::timeout(Duration::from_secs(300), done_rx)
        .await
        .context("the table app did not write every key in time")??;
    worker.shutdown().await?;
    Ok(())
}

/// What the changelog holds.
#[derive(Debug, Default)]
struct Census {
    /// Data records.
    data: u64,
    /// Data records followed by a commit marker (what recovery applies).
    committed: u64,
    /// Commit and abort markers.
    markers: u64,
    distinct_keys: u64,
}

/// Reads every changelog partition to its high watermark.
async fn read_changelog(bootstrap: &str, topic: &str, partitions: i32) -> Result<Census> {
    let mut consumer = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id("recovery-census")
            .set("fetch.queue.backoff.ms", "10")
            .set("fetch.wait.max.ms", "1"),
    )?;
    let mut remaining = 0i64;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .await?;
        if high > 0 {
            tpl.add(topic, p, Offset::Beginning);
            remaining += high;
        }
    }
    consumer.assign(&tpl).await?;
    let mut census = Census::default();
    let mut held = vec![0u64; partitions as usize];
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    while remaining > 0 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("reading the changelog back timed out")??;
        remaining -= 1;
        let p = m.partition() as usize;
        match m.headers().last(MARKER_HEADER) {
            Some(Some(b"commit")) => {
                census.markers += 1;
                census.committed += std::mem::take(&mut held[p]);
            }
            Some(_) => {
                census.markers += 1;
                held[p] = 0;
            }
            None => {
                census.data += 1;
                held[p] += 1;
                keys.insert(m.key().unwrap_or_default().to_vec());
            }
        }
    }
    census.distinct_keys = keys.len() as u64;
    consumer.close().await?;
    Ok(census)
}
