//! Recovery and standby replicas: the task that reads changelogs into the store.
//!
//! It owns one consumer (assigned partitions, no group membership) and reads:
//! - the changelog partitions of a partition being *restored* (it was just assigned to this
//!   worker): from the stored checkpoint to the high watermark, before any of its events
//!   are processed;
//! - the changelog partitions this worker keeps *standby* copies of, continuously;
//! - every partition of *global* tables, continuously.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka_async::{Consumer, ConsumerEvent, Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::changelog::{classify, Entry};
use super::restore::Applier;
use super::store::{Store, WriteBatch};
use super::TableCore;
use crate::error::{Error, Result};
use crate::sensor::Monitor;

type SharedMonitor = Arc<Monitor>;

const WATERMARK_TIMEOUT: Duration = Duration::from_secs(30);
const BATCH: usize = 10_000;

/// What a restore found.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    /// Source offsets the restored tables correspond to (from their last commit markers).
    pub(crate) sources: BTreeMap<(String, i32), i64>,
    /// Tables whose changelog ends with records of an unfinished flush: the new owner
    /// writes an abort marker after them.
    pub(crate) unfinished: Vec<String>,
    /// Records applied.
    pub(crate) records: u64,
    /// The origin marks of the last commit markers (the lowest per key if tables differ).
    pub(crate) origins: Vec<super::changelog::OriginMark>,
}

enum Command {
    Restore(i32, oneshot::Sender<Result<Restored>>),
    Standby(BTreeSet<i32>),
    Globals(oneshot::Sender<Result<()>>),
    Stop(oneshot::Sender<()>),
}

/// The handle of the recovery task.
#[derive(Clone, Debug)]
pub(crate) struct Recovery {
    tx: mpsc::UnboundedSender<Command>,
}

impl Recovery {
    /// Starts the task; it ends when every handle is gone.
    pub(crate) fn start(
        consumer: Consumer,
        store: Store,
        cores: Vec<Arc<dyn TableCore>>,
        monitor: SharedMonitor,
        stop_on_bad_records: bool,
        on_fatal: Box<dyn Fn(Error) + Send>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = Reader {
            consumer,
            store,
            cores,
            monitor,
            readings: HashMap::new(),
            restores: HashMap::new(),
            globals: Vec::new(),
            standby: BTreeSet::new(),
            progress: Progress::default(),
            stop_on_bad_records,
            fatal: None,
            on_fatal,
        };
        tokio::spawn(reader.run(rx));
        Self { tx }
    }

