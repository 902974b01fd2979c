//! The table API, KIP-67 style: a request for a key is served by the worker that owns the
//! key's partition; another worker forwards it there transparently.
//!
//! ```text
//! GET    /api/table/                     {"results": ["user_to_amount", ...]} (public tables)
//! GET    /api/table/<t>/?page=N&size=M   {"results": {"<key>": <value>, ...}, "page", "size", "total", "pages", "next"}
//! GET    /api/table/<t>/<key>/           {"<key>": <value>}       404 if absent
//! PUT    /api/table/<t>/<key>/           JSON or form (`value=`) body; 200 once in the changelog
//! POST   /api/table/<t>/<key>/           same as PUT
//! DELETE /api/table/<t>/<key>/           200 once in the changelog
//! GET    /router/                        the cluster map
//! ```
//! With `Accept: text/html` the same URLs answer HTML pages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{html, WebState};
use crate::error::Error;
use crate::table::TableCore;

/// Marks a request forwarded by another worker (it is never forwarded again).
pub(crate) const FORWARDED: &str = "x-faust-forwarded";
/// Names the worker that served a forwarded request.
pub(crate) const SERVED_BY: &str = "x-faust-served-by";
/// Set when a read was served from a standby copy (the owner is gone or moving).
pub(crate) const STANDBY: &str = "x-faust-standby";
/// How long a write waits for the flush that puts it in the changelog.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 10_000;
/// Bodies larger than this are refused.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// The answer for a URL no route matches: a JSON (or HTML) 404.
pub(crate) async fn not_found(headers: HeaderMap, uri: Uri) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("nothing at {}", uri.path()))
        .html(wants_html(&headers))
        .into_response()
}

pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/table", get(list))
        .route("/api/table/", get(list))
        .route("/api/table/{name}", get(page))
        .route("/api/table/{name}/", get(page))
        .route(
            "/api/table/{name}/{key}",
            get(key_op).put(key_op).post(key_op).delete(key_op),
        )
        .route(
            "/api/table/{name}/{key}/",
            get(key_op).put(key_op).post(key_op).delete(key_op),
        )
        .route("/router", get(router_map))
        .route("/router/", get(router_map))
}

/// An error answer: JSON `{"error": ...}`, or an HTML page for browsers.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    html: bool,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            html: false,
            retry_after: false,
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: true,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    fn html(mut self, html: bool) -> Self {
        self.html = html;
        self
    }

    /// The answer for a library error: the client's fault (400) or not ready (503).
    fn from_error(err: &Error) -> Self {
        match err {
            Error::Codec(_) | Error::Table { .. } => {
                Self::new(StatusCode::BAD_REQUEST, err.to_string())
            }
            _ => Self::unavailable(err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = if self.html {
            (
                self.status,
                Html(html::error(self.status.as_u16(), &self.message)),
            )
                .into_response()
        } else {
            (self.status, Json(json!({"error": self.message}))).into_response()
        };
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A public table by name (404 otherwise: private tables are not revealed).
fn public_table(s: &WebState, name: &str, html: bool) -> Result<Arc<dyn TableCore>, ApiError> {
    s.rt.tables
        .by_name(name)
        .filter(|t| t.is_public())
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no public table named {name:?}"),
            )
            .html(html)
        })
}

async fn list(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let names: Vec<String> =
        s.rt.tables
            .cores
            .iter()
            .filter(|t| t.is_public())
            .map(|t| t.name().to_owned())
            .collect();
    if wants_html(&headers) {
        return Html(html::tables(&names)).into_response();
    }
    Json(json!({ "results": names })).into_response()
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<usize>,
    size: Option<usize>,
    /// Only the entries of the partitions this worker processes (used between workers).
    #[serde(default)]
    local: Option<u8>,
}

/// This worker's id in the cluster map.
fn my_id(s: &WebState) -> Option<String> {
    s.rt.cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|c| c.id.clone())
}

