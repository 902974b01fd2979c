//! Sensors: a user sensor registered with `App::sensor` sees every hook as events flow
//! through `through()`, `group_by()`, a table and commits; a sensor that panics does not
//! stop the worker; the Monitor's figures (rates, table writes, processing time and the
//! latencies of commit, send, `through` and `group_by`) follow the same events.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::wait_until;
use faust::sensor::{Sensor, TopicPartition};
use faust::{App, Error, Table};

const EVENTS: u64 = 60;

/// Counts every hook, by hook and topic/agent/table.
#[derive(Default)]
struct Recorder {
    calls: Mutex<BTreeMap<String, u64>>,
    commit_elapsed: Mutex<Vec<Duration>>,
}

impl Recorder {
    fn hit(&self, what: String) {
        *self.calls.lock().unwrap().entry(what).or_default() += 1;
    }

    fn count(&self, what: &str) -> u64 {
        self.calls.lock().unwrap().get(what).copied().unwrap_or(0)
    }
}

impl Sensor for Recorder {
    fn on_message_in(&self, tp: TopicPartition<'_>, offset: i64) {
        assert!(offset >= 0);
        self.hit(format!("message_in {}", tp.topic));
    }
    fn on_stream_event_in(&self, agent: &str, tp: TopicPartition<'_>, _offset: i64) {
        self.hit(format!("event_in {agent} {}", tp.topic));
    }
    fn on_stream_event_out(&self, agent: &str, tp: TopicPartition<'_>, _offset: i64) {
        self.hit(format!("event_out {agent} {}", tp.topic));
    }
    fn on_message_out(&self, tp: TopicPartition<'_>, _offset: i64) {
        self.hit(format!("message_out {}", tp.topic));
    }
    fn on_table_get(&self, table: &str, key: &[u8]) {
        assert!(!key.is_empty());
        self.hit(format!("table_get {table}"));
    }
    fn on_table_set(&self, table: &str, _key: &[u8]) {
        self.hit(format!("table_set {table}"));
    }
    fn on_table_del(&self, table: &str, _key: &[u8]) {
        self.hit(format!("table_del {table}"));
    }
    fn on_commit_initiated(&self) {
        self.hit("commit_initiated".into());
    }
    fn on_commit_completed(&self, elapsed: Duration) {
        self.hit("commit_completed".into());
        self.commit_elapsed.lock().unwrap().push(elapsed);
    }
    fn on_send_initiated(&self, topic: &str, _key_size: usize, value_size: usize) {
        assert!(value_size > 0);
        self.hit(format!("send_initiated {topic}"));
    }
    fn on_send_completed(&self, topic: &str, _elapsed: Duration) {
        self.hit(format!("send_completed {topic}"));
    }
    fn on_send_error(&self, topic: &str, _error: &Error) {
        self.hit(format!("send_error {topic}"));
    }
    fn on_rebalance_start(&self) {
        self.hit("rebalance_start".into());
    }
    fn on_rebalance_return(&self, _elapsed: Duration) {
        self.hit("rebalance_return".into());
    }
}

/// Panics on every record taken from Kafka.
struct Broken(AtomicU64);

