//! `/dashboard/`: live graphs of the Monitor's figures (events per second, per topic, the
//! latencies), drawn by a small script embedded in the binary that reads `/stats/stream`.
//! The page is rendered on the server with the current figures (every dynamic string
//! escaped); no CDN, no inline script (the Content-Security-Policy allows only this
//! origin).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::html::escape;
use super::WebState;
use crate::sensor::MonitorSnapshot;

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Only this origin's scripts, styles and connections.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of this module.
pub(crate) fn routes() -> Router<WebState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| async { Redirect::permanent("/dashboard/") }),
        )
        .route("/dashboard/", get(page))
        .route("/dashboard/dashboard.js", get(script))
        .route("/dashboard/dashboard.css", get(style))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

fn number(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// A table of figures: name, total, rate.
fn figures(
    out: &mut String,
    id: &str,
    title: &str,
    what: &str,
    totals: &BTreeMap<String, u64>,
    rates: &BTreeMap<String, f64>,
) {
    let _ = write!(
        out,
        "<section><h2>{title}</h2><table id=\"{id}\"><thead><tr><th>{what}</th>\
<th class=\"num\">total</th><th class=\"num\">per s</th></tr></thead><tbody>"
    );
    if totals.is_empty() {
        out.push_str("<tr><td colspan=\"3\" class=\"muted\">none yet</td></tr>");
    }
    for (name, n) in totals {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{n}</td><td class=\"num\">{}</td></tr>",
            escape(name),
            number(rates.get(name).copied().unwrap_or(0.0), 1)
        );
    }
    out.push_str("</tbody></table></section>");
}

fn chart(out: &mut String, key: &str, title: &str, unit: &str) {
    let _ = write!(
        out,
        "<figure class=\"chart\" data-chart=\"{key}\" data-unit=\"{unit}\" data-points=\"0\">\
<figcaption>{title}</figcaption><canvas width=\"600\" height=\"220\"></canvas>\
<ul class=\"legend\"></ul></figure>"
    );
}

/// The page, with the figures of `snap`.
pub(crate) fn render(app: &str, worker: Option<&str>, snap: &MonitorSnapshot) -> String {
    let mut out = String::with_capacity(8192);
    let app = escape(app);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{app} · faust-rs dashboard</title>\
<link rel=\"stylesheet\" href=\"/dashboard/dashboard.css\"></head>\
<body data-stream=\"/stats/stream\" data-updates=\"0\"><header><h1>{app}</h1>"
    );
    if let Some(w) = worker {
        let _ = write!(out, "<span class=\"muted\">worker {}</span>", escape(w));
    }
    let _ = write!(
        out,
        "<span class=\"muted\">rates over the last {} s</span>\
<span id=\"conn\" class=\"pill\">connecting…</span></header>",
        snap.rate_window_s
    );
    out.push_str("<section class=\"tiles\">");
    for (id, label, value) in [
        ("v-events_per_s", "events/s", number(snap.events_per_s, 1)),
        ("v-events_total", "events", snap.events_total.to_string()),
        (
            "v-messages_per_s",
            "messages in/s",
            number(snap.messages_per_s, 1),
        ),
        (
            "v-table_writes",
            "table writes",
            snap.table_writes.to_string(),
        ),
        (
            "v-processing",
            "processing (avg)",
            format!("{} ms", number(snap.processing.avg_ms, 2)),
        ),
        (
            "v-commit",
            "commit (avg)",
            format!("{} ms", number(snap.commit.avg_ms, 2)),
        ),
        (
            "v-uptime",
            "uptime",
            format!("{} s", number(snap.uptime_s, 0)),
        ),
    ] {
        let _ = write!(
            out,
            "<div class=\"tile\"><div class=\"label\">{label}</div>\
<div class=\"value\" id=\"{id}\">{}</div></div>",
            escape(&value)
        );
    }
    out.push_str("</section><section class=\"charts\">");
    chart(&mut out, "events", "Events per second", "/s");
    chart(&mut out, "topics", "Events per second by topic", "/s");
    chart(&mut out, "latency", "Latencies (recent mean)", "ms");
    out.push_str("</section><section class=\"grids\">");
    figures(
        &mut out,
        "t-topics",
        "Topics",
        "topic",
        &snap.events_by_topic,
        &snap.events_per_s_by_topic,
    );
    figures(
        &mut out,
        "t-agents",
        "Agents",
        "agent",
        &snap.events_by_agent,
        &snap.events_per_s_by_agent,
    );
    figures(
        &mut out,
        "t-tables",
        "Tables (records written)",
        "table",
        &snap.table_writes_by_table,
        &snap.table_writes_per_s_by_table,
    );
    out.push_str(
        "</section><footer><nav><a href=\"/stats/\">/stats/ (JSON)</a>\
<a href=\"/metrics\">/metrics (Prometheus)</a><a href=\"/status\">/status</a>\
<a href=\"/api/table/\">tables</a></nav></footer>\
<script src=\"/dashboard/dashboard.js\"></script></body></html>",
    );
    out
}

async fn page(State(s): State<WebState>) -> Response {
    let worker =
        s.rt.cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id.clone());
    let html = render(
        &s.rt.settings.id,
        worker.as_deref(),
        &s.rt.monitor.snapshot(),
    );
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(html),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        let mut snap = MonitorSnapshot::default();
        snap.events_by_topic
            .insert("<script>alert(1)</script>".into(), 1);
        let html = render("a\"pp<", Some("w&1"), &snap);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<h1>a&quot;pp&lt;</h1>"));
        assert!(html.contains("worker w&amp;1"));
        assert_eq!(html.matches("<script").count(), 1, "one script, external");
    }
}
