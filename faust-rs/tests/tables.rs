//! Tables: updates from agents, the changelog, checkpointed recovery after a restart, and
//! a rebuild into an empty data directory.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{wait_until, Broker, Raw, RawProducer};
use faust::rdkafka_async::{ClientConfig, Consumer, OffsetReset};
use faust::{App, Table};

const USERS: u64 = 50;

fn app(broker: &Broker, datadir: &std::path::Path) -> (App, Table<String, i64>) {
    let app = broker
        .app("tables-test")
        .datadir(datadir)
        .topic_partitions(4);
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
    (app, totals)
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

fn table_equals(t: &Table<String, i64>, oracle: &BTreeMap<String, i64>) -> bool {
    oracle
        .iter()
        .all(|(k, v)| t.get(k).ok().flatten() == Some(*v))
}

/// Changelog records per partition, with the low watermark (must stay 0: the mock
/// broker drops old data past 5 MiB per partition, which would hide a bug).
async fn changelog_records(bootstrap: &str, topic: &str, partitions: i32) -> u64 {
    let c = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id("tables-test-inspect")
            .auto_offset_reset(OffsetReset::Earliest),
    )
    .unwrap();
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(low, 0, "{topic}[{p}] was truncated");
        total += high as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_sums_survive_restarts_and_rebuild_from_the_changelog() {
    let broker = Broker::new();
    broker
        .topic("tx", 4)
        .topic("tables-test-totals-changelog", 4);
    let producer = RawProducer::new(&broker.bootstrap());
    let dir = tempfile::tempdir().unwrap();
    let mut oracle = BTreeMap::new();

    let (app1, totals) = app(&broker, dir.path());
    let worker = app1.start().await.unwrap();
    send(&producer, 0, 2000, &mut oracle).await;
    wait_until("the table equals the sums", || {
        table_equals(&totals, &oracle)
    })
    .await;
    worker.shutdown().await.unwrap();
    let changelog = "tables-test-totals-changelog";
    let written = changelog_records(&broker.bootstrap(), changelog, 4).await;
    assert!(written > 0, "the changelog has records");

    // A restart with the same data directory: nothing to replay; new events add up.
    let (app2, totals) = app(&broker, dir.path());
    let worker = app2.start().await.unwrap();
    send(&producer, 2000, 500, &mut oracle).await;
    wait_until("the restarted worker adds the new events", || {
        table_equals(&totals, &oracle)
    })
    .await;
    assert_eq!(
        worker.monitor().snapshot().recovered_records,
        0,
        "a restart replays only the changelog's tail (empty here)"
    );
    worker.shutdown().await.unwrap();

    // An empty data directory: the table is rebuilt from the changelog.
    let empty = tempfile::tempdir().unwrap();
    let (app3, totals) = app(&broker, empty.path());
    let worker = app3.start().await.unwrap();
    wait_until("the rebuilt table equals the sums", || {
        table_equals(&totals, &oracle)
    })
    .await;
    let recovered = worker.monitor().snapshot().recovered_records;
    assert!(recovered >= USERS, "rebuilt from {recovered} records");
    worker.shutdown().await.unwrap();
    let _ = changelog_records(&broker.bootstrap(), changelog, 4).await;
}

/// Produces to the changelog of table `totals` of `app_id`: a record whose value is not
/// an `i64`, a record without a key, a good record for `u2` and the commit marker after
/// them, all in `u2`'s partition.
async fn bad_changelog(broker: &Broker, app_id: &str) {
    let changelog = format!("{app_id}-totals-changelog");
    let producer = RawProducer::new(&broker.bootstrap());
    let (p, _) = producer.send(&[Raw::new(&changelog, "5").key("u2")]).await[0];
    producer
        .send(&[
            Raw::new(&changelog, "not a number").key("u1").partition(p),
            Raw::new(&changelog, "7").partition(p),
            Raw::new(&changelog, r#"{"sources": []}"#)
                .key("__faust_marker__")
                .header("faust-marker", "commit")
                .partition(p),
        ])
        .await;
}

fn table_app(broker: &Broker, id: &str, dir: &std::path::Path) -> (App, Table<String, i64>) {
    let app = broker.app(id).datadir(dir).topic_partitions(4);
    let totals = app.table::<String, i64>("totals").default(0);
    (app, totals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_changelog_records_are_skipped_with_a_clear_error_or_stop_the_worker() {
    let broker = Broker::new();
    broker
        .topic("skip-test-totals-changelog", 4)
        .topic("stop-test-totals-changelog", 4);
    bad_changelog(&broker, "skip-test").await;
    bad_changelog(&broker, "stop-test").await;

    // Skip (the default): the good record is restored, the others are counted and left out.
    let dir = tempfile::tempdir().unwrap();
    let (app, totals) = table_app(&broker, "skip-test", dir.path());
    let worker = app.start().await.unwrap();
    wait_until("u2 is restored", || {
        totals.get(&"u2".to_string()).ok().flatten() == Some(5)
    })
    .await;
    assert_eq!(totals.get(&"u1".to_string()).unwrap(), None);
    assert_eq!(worker.monitor().snapshot().decode_errors, 2);
    worker.shutdown().await.unwrap();

    // Stop: the worker stops with an error naming the record.
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = table_app(&broker, "stop-test", dir.path());
    let app = app.on_decode_error(faust::settings::DecodeErrorPolicy::Stop);
    let worker = app.start().await.unwrap();
    let err = tokio::time::timeout(common::DEADLINE, worker.wait())
        .await
        .expect("the worker stops")
        .expect_err("with an error");
    let text = err.to_string();
    assert!(text.contains("stop-test-totals-changelog"), "{text}");
}
