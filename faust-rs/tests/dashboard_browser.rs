//! The live dashboard in a real headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` from `chromium-driver`): while events flow through a worker, the page's
//! charts receive points from `/stats/stream` and draw them. A screenshot is saved to
//! `target/test-artifacts/dashboard.png`.
//!
//! Without `chromium` the test is skipped (with a message), unless `FAUST_REQUIRE_BROWSER`
//! is set (CI sets it): then it fails. `CHROMIUM` and `CHROMEDRIVER` may name the binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use faust::{App, Table};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

/// `name` in `$PATH` (or the path in `env`).
fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Kills the driver (and with it the browser) however the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A WebDriver call; the `value` of the answer.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.context("a JSON answer")?;
    if !status.is_success() {
        bail!("{url}: {status}: {v}");
    }
    Ok(v["value"].clone())
}

/// Base64 (standard alphabet, padded) to bytes.
fn base64(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// What the page reports about its charts.
const PROBE: &str = r#"
var d = window.faustDashboard;
if (!d) { return null; }
// Pixels of the chart's canvas in the color of its first series (drawn on top).
function inked(chart) {
  var c = chart.canvas;
  var data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  var first = chart.series[chart.order[0]];
  if (!first) { return 0; }
  var hex = first.color;
  var r = parseInt(hex.substr(1, 2), 16), g = parseInt(hex.substr(3, 2), 16), b = parseInt(hex.substr(5, 2), 16);
  var n = 0;
  for (var i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - r) < 8 && Math.abs(data[i + 1] - g) < 8 && Math.abs(data[i + 2] - b) < 8 && data[i + 3] > 200) { n++; }
  }
  return n;
}
var out = { updates: d.updates, errors: d.errors, conn: document.getElementById('conn').textContent, charts: {} };
for (var k in d.charts) {
  var ch = d.charts[k];
  out.charts[k] = {
    points: ch.points,
    attr: Number(ch.figure.getAttribute('data-points')),
    series: ch.order.slice(),
    inked: inked(ch),
    last: ch.order.length ? ch.series[ch.order[0]].last : null
  };
}
out.topicRows = Array.prototype.map.call(document.querySelectorAll('#t-topics tbody td:first-child'), function (td) { return td.textContent; });
return out;
"#;

async fn drive(http: &reqwest::Client, session: &str, url: &str) -> anyhow::Result<Vec<u8>> {
    call(
        http,
        reqwest::Method::POST,
        &format!("{session}/url"),
        Some(json!({ "url": url })),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let v = call(
            http,
            reqwest::Method::POST,
            &format!("{session}/execute/sync"),
            Some(json!({ "script": PROBE, "args": [] })),
        )
        .await?;
        if !v.is_null() {
            let c = &v["charts"];
            let ready = v["updates"].as_u64().unwrap_or(0) >= 5
                && c["events"]["points"].as_u64().unwrap_or(0) >= 15
                && c["events"]["attr"].as_u64().unwrap_or(0) >= 15
                && c["events"]["last"].as_f64().unwrap_or(0.0) > 0.0
                && c["events"]["inked"].as_u64().unwrap_or(0) > 20
                && c["topics"]["series"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|n| n == "clicks"))
                && c["topics"]["inked"].as_u64().unwrap_or(0) > 20
                && c["latency"]["points"].as_u64().unwrap_or(0) >= 5
                && c["latency"]["inked"].as_u64().unwrap_or(0) > 20
                && v["topicRows"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|n| n == "clicks"))
                && v["conn"] == "live";
            if ready {
                eprintln!("dashboard: {v}");
                break;
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the dashboard's charts did not fill within {DEADLINE:?}; last probe: {v}");
        }
        tokio::time::sleep(POLL).await;
    }
    let shot = call(
        http,
        reqwest::Method::GET,
        &format!("{session}/screenshot"),
        None,
    )
    .await?;
    base64(shot.as_str().ok_or_else(|| anyhow!("no screenshot"))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_live_figures_in_chromium() {
    let required = std::env::var_os("FAUST_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty());
    let Some(chromium) = find("CHROMIUM", &["chromium", "chromium-browser"]) else {
        assert!(
            !required,
            "FAUST_REQUIRE_BROWSER is set but `chromium` is not installed (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: `chromium` is not installed (apt-get install chromium chromium-driver; set FAUST_REQUIRE_BROWSER=1 to make this a failure)");
        return;
    };
    let chromedriver = find("CHROMEDRIVER", &["chromedriver"]).expect(
        "`chromium` is installed but `chromedriver` is not: apt-get install chromium-driver",
    );

    // A worker with an agent counting clicks into a table, and clicks flowing.
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::new("dashboard-browser-test")
        .web_port(0)
        .datadir(dir.path())
        .topic_partitions(2)
        .commit_interval(Duration::from_millis(200));
    let counts: Table<String, u64> = app.table("clicks_by_page").default(0);
    let clicks = app.topic::<String, String>("clicks");
    app.agent("count_clicks", &clicks, move |mut stream| {
        let counts = counts.clone();
        async move {
            while let Some(page) = stream.next().await {
                counts.update(&page, |n| *n += 1)?;
            }
            Ok(())
        }
    });
    let worker = app.start().await.expect("worker starts");
    let addr = worker.web_addr().expect("a web server");
    let traffic = {
        let clicks = clicks.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let page = format!("/page/{}", i % 7);
                let _ = clicks.send(Some(&page), &page).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    let port = free_port();
    let profile = tempfile::tempdir().expect("tempdir");
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(v) = call(&http, reqwest::Method::GET, &format!("{base}/status"), None).await {
            if v["ready"] == true {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = call(
        &http,
        reqwest::Method::POST,
        &format!("{base}/session"),
        Some(json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--window-size=1400,1100",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        })),
    )
    .await
    .expect("a browser session");
    let session = format!(
        "{base}/session/{}",
        created["sessionId"].as_str().expect("a session id")
    );
    let result = drive(&http, &session, &format!("http://{addr}/dashboard/")).await;
    let _ = call(&http, reqwest::Method::DELETE, &session, None).await;
    traffic.abort();
    let png = result.expect("the dashboard shows live figures");

    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("the artifacts directory");
    let file = artifacts.join("dashboard.png");
    std::fs::write(&file, &png).expect("the screenshot is saved");
    eprintln!("screenshot: {}", file.display());

    worker.shutdown().await.expect("clean stop");
}
