//! The producer: enqueue records, await their delivery.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tokio::sync::watch;

use crate::client::{Client, Kind};
use crate::config::ClientConfig;
pub use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::native::NativePtr;
use crate::slots::key_to_opaque;
use crate::stats::Statistics;
use crate::sys;

/// A record to produce, borrowing its bytes (librdkafka copies them).
///
/// ```
/// use rdkafka_async::Record;
/// let record = Record::to("orders")
///     .key("user-1")
///     .value(r#"{"amount": 3}"#)
///     .header("source", "web")
///     .partition(2)
///     .timestamp(1_700_000_000_000);
/// assert_eq!(record.topic(), "orders");
/// ```
#[derive(Clone, Debug)]
pub struct Record<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    partition: Option<i32>,
    timestamp: Option<i64>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> Record<'a> {
    /// A record for `topic`, with no key and no value.
    pub fn to(topic: &'a str) -> Self {
        Self {
            topic,
            key: None,
            value: None,
            partition: None,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// The key (partitions the record unless [`Record::partition`] is set).
    pub fn key<K: AsRef<[u8]> + ?Sized>(mut self, key: &'a K) -> Self {
        self.key = Some(key.as_ref());
        self
    }

    /// The value; a record without one is a tombstone.
    pub fn value<V: AsRef<[u8]> + ?Sized>(mut self, value: &'a V) -> Self {
        self.value = Some(value.as_ref());
        self
    }

    /// An explicit partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The timestamp, ms since the epoch (default: now).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Adds a header.
    pub fn header<V: AsRef<[u8]> + ?Sized>(mut self, name: &'a str, value: &'a V) -> Self {
        self.headers.push((name, Some(value.as_ref())));
        self
    }

    /// Adds a header with a null value.
    pub fn null_header(mut self, name: &'a str) -> Self {
        self.headers.push((name, None));
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        self.topic
    }
}

/// A produced message's delivery, resolved by its delivery report.
///
/// Dropping it does not cancel the message: it is still delivered, and the report is
/// discarded.
#[derive(Debug)]
#[must_use = "a delivery future does nothing unless awaited; drop it to ignore the report"]
pub struct DeliveryFuture {
    client: Arc<Client>,
    key: usize,
    done: bool,
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "DeliveryFuture polled after completion");
        let out = std::task::ready!(self.client.deliveries.poll(self.key, cx));
        self.done = true;
        Poll::Ready(out)
    }
}

impl Drop for DeliveryFuture {
    fn drop(&mut self) {
        if !self.done {
            self.client.deliveries.abandon(self.key);
        }
    }
}

/// FNV-1a: topic names are short, so a simple hash beats SipHash on the send path.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type TopicMap = HashMap<Box<str>, Box<TopicHandle>, std::hash::BuildHasherDefault<Fnv>>;

/// A cached `rd_kafka_topic_t`, so sending does not look the topic up by name in C.
struct TopicHandle {
    name: Box<str>,
    rkt: NativePtr<sys::rd_kafka_topic_t>,
}

struct Inner {
    topics: RwLock<TopicMap>,
    /// The handle used last: most producers send to one topic at a time, and this skips
    /// the lock and the hash. Points into a `Box` of `topics`, whose entries are never
    /// removed or moved while `Inner` lives.
    last: AtomicPtr<TopicHandle>,
    client: Arc<Client>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.client.release();
    }
}

/// A Kafka producer.
///
/// Sending enqueues a record and returns a [`DeliveryFuture`]; delivery reports arrive as
/// events (many per event) on a queue that a tokio task drains when its eventfd signals.
/// A full producer queue is awaited, woken by delivery reports. Cloning is cheap and
/// shares the producer.
///
/// Dropping the last clone never blocks: messages already handed over are still
/// delivered in the background (until `message.timeout.ms`), then the client is destroyed
/// on tokio's blocking pool. Call [`Producer::flush`] first to know they were delivered.
///
/// ```no_run
/// # async fn demo() -> rdkafka_async::Result<()> {
/// use rdkafka_async::{ClientConfig, Producer, Record};
/// let producer = Producer::new(ClientConfig::new().bootstrap_servers("127.0.0.1:9092"))?;
/// let delivery = producer.send(Record::to("orders").key("k").value("v")).await?.await?;
/// println!("stored at partition {} offset {}", delivery.partition, delivery.offset);
/// producer.flush().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("name", &self.inner.client.name())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

fn vu(vtype: sys::rd_kafka_vtype_t) -> sys::rd_kafka_vu_t {
    sys::rd_kafka_vu_t {
        vtype,
        u: sys::rd_kafka_vu_s__bindgen_ty_1 { i64_: 0 },
    }
}

