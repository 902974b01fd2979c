//! Supervision of agents that fail:
//! - with `AgentFailurePolicy::Restart`, an agent that returns `Err` or panics on an event
//!   is counted (`agent_failures`), restarted after a backoff that doubles
//!   (`agent_restarts`), and the event it was processing is processed again
//!   (at-least-once), while every other event is processed exactly once and in order;
//! - the same with `concurrency = 3` and a burst from two partitions: the failed
//!   instance's event is processed again, every other event at least once (none is
//!   acknowledged unprocessed), and the commits still reach the end;
//! - with `AgentFailurePolicy::StopWorker`, the worker stops with `Error::AgentFailed`
//!   and the failed event's offset is not committed.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{produce_json, wait_until, Broker, Log, Offsets};
use faust::settings::AgentFailurePolicy;
use faust::Error;

/// What the agent did, in order: `(value, attempt, what happened, when)`.
type Journal = Log<(i64, usize, &'static str, Instant)>;

/// An agent on `jobs` that fails on value `v` for its first `failures[v]` attempts
/// (`Err` for even values, a panic for odd ones).
fn fragile_app(
    b: &Broker,
    id: &str,
    failures: HashMap<i64, usize>,
    journal: &Journal,
) -> faust::App {
    let app = b.app(id);
    let jobs = app.topic::<String, i64>("jobs");
    let attempts: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let journal = journal.clone();
    app.agent("fragile", &jobs, move |mut stream| {
        let (attempts, journal, failures) = (attempts.clone(), journal.clone(), failures.clone());
        async move {
            while let Some(v) = stream.next().await {
                let attempt = {
                    let mut a = attempts.lock().unwrap();
                    let n = a.entry(v).or_default();
                    *n += 1;
                    *n
                };
                if attempt <= failures.get(&v).copied().unwrap_or(0) {
                    journal.push((v, attempt, "failed", Instant::now()));
                    if v % 2 == 1 {
                        panic!("agent panics on {v}");
                    }
                    return Err(format!("agent fails on {v}").into());
                }
                journal.push((v, attempt, "done", Instant::now()));
            }
            Ok(())
        }
    });
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_agents_restart_with_backoff_and_reprocess_the_event() {
    let b = Broker::new();
    b.topic("jobs", 1);
    let journal = Journal::default();
    // 4 fails twice (Err), 7 once (a panic).
    let app = fragile_app(
        &b,
        "supervise-restart",
        HashMap::from([(4, 2), (7, 1)]),
        &journal,
    );
    let initial = Duration::from_millis(100);
    app.configure(|s| {
        s.agent_failure_policy = AgentFailurePolicy::Restart {
            initial,
            max: Duration::from_secs(5),
        }
    });
    let worker = app.start().await.unwrap();
    let items: Vec<(Option<String>, i64)> = (0..10).map(|v| (None, v)).collect();
    produce_json(&b.bootstrap(), "jobs", &items).await;

    let done = |j: &[(i64, usize, &str, Instant)]| {
        j.iter()
            .filter(|e| e.2 == "done")
            .map(|e| e.0)
            .collect::<Vec<_>>()
    };
    wait_until("all ten jobs done", || done(&journal.items()).len() >= 10).await;
    Offsets::new(&b.bootstrap(), "supervise-restart")
        .wait_all_committed("jobs", 1)
        .await;
    let j = journal.items();
    assert_eq!(
        done(&j),
        (0..10).collect::<Vec<_>>(),
        "each job done once, in order"
    );
    let tries = |v: i64| j.iter().filter(|e| e.0 == v).collect::<Vec<_>>();
    let four = tries(4);
    let seven = tries(7);
    assert_eq!(
        four.iter().map(|e| e.2).collect::<Vec<_>>(),
        ["failed", "failed", "done"]
    );
    assert_eq!(
        seven.iter().map(|e| e.2).collect::<Vec<_>>(),
        ["failed", "done"]
    );
    // The backoff: `initial`, then doubled.
    assert!(four[1].3.duration_since(four[0].3) >= initial);
    assert!(four[2].3.duration_since(four[1].3) >= initial * 2);
    assert!(seven[1].3.duration_since(seven[0].3) >= initial);

    wait_until("three restarts counted", || {
        worker.monitor().snapshot().agent_restarts == 3
    })
    .await;
    let stats = worker.monitor().snapshot();
    assert_eq!(stats.agent_failures, 3);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_among_concurrent_ones_is_restarted() {
    let b = Broker::new();
    b.topic("jobs", 2);
    let app = b.app("supervise-concurrent");
    app.configure(|s| {
        s.agent_failure_policy = AgentFailurePolicy::Restart {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    });
    let jobs = app.topic::<String, i64>("jobs");
    let attempts: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let done = Log::default();
    {
        let (attempts, done) = (attempts.clone(), done.clone());
        app.agent("fragile", &jobs, move |mut stream| {
            let (attempts, done) = (attempts.clone(), done.clone());
            async move {
                while let Some(v) = stream.next().await {
                    let attempt = {
                        let mut a = attempts.lock().unwrap();
                        let n = a.entry(v).or_default();
                        *n += 1;
                        *n
                    };
                    tokio::time::sleep(Duration::from_millis(v as u64 % 7)).await;
                    if v == 13 && attempt == 1 {
                        return Err("agent fails on 13".into());
                    }
                    done.push(v);
                }
                Ok(())
            }
        })
        .concurrency(3);
    }
    // Already there when the worker starts: the events of both partitions come in a burst.
    let items: Vec<(Option<String>, i64)> = (0..40).map(|v| (Some(format!("k{v}")), v)).collect();
    produce_json(&b.bootstrap(), "jobs", &items).await;
    let worker = app.start().await.unwrap();

    let offsets = Offsets::new(&b.bootstrap(), "supervise-concurrent");
    offsets.wait_all_committed("jobs", 2).await;
    let done: std::collections::BTreeSet<i64> = done.items().into_iter().collect();
    assert_eq!(done, (0..40).collect(), "every job done at least once");
    assert!(attempts.lock().unwrap()[&13] >= 2, "13 was processed again");
    wait_until("the restart counted", || {
        worker.monitor().snapshot().agent_restarts == 1
    })
    .await;
    assert_eq!(worker.monitor().snapshot().agent_failures, 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_worker_policy_stops_with_the_failure() {
    let b = Broker::new();
    b.topic("jobs", 1);
    let journal = Journal::default();
    let app = fragile_app(&b, "supervise-stop", HashMap::from([(4, 1)]), &journal);
    app.configure(|s| s.agent_failure_policy = AgentFailurePolicy::StopWorker);
    let worker = app.start().await.unwrap();
    let items: Vec<(Option<String>, i64)> = (0..8).map(|v| (None, v)).collect();
    produce_json(&b.bootstrap(), "jobs", &items).await;

    let stopping = worker.stopping();
    wait_until("the worker stops", || stopping.is_cancelled()).await;
    let stats = worker.monitor().snapshot();
    match worker.wait().await {
        Err(Error::AgentFailed { agent, reason }) => {
            assert_eq!(agent, "fragile");
            assert!(reason.contains("agent fails on 4"), "{reason}");
        }
        other => panic!("expected AgentFailed, got {other:?}"),
    }
    assert_eq!(stats.agent_failures, 1);
    assert_eq!(stats.agent_restarts, 0);
    let j = journal.items();
    let done: Vec<i64> = j.iter().filter(|e| e.2 == "done").map(|e| e.0).collect();
    assert_eq!(done, vec![0, 1, 2, 3]);
    assert_eq!(
        Offsets::new(&b.bootstrap(), "supervise-stop")
            .committed("jobs", 1)
            .await,
        vec![Some(4)],
        "the failed event is not committed"
    );
}
