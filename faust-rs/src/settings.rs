//! App settings: defaults, then code, then `FAUST_*` environment variables, then CLI flags.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where the Kafka cluster is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broker {
    /// No broker configured: start librdkafka's mock cluster inside the worker.
    Embedded,
    /// A bootstrap list, e.g. `kafka://host1:9092,host2:9092` (the scheme is optional).
    Kafka(String),
}

impl Broker {
    /// Parses `kafka://h:p,h:p`, `h:p,h:p`, or `embedded://` / `memory://`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "embedded://" || s == "memory://" {
            return Ok(Self::Embedded);
        }
        let list = s.strip_prefix("kafka://").unwrap_or(s);
        let hosts: Vec<&str> = list
            .split(',')
            .map(|h| h.trim().trim_start_matches("kafka://"))
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() || hosts.iter().any(|h| !h.contains(':')) {
            return Err(Error::Setting {
                name: "broker".into(),
                reason: format!("{s:?} is not a list of host:port"),
            });
        }
        Ok(Self::Kafka(hosts.join(",")))
    }
}

/// What to do with a record whose key or value does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorPolicy {
    /// Log it, count it, move on (the default). Its offset is committed.
    Skip,
    /// Send the raw record to this topic with the error in the `faust-error` header.
    DeadLetter(String),
    /// Stop the worker with an error; the record's offset is not committed.
    Stop,
}

/// What to do when an agent fails (returns an error or panics).
#[derive(Clone, Debug, PartialEq)]
pub enum AgentFailurePolicy {
    /// Log, count, and restart the agent after a backoff that doubles from `initial` up to
    /// `max`; the event it was processing is delivered again (at-least-once).
    Restart {
        /// First backoff.
        initial: Duration,
        /// Longest backoff.
        max: Duration,
    },
    /// Log, count, and stop the worker with an error.
    StopWorker,
}

