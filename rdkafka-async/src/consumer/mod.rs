//! The consumer: group membership, async rebalance, owned messages, async commit.
//!
//! Two queues per consumer share one eventfd: librdkafka's consumer queue, which carries
//! control events (rebalance, consumer errors), and an application queue that every
//! assigned partition is forwarded to, read in batches with
//! `rd_kafka_consume_batch_queue`. Control events are looked at before every batch, so a
//! revocation is seen before any further message is handed out.
//!
//! Calls that wait for one of librdkafka's threads (subscribe, assign, pause, applying a
//! rebalance, ...) are `async` and run on tokio's blocking pool, bounded; the ones that
//! only take a lock inside librdkafka (seek without a timeout, position, storing offsets)
//! stay synchronous.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Sleep;

use crate::client::{Client, Kind};
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::native::{cstr_to_string, NativePtr};
use crate::queue::{IoQueue, Readiness};
use crate::stats::Statistics;
use crate::sys;
use crate::topic_partition_list::{Offset, TopicPartitionList};

mod buffer;
mod close;
mod commit;
mod partition_queue;
mod rebalance;
mod receive;
mod shared;

use buffer::Buffer;
use shared::Shared;

pub use commit::CommitHandle;
pub use partition_queue::PartitionQueue;
pub use rebalance::{ConsumerEvent, Rebalance, RebalanceKind};

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
/// consumer.subscribe(&["orders"]).await?;
/// loop {
///     match consumer.next_event().await? {
///         ConsumerEvent::Message(m) => {
///             println!("{}[{}]@{}", m.topic(), m.partition(), m.offset());
///             consumer.commit_message(&m).await?;
///         }
///         ConsumerEvent::Rebalance(r) if r.kind() == RebalanceKind::Revoke => {
///             // flush state for r.partitions() here, then let the group move on
///             r.complete().await?;
///         }
///         ConsumerEvent::Rebalance(r) => r.complete().await?,
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
        let readiness = Readiness::new()?;
        let client = Client::new(
            Kind::Consumer,
            &native_config,
            sys::RD_KAFKA_EVENT_REBALANCE | sys::RD_KAFKA_EVENT_OFFSET_COMMIT,
        )?;
        let rk = client.ptr();
        // SAFETY: valid handle; both return new queue references we own.
        let (control, messages) = unsafe {
            (
                NativePtr::from_ptr(sys::rd_kafka_queue_get_consumer(rk)),
                NativePtr::from_ptr(sys::rd_kafka_queue_new(rk)),
            )
        };
        let (Some(control), Some(messages)) = (control, messages) else {
            // The driver holds the client until it is released: without this the handle
            // and its threads would live on.
            client.release();
            return Err(Error::ClientCreation(
                "not a group consumer (no group.id): no consumer queue".into(),
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
            shared: Arc::new(Shared::new(
                IoQueue::new(control, readiness.clone()),
                IoQueue::new(messages, readiness.clone()),
                auto_store,
                client,
            )),
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
    ///
    /// Waits for librdkafka's main thread, on tokio's blocking pool (at most 30 s).
    /// Cancel safety: the subscription is made even if the future is dropped.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            tpl.add(t, -1 /* RD_KAFKA_PARTITION_UA */, Offset::Invalid);
        }
        let native = tpl.to_native()?;
        self.shared
            .off_runtime(move |s| {
                // SAFETY: valid handle and list.
                Error::check(unsafe { sys::rd_kafka_subscribe(s.client.ptr(), native.ptr()) })
            })
            .await
    }

    /// Leaves the subscription (the group then revokes everything).
    ///
    /// Cancel safety: as [`Consumer::subscribe`].
    pub async fn unsubscribe(&self) -> Result<()> {
        self.shared
            .off_runtime(|s| {
                // SAFETY: valid handle.
                Error::check(unsafe { sys::rd_kafka_unsubscribe(s.client.ptr()) })
            })
            .await
    }

    /// Assigns partitions manually (no group rebalancing), replacing the assignment.
    ///
    /// Cancel safety: as [`Consumer::subscribe`].
    pub async fn assign(&self, tpl: &TopicPartitionList) -> Result<()> {
        self.shared.forget_revoked(tpl);
        self.shared.forward(tpl)?;
        let native = tpl.to_native()?;
        self.shared
            .off_runtime(move |s| {
                // SAFETY: valid handle and list.
                Error::check(unsafe { sys::rd_kafka_assign(s.client.ptr(), native.ptr()) })
            })
            .await
    }

    /// Adds partitions to the assignment.
    ///
    /// Cancel safety: as [`Consumer::subscribe`].
    pub async fn incremental_assign(&self, tpl: &TopicPartitionList) -> Result<()> {
        self.shared.forget_revoked(tpl);
        self.shared.forward(tpl)?;
        let native = tpl.to_native()?;
        self.shared
            .off_runtime(move |s| {
                Error::from_rd_error(
                    // SAFETY: valid handle and list.
                    unsafe { sys::rd_kafka_incremental_assign(s.client.ptr(), native.ptr()) },
                )
            })
            .await
    }

    /// Removes partitions from the assignment; no message of them is handed out after
    /// this call starts.
    ///
    /// Cancel safety: as [`Consumer::subscribe`].
    pub async fn incremental_unassign(&mut self, tpl: &TopicPartitionList) -> Result<()> {
        self.shared.add_revoked(tpl);
        self.buffer.purge(tpl);
        let native = tpl.to_native()?;
        self.shared
            .off_runtime(move |s| {
                Error::from_rd_error(
                    // SAFETY: valid handle and list.
                    unsafe { sys::rd_kafka_incremental_unassign(s.client.ptr(), native.ptr()) },
                )
            })
            .await
    }

    /// The current assignment (asked of librdkafka's main thread, off the runtime).
    ///
    /// Cancel safety: cancel safe.
    pub async fn assignment(&self) -> Result<TopicPartitionList> {
        self.shared
            .off_runtime(|s| {
                let mut list = std::ptr::null_mut();
                // SAFETY: valid handle; on success `list` is a new list we own.
                Error::check(unsafe { sys::rd_kafka_assignment(s.client.ptr(), &mut list) })?;
                // SAFETY: as above.
                let list = unsafe { NativePtr::from_ptr(list) };
                // SAFETY: valid list.
                Ok(list.map_or_else(TopicPartitionList::new, |l| unsafe {
                    TopicPartitionList::from_native(l.ptr())
                }))
            })
            .await
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

    /// The next offset to be read for each of `partitions`. Local: it takes each
    /// partition's lock inside librdkafka and never waits for a thread.
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
    ///
    /// Waits for the partitions' fetcher threads, on tokio's blocking pool (at most 30 s).
    /// Cancel safety: the partitions are paused even if the future is dropped.
    pub async fn pause(&self, partitions: &TopicPartitionList) -> Result<()> {
        let native = partitions.to_native()?;
        self.shared
            .off_runtime(move |s| {
                // SAFETY: valid handle and list.
                Error::check(unsafe {
                    sys::rd_kafka_pause_partitions(s.client.ptr(), native.ptr())
                })
            })
            .await
    }

    /// Resumes fetching from paused partitions.
    ///
    /// Cancel safety: as [`Consumer::pause`].
    pub async fn resume(&self, partitions: &TopicPartitionList) -> Result<()> {
        let native = partitions.to_native()?;
        self.shared
            .off_runtime(move |s| {
                Error::check(
                    // SAFETY: valid handle and list.
                    unsafe { sys::rd_kafka_resume_partitions(s.client.ptr(), native.ptr()) },
                )
            })
            .await
    }

    /// Moves the read position of assigned partitions; buffered messages of those
    /// partitions are dropped. The seek itself completes in the background: the call
    /// only queues it (librdkafka's seek with a zero timeout) and never waits.
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
        self.close_within(close::DEFAULT).await
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
        close::leave_group(&self.shared, &self.readiness, timeout).await
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

    /// This member's id in the group (empty before it joined); asked of librdkafka's
    /// group thread, off the runtime.
    ///
    /// Cancel safety: cancel safe.
    pub async fn member_id(&self) -> Result<String> {
        self.shared
            .off_runtime(|s| {
                let rk = s.client.ptr();
                // SAFETY: valid handle; the returned string is malloc'ed and ours to free.
                Ok(unsafe {
                    let id = sys::rd_kafka_memberid(rk);
                    let text = cstr_to_string(id);
                    if !id.is_null() {
                        sys::rd_kafka_mem_free(rk, id.cast());
                    }
                    text
                })
            })
            .await
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
    /// Messages already handed out may keep the client alive for long after this: the
    /// consumer leaves its group now, in a task bounded like [`Consumer::close`], so its
    /// partitions go to other members at once rather than after `max.poll.interval.ms`.
    fn drop(&mut self) {
        self.buffer.messages.clear();
        if self.closed {
            self.shared.client.release();
            return;
        }
        // After this close, librdkafka's own close (made by `rd_kafka_destroy`, without a
        // bound) finds the consumer closed and returns at once. Destroying with
        // `RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE` instead is not safe: librdkafka asserts
        // (`rd_kafka_cgrp_terminated`) if an assignment is still being applied.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let (shared, readiness) = (self.shared.clone(), self.readiness.clone());
                handle.spawn(async move {
                    if let Err(err) = close::leave_group(&shared, &readiness, close::DEFAULT).await {
                        tracing::warn!(target: "rdkafka_async", %err, "closing a dropped consumer failed");
                    }
                    shared.client.release();
                });
            }
            // No runtime to run a bounded close on: destroying the handle (when the last
            // message goes) makes librdkafka's own close, on the thread that drops it.
            Err(_) => self.shared.client.release(),
        }
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
