//! The conductor: the one task that owns the consumer. It subscribes to every topic an
//! agent reads, hands each record to the agents' channels (waiting when they are full:
//! backpressure), and handles rebalances and rewinds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_channel::Sender;
use rdkafka_async::{
    Consumer, ConsumerEvent, Message, Offset, Rebalance, RebalanceKind, TopicPartitionList,
};

use crate::acks::PartitionAcks;
use crate::event::Inbound;
use crate::runtime::Runtime;
use crate::sources::{Batch, Route, BATCH_MAX};
use crate::topics::TopicCreator;

/// How long a revocation waits for in-flight events of the revoked partitions.
const REVOKE_WAIT: Duration = Duration::from_secs(10);

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
    subscribed: BTreeSet<String>,
}

impl Conductor {
    pub(crate) fn new(rt: Arc<Runtime>, consumer: Consumer, creator: TopicCreator) -> Self {
        Self {
            rt,
            consumer,
            creator,
            routes: HashMap::new(),
            routes_version: u64::MAX,
            partitions: HashMap::new(),
            last: None,
            subscribed: BTreeSet::new(),
        }
    }

    /// Runs until the worker stops; gives the consumer back for the final commit and close.
    pub(crate) async fn run(mut self) -> Consumer {
        let mut topics = self.rt.sources.topics();
        let initial = topics.borrow_and_update().clone();
        self.resubscribe(initial).await;
        // The futures of the rare events are made once and re-armed only after they fire,
        // not once per record.
        let stopping = self.rt.stopping.clone();
        let signals = self.rt.signals.clone();
        let mut stopped = std::pin::pin!(stopping.cancelled());
        let mut rewind = std::pin::pin!(signals.rewind.notified());
        let mut changed = watch_topics(topics.clone());
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                watcher = &mut changed => {
                    let Some(watcher) = watcher else { break };
                    changed = watch_topics(watcher);
                    let set = topics.borrow_and_update().clone();
                    self.resubscribe(set).await;
                }
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

    async fn resubscribe(&mut self, topics: BTreeSet<String>) {
        if topics == self.subscribed || topics.is_empty() {
            return;
        }
        if let Err(err) = self.creator.ensure(topics.iter()).await {
            self.rt.fail(err);
            return;
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        match self.consumer.subscribe(&names) {
            Ok(()) => {
                tracing::info!(topics = ?names, "subscribed");
                self.subscribed = topics;
            }
            Err(err) => self.rt.fail(err.into()),
        }
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
        self.rt.monitor.on_messages_in(records.len() as u64);
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
        tracing::info!(kind = ?r.kind(), partitions = ?r.partitions(), "rebalance");
        if r.kind() == RebalanceKind::Revoke {
            self.last = None;
            let mut parts = Vec::new();
            for tp in r.partitions() {
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
            if !r.is_lost() {
                self.rt.commit(Some(&parts)).await;
            }
            let mut map = self.rt.partitions.lock().unwrap_or_else(|e| e.into_inner());
            let mut committed = self.rt.committed.lock().unwrap_or_else(|e| e.into_inner());
            for p in &parts {
                let key = (p.topic.clone(), p.partition);
                map.remove(&key);
                committed.remove(&key);
            }
        }
        if let Err(err) = r.complete() {
            tracing::error!(%err, "applying the rebalance failed");
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
