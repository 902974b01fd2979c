//! `group_by` with two workers of one app (two `App`s with the same id in this process,
//! on one broker): every event is regrouped through the repartition topic, each key's
//! events all go through the one partition of its new key, reach the worker owning that
//! partition, and never two workers at once; every event arrives, in the order it was
//! sent (per-key sequence numbers): each event is the next one of its key or, after a
//! rebalance, an at-least-once replay that starts earlier, never one that skips ahead.
//! Both workers own keys; when one stops gracefully, the other takes its keys over and
//! goes on where it stopped, and the committed offsets reach the end of both topics.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{produce_json, Broker, Log, Offsets, DEADLINE};
use faust::Worker;
use serde::{Deserialize, Serialize};

const APP: &str = "gb";
const REPARTITION: &str = "gb-by-user-repartition";
const PARTITIONS: i32 = 4;
const USERS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    user: String,
    seq: u32,
}

/// One event as a worker's agent received it.
#[derive(Debug, Clone)]
struct Seen {
    worker: usize,
    /// Global reception order across both workers.
    ticket: u64,
    key: String,
    seq: u32,
    topic: String,
    partition: i32,
}

/// What the workers' agents record.
#[derive(Default)]
struct Shared {
    seen: Log<Seen>,
    tickets: AtomicU64,
    /// Repartition partition -> the worker processing one of its events right now.
    busy: Mutex<HashMap<i32, usize>>,
    /// Events processed while another worker was processing the same partition.
    overlaps: Log<String>,
}

async fn start_worker(b: &Broker, n: usize, shared: &Arc<Shared>) -> Worker {
    let app = b.app(APP);
    let orders = app.topic::<String, Order>("orders");
    let shared = shared.clone();
    app.agent("route", &orders, move |stream| {
        let shared = shared.clone();
        async move {
            let mut by_user = stream.group_by(|o: &Order| o.user.clone(), "by-user");
            while let Some(e) = by_user.next_event().await {
                let partition = e.partition().unwrap_or(-1);
                if let Some(other) = shared.busy.lock().unwrap().insert(partition, n) {
                    shared.overlaps.push(format!(
                        "worker {n} got {e:?} while worker {other} processed partition {partition}"
                    ));
                }
                shared.seen.push(Seen {
                    worker: n,
                    ticket: shared.tickets.fetch_add(1, Ordering::SeqCst),
                    key: e.key().cloned().unwrap_or_default(),
                    seq: e.value().seq,
                    topic: e.topic().unwrap_or_default().to_owned(),
                    partition,
                });
                // Processing takes a moment: long enough to notice a second worker
                // processing the same partition at the same time.
                tokio::time::sleep(Duration::from_millis(1)).await;
                shared.busy.lock().unwrap().remove(&partition);
            }
            Ok(())
        }
    });
    app.start().await.unwrap()
}

fn order(user: &str, seq: u32) -> (Option<String>, Order) {
    // Keyed by something else than the user, so group_by has to move the events; one
    // user's events share a source partition, so the order they were sent in is defined.
    (
        Some(format!("src-{user}")),
        Order {
            user: user.to_owned(),
            seq,
        },
    )
}

