//! The consumer: group membership, async rebalance, owned messages, async commit.
//!
//! Two queues per consumer share one eventfd: librdkafka's consumer queue, which carries
//! control events (rebalance, consumer errors), and an application queue that every
//! assigned partition is forwarded to, read in batches with
//! `rd_kafka_consume_batch_queue`. Control events are looked at before every batch, so a
//! revocation is seen before any further message is handed out.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::client::{Client, Kind};
use crate::config::ClientConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::message::Message;
use crate::native::{cstr_to_string, NativePtr};
use crate::queue::{IoQueue, Readiness};
use crate::stats::Statistics;
use crate::sys;
use crate::topic_partition_list::{Offset, TopicPartitionList};

/// Messages taken from librdkafka per batch.
const BATCH: usize = 1024;

/// What a consumer yields: a message or a rebalance to act on.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// A message.
    Message(Message),
    /// The group changed this member's partitions (see [`Rebalance`]).
    Rebalance(Rebalance),
}

/// Whether partitions are being given or taken away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebalanceKind {
    /// Partitions are assigned to this member.
    Assign,
    /// Partitions are revoked from this member.
    Revoke,
}

/// A pending change of assignment.
///
/// The change is applied when the value is completed ([`Rebalance::complete`]) or dropped,
/// so the application's asynchronous work (committing offsets of revoked partitions,
/// flushing state, loading state of assigned ones) finishes before the assignment changes.
/// From the moment a revocation is returned, no message of a revoked partition is handed
/// out. Eager protocols revoke everything and assign everything; `cooperative-sticky`
/// only the partitions that move.
pub struct Rebalance {
    kind: RebalanceKind,
    partitions: TopicPartitionList,
    cooperative: bool,
    lost: bool,
    shared: Arc<Shared>,
    done: bool,
}

impl fmt::Debug for Rebalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rebalance")
            .field("kind", &self.kind)
            .field("partitions", &self.partitions)
            .field("cooperative", &self.cooperative)
            .field("lost", &self.lost)
            .finish()
    }
}

impl Rebalance {
    /// Assign or revoke.
    pub fn kind(&self) -> RebalanceKind {
        self.kind
    }

    /// The partitions that are assigned or revoked.
    pub fn partitions(&self) -> &TopicPartitionList {
        &self.partitions
    }

    /// Whether the group uses the incremental (cooperative) protocol.
    pub fn is_cooperative(&self) -> bool {
        self.cooperative
    }

    /// For a revocation: the partitions were lost (the member was kicked out), so their
    /// offsets can no longer be committed.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Applies the change now.
    pub fn complete(mut self) -> Result<()> {
        self.done = true;
        self.apply()
    }

    fn apply(&self) -> Result<()> {
        let shared = &self.shared;
        let rk = shared.client.ptr();
        match self.kind {
            RebalanceKind::Assign => {
                shared.forget_revoked(&self.partitions);
                shared.forward(&self.partitions)?;
                let tpl = self.partitions.to_native()?;
                if self.cooperative {
                    // SAFETY: valid handle and list.
                    Error::from_rd_error(unsafe { sys::rd_kafka_incremental_assign(rk, tpl.ptr()) })
                } else {
                    // SAFETY: valid handle and list.
                    Error::check(unsafe { sys::rd_kafka_assign(rk, tpl.ptr()) })
                }
            }
            RebalanceKind::Revoke => {
                if self.cooperative {
                    let tpl = self.partitions.to_native()?;
                    // SAFETY: valid handle and list.
                    Error::from_rd_error(unsafe {
                        sys::rd_kafka_incremental_unassign(rk, tpl.ptr())
                    })
                } else {
                    // SAFETY: valid handle; null unassigns everything.
                    Error::check(unsafe { sys::rd_kafka_assign(rk, std::ptr::null()) })
                }
            }
        }
    }
}

impl Drop for Rebalance {
    fn drop(&mut self) {
        if !self.done {
            if let Err(err) = self.apply() {
                tracing::error!(target: "rdkafka_async", %err, kind = ?self.kind, "applying a rebalance failed");
            }
        }
    }
}

/// Partitions whose messages must not be handed out.
#[derive(Default)]
struct State {
    revoked: Vec<(CString, i32)>,
    /// Partitions read through a [`PartitionQueue`] instead of the message queue.
    split: Vec<(String, i32)>,
}

