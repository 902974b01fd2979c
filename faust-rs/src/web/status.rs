//! `/status`: what the worker runs and how it is doing (the CLI's `status` reads it).

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::WebState;
use crate::sensor::MonitorSnapshot;

/// The `/status` document.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    /// The app id.
    pub app: String,
    /// `running` or `stopping`.
    pub state: String,
    /// The bootstrap servers the worker uses.
    pub broker: String,
    /// Whether the broker is the worker's embedded one.
    pub embedded_broker: bool,
    /// The agents.
    pub agents: Vec<AgentStatus>,
    /// Partitions this worker is processing.
    pub partitions: Vec<PartitionStatus>,
    /// Counters.
    pub stats: serde_json::Value,
    /// The tasks (partition numbers) this worker processes.
    #[serde(default)]
    pub active_tasks: Vec<i32>,
    /// This worker's id in the cluster map (apps with tables).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The cluster map as this worker knows it (apps with tables).
    #[serde(default)]
    pub cluster: Option<serde_json::Value>,
}

/// One agent in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AgentStatus {
    /// Name.
    pub name: String,
    /// Source topic.
    pub topic: String,
    /// Instances.
    pub concurrency: usize,
    /// Where its output goes.
    pub sinks: Vec<String>,
}

/// One partition in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset that would be committed now.
    pub commit_point: Option<i64>,
    /// The offset last committed.
    pub committed: Option<i64>,
    /// Events in progress.
    pub in_progress: usize,
}

pub(crate) async fn status(State(s): State<WebState>) -> Json<Status> {
    let agents = s
        .app
        .registry()
        .agents
        .iter()
        .map(|a| AgentStatus {
            name: a.name().to_owned(),
            topic: a.topic().to_owned(),
            concurrency: a.concurrency(),
            sinks: a.sinks(),
        })
        .collect();
    let committed =
        s.rt.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
    let mut partitions: Vec<PartitionStatus> =
        s.rt.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|p| PartitionStatus {
                topic: p.topic.to_string(),
                partition: p.partition,
                commit_point: p.commit_point(),
                committed: committed.get(&(p.topic.clone(), p.partition)).copied(),
                in_progress: p.live(),
            })
            .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let stats: MonitorSnapshot = s.rt.monitor.snapshot();
    // One lock of the cluster service, released before anything else is locked.
    let (worker_id, cluster) = {
        let guard = s.rt.cluster.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(c) => (
                Some(c.id.clone()),
                serde_json::to_value(&*c.map.borrow()).ok(),
            ),
            None => (None, None),
        }
    };
    Json(Status {
        app: s.rt.settings.id.clone(),
        state: if s.rt.stopping.is_cancelled() {
            "stopping"
        } else {
            "running"
        }
        .to_owned(),
        broker: s.rt.bootstrap.clone(),
        embedded_broker: s.rt.embedded.is_some(),
        agents,
        partitions,
        stats: serde_json::to_value(stats).unwrap_or_default(),
        active_tasks: s.rt.active.borrow().iter().copied().collect(),
        worker_id,
        cluster,
    })
}
