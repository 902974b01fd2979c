//! The worker: runs an app's agents, timers and tasks against Kafka until stopped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rdkafka_async::{
    Admin, ClientConfig, Compression, Consumer, MockCluster, OffsetReset, Producer,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::acks::AckSignals;
use crate::agent::AgentRun;
use crate::app::App;
use crate::cluster::{worker_id, ClusterConfig, ClusterService};
use crate::conductor::Conductor;
use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::sensor::Monitor;
use crate::settings::{AgentFailurePolicy, Broker, DecodeErrorPolicy};
use crate::sources::Sources;
use crate::stream::StreamCtx;
use crate::table::recovery::Recovery;
use crate::table::store::Store;
use crate::table::tables::Tables;
use crate::topic::TopicSpec;
use crate::topics::{Cluster, TopicCreator};

/// A running worker (see [`App::start`]).
#[derive(Debug)]
pub struct Worker {
    app: App,
    rt: Arc<Runtime>,
    web_addr: Option<SocketAddr>,
    done: tokio::task::JoinHandle<Result<()>>,
}

impl Worker {
    /// The Kafka bootstrap servers the worker uses (the embedded broker's, if any).
    pub fn bootstrap_servers(&self) -> &str {
        &self.rt.bootstrap
    }

    /// Whether the worker runs the embedded broker.
    pub fn is_embedded(&self) -> bool {
        self.rt.embedded.is_some()
    }

    /// The embedded broker, if the worker runs one.
    pub fn embedded_cluster(&self) -> Option<&Arc<MockCluster>> {
        self.rt.embedded.as_ref()
    }

    /// The web server's address, if it runs.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// The app.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The worker's counters.
    pub fn monitor(&self) -> &Monitor {
        &self.rt.monitor
    }

    /// This worker's view of the cluster map (apps with tables; `None` otherwise).
    pub fn cluster_map(&self) -> Option<crate::cluster::ClusterMap> {
        self.rt
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.map.borrow().clone())
    }

    /// This worker's id in the cluster map (apps with tables).
    pub fn worker_id(&self) -> Option<String> {
        self.rt
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id.clone())
    }

    /// The tasks (partition numbers) this worker processes.
    pub fn active_tasks(&self) -> BTreeSet<i32> {
        self.rt.active.borrow().clone()
    }

    /// Starts a graceful stop: no new events are taken, events in progress finish, offsets
    /// are committed, the consumer leaves its group.
    pub fn stop(&self) {
        self.rt.stopping.cancel();
    }

    /// A token cancelled when the worker starts stopping.
    pub fn stopping(&self) -> CancellationToken {
        self.rt.stopping.clone()
    }

    /// Waits until the worker stopped; the error that stopped it, if any.
    ///
    /// Cancel safety: not cancel safe (the handle is consumed); the worker goes on.
    pub async fn wait(self) -> Result<()> {
        match self.done.await {
            Ok(result) => result,
            Err(err) => Err(Error::Lifecycle(format!("the worker task failed: {err}"))),
        }
    }

    /// [`Worker::stop`], then [`Worker::wait`].
    ///
    /// Cancel safety: as [`Worker::wait`].
    pub async fn shutdown(self) -> Result<()> {
        self.stop();
        self.wait().await
    }
}

