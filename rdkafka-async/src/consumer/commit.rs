//! Storing and committing offsets from any task.

use std::fmt;
use std::sync::Arc;

use super::shared::Shared;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::native::NativePtr;
use crate::sys;
use crate::topic_partition_list::{Offset, TopicPartitionList};

/// Commits offsets of a [`Consumer`](super::Consumer) from any task (see
/// [`Consumer::commit_handle`](super::Consumer::commit_handle)).
///
/// Commits made after the consumer was dropped fail with [`Error::Closed`] or a
/// librdkafka error.
#[derive(Clone)]
pub struct CommitHandle {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for CommitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitHandle")
            .field("consumer", &self.shared.client.name())
            .finish()
    }
}

impl CommitHandle {
    /// See [`Consumer::store_offsets`](super::Consumer::store_offsets).
    pub fn store_offsets(&self, offsets: &TopicPartitionList) -> Result<()> {
        let native = offsets.to_native()?;
        // SAFETY: valid handle and list.
        Error::check(unsafe {
            sys::rd_kafka_offsets_store(self.shared.client.ptr(), native.ptr())
        })?;
        // SAFETY: the list is still valid; per-partition errors were written into it.
        unsafe { TopicPartitionList::from_native(native.ptr()) }.first_error()
    }

    /// See [`Consumer::commit`](super::Consumer::commit).
    ///
    /// Cancel safety: cancelling does not cancel the commit, only the wait for its answer.
    pub async fn commit(&self, offsets: &TopicPartitionList) -> Result<()> {
        let native = offsets.to_native()?;
        self.commit_native(Some(native)).await
    }

    /// See [`Consumer::commit_message`](super::Consumer::commit_message).
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

    /// See [`Consumer::commit_stored`](super::Consumer::commit_stored).
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
