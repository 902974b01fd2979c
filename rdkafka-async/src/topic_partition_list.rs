//! Lists of (topic, partition, offset): assignments, commits, positions.

use std::fmt;

use crate::error::{Error, ErrorCode, Result};
use crate::native::{cstr_to_string, NativePtr};
use crate::sys;

/// A position in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Offset {
    /// The oldest retained message.
    Beginning,
    /// After the newest message.
    End,
    /// The group's committed offset (else `auto.offset.reset`).
    Stored,
    /// No offset (librdkafka's `RD_KAFKA_OFFSET_INVALID`).
    Invalid,
    /// An absolute offset.
    At(i64),
    /// `n` messages before the end.
    Tail(i64),
}

impl Offset {
    /// librdkafka's integer form.
    pub fn to_raw(self) -> i64 {
        match self {
            Self::Beginning => sys::RD_KAFKA_OFFSET_BEGINNING as i64,
            Self::End => sys::RD_KAFKA_OFFSET_END as i64,
            Self::Stored => sys::RD_KAFKA_OFFSET_STORED as i64,
            Self::Invalid => sys::RD_KAFKA_OFFSET_INVALID as i64,
            Self::At(o) => o,
            Self::Tail(n) => sys::RD_KAFKA_OFFSET_TAIL_BASE as i64 - n,
        }
    }

    /// From librdkafka's integer form.
    pub fn from_raw(raw: i64) -> Self {
        const TAIL: i64 = sys::RD_KAFKA_OFFSET_TAIL_BASE as i64;
        match raw {
            r if r >= 0 => Self::At(r),
            r if r == sys::RD_KAFKA_OFFSET_BEGINNING as i64 => Self::Beginning,
            r if r == sys::RD_KAFKA_OFFSET_END as i64 => Self::End,
            r if r == sys::RD_KAFKA_OFFSET_STORED as i64 => Self::Stored,
            r if r <= TAIL => Self::Tail(TAIL - r),
            _ => Self::Invalid,
        }
    }

    /// The absolute offset, if this is one.
    pub fn absolute(self) -> Option<i64> {
        match self {
            Self::At(o) => Some(o),
            _ => None,
        }
    }
}

/// One entry of a [`TopicPartitionList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset (meaning depends on the call: next to read, committed, ...).
    pub offset: Offset,
    /// Commit metadata, if any.
    pub metadata: Option<String>,
    /// A per-partition error reported by librdkafka or the broker.
    pub error: Option<ErrorCode>,
}

/// An ordered list of topic partitions with offsets.
///
/// ```
/// use rdkafka_async::{Offset, TopicPartitionList};
/// let mut tpl = TopicPartitionList::new();
/// tpl.add("orders", 0, Offset::Beginning);
/// tpl.add("orders", 1, Offset::At(42));
/// assert_eq!(tpl.len(), 2);
/// assert_eq!(tpl.find("orders", 1).unwrap().offset, Offset::At(42));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TopicPartitionList {
    elements: Vec<TopicPartition>,
}

impl fmt::Debug for TopicPartitionList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.elements
                    .iter()
                    .map(|e| format!("{}[{}]@{:?}", e.topic, e.partition, e.offset)),
            )
            .finish()
    }
}

