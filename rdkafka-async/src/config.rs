//! Client configuration: librdkafka's string properties plus typed helpers.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::native::NativePtr;
use crate::sys;

/// librdkafka configuration properties (see librdkafka's `CONFIGURATION.md`).
///
/// Every property is a string, exactly as librdkafka names it; the typed helpers only
/// spell the common ones. Properties are checked when a client is created.
///
/// ```
/// use std::time::Duration;
/// use rdkafka_async::{ClientConfig, Compression};
///
/// let config = ClientConfig::new()
///     .bootstrap_servers("127.0.0.1:9092")
///     .compression(Compression::Lz4)
///     .linger(Duration::from_millis(5))
///     .set("message.timeout.ms", "30000");
/// assert_eq!(config.get("compression.type"), Some("lz4"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientConfig {
    props: BTreeMap<String, String>,
}

/// Where a consumer starts when its group has no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// From the oldest retained message.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// Fail with an error.
    Error,
}

/// A producer's compression codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (zlib).
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4: fast; the default of faust-rs.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// The consumer group's partition assignment strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentStrategy {
    /// `range`: eager; co-partitions topics of equal partition count.
    Range,
    /// `roundrobin`: eager.
    RoundRobin,
    /// `cooperative-sticky`: incremental; only moved partitions are revoked.
    CooperativeSticky,
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

impl ClientConfig {
    /// An empty configuration (librdkafka's defaults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets any librdkafka property.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.props.insert(key.into(), value.into());
        self
    }

    /// Sets a property in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.props.insert(key.into(), value.into());
        self
    }

    /// Removes a property; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.props.remove(key)
    }

    /// A property's value, if set here.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// All properties set here.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.props.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `bootstrap.servers`: a comma-separated `host:port` list.
    pub fn bootstrap_servers(self, servers: impl Into<String>) -> Self {
        self.set("bootstrap.servers", servers)
    }

    /// `client.id`.
    pub fn client_id(self, id: impl Into<String>) -> Self {
        self.set("client.id", id)
    }

    /// `group.id`: the consumer group.
    pub fn group_id(self, id: impl Into<String>) -> Self {
        self.set("group.id", id)
    }

    /// `auto.offset.reset`.
    pub fn auto_offset_reset(self, reset: OffsetReset) -> Self {
        let v = match reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::Error => "error",
        };
        self.set("auto.offset.reset", v)
    }

    /// `enable.auto.commit`.
    pub fn enable_auto_commit(self, enable: bool) -> Self {
        self.set("enable.auto.commit", enable.to_string())
    }

    /// `enable.auto.offset.store`.
    pub fn enable_auto_offset_store(self, enable: bool) -> Self {
        self.set("enable.auto.offset.store", enable.to_string())
    }

    /// `partition.assignment.strategy`.
    pub fn assignment_strategy(self, strategy: AssignmentStrategy) -> Self {
        let v = match strategy {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        };
        self.set("partition.assignment.strategy", v)
    }

    /// `session.timeout.ms`.
    pub fn session_timeout(self, d: Duration) -> Self {
        self.set("session.timeout.ms", millis(d))
    }

    /// `max.poll.interval.ms`: the longest the application may go without asking for a
    /// message before it leaves the group. An idle consumer that is waiting in `recv`
    /// is kept in the group by the client.
    pub fn max_poll_interval(self, d: Duration) -> Self {
        self.set("max.poll.interval.ms", millis(d))
    }

    /// `statistics.interval.ms`: how often statistics events are emitted (0 = never).
    pub fn statistics_interval(self, d: Duration) -> Self {
        self.set("statistics.interval.ms", millis(d))
    }

    /// `linger.ms`: how long the producer waits to fill a batch.
    pub fn linger(self, d: Duration) -> Self {
        self.set("linger.ms", millis(d))
    }

    /// `compression.type`.
    pub fn compression(self, c: Compression) -> Self {
        let v = match c {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        self.set("compression.type", v)
    }

    /// `message.timeout.ms`: how long a produced message may wait for delivery.
    pub fn message_timeout(self, d: Duration) -> Self {
        self.set("message.timeout.ms", millis(d))
    }

    /// `enable.idempotence`.
    pub fn enable_idempotence(self, enable: bool) -> Self {
        self.set("enable.idempotence", enable.to_string())
    }

    /// `queue.buffering.max.messages`: the producer queue's bound.
    pub fn queue_buffering_max_messages(self, n: usize) -> Self {
        self.set("queue.buffering.max.messages", n.to_string())
    }

    /// A boolean property as librdkafka reads it (`true`/`t`/`1`, `false`/`f`/`0`), or
    /// `default` when unset.
    pub(crate) fn bool_value(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("true" | "t" | "1") => Ok(true),
            Some("false" | "f" | "0") => Ok(false),
            Some(other) => Err(Error::Config {
                key: key.to_owned(),
                reason: format!("expected true or false, got {other:?}"),
            }),
        }
    }

    /// The configured `max.poll.interval.ms` (librdkafka's default: 300 s).
    pub(crate) fn max_poll_interval_value(&self) -> Duration {
        self.get("max.poll.interval.ms")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(300))
    }

    /// Builds librdkafka's configuration object, checking every property.
    pub(crate) fn to_native(&self) -> Result<NativePtr<sys::rd_kafka_conf_t>> {
        // SAFETY: `rd_kafka_conf_new` returns a new, owned object.
        let conf = unsafe { NativePtr::from_ptr(sys::rd_kafka_conf_new()) }
            .ok_or_else(|| Error::ClientCreation("rd_kafka_conf_new failed".into()))?;
        for (key, value) in &self.props {
            set_native(&conf, key, value)?;
        }
        Ok(conf)
    }
}

/// Sets one property on a native configuration.
pub(crate) fn set_native(
    conf: &NativePtr<sys::rd_kafka_conf_t>,
    key: &str,
    value: &str,
) -> Result<()> {
    let bad = |reason: String| Error::Config {
        key: key.to_owned(),
        reason,
    };
    let k = CString::new(key).map_err(|_| bad("NUL in the name".into()))?;
    let v = CString::new(value).map_err(|_| bad("NUL in the value".into()))?;
    let mut errstr = [0 as std::os::raw::c_char; 512];
    // SAFETY: all pointers are valid for the call; errstr's length is passed.
    let res = unsafe {
        sys::rd_kafka_conf_set(
            conf.ptr(),
            k.as_ptr(),
            v.as_ptr(),
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if res == sys::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
        Ok(())
    } else {
        Err(bad(crate::native::cstr_to_string(errstr.as_ptr())))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ClientConfig {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            props: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}