impl Default for AgentFailurePolicy {
    fn default() -> Self {
        Self::Restart {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// The processing guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Every event is processed at least once: offsets are committed only up to the
    /// contiguous prefix of processed events.
    #[default]
    AtLeastOnce,
}

/// All settings of an app.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// The app id: the consumer group and the prefix of internal topics.
    pub id: String,
    /// The Kafka cluster (`FAUST_BROKER`).
    pub broker: Broker,
    /// Where state lives (`FAUST_DATADIR`); default `<id>-data`.
    pub datadir: PathBuf,
    /// Web server port (`FAUST_WEB_PORT`), default 6666.
    pub web_port: u16,
    /// Web server address (`FAUST_WEB_BIND`), default 127.0.0.1.
    pub web_bind: IpAddr,
    /// Whether to run the web server (`FAUST_WITHOUT_WEB=1` disables it).
    pub web_enabled: bool,
    /// Partitions of topics the app creates (`FAUST_TOPIC_PARTITIONS`), default 8.
    pub topic_partitions: i32,
    /// How often processed offsets are committed (`FAUST_COMMIT_INTERVAL`), default 1 s.
    pub commit_interval: Duration,
    /// Commit early after this many acked events (`FAUST_COMMIT_EVERY`), default 10,000.
    pub commit_every: u64,
    /// The processing guarantee.
    pub processing_guarantee: ProcessingGuarantee,
    /// What to do with undecodable records.
    pub decode_error_policy: DecodeErrorPolicy,
    /// What to do when an agent fails.
    pub agent_failure_policy: AgentFailurePolicy,
    /// Events buffered per agent before the consumer waits (backpressure).
    pub stream_buffer: usize,
    /// How long a graceful shutdown waits for in-flight events.
    pub shutdown_timeout: Duration,
    /// `/ready` answers 503 while the consumer lag of this worker's partitions is above
    /// this many records (`FAUST_READY_MAX_LAG`), default 10,000.
    pub ready_max_lag: i64,
    /// The URL other workers use to reach this worker's web server
    /// (`FAUST_CANONICAL_URL`); default `http://<bind address>:<port>`.
    pub canonical_url: Option<String>,
    /// Standby copies of each table partition kept by other workers
    /// (`FAUST_TABLE_STANDBY_REPLICAS`), default 1.
    pub table_standby_replicas: usize,
    /// The size LMDB may map for tables (`FAUST_TABLE_MAP_SIZE`, bytes), default 4 GiB
    /// (address space, not disk: the file grows as needed).
    pub table_map_size: usize,
    /// Extra librdkafka properties for every client (`FAUST_KAFKA_<PROPERTY>` with dots as
    /// underscores, e.g. `FAUST_KAFKA_SESSION_TIMEOUT_MS`).
    pub kafka: BTreeMap<String, String>,
}

impl Settings {
    /// Defaults for app `id`.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            datadir: PathBuf::from(format!("{id}-data")),
            id,
            broker: Broker::Embedded,
            web_port: 6666,
            web_bind: IpAddr::from([127, 0, 0, 1]),
            web_enabled: true,
            topic_partitions: 8,
            commit_interval: Duration::from_secs(1),
            commit_every: 10_000,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            decode_error_policy: DecodeErrorPolicy::Skip,
            agent_failure_policy: AgentFailurePolicy::default(),
            stream_buffer: 4096,
            shutdown_timeout: Duration::from_secs(30),
            ready_max_lag: 10_000,
            canonical_url: None,
            table_standby_replicas: 1,
            table_map_size: 4 << 30,
            kafka: BTreeMap::new(),
        }
    }

    /// Applies `FAUST_*` variables from `vars` (usually `std::env::vars()`).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("FAUST_") else {
                continue;
            };
            let bad = |reason: String| Error::Setting {
                name: name.clone(),
                reason,
            };
            match key {
                "BROKER" => self.broker = Broker::parse(&value)?,
                "DATADIR" => self.datadir = PathBuf::from(&value),
                "CANONICAL_URL" => self.canonical_url = Some(value.clone()),
                "READY_MAX_LAG" => {
                    self.ready_max_lag = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "TABLE_STANDBY_REPLICAS" => {
                    self.table_standby_replicas = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "TABLE_MAP_SIZE" => {
                    self.table_map_size = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "WEB_PORT" => self.web_port = value.parse().map_err(|e| bad(format!("{e}")))?,
                "WEB_BIND" => self.web_bind = value.parse().map_err(|e| bad(format!("{e}")))?,
                "WITHOUT_WEB" => self.web_enabled = !truthy(&value),
                "TOPIC_PARTITIONS" => {
                    self.topic_partitions = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("{value:?} is not a positive number")))?
                }
                "COMMIT_INTERVAL" => self.commit_interval = parse_duration(&value).map_err(bad)?,
                "COMMIT_EVERY" => {
                    self.commit_every = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "STREAM_BUFFER" => {
                    self.stream_buffer = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "SHUTDOWN_TIMEOUT" => {
                    self.shutdown_timeout = parse_duration(&value).map_err(bad)?
                }
                "DECODE_ERRORS" => {
                    self.decode_error_policy = match value.as_str() {
                        "skip" => DecodeErrorPolicy::Skip,
                        "stop" => DecodeErrorPolicy::Stop,
                        v => match v.strip_prefix("dead-letter:") {
                            Some(t) if !t.is_empty() => DecodeErrorPolicy::DeadLetter(t.to_owned()),
                            _ => {
                                return Err(bad(format!(
                                    "{v:?}: expected skip, stop or dead-letter:<topic>"
                                )))
                            }
                        },
                    }
                }
                k if k.starts_with("KAFKA_") => {
                    let prop = k["KAFKA_".len()..].to_ascii_lowercase().replace('_', ".");
                    self.kafka.insert(prop, value);
                }
                // FAUSTAPP, FAUST_LOGLEVEL and unknown names belong to others.
                _ => {}
            }
        }
        Ok(())
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

/// Parses `1500` (milliseconds) or a human duration (`1.5s`, `2m`).
pub(crate) fn parse_duration(v: &str) -> std::result::Result<Duration, String> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(v).map_err(|e| format!("{v:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_defaults() {
        let mut s = Settings::new("app");
        s.apply_env(env(&[
            ("FAUST_BROKER", "kafka://a:1,b:2"),
            ("FAUST_WEB_PORT", "7000"),
            ("FAUST_COMMIT_INTERVAL", "250ms"),
            ("FAUST_KAFKA_SESSION_TIMEOUT_MS", "6000"),
            ("FAUST_DECODE_ERRORS", "dead-letter:bad"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(s.broker, Broker::Kafka("a:1,b:2".into()));
        assert_eq!(s.web_port, 7000);
        assert_eq!(s.commit_interval, Duration::from_millis(250));
        assert_eq!(
            s.kafka.get("session.timeout.ms").map(String::as_str),
            Some("6000")
        );
        assert_eq!(
            s.decode_error_policy,
            DecodeErrorPolicy::DeadLetter("bad".into())
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let mut s = Settings::new("app");
        let err = s.apply_env(env(&[("FAUST_WEB_PORT", "lots")])).unwrap_err();
        assert!(err.to_string().contains("FAUST_WEB_PORT"), "{err}");
        assert!(Broker::parse("kafka://nohostport").is_err());
        assert!(s
            .apply_env(env(&[("FAUST_TOPIC_PARTITIONS", "0")]))
            .is_err());
        assert_eq!(Broker::parse("").unwrap(), Broker::Embedded);
    }
}