fn cluster_map(s: &WebState) -> Option<crate::cluster::ClusterMap> {
    s.rt.cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|c| c.map.borrow().clone())
}

/// The entries of the partitions this worker processes.
fn local_entries(s: &WebState, table: &dyn TableCore) -> Result<Vec<(String, Value)>, Error> {
    let active = s.rt.active.borrow().clone();
    let mut out = Vec::new();
    for p in active {
        if p < table.partitions() {
            out.extend(table.items_json(p)?);
        }
    }
    Ok(out)
}

async fn page(
    State(s): State<WebState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let html = wants_html(&headers);
    let Path(name) =
        name.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).html(html))?;
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).html(html))?;
    let table = public_table(&s, &name, html)?;
    let local =
        local_entries(&s, table.as_ref()).map_err(|e| ApiError::from_error(&e).html(html))?;
    if q.local == Some(1) || headers.contains_key(FORWARDED) {
        let results: serde_json::Map<String, Value> = local.into_iter().collect();
        return Ok(Json(json!({ "results": results })).into_response());
    }
    // The whole table: this worker's entries and every other live worker's.
    let mut all: BTreeMap<String, Value> = local.into_iter().collect();
    let me = my_id(&s);
    let mut missing = Vec::new();
    if let Some(map) = cluster_map(&s) {
        // Ask the owner of each task this worker does not process (a worker that died
        // but still appears in the map is not asked once its tasks have new owners).
        let here = s.rt.active.borrow().clone();
        let owners: std::collections::BTreeSet<String> = (0..table.partitions())
            .filter(|p| !here.contains(p))
            .filter_map(|p| map.owner(p).map(|w| w.id.clone()))
            .collect();
        for w in map.workers.values() {
            if Some(&w.id) == me.as_ref() || !owners.contains(&w.id) {
                continue;
            }
            let Some(url) = &w.url else {
                missing.push(w.id.clone());
                continue;
            };
            let target = format!("{url}/api/table/{}/?local=1", html::segment(&name));
            let answer = s
                .client
                .get(&target)
                .header(FORWARDED, me.clone().unwrap_or_default())
                .timeout(FORWARD_TIMEOUT)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => {
                        if let Some(obj) = v.get("results").and_then(Value::as_object) {
                            all.extend(obj.iter().map(|(k, v)| (k.clone(), v.clone())));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(worker = %w.id, %err, "a worker's table page does not decode");
                        missing.push(w.id.clone());
                    }
                },
                Ok(r) => {
                    tracing::warn!(worker = %w.id, status = %r.status(), "a worker did not list its table entries");
                    missing.push(w.id.clone());
                }
                Err(err) => {
                    tracing::warn!(worker = %w.id, %err, "a worker did not answer");
                    missing.push(w.id.clone());
                }
            }
        }
    }
    let size = q.size.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE);
    let total = all.len();
    let pages = total.div_ceil(size).max(1);
    let page_no = q.page.unwrap_or(1).max(1);
    let rows: Vec<(String, Value)> = all
        .into_iter()
        .skip((page_no - 1).saturating_mul(size))
        .take(size)
        .collect();
    let mut response = if html {
        Html(html::entries(&name, &rows, page_no, pages, total, size)).into_response()
    } else {
        let results: serde_json::Map<String, Value> = rows.into_iter().collect();
        Json(json!({
            "results": results,
            "page": page_no,
            "size": size,
            "total": total,
            "pages": pages,
            "next": if page_no < pages { Some(page_no + 1) } else { None },
            "missing_workers": missing,
        }))
        .into_response()
    };
    if !missing.is_empty() {
        response
            .headers_mut()
            .insert("x-faust-incomplete", HeaderValue::from_static("1"));
    }
    Ok(response)
}

/// Where a key's request is served.
enum Target {
    /// Here: this worker owns the key's partition.
    Local,
    /// The owner, at this URL.
    Forward(String, String),
    /// Here, from a standby copy (reads only).
    Standby,
}

