//! The App: settings plus the registry of topics, agents, timers and tasks.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::agent::{AgentDef, AgentHandle, AgentRun};
use crate::error::{AgentResult, Error, Result};
use crate::runtime::Runtime;
use crate::settings::{Broker, DecodeErrorPolicy, Settings};
use crate::stream::Stream;
use crate::table::{Kind, Table, TableCore};
use crate::topic::{Topic, TopicSpec};

pub(crate) type TaskFn = Arc<dyn Fn(App) -> BoxFuture<'static, AgentResult> + Send + Sync>;

pub(crate) struct TimerDef {
    pub(crate) name: String,
    pub(crate) interval: Duration,
    pub(crate) fun: TaskFn,
}

pub(crate) struct TaskDef {
    pub(crate) name: String,
    pub(crate) fun: TaskFn,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) topics: BTreeMap<String, TopicSpec>,
    pub(crate) agents: Vec<Arc<dyn AgentRun>>,
    pub(crate) timers: Vec<TimerDef>,
    pub(crate) tasks: Vec<TaskDef>,
    pub(crate) tables: Vec<Arc<dyn TableCore>>,
    pub(crate) on_assigned: Vec<PartitionsHook>,
    pub(crate) on_revoked: Vec<PartitionsHook>,
    pub(crate) sensors: Vec<Arc<dyn crate::sensor::Sensor>>,
}

/// A rebalance listener: called with (topic, partition) pairs.
pub(crate) type PartitionsHook = Arc<dyn Fn(&[(String, i32)]) + Send + Sync>;

pub(crate) struct AppInner {
    pub(crate) settings: RwLock<Settings>,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) runtime: OnceLock<Arc<Runtime>>,
}

/// A faust-rs application: its settings, and the topics, agents, timers and tasks it
/// defines. Cloning is cheap (a handle).
///
/// ```
/// use faust::App;
/// let app = App::new("word-count").topic_partitions(4);
/// let words = app.topic::<String, String>("words");
/// app.agent("count", &words, |mut stream| async move {
///     while let Some(word) = stream.next().await {
///         println!("{word}");
///     }
///     Ok(())
/// });
/// assert_eq!(app.agent_names(), vec!["count".to_string()]);
/// ```
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<AppInner>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App").field("id", &self.id()).finish()
    }
}

impl App {
    /// An app with id `id` and default settings (`FAUST_*` variables and CLI flags are
    /// applied when the worker starts from [`App::main`]).
    pub fn new(id: impl Into<String>) -> Self {
        Self::with_settings(Settings::new(id))
    }

