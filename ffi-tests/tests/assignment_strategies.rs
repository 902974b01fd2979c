//! The measurements behind faust-rs's assignment design (`docs/src/design/assignment.md`),
//! and a guard on the librdkafka behaviour it relies on.
//!
//! Three members join one group one after the other, over two topics `a` and `b` of 8
//! partitions (an app's source topic and a table's changelog, say). For each strategy, at
//! every stable assignment, the test records whether each member holds the same partition
//! numbers of `a` and `b` (co-partitioning), and how many partitions the members already
//! there had revoked when the newcomer joined (stickiness):
//!
//! - `range` on `a` and `b`: co-partitioned, but eager: every member gives up everything at
//!   each join;
//! - `cooperative-sticky` on `a` and `b`: incremental, but it balances each topic's
//!   partitions on its own, so co-partitioning breaks;
//! - *tasks*: the members subscribe to a third topic `t` of 8 partitions with
//!   `cooperative-sticky` and, in their rebalance handling, assign (`incremental_assign`)
//!   partition p of `a` and `b` for each task `t`-p they get, and unassign them before giving
//!   `t`-p back. librdkafka does not document that a member may hold partitions the group did
//!   not give it: this test fails if that stops working. Co-partitioned by construction, and
//!   only moved tasks are revoked.

mod common_rebalance;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common_rebalance::init_tracing;
use ffi_tests::wait_until;
use rdkafka_async::{
    ClientConfig, Consumer, ConsumerEvent, MockCluster, Offset, OffsetReset, RebalanceKind,
    TopicPartitionList,
};
use tokio::sync::oneshot;

const PARTITIONS: i32 = 8;
const MEMBERS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    Range,
    CooperativeSticky,
    Tasks,
}

/// What each member holds: (topic, partition).
type Held = Arc<Mutex<BTreeMap<usize, BTreeSet<(String, i32)>>>>;
/// Partitions revoked from each member.
type Revoked = Arc<Mutex<BTreeMap<usize, usize>>>;

fn config(cluster: &MockCluster, group: &str, strategy: Strategy) -> ClientConfig {
    let assignor = match strategy {
        Strategy::Range => "range",
        Strategy::CooperativeSticky | Strategy::Tasks => "cooperative-sticky",
    };
    ClientConfig::new()
        .bootstrap_servers(cluster.bootstrap_servers())
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .set("partition.assignment.strategy", assignor)
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "200")
}

fn tpl(parts: &[(String, i32)]) -> TopicPartitionList {
    let mut t = TopicPartitionList::new();
    for (topic, p) in parts {
        t.add(topic, *p, Offset::Invalid);
    }
    t
}

/// One member: handles rebalances per strategy until told to stop.
async fn member(
    id: usize,
    mut consumer: Consumer,
    strategy: Strategy,
    held: Held,
    revoked: Revoked,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            e = consumer.next_event() => e,
        };
        let r = match event {
            Ok(ConsumerEvent::Rebalance(r)) => r,
            Ok(ConsumerEvent::Message(_)) => continue,
            Err(err) => panic!("member {id}: {err}"),
        };
        let parts: Vec<(String, i32)> = r
            .partitions()
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition))
            .collect();
        // What the member really holds: the tasks translate to `a` and `b`.
        let translated: Vec<(String, i32)> = match strategy {
            Strategy::Tasks => parts
                .iter()
                .flat_map(|(_, p)| [("a".to_string(), *p), ("b".to_string(), *p)])
                .collect(),
            _ => parts.clone(),
        };
        match r.kind() {
            RebalanceKind::Assign => {
                r.complete().await.unwrap();
                if strategy == Strategy::Tasks && !translated.is_empty() {
                    consumer
                        .incremental_assign(&tpl(&translated))
                        .await
                        .unwrap();
                }
                let mut h = held.lock().unwrap();
                h.entry(id).or_default().extend(translated);
            }
            RebalanceKind::Revoke => {
                if strategy == Strategy::Tasks && !translated.is_empty() {
                    consumer
                        .incremental_unassign(&tpl(&translated))
                        .await
                        .unwrap();
                }
                r.complete().await.unwrap();
                *revoked.lock().unwrap().entry(id).or_default() += translated.len();
                let mut h = held.lock().unwrap();
                let mine = h.entry(id).or_default();
                for tp in &translated {
                    mine.remove(tp);
                }
            }
        }
    }
    // What librdkafka holds matches what the member thinks it holds.
    let assignment: BTreeSet<(String, i32)> = consumer
        .assignment()
        .await
        .unwrap()
        .iter()
        .filter(|tp| tp.topic != "t")
        .map(|tp| (tp.topic.clone(), tp.partition))
        .collect();
    assert_eq!(
        assignment,
        held.lock().unwrap().get(&id).cloned().unwrap_or_default(),
        "member {id}: librdkafka's assignment"
    );
    consumer.close_within(Duration::from_secs(10)).await.ok();
}