    /// Restores every partitioned table's partition `p` to the end of its changelog.
    ///
    /// Cancel safety: cancel safe (the restore goes on; its result is dropped).
    pub(crate) async fn restore(&self, p: i32) -> Result<Restored> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Restore(p, tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Keeps standby copies of exactly these partitions.
    pub(crate) fn standby(&self, partitions: BTreeSet<i32>) {
        let _ = self.send(Command::Standby(partitions));
    }

    /// Reads every global table to the end of its changelog, then keeps reading.
    ///
    /// Cancel safety: cancel safe.
    pub(crate) async fn globals(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Globals(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Stops reading and closes the consumer.
    ///
    /// Cancel safety: cancel safe (the task stops anyway).
    pub(crate) async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, c: Command) -> Result<()> {
        self.tx.send(c).map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::Lifecycle("the recovery task stopped".into())
}

/// Merges origin marks, keeping the lowest offset per key (what every table has applied).
fn merge_origins(
    into: &mut Vec<super::changelog::OriginMark>,
    more: &[super::changelog::OriginMark],
) {
    for m in more {
        match into
            .iter_mut()
            .find(|x| (&x.0, &x.1, &x.2, x.3) == (&m.0, &m.1, &m.2, m.3))
        {
            Some(x) => x.4 = x.4.min(m.4),
            None => into.push(m.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Until `target` (the high watermark when the restore began).
    Restoring(i64),
    Standby,
    Global(Option<i64>),
}

struct Reading {
    table: Arc<dyn TableCore>,
    partition: i32,
    applier: Applier,
    role: Role,
    /// The next offset expected.
    position: i64,
}

struct PendingRestore {
    tables: BTreeSet<String>,
    reply: oneshot::Sender<Result<Restored>>,
    result: Restored,
}

#[derive(Default)]
struct Progress {
    last: Option<Instant>,
}

struct Reader {
    consumer: Consumer,
    store: Store,
    cores: Vec<Arc<dyn TableCore>>,
    monitor: SharedMonitor,
    /// (changelog topic, partition) -> what is being read.
    readings: HashMap<(String, i32), Reading>,
    restores: HashMap<i32, PendingRestore>,
    globals: Vec<oneshot::Sender<Result<()>>>,
    standby: BTreeSet<i32>,
    progress: Progress,
    /// The decode error policy is `Stop`.
    stop_on_bad_records: bool,
    /// Set when a bad record stopped the reader (the worker stops).
    fatal: Option<Error>,
    on_fatal: Box<dyn Fn(Error) + Send>,
}

impl Reader {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut stopped = None;
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Stop(reply)) => {
                        stopped = Some(reply);
                        break;
                    }
                    Some(c) => self.command(c).await,
                    None => break,
                },
                ev = self.consumer.next_event(), if !self.readings.is_empty() && self.fatal.is_none() => match ev {
                    Ok(ConsumerEvent::Message(m)) => {
                        self.batch(m).await;
                        if let Some(err) = self.fatal.take() {
                            (self.on_fatal)(err);
                            self.readings.clear();
                        }
                    }
                    Ok(ConsumerEvent::Rebalance(r)) => { let _ = r.complete().await; }
                    Err(err) => tracing::warn!(%err, "changelog reader"),
                },
            }
        }
        if let Err(err) = self.consumer.close_within(Duration::from_secs(5)).await {
            tracing::debug!(%err, "closing the changelog reader");
        }
        if let Some(reply) = stopped {
            let _ = reply.send(());
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Restore(p, reply) => {
                if let Err(err) = self.begin_restore(p, reply).await {
                    tracing::error!(%err, partition = p, "restore failed");
                }
            }
            Command::Standby(set) => {
                if let Err(err) = self.set_standby(set).await {
                    tracing::error!(%err, "standby replicas");
                }
            }
            Command::Stop(_) => {}
            Command::Globals(reply) => {
                if let Err(err) = self.begin_globals(reply).await {
                    tracing::error!(%err, "global tables");
                }
            }
        }
    }

    /// Starts reading `(table, p)` from its checkpoint; `None` if it is already at `high`.
    async fn open(&mut self, table: &Arc<dyn TableCore>, p: i32, role: Role) -> Result<i64> {
        let topic = table.changelog().to_owned();
        let (low, high) = self
            .consumer
            .fetch_watermarks(&topic, p, WATERMARK_TIMEOUT)
            .await?;
        let key = (topic.clone(), p);
        if let Some(r) = self.readings.get_mut(&key) {
            // Already read (a standby becoming active): go on from where it is.
            r.role = match role {
                Role::Restoring(_) => Role::Restoring(high),
                other => other,
            };
            return Ok(high);
        }
        let stored = self.store.checkpoint(table.name(), p)?;
        let mut start = stored.as_ref().map_or(0, |c| c.changelog);
        let mut applier = Applier::new(stored.as_ref());
        if start > high {
            tracing::warn!(
                table = table.name(),
                partition = p,
                checkpoint = start,
                high,
                "the stored table is ahead of its changelog (a different cluster?): rebuilding it"
            );
            self.store.clear(table.name(), p)?;
            start = 0;
            applier = Applier::new(None);
        }
        if start < low {
            tracing::warn!(
                table = table.name(),
                partition = p,
                checkpoint = start,
                low,
                "changelog records were deleted before being applied"
            );
        }
        let role = match role {
            Role::Restoring(_) => Role::Restoring(high),
            Role::Global(_) => Role::Global(Some(high)),
            other => other,
        };
        let done = start >= high && role != Role::Standby;
        if !done || role != Role::Restoring(high) {
            let mut tpl = TopicPartitionList::new();
            tpl.add(&topic, p, Offset::At(start));
            self.consumer.incremental_assign(&tpl).await?;
            self.readings.insert(
                key,
                Reading {
                    table: table.clone(),
                    partition: p,
                    applier,
                    role,
                    position: start,
                },
            );
        }
        tracing::debug!(
            table = table.name(),
            partition = p,
            from = start,
            to = high,
            ?role,
            "reading changelog"
        );
        Ok(high)
    }

    async fn begin_restore(
        &mut self,
        p: i32,
        reply: oneshot::Sender<Result<Restored>>,
    ) -> Result<()> {
        let tables: Vec<Arc<dyn TableCore>> = self
            .cores
            .iter()
            .filter(|c| !c.is_global())
            .cloned()
            .collect();
        let mut pending = PendingRestore {
            tables: BTreeSet::new(),
            reply,
            result: Restored::default(),
        };
        for t in &tables {
            let opened = self.open(t, p, Role::Restoring(0)).await;
            match opened {
                Ok(_) => {
                    let key = (t.changelog().to_owned(), p);
                    if self.readings.contains_key(&key) {
                        pending.tables.insert(t.changelog().to_owned());
                    }
                }
                Err(err) => {
                    let _ = pending.reply.send(Err(err));
                    return Ok(());
                }
            }
        }
        self.restores.insert(p, pending);
        // Those already at their end are done now.
        let keys: Vec<(String, i32)> = tables
            .iter()
            .map(|t| (t.changelog().to_owned(), p))
            .collect();
        for k in keys {
            self.check_done(&k).await;
        }
        self.finish_restore_if_done(p).await;
        Ok(())
    }

    async fn begin_globals(&mut self, reply: oneshot::Sender<Result<()>>) -> Result<()> {
        let globals: Vec<Arc<dyn TableCore>> = self
            .cores
            .iter()
            .filter(|c| c.is_global())
            .cloned()
            .collect();
        for t in &globals {
            for p in 0..t.partitions() {
                if let Err(err) = self.open(t, p, Role::Global(None)).await {
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
            }
        }
        self.globals.push(reply);
        let keys: Vec<(String, i32)> = self.readings.keys().cloned().collect();
        for k in keys {
            self.check_done(&k).await;
        }
        self.finish_globals_if_done();
        Ok(())
    }

    async fn set_standby(&mut self, set: BTreeSet<i32>) -> Result<()> {
        let gone: Vec<i32> = self.standby.difference(&set).copied().collect();
        let new: Vec<i32> = set.difference(&self.standby).copied().collect();
        self.standby = set;
        let mut tpl = TopicPartitionList::new();
        for p in gone {
            let keys: Vec<(String, i32)> = self
                .readings
                .iter()
                .filter(|(_, r)| r.partition == p && r.role == Role::Standby)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                self.write_ready(&k).await;
                self.readings.remove(&k);
                tpl.add(&k.0, k.1, Offset::Invalid);
            }
        }
        if !tpl.is_empty() {
            self.consumer.incremental_unassign(&tpl).await?;
        }
        let tables: Vec<Arc<dyn TableCore>> = self
            .cores
            .iter()
            .filter(|c| !c.is_global())
            .cloned()
            .collect();
        for p in new {
            for t in &tables {
                if !self.readings.contains_key(&(t.changelog().to_owned(), p)) {
                    self.open(t, p, Role::Standby).await?;
                }
            }
        }
        tracing::info!(standby = ?self.standby, "standby partitions");
        Ok(())
    }

    /// Takes `first` and the messages already fetched after it, and applies them.
    async fn batch(&mut self, first: Message) {
        let mut messages = vec![first];
        while messages.len() < BATCH {
            match self.consumer.try_next_event() {
                Some(Ok(ConsumerEvent::Message(m))) => messages.push(m),
                Some(Ok(ConsumerEvent::Rebalance(r))) => {
                    let _ = r.complete().await;
                }
                Some(Err(err)) => tracing::warn!(%err, "changelog reader"),
                None => break,
            }
        }
        let mut touched: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut fatal = None;
        for m in &messages {
            let key = (m.topic().to_owned(), m.partition());
            let Some(r) = self.readings.get_mut(&key) else {
                continue;
            };
            if m.offset() < r.position {
                continue;
            }
            r.position = m.offset() + 1;
            let global = matches!(r.role, Role::Global(_));
            let entry = classify(m).and_then(|entry| match &entry {
                Entry::Data(k, v) => r
                    .table
                    .check(k, v.as_deref())
                    .map(|()| entry)
                    .map_err(|e| format!("{e}")),
                _ => Ok(entry),
            });
            match entry {
                Ok(Entry::Data(k, v)) if global => {
                    r.applier.push(m.offset(), Entry::Data(k, v));
                    r.applier.force(m.offset());
                }
                Ok(entry) => r.applier.push(m.offset(), entry),
                Err(reason) => {
                    self.monitor.on_decode_error();
                    if self.stop_on_bad_records {
                        tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "a changelog record does not decode: stopping (decode error policy)");
                        fatal = Some(Error::BadRecord {
                            topic: m.topic().to_owned(),
                            partition: m.partition(),
                            offset: m.offset(),
                            reason,
                        });
                        break;
                    }
                    tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "skipping a changelog record that does not decode");
                    r.applier.skip(m.offset());
                }
            }
            touched.insert(key);
        }
        let batches: Vec<WriteBatch> = touched
            .iter()
            .filter_map(|k| {
                let r = self.readings.get_mut(k)?;
                let (changes, checkpoint) = r.applier.take_ready()?;
                Some(WriteBatch {
                    table: Arc::from(r.table.name()),
                    partition: r.partition,
                    changes,
                    checkpoint: Some(checkpoint),
                })
            })
            .collect();
        let applied: usize = batches.iter().map(|b| b.changes.len()).sum();
        if let Some(err) = fatal {
            // Nothing more is applied; the restores waiting fail with the error.
            let message = err.to_string();
            for (_, pending) in self.restores.drain() {
                let _ = pending.reply.send(Err(Error::Lifecycle(message.clone())));
            }
            for reply in self.globals.drain(..) {
                let _ = reply.send(Err(Error::Lifecycle(message.clone())));
            }
            self.fatal = Some(err);
            return;
        }
        if let Err(err) = self.store.write_async(batches).await {
            tracing::error!(%err, "writing changelog records to the store failed");
            return;
        }
        self.monitor.on_recovered(applied as u64);
        for k in &touched {
            self.check_done(k).await;
        }
        self.report();
    }

    async fn write_ready(&mut self, key: &(String, i32)) {
        let Some(r) = self.readings.get_mut(key) else {
            return;
        };
        if let Some((changes, checkpoint)) = r.applier.take_ready() {
            let batch = WriteBatch {
                table: Arc::from(r.table.name()),
                partition: r.partition,
                changes,
                checkpoint: Some(checkpoint),
            };
            if let Err(err) = self.store.write_async(vec![batch]).await {
                tracing::error!(%err, "writing changelog records to the store failed");
            }
        }
    }

    /// Ends the restore or initial read of `key` if it reached its target.
    async fn check_done(&mut self, key: &(String, i32)) {
        let Some(r) = self.readings.get(key) else {
            return;
        };
        match r.role {
            Role::Restoring(target) if r.position >= target => {
                let p = r.partition;
                let mut r = self.readings.remove(key).expect("present");
                let mut tpl = TopicPartitionList::new();
                tpl.add(&key.0, key.1, Offset::Invalid);
                if let Err(err) = self.consumer.incremental_unassign(&tpl).await {
                    tracing::warn!(%err, "unassigning a restored changelog");
                }
                if let Some(pending) = self.restores.get_mut(&p) {
                    pending.tables.remove(&key.0);
                    if r.applier.held() > 0 {
                        r.applier.drop_held();
                        pending.result.unfinished.push(r.table.name().to_owned());
                    }
                    pending.result.records += r.applier.applied;
                    for (t, sp, o) in &r.applier.sources {
                        pending
                            .result
                            .sources
                            .entry((t.clone(), *sp))
                            .and_modify(|x| *x = (*x).min(*o))
                            .or_insert(*o);
                    }
                    merge_origins(&mut pending.result.origins, &r.applier.origins);
                }
                self.finish_restore_if_done(p).await;
            }
            Role::Global(Some(target)) if r.position >= target => {
                if let Some(r) = self.readings.get_mut(key) {
                    r.role = Role::Global(None);
                }
                self.finish_globals_if_done();
            }
            _ => {}
        }
    }

    async fn finish_restore_if_done(&mut self, p: i32) {
        if self.restores.get(&p).is_some_and(|r| r.tables.is_empty()) {
            let mut pending = self.restores.remove(&p).expect("present");
            // Tables already at their end (nothing read) still have a stored position.
            for t in self.cores.iter().filter(|c| !c.is_global()) {
                match self.store.checkpoint(t.name(), p) {
                    Ok(Some(cp)) => {
                        for (topic, sp, o) in cp.sources {
                            pending.result.sources.entry((topic, sp)).or_insert(o);
                        }
                        if pending.result.origins.is_empty() {
                            pending.result.origins = cp.origins;
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        let _ = pending.reply.send(Err(err));
                        return;
                    }
                }
            }
            tracing::info!(
                partition = p,
                records = pending.result.records,
                "partition restored"
            );
            let _ = pending.reply.send(Ok(pending.result));
        }
    }

    fn finish_globals_if_done(&mut self) {
        let waiting = self
            .readings
            .values()
            .any(|r| matches!(r.role, Role::Global(Some(_))));
        if !waiting {
            for reply in self.globals.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Logs progress every few seconds (and draws a line on a terminal).
    fn report(&mut self) {
        let now = Instant::now();
        if self
            .progress
            .last
            .is_some_and(|t| now - t < Duration::from_secs(2))
        {
            return;
        }
        self.progress.last = Some(now);
        let restoring: Vec<String> = self
            .readings
            .values()
            .filter_map(|r| match r.role {
                Role::Restoring(target) | Role::Global(Some(target)) => Some(format!(
                    "{}[{}] {}/{}",
                    r.table.name(),
                    r.partition,
                    r.position,
                    target
                )),
                _ => None,
            })
            .collect();
        if restoring.is_empty() {
            return;
        }
        tracing::info!(partitions = ?restoring, "recovering tables");
        if std::io::stderr().is_terminal() {
            eprint!("\rrecovering: {}\x1b[K", restoring.join(", "));
        }
    }
}
