//! Records whose key or value does not decode, under each `DecodeErrorPolicy`:
//! - `Skip`: the good records around them are all processed, the bad ones are counted, and
//!   the committed offset moves past them (also when the last record is bad);
//! - `DeadLetter(topic)`: the bad record goes to the dead-letter topic with its raw key and
//!   value and the error in the `faust-error` header, and the offset moves past it;
//! - `Stop`: the worker stops with `Error::BadRecord` naming the record, the bad record's
//!   offset is not committed, and a worker started afterwards reads it again.

mod common;

use common::{header, produce, read_topic, wait_until, Broker, Log, Offsets, Raw};
use faust::settings::DecodeErrorPolicy;
use std::time::Duration;

use faust::rdkafka_async::{Admin, ClientConfig};
use faust::{App, Error};

/// An agent on `numbers` (JSON keys and `i64` values) that logs each value.
fn numbers_app(app: &App, seen: &Log<i64>) {
    let numbers = app.topic::<String, i64>("numbers");
    let log = seen.clone();
    app.agent("sum", &numbers, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(v) = stream.next().await {
                log.push(v);
            }
            Ok(())
        }
    });
}

fn good(v: i64) -> Raw {
    Raw::new("numbers", v.to_string()).key(format!("\"k{v}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_moves_past_bad_records_and_loses_nothing() {
    let b = Broker::new();
    b.topic("numbers", 1);
    let app = b.app("bad-skip").on_decode_error(DecodeErrorPolicy::Skip);
    let seen = Log::default();
    numbers_app(&app, &seen);
    let worker = app.start().await.unwrap();
    produce(
        &b.bootstrap(),
        &[
            good(0),
            Raw::new("numbers", "{oops").key("\"k1\""), // bad value
            good(2),
            Raw::new("numbers", "3").key(b"\xff\xfe".to_vec()), // bad key: not UTF-8
            good(4),
            good(5),
            Raw::new("numbers", b"\xff\xfe".to_vec()), // bad value, and the last record
        ],
    )
    .await;

    let offsets = Offsets::new(&b.bootstrap(), "bad-skip");
    offsets.wait_all_committed("numbers", 1).await;
    assert_eq!(offsets.committed("numbers", 1).await, vec![Some(7)]);
    assert_eq!(
        seen.items(),
        vec![0, 2, 4, 5],
        "every good record, in order"
    );
    assert_eq!(worker.monitor().snapshot().decode_errors, 3);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_keeps_the_raw_record_and_the_error() {
    let b = Broker::new();
    b.topic("numbers", 1).topic("dead-letters", 1);
    let app = b
        .app("bad-dlq")
        .on_decode_error(DecodeErrorPolicy::DeadLetter("dead-letters".into()));
    let seen = Log::default();
    numbers_app(&app, &seen);
    let worker = app.start().await.unwrap();
    let bad_value = b"\x00{\"not\": json}\xff".to_vec();
    produce(
        &b.bootstrap(),
        &[
            good(0),
            Raw::new("numbers", bad_value.clone()).key("raw key"),
            good(2),
        ],
    )
    .await;

    let offsets = Offsets::new(&b.bootstrap(), "bad-dlq");
    offsets.wait_all_committed("numbers", 1).await;
    assert_eq!(seen.items(), vec![0, 2]);
    let letters = read_topic(&b.bootstrap(), "dead-letters", 1, 1).await;
    let letter = &letters[&0][0];
    assert_eq!(letter.key(), Some(&b"raw key"[..]), "the raw key");
    assert_eq!(letter.payload(), Some(&bad_value[..]), "the raw value");
    let error = header(letter, "faust-error").expect("a faust-error header");
    assert!(error.starts_with("json: "), "the codec's error: {error:?}");
    assert_eq!(
        header(letter, "faust-source").as_deref(),
        Some("numbers[0]@1")
    );
    assert_eq!(worker.monitor().snapshot().decode_errors, 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_topic_is_created_on_the_embedded_broker() {
    common::init_tracing();
    let app = App::new("bad-dlq-embedded")
        .without_web()
        .topic_partitions(1)
        .on_decode_error(DecodeErrorPolicy::DeadLetter("dead-letters".into()));
    let seen = Log::default();
    numbers_app(&app, &seen);
    let worker = app.start().await.unwrap();
    let bootstrap = worker.bootstrap_servers().to_owned();
    produce(&bootstrap, &[good(0), Raw::new("numbers", "bad"), good(2)]).await;

    seen.wait_for(2, "the good records").await;
    // Made by the app, with the app's partition count (not auto-created by the broker).
    let admin = Admin::new(ClientConfig::new().bootstrap_servers(&bootstrap)).unwrap();
    let metadata = admin.metadata(None, Duration::from_secs(10)).await.unwrap();
    let topic = metadata
        .topic("dead-letters")
        .expect("the dead-letter topic");
    assert_eq!(topic.partitions.len(), 1);
    let letters = read_topic(&bootstrap, "dead-letters", 1, 1).await;
    assert_eq!(letters[&0][0].payload(), Some(&b"bad"[..]));
    Offsets::new(&bootstrap, "bad-dlq-embedded")
        .wait_all_committed("numbers", 1)
        .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_fails_the_worker_and_keeps_the_bad_record_uncommitted() {
    let b = Broker::new();
    b.topic("numbers", 1);
    let app = b.app("bad-stop").on_decode_error(DecodeErrorPolicy::Stop);
    let seen = Log::default();
    numbers_app(&app, &seen);
    let worker = app.start().await.unwrap();
    produce(
        &b.bootstrap(),
        &[good(0), good(1), Raw::new("numbers", "{bad"), good(3)],
    )
    .await;

    let stopping = worker.stopping();
    wait_until("the worker stops", || stopping.is_cancelled()).await;
    match worker.wait().await {
        Err(Error::BadRecord {
            topic,
            partition,
            offset,
            reason,
        }) => {
            assert_eq!((topic.as_str(), partition, offset), ("numbers", 0, 2));
            assert!(reason.starts_with("json: "), "{reason}");
        }
        other => panic!("expected a BadRecord error, got {other:?}"),
    }
    assert_eq!(
        seen.items(),
        vec![0, 1],
        "nothing after the bad record was processed"
    );
    let offsets = Offsets::new(&b.bootstrap(), "bad-stop");
    assert_eq!(
        offsets.committed("numbers", 1).await,
        vec![Some(2)],
        "committed up to the bad record, not past it"
    );

    // After fixing the input (here: skipping), a new worker reads the bad record again and
    // goes on with the rest.
    let app = b.app("bad-stop").on_decode_error(DecodeErrorPolicy::Skip);
    let seen_again = Log::default();
    numbers_app(&app, &seen_again);
    let worker = app.start().await.unwrap();
    offsets.wait_all_committed("numbers", 1).await;
    assert_eq!(seen_again.items(), vec![3]);
    assert_eq!(worker.monitor().snapshot().decode_errors, 1);
    worker.shutdown().await.unwrap();
}