fn target(s: &WebState, p: i32, forwarded: bool) -> Result<Target, ApiError> {
    if s.rt.active.borrow().contains(&p) {
        return Ok(Target::Local);
    }
    let me = my_id(&s.clone());
    let map = cluster_map(s);
    let standby_here = map
        .as_ref()
        .zip(me.as_ref())
        .and_then(|(m, id)| m.workers.get(id))
        .is_some_and(|w| w.standby.contains(&p));
    if !forwarded {
        if let Some(owner) = map.as_ref().and_then(|m| m.owner(p)) {
            if Some(&owner.id) != me.as_ref() {
                if let Some(url) = &owner.url {
                    return Ok(Target::Forward(url.clone(), owner.id.clone()));
                }
            }
        }
    }
    if standby_here {
        return Ok(Target::Standby);
    }
    Err(ApiError::unavailable(format!(
        "partition {p} has no reachable owner right now (a rebalance?); try again"
    )))
}

#[allow(clippy::too_many_arguments)]
async fn key_op(
    State(s): State<WebState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let html = wants_html(&headers);
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()).html(html))?;
    let Path((name, key)) =
        path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).html(html))?;
    let table = public_table(&s, &name, html)?;
    let kb = table
        .key_from_text(&key)
        .map_err(|e| ApiError::from_error(&e).html(html))?;
    let p = table.partition_of(&kb);
    let forwarded = headers.contains_key(FORWARDED);
    let write = method != Method::GET && method != Method::HEAD;
    // Decode the body before anything moves: a bad body is the client's error wherever
    // the key lives.
    let value = if method == Method::PUT || method == Method::POST {
        Some(parse_value(&headers, &body).map_err(|e| e.html(html))?)
    } else {
        None
    };
    match target(&s, p, forwarded) {
        Ok(Target::Forward(url, owner)) => {
            match forward(&s, &url, &owner, &method, &uri, &headers, body.clone()).await {
                Ok(r) => Ok(r),
                Err(err) => {
                    tracing::warn!(worker = %owner, %err, "forwarding a table request failed");
                    if write {
                        return Err(ApiError::unavailable(format!(
                            "the owner of partition {p} did not answer; try again"
                        ))
                        .html(html));
                    }
                    // A read may still be served from a standby copy here.
                    if !matches!(target(&s, p, true), Ok(Target::Standby)) {
                        return Err(ApiError::unavailable(format!(
                            "the owner of partition {p} did not answer; try again"
                        ))
                        .html(html));
                    }
                    read(&s, table.as_ref(), &key, &kb, p, true, html)
                }
            }
        }
        Ok(Target::Standby) if write => Err(ApiError::unavailable(format!(
            "partition {p} is moving; writes wait for its new owner; try again"
        ))
        .html(html)),
        Ok(Target::Standby) => read(&s, table.as_ref(), &key, &kb, p, true, html),
        Ok(Target::Local) => {
            if method == Method::DELETE {
                write_local(&s, table.as_ref(), kb, p, None)
                    .await
                    .map_err(|e| e.html(html))?;
                Ok(served_here(
                    &s,
                    Json(json!({ "deleted": key })).into_response(),
                ))
            } else if let Some(v) = value {
                write_local(&s, table.as_ref(), kb, p, Some(v.clone()))
                    .await
                    .map_err(|e| e.html(html))?;
                Ok(served_here(&s, Json(json!({ key: v })).into_response()))
            } else {
                read(&s, table.as_ref(), &key, &kb, p, false, html)
            }
        }
        Err(e) => Err(e.html(html)),
    }
}

/// Names this worker in `x-faust-served-by`.
fn served_here(s: &WebState, mut response: Response) -> Response {
    if let Some(id) = my_id(s).and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(SERVED_BY, id);
    }
    response
}

