//! Acknowledgements and the commit point of each partition.
//!
//! Every consumed record handed to agents is *tracked* in its partition's window, in
//! offset order. It is *acked* when every agent that received it has processed it (the last
//! reference to it is dropped), and only then. The offset committed for a partition is the
//! first offset not yet acked: the contiguous prefix of processed records, however many
//! agents and concurrent instances process them in whatever order.
//!
//! Records are tracked in *runs* (the consecutive records of one partition the conductor
//! hands out together): one [`Run`] per run, with one atomic state per record, so acking a
//! record takes no lock. The commit point is computed by whoever asks for it (the
//! committer), scanning forward from where it stopped last time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::sensor::{Monitor, Sensors};

/// Signals shared by all partitions: the committer and the conductor listen.
#[derive(Debug, Default)]
pub(crate) struct AckSignals {
    /// Wakes the committer (`commit_every` records were handed out).
    pub(crate) commit_now: Notify,
    /// Wakes the conductor: a partition needs rewinding after a failure.
    pub(crate) rewind: Notify,
    /// Wakes waiters for "no record in progress" on a closing partition.
    pub(crate) released: Notify,
    /// Records released (acked or not) in completed runs.
    released_records: AtomicU64,
    /// Commit early after this many records were released (`commit_every`; 0: never).
    commit_every: AtomicU64,
    /// Told of acknowledgements (processing time, sensors' `on_message_out`).
    monitor: Option<Arc<Monitor>>,
}

impl AckSignals {
    /// Signals with an early commit every `commit_every` released records.
    pub(crate) fn new(commit_every: u64) -> Self {
        Self {
            commit_every: AtomicU64::new(commit_every),
            ..Self::default()
        }
    }

    /// Tells `monitor` of acknowledgements.
    pub(crate) fn with_monitor(mut self, monitor: Arc<Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// A run of `n` records was released: maybe time for an early commit.
    fn on_run_released(&self, n: u64) {
        let every = self.commit_every.load(Ordering::Relaxed);
        if every == 0 {
            return;
        }
        let before = self.released_records.fetch_add(n, Ordering::AcqRel);
        if before / every != (before + n) / every {
            self.commit_now.notify_one();
        }
    }
}

const PENDING: u8 = 0;
const ACKED: u8 = 1;
/// Released without being processed (failed, or discarded while closing).
const DROPPED: u8 = 2;

/// Consecutive records of one partition, tracked together.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) acks: Arc<PartitionAcks>,
    pub(crate) epoch: u64,
    offsets: Box<[i64]>,
    states: Box<[AtomicU8]>,
    /// Records not released yet.
    remaining: AtomicUsize,
    /// Index of the first record the commit scan has not passed (only the scanner,
    /// under the window lock, moves it).
    scanned: AtomicUsize,
    /// When the run was tracked (taken from Kafka), for the processing time.
    received: Instant,
    /// Microseconds from `received` to the run's first release, if it was an ack.
    first_ack_us: AtomicU64,
}

impl Run {
    /// The offset of record `i`.
    #[cfg(test)]
    pub(crate) fn offset(&self, i: usize) -> i64 {
        self.offsets[i]
    }

    fn release(&self, i: usize, state: u8) {
        self.states[i].store(state, Ordering::Release);
        let before = self.remaining.fetch_sub(1, Ordering::AcqRel);
        if state == ACKED {
            if let Some(s) = &self.acks.sensors {
                s.each(|s| s.on_message_out(self.acks.tp(), self.offsets[i]));
            }
            if before == 1 || before == self.offsets.len() {
                self.sample(before);
            }
        }
        if before == 1 {
            // The last record of the run: counted for `commit_every` once per run.
            self.acks.signals.on_run_released(self.offsets.len() as u64);
            if self.acks.is_closing() {
                self.acks.signals.released.notify_waiters();
            }
        }
    }

