//! Applying a changelog partition to the store: data is held until the commit marker
//! that ends its flush (see [`super::changelog`]).

use super::changelog::{Entry, Marker, OriginMark};
use super::store::{Change, Checkpoint};

/// Above this many held records, data is applied without waiting for its marker (a
/// compacted changelog may have lost the markers of old flushes); logged.
const MAX_HELD: usize = 500_000;

/// The apply state of one changelog partition.
#[derive(Debug, Default)]
pub(crate) struct Applier {
    /// Records of the flush in progress (waiting for its marker).
    held: Vec<Change>,
    /// What is ready to be written to the store, and the checkpoint after it.
    ready: Vec<Change>,
    checkpoint: Option<Checkpoint>,
    /// The source offsets of the last commit marker seen (or stored).
    pub(crate) sources: Vec<(String, i32, i64)>,
    /// Its origin marks.
    pub(crate) origins: Vec<OriginMark>,
    /// Records applied (made ready) so far.
    pub(crate) applied: u64,
}

impl Applier {
    /// Starts from a stored checkpoint.
    pub(crate) fn new(stored: Option<&Checkpoint>) -> Self {
        Self {
            sources: stored.map(|c| c.sources.clone()).unwrap_or_default(),
            origins: stored.map(|c| c.origins.clone()).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// Takes record `offset`.
    pub(crate) fn push(&mut self, offset: i64, entry: Entry) {
        match entry {
            Entry::Data(k, v) => {
                self.held.push((k, v));
                if self.held.len() >= MAX_HELD {
                    tracing::warn!(
                        held = self.held.len(),
                        "no commit marker in a long run of changelog records; applying them"
                    );
                    self.release(offset, None);
                }
            }
            Entry::Commit(Marker { sources, origins }) => {
                self.origins = origins;
                self.release(offset, Some(sources));
            }
            Entry::Abort => {
                if !self.held.is_empty() {
                    tracing::info!(
                        dropped = self.held.len(),
                        "dropping changelog records of an unfinished flush"
                    );
                }
                self.held.clear();
                self.checkpoint = Some(self.here(offset));
            }
        }
    }

    /// Applies what is held now, without waiting for a marker (global tables, whose
    /// writers do not write markers).
    pub(crate) fn force(&mut self, offset: i64) {
        self.release(offset, None);
    }

    /// Skips a record that is not a changelog record (logged by the caller).
    pub(crate) fn skip(&mut self, offset: i64) {
        if self.held.is_empty() {
            self.checkpoint = Some(self.here(offset));
        }
    }

    fn release(&mut self, offset: i64, sources: Option<Vec<(String, i32, i64)>>) {
        if let Some(s) = sources {
            self.sources = s;
        }
        self.applied += self.held.len() as u64;
        self.ready.append(&mut self.held);
        self.checkpoint = Some(self.here(offset));
    }

    /// The checkpoint after record `offset`.
    fn here(&self, offset: i64) -> Checkpoint {
        Checkpoint {
            changelog: offset + 1,
            sources: self.sources.clone(),
            origins: self.origins.clone(),
        }
    }

    /// What to write now: changes and the checkpoint after them (`None` if nothing moved).
    pub(crate) fn take_ready(&mut self) -> Option<(Vec<Change>, Checkpoint)> {
        let cp = self.checkpoint.take()?;
        Some((std::mem::take(&mut self.ready), cp))
    }

    /// Records after the last marker (an unfinished flush, if the partition is at its
    /// end).
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Drops the held records (an abort marker is being written after them).
    pub(crate) fn drop_held(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(k: &str, v: Option<&str>) -> Entry {
        Entry::Data(k.into(), v.map(Into::into))
    }

    fn commit(offset: i64) -> Entry {
        Entry::Commit(Marker {
            sources: vec![("src".into(), 0, offset)],
            origins: Vec::new(),
        })
    }

    #[test]
    fn data_waits_for_its_marker_and_aborted_data_is_dropped() {
        let mut a = Applier::new(None);
        a.push(0, data("a", Some("1")));
        a.push(1, data("b", Some("2")));
        assert!(a.take_ready().is_none(), "nothing before the marker");
        a.push(2, commit(10));
        let (changes, cp) = a.take_ready().unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(cp.changelog, 3);
        assert_eq!(cp.sources, vec![("src".to_string(), 0, 10)]);
        // An unfinished flush, then the next owner's abort marker.
        a.push(3, data("a", Some("99")));
        a.push(4, Entry::Abort);
        let (changes, cp) = a.take_ready().unwrap();
        assert!(changes.is_empty());
        assert_eq!(cp.changelog, 5);
        assert_eq!(
            cp.sources,
            vec![("src".to_string(), 0, 10)],
            "position unchanged"
        );
        a.push(5, data("a", None));
        assert_eq!(a.held(), 1);
        a.push(6, commit(12));
        let (changes, _) = a.take_ready().unwrap();
        assert_eq!(changes, vec![(b"a".to_vec(), None)]);
        assert_eq!(a.applied, 3);
    }
}