impl App {
    /// Starts a worker for this app in the current tokio runtime: connects to the broker
    /// (or starts the embedded one), creates topics, and runs agents, timers and tasks.
    /// An app runs at most one worker.
    ///
    /// Cancel safety: not cancel safe: a cancelled start may leave the app half started.
    pub async fn start(&self) -> Result<Worker> {
        let settings = self.settings();
        let (bootstrap, embedded) = match &settings.broker {
            Broker::Embedded => {
                let cluster = Arc::new(MockCluster::new(1)?);
                let bootstrap = cluster.bootstrap_servers();
                tracing::info!(
                    "no broker configured: running an embedded Kafka (librdkafka's mock cluster) at {bootstrap}"
                );
                (bootstrap, Some(cluster))
            }
            Broker::Kafka(list) => (list.clone(), None),
        };
        let mut base = ClientConfig::new()
            .bootstrap_servers(&bootstrap)
            .client_id(&settings.id);
        for (k, v) in &settings.kafka {
            base = base.set(k, v);
        }
        let mut consumer_config = base
            .clone()
            .group_id(&settings.id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .enable_auto_commit(false)
            .enable_auto_offset_store(false)
            .auto_offset_reset(OffsetReset::Earliest);
        if embedded.is_some() && !settings.kafka.contains_key("session.timeout.ms") {
            // The mock broker makes a rejoining group wait session.timeout.ms - 1 s.
            consumer_config = consumer_config
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500");
        }
        let producer = Producer::new(
            base.clone()
                // Kafka's default partitioner (as the Java client and Faust): table
                // partitions are computed the same way.
                .set("partitioner", "murmur2_random")
                .compression(Compression::Lz4)
                .linger(Duration::from_millis(5))
                .set("enable.idempotence", "true"),
        )?;
        let consumer = Consumer::new(consumer_config)?;
        let cluster = match &embedded {
            Some(c) => Cluster::Embedded(c.clone()),
            None => Cluster::Kafka(Admin::new(base.clone())?),
        };
        let metadata = Admin::new(base.clone())?;
        if let DecodeErrorPolicy::DeadLetter(topic) = &settings.decode_error_policy {
            // Created like the app's other topics, not left to broker auto-creation.
            self.declare_topic(TopicSpec {
                name: topic.clone(),
                partitions: None,
                internal: false,
            });
        }
        let cores = self.registry().tables.clone();
        for t in &cores {
            let n = t.declared_partitions().unwrap_or(settings.topic_partitions);
            t.resolve(n);
            self.declare_topic(TopicSpec {
                name: t.changelog().to_owned(),
                partitions: Some(n),
                internal: true,
            });
        }
        let mut creator = TopicCreator::new(cluster, metadata, self.clone());
        let declared: Vec<String> = self.topics().into_iter().map(|t| t.name).collect();
        creator.ensure(declared.iter()).await?;
        // One task per partition number of the largest topic or table.
        let tasks_topic = format!("{}-__assignor", settings.id);
        let mut names = declared.clone();
        names.push(tasks_topic.clone());
        let counts = creator.partition_counts(names.iter()).await?;
        let needed = counts
            .iter()
            .filter(|(name, _)| **name != tasks_topic)
            .map(|(_, n)| *n)
            .chain(cores.iter().map(|t| t.partitions()))
            .chain(std::iter::once(settings.topic_partitions))
            .max()
            .unwrap_or(1)
            .max(1);
        let tasks = match counts.get(&tasks_topic) {
            Some(existing) => {
                if *existing < needed {
                    tracing::warn!(topic = %tasks_topic, partitions = existing, needed, "the tasks topic has fewer partitions than the app's topics: partitions from {existing} on are not consumed");
                }
                *existing
            }
            None => needed,
        };
        self.declare_topic(TopicSpec {
            name: tasks_topic.clone(),
            partitions: Some(tasks),
            internal: true,
        });
        creator.ensure(std::iter::once(&tasks_topic)).await?;
        let store = if cores.is_empty() {
            None
        } else {
            let store = Store::open(
                &settings.datadir,
                settings.table_map_size,
                embedded.is_some(),
            )?;
            for t in &cores {
                store.ensure(t.name())?;
            }
            Some(store)
        };
        let monitor = Arc::new(Monitor::new(self.registry().sensors.clone(), cores.clone()));
        // Fatal errors of background services, forwarded to the runtime once it exists.
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<Error>();
        let recovery = if cores.is_empty() {
            None
        } else {
            let reader = Consumer::new(
                base.clone()
                    .group_id(format!("{}-__reader", settings.id))
                    // A full fetch queue otherwise stalls recovery for 1 s each time.
                    .set("fetch.queue.backoff.ms", "10")
                    .enable_auto_commit(false)
                    .auto_offset_reset(OffsetReset::Earliest),
            )?;
            let tx = fatal_tx.clone();
            Some(Recovery::start(
                reader,
                store.clone().expect("tables have a store"),
                cores.clone(),
                monitor.clone(),
                settings.decode_error_policy == DecodeErrorPolicy::Stop,
                Box::new(move |err| {
                    let _ = tx.send(err);
                }),
            ))
        };

        let web = if settings.web_enabled {
            let listener =
                tokio::net::TcpListener::bind((settings.web_bind, settings.web_port)).await?;
            let addr = listener.local_addr()?;
            tracing::info!("web server at http://{addr}");
            Some((listener, addr))
        } else {
            None
        };
        let web_addr = web.as_ref().map(|(_, a)| *a);
        let (active_tx, active_rx) = tokio::sync::watch::channel(BTreeSet::new());
        let cluster = if cores.iter().any(|c| !c.is_global()) {
            let topic = format!("{}-__cluster", settings.id);
            self.declare_topic(TopicSpec {
                name: topic.clone(),
                partitions: Some(1),
                internal: true,
            });
            creator.ensure(std::iter::once(&topic)).await?;
            let reader = Consumer::new(
                base.clone()
                    .group_id(format!("{}-__cluster-reader", settings.id))
                    .enable_auto_commit(false),
            )?;
            let url = web_addr.map(|a| match &settings.canonical_url {
                Some(u) => u.clone(),
                None => format!("http://{a}"),
            });
            Some(
                ClusterService::start(
                    ClusterConfig {
                        topic,
                        id: worker_id(),
                        url,
                        tasks,
                        replicas: settings.table_standby_replicas,
                    },
                    reader,
                    producer.clone(),
                    active_rx,
                    recovery.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let rt = Arc::new(Runtime {
            commits: consumer.commit_handle(),
            settings: settings.clone(),
            producer,
            sources: Sources::default(),
            monitor: monitor.clone(),
            signals: Arc::new(AckSignals::new(settings.commit_every).with_monitor(monitor.clone())),
            partitions: Mutex::default(),
            committed: Mutex::default(),
            stopping: CancellationToken::new(),
            fatal: Mutex::new(None),
            bootstrap,
            embedded,
            tables: Tables::new(cores.clone(), store, tasks),
            recovery,
            tasks,
            active: active_tx,
            cluster: Mutex::new(cluster),
            hooks: {
                let reg = self.registry();
                (reg.on_assigned.clone(), reg.on_revoked.clone())
            },
            commit_lock: tokio::sync::Mutex::new(()),
            readiness: Default::default(),
        });
        {
            let rt = rt.clone();
            drop(fatal_tx);
            tokio::spawn(async move {
                while let Some(err) = fatal_rx.recv().await {
                    rt.fail(err);
                }
            });
        }
        if self.inner.runtime.set(rt.clone()).is_err() {
            return Err(Error::Lifecycle("this app already started a worker".into()));
        }

        let (agents, timers, tasks) = {
            let reg = self.registry();
            let timers: Vec<_> = reg
                .timers
                .iter()
                .map(|t| (t.name.clone(), t.interval, t.fun.clone()))
                .collect();
            let tasks: Vec<_> = reg
                .tasks
                .iter()
                .map(|t| (t.name.clone(), t.fun.clone()))
                .collect();
            (reg.agents.clone(), timers, tasks)
        };

        let app = self.clone();
        if let Some(r) = &rt.recovery {
            if cores.iter().any(|c| c.is_global()) {
                r.globals().await?;
            }
        }
        let conductor = Conductor::new(rt.clone(), consumer, creator, tasks_topic);
        let done = tokio::spawn(run(app, rt.clone(), conductor, agents, timers, tasks, web));
        Ok(Worker {
            app: self.clone(),
            rt,
            web_addr,
            done,
        })
    }
}

type Named = (String, crate::app::TaskFn);

async fn run(
    app: App,
    rt: Arc<Runtime>,
    conductor: Conductor,
    agents: Vec<Arc<dyn AgentRun>>,
    timers: Vec<(String, Duration, crate::app::TaskFn)>,
    tasks: Vec<Named>,
    web: Option<(tokio::net::TcpListener, SocketAddr)>,
) -> Result<()> {
    let mut supervisors = JoinSet::new();
    for agent in &agents {
        for instance in 0..agent.concurrency() {
            supervisors.spawn(supervise(app.clone(), rt.clone(), agent.clone(), instance));
        }
    }
    let mut side = JoinSet::new();
    side.spawn(rt.monitor.clone().sample_forever());
    for (name, every, fun) in timers {
        let (app, rt) = (app.clone(), rt.clone());
        side.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = AssertUnwindSafe(fun(app.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|p| Err(panic_message(&p).into()))
                {
                    tracing::error!(timer = %name, %err, "timer failed");
                    rt.monitor.on_agent_failure();
                }
            }
        });
    }
    for (name, fun) in tasks {
        let (app, rt) = (app.clone(), rt.clone());
        side.spawn(async move {
            if let Err(err) = AssertUnwindSafe(fun(app))
                .catch_unwind()
                .await
                .unwrap_or_else(|p| Err(panic_message(&p).into()))
            {
                tracing::error!(task = %name, %err, "task failed");
                rt.monitor.on_agent_failure();
            }
        });
    }
    // The committer is not aborted at shutdown: a flush cut in the middle would leave
    // delivered changelog records out of LMDB.
    let committer = {
        let rt = rt.clone();
        tokio::spawn(async move {
            // Early commits (`commit_every`, table writes from the web) flush tables: for
            // apps with tables, at most one every fifth of the interval, so that a busy
            // stream does not turn into a stream of tiny flushes.
            let gap = if rt.tables.is_empty() {
                Duration::ZERO
            } else {
                rt.settings.commit_interval / 5
            };
            let mut last = Instant::now();
            loop {
                tokio::select! {
                    () = rt.stopping.cancelled() => break,
                    () = tokio::time::sleep(rt.settings.commit_interval) => {}
                    () = rt.signals.commit_now.notified() => {
                        let wait = gap.saturating_sub(last.elapsed());
                        if !wait.is_zero() {
                            tokio::select! {
                                () = rt.stopping.cancelled() => break,
                                () = tokio::time::sleep(wait) => {}
                            }
                        }
                    }
                }
                rt.commit(None).await;
                last = Instant::now();
            }
        })
    };
    let web_stop = CancellationToken::new();
    let web_task = web.map(|(listener, _)| {
        let router = crate::web::router(app.clone(), rt.clone());
        let stop = web_stop.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(err) = serve.await {
                tracing::error!(%err, "web server failed");
            }
        })
    });

