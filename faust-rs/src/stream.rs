//! Streams: the events an agent iterates over, and their operators.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use crate::app::App;
use crate::event::{Event, Inbound, Origin};
use crate::topic::Topic;

pub(crate) type BoxStream<T> = Pin<Box<dyn futures_core::Stream<Item = T> + Send + 'static>>;

/// What one agent instance's streams share: its identity, the acknowledgements it holds,
/// and the background tasks its operators started.
pub(crate) struct StreamCtx {
    pub(crate) app: App,
    pub(crate) agent: Arc<str>,
    /// How many instances of the agent run (they share its streams).
    pub(crate) instances: usize,
    /// Set when the instance failed: events it still holds are failed when dropped.
    pub(crate) failed: Arc<AtomicBool>,
    /// Origins held by streams when they were dropped: the supervisor acknowledges them if
    /// the agent ended well, and fails them if it failed.
    pub(crate) held: Mutex<Vec<Origin>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl StreamCtx {
    pub(crate) fn new(app: App, agent: Arc<str>, instances: usize) -> Arc<Self> {
        Arc::new(Self {
            app,
            agent,
            instances,
            failed: Arc::new(AtomicBool::new(false)),
            held: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn hold(&self, origin: Origin) {
        if !origin.is_none() {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(origin);
        }
    }

    pub(crate) fn take_held(&self) -> Vec<Origin> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tokio::spawn(fut));
    }
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// A stream of events with keys `K` and values `V`.
///
/// Iterate with [`Stream::next`] (values), [`Stream::next_item`] (key and value) or
/// [`Stream::next_event`] (whole [`Event`]s). An event taken with `next`/`next_item` is
/// acknowledged when the next one is asked for, as in Faust: the agent has processed it.
/// Operators ([`map`](Stream::map), [`filter`](Stream::filter),
/// [`group_by`](Stream::group_by), ...) consume the stream and return a new one.
pub struct Stream<K, V> {
    inner: BoxStream<Event<K, V>>,
    current: Origin,
    /// The table gates of the current event's partitions (see `table::tables`).
    permits: Vec<tokio::sync::OwnedRwLockReadGuard<()>>,
    pub(crate) ctx: Arc<StreamCtx>,
}

impl<K, V> fmt::Debug for Stream<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("agent", &self.ctx.agent)
            .finish()
    }
}

impl<K, V> Drop for Stream<K, V> {
    fn drop(&mut self) {
        self.ctx.hold(std::mem::take(&mut self.current));
    }
}

impl<K: Send + 'static, V: Send + 'static> Stream<K, V> {
    pub(crate) fn new(inner: BoxStream<Event<K, V>>, ctx: Arc<StreamCtx>) -> Self {
        Self {
            inner,
            current: Origin::default(),
            permits: Vec::new(),
            ctx,
        }
    }

    /// The events of `topic` as delivered on `rx`, decoded; undecodable records follow the
    /// app's policy.
    pub(crate) fn from_channel(
        rx: async_channel::Receiver<crate::sources::Batch>,
        topic: Topic<K, V>,
        ctx: Arc<StreamCtx>,
    ) -> Self
    where
        K: Sync,
        V: Sync,
    {
        let failed = ctx.failed.clone();
        let counters = topic
            .app
            .runtime()
            .ok()
            .map(|rt| rt.monitor.stream_counters(&ctx.agent, topic.name()));
        let batch = Pending::default();
        let inner = stream::unfold(
            (rx, batch, topic, counters, failed),
            |(rx, mut batch, topic, counters, failed)| async move {
                loop {
                    let inbound = match batch.0.next() {
                        Some(i) => i,
                        None => {
                            batch = Pending(rx.recv().await.ok()?.into_iter());
                            continue;
                        }
                    };
                    if inbound.is_stale() {
                        inbound.discard();
                        continue;
                    }
                    match topic.decode(&inbound.message) {
                        Ok((key, value)) => {
                            if let Some(c) = &counters {
                                c.on_event(&inbound.message);
                            }
                            let origin = Origin::one(inbound, failed.clone());
                            return Some((
                                Event::new(key, value, origin),
                                (rx, batch, topic, counters, failed),
                            ));
                        }
                        Err(err) => {
                            let Ok(rt) = topic.app.runtime() else {
                                return None;
                            };
                            if !rt.bad_record(inbound, &err).await {
                                return None;
                            }
                        }
                    }
                }
            },
        );
        Self::new(Box::pin(inner), ctx)
    }

