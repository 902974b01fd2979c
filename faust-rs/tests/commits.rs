//! At-least-once commits, checked from outside the worker, and what `concurrency` means:
//! - with `concurrency = 4` and random per-event delays, the group's committed offset
//!   (read by a separate consumer of the same group while the worker runs) never passes an
//!   event that has not finished; an event held back on purpose pins its partition's
//!   committed offset exactly at itself while the events around it finish;
//! - the instances of a concurrent agent share a burst of events (one slow event does not
//!   hold up the others);
//! - `commit_every` commits once that many events were processed, without waiting for the
//!   commit interval.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{produce_json, wait_until, wait_until_async, Broker, Log, Offsets, Raw, RawProducer};
use rand::Rng;
use tokio::sync::Semaphore;

const PARTITIONS: i32 = 2;
const PER_PARTITION: i64 = 30;
/// The event held back until the test lets it go.
const HELD: (i32, i64) = (0, 10);

#[derive(Default)]
struct Progress {
    /// Times each (partition, offset) was started.
    started: Mutex<HashMap<(i32, i64), usize>>,
    /// Events whose processing finished (recorded before they are acknowledged).
    finished: Mutex<BTreeSet<(i32, i64)>>,
}

impl Progress {
    fn finished(&self) -> BTreeSet<(i32, i64)> {
        self.finished.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_never_pass_an_unfinished_event() {
    let b = Broker::new();
    b.topic("jobs", PARTITIONS);
    let app = b.app("commits-concurrency");
    app.configure(|s| {
        s.commit_interval = Duration::from_millis(20);
        // Records are fetched as soon as they are there.
        s.kafka.insert("fetch.wait.max.ms".into(), "5".into());
    });
    let jobs = app.topic::<String, i64>("jobs");
    let progress = Arc::new(Progress::default());
    let gate = Arc::new(Semaphore::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    {
        let (progress, gate) = (progress.clone(), gate.clone());
        let (in_flight, most) = (in_flight.clone(), most_in_flight.clone());
        app.agent("slow", &jobs, move |mut stream| {
            let (progress, gate) = (progress.clone(), gate.clone());
            let (in_flight, most) = (in_flight.clone(), most.clone());
            async move {
                while let Some(event) = stream.next_event().await {
                    let id = (event.partition().unwrap(), event.offset().unwrap());
                    *progress.started.lock().unwrap().entry(id).or_default() += 1;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let delay = rand::rng().random_range(0..25u64);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    if id == HELD {
                        let _ = gate.acquire().await?;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    progress.finished.lock().unwrap().insert(id);
                    drop(event); // acknowledged from now on
                }
                Ok(())
            }
        })
        .concurrency(4);
    }
    let worker = app.start().await.unwrap();

    // Watch the group's committed offsets from outside while the worker runs.
    let offsets = Arc::new(Offsets::new(&b.bootstrap(), "commits-concurrency"));
    let stop = Arc::new(AtomicBool::new(false));
    let observed: Log<Vec<Option<i64>>> = Log::default();
    let violations: Log<String> = Log::default();
    let no_violation = || {
        let v = violations.items();
        assert!(v.is_empty(), "{v:?}");
    };
    let watcher = {
        let (offsets, stop, progress) = (offsets.clone(), stop.clone(), progress.clone());
        let (observed, violations) = (observed.clone(), violations.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let committed = offsets.committed("jobs", PARTITIONS).await;
                // Taken after the answer: an event unfinished now was unfinished when
                // the offset was committed.
                let finished = progress.finished();
                for (p, c) in committed.iter().enumerate() {
                    let Some(c) = *c else { continue };
                    let unfinished: Vec<i64> = (0..c)
                        .filter(|o| !finished.contains(&(p as i32, *o)))
                        .collect();
                    if !unfinished.is_empty() {
                        violations.push(format!(
                            "partition {p} committed at {c} but {unfinished:?} had not finished"
                        ));
                    }
                }
                observed.push(committed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // The events come in one offset of each partition at a time, each pair taken by the
    // worker before the next is sent: however the worker hands records to instances, an
    // event shares its hand-over with at most the other partition's event of its pair.
    let producer = RawProducer::new(&b.bootstrap());
    for i in 0..PER_PARTITION {
        let pair: Vec<Raw> = (0..PARTITIONS)
            .map(|p| Raw::new("jobs", i.to_string()).partition(p))
            .collect();
        producer.send(&pair).await;
        let taken = ((i + 1) * PARTITIONS as i64) as u64;
        wait_until("the worker takes the pair", || {
            worker.monitor().snapshot().messages_in >= taken
        })
        .await;
    }

    let total = (PARTITIONS as i64 * PER_PARTITION) as usize;
    wait_until(
        "every event but the held one (and its pair) finished",
        || {
            no_violation();
            let finished = progress.finished();
            finished.len() >= total - 2 && !finished.contains(&HELD)
        },
    )
    .await;
    // The held event pins partition 0 at its offset, while the later ones are finished.
    wait_until_async("partition 0 committed up to the held event", || async {
        no_violation();
        offsets.committed("jobs", PARTITIONS).await[0] == Some(HELD.1)
    })
    .await;
    let finished = progress.finished();
    assert!(!finished.contains(&HELD));
    assert!(
        finished.iter().any(|&(p, o)| p == 0 && o > HELD.1),
        "later events of partition 0 finished meanwhile"
    );
    gate.add_permits(1);
    offsets.wait_all_committed("jobs", PARTITIONS).await;
    stop.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    no_violation();
    worker.shutdown().await.unwrap();

    let started = progress.started.lock().unwrap().clone();
    assert_eq!(started.len(), total, "every event was processed");
    assert!(
        started.values().all(|n| *n == 1),
        "no event was processed twice"
    );
    assert!(
        most_in_flight.load(Ordering::SeqCst) > 1,
        "the instances did run concurrently"
    );
    let distinct: BTreeSet<Vec<Option<i64>>> = observed.items().into_iter().collect();
    assert!(
        distinct.len() >= 4,
        "the watcher saw the commits move ({} distinct states)",
        distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_share_a_burst() {
    const INSTANCES: usize = 4;
    let b = Broker::new();
    b.topic("jobs", 1);
    // A burst: the records are all there before the worker starts.
    let items: Vec<(Option<String>, i64)> =
        (0..(INSTANCES as i64 * 2)).map(|i| (None, i)).collect();
    produce_json(&b.bootstrap(), "jobs", &items).await;
    let app = b.app("commits-burst");
    let jobs = app.topic::<String, i64>("jobs");
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gave_up = Arc::new(AtomicBool::new(false));
    let done = Log::default();
    {
        let (in_flight, most, gave_up, done) = (
            in_flight.clone(),
            most.clone(),
            gave_up.clone(),
            done.clone(),
        );
        app.agent("io-bound", &jobs, move |mut stream| {
            let (in_flight, most, gave_up, done) = (
                in_flight.clone(),
                most.clone(),
                gave_up.clone(),
                done.clone(),
            );
            async move {
                while let Some(v) = stream.next().await {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // An I/O-bound event: it waits until every instance has one (or, if
                    // they never do, for 5 s once).
                    let waiting = tokio::time::Instant::now();
                    while most.load(Ordering::SeqCst) < INSTANCES && !gave_up.load(Ordering::SeqCst)
                    {
                        if waiting.elapsed() > Duration::from_secs(5) {
                            gave_up.store(true, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    done.push(v);
                }
                Ok(())
            }
        })
        .concurrency(INSTANCES);
    }
    let worker = app.start().await.unwrap();
    done.wait_for(INSTANCES * 2, "the burst processed").await;
    worker.shutdown().await.unwrap();
    assert_eq!(
        most.load(Ordering::SeqCst),
        INSTANCES,
        "each instance took events of the burst at the same time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_every_does_not_wait_for_the_interval() {
    let b = Broker::new();
    b.topic("jobs", 1);
    // Already there when the worker starts: they are all taken at once.
    let items: Vec<(Option<String>, i64)> = (0..10).map(|i| (None, i)).collect();
    produce_json(&b.bootstrap(), "jobs", &items).await;
    let app = b.app("commits-every");
    app.configure(|s| {
        s.commit_interval = Duration::from_secs(3600);
        s.commit_every = 5;
    });
    let jobs = app.topic::<String, i64>("jobs");
    let done = Log::default();
    let log = done.clone();
    app.agent("count", &jobs, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(v) = stream.next().await {
                tokio::time::sleep(Duration::from_millis(5)).await;
                log.push(v);
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    // The 10th event is acknowledged when the agent asks for an 11th; that is the 10th
    // acknowledgement, which makes a commit, long before the interval.
    done.wait_for(10, "ten events").await;
    Offsets::new(&b.bootstrap(), "commits-every")
        .wait_all_committed("jobs", 1)
        .await;
    worker.shutdown().await.unwrap();
}
