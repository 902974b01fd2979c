//! The records of a changelog topic: data (a key and its value, or a tombstone) and the
//! markers that delimit flushes.
//!
//! Each flush of a table partition is its data records followed by a *commit marker*
//! whose value lists the source offsets the data corresponds to. A reader applies data
//! only when the marker that ends it arrives; records after the last marker belong to a
//! flush that did not finish (its worker died), and the next owner writes an *abort
//! marker* after them so that every reader drops them. This makes a table's content and
//! its source position agree, so a crash neither loses nor repeats the effect of an event
//! on a table.

use rdkafka_async::Message;
use serde::{Deserialize, Serialize};

/// The header that marks a marker record; its value says which.
pub(crate) const MARKER_HEADER: &str = "faust-marker";
/// The key of marker records (compacted topics refuse records without a key).
pub(crate) const MARKER_KEY: &[u8] = b"__faust_marker__";
pub(crate) const COMMIT: &[u8] = b"commit";
pub(crate) const ABORT: &[u8] = b"abort";

/// A commit marker's value: the source offsets (topic, partition, next offset) the
/// flushed data corresponds to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub(crate) sources: Vec<(String, i32, i64)>,
    /// The highest origin handed out per (carrier topic, agent, origin topic, origin
    /// partition), for records forwarded by `group_by`/`through` (see `stream::forward`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) origins: Vec<OriginMark>,
}

/// (carrier topic, agent, origin topic, origin partition, highest origin offset).
pub(crate) type OriginMark = (String, String, String, i32, i64);

/// What a changelog record is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A key and its value (`None`: deleted).
    Data(Vec<u8>, Option<Vec<u8>>),
    /// The end of a flush.
    Commit(Marker),
    /// The records since the last commit marker are to be dropped.
    Abort,
}

/// Reads a changelog record; `Err` for a record that is none of the above (a record
/// without a key, or a marker whose value does not decode).
pub(crate) fn classify(m: &Message) -> Result<Entry, String> {
    if let Some(kind) = m.headers().last(MARKER_HEADER) {
        return match kind {
            Some(COMMIT) => serde_json::from_slice(m.payload().unwrap_or_default())
                .map(Entry::Commit)
                .map_err(|e| format!("commit marker does not decode: {e}")),
            Some(ABORT) => Ok(Entry::Abort),
            other => Err(format!(
                "unknown marker {:?}",
                other.map(String::from_utf8_lossy)
            )),
        };
    }
    let Some(key) = m.key() else {
        return Err("changelog record without a key".into());
    };
    Ok(Entry::Data(key.to_vec(), m.payload().map(<[u8]>::to_vec)))
}
