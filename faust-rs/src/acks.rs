//! Acknowledgements and the commit point of each partition.
//!
//! Every consumed record handed to agents is *tracked* in its partition's window, in
//! offset order. It is *acked* when every agent that received it has processed it (the last
//! reference to it is dropped), and only then. The offset committed for a partition is the
//! first offset not yet acked: the contiguous prefix of processed records, however many
//! agents and concurrent instances process them in whatever order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Signals shared by all partitions: the committer and the conductor listen.
#[derive(Debug, Default)]
pub(crate) struct AckSignals {
    /// Wakes the committer (`commit_every` records were handed out).
    pub(crate) commit_now: Notify,
    /// Wakes the conductor: a partition needs rewinding after a failure.
    pub(crate) rewind: Notify,
    /// Wakes waiters for `live == 0` on any partition.
    pub(crate) released: Notify,
}

#[derive(Debug, Default)]
struct Window {
    /// Tracked offsets in order, with whether they were acked.
    entries: VecDeque<(i64, bool)>,
    /// The offset after the last popped (acked) prefix.
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
    /// Records handed out and not yet released (acked, failed or discarded).
    live: AtomicUsize,
    /// Set when the partition is being revoked or rewound: records still queued for agents
    /// are discarded, not processed.
    closing: AtomicBool,
    /// Incremented by each rewind: records tracked before it are stale.
    epoch: AtomicU64,
    signals: Arc<AckSignals>,
}

impl PartitionAcks {
    pub(crate) fn new(topic: Arc<str>, partition: i32, signals: Arc<AckSignals>) -> Self {
        Self {
            topic,
            partition,
            window: Mutex::new(Window::default()),
            live: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            signals,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks a record before it is handed out (offsets arrive in increasing order);
    /// returns the epoch the record belongs to.
    pub(crate) fn track(&self, offset: i64) -> u64 {
        self.live.fetch_add(1, Ordering::AcqRel);
        let mut w = self.lock();
        if w.entries.is_empty() && w.next.is_none() {
            w.next = Some(offset);
        }
        w.entries.push_back((offset, false));
        self.epoch.load(Ordering::Acquire)
    }

    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The record at `offset` was processed.
    pub(crate) fn ack(&self, offset: i64) {
        {
            let mut w = self.lock();
            if let Ok(i) = w.entries.binary_search_by_key(&offset, |e| e.0) {
                w.entries[i].1 = true;
                while let Some(&(o, true)) = w.entries.front() {
                    w.entries.pop_front();
                    w.next = Some(o + 1);
                }
            }
        }
        self.release();
    }

    /// Processing of the record at `offset` failed: it stays unacked and the partition is
    /// to be rewound to the commit point.
    pub(crate) fn fail(&self, offset: i64) {
        {
            let mut w = self.lock();
            w.failed = Some(w.failed.map_or(offset, |f| f.min(offset)));
        }
        self.closing.store(true, Ordering::Release);
        self.signals.rewind.notify_one();
        self.release();
    }

    /// The record was dropped without being processed (its partition is closing).
    pub(crate) fn discard(&self) {
        self.release();
    }

    fn release(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.signals.released.notify_waiters();
        }
    }

    /// The offset to commit: the first not acked (`None` before anything was tracked).
    pub(crate) fn commit_point(&self) -> Option<i64> {
        let w = self.lock();
        w.entries.front().map(|e| e.0).or(w.next)
    }

    /// Records handed out and not yet released.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
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
        let point = w.entries.front().map(|e| e.0).or(w.next);
        w.entries.clear();
        w.next = point;
        w.failed = None;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.closing.store(false, Ordering::Release);
        point
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks() -> PartitionAcks {
        PartitionAcks::new("t".into(), 0, Arc::default())
    }

    #[test]
    fn commit_point_is_the_contiguous_acked_prefix() {
        let a = acks();
        assert_eq!(a.commit_point(), None);
        for o in [10, 11, 12, 14] {
            a.track(o);
        }
        assert_eq!(a.commit_point(), Some(10));
        a.ack(11);
        a.ack(14);
        assert_eq!(a.commit_point(), Some(10), "10 is unfinished");
        a.ack(10);
        assert_eq!(a.commit_point(), Some(12));
        a.ack(12);
        assert_eq!(a.commit_point(), Some(15), "gaps in offsets are fine");
        assert_eq!(a.live(), 0);
    }

    #[test]
    fn random_ack_order_never_passes_an_unfinished_record() {
        use rand::seq::SliceRandom;
        let a = acks();
        let mut offsets: Vec<i64> = (0..500).collect();
        offsets.iter().for_each(|&o| {
            a.track(o);
        });
        offsets.shuffle(&mut rand::rng());
        let mut done = std::collections::BTreeSet::new();
        for o in offsets {
            a.ack(o);
            done.insert(o);
            let point = a.commit_point().unwrap();
            assert!((0..point).all(|x| done.contains(&x)));
            assert!(!done.contains(&point) || point == 500);
        }
        assert_eq!(a.commit_point(), Some(500));
    }

    #[test]
    fn failure_asks_for_a_rewind_to_the_commit_point() {
        let a = acks();
        (0..5).for_each(|o| {
            a.track(o);
        });
        a.ack(0);
        a.fail(1);
        a.ack(2);
        assert!(a.is_closing());
        assert_eq!(a.failed(), Some(1));
        a.discard();
        a.discard();
        assert_eq!(a.live(), 0);
        assert_eq!(a.reset(), Some(1));
        assert!(!a.is_closing());
        a.track(1);
        a.ack(1);
        assert_eq!(a.commit_point(), Some(2));
    }
}
