//! Windowed tables: tumbling counts by record timestamp, out-of-order and late events, the
//! close callback, expired windows removed from the table and tombstoned in the changelog,
//! windows left by an earlier run closed after a restart, and hopping windows.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{read_topic, wait_until, Broker, Log, Raw, RawProducer};
use faust::rdkafka_async::{ClientConfig, Consumer};
use faust::table::{WindowRange, WindowedTable};
use faust::App;

/// A time aligned on 10 s, so the windows below start at `T0 + n * 10 s`.
const T0: i64 = 1_700_000_000_000;

fn w(start: i64, end: i64) -> WindowRange {
    WindowRange {
        start: T0 + start,
        end: T0 + end,
    }
}

/// What the agent did with each event: (key, event time - T0, windows changed).
type Processed = Log<(String, i64, usize)>;
/// The close callbacks: (key, window, final value).
type ClosedLog = Log<(String, WindowRange, u64)>;

/// An app that adds each event's value to the windows of its key.
fn app(
    broker: &Broker,
    datadir: &std::path::Path,
    id: &str,
    source: &str,
    make: impl FnOnce(&App) -> WindowedTable<String, u64>,
) -> (App, WindowedTable<String, u64>, Processed, ClosedLog) {
    let app = broker.app(id).datadir(datadir).topic_partitions(1);
    let closed = ClosedLog::default();
    let c = closed.clone();
    let table = make(&app).on_window_close(move |key, window, value| {
        c.push((key.clone(), window, *value));
    });
    let processed = Processed::default();
    let (t, log) = (table.clone(), processed.clone());
    let topic = app.topic::<String, u64>(source);
    app.agent("count", &topic, move |mut stream| {
        let (t, log) = (t.clone(), log.clone());
        async move {
            while let Some(event) = stream.next_event().await {
                let key = event.key().cloned().unwrap_or_default();
                let amount = *event.value();
                let changed = t.update_current(&key, &event, |n| *n += amount)?;
                log.push((key, event.timestamp().unwrap_or_default() - T0, changed));
            }
            Ok(())
        }
    });
    (app, table, processed, closed)
}

/// A view of `key` at `T0 + at` ms.
fn view(topic: &str, key: &str, at: i64) -> Raw {
    Raw::new(topic, "1").key(key).timestamp(T0 + at)
}

