//! The worker's web server (axum): `/ping`, `/status`, and (as they are added) the table
//! API, statistics and dashboard. The router is built by [`router`], a function of the
//! worker's state, so tests can call it without a socket.

mod dashboard;
mod health;
mod html;
mod stats;
mod status;
mod tables;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::app::App;
use crate::runtime::Runtime;

pub use stats::{TableStats, TaskStats, TopicStats};
pub use status::{AgentStatus, PartitionStatus, Status};

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct WebState {
    pub(crate) app: App,
    pub(crate) rt: Arc<Runtime>,
    /// Forwards requests to other workers.
    pub(crate) client: reqwest::Client,
}

/// The router: a function of the app's state, so tests can call it without a socket.
pub(crate) fn router(app: App, rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/ping/", get(|| async { "pong" }))
        .route("/status", get(status::status))
        .route("/status/", get(status::status))
        .merge(health::routes())
        .merge(stats::routes())
        .merge(dashboard::routes())
        .merge(tables::routes())
        .fallback(tables::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(tables::MAX_BODY))
        .with_state(WebState {
            app,
            rt,
            client: reqwest::Client::new(),
        })
}

/// The router of `app`'s running worker, for tests that call it without a socket (e.g.
/// with `tower::ServiceExt::oneshot`). Fails if the app has no running worker.
#[doc(hidden)]
pub fn router_of(app: &App) -> crate::error::Result<Router> {
    Ok(router(app.clone(), app.runtime()?.clone()))
}