fn vu_mem(vtype: sys::rd_kafka_vtype_t, bytes: &[u8]) -> sys::rd_kafka_vu_t {
    let mut v = vu(vtype);
    v.u.mem = sys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
        ptr: bytes.as_ptr() as *mut _,
        size: bytes.len(),
    };
    v
}

impl Producer {
    /// Creates a producer. Must be called inside a tokio runtime (I/O and time enabled).
    pub fn new(config: ClientConfig) -> Result<Self> {
        let client = Client::new(Kind::Producer, &config, sys::RD_KAFKA_EVENT_DR)?;
        Ok(Self {
            inner: Arc::new(Inner {
                topics: RwLock::new(TopicMap::default()),
                last: AtomicPtr::new(std::ptr::null_mut()),
                client,
            }),
        })
    }

    /// Enqueues `record`, waiting while the producer queue is full; the returned future
    /// resolves with the delivery report.
    ///
    /// Cancel safety: cancel safe. If cancelled while waiting for room, the record was
    /// not enqueued.
    pub async fn send(&self, record: Record<'_>) -> Result<DeliveryFuture> {
        // Fast path: no waiter registration unless the queue is full.
        match self.try_send(&record) {
            Err(err) if is_queue_full(&err) => {}
            other => return other,
        }
        loop {
            let mut room = pin!(self.inner.client.drained.notified());
            room.as_mut().enable();
            match self.try_send(&record) {
                Err(err) if is_queue_full(&err) => room.await,
                other => return other,
            }
        }
    }