/// The last record of each key of a changelog (one partition; `None`: a tombstone),
/// markers left out. Checks that the changelog was not truncated.
async fn changelog(bootstrap: &str, topic: &str) -> BTreeMap<(String, i64), Option<String>> {
    let c = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id("windows-test-inspect"),
    )
    .unwrap();
    let (low, high) = c
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(low, 0, "{topic} was truncated");
    let records = read_topic(bootstrap, topic, 1, high as usize).await;
    let mut last = BTreeMap::new();
    for m in records.into_values().flatten() {
        if common::header(&m, "faust-marker").is_some() {
            continue;
        }
        let key = m.key().expect("data records have keys");
        let (kb, start) = key.split_at(key.len() - 8);
        let start = (u64::from_be_bytes(start.try_into().unwrap()) ^ (1 << 63)) as i64;
        let value = m.payload().map(|v| String::from_utf8_lossy(v).into_owned());
        last.insert(
            (String::from_utf8_lossy(kb).into_owned(), start - T0),
            value,
        );
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_windows_count_close_once_expire_and_survive_a_restart() {
    let broker = Broker::new();
    broker
        .topic("views", 1)
        .topic("windows-test-page_views-changelog", 1);
    let producer = RawProducer::new(&broker.bootstrap());
    let dir = tempfile::tempdir().unwrap();
    // Windows of 10 s, closed 5 s after their end.
    let tumbling = |app: &App| {
        app.table::<String, u64>("page_views")
            .default(0)
            .tumbling(Duration::from_secs(10), Duration::from_secs(5))
    };

    let (app1, views, processed, closed) =
        app(&broker, dir.path(), "windows-test", "views", tumbling);
    let worker = app1.start().await.unwrap();
    producer
        .send(&[
            view("views", "alice", 1_000),
            view("views", "bob", 2_000),
            view("views", "alice", 3_000),
            // Time moves to 12 s: [0, 10 s) stays open until 15 s.
            view("views", "alice", 12_000),
            // Out of order, for a window still open: counted.
            view("views", "bob", 9_000),
            // 16 s closes [0, 10 s).
            view("views", "alice", 16_000),
            // Late: [0, 10 s) closed.
            view("views", "bob", 4_000),
            // 26 s closes [10 s, 20 s).
            view("views", "alice", 26_000),
        ])
        .await;
    let done = processed.wait_for(8, "events processed").await;
    let changed: Vec<usize> = done.iter().map(|(_, _, n)| *n).collect();
    assert_eq!(changed, vec![1, 1, 1, 1, 1, 1, 0, 1], "{done:?}");
    assert_eq!(views.late_updates(), 1);
    assert_eq!(
        closed.items(),
        vec![
            ("alice".to_string(), w(0, 10_000), 2),
            ("bob".to_string(), w(0, 10_000), 2),
            ("alice".to_string(), w(10_000, 20_000), 2),
        ],
        "each closed window once, with its final value"
    );
    assert_eq!(views.closed_windows(), 3);
    let alice = "alice".to_string();
    assert_eq!(views.get_at(&alice, T0 + 26_000).unwrap(), Some(1));
    assert_eq!(views.get_at(&alice, T0 + 1_000).unwrap(), None, "expired");
    assert_eq!(
        views.get_at(&"bob".to_string(), T0 + 9_000).unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        views.partition_items(0).unwrap(),
        vec![(alice.clone(), w(20_000, 30_000), 1)],
        "only the open window is left"
    );
    assert_eq!(
        views.windows(&alice, ..).unwrap(),
        vec![(w(20_000, 30_000), 1)]
    );
    // A further event closes nothing more: the callback ran once per window.
    producer.send(&[view("views", "alice", 27_000)]).await;
    processed.wait_for(9, "the last event processed").await;
    assert_eq!(closed.len(), 3);
    assert_eq!(views.get_at(&alice, T0 + 27_000).unwrap(), Some(2));
    worker.shutdown().await.unwrap();

    let topic = "windows-test-page_views-changelog";
    let last = changelog(&broker.bootstrap(), topic).await;
    let expect: BTreeMap<(String, i64), Option<String>> = [
        (("alice".to_string(), 0), None),
        (("alice".to_string(), 10_000), None),
        (("alice".to_string(), 20_000), Some("2".to_string())),
        (("bob".to_string(), 0), None),
    ]
    .into_iter()
    .collect();
    assert_eq!(last, expect, "closed windows are tombstoned");

    // A restart with the same data directory: the window left open is in LMDB, and
    // closes once time moves past it.
    let (app2, views, processed, closed) =
        app(&broker, dir.path(), "windows-test", "views", tumbling);
    let worker = app2.start().await.unwrap();
    assert_eq!(
        views.partition_items(0).unwrap(),
        vec![(alice.clone(), w(20_000, 30_000), 2)],
        "the stored window is back"
    );
    producer.send(&[view("views", "alice", 61_000)]).await;
    processed.wait_for(1, "the event after the restart").await;
    assert_eq!(
        closed.items(),
        vec![("alice".to_string(), w(20_000, 30_000), 2)],
        "the window from before the restart closes, and only it"
    );
    assert_eq!(
        views.partition_items(0).unwrap(),
        vec![(alice.clone(), w(60_000, 70_000), 1)]
    );
    worker.shutdown().await.unwrap();
    let last = changelog(&broker.bootstrap(), topic).await;
    assert_eq!(last[&("alice".to_string(), 20_000)], None, "tombstoned");
    assert_eq!(last[&("alice".to_string(), 60_000)], Some("1".to_string()));

    // An empty data directory: the windows are rebuilt from the changelog (whose keys
    // decode as the table's keys), closed ones left out.
    let empty = tempfile::tempdir().unwrap();
    let (app3, views, _, closed) = app(&broker, empty.path(), "windows-test", "views", tumbling);
    let worker = app3.start().await.unwrap();
    wait_until("the windows are rebuilt from the changelog", || {
        views.partition_items(0).ok() == Some(vec![(alice.clone(), w(60_000, 70_000), 1)])
    })
    .await;
    assert!(worker.monitor().snapshot().recovered_records > 0);
    assert_eq!(worker.monitor().snapshot().decode_errors, 0);
    assert!(closed.items().is_empty());
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hopping_windows_update_every_window_of_the_time() {
    let broker = Broker::new();
    broker
        .topic("clicks", 1)
        .topic("windows-hop-test-clicks_10s-changelog", 1);
    let producer = RawProducer::new(&broker.bootstrap());
    let dir = tempfile::tempdir().unwrap();
    // Windows of 10 s every 5 s, closed at their end.
    let (app, clicks, processed, closed) =
        app(&broker, dir.path(), "windows-hop-test", "clicks", |app| {
            app.table::<String, u64>("clicks_10s").default(0).hopping(
                Duration::from_secs(10),
                Duration::from_secs(5),
                Duration::ZERO,
            )
        });
    let worker = app.start().await.unwrap();
    producer
        .send(&[
            // [0, 10 s) and [5 s, 15 s).
            view("clicks", "alice", 7_000),
            // Closes [0, 10 s); [5 s, 15 s) and [10 s, 20 s).
            view("clicks", "alice", 12_000),
            // Both its windows, [-5 s, 5 s) and [0, 10 s), closed: late twice.
            view("clicks", "bob", 3_000),
            // [5 s, 15 s) and [10 s, 20 s).
            view("clicks", "alice", 14_000),
        ])
        .await;
    let done = processed.wait_for(4, "events processed").await;
    let changed: Vec<usize> = done.iter().map(|(_, _, n)| *n).collect();
    assert_eq!(changed, vec![2, 2, 0, 2], "{done:?}");
    assert_eq!(clicks.late_updates(), 2);
    let alice = "alice".to_string();
    assert_eq!(
        clicks.windows(&alice, ..).unwrap(),
        vec![(w(5_000, 15_000), 3), (w(10_000, 20_000), 2)]
    );
    assert_eq!(
        clicks.windows(&alice, T0 + 10_000..).unwrap(),
        vec![(w(10_000, 20_000), 2)],
        "windows that start in the range"
    );
    assert_eq!(
        clicks.get_at(&alice, T0 + 14_000).unwrap(),
        Some(2),
        "the newest window of the time"
    );
    assert_eq!(
        clicks
            .delta(&alice, T0 + 14_000, Duration::from_secs(5))
            .unwrap(),
        Some(3),
        "the newest window 5 s before"
    );
    assert_eq!(closed.items(), vec![("alice".to_string(), w(0, 10_000), 1)]);
    assert_eq!(clicks.get_at(&"bob".to_string(), T0 + 3_000).unwrap(), None);
    worker.shutdown().await.unwrap();
    let last = changelog(&broker.bootstrap(), "windows-hop-test-clicks_10s-changelog").await;
    assert_eq!(last[&("alice".to_string(), 0)], None, "tombstoned");
    assert_eq!(last[&("alice".to_string(), 5_000)], Some("3".to_string()));
    assert_eq!(last[&("alice".to_string(), 10_000)], Some("2".to_string()));
    assert!(
        !last.contains_key(&("bob".to_string(), 0)),
        "late: never written"
    );
}
