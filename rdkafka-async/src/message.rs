//! Consumed messages: owned, `Send + 'static`, zero-copy.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::client::Client;
use crate::native::{bytes, NativePtr};
use crate::sys;

/// A consumed message.
///
/// It owns librdkafka's message (key and payload are read in place, no copy) and keeps the
/// client alive, so it can outlive the consumer and move between tasks and threads.
pub struct Message {
    ptr: NativePtr<sys::rd_kafka_message_t>,
    headers: OnceLock<Option<HeadersPtr>>,
    // Last: the client outlives its message.
    _client: Arc<Client>,
}

#[derive(Clone, Copy)]
struct HeadersPtr(*const sys::rd_kafka_headers_t);
// SAFETY: the headers belong to the message, which is Send + Sync; they are only read.
unsafe impl Send for HeadersPtr {}
// SAFETY: as above.
unsafe impl Sync for HeadersPtr {}

impl Message {
    /// Wraps a message from `rd_kafka_consume_batch_queue`.
    pub(crate) fn new(ptr: NativePtr<sys::rd_kafka_message_t>, client: Arc<Client>) -> Self {
        Self {
            ptr,
            headers: OnceLock::new(),
            _client: client,
        }
    }

    fn raw(&self) -> &sys::rd_kafka_message_t {
        // SAFETY: the message is valid while `self` owns it.
        unsafe { &*self.ptr.ptr() }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        // SAFETY: the topic handle lives as long as the message; names are NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr(sys::rd_kafka_topic_name(self.raw().rkt)) };
        name.to_str().unwrap_or("<non-utf8 topic>")
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.raw().partition
    }

    /// The offset.
    pub fn offset(&self) -> i64 {
        self.raw().offset
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        let m = self.raw();
        // SAFETY: `key` holds `key_len` bytes owned by the message.
        unsafe { bytes(m.key, m.key_len) }
    }

    /// The payload (value), if any; `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        let m = self.raw();
        // SAFETY: `payload` holds `len` bytes owned by the message.
        unsafe { bytes(m.payload, m.len) }
    }

    /// The timestamp, ms since the epoch, if the message has one.
    pub fn timestamp(&self) -> Option<i64> {
        let mut kind = sys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: valid message.
        let ts = unsafe { sys::rd_kafka_message_timestamp(self.ptr.ptr(), &mut kind) };
        (kind != sys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(ts)
    }

    /// The headers, in order.
    pub fn headers(&self) -> Headers<'_> {
        let ptr = *self.headers.get_or_init(|| {
            let mut hdrs = std::ptr::null_mut();
            // SAFETY: valid message; the parsed headers are cached in and owned by it.
            let err = unsafe { sys::rd_kafka_message_headers(self.ptr.ptr(), &mut hdrs) };
            (err == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !hdrs.is_null())
                .then_some(HeadersPtr(hdrs))
        });
        Headers {
            ptr,
            _message: std::marker::PhantomData,
        }
    }
}

// SAFETY: `Message` only reads its librdkafka message, whose memory it owns; the header
// cache is initialised once under `OnceLock`.
unsafe impl Sync for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("key_len", &self.key().map(<[u8]>::len))
            .field("payload_len", &self.payload().map(<[u8]>::len))
            .finish()
    }
}

/// A message's headers.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    ptr: Option<HeadersPtr>,
    _message: std::marker::PhantomData<&'a Message>,
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Headers<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        // SAFETY: valid headers owned by the message.
        self.ptr
            .map_or(0, |h| unsafe { sys::rd_kafka_header_cnt(h.0) })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The header at `idx`: name and value (`None` for a null value).
    pub fn get(&self, idx: usize) -> Option<(&'a str, Option<&'a [u8]>)> {
        let h = self.ptr?;
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0;
        // SAFETY: valid headers; out-pointers are valid; results live as long as the message.
        let err =
            unsafe { sys::rd_kafka_header_get_all(h.0, idx, &mut name, &mut value, &mut size) };
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: the name is NUL-terminated and owned by the message.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }
            .to_str()
            .unwrap_or("");
        // SAFETY: `value` holds `size` bytes owned by the message.
        Some((name, unsafe { bytes(value, size) }))
    }

    /// The last value of header `name`.
    pub fn last(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .filter(|(n, _)| *n == name)
            .last()
            .map(|(_, v)| v)
    }

    /// Iterates over (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let this = *self;
        (0..this.len()).filter_map(move |i| this.get(i))
    }
}
