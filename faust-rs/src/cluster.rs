//! The cluster map: which worker owns each task (partition number) and which keep standby
//! copies of its tables, with each worker's web address.
//!
//! Every worker of an app with tables publishes a record about itself to the one-partition
//! topic `<app id>-__cluster` (key: its worker id; value: its URL, active tasks and standby
//! tasks) whenever its tasks change, and every few seconds as a heartbeat; it writes a
//! tombstone when it stops. Every worker reads the topic from its beginning and keeps the
//! map current. A task's owner is the worker whose latest record claims it last; records
//! older than a few heartbeats are stale (their worker is gone).
//!
//! Standby placement uses rendezvous (highest random weight) hashing over the live
//! workers other than the owner: each worker computes the same placement from the same
//! map, and a worker joining or leaving moves only the standbys that hashed to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka_async::{Consumer, ConsumerEvent, Offset, Producer, Record, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::table::partitioner::murmur2;
use crate::table::recovery::Recovery;

/// How often a worker republishes its record.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// A record older than this is stale (its worker is considered gone).
const STALE_AFTER: Duration = Duration::from_secs(12);

/// What a worker publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id (unique per process).
    pub id: String,
    /// Its web server's URL, if it runs one.
    pub url: Option<String>,
    /// The tasks (partition numbers) it processes.
    pub active: BTreeSet<i32>,
    /// The tasks it keeps standby copies of.
    pub standby: BTreeSet<i32>,
    /// When it published this, ms since the epoch.
    pub published_ms: i64,
    /// The record's offset in the cluster topic (later records win).
    #[serde(skip)]
    pub offset: i64,
}

/// The cluster map, as this worker knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterMap {
    /// The number of tasks (partitions of every co-partitioned topic and table).
    pub tasks: i32,
    /// The live workers, by id.
    pub workers: BTreeMap<String, WorkerInfo>,
}

impl ClusterMap {
    /// The worker that processes task `p`, if known.
    pub fn owner(&self, p: i32) -> Option<&WorkerInfo> {
        self.workers
            .values()
            .filter(|w| w.active.contains(&p))
            .max_by_key(|w| w.offset)
    }

    /// The workers that keep standby copies of task `p`'s tables.
    pub fn standbys(&self, p: i32) -> Vec<&WorkerInfo> {
        self.workers
            .values()
            .filter(|w| w.standby.contains(&p))
            .collect()
    }

    /// Where standby copies of each task belong: `replicas` workers other than its owner,
    /// by rendezvous hashing over the live workers.
    pub fn placement(&self, replicas: usize) -> BTreeMap<i32, Vec<String>> {
        let mut out = BTreeMap::new();
        for p in 0..self.tasks {
            let owner = self.owner(p).map(|w| w.id.clone());
            let mut candidates: Vec<(u32, &String)> = self
                .workers
                .keys()
                .filter(|id| Some(*id) != owner.as_ref())
                .map(|id| (murmur2(format!("{id}/{p}").as_bytes()), id))
                .collect();
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            out.insert(
                p,
                candidates
                    .into_iter()
                    .take(replicas)
                    .map(|(_, id)| id.clone())
                    .collect(),
            );
        }
        out
    }

    /// The tasks `worker` should keep standby copies of.
    pub fn standby_tasks(&self, worker: &str, replicas: usize) -> BTreeSet<i32> {
        self.placement(replicas)
            .into_iter()
            .filter(|(_, ids)| ids.iter().any(|id| id == worker))
            .map(|(p, _)| p)
            .collect()
    }

    fn apply(&mut self, offset: i64, key: &str, value: Option<&[u8]>, now_ms: i64) {
        match value.map(serde_json::from_slice::<WorkerInfo>) {
            Some(Ok(mut info)) => {
                info.offset = offset;
                self.workers.insert(key.to_owned(), info);
            }
            Some(Err(err)) => {
                tracing::warn!(%err, key, "a cluster record that does not decode; ignored");
            }
            None => {
                self.workers.remove(key);
            }
        }
        self.expire(now_ms);
    }

    fn expire(&mut self, now_ms: i64) {
        let stale = STALE_AFTER.as_millis() as i64;
        self.workers.retain(|_, w| now_ms - w.published_ms <= stale);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A unique id for this worker process.
pub(crate) fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// The running cluster service of a worker.
pub(crate) struct ClusterService {
    pub(crate) id: String,
    pub(crate) map: watch::Receiver<ClusterMap>,
    done: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ClusterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterService")
            .field("id", &self.id)
            .finish()
    }
}

/// What the service needs.
pub(crate) struct ClusterConfig {
    pub(crate) topic: String,
    pub(crate) id: String,
    pub(crate) url: Option<String>,
    pub(crate) tasks: i32,
    pub(crate) replicas: usize,
}

impl ClusterService {
    /// Starts publishing this worker's record and reading everyone's.
    ///
    /// Cancel safety: not cancel safe (the consumer is lost).
    pub(crate) async fn start(
        config: ClusterConfig,
        consumer: Consumer,
        producer: Producer,
        active: watch::Receiver<BTreeSet<i32>>,
        recovery: Option<Recovery>,
    ) -> crate::error::Result<Self> {
        let mut tpl = TopicPartitionList::new();
        tpl.add(&config.topic, 0, Offset::Beginning);
        consumer.assign(&tpl).await?;
        let (tx, rx) = watch::channel(ClusterMap {
            tasks: config.tasks,
            workers: BTreeMap::new(),
        });
        let stop = CancellationToken::new();
        let id = config.id.clone();
        let done = tokio::spawn(run(
            config,
            consumer,
            producer,
            active,
            recovery,
            tx,
            stop.clone(),
        ));
        Ok(Self {
            id,
            map: rx,
            done,
            stop,
        })
    }

