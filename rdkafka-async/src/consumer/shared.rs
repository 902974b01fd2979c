//! What a consumer, its rebalances, commit handles and partition queues share, and the
//! one way calls that wait on librdkafka's threads are made: off the runtime, bounded.

use std::ffi::CString;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::native::NativePtr;
use crate::queue::IoQueue;
use crate::sys;
use crate::topic_partition_list::TopicPartitionList;

/// How long an awaited call that waits on librdkafka's threads (subscribe, assign, pause,
/// applying a rebalance, ...) may take before it fails with `_TIMED_OUT`. librdkafka's
/// main thread answers such calls within milliseconds, brokers reachable or not; the bound
/// is for a client that has stopped answering. The call itself still completes on the
/// blocking pool, and the consumer hands out nothing until it has.
pub(crate) const CALL_BOUND: Duration = Duration::from_secs(30);

/// Partitions whose messages must not be handed out.
#[derive(Default)]
pub(super) struct State {
    revoked: Vec<(CString, i32)>,
    /// Partitions read through a [`super::PartitionQueue`] instead of the message queue.
    pub(super) split: Vec<(String, i32)>,
}

/// Calls running on the blocking pool: the consumer waits for them before it looks at
/// the next control event, so assignments change in the order the group asked.
#[derive(Default)]
struct Calls {
    in_flight: usize,
    waker: Option<Waker>,
    /// A rebalance applied in the background failed: the next receive reports it.
    failure: Option<Error>,
}

/// Field order is drop order: queues before the client.
pub(super) struct Shared {
    pub(super) control: IoQueue,
    pub(super) messages: IoQueue,
    state: Mutex<State>,
    calls: Mutex<Calls>,
    revoked_count: AtomicUsize,
    /// The application's `enable.auto.offset.store` (librdkafka's own is always off):
    /// the offset after a message is stored when the message is handed out, not when
    /// librdkafka moves it into a batch that may then be purged.
    pub(super) auto_store: bool,
    pub(super) client: Arc<Client>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn new(
        control: IoQueue,
        messages: IoQueue,
        auto_store: bool,
        client: Arc<Client>,
    ) -> Self {
        Self {
            control,
            messages,
            state: Mutex::new(State::default()),
            calls: Mutex::new(Calls::default()),
            revoked_count: AtomicUsize::new(0),
            auto_store,
            client,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        relock(&self.state)
    }

    pub(super) fn is_revoked(&self, m: &sys::rd_kafka_message_t) -> bool {
        if self.revoked_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        // SAFETY: the message's topic handle is valid while the message lives.
        let topic = unsafe { std::ffi::CStr::from_ptr(sys::rd_kafka_topic_name(m.rkt)) };
        self.lock()
            .revoked
            .iter()
            .any(|(t, p)| *p == m.partition && t.as_c_str() == topic)
    }

    pub(super) fn add_revoked(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for tp in tpl {
            if let Ok(t) = CString::new(tp.topic.as_str()) {
                state.revoked.push((t, tp.partition));
            }
        }
        self.revoked_count
            .store(state.revoked.len(), Ordering::Release);
    }

    pub(super) fn forget_revoked(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        state
            .revoked
            .retain(|(t, p)| !tpl.contains(t.to_str().unwrap_or(""), *p));
        self.revoked_count
            .store(state.revoked.len(), Ordering::Release);
    }

    /// Forwards each partition's fetch queue to the message queue, before assigning, so
    /// no message lands on the control queue. Takes only queue locks: never waits.
    pub(super) fn forward(&self, tpl: &TopicPartitionList) -> Result<()> {
        let split = self.lock().split.clone();
        for tp in tpl {
            if split
                .iter()
                .any(|(t, p)| *p == tp.partition && *t == tp.topic)
            {
                continue;
            }
            let topic = Client::cstring(&tp.topic)?;
            // SAFETY: valid handle; returns a new reference to the partition's queue.
            let pq = unsafe {
                NativePtr::from_ptr(sys::rd_kafka_queue_get_partition(
                    self.client.ptr(),
                    topic.as_ptr(),
                    tp.partition,
                ))
            };
            let Some(pq) = pq else {
                return Err(Error::InvalidArgument(format!(
                    "no queue for {}[{}]",
                    tp.topic, tp.partition
                )));
            };
            // SAFETY: both queues are valid; the reference `pq` is released on drop.
            unsafe { sys::rd_kafka_queue_forward(pq.ptr(), self.messages.ptr()) };
        }
        Ok(())
    }

    /// Runs `call`, a librdkafka call that waits for one of librdkafka's threads, on
    /// tokio's blocking pool; resolves with its result, or `_TIMED_OUT` after
    /// [`CALL_BOUND`]. Must be awaited inside a tokio runtime.
    ///
    /// Cancel safety: the call runs to its end whether or not the future is polled.
    pub(super) fn off_runtime<T, F>(
        self: &Arc<Self>,
        call: F,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T> + Send + 'static,
    {
        self.begin_call();
        let shared = self.clone();
        let run = move || {
            let out = call(&shared);
            shared.end_call();
            out
        };
        async move {
            match tokio::time::timeout(CALL_BOUND, tokio::task::spawn_blocking(run)).await {
                Ok(Ok(out)) => out,
                Ok(Err(join)) => Err(Error::Io(join.to_string())),
                Err(_) => Err(Error::from_code(
                    sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
                )),
            }
        }
    }

    /// Runs `call` on the blocking pool without anyone waiting for it (from `drop`):
    /// a failure is passed to `on_error` and reported by the consumer's next receive.
    /// Outside a runtime, where nothing can be blocked, it runs here.
    pub(super) fn apply_in_background<F, E>(self: &Arc<Self>, call: F, on_error: E)
    where
        F: FnOnce(&Shared) -> Result<()> + Send + 'static,
        E: FnOnce(&Error) + Send + 'static,
    {
        self.begin_call();
        let shared = self.clone();
        let run = move || {
            if let Err(err) = call(&shared) {
                on_error(&err);
                shared.set_failure(err);
            }
            shared.end_call();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(run)),
            Err(_) => run(),
        }
    }

    pub(super) fn set_failure(&self, err: Error) {
        relock(&self.calls).failure.get_or_insert(err);
    }

    fn begin_call(&self) {
        relock(&self.calls).in_flight += 1;
    }

    fn end_call(&self) {
        let waker = {
            let mut calls = relock(&self.calls);
            calls.in_flight -= 1;
            calls.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready once no call is running on the blocking pool; an error if one applied in
    /// the background failed. `cx`, if given, is woken when the last call ends.
    pub(super) fn poll_calls(&self, cx: Option<&mut Context<'_>>) -> Poll<Result<()>> {
        let mut calls = relock(&self.calls);
        if let Some(err) = calls.failure.take() {
            return Poll::Ready(Err(err));
        }
        if calls.in_flight == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(cx) = cx {
            calls.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}
