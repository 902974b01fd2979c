//! Tables across worker processes: the `user_to_amount` example (sum of amounts per user,
//! repartitioned by user, in a table with a changelog) run as several `user_to_amount
//! worker` processes on one broker, killed, restarted and joined.
//!
//! The broker is librdkafka's mock cluster inside the test process (`TestBroker`): it has
//! no CreateTopics, so every topic of the app is made up front; and it drops the oldest
//! data of a partition past 5 MiB, so every read of a changelog (or of an input topic)
//! checks that the partition's low watermark is still 0, and the sizes are chosen to fit.
//!
//! The final table is computed from outside: [`TableReader`] reads the changelog from its
//! beginning with the rules of `faust-rs/src/table/changelog.rs` (data applies when the
//! commit marker that ends its flush arrives; data followed by an abort marker is dropped),
//! and is compared with the oracle: the per-user sums of the events produced. Every event
//! has a distinct amount (its id + 1), so a duplicate anywhere on the way is visible.
//!
//! The workers' state is read from their `/status` (`active_tasks`, `worker_id`, the
//! cluster map, `stats.recovered_records`, commit points). The app id is the example's
//! (`user-to-amount`): each test has a broker of its own instead.
//!
//! `group_by`'s forward is at least once, so a SIGKILL duplicates events in the repartition
//! topic; forwarded records carry their origin, and the table's stream skips those it has
//! seen (the marks are in the commit markers), so the table is still exact:
//! `three_workers_sum_exactly_through_a_kill_and_a_join` checks it against the oracle, and
//! `three_workers_table_is_exactly_its_source_through_a_kill_and_a_join` also checks which
//! events the repartition topic holds twice.
//!
//! Default sizes keep the file to a few minutes; `FAUST_TEST_LARGE=1` runs the large
//! variants (1,000,000 events over 10,000 users in the first test). The tests of this file
//! run one at a time (they share 2 cores).
//!
//! The example binary: Cargo gives integration tests the paths of their package's binaries
//! only (`CARGO_BIN_EXE_*`), not of its examples; it is found next to the test binary
//! (`<target>/<profile>/examples/user_to_amount`). `cargo test -p examples` builds the
//! examples before running the tests; `cargo test -p examples --test tables_cluster` does
//! not (build it with `cargo build -p examples --example user_to_amount` then).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka_async::{
    ClientConfig, Compression, Consumer, Message, Offset, Producer, Record, TopicPartitionList,
};

const APP: &str = "user-to-amount";
const TRANSACTIONS: &str = "transactions";
const REPARTITION: &str = "user-to-amount-by-user-repartition";
const CHANGELOG: &str = "user-to-amount-user_to_amount-changelog";
/// The app's tasks: partitions of every topic and of the table.
const TASKS: i32 = 8;
/// How often the workers' state is looked at.
const TICK: Duration = Duration::from_millis(100);

/// The tests of this file run one at a time: each starts several worker processes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn large() -> bool {
    std::env::var("FAUST_TEST_LARGE").is_ok_and(|v| v == "1")
}

// ---------------------------------------------------------------------------------------
// The example binary and its worker processes.

/// The `user_to_amount` example, next to the test binary (looked for once).
fn example_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_example_bin).clone()
}

fn find_example_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/tables_cluster-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("user_to_amount{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "the example binary {} is missing. `cargo test -p examples` builds the \
                 examples before running the tests, but `cargo test -p examples --test \
                 tables_cluster` does not: run `cargo build -p examples --example \
                 user_to_amount` first (with the same CARGO_TARGET_DIR)",
                bin.display()
            )
        });
    // A binary older than the sources it is built from tests old code. Cargo lists them
    // in the dep-info file next to it.
    let depinfo = std::fs::read_to_string(bin.with_extension("d")).unwrap_or_default();
    let sources = depinfo
        .split_once(": ")
        .map(|(_, deps)| deps.lines().next().unwrap_or_default())
        .unwrap_or_default();
    let newer = sources.split_whitespace().map(Path::new).find(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > built)
    });
    if let Some(newer) = newer {
        panic!(
            "the example binary {} is older than {}: rebuild it with `cargo build -p \
             examples --example user_to_amount` (or run `cargo test -p examples`)",
            bin.display(),
            newer.display()
        );
    }
    bin
}

/// An HTTP client that gives up: a worker that does not answer fails the test instead of
/// hanging it.
fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client")
    })
}

/// A `user_to_amount worker` process with its web port and data directory.
struct Worker {
    proc: Proc,
    web: u16,
    datadir: PathBuf,
}

impl Worker {
    fn start(name: &str, bootstrap: &str, datadir: &Path) -> Self {
        let web = free_port();
        let mut cmd = Command::new(example_bin());
        cmd.arg("--broker")
            .arg(format!("kafka://{bootstrap}"))
            .arg("--datadir")
            .arg(datadir)
            .arg("--web-port")
            .arg(web.to_string())
            .arg("worker");
        cmd.envs([
            ("FAUST_COMMIT_INTERVAL", "200ms"),
            // A member that disappears is noticed after 2 s; the mock makes a group that
            // emptied wait the session timeout (less 1 s) before it rejoins.
            ("FAUST_KAFKA_SESSION_TIMEOUT_MS", "2000"),
            ("FAUST_KAFKA_HEARTBEAT_INTERVAL_MS", "200"),
        ]);
        Self {
            proc: Proc::spawn(name, cmd),
            web,
            datadir: datadir.to_owned(),
        }
    }

    /// `GET path` of its web server, as JSON; `None` if it does not answer (yet). Panics
    /// (with its log) if it exited.
    async fn get(&mut self, path: &str) -> Option<serde_json::Value> {
        if let Some(status) = self.proc.try_status() {
            panic!("{} exited ({status}):\n{}", self.proc.name, self.proc.log());
        }
        let resp = http()
            .get(format!("http://127.0.0.1:{}{path}", self.web))
            .send()
            .await
            .ok()?;
        resp.error_for_status().ok()?.json().await.ok()
    }

    /// Its `/status`.
    async fn status(&mut self) -> Option<serde_json::Value> {
        self.get("/status").await
    }