fn read(
    s: &WebState,
    table: &dyn TableCore,
    key: &str,
    kb: &[u8],
    p: i32,
    standby: bool,
    html: bool,
) -> Result<Response, ApiError> {
    let value = table
        .get_json(kb, p)
        .map_err(|e| ApiError::from_error(&e).html(html))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no key {key:?} in table {}", table.name()),
            )
            .html(html)
        })?;
    let mut response = if html {
        Html(html::key(table.name(), key, &value)).into_response()
    } else {
        Json(json!({ key: value })).into_response()
    };
    if standby {
        response
            .headers_mut()
            .insert(STANDBY, HeaderValue::from_static("true"));
    }
    Ok(served_here(s, response))
}

/// Writes (or deletes) a key here, and waits until the write is in the changelog.
async fn write_local(
    s: &WebState,
    table: &dyn TableCore,
    kb: Vec<u8>,
    p: i32,
    value: Option<Value>,
) -> Result<(), ApiError> {
    let tables = &s.rt.tables;
    {
        let _inside = tables.enter(p).await;
        match value {
            Some(v) => table
                .set_json(kb, p, v)
                .map_err(|e| ApiError::from_error(&e))?,
            None => table.delete_key(kb, p),
        }
    }
    // The commit that begins after this write flushes it.
    let after = tables.begun.load(std::sync::atomic::Ordering::Acquire) + 1;
    let mut flushed = tables.flushed.subscribe();
    s.rt.signals.commit_now.notify_one();
    let done = tokio::time::timeout(WRITE_TIMEOUT, async {
        flushed.wait_for(|n| *n >= after).await.is_ok()
    })
    .await;
    match done {
        Ok(true) => Ok(()),
        _ => Err(ApiError::unavailable(
            "the write is not in the changelog yet (the broker is slow or unreachable); it may still be applied",
        )),
    }
}

/// The value of a PUT/POST: a JSON body, or a form with a `value` field (JSON, or else
/// taken as a string).
fn parse_value(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form = form_pairs(body)?;
        let Some((_, v)) = form.into_iter().find(|(k, _)| k == "value") else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the form has no `value` field",
            ));
        };
        return Ok(serde_json::from_str(&v).unwrap_or(Value::String(v)));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON (or a form with a `value` field): {e}"),
        )
    })
}

fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the form is not UTF-8: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "a form field is not valid percent-encoding",
        )
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Sends the request to the owner and relays its answer.
async fn forward(
    s: &WebState,
    url: &str,
    owner: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, reqwest::Error> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = s
        .client
        .request(method.clone(), format!("{url}{path}"))
        .header(FORWARDED, my_id(s).unwrap_or_default())
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v.clone());
        }
    }
    let answer = request.send().await?;
    let status = answer.status();
    let mut out = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = answer.headers().get(&name) {
            out.insert(name, v.clone());
        }
    }
    for name in [STANDBY, SERVED_BY] {
        if let Some(v) = answer.headers().get(name) {
            out.insert(name, v.clone());
        }
    }
    if !out.contains_key(SERVED_BY) {
        if let Ok(v) = HeaderValue::from_str(owner) {
            out.insert(SERVED_BY, v);
        }
    }
    let bytes = answer.bytes().await?;
    Ok((status, out, bytes).into_response())
}

async fn router_map(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let map = cluster_map(&s).unwrap_or_default();
    if wants_html(&headers) {
        return Html(html::cluster(&map, &my_id(&s).unwrap_or_default())).into_response();
    }
    let tasks: Vec<Value> = (0..map.tasks)
        .map(|p| {
            json!({
                "task": p,
                "owner": map.owner(p).map(|w| json!({"id": w.id, "url": w.url})),
                "standbys": map.standbys(p).iter().map(|w| json!({"id": w.id, "url": w.url})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "worker": my_id(&s), "tasks": tasks, "workers": map.workers })).into_response()
}
