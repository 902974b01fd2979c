//! Graceful shutdown of a worker process: SIGTERM in the middle of a stream loses nothing.
//!
//! - After SIGTERM the worker exits with status 0 in bounded time, and the offsets it
//!   committed cover exactly the events it output: everything below the committed offset
//!   was processed, nothing above it was. A restarted worker processes the rest, and no
//!   event is processed twice.
//! - An event still in an agent's hands when the shutdown deadline
//!   (`FAUST_SHUTDOWN_TIMEOUT`) cuts the agent off is not committed, even when the
//!   shutdown goes on afterwards (here: waiting for a slow broker to take the output):
//!   the restarted worker processes it.
//! - A second signal during the graceful stop exits at once, with status 130, and commits
//!   nothing that was not processed.
//!
//! The broker is librdkafka's mock cluster inside the test process, on a fixed loopback
//! port, so it outlives the workers.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use rdkafka_async::mock::api_key;
use rdkafka_async::{sys, ErrorCode};

const PARTITIONS: i32 = 4;

/// Checks, per partition, that the events below the group's committed offset are exactly
/// the events in `processed`; returns the committed offsets.
async fn assert_commits_cover_exactly(
    bootstrap: &str,
    group: &str,
    positions: &Positions,
    processed: &BTreeSet<u64>,
) -> Vec<i64> {
    let committed = committed(bootstrap, group, "events", PARTITIONS).await;
    let mut lost = Vec::new();
    let mut uncommitted = Vec::new();
    for (&id, &(partition, offset)) in positions {
        let point = committed[partition as usize];
        if offset < point && !processed.contains(&id) {
            lost.push(format!("events[{partition}]@{offset}"));
        }
        if offset >= point && processed.contains(&id) {
            uncommitted.push(format!("events[{partition}]@{offset}"));
        }
    }
    assert!(
        lost.is_empty(),
        "committed {committed:?}, but {} events below that were not processed (lost): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        uncommitted.is_empty(),
        "committed {committed:?}, but {} events at or above that were processed (they will \
         be processed again): {:?}...",
        uncommitted.len(),
        &uncommitted[..uncommitted.len().min(10)]
    );
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_commits_exactly_what_was_processed() {
    sigterm_mid_stream("sink").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_commits_exactly_what_was_processed_by_an_agent_that_sends() {
    sigterm_mid_stream("send").await;
}

/// SIGTERM while the test app (in `mode`: see `TESTAPP_MODE`) works through 1,000 events.
async fn sigterm_mid_stream(mode: &'static str) {
    const EVENTS: u64 = 1000;
    let broker = TestBroker::start(&[("events", PARTITIONS), ("processed", PARTITIONS)]).await;
    let bootstrap = broker.bootstrap();
    let output = Collector::start(&bootstrap, "processed", PARTITIONS);
    let group = broker.app("sigterm-test", PARTITIONS);
    let env = |tag: &'static str| {
        [
            ("TESTAPP_ID", group),
            ("TESTAPP_TAG", tag),
            ("TESTAPP_MODE", mode),
            ("TESTAPP_DELAY_MS", "3"),
            ("TESTAPP_CONCURRENCY", "2"),
            // Only the shutdown commits: what it covers is what the test checks.
            ("FAUST_COMMIT_INTERVAL", "1h"),
            ("FAUST_STREAM_BUFFER", "20"),
        ]
    };
    let positions = produce(&bootstrap, "events", PARTITIONS, 0..EVENTS).await;
    let mut first = spawn_worker("worker-run1", &bootstrap, None, &env("run1"));
    wait_until("some events processed", Duration::from_secs(90), || {
        output.len() >= 150
    })
    .await;
    let at_signal = output.len();
    let signalled = Instant::now();
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(30)).await;
    let shutdown = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", first.log());

    // Outputs are delivered before their events are acknowledged, so by now every output
    // of the first run is in the topic; the collector may still be reading them. A probe
    // written after them to each partition tells when it is done.
    let probes: BTreeSet<u64> = (u64::MAX - PARTITIONS as u64..u64::MAX).collect();
    produce(&bootstrap, "processed", PARTITIONS, probes.clone()).await;
    output.wait_for_all(&probes, Duration::from_secs(30)).await;
    let run1: BTreeSet<u64> = output
        .records()
        .iter()
        .filter(|r| r.worker == "run1")
        .map(|r| r.id)
        .collect();
    let committed = assert_commits_cover_exactly(&bootstrap, group, &positions, &run1).await;
    println!(
        "{mode}: SIGTERM after {at_signal} outputs, {} in all: exited 0 in {:.0} ms; \
         committed {committed:?} = {} events",
        run1.len(),
        shutdown.as_secs_f64() * 1000.0,
        committed.iter().sum::<i64>()
    );
    // What follows the signal is what was in the agents' hands or queued for them (20
    // events), and what the test had not read yet: far from the rest of the stream.
    assert!(
        run1.len() as u64 <= EVENTS / 2,
        "the worker went on after SIGTERM: {} of {EVENTS} events processed, {at_signal} when \
         it was signalled (FAUST_STREAM_BUFFER=20)",
        run1.len()
    );

    let mut second = spawn_worker("worker-run2", &bootstrap, None, &env("run2"));
    let all: BTreeSet<u64> = (0..EVENTS).collect();
    output.wait_for_all(&all, Duration::from_secs(120)).await;
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "second run: {status}");
    let records: Vec<Processed> = output
        .records()
        .into_iter()
        .filter(|r| r.id < EVENTS)
        .collect();
    let twice: Vec<u64> = counts(&records)
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        twice.is_empty(),
        "after a graceful stop nothing is processed twice, but these were: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_cut_off_by_the_shutdown_deadline_is_not_committed() {
    let broker = TestBroker::start(&[("events", 1), ("processed", 1)]).await;
    let bootstrap = broker.bootstrap();
    let output = Collector::start(&bootstrap, "processed", 1);
    let group = broker.app("deadline-test", 1);
    produce_values(&bootstrap, "events", &[r#"{"id": 0}"#]).await;
    // The next produce request (the worker's output for event 0) is answered after 4 s:
    // the agent still waits for it when the shutdown deadline (1 s) cuts it off, and the
    // shutdown goes on waiting for the producer.
    let no_error = ErrorCode::from(sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    broker
        .cluster()
        .push_broker_request_error_rtts(1, api_key::PRODUCE, &[(no_error, Duration::from_secs(4))])
        .unwrap();
    let web = free_port();
    let mut first = spawn_worker(
        "worker-cut-off",
        &bootstrap,
        Some(web),
        &[
            ("TESTAPP_ID", group),
            ("TESTAPP_TAG", "cut-off"),
            ("TESTAPP_MODE", "send"),
            ("FAUST_SHUTDOWN_TIMEOUT", "1s"),
        ],
    );
    wait_until_async("event 0's output sent", Duration::from_secs(60), || async {
        worker_status(web)
            .await
            .is_some_and(|s| s["stats"]["send"]["count"].as_u64() >= Some(1))
    })
    .await;
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", first.log());
    let committed = committed(&bootstrap, group, "events", 1).await;
    assert!(
        committed[0] == 0,
        "the agent was stopped before it finished event 0, yet the committed offset is \
         {committed:?}: the event is lost; log:\n{}",
        first.log()
    );

    let mut second = spawn_worker(
        "worker-fast",
        &bootstrap,
        None,
        &[("TESTAPP_ID", group), ("TESTAPP_TAG", "fast")],
    );
    wait_until(
        "the restarted worker to process event 0",
        Duration::from_secs(60),
        || {
            output
                .records()
                .iter()
                .any(|r| r.worker == "fast" && r.id == 0)
        },
    )
    .await;
    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "second run: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let broker = TestBroker::start(&[("events", 1), ("processed", 1)]).await;
    let bootstrap = broker.bootstrap();
    produce(&bootstrap, "events", 1, 0..5).await;
    // A minute per event: a graceful stop would wait for the event in the agent's hands
    // until the shutdown deadline (30 s).
    let web = free_port();
    let mut worker = spawn_worker(
        "worker-second-signal",
        &bootstrap,
        Some(web),
        &[
            ("TESTAPP_ID", broker.app("second-signal-test", 1)),
            ("TESTAPP_DELAY_MS", "60000"),
        ],
    );
    wait_until_async(
        "an event in the agent's hands",
        Duration::from_secs(60),
        || async {
            worker_status(web)
                .await
                .is_some_and(|s| s["stats"]["events_by_agent"]["process"].as_u64() >= Some(1))
        },
    )
    .await;
    worker.signal("TERM");
    worker
        .wait_log("stopping gracefully", Duration::from_secs(10))
        .await;
    assert!(
        worker.try_status().is_none(),
        "the graceful stop ended before the second signal could be tested"
    );
    let second = Instant::now();
    worker.signal("INT");
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    let took = second.elapsed();
    println!(
        "second signal: exited {:?} after {:.0} ms",
        status.code(),
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(status.code(), Some(130), "{status}; log:\n{}", worker.log());
    assert!(took < Duration::from_secs(5), "exiting took {took:?}");
    let committed = committed(&bootstrap, "second-signal-test", "events", 1).await;
    assert_eq!(committed, [0], "unprocessed events were committed");
}