/// What the consumer, its rebalances and its partition queues share.
///
/// Field order is drop order: queues before the client.
struct Shared {
    control: IoQueue,
    messages: IoQueue,
    state: Mutex<State>,
    revoked_count: AtomicUsize,
    /// The application's `enable.auto.offset.store` (librdkafka's own is always off):
    /// the offset after a message is stored when the message is handed out, not when
    /// librdkafka moves it into a batch that may then be purged.
    auto_store: bool,
    client: Arc<Client>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_revoked(&self, m: &sys::rd_kafka_message_t) -> bool {
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

    fn add_revoked(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for tp in tpl {
            if let Ok(t) = CString::new(tp.topic.as_str()) {
                state.revoked.push((t, tp.partition));
            }
        }
        self.revoked_count
            .store(state.revoked.len(), Ordering::Release);
    }

    fn forget_revoked(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        state
            .revoked
            .retain(|(t, p)| !tpl.contains(t.to_str().unwrap_or(""), *p));
        self.revoked_count
            .store(state.revoked.len(), Ordering::Release);
    }

    /// Forwards each partition's fetch queue to the message queue, before assigning, so
    /// no message lands on the control queue.
    fn forward(&self, tpl: &TopicPartitionList) -> Result<()> {
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
}

/// Messages taken from the message queue but not yet handed out.
#[derive(Default)]
struct Buffer {
    messages: VecDeque<NativePtr<sys::rd_kafka_message_t>>,
    scratch: Vec<*mut sys::rd_kafka_message_t>,
}

// SAFETY: `scratch` only holds pointers between a C call and their move into `messages`;
// it is always empty between calls.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Takes up to a batch of messages from `queue` without blocking.
    fn fill(&mut self, queue: &IoQueue) -> usize {
        self.scratch.clear();
        self.scratch.reserve(BATCH);
        // SAFETY: valid queue; `scratch` has room for BATCH pointers; timeout 0.
        let n = unsafe {
            sys::rd_kafka_consume_batch_queue(queue.ptr(), 0, self.scratch.as_mut_ptr(), BATCH)
        };
        if n <= 0 {
            return 0;
        }
        // SAFETY: librdkafka wrote `n` message pointers.
        unsafe { self.scratch.set_len(n as usize) };
        self.messages.extend(self.scratch.drain(..).filter_map(|m| {
            // SAFETY: each message is ours to destroy.
            unsafe { NativePtr::from_ptr(m) }
        }));
        n as usize
    }

    /// The next message that is not of a revoked partition.
    fn pop(&mut self, shared: &Arc<Shared>) -> Option<Result<Message>> {
        while let Some(m) = self.messages.pop_front() {
            // SAFETY: valid message.
            let raw = unsafe { &*m.ptr() };
            if shared.is_revoked(raw) {
                continue;
            }
            if raw.err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Some(Err(message_error(raw)));
            }
            if shared.auto_store {
                // SAFETY: a valid consumed message; any returned error is ours to free.
                let stored =
                    Error::from_rd_error(unsafe { sys::rd_kafka_offset_store_message(m.ptr()) });
                if let Err(err) = stored {
                    // `_STATE`: the partition is no longer assigned; its offset must not move.
                    tracing::debug!(target: "rdkafka_async", %err, partition = raw.partition, offset = raw.offset, "offset not stored");
                }
            }
            return Some(Ok(Message::new(m, shared.client.clone())));
        }
        None
    }

    /// Drops buffered messages of `tpl`'s partitions.
    fn purge(&mut self, tpl: &TopicPartitionList) {
        self.messages.retain(|m| {
            // SAFETY: valid message and topic handle.
            let raw = unsafe { &*m.ptr() };
            // SAFETY: as above.
            let topic = cstr_to_string(unsafe { sys::rd_kafka_topic_name(raw.rkt) });
            !tpl.contains(&topic, raw.partition)
        });
    }
}

fn message_error(m: &sys::rd_kafka_message_t) -> Error {
    let topic = if m.rkt.is_null() {
        String::new()
    } else {
        // SAFETY: valid topic handle of a valid message.
        cstr_to_string(unsafe { sys::rd_kafka_topic_name(m.rkt) })
    };
    let code = ErrorCode::from(m.err);
    // SAFETY: for error messages the payload is the error string.
    let text = unsafe { crate::native::bytes(m.payload, m.len) }
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| code.description());
    Error::Partition {
        topic,
        partition: m.partition,
        code,
        message: text,
    }
}