    /// Publishes a tombstone for this worker and stops.
    ///
    /// Cancel safety: cancel safe.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }
}

async fn publish(producer: &Producer, config: &ClusterConfig, info: Option<&WorkerInfo>) {
    let value = info.map(|i| serde_json::to_vec(i).unwrap_or_default());
    let mut record = Record::to(&config.topic).partition(0).key(&config.id);
    if let Some(v) = &value {
        record = record.value(v);
    }
    match producer.send(record).await {
        Ok(d) => {
            if let Err(err) = d.await {
                tracing::warn!(%err, "publishing this worker's cluster record failed");
            }
        }
        Err(err) => tracing::warn!(%err, "publishing this worker's cluster record failed"),
    }
}

async fn run(
    config: ClusterConfig,
    mut consumer: Consumer,
    producer: Producer,
    mut active: watch::Receiver<BTreeSet<i32>>,
    recovery: Option<Recovery>,
    map: watch::Sender<ClusterMap>,
    stop: CancellationToken,
) {
    let mut standby: BTreeSet<i32> = BTreeSet::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            let info = WorkerInfo {
                id: config.id.clone(),
                url: config.url.clone(),
                active: active.borrow_and_update().clone(),
                standby: standby.clone(),
                published_ms: now_ms(),
                offset: 0,
            };
            publish(&producer, &config, Some(&info)).await;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            _ = heartbeat.tick() => {
                dirty = true;
                map.send_modify(|m| m.expire(now_ms()));
            }
            changed = active.changed() => {
                if changed.is_err() { break; }
                dirty = true;
            }
            ev = consumer.next_event() => match ev {
                Ok(ConsumerEvent::Message(m)) => {
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                    map.send_modify(|c| c.apply(m.offset(), &key, m.payload(), now_ms()));
                    while let Some(Ok(ConsumerEvent::Message(m))) = consumer.try_next_event() {
                        let key = m.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                        map.send_modify(|c| c.apply(m.offset(), &key, m.payload(), now_ms()));
                    }
                }
                Ok(ConsumerEvent::Rebalance(r)) => { let _ = r.complete().await; }
                Err(err) => tracing::warn!(%err, "cluster map reader"),
            },
        }
        // Standby copies follow the map.
        let wanted = {
            let m = map.borrow();
            let mine = m.standby_tasks(&config.id, config.replicas);
            let act = active.borrow();
            mine.difference(&act).copied().collect::<BTreeSet<i32>>()
        };
        if wanted != standby {
            tracing::info!(standby = ?wanted, "standby tasks");
            standby = wanted;
            if let Some(r) = &recovery {
                r.standby(standby.clone());
            }
            dirty = true;
        }
    }
    publish(&producer, &config, None).await;
    if let Err(err) = consumer.close_within(Duration::from_secs(5)).await {
        tracing::debug!(%err, "closing the cluster map reader");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, active: &[i32], offset: i64) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            url: None,
            active: active.iter().copied().collect(),
            standby: BTreeSet::new(),
            published_ms: now_ms(),
            offset,
        }
    }

    fn map(workers: &[WorkerInfo], tasks: i32) -> ClusterMap {
        ClusterMap {
            tasks,
            workers: workers.iter().map(|w| (w.id.clone(), w.clone())).collect(),
        }
    }

    #[test]
    fn standbys_avoid_the_owner_and_move_little_when_a_worker_joins() {
        let three = map(
            &[
                worker("a", &[0, 1, 2], 1),
                worker("b", &[3, 4, 5], 2),
                worker("c", &[6, 7], 3),
            ],
            8,
        );
        let before = three.placement(1);
        for (p, ids) in &before {
            assert_eq!(ids.len(), 1);
            assert_ne!(Some(&ids[0]), three.owner(*p).map(|w| &w.id), "task {p}");
        }
        // A fourth worker with no tasks yet: only standbys that hash to it move.
        let mut four = three.clone();
        four.workers.insert("d".into(), worker("d", &[], 4));
        let after = four.placement(1);
        let moved = (0..8).filter(|p| before[p] != after[p]).count();
        assert!(after
            .values()
            .all(|ids| ids[0] == "d" || before.values().any(|b| b == ids)));
        assert!(moved <= 8, "moved {moved}");
        for (p, ids) in &after {
            if before[p] != *ids {
                assert_eq!(ids[0], "d", "a moved standby goes to the new worker");
            }
        }
    }

    #[test]
    fn the_latest_claim_owns_a_task_and_tombstones_remove_workers() {
        let mut m = map(&[worker("a", &[0], 1)], 2);
        let now = now_ms();
        let b = serde_json::to_vec(&worker("b", &[0], 0)).unwrap();
        m.apply(5, "b", Some(&b), now);
        assert_eq!(m.owner(0).unwrap().id, "b");
        m.apply(6, "b", None, now);
        assert_eq!(m.owner(0).unwrap().id, "a");
        let mut old = worker("c", &[1], 0);
        old.published_ms = now - 60_000;
        m.apply(7, "c", Some(&serde_json::to_vec(&old).unwrap()), now);
        assert!(m.owner(1).is_none(), "stale records are dropped");
    }
}
