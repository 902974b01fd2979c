//! At-least-once across a crash: a worker process killed with SIGKILL in the middle of a
//! stream and started again reflects every input event in its output at least once, and
//! replays only the uncommitted tail.
//!
//! The broker is librdkafka's mock cluster inside the test process, on a fixed loopback
//! port (`MockCluster::listen_on`), so it outlives the worker. The worker is the test app
//! (`faust-testapp`), committing every `COMMIT_EVERY` events (the periodic commit is
//! pushed out of the way), with a small per-event delay so that the kill lands mid-stream.
//! The test checks, per partition, against the offsets the group had committed when the
//! worker died:
//! - every event below the committed offset was output by the first run (a commit never
//!   passes an event that was not processed);
//! - the second run output no event below it (it resumed from the commit point);
//! - every event is in the output; the duplicates are exactly the events the first run
//!   output after its last commit, and there are at most 2 x `COMMIT_EVERY` + the stream
//!   buffer of them (one commit interval, another for the commit on its way when the
//!   worker died, and the buffer).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const PARTITIONS: i32 = 4;
const EVENTS: u64 = 1500;
const COMMIT_EVERY: usize = 100;
const STREAM_BUFFER: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_replays_only_the_uncommitted_tail() {
    let broker = TestBroker::start(&[("events", PARTITIONS), ("processed", PARTITIONS)]).await;
    let bootstrap = broker.bootstrap();
    let output = Collector::start(&bootstrap, "processed", PARTITIONS);
    let group = broker.app("kill-test", PARTITIONS);
    let commit_every = COMMIT_EVERY.to_string();
    let buffer = STREAM_BUFFER.to_string();
    // The first run takes its time, so that the kill lands mid-stream.
    let env = |tag: &'static str, delay_ms: &'static str| {
        vec![
            ("TESTAPP_ID", group),
            ("TESTAPP_TAG", tag),
            ("TESTAPP_DELAY_MS", delay_ms),
            ("FAUST_COMMIT_EVERY", commit_every.as_str()),
            ("FAUST_COMMIT_INTERVAL", "1h"),
            ("FAUST_STREAM_BUFFER", buffer.as_str()),
        ]
    };

    let positions = produce(&bootstrap, "events", PARTITIONS, 0..EVENTS).await;
    let mut first = spawn_worker("worker-run1", &bootstrap, None, &env("run1", "3"));
    wait_until(
        "a third of the events processed",
        Duration::from_secs(90),
        || output.len() as u64 >= EVENTS / 3,
    )
    .await;
    assert!(
        first.try_status().is_none(),
        "the worker stopped on its own:\n{}",
        first.log()
    );
    first.kill9();
    let processed_at_kill = output.len();
    let committed_at_kill = committed(&bootstrap, group, "events", PARTITIONS).await;
    println!("killed after {processed_at_kill}+ outputs; committed offsets {committed_at_kill:?}");
    assert!(
        committed_at_kill.iter().sum::<i64>() > 0,
        "nothing was committed before the kill"
    );

    let started = Instant::now();
    let mut second = spawn_worker("worker-run2", &bootstrap, None, &env("run2", "0"));
    let all: BTreeSet<u64> = (0..EVENTS).collect();
    output.wait_for_all(&all, Duration::from_secs(120)).await;
    println!(
        "the restarted worker completed the stream in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "second run: {status}");

    let records = output.records();
    let run1: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.worker == "run1")
        .map(|r| r.id)
        .collect();
    let run2: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.worker == "run2")
        .map(|r| r.id)
        .collect();
    for (&id, &(partition, offset)) in &positions {
        let point = committed_at_kill[partition as usize];
        if offset < point {
            assert!(
                run1.contains(&id),
                "event {id} (events[{partition}]@{offset}) was committed (at {point}) but never processed"
            );
            assert!(
                !run2.contains(&id),
                "event {id} (events[{partition}]@{offset}) is below the commit point {point} but was replayed"
            );
        } else {
            assert!(
                run2.contains(&id),
                "event {id} (events[{partition}]@{offset}) is above the commit point {point} but the restarted worker did not process it"
            );
        }
    }
    let duplicates: Vec<u64> = counts(&records)
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(id, _)| id)
        .collect();
    let uncommitted_outputs = run1
        .iter()
        .filter(|id| {
            let (p, o) = positions[id];
            o >= committed_at_kill[p as usize]
        })
        .count();
    // Up to COMMIT_EVERY events are processed before the next commit starts, and the
    // worker goes on while that commit is on its way (it may die before it lands): allow
    // as many again, and the stream buffer.
    let bound = 2 * COMMIT_EVERY + STREAM_BUFFER;
    println!(
        "{EVENTS} events; first run output {}, second run {}; replayed duplicates: {} \
         (= outputs of the first run past its last commit: {uncommitted_outputs}; bound {bound})",
        run1.len(),
        run2.len(),
        duplicates.len(),
    );
    assert_eq!(duplicates.len(), uncommitted_outputs);
    assert!(
        duplicates.len() <= bound,
        "{} events were replayed; at most {bound} may be uncommitted with commits every \
         {COMMIT_EVERY} events",
        duplicates.len()
    );
}