    /// Waits until its web server answers.
    async fn wait_web(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.status().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{} did not answer on port {}:\n{}",
                self.proc.name,
                self.web,
                self.proc.log()
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// The tasks it processes (`active_tasks` of `/status`).
    async fn active(&mut self) -> BTreeSet<i32> {
        self.status()
            .await
            .map(|s| tasks(&s["active_tasks"]))
            .unwrap_or_default()
    }

    /// The changelog records it read (restores and standby copies):
    /// `stats.recovered_records` of `/status`.
    async fn recovered(&mut self) -> u64 {
        let status = self.status().await.expect("/status answers");
        status["stats"]["recovered_records"]
            .as_u64()
            .expect("stats.recovered_records in /status")
    }

    /// SIGTERM, and waits for a clean exit.
    async fn stop(&mut self) {
        self.proc.signal("TERM");
        let status = self.proc.wait_exit(Duration::from_secs(90)).await;
        assert!(
            status.success(),
            "{} did not stop cleanly ({status}):\n{}",
            self.proc.name,
            self.proc.log()
        );
    }
}

/// A JSON list of task numbers.
fn tasks(list: &serde_json::Value) -> BTreeSet<i32> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_i64())
                .map(|t| t as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// A worker's entry in a cluster map (the `cluster` of `/status`): its active and standby
/// tasks.
fn entry(status: &serde_json::Value, id: &str) -> Option<(BTreeSet<i32>, BTreeSet<i32>)> {
    let w = &status["cluster"]["workers"][id];
    w.is_object()
        .then(|| (tasks(&w["active"]), tasks(&w["standby"])))
}

/// The active tasks of each worker (in order), once they cover every task exactly once
/// with none idle; `None` before.
async fn settled(workers: &mut [&mut Worker]) -> Option<Vec<BTreeSet<i32>>> {
    let mut sets = Vec::new();
    for w in workers.iter_mut() {
        sets.push(w.active().await);
    }
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    let ok = total == TASKS as usize
        && union == (0..TASKS).collect()
        && sets.iter().all(|s| !s.is_empty());
    ok.then_some(sets)
}

async fn wait_settled(workers: &mut [&mut Worker], timeout: Duration) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(sets) = settled(workers).await {
            return sets;
        }
        if Instant::now() > deadline {
            let mut seen = Vec::new();
            for w in workers.iter_mut() {
                seen.push((w.proc.name.clone(), w.active().await));
            }
            panic!("the workers did not share the {TASKS} tasks within {timeout:?}: {seen:?}");
        }
        tokio::time::sleep(TICK).await;
    }
}

// ---------------------------------------------------------------------------------------
// The broker and the events.

async fn start_broker() -> TestBroker {
    let broker = TestBroker::start(&[
        (TRANSACTIONS, TASKS),
        (REPARTITION, TASKS),
        (CHANGELOG, TASKS),
    ])
    .await;
    // The tasks topic and the cluster topic.
    broker.app(APP, TASKS);
    broker
}

/// The task (partition) of a user: where `group_by` sends its transactions (the key is
/// the user id's bytes) and where its total lives.
fn task_of(user: &str) -> i32 {
    faust::table::partition_for(user.as_bytes(), TASKS)
}

/// Event `i`: a user (pseudo-random among `users`) and the amount `i + 1`, distinct per
/// event.
fn event(i: u64, users: u64) -> (String, i64) {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    (format!("u{}", x % users), i as i64 + 1)
}

/// The per-user sums of events `ids`.
fn oracle(ids: impl IntoIterator<Item = u64>, users: u64, into: &mut BTreeMap<String, i64>) {
    for i in ids {
        let (user, amount) = event(i, users);
        *into.entry(user).or_default() += amount;
    }
}

fn producer(bootstrap: &str) -> Producer {
    Producer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .linger(Duration::from_millis(20))
            .compression(Compression::Lz4),
    )
    .expect("a producer")
}

/// Sends `(user, amount)` transactions, each to its user's partition of `transactions`
/// (so a user's events stay in one task from end to end); waits for every delivery.
async fn send_transactions(producer: &Producer, events: &[(String, i64)]) {
    let mut pending = Vec::with_capacity(events.len());
    for (user, amount) in events {
        let value = format!("{{\"user\":\"{user}\",\"amount\":{amount}}}");
        let record = Record::to(TRANSACTIONS)
            .key(user)
            .value(&value)
            .partition(task_of(user));
        pending.push(producer.send(record).await.expect("enqueued"));
    }
    for d in pending {
        d.await.expect("delivered");
    }
}

/// Sends events `ids`, in chunks.
async fn send_events(producer: &Producer, ids: std::ops::Range<u64>, users: u64) {
    let mut i = ids.start;
    while i < ids.end {
        let end = (i + 5000).min(ids.end);
        let events: Vec<(String, i64)> = (i..end).map(|i| event(i, users)).collect();
        send_transactions(producer, &events).await;
        i = end;
    }
}

/// Sends events `ids` at about `rate` per second in the background; `produced` counts
/// what was delivered, `stop` ends it early.
fn produce_paced(
    bootstrap: &str,
    ids: std::ops::Range<u64>,
    users: u64,
    rate: u64,
    produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let producer = producer(bootstrap);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let chunk = (rate / 10).max(1);
        let mut i = ids.start;
        while i < ids.end && !stop.load(Ordering::Relaxed) {
            let end = (i + chunk).min(ids.end);
            let events: Vec<(String, i64)> = (i..end).map(|i| event(i, users)).collect();
            send_transactions(&producer, &events).await;
            produced.store(end, Ordering::SeqCst);
            i = end;
            // Pacing, not waiting for something.
            let due = started + Duration::from_secs_f64((i - ids.start) as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        i
    })
}

// ---------------------------------------------------------------------------------------
// Offsets.

/// Asks the broker for watermarks and the app group's committed offsets.
struct Offsets {
    consumer: Consumer,
}

impl Offsets {
    fn new(bootstrap: &str) -> Self {
        // A consumer with the app's group id that never subscribes: it only asks for the
        // group's committed offsets (OffsetFetch), without joining the group.
        let consumer = Consumer::new(
            ClientConfig::new()
                .bootstrap_servers(bootstrap)
                .group_id(APP)
                .enable_auto_commit(false),
        )
        .expect("a consumer");
        Self { consumer }
    }