    /// Enqueues many records, waiting for room as needed; one future per record, in order.
    ///
    /// Cancel safety: not cancel safe: if cancelled, a prefix of the records was enqueued
    /// and their futures are lost (the records are still delivered).
    pub async fn send_batch<'a>(
        &self,
        records: impl IntoIterator<Item = Record<'a>>,
    ) -> Result<Vec<DeliveryFuture>> {
        let records = records.into_iter();
        let mut out = Vec::with_capacity(records.size_hint().0);
        for record in records {
            out.push(self.send(record).await?);
        }
        Ok(out)
    }

    /// Enqueues `record` if there is room; a full queue is an error whose code is
    /// `_QUEUE_FULL` (retriable).
    pub fn try_send(&self, record: &Record<'_>) -> Result<DeliveryFuture> {
        let client = &self.inner.client;
        let key = client.deliveries.insert(|| Err(Error::Closed));
        // Counted before librdkafka has the message: its delivery report may be handled
        // on the driver before `produce` returns here.
        client.in_flight.fetch_add(1, Ordering::AcqRel);
        match self.produce(record, key) {
            Ok(()) => Ok(DeliveryFuture {
                client: client.clone(),
                key,
                done: false,
            }),
            Err(err) => {
                client.in_flight.fetch_sub(1, Ordering::AcqRel);
                client.deliveries.cancel(key);
                Err(err)
            }
        }
    }

    fn produce(&self, record: &Record<'_>, key: usize) -> Result<()> {
        use sys::rd_kafka_vtype_t::*;
        let topic = self.topic_handle(record.topic)?;
        let mut fixed = [vu(RD_KAFKA_VTYPE_END); 7];
        let mut n = 0;
        let mut push = |v: sys::rd_kafka_vu_t| {
            fixed[n] = v;
            n += 1;
        };
        let mut v = vu(RD_KAFKA_VTYPE_RKT);
        v.u.rkt = topic;
        push(v);
        let mut v = vu(RD_KAFKA_VTYPE_MSGFLAGS);
        v.u.i = sys::RD_KAFKA_MSG_F_COPY;
        push(v);
        let mut v = vu(RD_KAFKA_VTYPE_OPAQUE);
        v.u.ptr = key_to_opaque(key);
        push(v);
        if let Some(k) = record.key {
            push(vu_mem(RD_KAFKA_VTYPE_KEY, k));
        }
        if let Some(val) = record.value {
            push(vu_mem(RD_KAFKA_VTYPE_VALUE, val));
        }
        if let Some(p) = record.partition {
            let mut v = vu(RD_KAFKA_VTYPE_PARTITION);
            v.u.i32_ = p;
            push(v);
        }
        if let Some(ts) = record.timestamp {
            let mut v = vu(RD_KAFKA_VTYPE_TIMESTAMP);
            v.u.i64_ = ts;
            push(v);
        }
        let client = self.inner.client.ptr();
        if record.headers.is_empty() {
            // SAFETY: valid handle; `fixed[..n]` is a well-formed argument list whose
            // borrowed bytes outlive the call (librdkafka copies them: MSG_F_COPY).
            return Error::from_rd_error(unsafe {
                sys::rd_kafka_produceva(client, fixed.as_ptr(), n)
            });
        }
        let names: Vec<std::ffi::CString> = record
            .headers
            .iter()
            .map(|(name, _)| Client::cstring(name))
            .collect::<Result<_>>()?;
        let mut all = fixed[..n].to_vec();
        for ((_, value), name) in record.headers.iter().zip(&names) {
            let mut v = vu(RD_KAFKA_VTYPE_HEADER);
            v.u.header = sys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 {
                name: name.as_ptr(),
                val: value.map_or(std::ptr::null(), |v| v.as_ptr().cast()),
                size: value.map_or(0, |v| v.len() as isize),
            };
            all.push(v);
        }
        // SAFETY: as above; header names and values outlive the call (copied).
        Error::from_rd_error(unsafe { sys::rd_kafka_produceva(client, all.as_ptr(), all.len()) })
    }

    /// The cached topic handle for `name`, created on first use.
    fn topic_handle(&self, name: &str) -> Result<*mut sys::rd_kafka_topic_t> {
        let last = self.inner.last.load(Ordering::Acquire);
        if !last.is_null() {
            // SAFETY: `last` points into a boxed entry of `topics`; entries are never
            // removed or moved while `self.inner` lives.
            let entry = unsafe { &*last };
            if &*entry.name == name {
                return Ok(entry.rkt.ptr());
            }
        }
        let found = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|t| (&**t as *const TopicHandle).cast_mut());
        let entry = match found {
            Some(entry) => entry,
            None => self.new_topic_handle(name)?,
        };
        self.inner.last.store(entry, Ordering::Release);
        // SAFETY: as above.
        Ok(unsafe { &*entry }.rkt.ptr())
    }

    fn new_topic_handle(&self, name: &str) -> Result<*mut TopicHandle> {
        let mut topics = self.inner.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok((&**t as *const TopicHandle).cast_mut());
        }
        let cname = Client::cstring(name)?;
        // SAFETY: valid handle and name; a null conf uses the defaults.
        let rkt = unsafe {
            sys::rd_kafka_topic_new(
                self.inner.client.ptr(),
                cname.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        // SAFETY: non-null `rkt` is a new reference we own.
        let rkt = unsafe { NativePtr::from_ptr(rkt) }.ok_or_else(|| {
            // SAFETY: reads the calling thread's last librdkafka error.
            Error::from_code(unsafe { sys::rd_kafka_last_error() })
        })?;
        let entry = Box::new(TopicHandle {
            name: name.into(),
            rkt,
        });
        let ptr = (&*entry as *const TopicHandle).cast_mut();
        topics.insert(name.into(), entry);
        Ok(ptr)
    }

    /// Waits until every message handed to this producer has its delivery report.
    ///
    /// Use `tokio::time::timeout` to bound the wait. Cancel safety: cancel safe.
    pub async fn flush(&self) -> Result<()> {
        let client = &self.inner.client;
        loop {
            let mut drained = pin!(client.drained.notified());
            drained.as_mut().enable();
            if client.in_flight.load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            if let Some(err) = client.fatal_error().borrow().clone() {
                return Err(err);
            }
            drained.await;
        }
    }

    /// Messages handed over whose delivery report has not arrived.
    pub fn in_flight(&self) -> usize {
        self.inner.client.in_flight.load(Ordering::Acquire)
    }

    /// Completion slots in use (delivery futures and operations not yet answered or
    /// taken). Zero once everything sent was reported and every future was dropped or
    /// awaited: a leak check.
    pub fn outstanding_slots(&self) -> usize {
        self.inner.client.deliveries.len() + self.inner.client.ops.len()
    }

    /// The latest statistics (needs `statistics.interval.ms`).
    pub fn statistics(&self) -> watch::Receiver<Option<Arc<Statistics>>> {
        self.inner.client.statistics()
    }

    /// Turns `Some` if librdkafka reports a fatal error (e.g. idempotence violated).
    pub fn fatal_error(&self) -> watch::Receiver<Option<Error>> {
        self.inner.client.fatal_error()
    }

    /// librdkafka's name for this client.
    pub fn name(&self) -> String {
        self.inner.client.name()
    }

    /// The raw handle, for calls this crate does not wrap. Valid while `self` lives.
    pub fn native_handle(&self) -> *mut sys::rd_kafka_t {
        self.inner.client.ptr()
    }
}

fn is_queue_full(err: &Error) -> bool {
    err.code()
        .is_some_and(|c| c.raw() == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL)
}
