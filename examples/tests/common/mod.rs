//! Shared helpers of the process-level tests: child processes that are killed when a test
//! fails, a broker, producing input events, collecting what the test app wrote, committed
//! offsets, and waiting for conditions (never for a fixed time).
#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::future::Future;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka_async::{
    ClientConfig, Consumer, MockCluster, MockListener, Offset, Producer, Record, TopicPartitionList,
};

/// The test app (`examples/src/bin/faust-testapp.rs`).
pub const TESTAPP: &str = env!("CARGO_BIN_EXE_faust-testapp");
/// The `faust` program (built from `faust-rs/src/bin/faust.rs` as `faust-cli`).
pub const FAUST: &str = env!("CARGO_BIN_EXE_faust-cli");

/// How often conditions are checked.
const POLL: Duration = Duration::from_millis(25);

/// A free loopback port (bound once, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until `cond` holds, checking every few milliseconds; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// As [`wait_until`], with an asynchronous condition.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A child process with its output in a log file. Dropping it kills the process (SIGKILL)
/// if it still runs, and prints the log if the test is failing.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to a log file, and without inheriting
    /// `FAUST*` variables from the test's environment.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let log = std::env::temp_dir().join(format!(
            "faust-test-{}-{}-{}.log",
            std::process::id(),
            name,
            unique()
        ));
        let file = File::create(&log).expect("a log file");
        for (key, _) in std::env::vars() {
            if key.starts_with("FAUST") {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file handle"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (`TERM`, `INT`, ...) with kill(1): no `unsafe` outside rdkafka-async.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.name);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) -> ExitStatus {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait"));
        }
        self.status.expect("an exit status")
    }

    /// The exit status, if the process exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits (at most `timeout`) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        wait_until(&what, timeout, || self.try_status().is_some()).await;
        self.status.expect("an exit status")
    }

    /// What the process wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the worker's web server answers `/status` on `port`.
    pub async fn wait_web(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while worker_status(port).await.is_none() {
            if let Some(status) = self.try_status() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on port {port} within {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the log contains `needle`; returns the log.
    pub async fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "{} exited ({status}) before writing {needle:?}; its output:\n{log}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not write {needle:?} within {timeout:?}; its output:\n{log}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let running = self.try_status().is_none();
        if running {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            };
            eprintln!(
                "----- {} ({}), last lines of {} -----\n{tail}\n-----",
                self.name,
                if running { "killed" } else { "exited" },
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The outcome of a short command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a short command to its end (killed after `timeout`), capturing its output.
pub async fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let timeout = Duration::from_secs(60);
    let dir = std::env::temp_dir();
    let n = unique();
    let out_path = dir.join(format!("faust-test-{}-cmd-{n}.out", std::process::id()));
    let err_path = dir.join(format!("faust-test-{}-cmd-{n}.err", std::process::id()));
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("FAUST") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd.stdout(File::create(&out_path).expect("an output file"));
    cmd.stderr(File::create(&err_path).expect("an output file"));
    let mut child = cmd.spawn().expect("starting a command");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let read = |p: &PathBuf| {
        let s = std::fs::read_to_string(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        s
    };
    Output {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// A worker's `/status` document, if it answers on `port`.
pub async fn worker_status(port: u16) -> Option<serde_json::Value> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/status"))
        .await
        .ok()?;
    resp.error_for_status().ok()?.json().await.ok()
}

/// The settings every worker of these tests gets when it runs on a shared broker: a member
/// that disappears (SIGKILL) is noticed after 3 s instead of 45 s, and the mock cluster
/// makes a group that emptied wait the session timeout (less 1 s) before it rejoins.
pub const SHARED_BROKER_ENV: &[(&str, &str)] = &[
    ("FAUST_KAFKA_SESSION_TIMEOUT_MS", "3000"),
    ("FAUST_KAFKA_HEARTBEAT_INTERVAL_MS", "500"),
];

/// Starts a test app worker on `broker`, with `env` on top of [`SHARED_BROKER_ENV`].
pub fn spawn_worker(name: &str, broker: &str, web_port: Option<u16>, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(TESTAPP);
    cmd.args(["--broker", broker]);
    match web_port {
        Some(p) => cmd.args(["--web-port", &p.to_string()]),
        None => cmd.arg("--without-web"),
    };
    cmd.arg("worker");
    cmd.envs(SHARED_BROKER_ENV.iter().copied());
    cmd.envs(env.iter().copied());
    Proc::spawn(name, cmd)
}

/// librdkafka's mock cluster in the test process, listening on a free loopback port.
pub struct TestBroker {
    // Declared first: the forwarders stop before the cluster goes.
    listener: MockListener,
    cluster: MockCluster,
}

impl TestBroker {
    /// One broker with `topics` (name, partitions).
    pub async fn start(topics: &[(&str, i32)]) -> Self {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        for (name, partitions) in topics {
            cluster.create_topic(name, *partitions, 1).expect("a topic");
        }
        let listener = cluster.listen_on(0).await.expect("a listening port");
        Self { listener, cluster }
    }

    pub fn bootstrap(&self) -> String {
        self.listener.bootstrap_servers()
    }

    /// Makes app `id`'s tasks topic with `tasks` partitions (the mock has no
    /// CreateTopics); returns `id`.
    pub fn app<'a>(&self, id: &'a str, tasks: i32) -> &'a str {
        let _ = self
            .cluster
            .create_topic(&format!("{id}-__assignor"), tasks, 1);
        let _ = self.cluster.create_topic(&format!("{id}-__cluster"), 1, 1);
        id
    }

    pub fn cluster(&self) -> &MockCluster {
        &self.cluster
    }
}

/// Produces `values` (unkeyed) to `topic`; waits for every delivery.
pub async fn produce_values(bootstrap: &str, topic: &str, values: &[&str]) {
    let producer =
        Producer::new(ClientConfig::new().bootstrap_servers(bootstrap)).expect("a producer");
    for v in values {
        producer
            .send(Record::to(topic).value(v))
            .await
            .expect("enqueued")
            .await
            .expect("delivered");
    }
}

/// Where each produced event went.
pub type Positions = BTreeMap<u64, (i32, i64)>;

/// Produces the events `{"id": i}` for `ids` to `topic`, event `i` to partition
/// `i % partitions`, keyed by `i`; waits for every delivery.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    ids: impl IntoIterator<Item = u64>,
) -> Positions {
    let producer = Producer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .linger(Duration::from_millis(5)),
    )
    .expect("a producer");
    let mut pending = Vec::new();
    for id in ids {
        let value = format!("{{\"id\": {id}}}");
        let key = id.to_string();
        let record = Record::to(topic)
            .key(&key)
            .value(&value)
            .partition((id % partitions as u64) as i32);
        pending.push((id, producer.send(record).await.expect("enqueued")));
    }
    let mut positions = Positions::new();
    for (id, delivery) in pending {
        let d = delivery.await.expect("delivered");
        positions.insert(id, (d.partition, d.offset));
    }
    positions
}

/// One record of the test app's output topic.
#[derive(Debug, Clone)]
pub struct Processed {
    pub id: u64,
    pub worker: String,
}

/// Reads an output topic from its beginning in the background.
pub struct Collector {
    records: Arc<Mutex<Vec<Processed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub fn start(bootstrap: &str, topic: &str, partitions: i32) -> Self {
        let consumer = Consumer::new(
            ClientConfig::new()
                .bootstrap_servers(bootstrap)
                .group_id(format!("collector-{}-{}", std::process::id(), unique()))
                .enable_auto_commit(false),
        )
        .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add(topic, p, Offset::Beginning);
        }
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let task = tokio::spawn(async move {
            let mut consumer = consumer;
            // From the beginning: nothing is missed by assigning in the task.
            consumer.assign(&tpl).await.expect("assign");
            loop {
                match consumer.recv().await {
                    Ok(m) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(m.payload().unwrap_or_default())
                                .expect("the output is JSON");
                        sink.lock().unwrap().push(Processed {
                            id: v["id"].as_u64().expect("an id"),
                            worker: v["worker"].as_str().unwrap_or_default().to_owned(),
                        });
                    }
                    Err(err) => eprintln!("collector: {err}"),
                }
            }
        });
        Self { records, task }
    }

    pub fn records(&self) -> Vec<Processed> {
        self.records.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// The distinct ids seen.
    pub fn ids(&self) -> BTreeSet<u64> {
        self.records.lock().unwrap().iter().map(|r| r.id).collect()
    }

    /// Waits until every id of `expected` was seen.
    pub async fn wait_for_all(&self, expected: &BTreeSet<u64>, timeout: Duration) {
        let what = format!("{} ids in the output", expected.len());
        wait_until(&what, timeout, || expected.is_subset(&self.ids())).await;
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The group's committed offset of each partition of `topic` (0 where none).
pub async fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id(group)
            .enable_auto_commit(false),
    )
    .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add(topic, p, Offset::Invalid);
    }
    let answer = consumer
        .committed(&tpl, Duration::from_secs(30))
        .await
        .expect("committed offsets");
    (0..partitions)
        .map(|p| {
            answer
                .find(topic, p)
                .and_then(|tp| tp.offset.absolute())
                .unwrap_or(0)
        })
        .collect()
}