    /// An app with explicit settings.
    pub fn with_settings(settings: Settings) -> Self {
        Self {
            inner: Arc::new(AppInner {
                settings: RwLock::new(settings),
                registry: Mutex::new(Registry::default()),
                runtime: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the settings.
    pub fn settings(&self) -> Settings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes settings (before the worker starts).
    pub fn configure(&self, f: impl FnOnce(&mut Settings)) -> &Self {
        f(&mut self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()));
        self
    }

    fn set(self, f: impl FnOnce(&mut Settings)) -> Self {
        self.configure(f);
        self
    }

    /// The app id.
    pub fn id(&self) -> String {
        self.inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .id
            .clone()
    }

    /// The Kafka cluster, e.g. `kafka://localhost:9092` (default: an embedded mock
    /// cluster).
    pub fn broker(self, broker: &str) -> Result<Self> {
        let broker = Broker::parse(broker)?;
        Ok(self.set(|s| s.broker = broker))
    }

    /// Where state is stored.
    pub fn datadir(self, dir: impl Into<std::path::PathBuf>) -> Self {
        let dir = dir.into();
        self.set(|s| s.datadir = dir)
    }

    /// The web server's port (0: any free port).
    pub fn web_port(self, port: u16) -> Self {
        self.set(|s| s.web_port = port)
    }

    /// Runs without the web server.
    pub fn without_web(self) -> Self {
        self.set(|s| s.web_enabled = false)
    }

    /// Partitions of topics the app creates.
    pub fn topic_partitions(self, n: i32) -> Self {
        self.set(|s| s.topic_partitions = n)
    }

    /// How often processed offsets are committed.
    pub fn commit_interval(self, every: Duration) -> Self {
        self.set(|s| s.commit_interval = every)
    }

    /// What to do with records that do not decode.
    pub fn on_decode_error(self, policy: DecodeErrorPolicy) -> Self {
        self.set(|s| s.decode_error_policy = policy)
    }

    /// Declares a topic: keys through [`Auto`](crate::codec::Auto) (JSON, with strings as
    /// raw bytes), values through JSON (change them with
    /// [`Topic::key_codec`]/[`Topic::value_codec`]).
    pub fn topic<K, V>(&self, name: &str) -> Topic<K, V>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.declare_topic(TopicSpec {
            name: name.to_owned(),
            partitions: None,
            internal: false,
        });
        Topic::json(self.clone(), name)
    }

    /// Records a topic to create at start (keeps an explicit partition count).
    pub(crate) fn declare_topic(&self, spec: TopicSpec) {
        let mut reg = self.registry();
        match reg.topics.get_mut(&spec.name) {
            Some(existing) => {
                if spec.partitions.is_some() {
                    existing.partitions = spec.partitions;
                }
            }
            None => {
                reg.topics.insert(spec.name.clone(), spec);
            }
        }
    }

    /// Declares an internal topic `<app id>-<suffix>`; returns its name.
    pub(crate) fn internal_topic(&self, suffix: &str) -> String {
        let name = format!("{}-{}", self.id(), suffix);
        self.declare_topic(TopicSpec {
            name: name.clone(),
            partitions: None,
            internal: true,
        });
        name
    }

    /// Registers an agent: `f` is called with the stream of `topic` and processes it.
    ///
    /// Each event is acknowledged when the agent asks for the next one (or drops the
    /// [`Event`](crate::Event)); only acknowledged offsets are committed.
    pub fn agent<K, V, F, Fut>(&self, name: &str, topic: &Topic<K, V>, f: F) -> AgentHandle<K, V>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
        F: Fn(Stream<K, V>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AgentResult> + Send + 'static,
    {
        let def = AgentDef::processor(name, topic.clone(), f);
        self.registry().agents.push(def.clone());
        AgentHandle::new(def)
    }

    /// Registers an agent that transforms its stream: what the returned stream yields goes
    /// to the agent's sinks ([`AgentHandle::sink`], [`AgentHandle::sink_agent`],
    /// [`AgentHandle::sink_fn`]), and each input is acknowledged once its outputs were
    /// delivered.
    pub fn agent_stream<K, V, K2, O, F>(
        &self,
        name: &str,
        topic: &Topic<K, V>,
        f: F,
    ) -> AgentHandle<K, V, K2, O>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
        K2: Clone + Send + Sync + 'static,
        O: Clone + Send + Sync + 'static,
        F: Fn(Stream<K, V>) -> Stream<K2, O> + Send + Sync + 'static,
    {
        let def = AgentDef::transformer(name, topic.clone(), f);
        self.registry().agents.push(def.clone());
        AgentHandle::new(def)
    }

    /// Runs `f` every `interval` while the worker runs (the first run after one interval).
    pub fn timer<F, Fut>(&self, name: &str, interval: Duration, f: F)
    where
        F: Fn(App) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AgentResult> + Send + 'static,
    {
        self.registry().timers.push(TimerDef {
            name: name.to_owned(),
            interval,
            fun: Arc::new(move |app| Box::pin(f(app))),
        });
    }

    /// Runs `f` once when the worker starts.
    pub fn task<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(App) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AgentResult> + Send + 'static,
    {
        self.registry().tasks.push(TaskDef {
            name: name.to_owned(),
            fun: Arc::new(move |app| Box::pin(f(app))),
        });
    }

    /// Declares a table: keys through [`Auto`](crate::codec::Auto), values through JSON
    /// (see [`Table`] for its options). Its changelog topic `<app id>-<name>-changelog` is
    /// created when the worker starts.
    pub fn table<K, V>(&self, name: &str) -> Table<K, V>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        Table::new(self, name, Kind::Table)
    }

    /// Declares a global table: every worker holds all of it (it reads every partition of
    /// its changelog), so any key can be read anywhere. Writes go to the key's partition.
    pub fn global_table<K, V>(&self, name: &str) -> Table<K, V>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        Table::new(self, name, Kind::Global)
    }

    pub(crate) fn register_table(&self, table: Arc<dyn TableCore>) {
        let mut reg = self.registry();
        if reg.tables.iter().any(|t| t.name() == table.name()) {
            tracing::error!(
                table = table.name(),
                "a table with this name was declared already; the new one replaces it"
            );
            reg.tables.retain(|t| t.name() != table.name());
        }
        reg.tables.push(table);
    }

    /// Calls `f` with the partitions this worker starts processing (after their tables
    /// were restored), as Faust's `on_partitions_assigned`.
    pub fn on_partitions_assigned(&self, f: impl Fn(&[(String, i32)]) + Send + Sync + 'static) {
        self.registry().on_assigned.push(Arc::new(f));
    }

    /// Calls `f` with the partitions this worker stops processing (before they are given
    /// up, after their events in progress finished and their offsets were committed), as
    /// Faust's `on_partitions_revoked`.
    pub fn on_partitions_revoked(&self, f: impl Fn(&[(String, i32)]) + Send + Sync + 'static) {
        self.registry().on_revoked.push(Arc::new(f));
    }

    /// Names of the tables, in declaration order.
    pub fn table_names(&self) -> Vec<String> {
        self.registry()
            .tables
            .iter()
            .map(|t| t.name().to_owned())
            .collect()
    }

    /// Names of the agents, in registration order.
    pub fn agent_names(&self) -> Vec<String> {
        self.registry()
            .agents
            .iter()
            .map(|a| a.name().to_owned())
            .collect()
    }

    /// Topics declared so far.
    pub fn topics(&self) -> Vec<TopicSpec> {
        self.registry().topics.values().cloned().collect()
    }

    /// Registers a sensor: its hooks are called as records come in, flow through agents,
    /// are acknowledged, written to tables, committed and sent (see
    /// [`Sensor`](crate::sensor::Sensor)). Register sensors before the worker starts; the
    /// worker's own figures (`/stats/`, `/metrics`) need none.
    ///
    /// ```
    /// use faust::sensor::Sensor;
    /// struct Quiet;
    /// impl Sensor for Quiet {}
    /// faust::App::new("shop").sensor(Quiet);
    /// ```
    pub fn sensor(&self, sensor: impl crate::sensor::Sensor) -> &Self {
        if self.inner.runtime.get().is_some() {
            tracing::warn!("a sensor registered after the worker started is not called");
        }
        self.registry().sensors.push(Arc::new(sensor));
        self
    }

    /// The running worker's state.
    pub(crate) fn runtime(&self) -> Result<&Arc<Runtime>> {
        self.inner.runtime.get().ok_or_else(|| {
            Error::Lifecycle("the app has no running worker (start it first)".into())
        })
    }
}
