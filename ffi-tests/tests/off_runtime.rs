//! Rule (docs/src/client/consumer.md, "Nothing waits on a runtime thread"): no consumer call
//! that can wait for one of librdkafka's threads runs on a runtime thread, nor inside `drop`.
//!
//! On a single-threaded runtime (one thread: anything that blocks it stops every task),
//! with every broker of the mock cluster down, each call returns or fails within its
//! bound while a ticker task keeps ticking; the longest gap between two ticks is what shows
//! that the thread was never held. Also: a consumer dropped while its messages are still
//! alive leaves its group at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use ffi_tests::{init_tracing, unique_name, wait_until, Fixture};
use rdkafka_async::{Consumer, ConsumerEvent, Offset, Producer, Record, TopicPartitionList};

/// Every call's own bound (rdkafka-async's bound for calls made off the runtime).
const CALL_BOUND: Duration = Duration::from_secs(30);
/// Room for the machine: a blocked thread shows as a gap of seconds (each call that
/// waits, waits for librdkafka's threads, which retry connections every 100 ms to 10 s).
const MAX_TICK_GAP: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(60);

/// A task that ticks every 10 ms and records the longest gap between two ticks.
struct Ticker {
    ticks: Arc<AtomicU64>,
    longest_gap: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start() -> Self {
        let ticks = Arc::new(AtomicU64::new(0));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, g, s) = (ticks.clone(), longest_gap.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            while !s.load(Ordering::Relaxed) {
                interval.tick().await;
                let now = Instant::now();
                let mut longest = g.lock().unwrap();
                *longest = (*longest).max(now - last);
                last = now;
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            ticks,
            longest_gap,
            stop,
        }
    }

    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    fn longest_gap(&self) -> Duration {
        *self.longest_gap.lock().unwrap()
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Awaits one call, prints how long it took, and checks its bound.
async fn timed<T>(
    what: &str,
    call: impl std::future::Future<Output = rdkafka_async::Result<T>>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let outcome = tokio::time::timeout(CALL_BOUND + Duration::from_secs(5), call)
        .await
        .with_context(|| format!("{what} did not return within its bound"))?;
    let took = start.elapsed();
    match outcome {
        Ok(_) => println!("{what}: ok after {took:?}"),
        Err(err) => println!("{what}: failed after {took:?}: {err}"),
    }
    Ok(took)
}

#[test]
fn calls_with_every_broker_down_never_hold_the_runtime() -> anyhow::Result<()> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let fx = Fixture::new(3, 2)?;
        let producer = Producer::new(fx.producer_config())?;
        for i in 0..20 {
            let value = i.to_string();
            producer
                .send(Record::to(&fx.topic).key(&value).value(&value))
                .await?
                .await?;
        }
        let mut consumer = Consumer::new(fx.consumer_config(&unique_name("down")))?;
        consumer.subscribe(&[&fx.topic]).await?;
        // Join while the brokers are up, and keep the assignment's Rebalance to drop later.
        let rebalance = tokio::time::timeout(DEADLINE, async {
            loop {
                if let ConsumerEvent::Rebalance(r) = consumer.next_event().await? {
                    return anyhow::Ok(r);
                }
            }
        })
        .await
        .context("no assignment within 60 s")??;
        let ticker = Ticker::start();
        for id in fx.cluster.broker_ids() {
            fx.cluster.set_broker_down(id)?;
        }
        let before = ticker.ticks();

        // Applied off the runtime from `drop`; the consumer then waits for it.
        drop(rebalance);
        let mut tpl = TopicPartitionList::new();
        for p in 0..fx.partitions {
            tpl.add(&fx.topic, p, Offset::At(0));
        }
        let mut took = Vec::new();
        took.push(timed("assignment", consumer.assignment()).await?);
        took.push(timed("member_id", consumer.member_id()).await?);
        took.push(timed("pause", consumer.pause(&tpl)).await?);
        took.push(timed("resume", consumer.resume(&tpl)).await?);
        took.push(timed("seek", async { consumer.seek(&tpl) }).await?);
        took.push(timed("position", async { consumer.position(&tpl) }).await?);
        took.push(timed("incremental_unassign", consumer.incremental_unassign(&tpl)).await?);
        took.push(timed("incremental_assign", consumer.incremental_assign(&tpl)).await?);
        took.push(timed("assign", consumer.assign(&tpl)).await?);
        took.push(timed("unsubscribe", consumer.unsubscribe()).await?);
        took.push(timed("subscribe", consumer.subscribe(&[&fx.topic])).await?);
        took.push(
            timed(
                "committed",
                consumer.committed(&tpl, Duration::from_secs(2)),
            )
            .await?,
        );
        took.push(
            timed(
                "fetch_watermarks",
                consumer.fetch_watermarks(&fx.topic, 0, Duration::from_secs(2)),
            )
            .await?,
        );
        took.push(
            timed("next_event", async {
                // Nothing can come; this only has to give the runtime back.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), consumer.next_event()).await;
                rdkafka_async::Result::Ok(())
            })
            .await?,
        );
        took.push(
            timed(
                "close_within",
                consumer.close_within(Duration::from_secs(3)),
            )
            .await?,
        );
        let total: Duration = took.iter().sum();
        let gap = ticker.longest_gap();
        let ticked = ticker.ticks() - before;
        println!(
            "{} calls in {total:?}; ticker ticked {ticked} times, longest gap {gap:?}",
            took.len()
        );
        // Valgrind serialises threads: its gaps measure valgrind, not us.
        let timing = !ffi_tests::under_valgrind();
        ensure!(
            !timing || gap < MAX_TICK_GAP,
            "the runtime's only thread was held for {gap:?}"
        );
        ensure!(ticked > 0, "the ticker never ran");
        // Dropping the consumer on the runtime must not hold it either.
        drop(consumer);
        drop(producer);
        let ticks = ticker.ticks();
        wait_until(DEADLINE, "the ticker to tick after the drops", || {
            ticker.ticks() > ticks + 5
        })
        .await?;
        ensure!(
            !timing || ticker.longest_gap() < MAX_TICK_GAP,
            "dropping held the runtime for {:?}",
            ticker.longest_gap()
        );
        anyhow::Ok(())
    })
}