/// How many times each id occurs in `records`.
pub fn counts(records: &[Processed]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.id).or_default() += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Example binaries and a headless browser (web_cluster.rs).

/// The example `name` (e.g. `user_to_amount`), next to the test binary in
/// `<target>/<profile>/examples/`: Cargo tells integration tests where their package's
/// binaries are, not its examples. `cargo test -p examples` builds the examples before the
/// tests; `cargo test -p examples --test <file>` does not (run `cargo build -p examples
/// --example <name>` first, with the same `CARGO_TARGET_DIR`). Panics if the binary is
/// missing or older than the sources it is built from.
pub fn example_binary(name: &str) -> PathBuf {
    use std::path::Path;
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "the example binary {} is missing: run `cargo build -p examples --example \
                 {name}` first (with the same CARGO_TARGET_DIR), or `cargo test -p examples`",
                bin.display()
            )
        });
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        manifest.join(format!("{name}.rs")),
        manifest.join("../faust-rs/src"),
        manifest.join("../rdkafka-async/src"),
    ];
    if let Some(newer) = sources.iter().find_map(|s| newer_file(s, built)) {
        panic!(
            "the example binary {} is older than {}: rebuild it with `cargo build -p examples \
             --example {name}` (or run `cargo test -p examples`)",
            bin.display(),
            newer.display()
        );
    }
    bin
}

