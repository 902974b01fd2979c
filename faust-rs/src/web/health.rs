//! `/health` (the process is alive and serving) and `/ready` (it should get traffic: its
//! tables are restored and its consumer lag is small), for orchestrators and load
//! balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::WebState;

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/", get(health))
        .route("/ready", get(ready))
        .route("/ready/", get(ready))
}

async fn health(State(s): State<WebState>) -> Response {
    let state = if s.rt.stopping.is_cancelled() {
        "stopping"
    } else {
        "ok"
    };
    Json(json!({ "status": state })).into_response()
}

async fn ready(State(s): State<WebState>) -> Response {
    let (measured, restoring, lag) = s.rt.readiness.get();
    let max_lag = s.rt.settings.ready_max_lag;
    let reason = if s.rt.stopping.is_cancelled() {
        Some("stopping".to_owned())
    } else if !measured {
        Some("starting".to_owned())
    } else if restoring > 0 {
        Some(format!("restoring {restoring} task(s)"))
    } else {
        match lag {
            None => Some("consumer lag not known yet".to_owned()),
            Some(l) if l > max_lag => Some(format!("consumer lag {l} is above {max_lag}")),
            Some(_) => None,
        }
    };
    let body = json!({
        "ready": reason.is_none(),
        "reason": reason,
        "restoring_tasks": restoring,
        "lag": lag,
        "max_lag": max_lag,
    });
    match reason {
        None => Json(body).into_response(),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            Json(body),
        )
            .into_response(),
    }
}
