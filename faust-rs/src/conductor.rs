//! The conductor: the one task that owns the consumer. It hands each record to the
//! agents' channels (waiting when they are full: backpressure), and handles rebalances and
//! rewinds.
//!
//! Assignment (see `docs/src/design/assignment.md`): the consumer group's members share
//! the partitions of one internal *tasks* topic, `<app id>-__assignor`, with the
//! cooperative-sticky assignor. Owning task `p` means owning partition `p` of every topic
//! the agents read and of every table: the conductor assigns those partitions itself,
//! after restoring the tables' partition `p` from their changelogs. So topics and tables
//! are co-partitioned, few tasks move at a rebalance, and the tasks that do not move keep
//! processing through it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_channel::Sender;
use rdkafka_async::{
    Consumer, ConsumerEvent, Message, Offset, Rebalance, RebalanceKind, TopicPartitionList,
};
use tokio::sync::mpsc;

use crate::acks::PartitionAcks;
use crate::event::Inbound;
use crate::runtime::Runtime;
use crate::sources::{Batch, Route, BATCH_MAX};
use crate::table::recovery::Restored;
use crate::topics::TopicCreator;

/// How long a revocation waits for in-flight events of the revoked partitions.
const REVOKE_WAIT: Duration = Duration::from_secs(10);
/// How long asking for committed offsets may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the consumer lag is measured (for `/ready`).
const LAG_EVERY: Duration = Duration::from_secs(1);
/// Pause before restoring a partition again after a failed restore.
const RESTORE_RETRY: Duration = Duration::from_secs(1);

/// A task this worker owns.
#[derive(Debug)]
enum Task {
    /// Its tables are being restored (restore number `id`).
    Restoring {
        id: u64,
        handle: tokio::task::AbortHandle,
    },
    /// Its partitions are assigned and processed.
    Active,
}

type RestoreResult = (i32, u64, crate::error::Result<Restored>);

pub(crate) struct Conductor {
    rt: Arc<Runtime>,
    consumer: Consumer,
    creator: TopicCreator,
    routes: HashMap<String, Arc<[Route]>>,
    routes_version: u64,
    /// topic -> partition -> window (looked up by `&str`, with no allocation per record).
    partitions: HashMap<String, HashMap<i32, Arc<PartitionAcks>>>,
    /// The window used last (records come in runs of one partition).
    last: Option<Arc<PartitionAcks>>,
    /// The topics agents read, with their partition counts.
    sources: BTreeMap<String, i32>,
    /// The tasks topic and its partition count.
    tasks_topic: String,
    tasks: BTreeMap<i32, Task>,
    restores: u64,
    restored_tx: mpsc::UnboundedSender<RestoreResult>,
    restored_rx: mpsc::UnboundedReceiver<RestoreResult>,
}

impl Conductor {
    pub(crate) fn new(
        rt: Arc<Runtime>,
        consumer: Consumer,
        creator: TopicCreator,
        tasks_topic: String,
    ) -> Self {
        let (restored_tx, restored_rx) = mpsc::unbounded_channel();
        Self {
            rt,
            consumer,
            creator,
            routes: HashMap::new(),
            routes_version: u64::MAX,
            partitions: HashMap::new(),
            last: None,
            sources: BTreeMap::new(),
            tasks_topic,
            tasks: BTreeMap::new(),
            restores: 0,
            restored_tx,
            restored_rx,
        }
    }