/// A file under `path` modified after `t`.
fn newer_file(path: &std::path::Path, t: std::time::SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| newer_file(&e.path(), t))
    } else {
        (meta.modified().ok()? > t).then(|| path.to_owned())
    }
}

/// A program: the path in the environment variable `env`, or the first of `names` in
/// `$PATH`.
pub fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Saves `bytes` as `target/test-artifacts/<name>`; returns the path.
pub fn save_artifact(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    let file = dir.join(name);
    std::fs::write(&file, bytes).expect("the artifact is saved");
    file
}

/// A headless Chromium (Debian's `chromium`) driven through `chromedriver` (WebDriver).
/// Dropping it ends the session and kills the driver.
///
/// [`Browser::start`] skips (returns `None`, with a message) when `chromium` is not
/// installed, unless `FAUST_REQUIRE_BROWSER` is set (CI sets it): then it panics.
/// `CHROMIUM` and `CHROMEDRIVER` may name the binaries.
pub struct Browser {
    driver: Child,
    port: u16,
    http: reqwest::Client,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(what: &str) -> Option<Self> {
        let required = std::env::var_os("FAUST_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty());
        let Some(chromium) = find_program("CHROMIUM", &["chromium", "chromium-browser"]) else {
            assert!(
                !required,
                "FAUST_REQUIRE_BROWSER is set but `chromium` is not installed (apt-get install \
                 chromium chromium-driver)"
            );
            eprintln!(
                "SKIPPED {what}: `chromium` is not installed (apt-get install chromium \
                 chromium-driver; set FAUST_REQUIRE_BROWSER=1 to make this a failure)"
            );
            return None;
        };
        let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]).expect(
            "`chromium` is installed but `chromedriver` is not: apt-get install chromium-driver",
        );
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Self {
            driver,
            port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            session: None,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(v) = browser.call(reqwest::Method::GET, "/status", None).await {
                if v["ready"] == true {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(POLL).await;
        }
        let created = browser
            .call(
                reqwest::Method::POST,
                "/session",
                Some(serde_json::json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {
                            "binary": chromium,
                            "args": [
                                "--headless=new",
                                "--no-sandbox",
                                "--disable-gpu",
                                "--disable-dev-shm-usage",
                                "--window-size=1200,1000",
                                format!("--user-data-dir={}", browser._profile.path().display()),
                            ]
                        }
                    }}
                })),
            )
            .await
            .expect("a browser session");
        browser.session = Some(
            created["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
        );
        Some(browser)
    }

    /// A WebDriver call; the `value` of its answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url}: {status}: {v}"));
        }
        Ok(v["value"].clone())
    }

    fn session_path(&self, tail: &str) -> String {
        format!(
            "/session/{}{tail}",
            self.session.as_deref().expect("a session")
        )
    }

    /// Opens `url` (returns once the page loaded).
    pub async fn goto(&self, url: &str) {
        let path = self.session_path("/url");
        self.call(
            reqwest::Method::POST,
            &path,
            Some(serde_json::json!({ "url": url })),
        )
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn execute(&self, script: &str) -> serde_json::Value {
        let path = self.session_path("/execute/sync");
        self.call(
            reqwest::Method::POST,
            &path,
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
        .await
        .unwrap_or_else(|e| panic!("running a script: {e}"))
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let path = self.session_path("/screenshot");
        let shot = self
            .call(reqwest::Method::GET, &path, None)
            .await
            .unwrap_or_else(|e| panic!("a screenshot: {e}"));
        let png = base64_decode(shot.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
        png
    }

    /// Ends the session (the browser exits) and the driver.
    pub async fn close(mut self) {
        if self.session.is_some() {
            let path = self.session_path("");
            let _ = self.call(reqwest::Method::DELETE, &path, None).await;
            self.session = None;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A session still open (the test failed): end it with a plain HTTP request, so
        // that the browser does not outlive the driver.
        if let Some(id) = self.session.take() {
            use std::io::{Read as _, Write as _};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Base64 (standard alphabet, padded) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
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
            _ => panic!("not base64: {c}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
