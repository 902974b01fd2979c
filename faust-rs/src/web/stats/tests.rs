//! Router tests of `/stats/...`, `/metrics` and `/dashboard/`, without a socket: a worker
//! on the embedded broker processes events, and requests go straight to the router.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use tower::ServiceExt;

use crate::sensor::MonitorSnapshot;
use crate::{App, Table, Worker};

const DEADLINE: Duration = Duration::from_secs(60);
const EVENTS: u64 = 40;

/// Waits until `cond` holds; panics with `what` after [`DEADLINE`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Fixture {
    worker: Worker,
    router: Router,
    _dir: tempfile::TempDir,
}

/// A worker counting words into a table, after it processed [`EVENTS`] events.
async fn fixture(id: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new(id)
        .without_web()
        .datadir(dir.path())
        .topic_partitions(1)
        .commit_interval(Duration::from_millis(100));
    let counts: Table<String, u64> = app.table("counts").default(0);
    let words = app.topic::<String, String>("words");
    app.agent("count", &words, move |mut stream| {
        let counts = counts.clone();
        async move {
            while let Some(word) = stream.next().await {
                counts.update(&word, |n| *n += 1)?;
            }
            Ok(())
        }
    });
    let worker = app.start().await.expect("worker starts");
    for i in 0..EVENTS {
        words
            .send(None, &format!("w{}", i % 5))
            .await
            .expect("sent");
    }
    let monitor = || worker.monitor().snapshot();
    wait_until("the events processed and acknowledged", || {
        let s = monitor();
        s.events_total >= EVENTS && s.processing.count >= EVENTS && s.commit.count > 0
    })
    .await;
    let rt = app.runtime().expect("running").clone();
    let router = crate::web::router(app.clone(), rt);
    Fixture {
        worker,
        router,
        _dir: dir,
    }
}

async fn get(
    router: &Router,
    uri: &str,
    accept: Option<&str>,
) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri(uri);
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

async fn get_json(router: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let (status, headers, body) = get(router, uri, None).await;
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{uri}"
    );
    (status, serde_json::from_slice(&body).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_endpoints_answer_every_figure_and_404_for_unknown_names() {
    let f = fixture("stats-router-test").await;
    let r = &f.router;

    for uri in ["/stats/", "/stats"] {
        let (status, json) = get_json(r, uri).await;
        assert_eq!(status, StatusCode::OK);
        let s: MonitorSnapshot = serde_json::from_value(json).expect("a snapshot");
        assert!(s.events_total >= EVENTS, "{s:?}");
        assert!(s.messages_in >= EVENTS);
        assert!(s.events_by_topic["words"] >= EVENTS);
        assert!(s.events_by_agent["count"] >= EVENTS);
        assert!(s.table_writes >= EVENTS);
        assert!(s.table_writes_by_table["counts"] >= EVENTS);
        assert!(s.processing.count >= EVENTS);
        assert!(s.commit.count > 0);
        assert!(s.send.count >= EVENTS, "the test's sends");
        assert!(s.rebalance.count > 0, "the first assignment");
        assert!(s.events_per_s_by_topic.contains_key("words"));
        assert!(s.table_writes_per_s_by_table.contains_key("counts"));
    }

    // A browser asking for /stats/ goes to the dashboard.
    let (status, headers, _) = get(r, "/stats/", Some("text/html,application/xhtml+xml")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard/");

    for uri in ["/stats/topic/words/", "/stats/topic/words"] {
        let (status, json) = get_json(r, uri).await;
        assert_eq!(status, StatusCode::OK);
        let t: super::TopicStats = serde_json::from_value(json).unwrap();
        assert_eq!(t.topic, "words");
        assert!(t.events_total >= EVENTS);
        assert_eq!(t.agents, vec!["count".to_string()]);
    }
    let (status, json) = get_json(r, "/stats/task/count/").await;
    assert_eq!(status, StatusCode::OK);
    let t: super::TaskStats = serde_json::from_value(json).unwrap();
    assert_eq!(
        (t.task.as_str(), t.topic.as_deref()),
        ("count", Some("words"))
    );
    assert!(t.events_total >= EVENTS);
    assert_eq!(t.concurrency, Some(1));
    let (status, json) = get_json(r, "/stats/table/counts/").await;
    assert_eq!(status, StatusCode::OK);
    let t: super::TableStats = serde_json::from_value(json).unwrap();
    assert_eq!(t.table, "counts");
    assert!(t.writes_total >= EVENTS);
    assert_eq!(t.changelog_topic, "stats-router-test-counts-changelog");
    assert!(!t.global);

    for uri in [
        "/stats/topic/nope/",
        "/stats/task/nope/",
        "/stats/table/nope/",
        "/stats/table/words/",
        "/stats/task/words",
        "/stats/topic/%3Cscript%3E/",
    ] {
        let (status, json) = get_json(r, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            json["error"].as_str().unwrap().contains("no "),
            "{uri}: {json}"
        );
    }
    // Not UTF-8 once percent-decoded.
    let (status, json) = get_json(r, "/stats/topic/%FF/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json["error"].is_string());
    let (status, _, _) = get(r, "/stats/nothing/here/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    f.worker.shutdown().await.expect("clean stop");
}

/// A sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format 0.0.4 strictly: `# HELP`/`# TYPE` lines, then
/// samples of that family; returns the families' types and the samples.
fn parse_prometheus(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut current: Option<String> = None;
    assert!(text.ends_with('\n'), "the text ends with a line feed");
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "one TYPE per family: {line}"
            );
            current = Some(name.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let name_end = line.find(['{', ' ']).expect("a value");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after, line),
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let mut parts = rest.trim_start_matches(' ').split(' ');
        let value = parts.next().expect("value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line}")),
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>().expect("timestamp");
        }
        assert!(parts.next().is_none(), "{line}");
        let family = current.as_deref().expect("a TYPE before samples");
        let kind = &types[family];
        let belongs = name == family
            || (kind == "summary"
                && [format!("{family}_sum"), format!("{family}_count")].contains(&name.to_owned()));
        assert!(belongs, "{name} outside its family {family}");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
        assert!(name.starts_with("faust_"), "{name}");
        samples.push((name.to_owned(), labels, value));
    }
    (types, samples)
}

