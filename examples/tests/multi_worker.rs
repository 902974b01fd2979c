//! Scale-out across processes: two worker processes of the same app on one `faust broker`
//! split the partitions between them and together process every event; when one stops
//! (SIGTERM), the other takes over its partitions and processes what follows.
//!
//! The group settles first: waves of events (some on every partition) are sent until one
//! wave is processed by both workers, each partition by one of them. Then a larger stream
//! is sent and must be covered entirely, with every partition processed by exactly one
//! worker, as `/status` of each worker shows too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PARTITIONS: i32 = 4;

/// Which workers processed the events of each partition, among `records` with ids in
/// `ids`.
fn workers_by_partition(
    records: &[Processed],
    ids: &std::ops::Range<u64>,
) -> BTreeMap<i32, BTreeSet<String>> {
    let mut map: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for r in records.iter().filter(|r| ids.contains(&r.id)) {
        map.entry((r.id % PARTITIONS as u64) as i32)
            .or_default()
            .insert(r.worker.clone());
    }
    map
}

/// The `events` partitions a worker's `/status` lists.
async fn status_partitions(web: u16) -> BTreeSet<i64> {
    let status = worker_status(web).await.expect("a status");
    status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["topic"] == "events")
        .map(|p| p["partition"].as_i64().expect("a partition"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_partitions_and_process_every_event() {
    let port = free_port();
    let mut cmd = Command::new(FAUST);
    cmd.args(["broker", "--port", &port.to_string()]);
    cmd.args(["--topic", "events:4", "--topic", "processed:4"]);
    // The app's tasks topic (the broker has no CreateTopics).
    cmd.args(["--topic", "multi-test-__assignor:4"]);
    let mut broker = Proc::spawn("faust-broker", cmd);
    broker
        .wait_log("bootstrap.servers=", Duration::from_secs(60))
        .await;
    let bootstrap = format!("127.0.0.1:{port}");
    let output = Collector::start(&bootstrap, "processed", PARTITIONS);
    let (web_a, web_b) = (free_port(), free_port());
    let env = |tag: &'static str| [("TESTAPP_ID", "multi-test"), ("TESTAPP_TAG", tag)];
    let mut a = spawn_worker("worker-a", &bootstrap, Some(web_a), &env("a"));
    let mut b = spawn_worker("worker-b", &bootstrap, Some(web_b), &env("b"));
    a.wait_web(web_a, Duration::from_secs(60)).await;
    b.wait_web(web_b, Duration::from_secs(60)).await;

    // Waves until the group has settled with both workers.
    let started = Instant::now();
    let mut next = 0u64;
    let mut waves = 0;
    loop {
        let wave = next..next + 10 * PARTITIONS as u64;
        next = wave.end;
        waves += 1;
        produce(&bootstrap, "events", PARTITIONS, wave.clone()).await;
        output
            .wait_for_all(&wave.clone().collect(), Duration::from_secs(60))
            .await;
        let by_partition = workers_by_partition(&output.records(), &wave);
        let settled = by_partition.values().all(|w| w.len() == 1)
            && by_partition
                .values()
                .flatten()
                .collect::<BTreeSet<_>>()
                .len()
                == 2;
        if settled {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the two workers did not settle into sharing the partitions: last wave \
             {by_partition:?}"
        );
    }
    println!(
        "the group settled after {waves} waves, {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The stream: every event processed, each partition by one worker.
    let stream = next..next + 2000;
    next = stream.end;
    produce(&bootstrap, "events", PARTITIONS, stream.clone()).await;
    output
        .wait_for_all(&stream.clone().collect(), Duration::from_secs(90))
        .await;
    let records = output.records();
    let by_partition = workers_by_partition(&records, &stream);
    let per_worker = |tag: &str| {
        records
            .iter()
            .filter(|r| stream.contains(&r.id) && r.worker == tag)
            .count()
    };
    println!(
        "2000 events: worker a processed {}, worker b {}; partitions {by_partition:?}",
        per_worker("a"),
        per_worker("b")
    );
    assert!(
        by_partition.values().all(|w| w.len() == 1),
        "a partition was processed by both workers: {by_partition:?}"
    );
    assert!(per_worker("a") > 0 && per_worker("b") > 0);
    let (on_a, on_b) = (
        status_partitions(web_a).await,
        status_partitions(web_b).await,
    );
    assert!(on_a.is_disjoint(&on_b), "a: {on_a:?}, b: {on_b:?}");
    assert_eq!(
        on_a.union(&on_b).copied().collect::<BTreeSet<_>>(),
        (0..PARTITIONS as i64).collect(),
        "a: {on_a:?}, b: {on_b:?}"
    );

    // Worker b leaves: a takes over every partition.
    b.signal("TERM");
    let status = b.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", b.log());
    let after = next..next + 10 * PARTITIONS as u64;
    produce(&bootstrap, "events", PARTITIONS, after.clone()).await;
    output
        .wait_for_all(&after.clone().collect(), Duration::from_secs(60))
        .await;
    let by_partition = workers_by_partition(&output.records(), &after);
    assert!(
        by_partition.values().all(|w| w.iter().all(|t| t == "a")),
        "after b stopped: {by_partition:?}"
    );

    a.signal("TERM");
    let status = a.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", a.log());
    drop(output);
    broker.signal("TERM");
    let status = broker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", broker.log());
}