    /// Runs until the worker stops; gives the consumer back for the final commit and close.
    pub(crate) async fn run(mut self) -> Consumer {
        let mut topics = self.rt.sources.topics();
        let initial = topics.borrow_and_update().clone();
        self.set_sources(initial).await;
        match self.consumer.subscribe(&[self.tasks_topic.as_str()]).await {
            Ok(()) => tracing::info!(tasks = %self.tasks_topic, "joined the group"),
            Err(err) => self.rt.fail(err.into()),
        }
        // The futures of the rare events are made once and re-armed only after they fire,
        // not once per record.
        let stopping = self.rt.stopping.clone();
        let signals = self.rt.signals.clone();
        let mut stopped = std::pin::pin!(stopping.cancelled());
        let mut rewind = std::pin::pin!(signals.rewind.notified());
        let mut changed = watch_topics(topics.clone());
        let mut lag_tick = tokio::time::interval(LAG_EVERY);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                _ = lag_tick.tick() => self.measure_lag(),
                watcher = &mut changed => {
                    let Some(watcher) = watcher else { break };
                    changed = watch_topics(watcher);
                    let set = topics.borrow_and_update().clone();
                    self.set_sources(set).await;
                }
                Some((p, id, result)) = self.restored_rx.recv() => self.restored(p, id, result).await,
                () = &mut rewind => {
                    rewind.set(signals.rewind.notified());
                    self.rewind().await;
                }
                event = self.consumer.next_event() => match event {
                    Ok(ConsumerEvent::Message(m)) => self.dispatch_from(m).await,
                    Ok(ConsumerEvent::Rebalance(r)) => self.rebalance(r).await,
                    Err(err) => tracing::warn!(%err, "consumer error"),
                },
            }
        }
        self.consumer
    }

    /// Takes the set of topics agents read: new ones are created, and their partitions of
    /// the active tasks assigned.
    async fn set_sources(&mut self, topics: BTreeSet<String>) {
        let new: Vec<String> = topics
            .iter()
            .filter(|t| !self.sources.contains_key(*t))
            .cloned()
            .collect();
        if new.is_empty() {
            return;
        }
        if let Err(err) = self.creator.ensure(new.iter()).await {
            self.rt.fail(err);
            return;
        }
        let counts = match self.creator.partition_counts(new.iter()).await {
            Ok(c) => c,
            Err(err) => {
                self.rt.fail(err);
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for t in new {
            let n = counts
                .get(&t)
                .copied()
                .unwrap_or(self.rt.settings.topic_partitions);
            if n > self.rt.tasks {
                tracing::warn!(topic = %t, partitions = n, tasks = self.rt.tasks, "the topic has more partitions than the app has tasks: the extra ones are not consumed");
            }
            for (p, task) in &self.tasks {
                if matches!(task, Task::Active) && *p < n {
                    tpl.add(&t, *p, Offset::Invalid);
                }
            }
            tracing::info!(topic = %t, partitions = n, "consuming");
            self.sources.insert(t, n);
        }
        if !tpl.is_empty() {
            if let Err(err) = self.consumer.incremental_assign(&tpl).await {
                self.rt.fail(err.into());
                return;
            }
            let assigned: Vec<(String, i32)> = tpl
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect();
            self.call_hooks(true, &assigned);
        }
    }

    /// The source partitions of task `p`.
    fn task_partitions(&self, p: i32) -> Vec<(String, i32)> {
        self.sources
            .iter()
            .filter(|(_, n)| p < **n)
            .map(|(t, _)| (t.clone(), p))
            .collect()
    }

    /// Starts restoring task `p`'s tables; it becomes active when done.
    fn start_restore(&mut self, p: i32, after: Duration) {
        self.restores += 1;
        let id = self.restores;
        let rt = self.rt.clone();
        let tx = self.restored_tx.clone();
        let handle = tokio::spawn(async move {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            let result = match &rt.recovery {
                Some(r) => r.restore(p).await,
                None => Ok(Restored::default()),
            };
            let _ = tx.send((p, id, result));
        })
        .abort_handle();
        self.tasks.insert(p, Task::Restoring { id, handle });
    }

    /// A restore ended: the task's partitions are assigned, from the position its tables
    /// correspond to.
    async fn restored(&mut self, p: i32, id: u64, result: crate::error::Result<Restored>) {
        if !matches!(self.tasks.get(&p), Some(Task::Restoring { id: current, .. }) if *current == id)
        {
            return;
        }
        let restored = match result {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(partition = p, %err, "restoring tables failed; trying again");
                self.start_restore(p, RESTORE_RETRY);
                return;
            }
        };
        let sources: Vec<(String, i32, i64)> = restored
            .sources
            .iter()
            .map(|((t, sp), o)| (t.clone(), *sp, *o))
            .collect();
        for table in &restored.unfinished {
            tracing::info!(
                table,
                partition = p,
                "the changelog ends with an unfinished flush: marking it aborted"
            );
            if let Err(err) = self
                .rt
                .tables
                .abort(
                    &self.rt.producer,
                    table,
                    p,
                    sources.clone(),
                    restored.origins.clone(),
                )
                .await
            {
                tracing::error!(partition = p, %err, "writing an abort marker failed; restoring again");
                self.start_restore(p, RESTORE_RETRY);
                return;
            }
        }
        // The tables' position wins over the group's committed offset when it is ahead
        // (a flush was delivered but its commit was not).
        let mut at: HashMap<(String, i32), i64> = HashMap::new();
        let mut ask = TopicPartitionList::new();
        for (t, sp) in self.task_partitions(p) {
            if let Some(o) = restored.sources.get(&(t.clone(), sp)) {
                ask.add(&t, sp, Offset::Invalid);
                at.insert((t, sp), *o);
            }
        }
        if !ask.is_empty() {
            match self.consumer.committed(&ask, COMMITTED_TIMEOUT).await {
                Ok(committed) => {
                    for tp in committed.iter() {
                        if let (Offset::At(c), Some(o)) =
                            (tp.offset, at.get_mut(&(tp.topic.clone(), tp.partition)))
                        {
                            *o = (*o).max(c);
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(partition = p, %err, "no committed offsets; restoring again");
                    self.start_restore(p, RESTORE_RETRY);
                    return;
                }
            }
        }
        // Records forwarded again by a worker that died are recognised by their origin.
        self.rt.seed_origins(p, &restored.origins);
        let mut tpl = TopicPartitionList::new();
        for (t, sp) in self.task_partitions(p) {
            let offset = at
                .get(&(t.clone(), sp))
                .map_or(Offset::Invalid, |o| Offset::At(*o));
            tpl.add(&t, sp, offset);
        }
        if !tpl.is_empty() {
            if let Err(err) = self.consumer.incremental_assign(&tpl).await {
                tracing::error!(partition = p, %err, "assigning the task's partitions failed");
                self.rt.fail(err.into());
                return;
            }
        }
        tracing::info!(
            task = p,
            partitions = tpl.len(),
            records = restored.records,
            "task active"
        );
        if !tpl.is_empty() {
            let assigned: Vec<(String, i32)> = tpl
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect();
            self.call_hooks(true, &assigned);
        }
        self.tasks.insert(p, Task::Active);
        self.rt.on_tasks_changed(&self.active_tasks());
    }

    /// Records the readiness figures: tasks being restored, and the consumer lag of the
    /// active tasks' partitions (from local positions and the watermarks last seen by
    /// fetches: no request to the broker).
    fn measure_lag(&self) {
        let restoring = self
            .tasks
            .values()
            .filter(|t| matches!(t, Task::Restoring { .. }))
            .count();
        let mut tpl = TopicPartitionList::new();
        for p in self.active_tasks() {
            for (t, sp) in self.task_partitions(p) {
                tpl.add(&t, sp, Offset::Invalid);
            }
        }
        let mut lag: i64 = 0;
        let mut known = true;
        if let Ok(positions) = self.consumer.position(&tpl) {
            for tp in positions.iter() {
                let high = self
                    .consumer
                    .cached_watermarks(&tp.topic, tp.partition)
                    .map(|(_, h)| h)
                    .unwrap_or(-1);
                match tp.offset {
                    Offset::At(pos) if high >= 0 => lag += (high - pos).max(0),
                    // Nothing fetched yet: the lag is not known.
                    _ if high < 0 => known = false,
                    _ => {}
                }
            }
        } else {
            known = false;
        }
        self.rt
            .readiness
            .update(restoring, if known { Some(lag) } else { None });
    }

    /// The tasks this worker processes.
    fn active_tasks(&self) -> BTreeSet<i32> {
        self.tasks
            .iter()
            .filter(|(_, t)| matches!(t, Task::Active))
            .map(|(p, _)| *p)
            .collect()
    }

    fn senders(&mut self, topic: &str) -> Arc<[Route]> {
        let version = self.rt.sources.version();
        if version != self.routes_version {
            self.routes.clear();
            self.routes_version = version;
        }
        if let Some(s) = self.routes.get(topic) {
            return s.clone();
        }
        let senders: Arc<[Route]> = self.rt.sources.senders(topic).into();
        self.routes.insert(topic.to_owned(), senders.clone());
        senders
    }

    fn acks(&mut self, topic: &str, partition: i32) -> Arc<PartitionAcks> {
        if let Some(p) = &self.last {
            if p.partition == partition && &*p.topic == topic {
                return p.clone();
            }
        }
        let p = self.lookup(topic, partition);
        self.last = Some(p.clone());
        p
    }

    fn lookup(&mut self, topic: &str, partition: i32) -> Arc<PartitionAcks> {
        if let Some(p) = self.partitions.get(topic).and_then(|m| m.get(&partition)) {
            return p.clone();
        }
        let p = self.rt.partition(topic, partition);
        self.partitions
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, p.clone());
        p
    }

    /// Hands `first` and every record already fetched after it to the agents, in batches
    /// per topic; a rebalance met on the way is handled after them.
    async fn dispatch_from(&mut self, first: Message) {
        let mut records = Vec::with_capacity(BATCH_MAX);
        records.push(first);
        let mut rebalance = None;
        while records.len() < BATCH_MAX {
            match self.consumer.try_next_event() {
                Some(Ok(ConsumerEvent::Message(m))) => records.push(m),
                Some(Ok(ConsumerEvent::Rebalance(r))) => {
                    rebalance = Some(r);
                    break;
                }
                Some(Err(err)) => tracing::warn!(%err, "consumer error"),
                None => break,
            }
        }
        self.rt.monitor.on_messages_in(&records);
        let mut run: Batch = Vec::with_capacity(records.len());
        let mut records = records.into_iter().peekable();
        while let Some(first) = records.next() {
            if run
                .first()
                .is_some_and(|i| i.message.topic() != first.topic())
            {
                let batch = std::mem::take(&mut run);
                if !self.send(batch).await {
                    return;
                }
            }
            // Records of one partition come in runs: track each run under one lock.
            let acks = self.acks(first.topic(), first.partition());
            let mut same = vec![first];
            while let Some(m) = records
                .next_if(|m| m.partition() == same[0].partition() && m.topic() == same[0].topic())
            {
                same.push(m);
            }
            let offsets: Vec<i64> = same.iter().map(|m| m.offset()).collect();
            let tracked = acks.track(&offsets);
            run.extend(
                same.into_iter()
                    .enumerate()
                    .map(|(i, m)| Inbound::new(m, tracked.clone(), i)),
            );
        }
        if !run.is_empty() && !self.send(run).await {
            return;
        }
        if let Some(r) = rebalance {
            self.rebalance(r).await;
        }
    }

    /// Sends a batch of one topic to every agent reading it; `false` if stopping (then the
    /// records are discarded: not acknowledged, consumed again later).
    async fn send(&mut self, batch: Batch) -> bool {
        let Some(topic) = batch.first().map(|i| i.message.topic().to_owned()) else {
            return true;
        };
        let routes = self.senders(&topic);
        let last = routes.len().saturating_sub(1);
        let mut owned = Some(batch);
        for (i, (tx, max_batch)) in routes.iter().enumerate() {
            let all = owned.as_deref().unwrap_or_default();
            let mut items: Vec<Batch> = if all.len() <= *max_batch {
                // The last route takes the batch itself.
                let whole = if i == last {
                    owned.take().unwrap_or_default()
                } else {
                    all.to_vec()
                };
                vec![whole]
            } else {
                all.chunks(*max_batch).map(<[_]>::to_vec).collect()
            };
            let mut items = items.drain(..);
            while let Some(item) = items.next() {
                if !self.send_one(tx, item).await {
                    // Not sent to this agent: its unsent batches; and to the agents after
                    // it: everything. What was sent is processed or discarded by the agents.
                    items.for_each(|b| b.iter().for_each(|i| i.discard()));
                    if i < last {
                        if let Some(rest) = owned.take() {
                            rest.iter().for_each(|i| i.discard());
                        }
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Sends one batch to one channel, waiting for room (backpressure) unless stopping.
    async fn send_one(&self, tx: &Sender<Batch>, item: Batch) -> bool {
        let item = match tx.try_send(item) {
            Ok(()) => return true,
            Err(async_channel::TrySendError::Closed(back)) => {
                back.iter().for_each(|i| i.discard());
                return true;
            }
            Err(async_channel::TrySendError::Full(item)) => item,
        };
        let pending = item.clone();
        tokio::select! {
            biased;
            () = self.rt.stopping.cancelled() => {
                pending.iter().for_each(|i| i.discard());
                false
            }
            res = tx.send(item) => {
                if let Err(async_channel::SendError(back)) = res {
                    back.iter().for_each(|i| i.discard());
                }
                true
            }
        }
    }

    async fn rebalance(&mut self, r: Rebalance) {
        let _sensed = self.rt.monitor.rebalance_started();
        tracing::info!(kind = ?r.kind(), partitions = ?r.partitions(), lost = r.is_lost(), "rebalance");
        let tasks: Vec<i32> = r
            .partitions()
            .iter()
            .filter(|tp| tp.topic == self.tasks_topic)
            .map(|tp| tp.partition)
            .collect();
        if r.kind() == RebalanceKind::Assign {
            if let Err(err) = r.complete().await {
                tracing::error!(%err, "applying the rebalance failed");
            }
            for p in tasks {
                if !self.tasks.contains_key(&p) {
                    self.start_restore(p, Duration::ZERO);
                }
            }
            self.rt.on_tasks_changed(&self.active_tasks());
            return;
        }
        // Revoke: stop handing out the tasks' records, let the events in progress finish,
        // flush the tables and commit, then give the tasks back.
        let mut tpl = TopicPartitionList::new();
        for p in &tasks {
            match self.tasks.remove(p) {
                Some(Task::Restoring { handle, .. }) => handle.abort(),
                Some(Task::Active) => {
                    for (t, sp) in self.task_partitions(*p) {
                        tpl.add(&t, sp, Offset::Invalid);
                    }
                }
                None => {}
            }
        }
        if !tpl.is_empty() {
            if let Err(err) = self.consumer.incremental_unassign(&tpl).await {
                tracing::error!(%err, "unassigning the revoked tasks' partitions failed");
            }
        }
        self.last = None;
        let mut parts = Vec::new();
        for tp in tpl.iter() {
            let removed = self
                .partitions
                .get_mut(&tp.topic)
                .and_then(|m| m.remove(&tp.partition));
            if let Some(p) = removed {
                p.close();
                parts.push(p);
            }
        }
        self.rt.drain(&parts, REVOKE_WAIT).await;
        if r.is_lost() {
            // Another member may own them already: their pending table writes must not
            // reach the changelogs; the events that made them are consumed again there.
            for p in &tasks {
                self.rt.tables.discard(*p);
            }
        } else {
            self.rt.commit_tasks(&parts, &tasks).await;
        }
        for p in &tasks {
            self.rt.tables.forget(*p);
        }
        {
            let mut map = self.rt.partitions.lock().unwrap_or_else(|e| e.into_inner());
            let mut committed = self.rt.committed.lock().unwrap_or_else(|e| e.into_inner());
            for p in &parts {
                let key = (p.topic.clone(), p.partition);
                map.remove(&key);
                committed.remove(&key);
            }
        }
        let revoked: Vec<(String, i32)> = tpl
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition))
            .collect();
        if !revoked.is_empty() {
            self.call_hooks(false, &revoked);
        }
        if let Err(err) = r.complete().await {
            tracing::error!(%err, "applying the rebalance failed");
        }
        self.rt.on_tasks_changed(&self.active_tasks());
    }

    /// Runs the app's rebalance listeners (a panic is logged, not propagated).
    fn call_hooks(&self, assigned: bool, partitions: &[(String, i32)]) {
        let hooks = if assigned {
            &self.rt.hooks.0
        } else {
            &self.rt.hooks.1
        };
        for hook in hooks {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(partitions))).is_err()
            {
                tracing::error!(assigned, "a rebalance listener panicked");
            }
        }
    }

    /// Rewinds partitions whose processing failed to their commit point.
    async fn rewind(&mut self) {
        let failed: Vec<Arc<PartitionAcks>> = self
            .partitions
            .values()
            .flat_map(|m| m.values())
            .filter(|p| p.failed().is_some())
            .cloned()
            .collect();
        if failed.is_empty() {
            return;
        }
        self.rt.drain(&failed, REVOKE_WAIT).await;
        let mut tpl = TopicPartitionList::new();
        for p in &failed {
            if let Some(point) = p.reset() {
                tracing::warn!(topic = %p.topic, partition = p.partition, offset = point, "processing failed: consuming again from the commit point");
                tpl.add(&p.topic, p.partition, Offset::At(point));
            }
        }
        if !tpl.is_empty() {
            if let Err(err) = self.consumer.seek(&tpl) {
                tracing::error!(%err, ?tpl, "seek after a failure did not work");
            }
        }
    }
}

/// Resolves (with the receiver back) when the set of topics to consume changes; `None`
/// when the sender is gone.
fn watch_topics(
    mut rx: tokio::sync::watch::Receiver<BTreeSet<String>>,
) -> futures_util::future::BoxFuture<'static, Option<tokio::sync::watch::Receiver<BTreeSet<String>>>>
{
    Box::pin(async move { rx.changed().await.ok().map(|()| rx) })
}