    /// The high watermarks of `topic`, checking that no data was dropped (low watermark
    /// 0: the mock drops the oldest data past 5 MiB per partition).
    async fn ends(&self, topic: &str) -> Vec<i64> {
        let mut ends = Vec::new();
        for p in 0..TASKS {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .await
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "{topic}[{p}] lost its oldest records (low watermark {low}): the mock \
                 broker keeps 5 MiB per partition; the test's data is too large"
            );
            ends.push(high);
        }
        ends
    }

    /// The group's committed offsets of `topics` (0 where none), by topic.
    async fn committed(&self, topics: &[&str]) -> BTreeMap<String, Vec<i64>> {
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            for p in 0..TASKS {
                tpl.add(t, p, Offset::Invalid);
            }
        }
        let answer = self
            .consumer
            .committed(&tpl, Duration::from_secs(30))
            .await
            .expect("committed offsets");
        topics
            .iter()
            .map(|t| {
                let offsets = (0..TASKS)
                    .map(|p| {
                        answer
                            .find(t, p)
                            .and_then(|tp| tp.offset.absolute())
                            .unwrap_or(0)
                    })
                    .collect();
                (t.to_string(), offsets)
            })
            .collect()
    }

    /// Whether the group committed every partition of the input and repartition topics
    /// to its end.
    async fn all_committed(&self) -> bool {
        let committed = self.committed(&[TRANSACTIONS, REPARTITION]).await;
        for t in [TRANSACTIONS, REPARTITION] {
            if committed[t] != self.ends(t).await {
                return false;
            }
        }
        true
    }

    async fn wait_all_committed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.all_committed().await {
            if Instant::now() > deadline {
                let committed = self.committed(&[TRANSACTIONS, REPARTITION]).await;
                panic!(
                    "the group did not commit its input to the end within {timeout:?}: \
                     transactions committed {:?} of {:?}, repartition committed {:?} of {:?}",
                    committed[TRANSACTIONS],
                    self.ends(TRANSACTIONS).await,
                    committed[REPARTITION],
                    self.ends(REPARTITION).await
                );
            }
            tokio::time::sleep(TICK * 2).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The table, from its changelog.

/// What was read of one changelog partition.
#[derive(Debug, Default, Clone)]
struct PartitionLog {
    /// The next offset to read.
    position: i64,
    /// Data records of the flush in progress (before its marker).
    held: Vec<(String, Option<i64>)>,
    /// Data records read.
    data: u64,
    /// Data records applied (their commit marker came).
    applied: u64,
    /// Data records dropped by abort markers.
    aborted: u64,
    commit_markers: u64,
    abort_markers: u64,
    /// The commit markers: offset and source positions.
    markers: Vec<(i64, Positions)>,
}

/// Source positions of a commit marker: (topic, partition, next offset).
type Positions = Vec<(String, i32, i64)>;

/// Reads the changelog of `user_to_amount` from its beginning, applying the marker rules,
/// and then what is appended to it.
struct TableReader {
    consumer: Consumer,
    offsets: Offsets,
    parts: Vec<PartitionLog>,
    table: BTreeMap<String, i64>,
}

impl TableReader {
    async fn new(bootstrap: &str) -> Self {
        let consumer = Consumer::new(
            ClientConfig::new()
                .bootstrap_servers(bootstrap)
                .group_id(format!("table-reader-{}", std::process::id()))
                .enable_auto_commit(false),
        )
        .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..TASKS {
            tpl.add(CHANGELOG, p, Offset::Beginning);
        }
        consumer.assign(&tpl).await.expect("assign");
        Self {
            consumer,
            offsets: Offsets::new(bootstrap),
            parts: vec![PartitionLog::default(); TASKS as usize],
            table: BTreeMap::new(),
        }
    }

    /// Reads to the current end of every partition.
    async fn catch_up(&mut self) -> &BTreeMap<String, i64> {
        let ends = self.offsets.ends(CHANGELOG).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self
            .parts
            .iter()
            .zip(&ends)
            .any(|(part, end)| part.position < *end)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(m)) => self.apply(&m),
                Ok(Err(err)) => eprintln!("table reader: {err}"),
                Err(_) => panic!(
                    "reading the changelog to {ends:?} took over 120 s (at {:?})",
                    self.parts.iter().map(|p| p.position).collect::<Vec<_>>()
                ),
            }
        }
        &self.table
    }

    fn apply(&mut self, m: &Message) {
        let part = &mut self.parts[m.partition() as usize];
        if m.offset() < part.position {
            return;
        }
        part.position = m.offset() + 1;
        match m.headers().last("faust-marker") {
            Some(Some(b"commit")) => {
                let marker: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("a commit marker's value is JSON");
                let sources: Vec<(String, i32, i64)> =
                    serde_json::from_value(marker["sources"].clone())
                        .unwrap_or_else(|e| panic!("a commit marker's sources: {e}: {marker}"));
                part.markers.push((m.offset(), sources));
                assert_eq!(m.key(), Some(&b"__faust_marker__"[..]));
                part.commit_markers += 1;
                part.applied += part.held.len() as u64;
                for (user, total) in part.held.drain(..) {
                    match total {
                        Some(t) => self.table.insert(user, t),
                        None => self.table.remove(&user),
                    };
                }
            }
            Some(Some(b"abort")) => {
                part.abort_markers += 1;
                part.aborted += part.held.len() as u64;
                part.held.clear();
            }
            Some(other) => panic!(
                "an unknown marker {:?} at {CHANGELOG}[{}]@{}",
                other.map(String::from_utf8_lossy),
                m.partition(),
                m.offset()
            ),
            None => {
                let user = String::from_utf8(m.key().expect("a data record has a key").to_vec())
                    .expect("a user id");
                let total = m
                    .payload()
                    .map(|v| serde_json::from_slice::<i64>(v).expect("a total is a JSON number"));
                assert_eq!(
                    task_of(&user),
                    m.partition(),
                    "user {user}'s total is in changelog partition {} (expected its task)",
                    m.partition()
                );
                part.data += 1;
                part.held.push((user, total));
            }
        }
    }

    /// Totals over partitions `ps` of a per-partition figure.
    fn sum(&self, ps: impl IntoIterator<Item = i32>, f: impl Fn(&PartitionLog) -> u64) -> u64 {
        ps.into_iter().map(|p| f(&self.parts[p as usize])).sum()
    }

    fn all(&self, f: impl Fn(&PartitionLog) -> u64) -> u64 {
        self.sum(0..TASKS, f)
    }

    fn summary(&self) -> String {
        format!(
            "{} data records ({} applied, {} dropped by {} abort markers, {} after the last \
             marker), {} commit markers, {} users",
            self.all(|p| p.data),
            self.all(|p| p.applied),
            self.all(|p| p.aborted),
            self.all(|p| p.abort_markers),
            self.all(|p| p.held.len() as u64),
            self.all(|p| p.commit_markers),
            self.table.len()
        )
    }

    /// Waits until the table read from the changelog equals `expected`.
    async fn wait_for(&mut self, expected: &BTreeMap<String, i64>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.catch_up().await == expected {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the table read from the changelog did not equal the oracle within \
                     {timeout:?}: {}; changelog: {}",
                    diff(&self.table, expected),
                    self.summary()
                );
            }
            tokio::time::sleep(TICK * 3).await;
        }
    }
}