    fn take_inner(mut self) -> (BoxStream<Event<K, V>>, Arc<StreamCtx>) {
        let ctx = self.ctx.clone();
        let inner = std::mem::replace(&mut self.inner, Box::pin(stream::empty()));
        (inner, ctx)
    }

    fn rewrap<K2: Send + 'static, V2: Send + 'static>(
        self,
        f: impl FnOnce(BoxStream<Event<K, V>>) -> BoxStream<Event<K2, V2>>,
    ) -> Stream<K2, V2> {
        let (inner, ctx) = self.take_inner();
        Stream::new(f(inner), ctx)
    }

    /// The next value; the previous event is acknowledged. `None` when the stream ends
    /// (the worker is stopping).
    ///
    /// Cancel safety: cancel safe.
    pub async fn next(&mut self) -> Option<V> {
        self.next_item().await.map(|(_, v)| v)
    }

    /// The next key and value; the previous event is acknowledged.
    ///
    /// Cancel safety: cancel safe.
    pub async fn next_item(&mut self) -> Option<(Option<K>, V)> {
        loop {
            self.release();
            let event = self.inner.next().await?;
            let (key, value, ack) = event.into_parts();
            self.current = ack.0;
            self.enter().await;
            if !self.forwarded_again() {
                return Some((key, value));
            }
        }
    }

    /// Whether the current event is a record forwarded a second time (its forwarder died
    /// before committing its source): then it is acknowledged and skipped. Checked inside
    /// the partition's gate, so a table flush sees either the event done or not admitted.
    fn forwarded_again(&self) -> bool {
        let Some(inbound) = self.current.single() else {
            return false;
        };
        let Some((t, p, o)) = origin_of(&inbound.message) else {
            return false;
        };
        let again = !inbound.acks().admit(&self.ctx.agent, &t, p, o);
        if again {
            tracing::debug!(origin_topic = %t, origin_partition = p, origin_offset = o, "skipping a record forwarded again");
        }
        again
    }

    /// Acknowledges the current event, then leaves its partitions.
    fn release(&mut self) {
        if let (false, Ok(rt)) = (self.current.is_none(), self.ctx.app.runtime()) {
            rt.monitor
                .on_stream_event_out(&self.ctx.agent, &self.current);
        }
        self.current = Origin::default();
        self.permits.clear();
        crate::current::set_partition(None);
    }

    /// Enters the current event's partitions: table writes go to its partition, and a
    /// table flush waits until the agent is done with it.
    async fn enter(&mut self) {
        let Some(first) = self.current.first() else {
            return;
        };
        crate::current::set_partition(Some(first.message.partition()));
        let Ok(rt) = self.ctx.app.runtime() else {
            return;
        };
        if rt.tables.is_empty() {
            return;
        }
        let mut partitions = Vec::with_capacity(1);
        self.current
            .for_each(|i| partitions.push(i.message.partition()));
        partitions.sort_unstable();
        partitions.dedup();
        for p in partitions {
            if let Some(permit) = rt.tables.enter(p).await {
                self.permits.push(permit);
            }
        }
    }

    /// The next whole event. It is acknowledged when it was dropped *and* the stream was
    /// asked for the next one (or ended well): an agent that fails while holding it, or
    /// right after dropping it, gets it again.
    ///
    /// Cancel safety: cancel safe.
    pub async fn next_event(&mut self) -> Option<Event<K, V>> {
        loop {
            self.release();
            let event = self.inner.next().await?;
            self.current = event.origin.clone();
            self.enter().await;
            if !self.forwarded_again() {
                return Some(event);
            }
        }
    }

    /// Transforms values.
    pub fn map<U: Send + 'static>(self, f: impl Fn(V) -> U + Send + 'static) -> Stream<K, U> {
        self.rewrap(|s| Box::pin(s.map(move |e| e.map(&f))))
    }

