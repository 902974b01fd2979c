//! W2 "table aggregate": W1's events summed per user into a table with its changelog.
//!
//! The same 1,000,000 JSON events as W1 (`{"user": "u<k>", "amount": <int>}`, 10,000 users,
//! lz4, murmur2 key partitioning, 4 partitions, produced once by W1's code onto one
//! in-process mock cluster). Per trial, two faust-rs apps read all of them, in turns:
//!
//! * **W1**: W1's agent (decode, count per user in a local map);
//! * **W2**: an agent doing `totals[user] += amount` (`Table::update`) on a table whose
//!   changelog (`<app id>-totals-changelog`, as many partitions as the topic) is written
//!   by the worker's flushes (every commit: each second or each 10,000 events, the
//!   defaults), with its LMDB store in a fresh data directory under the system's temp dir.
//!
//! Timed from the first event to the last one handled by the agent (as W1); CPU is the whole
//! process's (mock broker, librdkafka, LMDB and flushes included). After each W2 trial the
//! table is checked (every user's sum, and the sum over the table, against the produced
//! amounts) and the changelog's low watermarks must be 0 (the mock drops data past
//! 5 MiB per partition). The last line is `ratios w2_vs_w1=X`: W2's best events/s over
//! W1's agent's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka_async::MockCluster;

use crate::measure::{thousands, Run, Span, Trials};
use crate::w1::{self, Transaction, W1Args, TOPIC};

/// Options of `faust-bench w2`.
#[derive(Debug, clap::Args)]
pub(crate) struct W2Args {
    /// Events to produce and sum.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Distinct users (keys).
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Partitions of the topic (and of the table and its changelog).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Trials per contender (the best counts).
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Also time each `Table::update` call (a breakdown; adds two clock reads per event).
    #[arg(long)]
    time_updates: bool,
    /// The W2 app's `commit_every` (default: faust-rs's, 10,000 events): each commit
    /// flushes the table.
    #[arg(long)]
    commit_every: Option<u64>,
}