/// A consumer dropped while a message it handed out is still alive (which keeps the
/// client alive) leaves its group at once: a second member gets every partition long
/// before `max.poll.interval.ms` (5 minutes by default) would have evicted the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_consumer_with_live_messages_leaves_its_group() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 2)?;
    let producer = Producer::new(fx.producer_config())?;
    for p in 0..fx.partitions {
        producer
            .send(Record::to(&fx.topic).partition(p).value("v"))
            .await?
            .await?;
    }
    let group = unique_name("dropped");
    let mut first = Consumer::new(fx.consumer_config(&group))?;
    first.subscribe(&[&fx.topic]).await?;
    let kept = tokio::time::timeout(DEADLINE, first.recv())
        .await
        .context("the first member got no message")??;
    drop(first);
    let started = Instant::now();

    let mut second = Consumer::new(fx.consumer_config(&group))?;
    second.subscribe(&[&fx.topic]).await?;
    let mut owned = 0;
    tokio::time::timeout(DEADLINE, async {
        while owned < fx.partitions as usize {
            if let ConsumerEvent::Rebalance(r) = second.next_event().await? {
                if r.kind() == rdkafka_async::RebalanceKind::Assign {
                    owned = r.partitions().len();
                }
                r.complete().await?;
            }
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("the second member owned {owned} partitions after 60 s"))??;
    println!(
        "the second member owned every partition {:?} after the first was dropped",
        started.elapsed()
    );
    // The message outlived its consumer and is still readable.
    ensure!(kept.payload() == Some(&b"v"[..]));
    drop(kept);
    second.close().await?;
    Ok(())
}