/// A Kafka consumer.
///
/// `recv` (or the [`Stream`](futures_core::Stream) impl) yields messages and applies
/// rebalances at once; [`Consumer::next_event`] also yields each [`Rebalance`], to act on
/// it before the assignment changes. While the application waits in `recv`, the client
/// keeps the member in its group even if no message comes for longer than
/// `max.poll.interval.ms`; an application that stops asking for messages for longer than
/// that leaves the group, as in every Kafka client.
///
/// ```no_run
/// # async fn demo() -> rdkafka_async::Result<()> {
/// use rdkafka_async::{ClientConfig, Consumer, ConsumerEvent, RebalanceKind};
/// let mut consumer = Consumer::new(
///     ClientConfig::new()
///         .bootstrap_servers("127.0.0.1:9092")
///         .group_id("billing")
///         .enable_auto_commit(false),
/// )?;
/// consumer.subscribe(&["orders"])?;
/// loop {
///     match consumer.next_event().await? {
///         ConsumerEvent::Message(m) => {
///             println!("{}[{}]@{}", m.topic(), m.partition(), m.offset());
///             consumer.commit_message(&m).await?;
///         }
///         ConsumerEvent::Rebalance(r) if r.kind() == RebalanceKind::Revoke => {
///             // flush state for r.partitions() here, then let the group move on
///             r.complete()?;
///         }
///         ConsumerEvent::Rebalance(r) => r.complete()?,
///     }
/// }
/// # }
/// ```
pub struct Consumer {
    buffer: Buffer,
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    keepalive: Pin<Box<Sleep>>,
    keepalive_every: Duration,
    /// When librdkafka was last polled for messages.
    last_poll: std::time::Instant,
    /// Whether the group protocol is incremental (cooperative-sticky or KIP-848).
    cooperative: bool,
    closed: bool,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.shared.client.name())
            .field("buffered", &self.buffer.messages.len())
            .finish()
    }
}

impl Consumer {
    /// Creates a consumer (`group.id` is needed to subscribe or commit). Must be called
    /// inside a tokio runtime (I/O and time enabled).
    pub fn new(config: ClientConfig) -> Result<Self> {
        let auto_store = config.bool_value("enable.auto.offset.store", true)?;
        let native_config = config.clone().enable_auto_offset_store(false);
        let client = Client::new(
            Kind::Consumer,
            &native_config,
            sys::RD_KAFKA_EVENT_REBALANCE | sys::RD_KAFKA_EVENT_OFFSET_COMMIT,
        )?;
        let readiness = Readiness::new()?;
        let rk = client.ptr();
        // SAFETY: valid handle; both return new queue references we own.
        let (control, messages) = unsafe {
            (
                NativePtr::from_ptr(sys::rd_kafka_queue_get_consumer(rk)),
                NativePtr::from_ptr(sys::rd_kafka_queue_new(rk)),
            )
        };
        let (Some(control), Some(messages)) = (control, messages) else {
            return Err(Error::ClientCreation(
                "not a group consumer: no consumer queue".into(),
            ));
        };
        let cooperative = config.get("group.protocol") == Some("consumer")
            || config
                .get("partition.assignment.strategy")
                .is_some_and(|s| s.contains("cooperative-sticky"));
        // Half the interval leaves room for a busy runtime.
        let keepalive_every = config.max_poll_interval_value() / 2;
        Ok(Self {
            buffer: Buffer::default(),
            shared: Arc::new(Shared {
                control: IoQueue::new(control, readiness.clone()),
                messages: IoQueue::new(messages, readiness.clone()),
                state: Mutex::new(State::default()),
                revoked_count: AtomicUsize::new(0),
                auto_store,
                client,
            }),
            readiness,
            keepalive: Box::pin(tokio::time::sleep(keepalive_every)),
            keepalive_every,
            last_poll: std::time::Instant::now(),
            cooperative,
            closed: false,
        })
    }

    fn rk(&self) -> *mut sys::rd_kafka_t {
        self.shared.client.ptr()
    }

