//! Receiving: messages and control events, in order, without waiting on librdkafka.

use std::future::Future;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::{Consumer, ConsumerEvent, Rebalance, RebalanceKind};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::sys;
use crate::topic_partition_list::TopicPartitionList;

impl Consumer {
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
                // Dropping applies it; the next poll waits until it is applied.
                Ok(ConsumerEvent::Rebalance(r)) => drop(r),
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
        match self.shared.poll_calls(None) {
            Poll::Ready(Ok(())) => self.next_ready(),
            Poll::Ready(Err(err)) => Some(Err(err)),
            Poll::Pending => None,
        }
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
        // A change of assignment still being applied comes first: nothing is handed out,
        // and no further rebalance looked at, before librdkafka has taken it.
        std::task::ready!(self.shared.poll_calls(Some(cx)))?;
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
}
