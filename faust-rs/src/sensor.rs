//! The Monitor: counters and latencies of a running worker.
//!
//! The full sensor API (hooks, per-table numbers, Prometheus) grows from here; this module
//! keeps the numbers the worker itself reports on `/status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A running total and the latest latency of one operation.
#[derive(Debug, Default)]
struct Latency {
    count: AtomicU64,
    total_us: AtomicU64,
    last_us: AtomicU64,
}

impl Latency {
    fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.last_us.store(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        let count = self.count.load(Ordering::Relaxed);
        let total = self.total_us.load(Ordering::Relaxed);
        LatencySnapshot {
            count,
            avg_ms: if count == 0 {
                0.0
            } else {
                total as f64 / count as f64 / 1000.0
            },
            last_ms: self.last_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// A latency's figures.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySnapshot {
    /// Operations measured.
    pub count: u64,
    /// Mean, milliseconds.
    pub avg_ms: f64,
    /// The latest, milliseconds.
    pub last_ms: f64,
}

/// The worker's counters.
#[derive(Debug)]
pub struct Monitor {
    started: Instant,
    messages_in: AtomicU64,
    events_by_topic: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    events_by_agent: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    decode_errors: AtomicU64,
    agent_failures: AtomicU64,
    agent_restarts: AtomicU64,
    send_errors: AtomicU64,
    recovered: AtomicU64,
    changelog_records: AtomicU64,
    commit: Latency,
    send: Latency,
    through: Latency,
    group_by: Latency,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            messages_in: AtomicU64::new(0),
            events_by_topic: Mutex::default(),
            events_by_agent: Mutex::default(),
            decode_errors: AtomicU64::new(0),
            agent_failures: AtomicU64::new(0),
            agent_restarts: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            changelog_records: AtomicU64::new(0),
            commit: Latency::default(),
            send: Latency::default(),
            through: Latency::default(),
            group_by: Latency::default(),
        }
    }
}

/// The counter of `key` in `map`, created on first use.
fn counter(map: &Mutex<BTreeMap<String, Arc<AtomicU64>>>, key: &str) -> Arc<AtomicU64> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    match m.get(key) {
        Some(c) => c.clone(),
        None => {
            let c = Arc::new(AtomicU64::new(0));
            m.insert(key.to_owned(), c.clone());
            c
        }
    }
}

fn read(map: &Mutex<BTreeMap<String, Arc<AtomicU64>>>) -> BTreeMap<String, u64> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
        .collect()
}

/// Counts the events one stream hands to its agent (resolved once, then lock-free).
#[derive(Debug, Clone)]
pub(crate) struct StreamCounters {
    agent: Arc<AtomicU64>,
    topic: Arc<AtomicU64>,
}

impl StreamCounters {
    pub(crate) fn on_event(&self) {
        self.agent.fetch_add(1, Ordering::Relaxed);
        self.topic.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the counters (the `/status` document's `stats`).
#[derive(Debug, Clone, Serialize)]
pub struct MonitorSnapshot {
    /// Seconds since the worker started.
    pub uptime_s: f64,
    /// Records taken from Kafka.
    pub messages_in: u64,
    /// Events handed to agents, by topic.
    pub events_by_topic: BTreeMap<String, u64>,
    /// Events handed to agents, by agent.
    pub events_by_agent: BTreeMap<String, u64>,
    /// Records that did not decode.
    pub decode_errors: u64,
    /// Agent failures (errors and panics).
    pub agent_failures: u64,
    /// Agent restarts.
    pub agent_restarts: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Changelog records applied to tables by recovery and standby replicas.
    pub recovered_records: u64,
    /// Changelog records written by table flushes.
    pub changelog_records: u64,
    /// Commit latency (including the flush of tables).
    pub commit: LatencySnapshot,
    /// `Topic::send` enqueue latency.
    pub send: LatencySnapshot,
    /// `through()` latency.
    pub through: LatencySnapshot,
    /// `group_by()` latency.
    pub group_by: LatencySnapshot,
}

impl Monitor {
    pub(crate) fn on_messages_in(&self, n: u64) {
        self.messages_in.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of the events `agent` takes from `topic`.
    pub(crate) fn stream_counters(&self, agent: &str, topic: &str) -> StreamCounters {
        StreamCounters {
            agent: counter(&self.events_by_agent, agent),
            topic: counter(&self.events_by_topic, topic),
        }
    }

    pub(crate) fn on_decode_error(&self) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_agent_failure(&self) {
        self.agent_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_agent_restart(&self) {
        self.agent_restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_send(&self, _topic: &str, d: Duration, ok: bool) {
        self.send.record(d);
        if !ok {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn on_recovered(&self, n: u64) {
        self.recovered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn on_changelog(&self, n: u64) {
        self.changelog_records.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn on_commit(&self, d: Duration) {
        self.commit.record(d);
    }

    pub(crate) fn on_through(&self, d: Duration) {
        self.through.record(d);
    }

    pub(crate) fn on_group_by(&self, d: Duration) {
        self.group_by.record(d);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MonitorSnapshot {
        MonitorSnapshot {
            uptime_s: self.started.elapsed().as_secs_f64(),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            events_by_topic: read(&self.events_by_topic),
            events_by_agent: read(&self.events_by_agent),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            agent_failures: self.agent_failures.load(Ordering::Relaxed),
            agent_restarts: self.agent_restarts.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            recovered_records: self.recovered.load(Ordering::Relaxed),
            changelog_records: self.changelog_records.load(Ordering::Relaxed),
            commit: self.commit.snapshot(),
            send: self.send.snapshot(),
            through: self.through.snapshot(),
            group_by: self.group_by.snapshot(),
        }
    }
}