    /// The run's first or last record was acknowledged (`before`: records of the run not
    /// released before it). The processing time is sampled: the mean of the run's first
    /// and last release (two clock reads per run, not one per record), weighted by the
    /// run's size.
    #[inline(never)]
    fn sample(&self, before: usize) {
        let Some(m) = &self.acks.signals.monitor else {
            return;
        };
        let n = self.offsets.len();
        if before == n && n > 1 {
            self.first_ack_us
                .store(micros(self.received.elapsed()), Ordering::Relaxed);
        } else if before == 1 {
            let last = micros(self.received.elapsed());
            let first = match self.first_ack_us.load(Ordering::Relaxed) {
                u64::MAX => last,
                first => first,
            };
            m.on_processed(n as u64, first / 2 + last / 2);
        }
    }

    /// Record `i` was processed.
    pub(crate) fn ack(&self, i: usize) {
        self.release(i, ACKED);
    }

    /// Record `i` was not processed: the partition is to be rewound to its commit point.
    pub(crate) fn fail(&self, i: usize) {
        self.acks.note_failure(self.offsets[i]);
        self.release(i, DROPPED);
    }

    /// Record `i` was dropped unprocessed because its partition is closing.
    pub(crate) fn discard(&self, i: usize) {
        self.release(i, DROPPED);
    }
}

#[derive(Debug, Default)]
struct Window {
    runs: VecDeque<Arc<Run>>,
    /// The offset after the last fully acked run that left the window.
    next: Option<i64>,
    /// The lowest offset whose processing failed (the partition must be rewound there).
    failed: Option<i64>,
}

/// The acknowledgement window of one partition.
#[derive(Debug)]
pub(crate) struct PartitionAcks {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    window: Mutex<Window>,
    /// Set when the partition is being revoked or rewound: records still queued for agents
    /// are discarded, not processed.
    closing: AtomicBool,
    /// Incremented by each rewind: records tracked before it are stale.
    epoch: AtomicU64,
    signals: Arc<AckSignals>,
    /// The sensors to tell of each acknowledgement, if any is registered.
    sensors: Option<Sensors>,
    /// Records forwarded from other topics (`group_by`, `through`) carry their origin: the
    /// highest origin offset handed to each agent, per origin partition, so that a record
    /// forwarded twice (after a crash of the forwarding worker) is handed out once.
    origins: Mutex<OriginMarks>,
    /// `origins` as of the last table flush (what a rewind goes back to).
    flushed_origins: Mutex<OriginMarks>,
}

/// (agent, origin topic, origin partition) -> highest origin offset handed out.
pub(crate) type OriginMarks = std::collections::HashMap<(String, String, i32), i64>;

impl PartitionAcks {
    /// Whether a record forwarded from (`topic`, `partition`, `offset`) is new for `agent`
    /// (and records it); `false` for a record forwarded again.
    pub(crate) fn admit(&self, agent: &str, topic: &str, partition: i32, offset: i64) -> bool {
        let mut marks = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let key = (agent.to_owned(), topic.to_owned(), partition);
        match marks.get_mut(&key) {
            Some(seen) if *seen >= offset => false,
            Some(seen) => {
                *seen = offset;
                true
            }
            None => {
                marks.insert(key, offset);
                true
            }
        }
    }