/// A directory under the system's temp dir, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory named after `name` and this process.
    pub(crate) fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("faust-bench-{}-{name}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Per user: the sum of the amounts produced.
type Sums = HashMap<String, i64>;

/// What a W2 trial saw besides its timing (for the breakdown).
#[derive(Debug, Default, Clone, Copy)]
struct Details {
    /// Commits (each with a table flush) during the trial.
    commits: u64,
    /// Their mean latency (flush + commit), ms.
    commit_avg_ms: f64,
    /// From the last event handled to the end of the worker's shutdown (last flush), s.
    shutdown_s: f64,
    /// Time spent inside `Table::update` (with `--time-updates`), s.
    update_s: f64,
    /// The changelog's records (data and commit markers of every flush, the last included).
    changelog_offsets: i64,
}

pub(crate) fn run(runtime: &tokio::runtime::Runtime, args: W2Args) -> Result<()> {
    runtime.block_on(async {
        let cluster = MockCluster::new(1)?;
        cluster.create_topic(TOPIC, args.partitions, 1)?;
        let bootstrap = cluster.bootstrap_servers();
        let w1_args = W1Args {
            events: args.events,
            users: args.users,
            partitions: args.partitions,
            trials: args.trials,
            only_agent: true,
        };
        let counts = w1::produce(&bootstrap, &w1_args).await?;
        let mut sums: Sums = HashMap::new();
        for tx in w1::transactions(args.events, args.users) {
            *sums.entry(tx.user).or_default() += tx.amount;
        }
        let total: i64 = sums.values().sum();
        println!(
            "W2: {} JSON events (W1's data), {} users, {} partitions; W1's faust-rs agent vs an agent doing totals[user] += amount on a table with its changelog",
            args.events, args.users, args.partitions
        );
        let mut w1_trials = Trials::default();
        let mut w2_trials = Trials::default();
        let mut details = Vec::new();
        for trial in 0..args.trials {
            let order = if trial % 2 == 0 { [true, false] } else { [false, true] };
            for table_first in order {
                if table_first {
                    let (r, d) = table_trial(&cluster, &bootstrap, &args, trial, &sums, total).await?;
                    eprintln!(
                        "  trial {trial}: W2 table agent {}/s, {:.3} CPU s/M ({} commits, avg {:.1} ms; {} changelog offsets; shutdown {:.2} s{})",
                        thousands(r.rate()),
                        r.cpu_per_million(),
                        d.commits,
                        d.commit_avg_ms,
                        thousands(d.changelog_offsets as f64),
                        d.shutdown_s,
                        if args.time_updates {
                            format!("; Table::update {:.3} s of {:.3} s", d.update_s, r.wall.as_secs_f64())
                        } else {
                            String::new()
                        }
                    );
                    w2_trials.runs.push(r);
                    details.push(d);
                } else {
                    let r = w1::faust_trial(&cluster, &bootstrap, &w1_args, trial, &counts).await?;
                    eprintln!(
                        "  trial {trial}: W1 faust-rs agent {}/s, {:.3} CPU s/M",
                        thousands(r.rate()),
                        r.cpu_per_million()
                    );
                    w1_trials.runs.push(r);
                }
            }
        }
        println!("{:<44} {:>14} {:>14}", "contender", "best events/s", "CPU s/M events");
        for (name, t) in [
            ("W1 faust-rs agent (count per user)", &w1_trials),
            ("W2 faust-rs agent (table update, changelog)", &w2_trials),
        ] {
            println!("{name:<44} {:>14} {:>14.3}", thousands(t.best_rate()), t.best_cpu_per_million());
        }
        let n = details.len().max(1) as f64;
        println!(
            "W2 per trial (mean of {}): {:.0} commits (each flushes the table), {:.1} ms per commit, {} changelog records (data + markers), {:.2} s from the last event to the worker stopped (last flush)",
            details.len(),
            details.iter().map(|d| d.commits as f64).sum::<f64>() / n,
            details.iter().map(|d| d.commit_avg_ms).sum::<f64>() / n,
            thousands(details.iter().map(|d| d.changelog_offsets as f64).sum::<f64>() / n),
            details.iter().map(|d| d.shutdown_s).sum::<f64>() / n,
        );
        println!("W2 check: every trial's table sums equal the produced amounts (total {total}); changelog low watermarks 0");
        println!("ratios w2_vs_w1={:.2}", w2_trials.best_rate() / w1_trials.best_rate());
        Ok(())
    })
}

/// The W2 app: one agent summing amounts per user into a table.
async fn table_trial(
    cluster: &MockCluster,
    bootstrap: &str,
    args: &W2Args,
    trial: usize,
    sums: &Sums,
    total: i64,
) -> Result<(Run, Details)> {
    let id = format!("w2-faust-{trial}");
    // The mock has no CreateTopics: the app's internal topics are made beforehand.
    let changelog = format!("{id}-totals-changelog");
    cluster.create_topic(&changelog, args.partitions, 1)?;
    cluster.create_topic(&format!("{id}-__assignor"), args.partitions, 1)?;
    // The cluster map of workers with tables (one partition).
    cluster.create_topic(&format!("{id}-__cluster"), 1, 1)?;
    let datadir = TempDir::new(&id)?;
    let app = faust::App::new(id.clone())
        .broker(bootstrap)?
        .without_web()
        .datadir(datadir.path())
        .topic_partitions(args.partitions);
    app.configure(|s| {
        s.kafka.insert("fetch.queue.backoff.ms".into(), "10".into());
        s.kafka.insert("fetch.wait.max.ms".into(), "1".into());
        if let Some(n) = args.commit_every {
            s.commit_every = n;
        }
    });
    let topic = app
        .topic::<String, Transaction>(TOPIC)
        .partitions(args.partitions);
    let totals = app
        .table::<String, i64>("totals")
        .default(0)
        .partitions(args.partitions);
    ensure!(
        totals.changelog_topic() == changelog,
        "unexpected changelog name {}",
        totals.changelog_topic()
    );
    let seen = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Run>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let n = args.events;
    let timed = args.time_updates;
    let update_ns = Arc::new(AtomicU64::new(0));
    {
        let (totals, seen, update_ns) = (totals.clone(), seen.clone(), update_ns.clone());
        app.agent("sum", &topic, move |mut stream| {
            let (totals, seen, done_tx, update_ns) = (
                totals.clone(),
                seen.clone(),
                done_tx.clone(),
                update_ns.clone(),
            );
            async move {
                let mut span = None;
                while let Some(tx) = stream.next().await {
                    if timed {
                        let t = Instant::now();
                        totals.update(&tx.user, |v| *v += tx.amount)?;
                        update_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    } else {
                        totals.update(&tx.user, |v| *v += tx.amount)?;
                    }
                    let i = seen.fetch_add(1, Ordering::Relaxed) + 1;
                    if i == 1 {
                        span = Some(Span::start());
                    }
                    if i == n {
                        let run = span.take().map(|s| s.stop(n - 1));
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
        .context("the W2 agent did not handle every event in time")??;
    let after_last = Instant::now();
    // Correctness: every user's total (unflushed writes included; `get` reads them first,
    // so a flush ending meanwhile cannot hide a value) equals the produced sum.
    let mut table_total = 0i64;
    for (user, want) in sums {
        match totals.get(user)? {
            Some(value) if value == *want => table_total += value,
            other => bail!("W2: totals[{user}] = {other:?}, expected {want}"),
        }
    }
    ensure!(
        table_total == total,
        "W2: the table sums to {table_total}; the produced amounts to {total}"
    );
    let snapshot = worker.monitor().snapshot();
    worker.shutdown().await?;
    let shutdown_s = after_last.elapsed().as_secs_f64();
    let changelog_offsets = check_changelog(bootstrap, &changelog, args.partitions).await?;
    Ok((
        run,
        Details {
            commits: snapshot.commit.count,
            commit_avg_ms: snapshot.commit.avg_ms,
            shutdown_s,
            update_s: update_ns.load(Ordering::Relaxed) as f64 / 1e9,
            changelog_offsets,
        },
    ))
}

/// The changelog's total high watermark; fails if the mock dropped any of its records.
pub(crate) async fn check_changelog(bootstrap: &str, topic: &str, partitions: i32) -> Result<i64> {
    crate::measure::stored_records(bootstrap, topic, partitions).await
}
