//! Helpers shared by the behaviour tests: a broker (librdkafka's mock cluster, created by
//! the test), apps pointed at it, raw producing and reading, the group's committed
//! offsets as seen from outside the worker, and waiting for conditions with a deadline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faust::rdkafka_async::{
    ClientConfig, Compression, Consumer, Message, MockCluster, Offset, Producer, Record,
    TopicPartitionList,
};
use faust::App;

/// How long any condition may take to become true. Generous: two shared cores, and the
/// mock broker's group rebalances take up to `session.timeout.ms`.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// How often conditions are checked.
const POLL: Duration = Duration::from_millis(20);

/// Logs to the test's output (`RUST_LOG` picks the level; warnings by default).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Waits until `cond` holds; panics with `what` after [`DEADLINE`].
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the asynchronous `cond` holds; panics with `what` after [`DEADLINE`].
pub(crate) async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A Kafka cluster for one test: librdkafka's mock cluster with one broker.
pub(crate) struct Broker {
    pub(crate) cluster: MockCluster,
    /// The most partitions of a topic made so far (the tasks topic of apps gets as many).
    max_partitions: std::sync::atomic::AtomicI32,
}

impl Broker {
    pub(crate) fn new() -> Self {
        init_tracing();
        Self {
            cluster: MockCluster::new(1).expect("mock cluster"),
            max_partitions: std::sync::atomic::AtomicI32::new(1),
        }
    }

    pub(crate) fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates a topic (the mock has no CreateTopics: apps on it find their topics made).
    pub(crate) fn topic(&self, name: &str, partitions: i32) -> &Self {
        self.cluster
            .create_topic(name, partitions, 1)
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        self.max_partitions
            .fetch_max(partitions, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// An app on this broker (see [`app`]), with its tasks topic made (the mock has no
    /// CreateTopics), with as many partitions as the largest topic made so far.
    pub(crate) fn app(&self, id: &str) -> App {
        let tasks = self
            .max_partitions
            .load(std::sync::atomic::Ordering::Relaxed);
        let _ = self
            .cluster
            .create_topic(&format!("{id}-__assignor"), tasks, 1);
        let _ = self.cluster.create_topic(&format!("{id}-__cluster"), 1, 1);
        app(id, &self.bootstrap())
    }
}

/// An app on `bootstrap`, without a web server, with short group timeouts (the mock
/// broker makes rejoins wait `session.timeout.ms` - 1 s) and frequent commits.
pub(crate) fn app(id: &str, bootstrap: &str) -> App {
    let app = App::new(id)
        .broker(bootstrap)
        .expect("broker address")
        .without_web()
        .commit_interval(Duration::from_millis(100));
    app.configure(|s| {
        s.kafka.insert("session.timeout.ms".into(), "2000".into());
        s.kafka.insert("heartbeat.interval.ms".into(), "200".into());
        s.shutdown_timeout = Duration::from_secs(20);
    });
    app
}

/// A shared list that agents append to and tests read.
#[derive(Debug)]
pub(crate) struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Log<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Clone> Log<T> {
    pub(crate) fn push(&self, item: T) {
        self.0.lock().unwrap().push(item);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub(crate) fn items(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until at least `n` items were logged; returns them.
    pub(crate) async fn wait_for(&self, n: usize, what: &str) -> Vec<T> {
        wait_until(&format!("{what} ({n} items)"), || self.len() >= n).await;
        self.items()
    }
}

/// A raw record for [`produce`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Raw {
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp, ms since the epoch (`None`: now).
    pub(crate) timestamp: Option<i64>,
}

impl Raw {
    pub(crate) fn new(topic: &str, value: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            value: value.into(),
            ..Self::default()
        }
    }

    pub(crate) fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub(crate) fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(crate) fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
}

/// A producer of raw records, as any other Kafka client would write them.
pub(crate) struct RawProducer(Producer);

impl RawProducer {
    pub(crate) fn new(bootstrap: &str) -> Self {
        Self(
            Producer::new(
                ClientConfig::new()
                    .bootstrap_servers(bootstrap)
                    // Kafka's default partitioner, as the app's producer and tables use.
                    .set("partitioner", "murmur2_random")
                    .compression(Compression::Lz4)
                    .linger(Duration::from_millis(5))
                    .set("enable.idempotence", "true"),
            )
            .expect("producer"),
        )
    }

    /// Produces `records` in order; returns (partition, offset) of each once stored.
    pub(crate) async fn send(&self, records: &[Raw]) -> Vec<(i32, i64)> {
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let mut record = Record::to(&r.topic).value(&r.value);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            for (name, value) in &r.headers {
                record = record.header(name, value);
            }
            if let Some(ts) = r.timestamp {
                record = record.timestamp(ts);
            }
            pending.push(self.0.send(record).await.expect("enqueue"));
        }
        let mut out = Vec::with_capacity(pending.len());
        for d in pending {
            let d = d.await.expect("delivery");
            out.push((d.partition, d.offset));
        }
        out
    }
}

/// Produces `records` in order with a producer of its own; returns (partition, offset) of
/// each.
pub(crate) async fn produce(bootstrap: &str, records: &[Raw]) -> Vec<(i32, i64)> {
    RawProducer::new(bootstrap).send(records).await
}

/// Produces JSON values with JSON keys.
pub(crate) async fn produce_json<K: serde::Serialize, V: serde::Serialize>(
    bootstrap: &str,
    topic: &str,
    items: &[(Option<K>, V)],
) -> Vec<(i32, i64)> {
    let records: Vec<Raw> = items
        .iter()
        .map(|(k, v)| {
            let mut r = Raw::new(topic, serde_json::to_vec(v).unwrap());
            if let Some(k) = k {
                r = r.key(serde_json::to_vec(k).unwrap());
            }
            r
        })
        .collect();
    produce(bootstrap, &records).await
}

/// A consumer of group `group` that never joins it: it only reads the group's committed
/// offsets, as another member or an operator would.
pub(crate) struct Offsets {
    consumer: Consumer,
}

impl Offsets {
    pub(crate) fn new(bootstrap: &str, group: &str) -> Self {
        let consumer = Consumer::new(
            ClientConfig::new()
                .bootstrap_servers(bootstrap)
                .group_id(group)
                .enable_auto_commit(false),
        )
        .expect("consumer");
        Self { consumer }
    }

