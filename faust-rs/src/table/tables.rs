//! The tables of a running worker: their store, the per-partition gates, and flushing.

use std::sync::Arc;

use rdkafka_async::{DeliveryFuture, Producer, Record};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use super::changelog::Marker;
use super::changelog::{ABORT, COMMIT, MARKER_HEADER, MARKER_KEY};
use super::store::{Change, Checkpoint, Store, WriteBatch};
use super::TableCore;
use crate::error::{Error, Result};

/// Source offsets: (topic, partition, next offset).
pub(crate) type Sources = Vec<(String, i32, i64)>;

/// Each table's pending writes of one partition.
pub(crate) type TableChanges = Vec<(Arc<dyn TableCore>, Vec<Change>)>;

/// One partition's part of a flush: the source offsets it corresponds to and each
/// table's pending writes.
pub(crate) struct Pending {
    pub(crate) partition: i32,
    pub(crate) sources: Sources,
    /// The origin marks of forwarded records read by the task.
    pub(crate) origins: Vec<super::changelog::OriginMark>,
    pub(crate) changes: TableChanges,
}

/// The tables of a worker.
pub(crate) struct Tables {
    pub(crate) cores: Vec<Arc<dyn TableCore>>,
    /// The LMDB environment (opened only when the app has tables).
    pub(crate) store: Option<Store>,
    /// One gate per partition number: agents hold it (shared) while they process an event
    /// of that partition; a flush takes it (exclusive) for the instant it reads the commit
    /// points and the pending writes, so the two agree.
    gates: Vec<Arc<RwLock<()>>>,
    /// The number of the last commit whose flush succeeded (commits are numbered from 1
    /// as they begin; writers outside agents wait on it).
    pub(crate) flushed: tokio::sync::watch::Sender<u64>,
    /// Commits begun.
    pub(crate) begun: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field(
                "tables",
                &self.cores.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Tables {
    pub(crate) fn new(
        cores: Vec<Arc<dyn TableCore>>,
        store: Option<Store>,
        partitions: i32,
    ) -> Self {
        let gates = if cores.is_empty() {
            Vec::new()
        } else {
            (0..partitions).map(|_| Arc::new(RwLock::new(()))).collect()
        };
        Self {
            cores,
            store,
            gates,
            flushed: tokio::sync::watch::channel(0).0,
            begun: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<dyn TableCore>> {
        self.cores.iter().find(|c| c.name() == name)
    }

    /// Enters partition `p` for processing an event (no-op without tables).
    pub(crate) async fn enter(&self, p: i32) -> Option<OwnedRwLockReadGuard<()>> {
        let gate = self.gates.get(usize::try_from(p).ok()?)?;
        Some(gate.clone().read_owned().await)
    }

    /// Takes partition `p`'s gate exclusively, runs `f`, and releases it.
    pub(crate) async fn exclusive<T>(&self, p: i32, f: impl FnOnce() -> T) -> T {
        let gate = usize::try_from(p).ok().and_then(|i| self.gates.get(i));
        let _guard = match gate {
            Some(g) => Some(g.write().await),
            None => None,
        };
        f()
    }

    /// Partitions with pending writes in any table.
    pub(crate) fn dirty_partitions(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self
            .cores
            .iter()
            .flat_map(|c| c.dirty_partitions())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Forgets the (flushed) cache of a revoked partition.
    pub(crate) fn forget(&self, p: i32) {
        self.cores.iter().for_each(|c| c.forget(p));
    }

    /// Drops the pending writes of a lost partition.
    pub(crate) fn discard(&self, p: i32) {
        self.cores.iter().for_each(|c| c.discard(p));
    }

    /// Each table's pending writes of `p` (call under the gate).
    pub(crate) fn begin(&self, p: i32) -> Result<TableChanges> {
        let mut out = Vec::new();
        for c in &self.cores {
            match c.begin_flush(p) {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => out.push((c.clone(), changes)),
                Err(err) => {
                    // What was taken goes back.
                    for (c, _) in &out {
                        c.end_flush(p, false);
                    }
                    return Err(err);
                }
            }
        }
        Ok(out)
    }

    /// Writes the pending changes to the changelogs (data, then a commit marker per table
    /// partition), waits for their delivery, then writes them to LMDB with their
    /// checkpoints. On failure the writes stay pending (and nothing may be committed).
    pub(crate) async fn flush(&self, producer: &Producer, pending: Vec<Pending>) -> Result<()> {
        if pending.iter().all(|p| p.changes.is_empty()) {
            return Ok(());
        }
        let touched: Vec<(Arc<dyn TableCore>, i32)> = pending
            .iter()
            .flat_map(|p| p.changes.iter().map(|(c, _)| (c.clone(), p.partition)))
            .collect();
        let result = self.flush_inner(producer, pending).await;
        let ok = result.is_ok();
        for (c, p) in touched {
            c.end_flush(p, ok);
        }
        result
    }

    async fn flush_inner(&self, producer: &Producer, mut pending: Vec<Pending>) -> Result<()> {
        // (table index in `pending`, partition) -> the delivery of its last record.
        let mut last: Vec<(usize, usize, DeliveryFuture)> = Vec::new();
        let mut deliveries: Vec<DeliveryFuture> = Vec::new();
        for (pi, part) in pending.iter().enumerate() {
            for (ti, (core, changes)) in part.changes.iter().enumerate() {
                let topic = core.changelog();
                for (key, value) in changes {
                    let mut record = Record::to(topic).partition(part.partition).key(key);
                    if let Some(v) = value {
                        record = record.value(v);
                    }
                    deliveries.push(producer.send(record).await?);
                }
                let marker = if core.is_global() {
                    None
                } else {
                    Some(
                        serde_json::to_vec(&Marker {
                            sources: part.sources.clone(),
                            origins: part.origins.clone(),
                        })
                        .map_err(|e| Error::Store(format!("marker: {e}")))?,
                    )
                };
                match marker {
                    Some(m) => {
                        let record = Record::to(topic)
                            .partition(part.partition)
                            .key(MARKER_KEY)
                            .header(MARKER_HEADER, COMMIT)
                            .value(&m);
                        last.push((pi, ti, producer.send(record).await?));
                    }
                    None => {
                        if let Some(d) = deliveries.pop() {
                            last.push((pi, ti, d));
                        }
                    }
                }
            }
        }
        for d in deliveries {
            d.await?;
        }
        let mut batches = Vec::with_capacity(last.len());
        for (pi, ti, d) in last {
            let delivered = d.await?;
            let part = &mut pending[pi];
            let (core, changes) = &mut part.changes[ti];
            batches.push(WriteBatch {
                table: Arc::from(core.name()),
                partition: part.partition,
                changes: std::mem::take(changes),
                checkpoint: Some(Checkpoint {
                    changelog: delivered.offset + 1,
                    sources: part.sources.clone(),
                    origins: part.origins.clone(),
                }),
            });
        }
        self.store()?.write_async(batches).await
    }

    /// The store.
    pub(crate) fn store(&self) -> Result<&Store> {
        self.store
            .as_ref()
            .ok_or_else(|| Error::Lifecycle("the app has no tables".into()))
    }

    /// Writes an abort marker to `table`'s changelog partition `p` (after records of an
    /// unfinished flush) and records the checkpoint after it.
    pub(crate) async fn abort(
        &self,
        producer: &Producer,
        table: &str,
        p: i32,
        sources: Sources,
        origins: Vec<super::changelog::OriginMark>,
    ) -> Result<()> {
        let Some(core) = self.by_name(table) else {
            return Ok(());
        };
        let record = Record::to(core.changelog())
            .partition(p)
            .key(MARKER_KEY)
            .header(MARKER_HEADER, ABORT);
        let delivered = producer.send(record).await?.await?;
        self.store()?
            .write_async(vec![WriteBatch {
                table: Arc::from(table),
                partition: p,
                changes: Vec::new(),
                checkpoint: Some(Checkpoint {
                    changelog: delivered.offset + 1,
                    sources,
                    origins,
                }),
            }])
            .await
    }
}
