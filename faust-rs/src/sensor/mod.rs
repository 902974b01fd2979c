//! Sensors: the worker's own figures (the [`Monitor`]) and hooks for user-written sensors
//! (the [`Sensor`] trait).
//!
//! The Monitor keeps, for a running worker: events per second (in total, by source topic
//! and by agent, over the last [`RATE_WINDOW`]), records written to tables (in total and
//! by table), the average processing time of a record (from when the worker took it from
//! Kafka to when it was acknowledged), the total number of events, and the latencies of
//! commits, `through()`, `group_by()` and producer sends. The web server serves them on
//! `/stats/` (JSON), `/metrics` (Prometheus) and `/dashboard/` (live graphs).
//!
//! ```no_run
//! # async fn demo() -> faust::Result<()> {
//! let app = faust::App::new("shop");
//! let worker = app.start().await?;
//! let stats = worker.monitor().snapshot();
//! println!("{} events, {:.1}/s", stats.events_total, stats.events_per_s);
//! println!("{}", stats.prometheus());
//! # Ok(()) }
//! ```

mod hooks;
mod prometheus;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka_async::Message;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::error::Error;
use crate::event::Origin;
use crate::table::TableCore;

pub(crate) use hooks::Sensors;
pub use hooks::{Sensor, TopicPartition};
pub use prometheus::CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE;

/// How far back the rates (events per second, writes per second) and the recent
/// latencies look.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);

/// How often a running worker samples its counters for the rates.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// How old the oldest reading kept may be: the window is between [`RATE_WINDOW`] and this.
const KEEP: Duration = RATE_WINDOW.saturating_add(SAMPLE_EVERY);

/// Keeps a field read on every event on cache lines of its own: the counters around it
/// change all the time.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A running total and the latest latency of one operation.
#[derive(Debug, Default)]
struct Latency {
    count: AtomicU64,
    total_us: AtomicU64,
    last_us: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Latency {
    fn record(&self, d: Duration) {
        self.record_n(1, micros(d));
    }

    /// `n` operations that took `us` microseconds each.
    fn record_n(&self, n: u64, us: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.total_us
            .fetch_add(us.saturating_mul(n), Ordering::Relaxed);
        self.last_us.store(us, Ordering::Relaxed);
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.total_us.load(Ordering::Relaxed),
        )
    }

    fn snapshot(&self, base: (u64, u64)) -> LatencySnapshot {
        let (count, total) = self.totals();
        let (recent_n, recent_us) = (count.saturating_sub(base.0), total.saturating_sub(base.1));
        LatencySnapshot {
            count,
            avg_ms: if count == 0 {
                0.0
            } else {
                total as f64 / count as f64 / 1000.0
            },
            last_ms: self.last_us.load(Ordering::Relaxed) as f64 / 1000.0,
            sum_ms: total as f64 / 1000.0,
            recent_avg_ms: (recent_n > 0).then(|| recent_us as f64 / recent_n as f64 / 1000.0),
        }
    }
}

/// A latency's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySnapshot {
    /// Operations measured.
    pub count: u64,
    /// Mean since the worker started, milliseconds.
    pub avg_ms: f64,
    /// The latest, milliseconds.
    pub last_ms: f64,
    /// Sum of all, milliseconds (for Prometheus summaries).
    #[serde(default)]
    pub sum_ms: f64,
    /// Mean over the last [`RATE_WINDOW`], milliseconds; `None` if no operation ended in
    /// it.
    #[serde(default)]
    pub recent_avg_ms: Option<f64>,
}

/// The counters at one instant (what the rates are computed from).
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    messages: u64,
    by_topic: BTreeMap<String, u64>,
    by_agent: BTreeMap<String, u64>,
    by_table: BTreeMap<String, u64>,
    latencies: [(u64, u64); LATENCIES],
}

impl Reading {
    fn zero(at: Instant) -> Self {
        Self {
            at,
            messages: 0,
            by_topic: BTreeMap::new(),
            by_agent: BTreeMap::new(),
            by_table: BTreeMap::new(),
            latencies: [(0, 0); LATENCIES],
        }
    }
}

const LATENCIES: usize = 6;

/// The worker's figures: the built-in sensor behind `/stats/`, `/metrics` and the
/// dashboard. Get it from [`Worker::monitor`](crate::Worker::monitor); read it with
/// [`Monitor::snapshot`].
///
/// ```
/// // A worker's monitor counts as it runs; a fresh one has nothing yet.
/// let snap = faust::sensor::Monitor::default().snapshot();
/// assert_eq!((snap.events_total, snap.events_per_s), (0, 0.0));
/// assert_eq!(snap.processing.recent_avg_ms, None);
/// ```
pub struct Monitor {
    started: Instant,
    /// Read on every event: on cache lines of its own, away from the counters.
    sensors: Padded<Sensors>,
    tables: Vec<Arc<dyn TableCore>>,
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
    processing: Latency,
    rebalance: Latency,
    /// Readings of the last [`RATE_WINDOW`] (give or take a sample), oldest first.
    window: Mutex<VecDeque<Reading>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("sensors", &self.sensors.0)
            .field("tables", &self.tables.len())
            .field("messages_in", &self.messages_in)
            .finish_non_exhaustive()
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
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

fn tp(m: &Message) -> TopicPartition<'_> {
    TopicPartition {
        topic: m.topic(),
        partition: m.partition(),
    }
}

