//! One partition's messages read from their own queue.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::buffer::Buffer;
use super::shared::Shared;
use crate::error::Result;
use crate::message::Message;
use crate::native::NativePtr;
use crate::queue::{IoQueue, Readiness};
use crate::sys;

/// One partition's messages, split off a [`Consumer`](super::Consumer) with
/// [`Consumer::split_partition_queue`](super::Consumer::split_partition_queue), with its own eventfd.
pub struct PartitionQueue {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) buffer: Buffer,
    pub(super) queue: IoQueue,
    pub(super) source: NativePtr<sys::rd_kafka_queue_t>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) shared: Arc<Shared>,
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