    /// Transforms values asynchronously, one at a time.
    pub fn then<U, Fut>(self, f: impl Fn(V) -> Fut + Send + Sync + 'static) -> Stream<K, U>
    where
        U: Send + 'static,
        Fut: std::future::Future<Output = U> + Send + 'static,
    {
        let f = Arc::new(f);
        self.rewrap(|s| {
            Box::pin(s.then(move |e| {
                let f = f.clone();
                async move {
                    let Event { key, value, origin } = e;
                    Event::new(key, f(value).await, origin)
                }
            }))
        })
    }

    /// Keeps the events whose value passes `f`; the others are acknowledged at once.
    pub fn filter(self, f: impl Fn(&V) -> bool + Send + 'static) -> Stream<K, V> {
        self.rewrap(|s| Box::pin(s.filter(move |e| std::future::ready(f(&e.value)))))
    }

    /// Turns each value into any number of values (each acknowledged with its source).
    pub fn flat_map<U, I>(self, f: impl Fn(V) -> I + Send + 'static) -> Stream<K, U>
    where
        K: Clone,
        U: Send + 'static,
        I: IntoIterator<Item = U>,
        I::IntoIter: Send + 'static,
    {
        self.rewrap(|s| {
            Box::pin(s.flat_map(move |e| {
                let Event { key, value, origin } = e;
                stream::iter(
                    f(value)
                        .into_iter()
                        .map(move |u| Event::new(key.clone(), u, origin.clone())),
                )
            }))
        })
    }

    /// Numbers the values from 0.
    pub fn enumerate(self) -> Stream<K, (usize, V)> {
        self.rewrap(|s| Box::pin(s.enumerate().map(|(i, e)| e.map(|v| (i, v)))))
    }

    /// Batches: up to `n` values, or fewer if `within` passed since the batch's first
    /// value. The batch is acknowledged as a whole.
    pub fn take(self, n: usize, within: Duration) -> Stream<K, Vec<V>> {
        self.rewrap(|s| {
            Box::pin(Take {
                inner: s,
                n: n.max(1),
                within,
                buf: Vec::new(),
                deadline: None,
                done: false,
            })
        })
    }

    /// Sends every event to `topic` too, and yields it; each event is acknowledged only
    /// after its copies were delivered.
    pub fn echo(self, topics: &[&Topic<K, V>]) -> Stream<K, V>
    where
        K: Sync,
        V: Sync,
    {
        let topics: Arc<[Topic<K, V>]> = topics.iter().map(|t| (*t).clone()).collect();
        self.rewrap(|s| {
            Box::pin(s.then(move |e| {
                let topics = topics.clone();
                async move {
                    for t in topics.iter() {
                        forward(t, e.key.as_ref(), &e.value, &e.origin, false).await;
                    }
                    e
                }
            }))
        })
    }

    /// Sends every event to `topic` and continues with the events read back from it
    /// (on whichever worker owns their partition).
    pub fn through(self, topic: &Topic<K, V>) -> Stream<K, V>
    where
        K: Sync,
        V: Sync,
    {
        let ctx = self.ctx.clone();
        let out = topic.clone();
        let tag = ctx.instances == 1;
        let (mut inner, _) = self.take_inner();
        ctx.spawn(async move {
            while let Some(e) = inner.next().await {
                let started = std::time::Instant::now();
                forward(&out, e.key.as_ref(), &e.value, &e.origin, tag).await;
                if let Ok(rt) = out.app.runtime() {
                    rt.monitor.on_through(started.elapsed());
                }
            }
        });
        subscribe(topic, ctx)
    }

    /// Repartitions by a new key: every event is sent to the internal topic
    /// `<app id>-<name>-repartition` keyed by `key(&value)`, and the stream continues with
    /// the events read back from it, so each key's events reach the worker that owns it,
    /// in order.
    pub fn group_by<K2>(self, key: impl Fn(&V) -> K2 + Send + 'static, name: &str) -> Stream<K2, V>
    where
        K2: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Sync,
    {
        let ctx = self.ctx.clone();
        let app = ctx.app.clone();
        let topic_name = app.internal_topic(&format!("{name}-repartition"));
        let topic: Topic<K2, V> = Topic::json(app, &topic_name);
        let out = topic.clone();
        let tag = ctx.instances == 1;
        let (mut inner, _) = self.take_inner();
        ctx.spawn(async move {
            while let Some(e) = inner.next().await {
                let started = std::time::Instant::now();
                let k = key(&e.value);
                forward(&out, Some(&k), &e.value, &e.origin, tag).await;
                if let Ok(rt) = out.app.runtime() {
                    rt.monitor.on_group_by(started.elapsed());
                }
            }
        });
        subscribe(&topic, ctx)
    }
}

/// The records of a batch an instance took and has not turned into events yet. They are
/// this instance's alone: if it goes away first (it failed, or ended, or the stream ended
/// on a bad record), they are failed, not acknowledged, so they are consumed again (the
/// partition is rewound to its commit point).
#[derive(Default)]
struct Pending(std::vec::IntoIter<Arc<Inbound>>);

impl Drop for Pending {
    fn drop(&mut self) {
        for inbound in self.0.by_ref() {
            inbound.fail();
        }
    }
}

/// The stream of `topic` for this agent (shared by its concurrent instances).
fn subscribe<K2, V2>(topic: &Topic<K2, V2>, ctx: Arc<StreamCtx>) -> Stream<K2, V2>
where
    K2: Send + Sync + 'static,
    V2: Send + Sync + 'static,
{
    match topic.app.runtime() {
        Ok(rt) => {
            let rx = rt.sources.receiver(
                &ctx.agent,
                topic.name(),
                rt.settings.stream_buffer,
                ctx.instances,
            );
            Stream::from_channel(rx, topic.clone(), ctx)
        }
        Err(err) => {
            tracing::error!(%err, "stream operator used outside a running worker");
            Stream::new(Box::pin(stream::empty()), ctx)
        }
    }
}

/// The header of forwarded records: `<topic>/<partition>/<offset>` of their source record.
pub(crate) const ORIGIN_HEADER: &str = "faust-origin";

/// The origin of a forwarded record (topic names cannot contain `/`).
fn origin_of(m: &rdkafka_async::Message) -> Option<(String, i32, i64)> {
    let raw = m.headers().last(ORIGIN_HEADER)??;
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = text.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?.to_owned();
    Some((topic, partition, offset))
}

/// Sends a copy of an event to `topic`; `origin` is acknowledged only after delivery (a
/// failed delivery fails it: the record is consumed again). With `tag`, the copy carries
/// its source record's position (`ORIGIN_HEADER`): only for forwards that keep the source
/// order (one agent instance), since the reader skips any origin at or below the highest it
/// has seen.
pub(crate) async fn forward<K2, V2>(
    topic: &Topic<K2, V2>,
    key: Option<&K2>,
    value: &V2,
    origin: &Origin,
    tag: bool,
) where
    K2: Send + Sync + 'static,
    V2: Send + Sync + 'static,
{
    // The record carries its origin, so that the reader can skip it if it is forwarded
    // again (see `origin_of`).
    let mut options = crate::topic::SendOptions::default();
    if let Some(o) = origin.single().filter(|_| tag) {
        let m = &o.message;
        options = options.header(
            ORIGIN_HEADER,
            format!("{}/{}/{}", m.topic(), m.partition(), m.offset()),
        );
    }
    match topic.enqueue(key, value, &options).await {
        Ok(delivery) => {
            let origin = origin.clone();
            let name = topic.name.clone();
            tokio::spawn(async move {
                if let Err(err) = delivery.await {
                    tracing::error!(topic = %name, %err, "delivery failed; the source record will be consumed again");
                    origin.fail();
                }
            });
        }
        Err(err) => {
            tracing::error!(topic = %topic.name, %err, "could not send; the source record will be consumed again");
            origin.fail();
        }
    }
}

/// The `take(n, within)` operator.
struct Take<K, V> {
    inner: BoxStream<Event<K, V>>,
    n: usize,
    within: Duration,
    buf: Vec<Event<K, V>>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
}

// No field is structurally pinned (the inner stream and the timer are boxed).
impl<K, V> Unpin for Take<K, V> {}

impl<K, V> Take<K, V> {
    fn flush(&mut self) -> Option<Event<K, Vec<V>>> {
        self.deadline = None;
        if self.buf.is_empty() {
            return None;
        }
        let mut values = Vec::with_capacity(self.buf.len());
        let mut origins = Vec::with_capacity(self.buf.len());
        for e in self.buf.drain(..) {
            values.push(e.value);
            origins.push(e.origin);
        }
        Some(Event::new(None, values, Origin::merge(origins)))
    }
}

impl<K: Send, V: Send> futures_core::Stream for Take<K, V> {
    type Item = Event<K, Vec<V>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.flush());
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(e)) => {
                    if this.buf.is_empty() {
                        this.deadline = Some(Box::pin(tokio::time::sleep(this.within)));
                    }
                    this.buf.push(e);
                    if this.buf.len() >= this.n {
                        return Poll::Ready(this.flush());
                    }
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending => {
                    if let Some(d) = this.deadline.as_mut() {
                        if d.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(this.flush());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

use std::future::Future as _;
