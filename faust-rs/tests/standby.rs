//! Two workers of a table app: co-partitioned tasks, the cluster map, standby copies that
//! serve the same values, and a failover that replays only what the standby lacks.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{wait_until, Broker, Raw, RawProducer};
use faust::{App, Table, Worker};

const USERS: u64 = 40;
const PARTITIONS: i32 = 4;
const APP: &str = "standby-test";

fn partition_of(user: &str) -> i32 {
    // Kafka's default partitioner, as the producer used by the test and by the app.
    faust::table::partition_for(user.as_bytes(), PARTITIONS)
}

type Assigned = Arc<Mutex<Vec<(String, i32)>>>;

fn app(broker: &Broker, dir: &std::path::Path) -> (App, Table<String, i64>, Assigned) {
    let app = broker.app(APP).datadir(dir).topic_partitions(PARTITIONS);
    let totals = app.table::<String, i64>("totals").default(0);
    let tx = app.topic::<String, i64>("tx");
    let t = totals.clone();
    app.agent("sum", &tx, move |mut stream| {
        let t = t.clone();
        async move {
            while let Some((user, amount)) = stream.next_item().await {
                t.update(&user.unwrap_or_default(), |v| *v += amount)?;
            }
            Ok(())
        }
    });
    let assigned = Assigned::default();
    let log = assigned.clone();
    app.on_partitions_assigned(move |tps| log.lock().unwrap().extend_from_slice(tps));
    (app, totals, assigned)
}

async fn send(producer: &RawProducer, from: u64, n: u64, oracle: &mut BTreeMap<String, i64>) {
    let records: Vec<Raw> = (from..from + n)
        .map(|i| {
            let user = format!("u{}", (i * 7919) % USERS);
            let amount = (i % 13) as i64 + 1;
            *oracle.entry(user.clone()).or_default() += amount;
            Raw::new("tx", amount.to_string()).key(user)
        })
        .collect();
    producer.send(&records).await;
}

/// Whether the copy of each key held by `worker`'s table equals the oracle, for the keys
/// of `tasks`.
fn holds(t: &Table<String, i64>, tasks: &BTreeSet<i32>, oracle: &BTreeMap<String, i64>) -> bool {
    oracle
        .iter()
        .filter(|(k, _)| tasks.contains(&partition_of(k)))
        .all(|(k, v)| t.get(k).ok().flatten() == Some(*v))
}

fn covers_all(a: &Worker, b: &Worker) -> bool {
    let (x, y) = (a.active_tasks(), b.active_tasks());
    !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) && x.len() + y.len() == PARTITIONS as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_the_same_values_and_takes_over_with_little_replay() {
    let broker = Broker::new();
    broker
        .topic("tx", PARTITIONS)
        .topic("standby-test-totals-changelog", PARTITIONS);
    let producer = RawProducer::new(&broker.bootstrap());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut oracle = BTreeMap::new();

    let (app_a, totals_a, _) = app(&broker, dir_a.path());
    let a = app_a.start().await.unwrap();
    send(&producer, 0, 1000, &mut oracle).await;
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    wait_until("worker A sums everything", || {
        holds(&totals_a, &all, &oracle)
    })
    .await;

    let (app_b, totals_b, assigned_b) = app(&broker, dir_b.path());
    let b = app_b.start().await.unwrap();
    wait_until("the tasks are shared", || covers_all(&a, &b)).await;
    let (tasks_a, tasks_b) = (a.active_tasks(), b.active_tasks());
    // Co-partitioning: B's rebalance listener sees exactly its tasks' partitions of `tx`.
    let seen = || -> BTreeSet<i32> { assigned_b.lock().unwrap().iter().map(|(_, p)| *p).collect() };
    wait_until("B's listener saw its partitions", || seen() == tasks_b).await;
    assert!(assigned_b.lock().unwrap().iter().all(|(t, _)| t == "tx"));

    // Both workers agree on the cluster map; each task's standby is the other worker.
    let id_a = a.worker_id().unwrap();
    let id_b = b.worker_id().unwrap();
    wait_until("both maps show both workers with their standbys", || {
        [&a, &b].iter().all(|w| {
            let m = w.cluster_map().unwrap();
            m.workers.len() == 2
                && (0..PARTITIONS).all(|p| {
                    let owner = m.owner(p).map(|o| o.id.clone());
                    let standbys: Vec<String> =
                        m.standbys(p).iter().map(|s| s.id.clone()).collect();
                    match owner {
                        Some(o) if o == id_a => standbys == vec![id_b.clone()],
                        Some(o) if o == id_b => standbys == vec![id_a.clone()],
                        _ => false,
                    }
                })
        })
    })
    .await;

    send(&producer, 1000, 1000, &mut oracle).await;
    wait_until("owners and standbys hold the same values", || {
        holds(&totals_a, &all, &oracle) && holds(&totals_b, &all, &oracle)
    })
    .await;
    let recovered_before = b.monitor().snapshot().recovered_records;

    // A leaves: B takes A's tasks over from its warm copies.
    let t0 = Instant::now();
    a.shutdown().await.unwrap();
    wait_until("B processes every task", || b.active_tasks() == all).await;
    send(&producer, 2000, 200, &mut oracle).await;
    wait_until("B sums everything after the takeover", || {
        holds(&totals_b, &all, &oracle)
    })
    .await;
    let took = t0.elapsed();
    let replayed = b.monitor().snapshot().recovered_records - recovered_before;
    eprintln!(
        "takeover: {took:?} until new events were processed; {replayed} changelog records replayed; A had tasks {tasks_a:?}"
    );
    assert!(
        replayed <= 2 * USERS,
        "the standby replays only what it lacked, not the whole changelog: {replayed}"
    );
    b.shutdown().await.unwrap();
}