/// How `table` differs from `expected`, briefly.
fn diff(table: &BTreeMap<String, i64>, expected: &BTreeMap<String, i64>) -> String {
    let mut wrong = Vec::new();
    let mut over = 0i64;
    let mut missing = 0;
    for (user, want) in expected {
        match table.get(user) {
            Some(got) if got == want => {}
            Some(got) => {
                over += got - want;
                wrong.push(format!("{user}: {got} (expected {want})"));
            }
            None => missing += 1,
        }
    }
    let extra = table.keys().filter(|u| !expected.contains_key(*u)).count();
    format!(
        "{} users differ (total excess {over}; e.g. {:?}), {missing} users missing, {extra} \
         unexpected",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    )
}

/// Reads all of `topic` (checking its low watermarks); the value of each record.
async fn read_all(bootstrap: &str, topic: &str) -> Vec<(i32, i64, Vec<u8>)> {
    let offsets = Offsets::new(bootstrap);
    let ends = offsets.ends(topic).await;
    let consumer = Consumer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id(format!("reader-{}", std::process::id()))
            .enable_auto_commit(false),
    )
    .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..TASKS {
        tpl.add(topic, p, Offset::Beginning);
    }
    consumer.assign(&tpl).await.expect("assign");
    let mut consumer = consumer;
    let mut positions = vec![0i64; TASKS as usize];
    let mut out = Vec::new();
    while positions.iter().zip(&ends).any(|(p, e)| p < e) {
        let m = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .expect("reading a topic")
            .expect("a record");
        let p = m.partition() as usize;
        if m.offset() >= positions[p] {
            positions[p] = m.offset() + 1;
            out.push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

/// What the repartition topic (the table's direct source) holds.
struct Repartitioned {
    /// The per-user sums of its records.
    sums: BTreeMap<String, i64>,
    /// How many times each event (by id) is in it.
    copies: BTreeMap<u64, u32>,
}

impl Repartitioned {
    async fn read(bootstrap: &str) -> Self {
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        let mut copies: BTreeMap<u64, u32> = BTreeMap::new();
        for (_, _, value) in read_all(bootstrap, REPARTITION).await {
            let v: serde_json::Value = serde_json::from_slice(&value).expect("JSON");
            let user = v["user"].as_str().expect("a user").to_owned();
            let amount = v["amount"].as_i64().expect("an amount");
            *copies.entry(amount as u64 - 1).or_default() += 1;
            *sums.entry(user).or_default() += amount;
        }
        Self { sums, copies }
    }

    /// The events in it more than once.
    fn duplicated(&self) -> Vec<u64> {
        self.copies
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many of events `0..events` it lacks.
    fn missing(&self, events: u64) -> usize {
        (0..events).filter(|i| !self.copies.contains_key(i)).count()
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

/// What the table is compared with at the end of [`kill_and_join`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reference {
    /// The per-user sums of the events produced.
    Oracle,
    /// The per-user sums of what the repartition topic (the table's direct source) holds.
    RepartitionTopic,
}

/// Two workers, events streaming in; one is SIGKILLed and restarted on the same data
/// directory, a third joins; the table ends up exactly the per-user sums.
///
/// `group_by` forwards events to the repartition topic at least once: after the SIGKILL
/// the new owner of the killed worker's tasks consumes their `transactions` partitions
/// again from the last commit and forwards once more the events the killed worker had
/// forwarded past it. The records carry their origin, and the stream that feeds the table
/// skips origins it has already seen, so the table counts them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_sum_exactly_through_a_kill_and_a_join() {
    kill_and_join(Reference::Oracle).await;
}

/// The same run as the previous test, also checking the repartition topic: it lacks no
/// event, and holds twice only events of the killed worker's tasks (those the table's
/// stream skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_table_is_exactly_its_source_through_a_kill_and_a_join() {
    kill_and_join(Reference::RepartitionTopic).await;
}

async fn kill_and_join(reference: Reference) {
    let _serial = serial().await;
    let started = Instant::now();
    let (events, users, rate) = if large() {
        (1_000_000u64, 10_000u64, 20_000u64)
    } else {
        (100_000, 2_000, 4_000)
    };
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let offsets = Offsets::new(&bootstrap);
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("a dir"))
        .collect();
    let mut a = Worker::start("worker-a", &bootstrap, dirs[0].path());
    let mut b = Worker::start("worker-b", &bootstrap, dirs[1].path());
    a.wait_web().await;
    b.wait_web().await;
    wait_settled(&mut [&mut a, &mut b], Duration::from_secs(90)).await;

    let produced = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let production = produce_paced(
        &bootstrap,
        0..events,
        users,
        rate,
        produced.clone(),
        stop.clone(),
    );
    let stopped_production = StopOnDrop(stop.clone());

    wait_until(
        "a third of the events produced",
        Duration::from_secs(300),
        || produced.load(Ordering::SeqCst) >= events / 3,
    )
    .await;
    // The kill lands while worker a has processed events it has not committed yet (its
    // `/status` shows a commit point past the committed offset): their effects are out,
    // and they will be consumed again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a_tasks, uncommitted) = loop {
        let status = a.status().await.expect("a's status");
        let ahead: Vec<String> = status["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter_map(|p| {
                let (point, done) = (p["commit_point"].as_i64()?, p["committed"].as_i64()?);
                (point > done)
                    .then(|| format!("{}[{}] {done}..{point}", p["topic"], p["partition"]))
            })
            .collect();
        if !ahead.is_empty() || Instant::now() > deadline {
            break (tasks(&status["active_tasks"]), ahead);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed_at = produced.load(Ordering::SeqCst);
    let a_stats = a.get("/stats/").await.unwrap_or_default();
    let status = a.proc.kill9();
    // Where the killed worker left its tasks: nobody writes their changelog partitions or
    // commits their offsets before the group notices (the session timeout, 2 s).
    let ends_at_kill = offsets.ends(CHANGELOG).await;
    let committed_at_kill = offsets.committed(&[TRANSACTIONS, REPARTITION]).await;
    let input_at_kill = offsets.ends(TRANSACTIONS).await;
    let mine = |v: &[i64]| a_tasks.iter().map(|p| v[*p as usize]).collect::<Vec<_>>();
    eprintln!(
        "SIGKILLed worker a ({status}) {:.1} s after the start, {killed_at} events produced; \
         it had tasks {a_tasks:?} and had handled {} events by topic {}, processed but not \
         committed {uncommitted:?}; for its tasks: transactions ends {:?}, committed {:?}; \
         repartition committed {:?}",
        started.elapsed().as_secs_f64(),
        a_stats["messages_in"],
        a_stats["events_by_topic"],
        mine(&input_at_kill),
        mine(&committed_at_kill[TRANSACTIONS]),
        mine(&committed_at_kill[REPARTITION]),
    );
    let mut a2 = Worker::start("worker-a-restarted", &bootstrap, &a.datadir);
    a2.wait_web().await;

    wait_until(
        "two thirds of the events produced",
        Duration::from_secs(300),
        || produced.load(Ordering::SeqCst) >= 2 * events / 3,
    )
    .await;
    eprintln!(
        "starting worker c after {} events",
        produced.load(Ordering::SeqCst)
    );
    let mut c = Worker::start("worker-c", &bootstrap, dirs[2].path());
    c.wait_web().await;

    let sent = production.await.expect("the producer");
    drop(stopped_production);
    assert_eq!(sent, events);
    eprintln!(
        "{events} events over {users} users produced in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut oracle_sums = BTreeMap::new();
    oracle(0..events, users, &mut oracle_sums);

    let long = Duration::from_secs(if large() { 900 } else { 300 });
    offsets.wait_all_committed(long).await;
    eprintln!(
        "the group committed its input to the end {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
    // A commit follows the flush of the tables: once everything is committed, the
    // changelog is complete.
    let mut reader = TableReader::new(&bootstrap).await;
    let table = reader.catch_up().await.clone();
    let source = Repartitioned::read(&bootstrap).await;
    let duplicated = source.duplicated();
    let missing = source.missing(events);
    let duplicated_tasks: BTreeSet<i32> = duplicated
        .iter()
        .map(|id| task_of(&event(*id, users).0))
        .collect();
    eprintln!(
        "the repartition topic holds {} of the {events} events twice or more (e.g. {:?}; \
         from the transactions partitions of tasks {duplicated_tasks:?}; the killed worker \
         had {a_tasks:?}), and lacks {missing}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)],
    );
    let expected = match reference {
        Reference::Oracle => &oracle_sums,
        // The repartition topic may hold events twice: the table's stream skips them.
        Reference::RepartitionTopic => &oracle_sums,
    };
    assert!(
        &table == expected,
        "the table read from the changelog is not the per-user sums of {reference:?}: {}; \
         against the sums over the repartition topic: {}; against the oracle: {}; \
         changelog: {}",
        diff(&table, expected),
        diff(&table, &source.sums),
        diff(&table, &oracle_sums),
        reader.summary()
    );
    if reference == Reference::RepartitionTopic {
        assert_eq!(missing, 0, "events are missing from the repartition topic");
        // Only events the killed worker had read but not committed can be forwarded twice.
        let uncommitted: i64 = a_tasks
            .iter()
            .map(|p| input_at_kill[*p as usize] - committed_at_kill[TRANSACTIONS][*p as usize])
            .sum();
        assert!(
            duplicated.len() as i64 <= uncommitted,
            "{} events were forwarded twice, but only {uncommitted} of the killed worker's \
             transactions were past its commits",
            duplicated.len()
        );
        assert!(
            duplicated_tasks.is_subset(&a_tasks),
            "events of tasks {duplicated_tasks:?} are in the repartition topic more than \
             once, but only the killed worker's ({a_tasks:?}) may be"
        );
    }

    // What the markers did: without them, the new owners of the killed worker's tasks
    // would have resumed from the group's commits, and applied the data of its unfinished
    // flushes.
    let mut ahead_of_commits = 0;
    let mut unfinished = 0;
    for &p in &a_tasks {
        let part = &reader.parts[p as usize];
        let Some((at, sources)) = part
            .markers
            .iter()
            .rev()
            .find(|(at, _)| *at < ends_at_kill[p as usize])
        else {
            continue;
        };
        unfinished += ends_at_kill[p as usize] - 1 - at;
        if let Some((_, _, o)) = sources
            .iter()
            .find(|(t, sp, _)| t == REPARTITION && *sp == p)
        {
            ahead_of_commits += (o - committed_at_kill[REPARTITION][p as usize]).max(0);
        }
    }
    eprintln!(
        "at the SIGKILL, the killed worker's last commit markers were {ahead_of_commits} \
         repartition records ahead of the group's commits, and {unfinished} data records \
         followed them (dropped by abort markers: {}): without the markers, a restore \
         would have applied those and the events behind them would have been applied \
         again",
        reader.all(|p| p.aborted)
    );
    let sets = wait_settled(&mut [&mut a2, &mut b, &mut c], Duration::from_secs(60)).await;
    let mut recovered = Vec::new();
    for w in [&mut a2, &mut b, &mut c] {
        recovered.push(w.recovered().await);
    }
    eprintln!(
        "the table is exact ({} users) {:.1} s after the start; tasks {sets:?}; changelog \
         records read by the workers (restores and standby copies) {recovered:?}; \
         changelog: {}",
        expected.len(),
        started.elapsed().as_secs_f64(),
        reader.summary()
    );

    for w in [&mut a2, &mut b, &mut c] {
        w.stop().await;
    }
    assert!(
        offsets.all_committed().await,
        "the final commits moved backwards"
    );
    let mut again = TableReader::new(&bootstrap).await;
    let table = again.catch_up().await;
    assert!(
        table == expected,
        "after stopping: {}",
        diff(table, expected)
    );
    assert_eq!(
        again.all(|p| p.held.len() as u64),
        0,
        "the workers stopped with an unfinished flush in the changelog"
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Stops a background producer when dropped (a failing test).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A restart on the same data directory reads only what the changelog holds past the
/// stored checkpoint (nothing after a clean stop; what another worker wrote since, after
/// one did); a start on an empty one reads all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_replays_only_the_changelog_tail() {
    let _serial = serial().await;
    let started = Instant::now();
    let (events, users) = if large() {
        (200_000u64, 10_000u64)
    } else {
        (20_000, 1_000)
    };
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let offsets = Offsets::new(&bootstrap);
    let producer = producer(&bootstrap);
    let dir = tempfile::tempdir().expect("a dir");
    let mut expected = BTreeMap::new();
    let mut reader = TableReader::new(&bootstrap).await;
    let timeout = Duration::from_secs(if large() { 600 } else { 180 });

    let mut first = Worker::start("worker-1", &bootstrap, dir.path());
    first.wait_web().await;
    send_events(&producer, 0..events, users).await;
    oracle(0..events, users, &mut expected);
    reader.wait_for(&expected, timeout).await;
    offsets.wait_all_committed(timeout).await;
    first.stop().await;
    reader.catch_up().await;
    let applied = reader.all(|p| p.applied);
    eprintln!(
        "first run: {events} events; changelog: {}",
        reader.summary()
    );

    // The same data directory: the checkpoint is at the end of the changelog.
    let mut second = Worker::start("worker-2", &bootstrap, dir.path());
    second.wait_web().await;
    wait_settled(&mut [&mut second], timeout).await;
    let replayed = second.recovered().await;
    eprintln!(
        "restart on the same data directory: {replayed} changelog records read (of {applied})"
    );
    assert_eq!(
        replayed, 0,
        "the worker stopped cleanly (its last flush is in its store, with the checkpoint \
         after it) but its restart read {replayed} changelog records of {applied}"
    );
    // A few more events: processed from the restored state.
    let more = events..events + 200;
    send_events(&producer, more.clone(), users).await;
    oracle(more.clone(), users, &mut expected);
    reader.wait_for(&expected, timeout).await;
    offsets.wait_all_committed(timeout).await;
    let replayed = second.recovered().await;
    assert_eq!(replayed, 0, "a lone worker has no standby to read for");
    second.stop().await;
    reader.catch_up().await;
    let applied = reader.all(|p| p.applied);

    // An empty data directory: the whole changelog is read.
    let empty = tempfile::tempdir().expect("a dir");
    let mut third = Worker::start("worker-3", &bootstrap, empty.path());
    third.wait_web().await;
    wait_settled(&mut [&mut third], timeout).await;
    let rebuilt = third.recovered().await;
    eprintln!(
        "start on an empty data directory: {rebuilt} changelog records read (the changelog \
         has {applied} applied data records: {})",
        reader.summary()
    );
    assert_eq!(
        rebuilt, applied,
        "a worker with an empty data directory reads every data record of the changelog"
    );
    // Its rebuilt state is right: the totals it writes for new events add to it.
    let more = more.end..more.end + 1000;
    send_events(&producer, more.clone(), users).await;
    oracle(more.clone(), users, &mut expected);
    reader.wait_for(&expected, timeout).await;
    offsets.wait_all_committed(timeout).await;
    third.stop().await;
    reader.catch_up().await;
    let tail = reader.all(|p| p.applied) - applied;

    // The first data directory again: its checkpoint is where the second run stopped, so
    // only what the third run wrote since is read.
    let mut fourth = Worker::start("worker-4", &bootstrap, dir.path());
    fourth.wait_web().await;
    wait_settled(&mut [&mut fourth], timeout).await;
    let replayed = fourth.recovered().await;
    eprintln!(
        "restart on the first data directory after another worker wrote to the changelog: \
         {replayed} changelog records read (the tail: {tail} applied data records, of {})",
        reader.all(|p| p.applied)
    );
    assert_eq!(
        replayed, tail,
        "a restart reads the changelog from its stored checkpoint: the records written since"
    );
    let more = more.end..more.end + 200;
    send_events(&producer, more.clone(), users).await;
    oracle(more, users, &mut expected);
    reader.wait_for(&expected, timeout).await;
    fourth.stop().await;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Two workers each keep a standby copy of the other's tasks; when one is SIGKILLed the
/// survivor takes its tasks over, reading only what its copies lacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_s_standby_takes_over() {
    let _serial = serial().await;
    let started = Instant::now();
    let (events, users) = if large() {
        (200_000u64, 10_000u64)
    } else {
        (30_000, 1_000)
    };
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let offsets = Offsets::new(&bootstrap);
    let producer = producer(&bootstrap);
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().expect("a dir"))
        .collect();
    let timeout = Duration::from_secs(if large() { 600 } else { 180 });

    let mut a = Worker::start("worker-a", &bootstrap, dirs[0].path());
    let mut b = Worker::start("worker-b", &bootstrap, dirs[1].path());
    a.wait_web().await;
    b.wait_web().await;
    // Each task active on one worker and standing by on the other, in the cluster map
    // each of them shows in `/status`.
    let deadline = Instant::now() + timeout;
    let (a_id, b_id) = loop {
        let sa = a.status().await.expect("a's status");
        let sb = b.status().await.expect("b's status");
        let a_id = sa["worker_id"].as_str().expect("worker_id").to_owned();
        let b_id = sb["worker_id"].as_str().expect("worker_id").to_owned();
        let (on_a, on_b) = (tasks(&sa["active_tasks"]), tasks(&sb["active_tasks"]));
        let all: BTreeSet<i32> = (0..TASKS).collect();
        // In each map: a active on its tasks and standby for b's, and the other way.
        let want = Some((on_a.clone(), on_b.clone()));
        let want_b = Some((on_b.clone(), on_a.clone()));
        let ok = !on_a.is_empty()
            && !on_b.is_empty()
            && on_a.union(&on_b).copied().collect::<BTreeSet<_>>() == all
            && on_a.is_disjoint(&on_b)
            && [&sa, &sb]
                .iter()
                .all(|s| entry(s, &a_id) == want && entry(s, &b_id) == want_b);
        if ok {
            break (a_id, b_id);
        }
        assert!(
            Instant::now() < deadline,
            "the cluster map did not show each task's standby on the other worker: a \
             ({a_id}) shows {}, b ({b_id}) shows {}",
            sa["cluster"],
            sb["cluster"]
        );
        tokio::time::sleep(TICK).await;
    };
    eprintln!(
        "cluster map settled {:.1} s after the start: a = {a_id}, b = {b_id}",
        started.elapsed().as_secs_f64()
    );

    let mut expected = BTreeMap::new();
    send_events(&producer, 0..events, users).await;
    oracle(0..events, users, &mut expected);
    let mut reader = TableReader::new(&bootstrap).await;
    reader.wait_for(&expected, timeout).await;
    offsets.wait_all_committed(timeout).await;
    reader.catch_up().await;
    let on_a = a.active().await;
    let on_b = b.active().await;
    // Each standby copy has read the other's changelog partitions to their end.
    let a_lacks = reader.sum(on_b.iter().copied(), |p| p.applied);
    let b_lacks = reader.sum(on_a.iter().copied(), |p| p.applied);
    let deadline = Instant::now() + timeout;
    loop {
        let (ra, rb) = (a.recovered().await, b.recovered().await);
        if ra >= a_lacks && rb >= b_lacks {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby copies did not catch up: a read {ra} records of b's {a_lacks}, b \
             read {rb} of a's {b_lacks}"
        );
        tokio::time::sleep(TICK).await;
    }
    let before = b.recovered().await;
    eprintln!(
        "standbys caught up: b read {before} changelog records for a's tasks {on_a:?} ({b_lacks} \
         applied data records); changelog: {}",
        reader.summary()
    );

    // Kill a; events for users of its tasks.
    a.proc.kill9();
    let killed = Instant::now();
    let victims: Vec<String> = (0..users)
        .map(|u| format!("u{u}"))
        .filter(|u| on_a.contains(&task_of(u)))
        .collect();
    let after: Vec<(String, i64)> = (0..500u64)
        .map(|i| {
            let user = victims[(i as usize * 7) % victims.len()].clone();
            (user, (events + i) as i64 + 1)
        })
        .collect();
    send_transactions(&producer, &after).await;
    for (user, amount) in &after {
        *expected.entry(user.clone()).or_default() += amount;
    }
    let mut took_tasks = None;
    let deadline = killed + timeout;
    loop {
        if took_tasks.is_none() && b.active().await.is_superset(&on_a) {
            took_tasks = Some(killed.elapsed());
        }
        if reader.catch_up().await == &expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor did not process the dead worker's events within {timeout:?}: {}",
            diff(&reader.table, &expected)
        );
        tokio::time::sleep(TICK).await;
    }
    let processed = killed.elapsed();
    let took_tasks = match took_tasks {
        Some(t) => t,
        None => {
            wait_settled(&mut [&mut b], timeout).await;
            killed.elapsed()
        }
    };
    let replayed = b.recovered().await - before;
    eprintln!(
        "takeover: b had a's tasks {on_a:?} active {:.2} s after the SIGKILL, and 500 new \
         events of them in the table {:.2} s after it; b read {replayed} changelog records \
         for them then (a full restore would have read {b_lacks})",
        took_tasks.as_secs_f64(),
        processed.as_secs_f64()
    );
    assert!(
        replayed <= (b_lacks / 10).max(100),
        "the survivor read {replayed} changelog records to take over a's tasks, though its \
         standby copies had read all {b_lacks}"
    );
    // The survivor serves the dead worker's users from the copy it took over.
    let mut served = 0;
    for user in victims.iter().step_by((victims.len() / 20).max(1)) {
        let got = b
            .get(&format!("/api/table/user_to_amount/{user}/"))
            .await
            .unwrap_or_else(|| panic!("b does not serve {user}'s total"));
        assert_eq!(
            got[user.as_str()].as_i64(),
            expected.get(user).copied(),
            "b serves {got} for {user}"
        );
        served += 1;
    }
    eprintln!("b serves the right totals of {served} of a's users");
    offsets.wait_all_committed(timeout).await;
    b.stop().await;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// A third worker joins two busy ones: about a third of the tasks move to it, and the
/// tasks that stay keep being processed through the rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_worker_moves_about_p_over_n_tasks_and_the_others_keep_processing() {
    let _serial = serial().await;
    let started = Instant::now();
    let (users, rate) = if large() {
        (10_000u64, 5_000u64)
    } else {
        (1_000, 1_500)
    };
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let offsets = Offsets::new(&bootstrap);
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("a dir"))
        .collect();
    let timeout = Duration::from_secs(if large() { 600 } else { 180 });

    let mut a = Worker::start("worker-a", &bootstrap, dirs[0].path());
    let mut b = Worker::start("worker-b", &bootstrap, dirs[1].path());
    a.wait_web().await;
    b.wait_web().await;
    let before = wait_settled(&mut [&mut a, &mut b], timeout).await;

    let produced = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let production = produce_paced(
        &bootstrap,
        0..u64::MAX / 2,
        users,
        rate,
        produced.clone(),
        stop.clone(),
    );
    let stopped_production = StopOnDrop(stop.clone());
    // Processing is under way on every task.
    let deadline = Instant::now() + timeout;
    let base = offsets.committed(&[TRANSACTIONS]).await[TRANSACTIONS].clone();
    loop {
        let now = offsets.committed(&[TRANSACTIONS]).await[TRANSACTIONS].clone();
        if now.iter().zip(&base).all(|(n, b)| n > b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processing did not start: {now:?}"
        );
        tokio::time::sleep(TICK).await;
    }
    // Two signs of a task being processed: its changelog partition grows (each flush
    // appends the totals it changed and a commit marker), and the group's committed offset
    // of its transactions partition moves (after the flush).
    let mut steady = Vec::new();
    let steady_from = Instant::now();
    while steady_from.elapsed() < Duration::from_secs(2) {
        steady.push(Sample::take(&offsets, steady_from).await);
        tokio::time::sleep(TICK).await;
    }

    let joined = Instant::now();
    let mut c = Worker::start("worker-c", &bootstrap, dirs[2].path());
    // The rebalance window: until the three workers share the tasks.
    let mut samples = Vec::new();
    let after = loop {
        samples.push(Sample::take(&offsets, joined).await);
        if let Some(sets) = settled(&mut [&mut a, &mut b, &mut c]).await {
            break sets;
        }
        assert!(
            joined.elapsed() < timeout,
            "the three workers did not share the tasks within {timeout:?}"
        );
        tokio::time::sleep(TICK).await;
    };
    let window = joined.elapsed();
    let owner = |sets: &[BTreeSet<i32>], t: i32| sets.iter().position(|s| s.contains(&t));
    let moved: BTreeSet<i32> = (0..TASKS)
        .filter(|t| owner(&before, *t) != owner(&after[..2], *t))
        .collect();
    let stayed: Vec<i32> = (0..TASKS).filter(|t| !moved.contains(t)).collect();
    let figures: Vec<String> = (0..TASKS)
        .map(|t| {
            let (cl, co) = (Sample::changelog, Sample::committed);
            format!(
                "task {t}{}: changelog grew {} times (steady state: {} in 2 s; longest \
                 pause {:.2} s), commits moved {} times (steady state: {} in 2 s; longest \
                 pause {:.2} s)",
                if moved.contains(&t) { " (moved)" } else { "" },
                advances(&samples, t, cl),
                advances(&steady, t, cl),
                longest_pause(&samples, t, cl).as_secs_f64(),
                advances(&samples, t, co),
                advances(&steady, t, co),
                longest_pause(&samples, t, co).as_secs_f64(),
            )
        })
        .collect();
    eprintln!(
        "worker c joined: tasks before {before:?}, after {after:?}; {} moved ({moved:?}; \
         P/N = {TASKS}/3); rebalance window (from starting c to the three sharing the \
         tasks) {:.2} s, {} samples:\n  {}",
        moved.len(),
        window.as_secs_f64(),
        samples.len(),
        figures.join("\n  ")
    );
    assert!(
        !moved.is_empty() && moved.len() <= TASKS as usize / 2,
        "{} tasks moved ({moved:?}): expected about {TASKS}/3, at most {}",
        moved.len(),
        TASKS / 2
    );
    assert_eq!(
        after[2], moved,
        "the tasks that moved went to the new worker"
    );
    let stalled: Vec<i32> = stayed
        .iter()
        .copied()
        .filter(|t| advances(&samples, *t, Sample::changelog) == 0)
        .collect();
    assert!(
        stalled.is_empty(),
        "tasks {stalled:?} did not move, but their changelog partitions did not grow during \
         the {:.2} s rebalance window (sampled every {TICK:?}) while events kept coming: \
         the tasks that stay should keep being processed through a rebalance",
        window.as_secs_f64()
    );

    // The end: every event summed exactly once.
    stop.store(true, Ordering::Relaxed);
    let sent = production.await.expect("the producer");
    drop(stopped_production);
    let mut expected = BTreeMap::new();
    oracle(0..sent, users, &mut expected);
    offsets.wait_all_committed(timeout).await;
    let mut reader = TableReader::new(&bootstrap).await;
    let table = reader.catch_up().await.clone();
    if table != expected {
        let source = Repartitioned::read(&bootstrap).await;
        panic!(
            "after the join (no worker killed), the table is not the per-user sums: {}; \
             the repartition topic holds {} events twice or more and lacks {}; the table \
             against the sums over it: {}",
            diff(&table, &expected),
            source.duplicated().len(),
            source.missing(sent),
            diff(&table, &source.sums)
        );
    }
    eprintln!(
        "{sent} events summed exactly; changelog: {}",
        reader.summary()
    );
    for w in [&mut a, &mut b, &mut c] {
        w.stop().await;
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// One look at the progress of every task.
struct Sample {
    /// Since the start of the series.
    at: Duration,
    /// The group's committed offsets of `transactions`.
    committed: Vec<i64>,
    /// The ends of the changelog partitions.
    changelog: Vec<i64>,
}

impl Sample {
    async fn take(offsets: &Offsets, since: Instant) -> Self {
        let committed = offsets.committed(&[TRANSACTIONS]).await[TRANSACTIONS].clone();
        let changelog = offsets.ends(CHANGELOG).await;
        Self {
            at: since.elapsed(),
            committed,
            changelog,
        }
    }

    fn committed(&self) -> &[i64] {
        &self.committed
    }

    fn changelog(&self) -> &[i64] {
        &self.changelog
    }
}

/// How many times task `t`'s figure moved in `samples`.
fn advances(samples: &[Sample], t: i32, figure: fn(&Sample) -> &[i64]) -> usize {
    samples
        .windows(2)
        .filter(|w| figure(&w[1])[t as usize] > figure(&w[0])[t as usize])
        .count()
}

/// The longest time task `t`'s figure did not move in `samples`.
fn longest_pause(samples: &[Sample], t: i32, figure: fn(&Sample) -> &[i64]) -> Duration {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Duration::ZERO;
    };
    let mut since = first.at;
    let mut longest = Duration::ZERO;
    for w in samples.windows(2) {
        if figure(&w[1])[t as usize] > figure(&w[0])[t as usize] {
            longest = longest.max(w[1].at - since);
            since = w[1].at;
        }
    }
    longest.max(last.at - since)
}
