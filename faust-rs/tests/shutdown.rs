//! A graceful `Worker::shutdown` in the middle of a stream loses nothing: the events the
//! worker finished are exactly the ones its committed offsets cover, and a second worker
//! of the same app id then processes exactly the others (every event processed once
//! overall), ending with the committed offsets at the high watermarks. The same holds
//! with a `group_by` in the middle, where a stop leaves events between the source topic
//! and the repartition topic. An agent cancelled because it did not finish within the
//! shutdown timeout does not get its event committed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{produce, wait_until, Broker, Log, Offsets, Raw};
use faust::App;
use serde::{Deserialize, Serialize};

const PARTITIONS: i32 = 2;
/// More than a worker holds in its queues, so that a stop leaves work for the next one.
const PER_PARTITION: i64 = 1000;

/// A worker of app `graceful` whose slow agent logs each processed (partition, offset).
fn slow_app(b: &Broker, processed: &Log<(i32, i64)>) -> App {
    let app = b.app("graceful");
    // A short queue per agent, so that stopping leaves most of the stream unread.
    app.configure(|s| s.stream_buffer = 16);
    let jobs = app.topic::<String, i64>("jobs");
    let log = processed.clone();
    app.agent("slow", &jobs, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(event) = stream.next_event().await {
                tokio::time::sleep(Duration::from_millis(1)).await;
                log.push((event.partition().unwrap(), event.offset().unwrap()));
            }
            Ok(())
        }
    })
    .concurrency(2);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_then_another_worker_finishes() {
    let b = Broker::new();
    b.topic("jobs", PARTITIONS);
    let offsets = Offsets::new(&b.bootstrap(), "graceful");
    let records: Vec<Raw> = (0..PER_PARTITION)
        .flat_map(|i| (0..PARTITIONS).map(move |p| Raw::new("jobs", i.to_string()).partition(p)))
        .collect();
    produce(&b.bootstrap(), &records).await;
    let all: BTreeSet<(i32, i64)> = (0..PARTITIONS)
        .flat_map(|p| (0..PER_PARTITION).map(move |o| (p, o)))
        .collect();

    let first = Log::default();
    let worker = slow_app(&b, &first).start().await.unwrap();
    wait_until("the first worker is under way", || first.len() >= 20).await;
    worker.shutdown().await.expect("a clean stop");

    let committed = offsets.committed("jobs", PARTITIONS).await;
    let by_first: BTreeSet<(i32, i64)> = first.items().into_iter().collect();
    assert_eq!(by_first.len(), first.len(), "no event processed twice");
    let covered: BTreeSet<(i32, i64)> = (0..PARTITIONS)
        .flat_map(|p| (0..committed[p as usize].unwrap_or(0)).map(move |o| (p, o)))
        .collect();
    assert_eq!(
        by_first, covered,
        "the committed offsets {committed:?} cover exactly what the first worker finished"
    );
    assert!(by_first.len() < all.len(), "the stop came mid-stream");

    let second = Log::default();
    let worker = slow_app(&b, &second).start().await.unwrap();
    offsets.wait_all_committed("jobs", PARTITIONS).await;
    worker.shutdown().await.expect("a clean stop");
    let by_second: BTreeSet<(i32, i64)> = second.items().into_iter().collect();
    assert_eq!(by_second.len(), second.len(), "no event processed twice");
    let rest: BTreeSet<(i32, i64)> = all.difference(&covered).copied().collect();
    assert_eq!(
        by_second, rest,
        "the second worker processed exactly the rest"
    );
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    user: String,
    seq: u32,
}

const REPARTITION: &str = "graceful-gb-by-user-repartition";
const USERS: u32 = 6;
const SEQS: u32 = 200;