/// Whether `members` hold every partition of `a` and `b` exactly once.
fn stable(held: &Held, members: usize) -> bool {
    let h = held.lock().unwrap();
    let mut all = BTreeSet::new();
    let mut count = 0;
    for m in 0..members {
        let Some(set) = h.get(&m) else { return false };
        if set.is_empty() {
            return false;
        }
        count += set.len();
        all.extend(set.iter().cloned());
    }
    count == all.len() && all.len() == 2 * PARTITIONS as usize
}

/// Whether every member holds the same partition numbers of `a` and `b`.
fn co_partitioned(held: &Held) -> bool {
    held.lock().unwrap().values().all(|set| {
        let of = |t: &str| -> BTreeSet<i32> {
            set.iter()
                .filter(|(x, _)| x == t)
                .map(|(_, p)| *p)
                .collect()
        };
        of("a") == of("b")
    })
}

/// Joins three members one by one; returns, per join, (co-partitioned, partitions revoked
/// from the members already there).
async fn run(strategy: Strategy) -> Vec<(bool, usize)> {
    let cluster = MockCluster::new(1).unwrap();
    cluster
        .set_group_initial_rebalance_delay(Duration::ZERO)
        .unwrap();
    for t in ["a", "b", "t"] {
        cluster.create_topic(t, PARTITIONS, 1).unwrap();
    }
    let group = format!("{strategy:?}");
    let topics: &[&str] = match strategy {
        Strategy::Tasks => &["t"],
        _ => &["a", "b"],
    };
    let held = Held::default();
    let revoked = Revoked::default();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    let mut out = Vec::new();
    for id in 0..MEMBERS {
        let before: usize = revoked.lock().unwrap().values().sum();
        let consumer = Consumer::new(config(&cluster, &group, strategy)).unwrap();
        consumer.subscribe(topics).await.unwrap();
        let (tx, rx) = oneshot::channel();
        stops.push(tx);
        tasks.push(tokio::spawn(member(
            id,
            consumer,
            strategy,
            held.clone(),
            revoked.clone(),
            rx,
        )));
        wait_until(
            DEADLINE,
            &format!("{strategy:?}: {} members stable", id + 1),
            || stable(&held, id + 1),
        )
        .await
        .unwrap();
        let after: usize = revoked.lock().unwrap().values().sum();
        out.push((co_partitioned(&held), after - before));
    }
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        t.await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_co_partition_and_move_only_what_moves() {
    init_tracing();
    let mut report = Vec::new();
    for strategy in [
        Strategy::Range,
        Strategy::CooperativeSticky,
        Strategy::Tasks,
    ] {
        let joins = run(strategy).await;
        eprintln!("{strategy:?}: per join (co-partitioned, revoked from members already there) = {joins:?}");
        report.push((strategy, joins));
    }
    let of = |s: Strategy| &report.iter().find(|(x, _)| *x == s).unwrap().1;
    // Tasks: co-partitioned at every stable point, and a join revokes only what moves
    // (at most the newcomer's share, of 2 topics x 8 partitions).
    for (i, (co, revoked)) in of(Strategy::Tasks).iter().enumerate() {
        assert!(co, "tasks: co-partitioned after join {}", i + 1);
        let members = i + 1;
        let share = 2 * PARTITIONS as usize / members + 2;
        assert!(*revoked <= share, "tasks: join {} revoked {revoked}", i + 1);
    }
    // Range: co-partitioned but eager: joins revoke everything the others held. At least
    // that: a member that answers the rebalance late (a loaded machine) makes the group
    // take a second round, which revokes again what the first round had assigned.
    assert!(of(Strategy::Range).iter().all(|(co, _)| *co));
    assert!(of(Strategy::Range)[1..]
        .iter()
        .all(|(_, r)| *r >= 2 * PARTITIONS as usize));
}