/// Counts the events one stream hands to its agent (resolved once, then lock-free), and
/// calls the sensors' `on_stream_event_in`.
#[derive(Debug, Clone)]
pub(crate) struct StreamCounters {
    agent: Arc<AtomicU64>,
    topic: Arc<AtomicU64>,
    /// The sensors and the agent's name, when sensors are registered.
    hooks: Option<(Sensors, Arc<str>)>,
}

impl StreamCounters {
    #[inline]
    pub(crate) fn on_event(&self, m: &Message) {
        self.agent.fetch_add(1, Ordering::Relaxed);
        self.topic.fetch_add(1, Ordering::Relaxed);
        if let Some((sensors, agent)) = &self.hooks {
            sensors.each(|s| s.on_stream_event_in(agent, tp(m), m.offset()));
        }
    }
}

/// Times a rebalance for the Monitor and the sensors (`on_rebalance_return` when dropped).
#[derive(Debug)]
pub(crate) struct Rebalancing {
    monitor: Arc<Monitor>,
    started: Instant,
}

impl Drop for Rebalancing {
    fn drop(&mut self) {
        let d = self.started.elapsed();
        self.monitor.rebalance.record(d);
        self.monitor.sensors.each(|s| s.on_rebalance_return(d));
    }
}

/// A snapshot of the Monitor's figures: the `/stats/` document (and the `/status`
/// document's `stats`).
///
/// Rates are per second over the last [`RATE_WINDOW`] (sampled every 250 ms while the
/// worker runs). Counters count since the worker started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Events handed to agents, in total (an event read by two agents counts twice).
    pub events_total: u64,
    /// Events handed to agents per second.
    pub events_per_s: f64,
    /// Records taken from Kafka per second.
    pub messages_per_s: f64,
    /// Events per second, by source topic.
    pub events_per_s_by_topic: BTreeMap<String, f64>,
    /// Events per second, by agent.
    pub events_per_s_by_agent: BTreeMap<String, f64>,
    /// Records written to tables (sets, updates and deletes), in total.
    pub table_writes: u64,
    /// Records written to tables, by table.
    pub table_writes_by_table: BTreeMap<String, u64>,
    /// Records written to tables per second.
    pub table_writes_per_s: f64,
    /// Records written to tables per second, by table.
    pub table_writes_per_s_by_table: BTreeMap<String, f64>,
    /// Processing time: from when the worker took a record from Kafka to when it was
    /// acknowledged (every agent that received it is done). Sampled: per run of records
    /// taken together from one partition, the mean of its first and last acknowledgement,
    /// weighted by the run's size.
    pub processing: LatencySnapshot,
    /// Rebalances: how long the worker's part of each took (`count`: rebalances).
    pub rebalance: LatencySnapshot,
    /// The window of the rates and the recent latencies, seconds.
    pub rate_window_s: f64,
}

/// `(now - then) / seconds`, by key.
fn rates(
    now: &BTreeMap<String, u64>,
    then: &BTreeMap<String, u64>,
    secs: f64,
) -> BTreeMap<String, f64> {
    now.iter()
        .map(|(k, v)| {
            let before = then.get(k).copied().unwrap_or(0);
            (k.clone(), rate(*v, before, secs))
        })
        .collect()
}

fn rate(now: u64, then: u64, secs: f64) -> f64 {
    if secs < 1e-3 {
        0.0
    } else {
        now.saturating_sub(then) as f64 / secs
    }
}

impl Monitor {
    /// A Monitor that calls `sensors` and counts the writes of `tables`.
    pub(crate) fn new(sensors: Vec<Arc<dyn Sensor>>, tables: Vec<Arc<dyn TableCore>>) -> Self {
        Self {
            started: Instant::now(),
            sensors: Padded(Sensors::new(sensors)),
            tables,
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
            processing: Latency::default(),
            rebalance: Latency::default(),
            window: Mutex::default(),
        }
    }

    pub(crate) fn on_messages_in(&self, records: &[Message]) {
        self.messages_in
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.sensors.each(|s| {
            for m in records {
                s.on_message_in(tp(m), m.offset());
            }
        });
    }