impl Sensor for Broken {
    fn on_message_in(&self, _tp: TopicPartition<'_>, _offset: i64) {
        self.0.fetch_add(1, Ordering::Relaxed);
        panic!("a broken sensor");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_see_every_hook_and_the_monitor_keeps_the_figures() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let app = App::new("sensors-test")
        .without_web()
        .datadir(dir.path())
        .topic_partitions(2)
        .commit_interval(Duration::from_millis(100));
    let recorder = Arc::new(Recorder::default());
    let broken = Arc::new(Broken(AtomicU64::new(0)));
    app.sensor(recorder.clone()).sensor(broken.clone());

    let totals: Table<String, i64> = app.table("totals").default(0);
    let orders = app.topic::<String, (String, i64)>("orders");
    let audited = app.topic::<String, (String, i64)>("audited");
    // Declared before the start, so that the worker creates it with the others.
    let _ = app.topic::<String, (String, i64)>("sensors-test-by_user-repartition");
    app.agent("sum", &orders, move |stream| {
        let (totals, audited) = (totals.clone(), audited.clone());
        async move {
            let mut stream = stream
                .through(&audited)
                .group_by(|(user, _): &(String, i64)| user.clone(), "by_user");
            while let Some((user, amount)) = stream.next().await {
                if amount == 0 {
                    totals.delete(&user)?;
                } else {
                    totals.update(&user, |t| *t += amount)?;
                    let _ = totals.get(&user)?;
                }
            }
            Ok(())
        }
    });
    let worker = app.start().await.expect("the worker starts");
    for i in 0..EVENTS {
        let user = format!("u{}", i % 6);
        orders
            .send(Some(&user), &(user.clone(), (i % 10) as i64))
            .await
            .expect("sent");
    }
    let repartition = "sensors-test-by_user-repartition";
    wait_until("every event went through and was committed", || {
        recorder.count(&format!("message_out {repartition}")) >= EVENTS
            && recorder.count("commit_completed") > 0
            && worker.monitor().snapshot().processing.count >= 3 * EVENTS
    })
    .await;

    for (what, at_least) in [
        ("message_in orders".to_string(), EVENTS),
        ("message_in audited".into(), EVENTS),
        (format!("message_in {repartition}"), EVENTS),
        ("event_in sum orders".into(), EVENTS),
        ("event_in sum audited".into(), EVENTS),
        (format!("event_in sum {repartition}"), EVENTS),
        (format!("event_out sum {repartition}"), EVENTS - 1),
        ("message_out orders".into(), EVENTS),
        ("message_out audited".into(), EVENTS),
        ("table_set totals".into(), EVENTS - EVENTS / 10),
        ("table_get totals".into(), EVENTS - EVENTS / 10),
        ("table_del totals".into(), EVENTS / 10),
        ("send_initiated orders".into(), EVENTS),
        ("send_completed orders".into(), EVENTS),
        ("send_initiated audited".into(), EVENTS),
        (format!("send_completed {repartition}"), EVENTS),
        ("commit_initiated".into(), 1),
        ("commit_completed".into(), 1),
        ("rebalance_start".into(), 1),
        ("rebalance_return".into(), 1),
    ] {
        let n = recorder.count(&what);
        assert!(
            n >= at_least,
            "{what}: {n} < {at_least}; {:?}",
            recorder.calls.lock().unwrap()
        );
    }
    assert_eq!(recorder.count("send_error orders"), 0);
    assert!(
        broken.0.load(Ordering::Relaxed) > 0,
        "the broken sensor was called (and its panics caught)"
    );

    let s = worker.monitor().snapshot();
    assert!(s.events_total >= 3 * EVENTS, "{s:?}");
    assert!(s.events_by_topic["orders"] >= EVENTS);
    assert!(s.events_by_topic[repartition] >= EVENTS);
    assert!(s.events_by_agent["sum"] >= 3 * EVENTS);
    assert!(s.events_per_s > 0.0, "events in the last seconds: {s:?}");
    assert!(s.events_per_s_by_topic["orders"] > 0.0);
    assert!(s.table_writes_by_table["totals"] >= EVENTS);
    assert!(s.table_writes >= EVENTS);
    assert!(s.through.count >= EVENTS && s.through.avg_ms >= 0.0);
    assert!(s.group_by.count >= EVENTS);
    assert!(
        s.send.count >= 3 * EVENTS,
        "the test's sends and the forwards"
    );
    assert!(s.commit.count >= 1 && s.commit.avg_ms > 0.0);
    assert!(s.processing.count >= 3 * EVENTS && s.processing.avg_ms > 0.0);
    assert!(s.rebalance.count >= 1);
    assert!(recorder
        .commit_elapsed
        .lock()
        .unwrap()
        .iter()
        .all(|d| *d > Duration::ZERO));
    worker.shutdown().await.expect("clean stop");
}