    /// Subscribes to topics; a name starting with `^` is a regular expression.
    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            tpl.add(t, -1 /* RD_KAFKA_PARTITION_UA */, Offset::Invalid);
        }
        let native = tpl.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe { sys::rd_kafka_subscribe(self.rk(), native.ptr()) })
    }

    /// Leaves the subscription (the group then revokes everything).
    pub fn unsubscribe(&self) -> Result<()> {
        // SAFETY: valid handle.
        Error::check(unsafe { sys::rd_kafka_unsubscribe(self.rk()) })
    }

    /// Assigns partitions manually (no group rebalancing), replacing the assignment.
    pub fn assign(&self, tpl: &TopicPartitionList) -> Result<()> {
        self.shared.forget_revoked(tpl);
        self.shared.forward(tpl)?;
        let native = tpl.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe { sys::rd_kafka_assign(self.rk(), native.ptr()) })
    }

    /// Adds partitions to the assignment.
    pub fn incremental_assign(&self, tpl: &TopicPartitionList) -> Result<()> {
        self.shared.forget_revoked(tpl);
        self.shared.forward(tpl)?;
        let native = tpl.to_native()?;
        // SAFETY: valid handle and list.
        Error::from_rd_error(unsafe { sys::rd_kafka_incremental_assign(self.rk(), native.ptr()) })
    }

    /// Removes partitions from the assignment; no message of them is handed out after.
    pub fn incremental_unassign(&mut self, tpl: &TopicPartitionList) -> Result<()> {
        self.shared.add_revoked(tpl);
        self.buffer.purge(tpl);
        let native = tpl.to_native()?;
        // SAFETY: valid handle and list.
        Error::from_rd_error(unsafe { sys::rd_kafka_incremental_unassign(self.rk(), native.ptr()) })
    }

    /// The current assignment.
    pub fn assignment(&self) -> Result<TopicPartitionList> {
        let mut list = std::ptr::null_mut();
        // SAFETY: valid handle; on success `list` is a new list we own.
        Error::check(unsafe { sys::rd_kafka_assignment(self.rk(), &mut list) })?;
        // SAFETY: as above.
        let list = unsafe { NativePtr::from_ptr(list) };
        // SAFETY: valid list.
        Ok(list.map_or_else(TopicPartitionList::new, |l| unsafe {
            TopicPartitionList::from_native(l.ptr())
        }))
    }

    /// Waits for the next message; rebalances are applied as they come.
    ///
    /// A message carrying an error (for example a topic that does not exist) is returned
    /// as `Err`; the consumer stays usable.
    ///
    /// Cancel safety: cancel safe. A message is removed from the consumer only when it is
    /// returned.
    pub async fn recv(&mut self) -> Result<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Waits for the next message or rebalance.
    ///
    /// Cancel safety: cancel safe.
    pub async fn next_event(&mut self) -> Result<ConsumerEvent> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Poll form of [`Consumer::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message>> {
        loop {
            match std::task::ready!(self.poll_next_event(cx)) {
                Ok(ConsumerEvent::Message(m)) => return Poll::Ready(Ok(m)),
                Ok(ConsumerEvent::Rebalance(r)) => {
                    if let Err(err) = r.complete() {
                        return Poll::Ready(Err(err));
                    }
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    /// The next message or rebalance if one is available now, without waiting: `None`
    /// when nothing is. Lets a caller take everything already fetched in one go (for
    /// example to hand messages on in batches) after an awaited `next_event`.
    pub fn try_next_event(&mut self) -> Option<Result<ConsumerEvent>> {
        if self.closed {
            return Some(Err(Error::Closed));
        }
        self.next_ready()
    }

    /// One step of the receive loop that never waits: a buffered message, a control
    /// event, or a message from a fresh batch; `None` if librdkafka has nothing either.
    fn next_ready(&mut self) -> Option<Result<ConsumerEvent>> {
        loop {
            // Buffered messages first: control events are looked at before each batch is
            // taken from librdkafka (not per message: polling the consumer queue costs a
            // lock and two clock reads), and a revocation purges the buffer of its
            // partitions before it is returned.
            if let Some(m) = self.buffer.pop(&self.shared) {
                return Some(m.map(ConsumerEvent::Message));
            }
            while let Some(event) = self.shared.control.poll_event() {
                match event.kind() {
                    sys::RD_KAFKA_EVENT_REBALANCE => {
                        return Some(Ok(ConsumerEvent::Rebalance(self.begin_rebalance(&event))))
                    }
                    sys::RD_KAFKA_EVENT_ERROR => {
                        if let Err(err) = event.error() {
                            return Some(Err(err));
                        }
                    }
                    sys::RD_KAFKA_EVENT_OFFSET_COMMIT
                    | sys::RD_KAFKA_EVENT_LOG
                    | sys::RD_KAFKA_EVENT_STATS => {}
                    other => {
                        tracing::error!(target: "rdkafka_async", kind = other, "unexpected event on the consumer queue")
                    }
                }
            }
            // librdkafka counts this as a poll: max.poll.interval.ms starts again.
            let n = self.buffer.fill(&self.shared.messages);
            self.last_poll = std::time::Instant::now();
            if n == 0 {
                return None;
            }
        }
    }

    /// Poll form of [`Consumer::next_event`].
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<ConsumerEvent>> {
        if self.closed {
            return Poll::Ready(Err(Error::Closed));
        }
        loop {
            if let Some(ready) = self.next_ready() {
                return Poll::Ready(ready);
            }
            match self.readiness.poll_signalled(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                Poll::Pending => {}
            }
            // Idle but waiting for messages: poll librdkafka before max.poll.interval.ms
            // runs out, so the member stays in its group. The timer is re-armed only when
            // it fires, not on every poll.
            if self.keepalive.as_mut().poll(cx).is_ready() {
                let due = self.last_poll + self.keepalive_every;
                if std::time::Instant::now() >= due {
                    continue;
                }
                self.keepalive.as_mut().reset(Instant::from_std(due));
                if self.keepalive.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            return Poll::Pending;
        }
    }

    fn begin_rebalance(&mut self, event: &crate::queue::Event) -> Rebalance {
        // SAFETY: valid rebalance event; the list is copied.
        let partitions = unsafe {
            TopicPartitionList::from_native(sys::rd_kafka_event_topic_partition_list(event.ptr()))
        };
        // From the configuration: `rd_kafka_rebalance_protocol` waits for the group thread,
        // which never answers once the group is terminating.
        let cooperative = self.cooperative;
        let kind = match event.error_code() {
            sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => RebalanceKind::Assign,
            _ => RebalanceKind::Revoke,
        };
        let mut lost = false;
        if kind == RebalanceKind::Revoke {
            // SAFETY: valid handle.
            lost = unsafe { sys::rd_kafka_assignment_lost(self.rk()) } != 0;
            self.shared.add_revoked(&partitions);
            self.buffer.purge(&partitions);
        }
        tracing::debug!(target: "rdkafka_async", ?kind, ?partitions, cooperative, lost, "rebalance");
        Rebalance {
            kind,
            partitions,
            cooperative,
            lost,
            shared: self.shared.clone(),
            done: false,
        }
    }

    /// Stores offsets to be committed by auto-commit or [`Consumer::commit_stored`]
    /// (each offset is the next to read: last processed + 1).
    ///
    /// With `enable.auto.offset.store=true` (the default) the consumer already stores the
    /// offset after each message when it hands that message to the application, never
    /// earlier; turn it off and store after processing for at-least-once processing
    /// rather than at-least-once delivery (docs: "Delivery guarantees").
    pub fn store_offsets(&self, offsets: &TopicPartitionList) -> Result<()> {
        self.commit_handle().store_offsets(offsets)
    }

    /// Commits offsets (each the next to read: last processed + 1); resolves with the
    /// broker's answer.
    ///
    /// Cancel safety: cancelling does not cancel the commit, only the wait for its answer.
    pub async fn commit(&self, offsets: &TopicPartitionList) -> Result<()> {
        self.commit_handle().commit(offsets).await
    }

    /// Commits the offset after `message`.
    ///
    /// Cancel safety: as [`Consumer::commit`].
    pub async fn commit_message(&self, message: &Message) -> Result<()> {
        self.commit_handle().commit_message(message).await
    }

    /// Commits the offsets stored so far (see [`Consumer::store_offsets`]); nothing to
    /// commit is not an error.
    ///
    /// Cancel safety: as [`Consumer::commit`].
    pub async fn commit_stored(&self) -> Result<()> {
        self.commit_handle().commit_stored().await
    }

    /// A cloneable handle that stores and commits offsets from other tasks while this
    /// consumer is busy in `recv`.
    pub fn commit_handle(&self) -> CommitHandle {
        CommitHandle {
            shared: self.shared.clone(),
        }
    }

    /// The group's committed offsets for `partitions`, asked of the group coordinator.
    ///
    /// librdkafka has no asynchronous form of this call: it runs on tokio's blocking pool.
    /// Cancel safety: cancel safe (the answer is discarded).
    pub async fn committed(
        &self,
        partitions: &TopicPartitionList,
        timeout: Duration,
    ) -> Result<TopicPartitionList> {
        let client = self.shared.client.clone();
        let native = partitions.to_native()?;
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        tokio::task::spawn_blocking(move || {
            // SAFETY: valid handle and list; this blocks at most `timeout_ms`, off the runtime.
            Error::check(unsafe {
                sys::rd_kafka_committed(client.ptr(), native.ptr(), timeout_ms)
            })?;
            // SAFETY: the list now holds the answer.
            Ok(unsafe { TopicPartitionList::from_native(native.ptr()) })
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?
    }

    /// The next offset to be read for each of `partitions` (local, non-blocking).
    pub fn position(&self, partitions: &TopicPartitionList) -> Result<TopicPartitionList> {
        let native = partitions.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe { sys::rd_kafka_position(self.rk(), native.ptr()) })?;
        // SAFETY: valid list.
        Ok(unsafe { TopicPartitionList::from_native(native.ptr()) })
    }

    /// The low and high watermarks of a partition, asked of its leader.
    ///
    /// Runs on tokio's blocking pool (librdkafka has no asynchronous form).
    /// Cancel safety: cancel safe.
    pub async fn fetch_watermarks(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
    ) -> Result<(i64, i64)> {
        let client = self.shared.client.clone();
        let topic = Client::cstring(topic)?;
        let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        tokio::task::spawn_blocking(move || {
            let (mut low, mut high) = (0i64, 0i64);
            // SAFETY: valid handle and name; blocks at most `timeout_ms`, off the runtime.
            Error::check(unsafe {
                sys::rd_kafka_query_watermark_offsets(
                    client.ptr(),
                    topic.as_ptr(),
                    partition,
                    &mut low,
                    &mut high,
                    timeout_ms,
                )
            })?;
            Ok((low, high))
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?
    }

    /// The watermarks last seen by fetches (local, non-blocking; `-1` when unknown).
    pub fn cached_watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let topic = Client::cstring(topic)?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: valid handle and name.
        Error::check(unsafe {
            sys::rd_kafka_get_watermark_offsets(
                self.rk(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        })?;
        Ok((low, high))
    }

    /// Stops fetching from partitions (messages already buffered may still come).
    pub fn pause(&self, partitions: &TopicPartitionList) -> Result<()> {
        let native = partitions.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe { sys::rd_kafka_pause_partitions(self.rk(), native.ptr()) })
    }

    /// Resumes fetching from paused partitions.
    pub fn resume(&self, partitions: &TopicPartitionList) -> Result<()> {
        let native = partitions.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe { sys::rd_kafka_resume_partitions(self.rk(), native.ptr()) })
    }

    /// Moves the read position of assigned partitions; buffered messages of those
    /// partitions are dropped. The seek itself completes in the background.
    pub fn seek(&mut self, partitions: &TopicPartitionList) -> Result<()> {
        self.buffer.purge(partitions);
        let native = partitions.to_native()?;
        // SAFETY: valid handle and list; timeout 0 does not wait.
        Error::from_rd_error(unsafe { sys::rd_kafka_seek_partitions(self.rk(), native.ptr(), 0) })?;
        // SAFETY: valid list with per-partition results.
        let mut results = unsafe { TopicPartitionList::from_native(native.ptr()) };
        // An asynchronous seek reports `_IN_PROGRESS`: that is success.
        results.clear_errors(sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__IN_PROGRESS);
        results.first_error()
    }

    /// Leaves the group and closes the consumer: revocations are applied, the final
    /// commit (with auto-commit) is made, and the group is told. Completes within about
    /// `timeout` even if every broker is gone.
    ///
    /// Cancel safety: not cancel safe: a cancelled close leaves the consumer closing;
    /// dropping it then finishes the close on tokio's blocking pool.
    pub async fn close(mut self) -> Result<()> {
        self.close_within(Duration::from_secs(10)).await
    }

    /// [`Consumer::close`] with an explicit bound.
    ///
    /// Cancel safety: as [`Consumer::close`].
    pub async fn close_within(&mut self, timeout: Duration) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.buffer.messages.clear();
        // SAFETY: valid handle and queue; the close continues on that queue.
        Error::from_rd_error(unsafe {
            sys::rd_kafka_consumer_close_queue(self.rk(), self.shared.control.ptr())
        })?;
        let deadline = Instant::now() + timeout;
        let closing = async {
            loop {
                while let Some(event) = self.shared.control.poll_event() {
                    // SAFETY: valid handle.
                    if unsafe { sys::rd_kafka_consumer_closed(self.rk()) } != 0 {
                        // Events left are moot, and applying one would wait forever on a
                        // group thread that no longer answers.
                        return Ok(());
                    }
                    if event.kind() == sys::RD_KAFKA_EVENT_REBALANCE {
                        // As librdkafka's own close does: whatever the event (a revocation,
                        // or an assignment that predates the close), unassign everything.
                        // That waits for librdkafka's group thread, which may not answer
                        // while terminating: off the runtime, bounded by the timeout.
                        drop(event);
                        let shared = self.shared.clone();
                        tokio::task::spawn_blocking(move || {
                            // SAFETY: valid handle (kept alive by `shared`); null
                            // unassigns everything.
                            Error::check(unsafe {
                                sys::rd_kafka_assign(shared.client.ptr(), std::ptr::null())
                            })
                        })
                        .await
                        .map_err(|e| Error::Io(e.to_string()))??;
                    }
                }
                // SAFETY: valid handle.
                if unsafe { sys::rd_kafka_consumer_closed(self.rk()) } != 0 {
                    return Ok(());
                }
                self.readiness.signalled().await?;
            }
        };
        match tokio::time::timeout_at(deadline, closing).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(target: "rdkafka_async", ?timeout, "consumer close timed out; the client is destroyed in the background");
                Err(Error::from_code(
                    sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
                ))
            }
        }
    }

    /// Splits a partition off to its own queue: its messages are then read from the
    /// returned [`PartitionQueue`] instead of this consumer. Dropping the partition queue
    /// sends them back here.
    pub fn split_partition_queue(&self, topic: &str, partition: i32) -> Result<PartitionQueue> {
        let readiness = Readiness::new()?;
        // SAFETY: valid handle; a new queue we own.
        let queue = unsafe { NativePtr::from_ptr(sys::rd_kafka_queue_new(self.rk())) }
            .ok_or_else(|| Error::ClientCreation("rd_kafka_queue_new failed".into()))?;
        let ctopic = Client::cstring(topic)?;
        // SAFETY: valid handle; returns a new reference to the partition's queue.
        let source = unsafe {
            NativePtr::from_ptr(sys::rd_kafka_queue_get_partition(
                self.rk(),
                ctopic.as_ptr(),
                partition,
            ))
        }
        .ok_or_else(|| Error::InvalidArgument(format!("no queue for {topic}[{partition}]")))?;
        let queue = IoQueue::new(queue, readiness.clone());
        self.shared.lock().split.push((topic.to_owned(), partition));
        // SAFETY: both queues are valid.
        unsafe { sys::rd_kafka_queue_forward(source.ptr(), queue.ptr()) };
        Ok(PartitionQueue {
            topic: topic.to_owned(),
            partition,
            buffer: Buffer::default(),
            queue,
            source,
            readiness,
            shared: self.shared.clone(),
        })
    }

    /// The latest statistics (needs `statistics.interval.ms`).
    pub fn statistics(&self) -> watch::Receiver<Option<Arc<Statistics>>> {
        self.shared.client.statistics()
    }

    /// Turns `Some` if librdkafka reports a fatal error.
    pub fn fatal_error(&self) -> watch::Receiver<Option<Error>> {
        self.shared.client.fatal_error()
    }

    /// librdkafka's name for this client.
    pub fn name(&self) -> String {
        self.shared.client.name()
    }

    /// This member's id in the group (empty before it joined).
    pub fn member_id(&self) -> String {
        // SAFETY: valid handle; the returned string is malloc'ed and ours to free.
        unsafe {
            let id = sys::rd_kafka_memberid(self.rk());
            let s = cstr_to_string(id);
            if !id.is_null() {
                sys::rd_kafka_mem_free(self.rk(), id.cast());
            }
            s
        }
    }

    /// Completion slots in use (commits not yet answered): a leak check.
    pub fn outstanding_slots(&self) -> usize {
        self.shared.client.ops.len() + self.shared.client.deliveries.len()
    }

    /// The raw handle, for calls this crate does not wrap. Valid while `self` lives.
    pub fn native_handle(&self) -> *mut sys::rd_kafka_t {
        self.rk()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.buffer.messages.clear();
        self.shared.client.release();
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(None);
        }
        this.poll_recv(cx).map(Some)
    }
}

/// Commits offsets of a [`Consumer`] from any task (see [`Consumer::commit_handle`]).
///
/// Commits made after the consumer was dropped fail with [`Error::Closed`] or a
/// librdkafka error.
#[derive(Clone)]
pub struct CommitHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for CommitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitHandle")
            .field("consumer", &self.shared.client.name())
            .finish()
    }
}

impl CommitHandle {
    /// See [`Consumer::store_offsets`].
    pub fn store_offsets(&self, offsets: &TopicPartitionList) -> Result<()> {
        let native = offsets.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe {
            sys::rd_kafka_offsets_store(self.shared.client.ptr(), native.ptr())
        })?;
        // SAFETY: the list is still valid; per-partition errors were written into it.
        unsafe { TopicPartitionList::from_native(native.ptr()) }.first_error()
    }

    /// See [`Consumer::commit`].
    ///
    /// Cancel safety: cancelling does not cancel the commit, only the wait for its answer.
    pub async fn commit(&self, offsets: &TopicPartitionList) -> Result<()> {
        let native = offsets.to_native()?;
        self.commit_native(Some(native)).await
    }

    /// See [`Consumer::commit_message`].
    ///
    /// Cancel safety: as [`CommitHandle::commit`].
    pub async fn commit_message(&self, message: &Message) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add(
            message.topic(),
            message.partition(),
            Offset::At(message.offset() + 1),
        );
        self.commit(&tpl).await
    }

    /// See [`Consumer::commit_stored`].
    ///
    /// Cancel safety: as [`CommitHandle::commit`].
    pub async fn commit_stored(&self) -> Result<()> {
        self.commit_native(None).await
    }

    async fn commit_native(
        &self,
        list: Option<NativePtr<sys::rd_kafka_topic_partition_list_t>>,
    ) -> Result<()> {
        let client = &self.shared.client;
        let op = client.start_op();
        let ptr = list.as_ref().map_or(std::ptr::null_mut(), NativePtr::ptr);
        // SAFETY: valid handle, list (or null) and reply queue; the opaque is our slot.
        let err = unsafe {
            sys::rd_kafka_commit_queue(client.ptr(), ptr, client.reply_queue(), None, op.opaque())
        };
        drop(list);
        if let Err(err) = Error::check(err) {
            op.cancel();
            return Err(err);
        }
        let event = op.await?;
        match event.error() {
            Err(err)
                if err.code().is_some_and(|c| {
                    c.raw() == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NO_OFFSET
                }) =>
            {
                return Ok(())
            }
            other => other?,
        }
        // SAFETY: valid commit event; the list is copied.
        unsafe {
            TopicPartitionList::from_native(sys::rd_kafka_event_topic_partition_list(event.ptr()))
        }
        .first_error()
    }
}

/// One partition's messages, split off a [`Consumer`] with
/// [`Consumer::split_partition_queue`], with its own eventfd.
pub struct PartitionQueue {
    topic: String,
    partition: i32,
    buffer: Buffer,
    queue: IoQueue,
    source: NativePtr<sys::rd_kafka_queue_t>,
    readiness: Arc<Readiness>,
    shared: Arc<Shared>,
}

impl fmt::Debug for PartitionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionQueue")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("buffered", &self.buffer.messages.len())
            .finish()
    }
}

impl PartitionQueue {
    /// Waits for the partition's next message. The consumer itself must still be polled
    /// (`recv`/`next_event`) for rebalances and group membership.
    ///
    /// Cancel safety: cancel safe.
    pub async fn recv(&mut self) -> Result<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll form of [`PartitionQueue::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message>> {
        loop {
            if let Some(m) = self.buffer.pop(&self.shared) {
                return Poll::Ready(m);
            }
            if self.buffer.fill(&self.queue) > 0 {
                continue;
            }
            match std::task::ready!(self.readiness.poll_signalled(cx)) {
                Ok(()) => continue,
                Err(err) => return Poll::Ready(Err(err.into())),
            }
        }
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        self.shared
            .lock()
            .split
            .retain(|(t, p)| !(*p == self.partition && *t == self.topic));
        // SAFETY: both queues are valid: the partition's messages go back to the consumer.
        unsafe { sys::rd_kafka_queue_forward(self.source.ptr(), self.shared.messages.ptr()) };
    }
}

impl futures_core::Stream for PartitionQueue {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The futures of every async method can move to another task.
    #[tokio::test]
    async fn futures_are_send() {
        let cluster = crate::MockCluster::new(1).unwrap();
        let config = ClientConfig::new()
            .bootstrap_servers(cluster.bootstrap_servers())
            .group_id("send-check");
        let mut consumer = Consumer::new(config).unwrap();
        let tpl = TopicPartitionList::new();
        let handle = consumer.commit_handle();
        assert_send(&handle.commit(&tpl));
        assert_send(&handle.commit_stored());
        assert_send(&consumer.commit(&tpl));
        assert_send(&consumer.committed(&tpl, Duration::from_secs(1)));
        assert_send(&consumer.fetch_watermarks("t", 0, Duration::from_secs(1)));
        assert_send(&consumer.recv());
        assert_send(&consumer.next_event());
        assert_send(&consumer.close_within(Duration::from_secs(1)));
    }
}