/// Sends probe events (users `probe-*`) until `worker` received one through the
/// repartition topic: it then takes part in the group with both of its subscriptions.
async fn probe_until_receiving(b: &Broker, shared: &Shared, worker: usize) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut round = 0u32;
    loop {
        let probes: Vec<_> = (0..USERS)
            .map(|i| order(&format!("probe-{i}"), round))
            .collect();
        produce_json(&b.bootstrap(), "orders", &probes).await;
        for _ in 0..25 {
            if shared
                .seen
                .items()
                .iter()
                .any(|s| s.worker == worker && s.key.starts_with("probe-"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker {worker} got no repartitioned event within {DEADLINE:?}"
        );
        round += 1;
    }
}

fn users() -> Vec<String> {
    (0..USERS).map(|u| format!("user-{u}")).collect()
}

/// Sends `seqs` for every user, interleaving users.
async fn send_orders(b: &Broker, seqs: std::ops::Range<u32>) {
    let mut items = Vec::new();
    for seq in seqs {
        for u in users() {
            items.push(order(&u, seq));
        }
    }
    produce_json(&b.bootstrap(), "orders", &items).await;
}

/// The measured (non-probe) events received so far, by user, in reception order.
fn by_user(seen: &Log<Seen>) -> BTreeMap<String, Vec<Seen>> {
    let mut all = seen.items();
    all.retain(|s| !s.key.starts_with("probe-"));
    all.sort_by_key(|s| s.ticket);
    let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for s in all {
        out.entry(s.key.clone()).or_default().push(s);
    }
    out
}

async fn wait_for_seqs(shared: &Shared, n: u32) {
    common::wait_until(&format!("every user's events 0..{n}"), || {
        let got = by_user(&shared.seen);
        got.len() == USERS
            && got
                .values()
                .all(|v| v.iter().map(|s| s.seq).collect::<BTreeSet<_>>().len() == n as usize)
    })
    .await;
}

/// Checks every user's events `0..n` as received: all arrived, through one partition of
/// the repartition topic, in order. At-least-once allows a replay after a rebalance (the
/// mock broker rebalances a group more often than a real one, and rejects commits while
/// it does): an event is either the next one of its key or a replay that starts again
/// earlier, never one that skips ahead. Returns each user's receptions, and how many
/// were replays.
fn check_users(shared: &Shared, n: u32) -> (BTreeMap<String, Vec<Seen>>, usize) {
    let overlaps = shared.overlaps.items();
    assert!(overlaps.is_empty(), "two workers at once: {overlaps:?}");
    let got = by_user(&shared.seen);
    let mut replays = 0;
    for (user, events) in &got {
        let history: Vec<(usize, u32)> = events.iter().map(|s| (s.worker, s.seq)).collect();
        let seqs: BTreeSet<u32> = events.iter().map(|s| s.seq).collect();
        assert_eq!(
            seqs,
            (0..n).collect(),
            "{user}: every event arrived: {history:?}"
        );
        assert_eq!(
            events[0].seq, 0,
            "{user}: in order from the first: {history:?}"
        );
        for pair in events.windows(2) {
            let (prev, next) = (pair[0].seq, pair[1].seq);
            assert!(
                next <= prev + 1,
                "{user}: skipped ahead, not in order: {history:?}"
            );
            if next <= prev {
                replays += 1;
            }
        }
        let partitions: BTreeSet<i32> = events.iter().map(|s| s.partition).collect();
        assert_eq!(partitions.len(), 1, "{user}: one partition of the new key");
        assert!(events.iter().all(|s| s.topic == REPARTITION));
    }
    (got, replays)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_reaches_one_worker_in_order() {
    let b = Broker::new();
    b.topic("orders", PARTITIONS).topic(REPARTITION, PARTITIONS);
    let shared = Arc::new(Shared::default());

    // Start one worker, then the other; wait until both take part (each worker's
    // group_by subscription causes a rebalance of its own).
    let first = start_worker(&b, 1, &shared).await;
    probe_until_receiving(&b, &shared, 1).await;
    let second = start_worker(&b, 2, &shared).await;
    probe_until_receiving(&b, &shared, 2).await;

    send_orders(&b, 0..8).await;
    wait_for_seqs(&shared, 8).await;
    let (got, replays) = check_users(&shared, 8);
    let workers: BTreeSet<usize> = got.values().map(|events| events[0].worker).collect();
    assert_eq!(workers.len(), 2, "both workers own keys");
    let offsets = Offsets::new(&b.bootstrap(), APP);
    offsets.wait_all_committed("orders", PARTITIONS).await;
    offsets.wait_all_committed(REPARTITION, PARTITIONS).await;

    // The second worker leaves; the first takes its keys over where it stopped.
    second.shutdown().await.unwrap();
    send_orders(&b, 8..12).await;
    wait_for_seqs(&shared, 12).await;
    let (got, all_replays) = check_users(&shared, 12);
    for (user, events) in &got {
        let first_times: Vec<&Seen> = events.iter().filter(|s| s.seq >= 8).collect();
        assert!(
            first_times.iter().all(|s| s.worker == 1),
            "{user}: the remaining worker has every key"
        );
    }
    offsets.wait_all_committed("orders", PARTITIONS).await;
    offsets.wait_all_committed(REPARTITION, PARTITIONS).await;
    first.shutdown().await.unwrap();
    eprintln!("replayed events: {replays} with two workers, {all_replays} in all");
}
