//! Messages taken from librdkafka in batches and handed out one at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use super::shared::Shared;
use crate::error::{Error, ErrorCode, Result};
use crate::message::Message;
use crate::native::{cstr_to_string, NativePtr};
use crate::queue::IoQueue;
use crate::sys;
use crate::topic_partition_list::TopicPartitionList;

/// Messages taken from librdkafka per batch.
const BATCH: usize = 1024;

/// Messages taken from the message queue but not yet handed out.
#[derive(Default)]
pub(super) struct Buffer {
    pub(super) messages: VecDeque<NativePtr<sys::rd_kafka_message_t>>,
    scratch: Vec<*mut sys::rd_kafka_message_t>,
}

// SAFETY: `scratch` only holds pointers between a C call and their move into `messages`;
// it is always empty between calls.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Takes up to a batch of messages from `queue` without blocking.
    pub(super) fn fill(&mut self, queue: &IoQueue) -> usize {
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
    pub(super) fn pop(&mut self, shared: &Arc<Shared>) -> Option<Result<Message>> {
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
    pub(super) fn purge(&mut self, tpl: &TopicPartitionList) {
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
