//! Statistics: `/stats/` (every figure of the Monitor, JSON), `/stats/topic/<topic>/`,
//! `/stats/task/<agent>/`, `/stats/table/<table>/`, `/stats/stream` (the same figures as
//! server-sent events, for the dashboard) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::WebState;
use crate::sensor::{MonitorSnapshot, PROMETHEUS_CONTENT_TYPE};

/// The routes of this module.
pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/stats", get(all))
        .route("/stats/", get(all))
        .route("/stats/topic/{name}", get(topic))
        .route("/stats/topic/{name}/", get(topic))
        .route("/stats/task/{name}", get(task))
        .route("/stats/task/{name}/", get(task))
        .route("/stats/table/{name}", get(table))
        .route("/stats/table/{name}/", get(table))
        .route("/stats/stream", get(stream))
        .route("/stats/stream/", get(stream))
        .route("/metrics", get(metrics))
        .route("/metrics/", get(metrics))
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Whether the client prefers a page (a browser).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// `GET /stats/`: every figure; a browser is sent to the dashboard.
async fn all(State(s): State<WebState>, headers: HeaderMap) -> Response {
    if wants_html(&headers) {
        return Redirect::to("/dashboard/").into_response();
    }
    Json(s.rt.monitor.snapshot()).into_response()
}

/// The figures of one source topic (`/stats/topic/<topic>/`).
///
/// ```
/// let body = r#"{"topic":"orders","events_total":7,"events_per_s":1.5,"agents":["sum"]}"#;
/// let t: faust::web::TopicStats = serde_json::from_str(body).unwrap();
/// assert_eq!((t.topic.as_str(), t.events_total), ("orders", 7));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// Events handed to agents from it.
    pub events_total: u64,
    /// Of those, per second (recent).
    pub events_per_s: f64,
    /// The agents reading it.
    pub agents: Vec<String>,
}

/// The figures of one agent (`/stats/task/<agent>/`).
///
/// ```
/// let body = r#"{"task":"sum","events_total":7,"events_per_s":1.5,"topic":"orders","concurrency":1}"#;
/// let t: faust::web::TaskStats = serde_json::from_str(body).unwrap();
/// assert_eq!(t.topic.as_deref(), Some("orders"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// The agent.
    pub task: String,
    /// Events handed to it.
    pub events_total: u64,
    /// Of those, per second (recent).
    pub events_per_s: f64,
    /// The topic it reads.
    pub topic: Option<String>,
    /// Its instances.
    pub concurrency: Option<usize>,
}

/// The figures of one table (`/stats/table/<table>/`).
///
/// ```
/// let body = r#"{"table":"totals","writes_total":7,"writes_per_s":0.5,
///   "changelog_topic":"shop-totals-changelog","global":false}"#;
/// let t: faust::web::TableStats = serde_json::from_str(body).unwrap();
/// assert_eq!(t.writes_total, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableStats {
    /// The table.
    pub table: String,
    /// Records written to it by this worker (sets, updates, deletes).
    pub writes_total: u64,
    /// Of those, per second (recent).
    pub writes_per_s: f64,
    /// Its changelog topic.
    pub changelog_topic: String,
    /// Whether every worker holds all of it.
    pub global: bool,
}

/// The name in the path, or the 400 answer's message.
fn name(path: Result<Path<String>, PathRejection>) -> Result<String, String> {
    path.map(|Path(n)| n).map_err(|e| e.body_text())
}

/// `GET /stats/topic/<topic>/`: 404 for a topic the app neither declared nor read.
async fn topic(State(s): State<WebState>, path: Result<Path<String>, PathRejection>) -> Response {
    let name = match name(path) {
        Ok(n) => n,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let snap = s.rt.monitor.snapshot();
    let agents: Vec<String> = s
        .app
        .registry()
        .agents
        .iter()
        .filter(|a| a.topic() == name)
        .map(|a| a.name().to_owned())
        .collect();
    let declared = s.app.topics().iter().any(|t| t.name == name);
    if !declared && !snap.events_by_topic.contains_key(&name) {
        return error(StatusCode::NOT_FOUND, format!("no topic named {name:?}"));
    }
    Json(TopicStats {
        events_total: snap.events_by_topic.get(&name).copied().unwrap_or(0),
        events_per_s: snap
            .events_per_s_by_topic
            .get(&name)
            .copied()
            .unwrap_or(0.0),
        agents,
        topic: name,
    })
    .into_response()
}

/// `GET /stats/task/<agent>/`: 404 for an unknown agent.
async fn task(State(s): State<WebState>, path: Result<Path<String>, PathRejection>) -> Response {
    let name = match name(path) {
        Ok(n) => n,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let snap = s.rt.monitor.snapshot();
    let agent = s
        .app
        .registry()
        .agents
        .iter()
        .find(|a| a.name() == name)
        .map(|a| (a.topic().to_owned(), a.concurrency()));
    if agent.is_none() && !snap.events_by_agent.contains_key(&name) {
        return error(StatusCode::NOT_FOUND, format!("no agent named {name:?}"));
    }
    let (topic, concurrency) = agent.unzip();
    Json(TaskStats {
        events_total: snap.events_by_agent.get(&name).copied().unwrap_or(0),
        events_per_s: snap
            .events_per_s_by_agent
            .get(&name)
            .copied()
            .unwrap_or(0.0),
        topic,
        concurrency,
        task: name,
    })
    .into_response()
}

/// `GET /stats/table/<table>/`: 404 for an unknown table.
async fn table(State(s): State<WebState>, path: Result<Path<String>, PathRejection>) -> Response {
    let name = match name(path) {
        Ok(n) => n,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let Some(core) = s.rt.tables.cores.iter().find(|t| t.name() == name) else {
        return error(StatusCode::NOT_FOUND, format!("no table named {name:?}"));
    };
    let snap = s.rt.monitor.snapshot();
    Json(TableStats {
        writes_total: core.writes(),
        writes_per_s: snap
            .table_writes_per_s_by_table
            .get(&name)
            .copied()
            .unwrap_or(0.0),
        changelog_topic: core.changelog().to_owned(),
        global: core.is_global(),
        table: name,
    })
    .into_response()
}

/// `GET /metrics`: the Prometheus text exposition format 0.0.4.
async fn metrics(State(s): State<WebState>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        s.rt.monitor.snapshot().prometheus(),
    )
        .into_response()
}

/// The query of `/stats/stream`.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    /// Milliseconds between events (default 1000, at least 100, at most 10,000).
    interval_ms: Option<u64>,
}

/// The interval of `/stats/stream` events.
pub(crate) const STREAM_INTERVAL: Duration = Duration::from_secs(1);

/// `GET /stats/stream`: server-sent events named `stats`, each a `/stats/` document, the
/// first at once and then every `interval_ms`; the stream ends when the worker stops.
async fn stream(
    State(s): State<WebState>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let every = match query {
        Ok(Query(q)) => q
            .interval_ms
            .map(|ms| Duration::from_millis(ms.clamp(100, 10_000)))
            .unwrap_or(STREAM_INTERVAL),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    Sse::new(events(s, every))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(s: WebState, every: Duration) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures_util::stream::unfold((s, tick), |(s, mut tick)| async move {
        tokio::select! {
            () = s.rt.stopping.cancelled() => None,
            _ = tick.tick() => {
                let snap: MonitorSnapshot = s.rt.monitor.snapshot();
                let event = Event::default()
                    .event("stats")
                    .json_data(&snap)
                    .unwrap_or_else(|_| Event::default().event("stats").data("{}"));
                Some((Ok(event), (s, tick)))
            }
        }
    })
}

#[cfg(test)]
mod tests;