    /// The counters of the events `agent` takes from `topic`.
    pub(crate) fn stream_counters(&self, agent: &str, topic: &str) -> StreamCounters {
        StreamCounters {
            agent: counter(&self.events_by_agent, agent),
            topic: counter(&self.events_by_topic, topic),
            hooks: self
                .sensors
                .any()
                .then(|| (self.sensors.0.clone(), Arc::from(agent))),
        }
    }

    /// Agent `agent` is done with the event that came from `origin`.
    #[inline]
    pub(crate) fn on_stream_event_out(&self, agent: &str, origin: &Origin) {
        self.sensors.each(|s| {
            origin.for_each(|i| {
                s.on_stream_event_out(agent, tp(&i.message), i.message.offset());
            })
        });
    }

    /// The registered sensors, if there are any.
    pub(crate) fn sensors_if_any(&self) -> Option<Sensors> {
        self.sensors.any().then(|| self.sensors.0.clone())
    }

    /// `n` records were processed in `us` microseconds each (received to acknowledged).
    pub(crate) fn on_processed(&self, n: u64, us: u64) {
        self.processing.record_n(n, us);
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

    /// A record of `key_size` and `value_size` bytes is handed to the producer.
    #[inline]
    pub(crate) fn on_send_initiated(&self, topic: &str, key_size: usize, value_size: usize) {
        self.sensors
            .each(|s| s.on_send_initiated(topic, key_size, value_size));
    }

    /// The producer took the record (`error`: or refused it) after `d`.
    pub(crate) fn on_send(&self, topic: &str, d: Duration, error: Option<&Error>) {
        self.send.record(d);
        match error {
            None => self.sensors.each(|s| s.on_send_completed(topic, d)),
            Some(err) => {
                self.send_errors.fetch_add(1, Ordering::Relaxed);
                self.sensors.each(|s| s.on_send_error(topic, err));
            }
        }
    }

    pub(crate) fn on_recovered(&self, n: u64) {
        self.recovered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn on_changelog(&self, n: u64) {
        self.changelog_records.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn on_commit_initiated(&self) {
        self.sensors.each(|s| s.on_commit_initiated());
    }

    pub(crate) fn on_commit(&self, d: Duration) {
        self.commit.record(d);
        self.sensors.each(|s| s.on_commit_completed(d));
    }

    pub(crate) fn on_through(&self, d: Duration) {
        self.through.record(d);
    }

    pub(crate) fn on_group_by(&self, d: Duration) {
        self.group_by.record(d);
    }

    /// A rebalance starts; it ends when the returned guard is dropped.
    pub(crate) fn rebalance_started(self: &Arc<Self>) -> Rebalancing {
        self.sensors.each(|s| s.on_rebalance_start());
        Rebalancing {
            monitor: self.clone(),
            started: Instant::now(),
        }
    }

    fn latencies(&self) -> [&Latency; LATENCIES] {
        [
            &self.commit,
            &self.send,
            &self.through,
            &self.group_by,
            &self.processing,
            &self.rebalance,
        ]
    }

    fn reading(&self) -> Reading {
        let at = Instant::now();
        Reading {
            at,
            messages: self.messages_in.load(Ordering::Relaxed),
            by_topic: read(&self.events_by_topic),
            by_agent: read(&self.events_by_agent),
            by_table: self
                .tables
                .iter()
                .map(|t| (t.name().to_owned(), t.writes()))
                .collect(),
            latencies: self.latencies().map(Latency::totals),
        }
    }

    /// Records the counters now (the rates are computed from these readings).
    pub(crate) fn sample(&self) {
        let r = self.reading();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        while w.front().is_some_and(|f| r.at.duration_since(f.at) > KEEP) {
            w.pop_front();
        }
        w.push_back(r);
    }

    /// Samples the counters every [`SAMPLE_EVERY`] (a running worker runs this).
    pub(crate) async fn sample_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample();
        }
    }

    /// The reading the rates start from: the oldest of the window, else the newest,
    /// else zero at the start.
    fn base(&self, now: Instant) -> Reading {
        let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .find(|r| now.duration_since(r.at) <= KEEP)
            .or_else(|| w.back())
            .cloned()
            .unwrap_or_else(|| Reading::zero(self.started))
    }

    /// The figures now (rates over the last [`RATE_WINDOW`]).
    ///
    /// ```no_run
    /// # async fn demo(worker: faust::Worker) {
    /// let s = worker.monitor().snapshot();
    /// for (topic, rate) in &s.events_per_s_by_topic {
    ///     println!("{topic}: {rate:.1} events/s");
    /// }
    /// println!("processing: {:.2} ms on average", s.processing.avg_ms);
    /// # }
    /// ```
    pub fn snapshot(&self) -> MonitorSnapshot {
        let now = self.reading();
        let base = self.base(now.at);
        let secs = now.at.duration_since(base.at).as_secs_f64();
        let events_total = now.by_agent.values().sum();
        let table_writes = now.by_table.values().sum();
        let [commit, send, through, group_by, processing, rebalance] = {
            let l = self.latencies();
            std::array::from_fn(|i| l[i].snapshot(base.latencies[i]))
        };
        MonitorSnapshot {
            uptime_s: self.started.elapsed().as_secs_f64(),
            messages_in: now.messages,
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            agent_failures: self.agent_failures.load(Ordering::Relaxed),
            agent_restarts: self.agent_restarts.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            recovered_records: self.recovered.load(Ordering::Relaxed),
            changelog_records: self.changelog_records.load(Ordering::Relaxed),
            commit,
            send,
            through,
            group_by,
            events_total,
            events_per_s: rate(events_total, base.by_agent.values().sum(), secs),
            messages_per_s: rate(now.messages, base.messages, secs),
            events_per_s_by_topic: rates(&now.by_topic, &base.by_topic, secs),
            events_per_s_by_agent: rates(&now.by_agent, &base.by_agent, secs),
            table_writes,
            table_writes_per_s: rate(table_writes, base.by_table.values().sum(), secs),
            table_writes_per_s_by_table: rates(&now.by_table, &base.by_table, secs),
            table_writes_by_table: now.by_table,
            events_by_topic: now.by_topic,
            events_by_agent: now.by_agent,
            processing,
            rebalance,
            rate_window_s: RATE_WINDOW.as_secs_f64(),
        }
    }
}

/// The sensors of `app`'s running worker, if any are registered.
#[inline]
fn sensors_of(app: &App) -> Option<&Sensors> {
    let s: &Sensors = &app.inner.runtime.get()?.monitor.sensors;
    s.any().then_some(s)
}

/// A table read (for the sensors).
#[inline]
pub(crate) fn on_table_get(app: &App, table: &str, key: &[u8]) {
    if let Some(s) = sensors_of(app) {
        s.each(|s| s.on_table_get(table, key));
    }
}

/// A table write: a set, or a delete when `deleted` (for the sensors).
#[inline]
pub(crate) fn on_table_set(app: &App, table: &str, key: &[u8], deleted: bool) {
    if let Some(s) = sensors_of(app) {
        if deleted {
            s.each(|s| s.on_table_del(table, key));
        } else {
            s.each(|s| s.on_table_set(table, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_window() {
        let m = Monitor::default();
        let c = m.stream_counters("count", "words");
        m.sample();
        for _ in 0..10 {
            c.agent.fetch_add(1, Ordering::Relaxed);
            c.topic.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(20));
        let s = m.snapshot();
        assert_eq!(s.events_total, 10);
        assert_eq!(s.events_by_topic["words"], 10);
        assert!(s.events_per_s > 0.0, "{s:?}");
        assert!(s.events_per_s_by_agent["count"] > 0.0);
        assert_eq!(s.rate_window_s, RATE_WINDOW.as_secs_f64());
    }

    #[test]
    fn latencies_keep_totals_and_a_recent_mean() {
        let m = Monitor::default();
        m.on_commit(Duration::from_millis(4));
        m.sample();
        let s = m.snapshot();
        assert_eq!(s.commit.count, 1);
        assert_eq!(s.commit.recent_avg_ms, None, "nothing since the sample");
        m.on_commit(Duration::from_millis(2));
        m.on_processed(3, 1500);
        let s = m.snapshot();
        assert_eq!(s.commit.count, 2);
        assert!((s.commit.avg_ms - 3.0).abs() < 1e-9);
        assert!((s.commit.sum_ms - 6.0).abs() < 1e-9);
        assert_eq!(s.commit.last_ms, 2.0);
        assert_eq!(s.commit.recent_avg_ms, Some(2.0));
        assert_eq!(s.processing.count, 3);
        assert!((s.processing.avg_ms - 1.5).abs() < 1e-9);
    }

    #[test]
    fn old_readings_leave_the_window() {
        let m = Monitor::default();
        for _ in 0..3 {
            m.sample();
        }
        {
            let mut w = m.window.lock().unwrap();
            let Some(old) = Instant::now().checked_sub(RATE_WINDOW * 3) else {
                return;
            };
            for r in w.iter_mut() {
                r.at = old;
            }
        }
        m.sample();
        let w = m.window.lock().unwrap();
        assert_eq!(w.len(), 1, "only the new reading stays");
    }

    #[test]
    fn snapshots_serialize_and_read_back() {
        let s = Monitor::default().snapshot();
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("events_per_s").is_some());
        let back: MonitorSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        // Older documents (without the newer fields) still read.
        let old: MonitorSnapshot =
            serde_json::from_str(r#"{"uptime_s": 1.0, "messages_in": 3}"#).unwrap();
        assert_eq!(old.messages_in, 3);
    }
}
