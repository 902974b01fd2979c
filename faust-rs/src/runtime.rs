//! The state of a running worker, shared by its tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka_async::{CommitHandle, MockCluster, Offset, Producer, Record, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::acks::{AckSignals, PartitionAcks};
use crate::codec::CodecError;
use crate::error::Error;
use crate::event::Inbound;
use crate::sensor::Monitor;
use crate::settings::{DecodeErrorPolicy, Settings};
use crate::sources::Sources;
use crate::table::recovery::Recovery;
use crate::table::tables::{Pending, Tables};

/// Partition key: (topic, partition).
pub(crate) type Tp = (Arc<str>, i32);

/// What every task of a running worker shares.
pub(crate) struct Runtime {
    pub(crate) settings: Settings,
    pub(crate) producer: Producer,
    pub(crate) sources: Sources,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) signals: Arc<AckSignals>,
    pub(crate) partitions: Mutex<HashMap<Tp, Arc<PartitionAcks>>>,
    pub(crate) committed: Mutex<HashMap<Tp, i64>>,
    pub(crate) commits: CommitHandle,
    /// Stops taking events (graceful shutdown starts).
    pub(crate) stopping: CancellationToken,
    /// The first fatal error (the worker stops with it).
    pub(crate) fatal: Mutex<Option<Error>>,
    pub(crate) bootstrap: String,
    /// The embedded broker, when no broker was configured.
    pub(crate) embedded: Option<Arc<MockCluster>>,
    /// The app's tables.
    pub(crate) tables: Tables,
    /// Reads changelogs (when the app has tables).
    pub(crate) recovery: Option<Recovery>,
    /// The number of tasks (partitions of the tasks topic).
    pub(crate) tasks: i32,
    /// The tasks this worker processes.
    pub(crate) active: tokio::sync::watch::Sender<BTreeSet<i32>>,
    /// The cluster map service (apps with tables).
    pub(crate) cluster: Mutex<Option<crate::cluster::ClusterService>>,
    /// The app's rebalance listeners: (assigned, revoked).
    pub(crate) hooks: (
        Vec<crate::app::PartitionsHook>,
        Vec<crate::app::PartitionsHook>,
    ),
    /// What `/ready` reports.
    pub(crate) readiness: Readiness,
    /// One commit (and table flush) at a time.
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
}

/// Whether the worker is ready for traffic: no task being restored, consumer lag known
/// and small (measured by the conductor every second).
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    measured: std::sync::atomic::AtomicBool,
    restoring: std::sync::atomic::AtomicUsize,
    /// The consumer lag of the active tasks (-1: not known yet).
    lag: std::sync::atomic::AtomicI64,
}

impl Readiness {
    pub(crate) fn update(&self, restoring: usize, lag: Option<i64>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.restoring.store(restoring, Relaxed);
        self.lag.store(lag.unwrap_or(-1), Relaxed);
        self.measured.store(true, Relaxed);
    }

