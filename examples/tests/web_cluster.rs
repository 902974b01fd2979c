//! The table API across worker processes: two `user_to_amount worker` processes (each
//! with its own data directory and web port) on a broker in the test process.
//!
//! - a key owned by the other worker is read, written (PUT, POST form) and deleted
//!   through either worker, and `x-faust-served-by` names the owner;
//! - a page listing through one worker shows the keys of both;
//! - the table page (`/api/table/user_to_amount/` with `Accept: text/html`) in a real
//!   headless Chromium shows every key and value, with a key like `<b>x</b>` as text; a
//!   screenshot is saved as `target/test-artifacts/table-page.png` (skipped without
//!   `chromium` unless `FAUST_REQUIRE_BROWSER` is set, as the dashboard test);
//! - after SIGKILL of one worker, reads of its keys through the survivor succeed: from the
//!   survivor's standby copy (`x-faust-standby: true`) while the cluster map still names
//!   the dead owner, then from the survivor as their new owner once the group reassigned
//!   the tasks. Both are accepted; the test reports which it saw, and when.
//!
//! The example binary is found next to the test binary: `cargo test -p examples` builds
//! it; for `cargo test -p examples --test web_cluster` run `cargo build -p examples
//! --example user_to_amount` first.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka_async::{ClientConfig, Producer, Record};
use serde_json::{json, Value};

const APP: &str = "user-to-amount";
const TABLE: &str = "user_to_amount";
const TASKS: i32 = 8;
/// How long anything may take (two shared cores; the mock's group rebalances wait for
/// the session timeout).
const DEADLINE: Duration = Duration::from_secs(120);
const TICK: Duration = Duration::from_millis(50);

fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client")
    })
}

/// An answer of a worker.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    #[track_caller]
    fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.json()
    }
}

/// A `user_to_amount worker` process.
struct Node {
    proc: Proc,
    web: u16,
}

impl Node {
    fn start(name: &str, bootstrap: &str, datadir: &Path) -> Self {
        let web = free_port();
        let mut cmd = Command::new(example_binary("user_to_amount"));
        cmd.arg("--broker")
            .arg(format!("kafka://{bootstrap}"))
            .arg("--datadir")
            .arg(datadir)
            .arg("--web-port")
            .arg(web.to_string())
            .arg("worker");
        cmd.envs([
            ("FAUST_COMMIT_INTERVAL", "200ms"),
            ("FAUST_KAFKA_SESSION_TIMEOUT_MS", "2000"),
            ("FAUST_KAFKA_HEARTBEAT_INTERVAL_MS", "200"),
        ]);
        Self {
            proc: Proc::spawn(name, cmd),
            web,
        }
    }

