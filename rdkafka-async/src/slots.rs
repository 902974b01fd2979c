//! Completion slots: how an operation handed to librdkafka finds its future again.
//!
//! Each pending operation (a produced message, a commit, an admin request) takes a slot;
//! its key travels through librdkafka as the operation's opaque pointer and comes back on
//! the event that answers it. Slots live in one slab that is reused, so steady-state
//! operation allocates nothing per message: no boxed oneshot channel.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use slab::Slab;

enum Slot<T> {
    /// Waiting for librdkafka; the waker of the future, once it was polled.
    Waiting(Option<Waker>),
    /// Answered, not yet taken by its future.
    Done(T),
    /// The future was dropped before the answer; the slot is freed when it comes.
    Abandoned,
}

/// A slab of completion slots for results of type `T`.
pub(crate) struct Slots<T> {
    slab: Mutex<Slab<Slot<T>>>,
    /// Set by [`Slots::fail_all`] (under the slab's lock, read under it too): nothing will
    /// answer a slot any more, so a new one is born answered.
    closed: AtomicBool,
}

impl<T> fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots").field("len", &self.len()).finish()
    }
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            slab: Mutex::new(Slab::new()),
            closed: AtomicBool::new(false),
        }
    }
}

/// Converts a slot key to the opaque pointer librdkafka carries (never null).
pub(crate) fn key_to_opaque(key: usize) -> *mut std::ffi::c_void {
    (key + 1) as *mut std::ffi::c_void
}

/// The slot key an opaque pointer carries; `None` for null (an operation without slot).
pub(crate) fn opaque_to_key(opaque: usize) -> Option<usize> {
    opaque.checked_sub(1)
}

impl<T> Slots<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Slot<T>>> {
        // A panic while holding the lock leaves the slab consistent (every operation is a
        // single insert/replace/remove), so a poisoned lock is still usable.
        self.slab.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a new slot; after [`Slots::fail_all`] the slot already holds `closed()`,
    /// since nothing is left to answer it.
    pub(crate) fn insert(&self, closed: impl FnOnce() -> T) -> usize {
        let mut slab = self.lock();
        if self.closed.load(Ordering::Relaxed) {
            slab.insert(Slot::Done(closed()))
        } else {
            slab.insert(Slot::Waiting(None))
        }
    }

    /// Frees a slot whose operation never reached librdkafka.
    pub(crate) fn cancel(&self, key: usize) {
        let mut slab = self.lock();
        if slab.contains(key) {
            slab.remove(key);
        }
    }

    /// Stores the answer for `key` and wakes its future (or frees an abandoned slot).
    pub(crate) fn complete(&self, key: usize, value: T) {
        let waker = {
            let mut slab = self.lock();
            Self::complete_locked(&mut slab, key, value)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Completes many slots under one lock; wakers are collected into `wakers`.
    pub(crate) fn complete_many(
        &self,
        items: impl Iterator<Item = (usize, T)>,
        wakers: &mut Vec<Waker>,
    ) {
        let mut slab = self.lock();
        for (key, value) in items {
            if let Some(w) = Self::complete_locked(&mut slab, key, value) {
                wakers.push(w);
            }
        }
    }

    fn complete_locked(slab: &mut Slab<Slot<T>>, key: usize, value: T) -> Option<Waker> {
        let slot = slab.get_mut(key)?;
        match std::mem::replace(slot, Slot::Abandoned) {
            Slot::Waiting(waker) => {
                *slot = Slot::Done(value);
                waker
            }
            Slot::Abandoned => {
                slab.remove(key);
                None
            }
            Slot::Done(old) => {
                // Answered twice: keep the first answer.
                *slot = Slot::Done(old);
                None
            }
        }
    }

    /// Polls the slot of a future: the answer (and the slot is freed), or `Pending`.
    pub(crate) fn poll(&self, key: usize, cx: &mut Context<'_>) -> Poll<T> {
        let mut slab = self.lock();
        let Some(slot) = slab.get_mut(key) else {
            unreachable!("slot {key} polled after it was taken");
        };
        match slot {
            Slot::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::Done(_) => match slab.remove(key) {
                Slot::Done(value) => Poll::Ready(value),
                _ => unreachable!(),
            },
            Slot::Abandoned => unreachable!("slot {key} polled after it was abandoned"),
        }
    }

    /// The future of `key` is dropped: free the slot now if answered, else when answered.
    pub(crate) fn abandon(&self, key: usize) {
        let mut slab = self.lock();
        match slab.get_mut(key) {
            Some(Slot::Done(_)) => {
                slab.remove(key);
            }
            Some(slot) => *slot = Slot::Abandoned,
            None => {}
        }
    }

    /// Slots in use (waiting, answered but not taken, or abandoned but not answered).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Slots still waiting for their answer.
    pub(crate) fn waiting(&self) -> usize {
        self.lock()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Waiting(_) | Slot::Abandoned))
            .count()
    }

    /// Fails every waiting slot with `value()`, and every slot taken later (used when
    /// the client's driver exits).
    pub(crate) fn fail_all(&self, mut value: impl FnMut() -> T) {
        let wakers: Vec<Waker> = {
            let mut slab = self.lock();
            self.closed.store(true, Ordering::Relaxed);
            let keys: Vec<usize> = slab.iter().map(|(k, _)| k).collect();
            keys.into_iter()
                .filter_map(|k| Self::complete_locked(&mut slab, k, value()))
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn complete_then_poll_frees_the_slot() {
        let slots = Slots::default();
        let key = slots.insert(|| 0);
        slots.complete(key, 7);
        let waker = Waker::noop();
        assert_eq!(
            slots.poll(key, &mut Context::from_waker(waker)),
            Poll::Ready(7)
        );
        assert_eq!(slots.len(), 0);
    }

    #[test]
    fn poll_then_complete_wakes() {
        let slots = Slots::default();
        let key = slots.insert(|| 0);
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        assert_eq!(
            slots.poll(key, &mut Context::from_waker(&waker)),
            Poll::Pending
        );
        slots.complete(key, 1);
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            slots.poll(key, &mut Context::from_waker(&waker)),
            Poll::Ready(1)
        );
    }

    #[test]
    fn abandoned_slots_are_freed_by_their_answer() {
        let slots = Slots::default();
        let a = slots.insert(|| 0);
        let b = slots.insert(|| 0);
        slots.abandon(a);
        slots.complete(b, 2);
        slots.abandon(b);
        assert_eq!(slots.len(), 1, "a waits for its answer");
        slots.complete(a, 1);
        assert_eq!(slots.len(), 0);
    }

    #[test]
    fn slots_taken_after_fail_all_are_answered() {
        let slots = Slots::default();
        let before = slots.insert(|| 0);
        slots.fail_all(|| -1);
        let after = slots.insert(|| -2);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(slots.poll(before, &mut cx), Poll::Ready(-1));
        assert_eq!(slots.poll(after, &mut cx), Poll::Ready(-2));
        assert_eq!(slots.len(), 0);
    }

    #[test]
    fn opaque_round_trip_is_never_null() {
        assert!(!key_to_opaque(0).is_null());
        assert_eq!(opaque_to_key(key_to_opaque(41) as usize), Some(41));
        assert_eq!(opaque_to_key(0), None);
    }
}