    /// (measured at least once, tasks restoring, lag if known).
    pub(crate) fn get(&self) -> (bool, usize, Option<i64>) {
        use std::sync::atomic::Ordering::Relaxed;
        let lag = self.lag.load(Relaxed);
        (
            self.measured.load(Relaxed),
            self.restoring.load(Relaxed),
            (lag >= 0).then_some(lag),
        )
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl Runtime {
    /// Stops the worker with `err` (the first fatal error wins).
    pub(crate) fn fail(&self, err: Error) {
        tracing::error!(%err, "stopping the worker");
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_none() {
            *fatal = Some(err);
        }
        self.stopping.cancel();
    }

    /// The ack window of a partition, created on first use.
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionAcks> {
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&(Arc::from(topic), partition)) {
            return p.clone();
        }
        let topic: Arc<str> = Arc::from(topic);
        let acks = Arc::new(PartitionAcks::new(
            topic.clone(),
            partition,
            self.signals.clone(),
        ));
        map.insert((topic, partition), acks.clone());
        acks
    }

    /// Handles a record that did not decode, per policy. Returns whether the stream goes on.
    pub(crate) async fn bad_record(&self, inbound: Arc<Inbound>, err: &CodecError) -> bool {
        let m = &inbound.message;
        self.monitor.on_decode_error();
        match &self.settings.decode_error_policy {
            DecodeErrorPolicy::Skip => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %err, "skipping a record that does not decode");
                true
            }
            DecodeErrorPolicy::DeadLetter(dlq) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %err, dead_letter = %dlq, "sending a record that does not decode to the dead-letter topic");
                let error = err.to_string();
                let source = format!("{}[{}]@{}", m.topic(), m.partition(), m.offset());
                let mut record = Record::to(dlq)
                    .header("faust-error", &error)
                    .header("faust-source", &source);
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(v) = m.payload() {
                    record = record.value(v);
                }
                match self.producer.send(record).await {
                    Ok(delivery) => {
                        // Acknowledged once the dead letter is stored.
                        tokio::spawn(async move {
                            if let Err(err) = delivery.await {
                                tracing::error!(%err, "dead letter not delivered; the record will be consumed again");
                                inbound.fail();
                            }
                        });
                    }
                    Err(err) => {
                        tracing::error!(%err, "dead letter not sent; the record will be consumed again");
                        inbound.fail();
                    }
                }
                true
            }
            DecodeErrorPolicy::Stop => {
                inbound.discard();
                self.fail(Error::BadRecord {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    reason: err.to_string(),
                });
                false
            }
        }
    }

    /// Waits (bounded) until no event of `parts` is in an agent's hands. The partitions
    /// must be closing (only then are releases signalled).
    pub(crate) async fn drain(&self, parts: &[Arc<PartitionAcks>], within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.signals.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if parts.iter().all(|p| p.live() == 0) {
                return;
            }
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(waited = ?within, "events still in progress; moving on");
                    return;
                }
            }
        }
    }

    /// Every partition's window.
    pub(crate) fn all_partitions(&self) -> Vec<Arc<PartitionAcks>> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Starts task `p`'s partitions from the origin marks restored with its tables.
    pub(crate) fn seed_origins(&self, p: i32, marks: &[crate::table::changelog::OriginMark]) {
        let mut by_carrier: HashMap<&str, crate::acks::OriginMarks> = HashMap::new();
        for (carrier, agent, t, op, o) in marks {
            by_carrier
                .entry(carrier.as_str())
                .or_default()
                .insert((agent.clone(), t.clone(), *op), *o);
        }
        for (carrier, m) in by_carrier {
            self.partition(carrier, p).seed_origins(m);
        }
    }

    /// The tasks this worker processes changed.
    pub(crate) fn on_tasks_changed(&self, active: &BTreeSet<i32>) {
        self.active.send_if_modified(|a| {
            if a == active {
                return false;
            }
            *a = active.clone();
            true
        });
    }

    /// Commits the commit point of every partition that moved (or only of `only`), after
    /// flushing the tables.
    pub(crate) async fn commit(&self, only: Option<&[Arc<PartitionAcks>]>) {
        let candidates: Vec<Arc<PartitionAcks>> = match only {
            Some(list) => list.to_vec(),
            None => self.all_partitions(),
        };
        let mut flush: BTreeSet<i32> = candidates.iter().map(|p| p.partition).collect();
        if only.is_none() {
            flush.extend(self.tables.dirty_partitions());
        }
        self.commit_inner(candidates, flush).await;
    }

    /// Commits revoked partitions, flushing their tasks' tables.
    pub(crate) async fn commit_tasks(&self, parts: &[Arc<PartitionAcks>], tasks: &[i32]) {
        self.commit_inner(parts.to_vec(), tasks.iter().copied().collect())
            .await;
    }

    async fn commit_inner(&self, candidates: Vec<Arc<PartitionAcks>>, flush: BTreeSet<i32>) {
        let _serial = self.commit_lock.lock().await;
        let number = self
            .tables
            .begun
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        let started = Instant::now();
        let mut by_partition: BTreeMap<i32, Vec<Arc<PartitionAcks>>> = BTreeMap::new();
        for p in candidates {
            by_partition.entry(p.partition).or_default().push(p);
        }
        let mut points: Vec<(Tp, i64)> = Vec::new();
        if self.tables.is_empty() {
            for p in by_partition.values().flatten() {
                if let Some(point) = p.commit_point() {
                    points.push(((p.topic.clone(), p.partition), point));
                }
            }
        } else {
            let mut pending = Vec::new();
            let mut flushed_marks = Vec::new();
            for n in flush {
                let parts = by_partition.remove(&n).unwrap_or_default();
                // Under the partition's gate, no agent is inside an event of it: the
                // commit points and the pending writes agree.
                let (sources, marks, changes) = self
                    .tables
                    .exclusive(n, || {
                        let sources: Vec<(String, i32, i64)> = parts
                            .iter()
                            .filter_map(|p| {
                                p.commit_point()
                                    .map(|point| (p.topic.to_string(), p.partition, point))
                            })
                            .collect();
                        let marks: Vec<_> = parts
                            .iter()
                            .map(|p| (p.clone(), p.flushable_origin_marks()))
                            .collect();
                        (sources, marks, self.tables.begin(n))
                    })
                    .await;
                let origins: Vec<crate::table::changelog::OriginMark> = marks
                    .iter()
                    .flat_map(|(p, m)| {
                        m.iter().map(|((agent, t, op), o)| {
                            (p.topic.to_string(), agent.clone(), t.clone(), *op, *o)
                        })
                    })
                    .collect();
                flushed_marks.extend(marks);
                let changes = match changes {
                    Ok(c) => c,
                    Err(err) => {
                        self.fail(err);
                        return;
                    }
                };
                for (t, p, o) in &sources {
                    points.push(((Arc::from(t.as_str()), *p), *o));
                }
                pending.push(Pending {
                    partition: n,
                    sources,
                    origins,
                    changes,
                });
            }
            let records: usize = pending
                .iter()
                .flat_map(|p| p.changes.iter().map(|(_, c)| c.len()))
                .sum();
            if let Err(err) = self.tables.flush(&self.producer, pending).await {
                tracing::warn!(%err, "flushing tables failed; offsets not committed, will retry");
                return;
            }
            for (p, m) in flushed_marks {
                p.set_flushed_origins(m);
            }
            self.monitor.on_changelog(records as u64);
            self.tables.flushed.send_modify(|n| *n = (*n).max(number));
        }
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        {
            let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for (key, point) in points {
                if committed.get(&key) != Some(&point) {
                    tpl.add(&key.0, key.1, Offset::At(point));
                    moved.push((key, point));
                }
            }
        }
        if tpl.is_empty() {
            return;
        }
        self.monitor.on_commit_initiated();
        match self.commits.commit(&tpl).await {
            Ok(()) => {
                self.monitor.on_commit(started.elapsed());
                let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
                for (key, point) in moved {
                    committed.insert(key, point);
                }
                tracing::debug!(?tpl, "committed");
            }
            Err(err) => tracing::warn!(%err, ?tpl, "commit failed; will retry"),
        }
    }
}