    // Runs until stopped (by `stop`, a signal, or a fatal error).
    let consumer = conductor.run().await;
    tracing::info!("stopping: finishing events in progress");
    let started = Instant::now();
    side.abort_all();
    let _ = committer.await;
    // Stop taking events: records still queued for agents are discarded (not acknowledged:
    // they are consumed again after a restart); events in progress finish.
    let partitions = rt.all_partitions();
    partitions.iter().for_each(|p| p.close());
    rt.sources.close_all();
    let deadline = rt.settings.shutdown_timeout;
    if tokio::time::timeout(deadline, async {
        while supervisors.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(?deadline, "agents did not finish in time; stopping them");
        supervisors.abort_all();
    }
    let remaining = deadline
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(remaining, rt.producer.flush())
        .await
        .is_err()
    {
        tracing::warn!("some sent records were not delivered before the shutdown deadline");
    }
    // Events whose outputs were just delivered are acknowledged by their delivery tasks:
    // wait for them, so the final commit includes them.
    let remaining = deadline
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    rt.drain(&partitions, remaining).await;
    rt.commit(None).await;
    let mut consumer = consumer;
    if let Err(err) = consumer.close_within(Duration::from_secs(10)).await {
        tracing::warn!(%err, "closing the consumer");
    }
    drop(consumer);
    let cluster = rt.cluster.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(c) = cluster {
        c.stop().await;
    }
    if let Some(r) = &rt.recovery {
        r.stop().await;
    }
    if let Some(store) = rt.tables.store.clone() {
        // Releases the data directory (the app may start another worker on it).
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
    web_stop.cancel();
    if let Some(t) = web_task {
        let _ = t.await;
    }
    tracing::info!(took = ?started.elapsed(), "worker stopped");
    let fatal = rt.fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
    match fatal {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// Marks an agent instance as failed if dropped armed: its task was cancelled while the
/// instance ran, so the events it holds were not processed and must not be acknowledged.
struct FailOnDrop(Option<Arc<std::sync::atomic::AtomicBool>>);

impl FailOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        if let Some(failed) = &self.0 {
            failed.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Runs one instance of an agent, restarting it after failures per policy.
async fn supervise(app: App, rt: Arc<Runtime>, agent: Arc<dyn AgentRun>, instance: usize) {
    let name: Arc<str> = Arc::from(agent.name());
    let mut backoff: Option<Duration> = None;
    loop {
        let ctx = StreamCtx::new(app.clone(), name.clone(), agent.concurrency());
        let started = Instant::now();
        let mut run = Box::pin(
            AssertUnwindSafe(crate::current::scope(agent.run(ctx.clone()))).catch_unwind(),
        );
        // Declared after `run`, so dropped before it when this task is cancelled (the
        // shutdown timeout): the events the instance holds then fail as they drop.
        let cancelled = FailOnDrop(Some(ctx.failed.clone()));
        let result = (&mut run).await;
        cancelled.disarm();
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(panic) => Some(format!("panicked: {}", panic_message(&panic))),
        };
        if failure.is_some() {
            // Events the instance still holds are not processed: fail them as they drop.
            ctx.failed.store(true, std::sync::atomic::Ordering::Release);
        }
        drop(run);
        let held = ctx.take_held();
        if failure.is_some() {
            held.iter().for_each(|o| o.fail());
        }
        drop(held);
        let Some(reason) = failure else {
            if rt.stopping.is_cancelled() {
                tracing::debug!(agent = %name, instance, "agent finished");
                return;
            }
            // An agent that returns while the worker runs would leave its stream unread
            // (and the conductor waiting on it): run it again, after a pause.
            tracing::warn!(agent = %name, instance, "agent returned while the worker runs; starting it again");
            tokio::select! {
                () = rt.stopping.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        };
        rt.monitor.on_agent_failure();
        tracing::error!(agent = %name, instance, %reason, "agent failed");
        match &rt.settings.agent_failure_policy {
            AgentFailurePolicy::StopWorker => {
                rt.fail(Error::AgentFailed {
                    agent: name.to_string(),
                    reason,
                });
                return;
            }
            AgentFailurePolicy::Restart { initial, max } => {
                // A run that lasted longer than the longest backoff starts over.
                let wait = match backoff {
                    Some(b) if started.elapsed() < *max => (b * 2).min(*max),
                    _ => *initial,
                };
                backoff = Some(wait);
                tracing::warn!(agent = %name, instance, ?wait, "restarting the agent");
                tokio::select! {
                    () = rt.stopping.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                rt.monitor.on_agent_restart();
            }
        }
    }
}
