//! Agents: async functions over streams, run concurrently and supervised.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::error::{AgentResult, Result};
use crate::stream::{forward, Stream, StreamCtx};
use crate::topic::Topic;

type ProcessFn<K, V> = Arc<dyn Fn(Stream<K, V>) -> BoxFuture<'static, AgentResult> + Send + Sync>;
type TransformFn<K, V, K2, O> = Arc<dyn Fn(Stream<K, V>) -> Stream<K2, O> + Send + Sync>;
type SinkFn<K2, O> = Arc<dyn Fn(Option<K2>, O) -> BoxFuture<'static, ()> + Send + Sync>;

enum Body<K, V, K2, O> {
    Process(ProcessFn<K, V>),
    Transform(TransformFn<K, V, K2, O>),
}

enum Sink<K2, O> {
    Topic(Topic<K2, O>),
    Fn(SinkFn<K2, O>),
}

impl<K2, O> Clone for Sink<K2, O> {
    fn clone(&self) -> Self {
        match self {
            Self::Topic(t) => Self::Topic(t.clone()),
            Self::Fn(f) => Self::Fn(f.clone()),
        }
    }
}

/// A registered agent, type-erased for the worker.
pub(crate) trait AgentRun: Send + Sync {
    fn name(&self) -> &str;
    fn topic(&self) -> &str;
    fn concurrency(&self) -> usize;
    fn sinks(&self) -> Vec<String>;
    /// One run of one instance: builds its stream and runs the agent's body.
    fn run(&self, ctx: Arc<StreamCtx>) -> BoxFuture<'static, AgentResult>;
}

pub(crate) struct AgentDef<K, V, K2, O> {
    name: Arc<str>,
    topic: Topic<K, V>,
    concurrency: AtomicUsize,
    body: Body<K, V, K2, O>,
    sinks: Mutex<Vec<Sink<K2, O>>>,
}

impl<K, V> AgentDef<K, V, (), ()>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub(crate) fn processor<F, Fut>(name: &str, topic: Topic<K, V>, f: F) -> Arc<Self>
    where
        F: Fn(Stream<K, V>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AgentResult> + Send + 'static,
    {
        Arc::new(Self {
            name: name.into(),
            topic,
            concurrency: AtomicUsize::new(1),
            body: Body::Process(Arc::new(move |s| Box::pin(f(s)))),
            sinks: Mutex::new(Vec::new()),
        })
    }
}

impl<K, V, K2, O> AgentDef<K, V, K2, O>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    K2: Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    pub(crate) fn transformer<F>(name: &str, topic: Topic<K, V>, f: F) -> Arc<Self>
    where
        F: Fn(Stream<K, V>) -> Stream<K2, O> + Send + Sync + 'static,
    {
        Arc::new(Self {
            name: name.into(),
            topic,
            concurrency: AtomicUsize::new(1),
            body: Body::Transform(Arc::new(f)),
            sinks: Mutex::new(Vec::new()),
        })
    }

    fn sinks_snapshot(&self) -> Vec<Sink<K2, O>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<K, V, K2, O> AgentRun for AgentDef<K, V, K2, O>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    K2: Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn topic(&self) -> &str {
        self.topic.name()
    }

    fn concurrency(&self) -> usize {
        self.concurrency.load(Ordering::Acquire)
    }

    fn sinks(&self) -> Vec<String> {
        self.sinks_snapshot()
            .iter()
            .map(|s| match s {
                Sink::Topic(t) => format!("topic:{}", t.name()),
                Sink::Fn(_) => "fn".to_owned(),
            })
            .collect()
    }

    fn run(&self, ctx: Arc<StreamCtx>) -> BoxFuture<'static, AgentResult> {
        let rt = match self.topic.app.runtime() {
            Ok(rt) => rt.clone(),
            Err(err) => return Box::pin(async move { Err(err.into()) }),
        };
        let rx = rt.sources.receiver(
            &self.name,
            self.topic.name(),
            rt.settings.stream_buffer,
            self.concurrency(),
        );
        let stream = Stream::from_channel(rx, self.topic.clone(), ctx);
        match &self.body {
            Body::Process(f) => f(stream),
            Body::Transform(f) => {
                let mut out = f(stream);
                let sinks = self.sinks_snapshot();
                Box::pin(async move {
                    while let Some(event) = out.next_event().await {
                        for sink in &sinks {
                            match sink {
                                Sink::Topic(t) => {
                                    forward(
                                        t,
                                        event.key.as_ref(),
                                        &event.value,
                                        &event.origin,
                                        false,
                                    )
                                    .await
                                }
                                Sink::Fn(f) => f(event.key.clone(), event.value.clone()).await,
                            }
                        }
                    }
                    Ok(())
                })
            }
        }
    }
}

/// A registered agent: configure it, or send to it.
pub struct AgentHandle<K, V, K2 = (), O = ()> {
    def: Arc<AgentDef<K, V, K2, O>>,
}

impl<K, V, K2, O> Clone for AgentHandle<K, V, K2, O> {
    fn clone(&self) -> Self {
        Self {
            def: self.def.clone(),
        }
    }
}

impl<K, V, K2, O> fmt::Debug for AgentHandle<K, V, K2, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.def.name)
            .field("topic", &self.def.topic.name)
            .finish()
    }
}

impl<K, V, K2, O> AgentHandle<K, V, K2, O>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
    K2: Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(def: Arc<AgentDef<K, V, K2, O>>) -> Self {
        Self { def }
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Runs `n` instances, each taking events from the same stream (order across
    /// instances is not kept; commits still only cover finished events).
    pub fn concurrency(self, n: usize) -> Self {
        self.def.concurrency.store(n.max(1), Ordering::Release);
        self
    }

    /// Sends what the agent yields to `topic`.
    pub fn sink(self, topic: &Topic<K2, O>) -> Self {
        self.def
            .sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sink::Topic(topic.clone()));
        self
    }

    /// Sends what the agent yields to another agent (through that agent's topic).
    pub fn sink_agent<A, B>(self, agent: &AgentHandle<K2, O, A, B>) -> Self {
        self.sink(&agent.def.topic)
    }

    /// Calls `f` with each key and value the agent yields.
    pub fn sink_fn<F, Fut>(self, f: F) -> Self
    where
        F: Fn(Option<K2>, O) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: SinkFn<K2, O> = Arc::new(move |k, v| Box::pin(f(k, v)));
        self.def
            .sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sink::Fn(f));
        self
    }

    /// Sends a value to this agent (through its topic), waiting for delivery.
    ///
    /// Cancel safety: if cancelled after the record was enqueued, it is still delivered.
    pub async fn send(&self, key: Option<&K>, value: &V) -> Result<rdkafka_async::Delivery> {
        self.def.topic.send(key, value).await
    }
}