impl TopicPartitionList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the entry for `topic`/`partition`.
    pub fn add(&mut self, topic: &str, partition: i32, offset: Offset) -> &mut Self {
        match self
            .elements
            .iter_mut()
            .find(|e| e.partition == partition && e.topic == topic)
        {
            Some(e) => e.offset = offset,
            None => self.elements.push(TopicPartition {
                topic: topic.to_owned(),
                partition,
                offset,
                metadata: None,
                error: None,
            }),
        }
        self
    }

    /// Adds `partitions` of `topic`, all at `offset`.
    pub fn add_range(
        &mut self,
        topic: &str,
        partitions: std::ops::Range<i32>,
        offset: Offset,
    ) -> &mut Self {
        for p in partitions {
            self.add(topic, p, offset);
        }
        self
    }

    /// The entry for `topic`/`partition`.
    pub fn find(&self, topic: &str, partition: i32) -> Option<&TopicPartition> {
        self.elements
            .iter()
            .find(|e| e.partition == partition && e.topic == topic)
    }

    /// Whether the list has `topic`/`partition`.
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.find(topic, partition).is_some()
    }

    /// The entries.
    pub fn elements(&self) -> &[TopicPartition] {
        &self.elements
    }

    /// Iterates over the entries.
    pub fn iter(&self) -> std::slice::Iter<'_, TopicPartition> {
        self.elements.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The first per-partition error, if any.
    pub fn first_error(&self) -> Result<()> {
        match self.elements.iter().find_map(|e| e.error.map(|c| (e, c))) {
            None => Ok(()),
            Some((e, code)) => Err(Error::Partition {
                topic: e.topic.clone(),
                partition: e.partition,
                code,
                message: code.description(),
            }),
        }
    }

    /// Forgets per-partition errors with `code` (for codes that mean success).
    pub(crate) fn clear_errors(&mut self, code: sys::rd_kafka_resp_err_t) {
        for e in &mut self.elements {
            if e.error.is_some_and(|c| c.raw() == code) {
                e.error = None;
            }
        }
    }

    /// Builds librdkafka's list.
    pub(crate) fn to_native(&self) -> Result<NativePtr<sys::rd_kafka_topic_partition_list_t>> {
        // SAFETY: returns a new list we own.
        let list = unsafe {
            NativePtr::from_ptr(sys::rd_kafka_topic_partition_list_new(
                self.elements.len() as i32
            ))
        }
        .ok_or_else(|| Error::InvalidArgument("could not allocate a partition list".into()))?;
        for e in &self.elements {
            let topic = crate::client::Client::cstring(&e.topic)?;
            // SAFETY: valid list and topic string (copied by librdkafka).
            let el = unsafe {
                sys::rd_kafka_topic_partition_list_add(list.ptr(), topic.as_ptr(), e.partition)
            };
            // SAFETY: `el` points into the list we own.
            unsafe { (*el).offset = e.offset.to_raw() };
            if let Some(md) = &e.metadata {
                // SAFETY: librdkafka frees `metadata` with free(), so it is malloc'ed here.
                unsafe {
                    let buf = libc::malloc(md.len().max(1));
                    std::ptr::copy_nonoverlapping(md.as_ptr(), buf.cast::<u8>(), md.len());
                    (*el).metadata = buf;
                    (*el).metadata_size = md.len();
                }
            }
        }
        Ok(list)
    }

    /// Copies librdkafka's list.
    ///
    /// # Safety
    ///
    /// `list` must be a valid list (or null for an empty one).
    pub(crate) unsafe fn from_native(list: *const sys::rd_kafka_topic_partition_list_t) -> Self {
        // SAFETY: caller contract: a valid list, or null.
        if list.is_null() || unsafe { (*list).elems.is_null() || (*list).cnt <= 0 } {
            // librdkafka's empty lists have no element array.
            return Self::default();
        }
        // SAFETY: caller contract: a valid list with `cnt` elements.
        let elems =
            unsafe { std::slice::from_raw_parts((*list).elems, (*list).cnt.max(0) as usize) };
        Self {
            elements: elems
                .iter()
                .map(|e| TopicPartition {
                    topic: cstr_to_string(e.topic),
                    partition: e.partition,
                    offset: Offset::from_raw(e.offset),
                    // SAFETY: `metadata` holds `metadata_size` bytes when non-null.
                    metadata: unsafe { crate::native::bytes(e.metadata, e.metadata_size) }
                        .map(|b| String::from_utf8_lossy(b).into_owned()),
                    error: (e.err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                        .then(|| ErrorCode::from(e.err)),
                })
                .collect(),
        }
    }
}

impl<'a> IntoIterator for &'a TopicPartitionList {
    type Item = &'a TopicPartition;
    type IntoIter = std::slice::Iter<'a, TopicPartition>;
    fn into_iter(self) -> Self::IntoIter {
        self.elements.iter()
    }
}

impl FromIterator<TopicPartition> for TopicPartitionList {
    fn from_iter<I: IntoIterator<Item = TopicPartition>>(iter: I) -> Self {
        Self {
            elements: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        for o in [
            Offset::Beginning,
            Offset::End,
            Offset::Stored,
            Offset::Invalid,
            Offset::At(0),
            Offset::At(9),
            Offset::Tail(5),
        ] {
            assert_eq!(Offset::from_raw(o.to_raw()), o);
        }
    }

    #[test]
    fn empty_native_lists_have_no_element_array() {
        // SAFETY: `rd_kafka_topic_partition_list_new(0)` returns a valid, empty list.
        let native =
            unsafe { NativePtr::from_ptr(sys::rd_kafka_topic_partition_list_new(0)) }.unwrap();
        // SAFETY: a valid list we own.
        assert!(unsafe { TopicPartitionList::from_native(native.ptr()) }.is_empty());
    }

    #[test]
    fn native_round_trip_keeps_everything() {
        let mut tpl = TopicPartitionList::new();
        tpl.add("a", 0, Offset::At(5))
            .add("b", 3, Offset::Beginning);
        tpl.elements[0].metadata = Some("meta".into());
        let native = tpl.to_native().unwrap();
        // SAFETY: a valid list we own.
        let back = unsafe { TopicPartitionList::from_native(native.ptr()) };
        assert_eq!(back, tpl);
    }
}
