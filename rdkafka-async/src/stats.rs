//! librdkafka's statistics, parsed (see librdkafka's `STATISTICS.md`).
//!
//! Enable them with [`ClientConfig::statistics_interval`](crate::ClientConfig::statistics_interval);
//! each client then publishes the latest document on
//! [`statistics()`](crate::Producer::statistics) channels. Only the commonly used fields are
//! typed; the whole document stays available as [`Statistics::raw`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// One statistics document.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct Statistics {
    /// The client's handle name.
    #[serde(default)]
    pub name: String,
    /// `client.id`.
    #[serde(default)]
    pub client_id: String,
    /// `"producer"` or `"consumer"`.
    #[serde(default, rename = "type")]
    pub client_type: String,
    /// librdkafka's monotonic clock, microseconds.
    #[serde(default)]
    pub ts: i64,
    /// Wall-clock time, seconds since the epoch.
    #[serde(default)]
    pub time: i64,
    /// Messages waiting in the producer queues.
    #[serde(default)]
    pub msg_cnt: u64,
    /// Bytes waiting in the producer queues.
    #[serde(default)]
    pub msg_size: u64,
    /// Requests sent to brokers.
    #[serde(default)]
    pub tx: u64,
    /// Bytes sent to brokers.
    #[serde(default)]
    pub tx_bytes: u64,
    /// Responses received from brokers.
    #[serde(default)]
    pub rx: u64,
    /// Bytes received from brokers.
    #[serde(default)]
    pub rx_bytes: u64,
    /// Messages sent.
    #[serde(default)]
    pub txmsgs: u64,
    /// Messages consumed.
    #[serde(default)]
    pub rxmsgs: u64,
    /// Per broker.
    #[serde(default)]
    pub brokers: BTreeMap<String, BrokerStats>,
    /// Per topic.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicStats>,
    /// The whole document as librdkafka wrote it.
    #[serde(skip)]
    pub raw: String,
}

/// Statistics of one broker connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct BrokerStats {
    /// `host:port/id`.
    #[serde(default)]
    pub name: String,
    /// Connection state (`UP`, `DOWN`, ...).
    #[serde(default)]
    pub state: String,
    /// Requests waiting for a response.
    #[serde(default)]
    pub outbuf_cnt: u64,
    /// Round-trip time, microseconds.
    #[serde(default)]
    pub rtt: Window,
}

/// A rolling window of samples (microseconds).
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct Window {
    /// Smallest sample.
    #[serde(default)]
    pub min: i64,
    /// Largest sample.
    #[serde(default)]
    pub max: i64,
    /// Mean.
    #[serde(default)]
    pub avg: i64,
    /// 99th percentile.
    #[serde(default)]
    pub p99: i64,
}

/// Statistics of one topic.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct TopicStats {
    /// Per partition (key: the partition number; `-1` is the unassigned partition).
    #[serde(default)]
    pub partitions: BTreeMap<String, PartitionStats>,
}

/// Statistics of one partition.
#[derive(Debug, Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct PartitionStats {
    /// Partition number.
    #[serde(default)]
    pub partition: i32,
    /// Messages waiting in the consumer's fetch queue.
    #[serde(default)]
    pub fetchq_cnt: u64,
    /// Next offset to fetch.
    #[serde(default)]
    pub next_offset: i64,
    /// Last committed offset.
    #[serde(default)]
    pub committed_offset: i64,
    /// The partition's high watermark.
    #[serde(default)]
    pub hi_offset: i64,
    /// Consumer lag.
    #[serde(default)]
    pub consumer_lag: i64,
    /// Messages sent.
    #[serde(default)]
    pub txmsgs: u64,
    /// Messages consumed.
    #[serde(default)]
    pub rxmsgs: u64,
}

impl Statistics {
    /// Parses librdkafka's JSON document.
    ///
    /// ```
    /// let s = rdkafka_async::Statistics::parse(r#"{"name":"p#1","type":"producer","txmsgs":3}"#).unwrap();
    /// assert_eq!(s.txmsgs, 3);
    /// ```
    pub fn parse(json: &str) -> crate::Result<Self> {
        let mut stats: Self =
            serde_json::from_str(json).map_err(|e| crate::Error::Statistics(e.to_string()))?;
        stats.raw = json.to_owned();
        Ok(stats)
    }
}