/// Parses the labels after `{` up to and including `}`: the labels and the rest.
fn parse_labels<'a>(after: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    let mut chars = after.char_indices();
    loop {
        let mut key = String::new();
        let c = loop {
            match chars.next() {
                Some((i, '}')) if key.is_empty() => return (labels, &after[i + 1..]),
                Some((_, '=')) => break '=',
                Some((_, c)) => key.push(c),
                None => panic!("unterminated labels in {line}"),
            }
        };
        assert_eq!(c, '=');
        assert!(
            key.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {key:?} in {line}"
        );
        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
        let mut value = String::new();
        loop {
            match chars.next().map(|(_, c)| c) {
                Some('\\') => value.push(match chars.next().map(|(_, c)| c) {
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('n') => '\n',
                    c => panic!("bad escape {c:?} in {line}"),
                }),
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        }
        assert!(
            labels.insert(key, value).is_none(),
            "repeated label in {line}"
        );
        match chars.next() {
            Some((_, ',')) => {}
            Some((i, '}')) => return (labels, &after[i + 1..]),
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_that_parses_back() {
    let f = fixture("metrics-router-test").await;
    let (status, headers, body) = get(&f.router, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body).expect("UTF-8");
    let (types, samples) = parse_prometheus(&text);
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && match label {
                        None => l.is_empty(),
                        Some((k, v)) => l.get(k).map(String::as_str) == Some(v),
                    }
            })
            .unwrap_or_else(|| panic!("no sample {name} {label:?} in\n{text}"))
            .2
    };
    assert_eq!(types["faust_events_total"], "counter");
    assert_eq!(types["faust_events_per_second"], "gauge");
    assert_eq!(types["faust_commit_latency_seconds"], "summary");
    assert!(value("faust_events_total", None) >= EVENTS as f64);
    assert!(value("faust_messages_received_total", None) >= EVENTS as f64);
    assert!(value("faust_topic_events_total", Some(("topic", "words"))) >= EVENTS as f64);
    assert!(value("faust_agent_events_total", Some(("agent", "count"))) >= EVENTS as f64);
    assert!(
        value(
            "faust_table_records_written_total",
            Some(("table", "counts"))
        ) >= EVENTS as f64
    );
    assert!(value("faust_table_writes_total", None) >= EVENTS as f64);
    assert!(value("faust_processing_latency_seconds_count", None) >= EVENTS as f64);
    assert!(value("faust_processing_latency_seconds_sum", None) >= 0.0);
    assert!(value("faust_commit_latency_seconds_count", None) >= 1.0);
    assert!(value("faust_topic_events_per_second", Some(("topic", "words"))) >= 0.0);
    assert!(value("faust_uptime_seconds", None) > 0.0);
    // The same figures as /stats/.
    let (_, json) = get_json(&f.router, "/stats/").await;
    let s: MonitorSnapshot = serde_json::from_value(json).unwrap();
    assert!(value("faust_events_total", None) <= s.events_total as f64);

    let (status, _, _) = get(&f.router, "/metrics/", None).await;
    assert_eq!(status, StatusCode::OK);
    f.worker.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_stats_events_and_ends_when_the_worker_stops() {
    let f = fixture("stream-router-test").await;
    let (status, _, _) = get(&f.router, "/stats/stream?interval_ms=lots", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let resp = f
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/stats/stream?interval_ms=100")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while events.len() < 3 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time")
            .expect("the stream goes on")
            .expect("bytes");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if frame.starts_with(':') {
                continue; // keep-alive
            }
            let mut name = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            assert_eq!(name.as_deref(), Some("stats"), "{frame}");
            let s: MonitorSnapshot = serde_json::from_str(&data).expect("a snapshot");
            events.push(s);
        }
    }
    assert!(events.iter().all(|s| s.events_total >= EVENTS));
    assert!(
        events.windows(2).all(|w| w[1].uptime_s > w[0].uptime_s),
        "fresh figures each time"
    );

    // The stream ends when the worker stops (it does not hold the server open).
    f.worker.stop();
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = body.next().await {
            chunk.expect("bytes");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended");
    f.worker.wait().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_its_assets_are_served() {
    let f = fixture("dashboard-router-test").await;
    let r = &f.router;
    let (status, headers, _) = get(r, "/dashboard", None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "/dashboard/");

    let (status, headers, body) = get(r, "/dashboard/", Some("text/html")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<h1>dashboard-router-test</h1>"));
    assert!(html.contains("data-chart=\"events\""));
    assert!(html.contains("data-chart=\"topics\""));
    assert!(html.contains("data-chart=\"latency\""));
    assert!(html.contains("<td>words</td>"), "the topic's row");
    assert!(html.contains("<td>counts</td>"), "the table's row");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert!(html.contains("<script src=\"/dashboard/dashboard.js\"></script>"));

    let (status, headers, body) = get(r, "/dashboard/dashboard.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let js = String::from_utf8(body).unwrap();
    assert!(js.contains("EventSource"));
    assert!(
        !js.contains("innerHTML"),
        "names reach the page as text only"
    );
    let (status, headers, _) = get(r, "/dashboard/dashboard.css", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    let (status, _, _) = get(r, "/dashboard/nothing.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    f.worker.shutdown().await.expect("clean stop");
}