    /// A request to its web server; `None` if it does not answer. Panics (with its log)
    /// if it exited.
    async fn try_send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Option<Answer> {
        if let Some(status) = self.proc.try_status() {
            panic!("{} exited ({status}):\n{}", self.proc.name, self.proc.log());
        }
        let mut req = http().request(method, format!("http://127.0.0.1:{}{path}", self.web));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.ok()?;
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let what = format!("{} {method} {path}", self.proc.name);
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"))
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, &[], None).await
    }

    async fn status(&mut self) -> Option<Value> {
        let a = self
            .try_send(reqwest::Method::GET, "/status", &[], None)
            .await?;
        (a.status == 200).then(|| a.json())
    }

    async fn active(&mut self) -> BTreeSet<i32> {
        self.status()
            .await
            .and_then(|s| {
                s["active_tasks"].as_array().map(|a| {
                    a.iter()
                        .filter_map(Value::as_i64)
                        .map(|t| t as i32)
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    async fn id(&mut self) -> String {
        let s = self.status().await.expect("/status");
        s["worker_id"].as_str().expect("a worker id").to_owned()
    }

    /// The whole table through this worker, if complete.
    async fn listing(&mut self) -> Option<BTreeMap<String, i64>> {
        let a = self
            .try_send(
                reqwest::Method::GET,
                &format!("/api/table/{TABLE}/?size=10000"),
                &[],
                None,
            )
            .await?;
        if a.status != 200 || a.header("x-faust-incomplete").is_some() {
            return None;
        }
        let v = a.json();
        Some(
            v["results"]
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().expect("an amount")))
                .collect(),
        )
    }
}

/// The task (partition) of a user's key.
fn task_of(user: &str) -> i32 {
    faust::table::partition_for(user.as_bytes(), TASKS)
}

/// Path segment encoding.
fn seg(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn key_path(key: &str) -> String {
    format!("/api/table/{TABLE}/{}/", seg(key))
}

/// Sends `n` transactions from event `from` over 24 users and `<b>x</b>`, each to its
/// user's partition; adds them to `oracle`.
async fn send_transactions(bootstrap: &str, from: u64, n: u64, oracle: &mut BTreeMap<String, i64>) {
    let producer = Producer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .linger(Duration::from_millis(5)),
    )
    .expect("a producer");
    let mut pending = Vec::new();
    for i in from..from + n {
        let user = if i % 25 == 24 {
            "<b>x</b>".to_owned()
        } else {
            format!("u{:02}", (i * 7) % 24)
        };
        let amount = (i % 13) as i64 + 1;
        *oracle.entry(user.clone()).or_default() += amount;
        let value = json!({ "user": user, "amount": amount }).to_string();
        let record = Record::to("transactions")
            .key(&user)
            .value(&value)
            .partition(task_of(&user));
        pending.push(producer.send(record).await.expect("enqueued"));
    }
    for d in pending {
        d.await.expect("delivered");
    }
}

/// Whether each worker's `/router/` shows both workers, every task owned by one of them
/// with the other as its standby, as the workers' own active tasks say.
async fn cluster_ready(a: &mut Node, b: &mut Node, ids: (&str, &str)) -> bool {
    let (ta, tb) = (a.active().await, b.active().await);
    if ta.is_empty()
        || tb.is_empty()
        || !ta.is_disjoint(&tb)
        || ta.len() + tb.len() != TASKS as usize
    {
        return false;
    }
    for node in [a, b] {
        let Some(r) = node
            .try_send(reqwest::Method::GET, "/router/", &[], None)
            .await
        else {
            return false;
        };
        let v = r.json();
        let Some(tasks) = v["tasks"].as_array() else {
            return false;
        };
        if tasks.len() != TASKS as usize {
            return false;
        }
        for t in tasks {
            let p = t["task"].as_i64().unwrap_or(-1) as i32;
            let (owner, standby) = if ta.contains(&p) {
                (ids.0, ids.1)
            } else {
                (ids.1, ids.0)
            };
            let standbys_ok = t["standbys"]
                .as_array()
                .is_some_and(|s| s.len() == 1 && s[0]["id"] == standby);
            if t["owner"]["id"] != owner || !standbys_ok {
                return false;
            }
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_forward_list_and_survive_a_kill_and_chromium_shows_the_table() {
    let broker = TestBroker::start(&[
        ("transactions", TASKS),
        ("user-to-amount-by-user-repartition", TASKS),
        ("user-to-amount-user_to_amount-changelog", TASKS),
    ])
    .await;
    broker.app(APP, TASKS);
    let bootstrap = broker.bootstrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Node::start("worker-a", &bootstrap, dir_a.path());
    let mut b = Node::start("worker-b", &bootstrap, dir_b.path());
    a.proc.wait_web(a.web, DEADLINE).await;
    b.proc.wait_web(b.web, DEADLINE).await;
    let (id_a, id_b) = (a.id().await, b.id().await);
    let t0 = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    while !cluster_ready(&mut a, &mut b, (&id_a, &id_b)).await {
        assert!(
            Instant::now() < deadline,
            "the workers did not share the tasks (each the other's standby) within \
             {DEADLINE:?}\n--- A:\n{}\n--- B:\n{}",
            tail(&a.proc.log()),
            tail(&b.proc.log())
        );
        tokio::time::sleep(TICK).await;
    }
    let (tasks_a, tasks_b) = (a.active().await, b.active().await);
    eprintln!(
        "cluster ready after {:?}: A = {id_a} owns {tasks_a:?}, B = {id_b} owns {tasks_b:?}",
        t0.elapsed()
    );

    let mut oracle = BTreeMap::new();
    send_transactions(&bootstrap, 0, 500, &mut oracle).await;
    let owner = |key: &str| -> String {
        if tasks_a.contains(&task_of(key)) {
            id_a.clone()
        } else {
            id_b.clone()
        }
    };
    let owners: BTreeSet<String> = oracle.keys().map(|k| owner(k)).collect();
    assert_eq!(owners.len(), 2, "the users are spread over both workers");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (la, lb) = (a.listing().await, b.listing().await);
        if la.as_ref() == Some(&oracle) && lb.as_ref() == Some(&oracle) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listings do not add up within {DEADLINE:?}: A {la:?}, B {lb:?}, expected {oracle:?}"
        );
        tokio::time::sleep(TICK).await;
    }
    eprintln!("both listings show all {} users", oracle.len());

    // Every key through either worker, served by its owner.
    for (user, total) in &oracle {
        for node in [&mut a, &mut b] {
            let r = node.get(&key_path(user)).await;
            assert_eq!(r.ok_json(), json!({ user.clone(): total }), "{user}");
            assert_eq!(
                r.header("x-faust-served-by"),
                Some(owner(user).as_str()),
                "{user}"
            );
            assert_eq!(r.header("x-faust-standby"), None);
        }
    }

    // A key of the other worker, written and deleted through either worker.
    let key_b = oracle.keys().find(|k| owner(k) == id_b).unwrap().clone();
    let key_a = oracle.keys().find(|k| owner(k) == id_a).unwrap().clone();
    let json_ct = ("content-type", "application/json");
    let form_ct = ("content-type", "application/x-www-form-urlencoded");
    for (via_a, key, other_owner) in [(true, &key_b, &id_b), (false, &key_a, &id_a)] {
        let (via, other) = if via_a {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let path = key_path(key);
        let r = via
            .send(reqwest::Method::PUT, &path, &[json_ct], Some("100000"))
            .await;
        assert_eq!(r.ok_json(), json!({ key.clone(): 100000 }));
        assert_eq!(r.header("x-faust-served-by"), Some(other_owner.as_str()));
        for n in [&mut *via, &mut *other] {
            assert_eq!(n.get(&path).await.ok_json(), json!({ key.clone(): 100000 }));
        }
        let r = other
            .send(
                reqwest::Method::POST,
                &path,
                &[form_ct],
                Some("value=200000"),
            )
            .await;
        assert_eq!(r.ok_json(), json!({ key.clone(): 200000 }));
        assert_eq!(
            via.get(&path).await.ok_json(),
            json!({ key.clone(): 200000 })
        );
        let r = via
            .send(reqwest::Method::PUT, &path, &[json_ct], Some("\"x\""))
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        let r = via.send(reqwest::Method::DELETE, &path, &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-faust-served-by"), Some(other_owner.as_str()));
        for n in [&mut *via, &mut *other] {
            let r = n.get(&path).await;
            assert_eq!(r.status, 404, "{}", r.body);
            assert!(r.json()["error"].is_string());
        }
        // Written back through the other worker (the listing below shows it again).
        let total = oracle[key];
        let r = other
            .send(
                reqwest::Method::PUT,
                &path,
                &[json_ct],
                Some(&total.to_string()),
            )
            .await;
        assert_eq!(r.ok_json(), json!({ key.clone(): total }));
    }
    eprintln!(
        "read, PUT, POST and DELETE of {key_b} (B's) through A and of {key_a} (A's) through B"
    );

    // A page listing through one worker: the keys of both, in pages.
    let mut gathered = Vec::new();
    let mut page = 1;
    loop {
        let r = a
            .get(&format!("/api/table/{TABLE}/?page={page}&size=7"))
            .await;
        assert_eq!(r.header("x-faust-incomplete"), None);
        let v = r.ok_json();
        assert_eq!(v["total"], json!(oracle.len()));
        assert_eq!(v["missing_workers"], json!([]));
        let mut keys: Vec<String> = v["results"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        gathered.extend(keys);
        match v["next"].as_u64() {
            Some(n) => page = n as usize,
            None => break,
        }
    }
    assert_eq!(gathered, oracle.keys().cloned().collect::<Vec<_>>());
    assert!(gathered.contains(&key_a) && gathered.contains(&key_b));
    assert_eq!(a.listing().await.as_ref(), Some(&oracle));

    // The table page in Chromium, served by A, with the keys of both workers.
    browse_table_page(a.web, &oracle).await;

    // B's keys, as A's standby copies hold them (a forwarded request is served locally).
    let keys_b: Vec<String> = oracle
        .keys()
        .filter(|k| owner(k) == id_b)
        .cloned()
        .collect();
    let deadline = Instant::now() + DEADLINE;
    'standby: loop {
        let mut all = true;
        for key in &keys_b {
            let r = a
                .send(
                    reqwest::Method::GET,
                    &key_path(key),
                    &[("x-faust-forwarded", "test")],
                    None,
                )
                .await;
            all &= r.status == 200
                && r.header("x-faust-standby") == Some("true")
                && r.json() == json!({ key.clone(): oracle[key] });
        }
        if all {
            break 'standby;
        }
        assert!(
            Instant::now() < deadline,
            "A's standby copy of B's keys is not current"
        );
        tokio::time::sleep(TICK).await;
    }

    // SIGKILL B: its keys are still read through A.
    let killed = Instant::now();
    b.proc.kill9();
    let mut seen: Vec<SurvivorRead> = Vec::new();
    for key in &keys_b {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = a
                .try_send(reqwest::Method::GET, &key_path(key), &[], None)
                .await;
            if let Some(r) = r {
                if r.status == 200 {
                    assert_eq!(r.json(), json!({ key.clone(): oracle[key] }), "{key}");
                    seen.push(SurvivorRead {
                        key: key.clone(),
                        after: killed.elapsed(),
                        standby: r.header("x-faust-standby") == Some("true"),
                        served_by: r.header("x-faust-served-by").map(str::to_owned),
                    });
                    break;
                }
                assert!(
                    r.status == 503 && r.header("retry-after").is_some(),
                    "only 503 with Retry-After while the owner moves: {} {}",
                    r.status,
                    r.body
                );
            }
            assert!(
                Instant::now() < deadline,
                "{key} is not readable through A within {DEADLINE:?} of B's kill"
            );
            tokio::time::sleep(TICK).await;
        }
    }
    let standby_reads = seen.iter().filter(|s| s.standby).count();
    let slowest = seen.iter().max_by_key(|s| s.after).expect("B had keys");
    eprintln!(
        "after SIGKILL of B: {} reads of B's keys through A succeeded within {:?} of the kill \
         (the last: {}): {standby_reads} from A's standby copy (x-faust-standby: true), {} \
         from A as the new owner",
        seen.len(),
        slowest.after,
        slowest.key,
        seen.len() - standby_reads
    );
    for s in &seen {
        assert_eq!(
            s.served_by.as_deref(),
            Some(id_a.as_str()),
            "served by A: {s:?}"
        );
    }

    // Then A takes B's tasks over and serves them as their owner.
    let deadline = Instant::now() + DEADLINE;
    while a.active().await.len() != TASKS as usize {
        assert!(Instant::now() < deadline, "A did not take B's tasks over");
        tokio::time::sleep(TICK).await;
    }
    let took_over = killed.elapsed();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut owned = true;
        for key in &keys_b {
            let r = a.get(&key_path(key)).await;
            assert_eq!(r.ok_json(), json!({ key.clone(): oracle[key] }));
            owned &= r.header("x-faust-standby").is_none();
        }
        if owned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A serves B's keys only from standby"
        );
        tokio::time::sleep(TICK).await;
    }
    eprintln!(
        "A owns every task {took_over:?} after the kill; it serves B's keys as their owner after {:?}",
        killed.elapsed()
    );
    // The whole table through A: complete once A's map no longer counts B as a live
    // worker (before, the page says `x-faust-incomplete` and names B in
    // `missing_workers`, though A holds every entry).
    let deadline = Instant::now() + DEADLINE;
    let mut incomplete = 0;
    loop {
        let r = a.get(&format!("/api/table/{TABLE}/?size=10000")).await;
        let v = r.ok_json();
        if r.header("x-faust-incomplete").is_none() {
            assert_eq!(v["missing_workers"], json!([]));
            let got: BTreeMap<String, i64> = v["results"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
                .collect();
            assert_eq!(got, oracle, "the listing through A after the kill");
            break;
        }
        assert_eq!(v["missing_workers"], json!([id_b]), "{v}");
        incomplete += 1;
        assert!(
            Instant::now() < deadline,
            "the listing through A stays incomplete: {v}"
        );
        tokio::time::sleep(TICK).await;
    }
    eprintln!(
        "the listing through A is complete again {:?} after the kill ({incomplete} incomplete \
         answers before, naming B in missing_workers)",
        killed.elapsed()
    );

    a.proc.signal("TERM");
    let status = a.proc.wait_exit(DEADLINE).await;
    assert!(status.success(), "A stops cleanly: {status}");
}

/// A successful read through the survivor after the kill.
#[derive(Debug)]
struct SurvivorRead {
    key: String,
    /// Since the kill.
    after: Duration,
    /// Served from a standby copy (`x-faust-standby: true`).
    standby: bool,
    served_by: Option<String>,
}

/// The table page of the worker on `port` in headless Chromium: every key and value of
/// `oracle`, keys as text (escaped), links to each key's page; a screenshot.
async fn browse_table_page(port: u16, oracle: &BTreeMap<String, i64>) {
    let Some(browser) = Browser::start("the table page in Chromium").await else {
        return;
    };
    let url = format!("http://127.0.0.1:{port}/api/table/{TABLE}/");
    browser.goto(&url).await;
    let page = browser
        .execute(
            r#"
var rows = Array.prototype.map.call(document.querySelectorAll('table tr'), function (tr) {
  var cells = tr.querySelectorAll('td');
  if (cells.length < 2) { return null; }
  var a = cells[0].querySelector('a');
  return [cells[0].textContent, cells[1].textContent, a ? a.getAttribute('href') : null];
}).filter(function (r) { return r !== null; });
return {
  title: document.title,
  h1: document.querySelector('h1') ? document.querySelector('h1').textContent : null,
  rows: rows,
  injected: document.querySelectorAll('td b, td script').length,
  text: document.body.innerText.slice(0, 200)
};
"#,
        )
        .await;
    assert_eq!(page["h1"], json!(format!("Table {TABLE}")), "{page}");
    let rows: Vec<(String, String, String)> = page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
                r[2].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let shown: BTreeMap<String, String> = rows
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    let want: BTreeMap<String, String> = oracle
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    assert_eq!(shown, want, "the page shows every key and value");
    assert!(
        shown.contains_key("<b>x</b>"),
        "the key <b>x</b> shown as text"
    );
    assert_eq!(page["injected"], json!(0), "no markup from keys: {page}");
    let png = browser.screenshot().await;
    let file = save_artifact("table-page.png", &png);
    eprintln!(
        "Chromium shows {} rows at {url}; screenshot: {}",
        rows.len(),
        file.display()
    );

    // A key's link leads to its page.
    let (key, value, href) = rows
        .iter()
        .find(|(k, _, _)| k == "<b>x</b>")
        .expect("the row of <b>x</b>")
        .clone();
    browser
        .goto(&format!("http://127.0.0.1:{port}{href}"))
        .await;
    let one = browser
        .execute(
            "return {h2: document.querySelector('h2').textContent, pre: document.querySelector('pre').textContent, injected: document.querySelectorAll('h2 b').length};",
        )
        .await;
    assert_eq!(one["h2"], json!(key), "{one}");
    assert_eq!(one["pre"], json!(value), "{one}");
    assert_eq!(one["injected"], json!(0));
    browser.close().await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