    /// The committed offset of each partition `0..partitions` of `topic` (`None`: none).
    pub(crate) async fn committed(&self, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add(topic, p, Offset::Invalid);
        }
        let answer = self
            .consumer
            .committed(&tpl, Duration::from_secs(10))
            .await
            .expect("committed offsets");
        (0..partitions)
            .map(|p| answer.find(topic, p).and_then(|e| e.offset.absolute()))
            .collect()
    }

    /// The high watermark of each partition `0..partitions` of `topic`.
    pub(crate) async fn high_watermarks(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let mut out = Vec::new();
        for p in 0..partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .await
                .expect("watermarks");
            out.push(high);
        }
        out
    }

    /// Waits until the committed offsets of `topic` equal its high watermarks.
    pub(crate) async fn wait_all_committed(&self, topic: &str, partitions: i32) {
        let high = self.high_watermarks(topic, partitions).await;
        let want: Vec<Option<i64>> = high.iter().map(|h| Some(*h)).collect();
        wait_until_async(
            &format!("{topic}: committed offsets reach the high watermarks {high:?}"),
            || async { self.committed(topic, partitions).await == want },
        )
        .await;
    }
}

/// Reads `n` records of `topic` (partitions `0..partitions`, from the beginning) without
/// a group; returns them by partition, in offset order.
pub(crate) async fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> BTreeMap<i32, Vec<Message>> {
    let mut consumer = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id(format!("reader-{topic}"))
            .enable_auto_commit(false),
    )
    .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add(topic, p, Offset::Beginning);
    }
    consumer.assign(&tpl).await.expect("assign");
    let mut out: BTreeMap<i32, Vec<Message>> = BTreeMap::new();
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got < n {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("{topic}: only {got} of {n} records within {DEADLINE:?}"))
            .expect("record");
        out.entry(m.partition()).or_default().push(m);
        got += 1;
    }
    out
}

/// The value of header `name` of `m`, as text.
pub(crate) fn header(m: &Message, name: &str) -> Option<String> {
    m.headers()
        .last(name)
        .flatten()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The partition of `key` among `partitions`: Kafka's default partitioner, as the app's
/// producer and tables use.
pub(crate) fn kafka_partition(key: &[u8], partitions: i32) -> i32 {
    faust::table::partition_for(key, partitions)
}
