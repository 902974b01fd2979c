//! Events: a decoded record with its key, value, origin, and acknowledgement.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use rdkafka_async::Message;

use crate::acks::Run;

const PENDING: u8 = 0;
const FAILED: u8 = 1;
const DISCARDED: u8 = 2;

/// A consumed record on its way through agents. Shared by every agent that receives it;
/// when the last reference goes, the record is acked (or, after a failure, marked failed,
/// or discarded if its partition was revoked meanwhile).
pub(crate) struct Inbound {
    pub(crate) message: Message,
    run: Arc<Run>,
    index: usize,
    fate: AtomicU8,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]@{}",
            self.message.topic(),
            self.message.partition(),
            self.message.offset()
        )
    }
}

impl Inbound {
    /// Wraps record `index` of a tracked run.
    pub(crate) fn new(message: Message, run: Arc<Run>, index: usize) -> Arc<Self> {
        Arc::new(Self {
            message,
            run,
            index,
            fate: AtomicU8::new(PENDING),
        })
    }

    /// The window of the record's partition.
    pub(crate) fn acks(&self) -> &Arc<crate::acks::PartitionAcks> {
        &self.run.acks
    }

    /// Whether the record must not be processed: its partition is closing (revoked or
    /// rewinding), or it was tracked before a rewind.
    pub(crate) fn is_stale(&self) -> bool {
        let acks = &self.run.acks;
        acks.is_closing() || acks.epoch() != self.run.epoch
    }

    /// Marks the record as not processed: it will be fetched again.
    pub(crate) fn fail(&self) {
        let _ = self
            .fate
            .compare_exchange(PENDING, FAILED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Marks the record as dropped unprocessed because its partition is closing.
    pub(crate) fn discard(&self) {
        let _ = self
            .fate
            .compare_exchange(PENDING, DISCARDED, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        let (run, i) = (&self.run, self.index);
        match self.fate.load(Ordering::Acquire) {
            // Tracked before a rewind: the partition is read again from before it.
            _ if run.acks.epoch() != run.epoch => run.discard(i),
            DISCARDED => run.discard(i),
            // A panic unwinding through the agent that held it: not processed.
            _ if std::thread::panicking() => run.fail(i),
            FAILED => run.fail(i),
            _ => run.ack(i),
        }
    }
}

/// The records an event came from.
#[derive(Debug, Default, Clone)]
pub(crate) enum Records {
    /// Not from Kafka (e.g. a value produced by a timer).
    #[default]
    None,
    /// One record.
    One(Arc<Inbound>),
    /// Several records (a batch from `take`).
    Many(Arc<[Arc<Inbound>]>),
}

/// What an event acknowledges when it is dropped: the record(s) it came from. If the
/// agent instance that received it failed (`failed` is set), dropping it fails them
/// instead, so they are consumed again.
#[derive(Debug, Default, Clone)]
pub(crate) struct Origin {
    records: Records,
    failed: Option<Arc<AtomicBool>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        if self
            .failed
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            self.for_each(|i| i.fail());
        }
    }
}

impl Origin {
    /// One record, received by the instance whose failure flag is `failed`.
    pub(crate) fn one(inbound: Arc<Inbound>, failed: Arc<AtomicBool>) -> Self {
        Self {
            records: Records::One(inbound),
            failed: Some(failed),
        }
    }

    pub(crate) fn is_none(&self) -> bool {
        matches!(self.records, Records::None)
    }

    /// The record, if the event came from exactly one.
    pub(crate) fn single(&self) -> Option<&Arc<Inbound>> {
        match &self.records {
            Records::One(i) => Some(i),
            _ => None,
        }
    }

    pub(crate) fn first(&self) -> Option<&Arc<Inbound>> {
        match &self.records {
            Records::None => None,
            Records::One(i) => Some(i),
            Records::Many(v) => v.first(),
        }
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<Inbound>)) {
        match &self.records {
            Records::None => {}
            Records::One(i) => f(i),
            Records::Many(v) => v.iter().for_each(f),
        }
    }

    /// Fails the records now.
    pub(crate) fn fail(&self) {
        self.for_each(|i| i.fail());
    }

    pub(crate) fn merge(origins: Vec<Origin>) -> Self {
        let mut all = Vec::with_capacity(origins.len());
        let mut failed = None;
        for o in origins {
            failed = failed.or_else(|| o.failed.clone());
            o.for_each(|i| all.push(i.clone()));
        }
        let records = match all.len() {
            0 => Records::None,
            1 => Records::One(all.pop().expect("one")),
            _ => Records::Many(all.into()),
        };
        Self { records, failed }
    }
}

/// An event: a key, a value, and where it came from.
///
/// Dropping an event acknowledges it: once every agent that received the record dropped
/// its events, the record's offset may be committed. An event dropped while its agent
/// panics is not acknowledged: the record is consumed again.
pub struct Event<K, V> {
    pub(crate) key: Option<K>,
    pub(crate) value: V,
    pub(crate) origin: Origin,
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Event<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("key", &self.key)
            .field("value", &self.value)
            .field("origin", &self.origin.first())
            .finish()
    }
}

impl<K, V> Event<K, V> {
    pub(crate) fn new(key: Option<K>, value: V, origin: Origin) -> Self {
        Self { key, value, origin }
    }

    /// The key.
    pub fn key(&self) -> Option<&K> {
        self.key.as_ref()
    }

    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// The source topic (`None` for events not read from Kafka).
    pub fn topic(&self) -> Option<&str> {
        self.origin.first().map(|i| i.message.topic())
    }

    /// The source partition.
    pub fn partition(&self) -> Option<i32> {
        self.origin.first().map(|i| i.message.partition())
    }

    /// The source offset (of the first record, for a batch).
    pub fn offset(&self) -> Option<i64> {
        self.origin.first().map(|i| i.message.offset())
    }

    /// The record's timestamp, ms since the epoch.
    pub fn timestamp(&self) -> Option<i64> {
        self.origin.first().and_then(|i| i.message.timestamp())
    }

    /// The record's header `name` (last value).
    pub fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.origin
            .first()
            .and_then(|i| i.message.headers().last(name).flatten().map(<[u8]>::to_vec))
    }

    /// Marks the event as failed: its record is not acknowledged and will be consumed
    /// again (the partition is rewound to its commit point).
    pub fn fail(self) {
        self.origin.fail();
    }

    /// Splits into key and value; the returned [`Ack`] acknowledges when dropped.
    pub fn into_parts(self) -> (Option<K>, V, Ack) {
        (self.key, self.value, Ack(self.origin))
    }

    /// The value, acknowledging the event now.
    pub fn into_value(self) -> V {
        self.value
    }

    /// Maps the value, keeping key and origin.
    pub fn map<U>(self, f: impl FnOnce(V) -> U) -> Event<K, U> {
        Event {
            key: self.key,
            value: f(self.value),
            origin: self.origin,
        }
    }
}

/// The acknowledgement of an event separated from its value: dropping it acknowledges.
#[derive(Debug, Default)]
pub struct Ack(pub(crate) Origin);

impl Ack {
    /// Marks the event as failed: its record is not acknowledged and will be consumed
    /// again (the partition is rewound to its commit point).
    pub fn fail(self) {
        self.0.fail();
    }
}