/// A worker of app `graceful-gb` that regroups orders by user and logs (user, seq).
fn regrouping_app(b: &Broker, processed: &Log<(String, u32)>) -> App {
    let app = b.app("graceful-gb");
    app.configure(|s| s.stream_buffer = 16);
    let orders = app.topic::<String, Order>("orders");
    let log = processed.clone();
    app.agent("by-user", &orders, move |stream| {
        let log = log.clone();
        async move {
            let mut s = stream.group_by(|o: &Order| o.user.clone(), "by-user");
            while let Some(order) = s.next().await {
                tokio::time::sleep(Duration::from_millis(1)).await;
                log.push((order.user, order.seq));
            }
            Ok(())
        }
    });
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_group_by_then_another_worker_finishes() {
    let b = Broker::new();
    b.topic("orders", PARTITIONS).topic(REPARTITION, PARTITIONS);
    let offsets = Offsets::new(&b.bootstrap(), "graceful-gb");
    let mut records = Vec::new();
    let mut all = BTreeSet::new();
    for seq in 0..SEQS {
        for u in 0..USERS {
            let user = format!("u{u}");
            let order = Order {
                user: user.clone(),
                seq,
            };
            records.push(
                Raw::new("orders", serde_json::to_vec(&order).unwrap()).key(format!("\"src-{u}\"")),
            );
            all.insert((user, seq));
        }
    }
    produce(&b.bootstrap(), &records).await;

    let first = Log::default();
    let worker = regrouping_app(&b, &first).start().await.unwrap();
    wait_until("the first worker is under way", || first.len() >= 15).await;
    worker.shutdown().await.expect("a clean stop");
    let by_first: BTreeSet<(String, u32)> = first.items().into_iter().collect();
    assert_eq!(by_first.len(), first.len(), "no event processed twice");
    assert!(by_first.len() < all.len(), "the stop came mid-stream");

    let second = Log::default();
    let worker = regrouping_app(&b, &second).start().await.unwrap();
    offsets.wait_all_committed("orders", PARTITIONS).await;
    offsets.wait_all_committed(REPARTITION, PARTITIONS).await;
    wait_until("every order processed", || {
        first.len() + second.len() >= all.len()
    })
    .await;
    worker.shutdown().await.expect("a clean stop");
    let by_second: BTreeSet<(String, u32)> = second.items().into_iter().collect();
    assert_eq!(by_second.len(), second.len(), "no event processed twice");
    assert!(
        by_first.is_disjoint(&by_second),
        "nothing processed by both"
    );
    let union: BTreeSet<(String, u32)> = by_first.union(&by_second).cloned().collect();
    assert_eq!(union, all, "every order processed");
    // Per user, the second worker went on where the first stopped.
    for u in 0..USERS {
        let user = format!("u{u}");
        let seqs: Vec<u32> = first
            .items()
            .into_iter()
            .chain(second.items())
            .filter(|(w, _)| *w == user)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(seqs, (0..SEQS).collect::<Vec<_>>(), "{user}: in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cancelled_at_the_shutdown_timeout_keeps_its_event_uncommitted() {
    let b = Broker::new();
    b.topic("jobs", 1).topic("chatter", 1);
    let records: Vec<Raw> = (0..6).map(|v| Raw::new("jobs", v.to_string())).collect();
    produce(&b.bootstrap(), &records).await;
    let app = b.app("graceful-timeout");
    app.configure(|s| s.shutdown_timeout = Duration::from_millis(300));
    let jobs = app.topic::<String, i64>("jobs");
    // Records in flight when the worker stops: it waits for them before its last commit.
    let chatter = app.topic::<String, i64>("chatter");
    app.task("chatter", move |_| {
        let chatter = chatter.clone();
        async move {
            for i in 0.. {
                drop(chatter.send_soon(None, &i).await?);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        }
    });
    let started = Log::default();
    let log = started.clone();
    app.agent("stuck", &jobs, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(v) = stream.next().await {
                log.push(v);
                if v == 3 {
                    // Never finishes: the worker cancels it when stopping.
                    std::future::pending::<()>().await;
                }
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    started.wait_for(4, "the agent stuck on 3").await;
    // A slow broker: the worker waits for the chatter still in flight, after cancelling
    // the stuck agent and before its last commit.
    b.cluster
        .set_broker_rtt(1, Duration::from_millis(800))
        .unwrap();
    worker.shutdown().await.expect("a stop, if not a clean one");
    b.cluster.set_broker_rtt(1, Duration::ZERO).unwrap();
    assert_eq!(
        Offsets::new(&b.bootstrap(), "graceful-timeout")
            .committed("jobs", 1)
            .await,
        vec![Some(3)],
        "committed up to the cancelled event, not past it"
    );
}