    /// The origin marks now.
    pub(crate) fn origin_marks(&self) -> OriginMarks {
        self.origins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The marks a flush may make durable: the current ones, or, while a failed record
    /// waits for its rewind, those of the last flush (the failed record's origin must stay
    /// admissible, so that it is processed again).
    pub(crate) fn flushable_origin_marks(&self) -> OriginMarks {
        if self.failed().is_some() {
            return self
                .flushed_origins
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        self.origin_marks()
    }

    /// The marks a flush made durable.
    pub(crate) fn set_flushed_origins(&self, marks: OriginMarks) {
        *self
            .flushed_origins
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = marks;
    }

    /// Starts from marks restored with the tables.
    pub(crate) fn seed_origins(&self, marks: OriginMarks) {
        *self.origins.lock().unwrap_or_else(|e| e.into_inner()) = marks.clone();
        self.set_flushed_origins(marks);
    }

    pub(crate) fn new(topic: Arc<str>, partition: i32, signals: Arc<AckSignals>) -> Self {
        Self {
            topic,
            partition,
            window: Mutex::new(Window::default()),
            closing: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            sensors: signals.monitor.as_ref().and_then(|m| m.sensors_if_any()),
            signals,
            origins: Mutex::default(),
            flushed_origins: Mutex::default(),
        }
    }

    fn tp(&self) -> crate::sensor::TopicPartition<'_> {
        crate::sensor::TopicPartition {
            topic: &self.topic,
            partition: self.partition,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks consecutive records (offsets in increasing order) before they are handed out.
    pub(crate) fn track(self: &Arc<Self>, offsets: &[i64]) -> Arc<Run> {
        let run = Arc::new(Run {
            acks: self.clone(),
            epoch: self.epoch.load(Ordering::Acquire),
            offsets: offsets.into(),
            states: offsets.iter().map(|_| AtomicU8::new(PENDING)).collect(),
            remaining: AtomicUsize::new(offsets.len()),
            scanned: AtomicUsize::new(0),
            received: Instant::now(),
            first_ack_us: AtomicU64::new(u64::MAX),
        });
        let mut w = self.lock();
        if w.runs.is_empty() && w.next.is_none() {
            w.next = offsets.first().copied();
        }
        w.runs.push_back(run.clone());
        run
    }

    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn note_failure(&self, offset: i64) {
        {
            let mut w = self.lock();
            w.failed = Some(w.failed.map_or(offset, |f| f.min(offset)));
        }
        self.closing.store(true, Ordering::Release);
        self.signals.rewind.notify_one();
    }

    /// Advances past acked records; the first offset not acked (or the one after the last
    /// tracked, if all were).
    fn scan(w: &mut Window) -> Option<i64> {
        while let Some(run) = w.runs.front() {
            let mut i = run.scanned.load(Ordering::Relaxed);
            while i < run.states.len() && run.states[i].load(Ordering::Acquire) == ACKED {
                i += 1;
            }
            run.scanned.store(i, Ordering::Relaxed);
            if i < run.states.len() {
                return Some(run.offsets[i]);
            }
            w.next = run.offsets.last().map(|o| o + 1);
            w.runs.pop_front();
        }
        w.next
    }

    /// The offset to commit: the first not acked (`None` before anything was tracked).
    pub(crate) fn commit_point(&self) -> Option<i64> {
        Self::scan(&mut self.lock())
    }

    /// Records handed out and not yet released.
    pub(crate) fn live(&self) -> usize {
        self.lock()
            .runs
            .iter()
            .map(|r| r.remaining.load(Ordering::Acquire))
            .sum()
    }

    /// Whether queued records of this partition must be discarded.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts closing (revocation): queued records are discarded from now on.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The failure offset, if the partition needs rewinding.
    pub(crate) fn failed(&self) -> Option<i64> {
        self.lock().failed
    }

    /// After a rewind: forget the window (everything from the commit point is fetched
    /// again) and accept records again. Returns the offset to seek to.
    pub(crate) fn reset(&self) -> Option<i64> {
        let mut w = self.lock();
        let point = Self::scan(&mut w);
        w.runs.clear();
        w.next = point;
        w.failed = None;
        // Records read again after the rewind are handed out again, except those whose
        // effect a flush already made durable.
        let flushed = self
            .flushed_origins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        *self.origins.lock().unwrap_or_else(|e| e.into_inner()) = flushed;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.closing.store(false, Ordering::Release);
        point
    }
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128 - 1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks() -> Arc<PartitionAcks> {
        Arc::new(PartitionAcks::new("t".into(), 0, Arc::default()))
    }

    #[test]
    fn commit_point_is_the_contiguous_acked_prefix() {
        let a = acks();
        assert_eq!(a.commit_point(), None);
        let r1 = a.track(&[10, 11]);
        let r2 = a.track(&[12, 14]);
        assert_eq!(a.commit_point(), Some(10));
        r1.ack(1);
        r2.ack(1);
        assert_eq!(a.commit_point(), Some(10), "10 is unfinished");
        r1.ack(0);
        assert_eq!(a.commit_point(), Some(12));
        r2.ack(0);
        assert_eq!(a.commit_point(), Some(15), "gaps in offsets are fine");
        assert_eq!(a.live(), 0);
    }

    #[test]
    fn random_ack_order_never_passes_an_unfinished_record() {
        use rand::seq::SliceRandom;
        let a = acks();
        let runs: Vec<Arc<Run>> = (0..50)
            .map(|r| a.track(&(r * 10..r * 10 + 10).collect::<Vec<i64>>()))
            .collect();
        let mut order: Vec<(usize, usize)> =
            (0..50).flat_map(|r| (0..10).map(move |i| (r, i))).collect();
        order.shuffle(&mut rand::rng());
        let mut done = std::collections::BTreeSet::new();
        for (r, i) in order {
            runs[r].ack(i);
            done.insert(runs[r].offset(i));
            let point = a.commit_point().unwrap();
            assert!((0..point).all(|x| done.contains(&x)));
            assert!(!done.contains(&point) || point == 500);
        }
        assert_eq!(a.commit_point(), Some(500));
    }

    #[test]
    fn processing_time_is_sampled_per_run_and_weighted_by_its_size() {
        let monitor = Arc::new(Monitor::default());
        let signals = Arc::new(AckSignals::new(0).with_monitor(monitor.clone()));
        let a = Arc::new(PartitionAcks::new("t".into(), 0, signals));
        let run = a.track(&[0, 1, 2, 3]);
        for i in [2, 0, 3] {
            run.ack(i);
        }
        assert_eq!(
            monitor.snapshot().processing.count,
            0,
            "the run is not done"
        );
        run.ack(1);
        a.track(&[4]).ack(0);
        let dropped = a.track(&[5, 6]);
        dropped.ack(0);
        dropped.discard(1);
        let p = monitor.snapshot().processing;
        assert_eq!(
            p.count, 5,
            "runs whose last release was an ack: 4 + 1 records"
        );
        assert!(p.avg_ms >= 0.0 && p.sum_ms >= 0.0);
    }

    #[test]
    fn failure_asks_for_a_rewind_to_the_commit_point() {
        let a = acks();
        let run = a.track(&[0, 1, 2, 3, 4]);
        run.ack(0);
        run.fail(1);
        run.ack(2);
        assert!(a.is_closing());
        assert_eq!(a.failed(), Some(1));
        run.discard(3);
        run.discard(4);
        assert_eq!(a.live(), 0);
        assert_eq!(a.reset(), Some(1));
        assert!(!a.is_closing());
        assert_eq!(a.epoch(), 1);
        let again = a.track(&[1]);
        again.ack(0);
        assert_eq!(a.commit_point(), Some(2));
    }

    #[test]
    fn records_forwarded_again_are_not_admitted_and_a_rewind_reopens_the_unflushed_ones() {
        let a = acks();
        assert!(a.admit("agent", "src", 0, 5));
        assert!(a.admit("agent", "src", 0, 6));
        assert!(!a.admit("agent", "src", 0, 6), "forwarded again");
        assert!(!a.admit("agent", "src", 0, 3));
        assert!(a.admit("other", "src", 0, 6), "marks are per agent");
        assert!(a.admit("agent", "src", 1, 0), "and per origin partition");
        a.set_flushed_origins(a.flushable_origin_marks());
        assert!(a.admit("agent", "src", 0, 7));
        let run = a.track(&[0]);
        run.fail(0);
        assert_eq!(
            a.flushable_origin_marks()[&("agent".to_string(), "src".to_string(), 0)],
            6,
            "a failure pending: the last flush's marks"
        );
        a.reset();
        assert!(
            a.admit("agent", "src", 0, 7),
            "after the rewind, 7 is processed again"
        );
        assert!(!a.admit("agent", "src", 0, 6));
    }
}
