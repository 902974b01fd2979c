//! HTTP: the table API's key reads, served locally and forwarded between two workers.
//!
//! 1. Two workers of one table app (`http-bench`, a public `Table<String, i64>` named
//!    `state`, 8 partitions) run in this process on one in-process mock cluster, each with
//!    its own data directory and its own web server (`127.0.0.1`, a free port). The
//!    benchmark waits until their tasks cover every partition, disjointly, and both cluster
//!    maps know both workers with their URLs and the same owner for every task.
//! 2. 10,000 events (`k00000` ... `k09999`, value: the key's number) are produced into the
//!    source topic (murmur2 key partitioning, as the table's); an agent sets
//!    `state[key] = value`. Every key is then read once through worker A's
//!    `GET /api/table/state/<key>/` until all answer 200 with their value; the
//!    `x-faust-served-by` header of each answer tells which worker owns the key.
//! 3. The load generator runs in a tokio runtime of its own (`--client-threads` threads):
//!    `--connections` keep-alive HTTP/1.1 connections, half to each worker, each sending its
//!    next request as soon as the previous answer is read (closed loop; a small hand-written
//!    client: one write per request, answers parsed by `Content-Length`). Two phases, each
//!    `--warmup-secs` of warm-up then `--secs` measured:
//!    * **local**: each connection asks its worker for keys that worker owns;
//!    * **forwarded**: each connection asks its worker for keys the OTHER worker owns, so
//!      the worker forwards the request to the owner (KIP-67) and relays its answer.
//!
//!    Every answer must be `200` with the body `{"<key>":<value>}` and the owner's id in
//!    `x-faust-served-by`; anything else (or a broken connection) is an error, and any
//!    error fails the benchmark after the report. Throughput counts the answers completed in
//!    the measured window; latency is from writing the request to reading the whole answer
//!    (p50/p99/max, nearest rank); CPU is the whole process's (both workers, the mock
//!    broker and the load generator) per request over the measured window.
//!
//! The last line is `ratios http_local_rps=X http_forwarded_rps=Y`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rdkafka_async::{ClientConfig, Compression, MockCluster, Producer, Record};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::measure::{percentile, process_cpu_time, thousands};
use crate::w2::TempDir;

const APP_ID: &str = "http-bench";
const TOPIC: &str = "http-bench-events";
const TABLE: &str = "state";
const SESSION_TIMEOUT_MS: u64 = 2000;
const SERVED_BY: &str = "x-faust-served-by";

/// Options of `faust-bench http`.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    /// Keys in the table.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Partitions of the topic, the table and its changelog.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Keep-alive connections of the load generator (half to each worker).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Warm-up of each phase, s (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Measured duration of each phase, s.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

fn key(i: u64) -> String {
    format!("k{i:05}")
}

type Parts = (faust::App, faust::Table<String, i64>);

fn app(bootstrap: &str, args: &HttpArgs, datadir: &std::path::Path) -> Result<Parts> {
    let app = faust::App::new(APP_ID)
        .broker(bootstrap)?
        .web_port(0)
        .datadir(datadir)
        .topic_partitions(args.partitions);
    app.configure(|s| {
        s.kafka
            .insert("session.timeout.ms".into(), SESSION_TIMEOUT_MS.to_string());
        s.kafka.insert("heartbeat.interval.ms".into(), "200".into());
        s.kafka.insert("fetch.queue.backoff.ms".into(), "10".into());
        s.kafka.insert("fetch.wait.max.ms".into(), "1".into());
    });
    let topic = app.topic::<String, i64>(TOPIC).partitions(args.partitions);
    let table = app
        .table::<String, i64>(TABLE)
        .public(true)
        .partitions(args.partitions);
    {
        let table = table.clone();
        app.agent("set", &topic, move |mut stream| {
            let table = table.clone();
            async move {
                while let Some((k, v)) = stream.next_item().await {
                    table.set(&k.unwrap_or_default(), v)?;
                }
                Ok(())
            }
        });
    }
    Ok((app, table))
}

/// One request the load generator sends, and what must come back.
#[derive(Debug)]
struct Req {
    /// The whole request, bytes on the wire.
    wire: Vec<u8>,
    /// The exact body expected, `{"<key>":<value>}`.
    body: Vec<u8>,
    /// The worker id expected in `x-faust-served-by` (the key's owner).
    served_by: Arc<str>,
}

/// The requests of one connection's worker in one phase.
type Plan = Arc<Vec<Req>>;

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    /// Answers completed in the measured window (good or not).
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    /// Latencies of the measured window, ns, ascending.
    latencies: Vec<u64>,
    window: Duration,
    cpu: Duration,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

pub(crate) fn run(runtime: &tokio::runtime::Runtime, args: HttpArgs) -> Result<()> {
    ensure!(
        args.connections >= 2,
        "--connections must be at least 2 (one per worker)"
    );
    ensure!(
        args.keys > 0 && args.partitions >= 2,
        "at least one key and two partitions"
    );
    let client_rt = Arc::new(if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .thread_name("load-generator")
            .enable_all()
            .build()?
    });
    runtime.block_on(async {
        let cluster = MockCluster::new(1)?;
        let bootstrap = cluster.bootstrap_servers();
        // The mock has no CreateTopics: every topic of the app is made beforehand.
        for name in [
            TOPIC.to_owned(),
            format!("{APP_ID}-{TABLE}-changelog"),
            format!("{APP_ID}-__assignor"),
        ] {
            cluster.create_topic(&name, args.partitions, 1)?;
        }
        // The cluster map of workers with tables (one partition).
        cluster.create_topic(&format!("{APP_ID}-__cluster"), 1, 1)?;

        // 1. Two workers, their tasks and their cluster maps.
        let (dir_a, dir_b) = (TempDir::new("http-a")?, TempDir::new("http-b")?);
        let (app_a, _table_a) = app(&bootstrap, &args, dir_a.path())?;
        let (app_b, _table_b) = app(&bootstrap, &args, dir_b.path())?;
        let t0 = Instant::now();
        let a = app_a.start().await?;
        let b = app_b.start().await?;
        let (id_a, id_b) = (
            a.worker_id().context("worker A has no id in the cluster map")?,
            b.worker_id().context("worker B has no id in the cluster map")?,
        );
        let (addr_a, addr_b) = (
            a.web_addr().context("worker A runs no web server")?,
            b.web_addr().context("worker B runs no web server")?,
        );
        let all: BTreeSet<i32> = (0..args.partitions).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (tasks_a, tasks_b) = loop {
            let (x, y) = (a.active_tasks(), b.active_tasks());
            let split = !x.is_empty()
                && !y.is_empty()
                && x.is_disjoint(&y)
                && x.union(&y).copied().collect::<BTreeSet<_>>() == all;
            let maps_agree = split
                && [&a, &b].iter().all(|w| {
                    w.cluster_map().is_some_and(|m| {
                        m.workers.len() == 2
                            && m.workers.values().all(|info| info.url.is_some())
                            && all.iter().all(|p| {
                                let want = if x.contains(p) { &id_a } else { &id_b };
                                m.owner(*p).is_some_and(|o| &o.id == want)
                            })
                    })
                });
            if maps_agree {
                break (x, y);
            }
            if Instant::now() > deadline {
                bail!(
                    "after 60 s the workers do not share the tasks with agreeing cluster maps: A {x:?}, B {y:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ready_s = t0.elapsed().as_secs_f64();

        // 2. The table's keys, through the agent.
        produce(&bootstrap, &args).await?;
        let owners = settle(addr_a, &args, &id_a, &id_b).await?;
        let owned_a: Vec<u64> = (0..args.keys).filter(|i| owners[*i as usize] == 0).collect();
        let owned_b: Vec<u64> = (0..args.keys).filter(|i| owners[*i as usize] == 1).collect();
        ensure!(
            !owned_a.is_empty() && !owned_b.is_empty(),
            "one worker owns no key (A {}, B {})",
            owned_a.len(),
            owned_b.len()
        );
        println!(
            "http: 2 workers of app {APP_ID} in this process (mock cluster), {} partitions: A at http://{addr_a} tasks {tasks_a:?}, B at http://{addr_b} tasks {tasks_b:?} (both cluster maps agree after {ready_s:.2} s)",
            args.partitions
        );
        println!(
            "  public table {TABLE}: {} keys set by an agent from {TOPIC}; A owns {}, B owns {}",
            thousands(args.keys as f64),
            thousands(owned_a.len() as f64),
            thousands(owned_b.len() as f64)
        );
        println!(
            "  load: {} keep-alive HTTP/1.1 connections (half to each worker), {} client thread(s) in a runtime of their own; each phase {} s warm-up + {} s measured",
            args.connections, args.client_threads, args.warmup_secs, args.secs
        );

        // 3. The two phases.
        let (id_a, id_b): (Arc<str>, Arc<str>) = (id_a.as_str().into(), id_b.as_str().into());
        let plan = |addr: SocketAddr, keys: &[u64], owner: &Arc<str>| -> Plan {
            Arc::new(keys.iter().map(|i| request(addr, *i, owner)).collect())
        };
        // Connection i asks worker i % 2 (A, B).
        let local = [plan(addr_a, &owned_a, &id_a), plan(addr_b, &owned_b, &id_b)];
        let forwarded = [plan(addr_a, &owned_b, &id_b), plan(addr_b, &owned_a, &id_a)];
        let targets = [addr_a, addr_b];
        let mut phases = Vec::new();
        for (name, plans) in [("GET local key", local), ("GET forwarded key", forwarded)] {
            let phase = load(&client_rt, &args, targets, plans).await?;
            eprintln!(
                "  {name}: {} req/s, {} errors",
                thousands(phase.rps()),
                phase.errors
            );
            phases.push((name, phase));
        }
        a.shutdown().await?;
        b.shutdown().await?;

        println!(
            "{:<18} {:>10} {:>9} {:>8} {:>8} {:>8} {:>11} {:>7}",
            "request", "answers", "req/s", "p50 µs", "p99 µs", "max µs", "CPU µs/req", "errors"
        );
        for (name, p) in &phases {
            let us = |q: f64| percentile(&p.latencies, q) as f64 / 1e3;
            println!(
                "{name:<18} {:>10} {:>9} {:>8.0} {:>8.0} {:>8.0} {:>11.1} {:>7}",
                thousands(p.requests as f64),
                thousands(p.rps()),
                us(50.0),
                us(99.0),
                p.latencies.last().copied().unwrap_or(0) as f64 / 1e3,
                p.cpu.as_secs_f64() * 1e6 / (p.requests as f64).max(1.0),
                p.errors
            );
        }
        let errors: u64 = phases.iter().map(|(_, p)| p.errors).sum();
        if errors > 0 {
            let first = phases
                .iter()
                .find_map(|(name, p)| p.first_error.as_ref().map(|e| format!("{name}: {e}")))
                .unwrap_or_default();
            bail!("{errors} answers were wrong or missing; the first: {first}");
        }
        println!(
            "check: every answer was 200 with {{\"<key>\":<value>}} and the key's owner in {SERVED_BY}"
        );
        println!(
            "ratios http_local_rps={:.0} http_forwarded_rps={:.0}",
            phases[0].1.rps(),
            phases[1].1.rps()
        );
        Ok(())
    })
}

/// `GET /api/table/state/<key>/` to `addr`, and the answer it must get.
fn request(addr: SocketAddr, i: u64, owner: &Arc<str>) -> Req {
    let k = key(i);
    Req {
        wire: format!(
            "GET /api/table/{TABLE}/{k}/ HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
        )
        .into_bytes(),
        body: format!("{{\"{k}\":{i}}}").into_bytes(),
        served_by: owner.clone(),
    }
}

/// Produces one event per key.
async fn produce(bootstrap: &str, args: &HttpArgs) -> Result<()> {
    let producer = Producer::new(
        ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .compression(Compression::Lz4)
            .linger(Duration::from_millis(5))
            // The Java client's partitioner, as faust-rs's tables.
            .set("partitioner", "murmur2_random"),
    )?;
    let mut pending = Vec::with_capacity(args.keys as usize);
    for i in 0..args.keys {
        let value = serde_json::to_vec(&(i as i64))?;
        pending.push(
            producer
                .send(Record::to(TOPIC).key(&key(i)).value(&value))
                .await?,
        );
    }
    for d in pending {
        d.await?;
    }
    Ok(())
}

/// Reads every key through worker A until each answers 200 with its value; returns each
/// key's owner (0: A, 1: B), from `x-faust-served-by`.
async fn settle(addr_a: SocketAddr, args: &HttpArgs, id_a: &str, id_b: &str) -> Result<Vec<u8>> {
    let mut conn = Conn::open(addr_a).await?;
    let mut owners = vec![u8::MAX; args.keys as usize];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<u64> = (0..args.keys).collect();
    loop {
        let mut still = Vec::new();
        let mut last = String::new();
        for &i in &missing {
            let req = request(addr_a, i, &Arc::from(""));
            let answer = conn.get(&req.wire).await?;
            if answer.status == 200 && answer.body == req.body.as_slice() {
                owners[i as usize] = match answer.served_by {
                    Some(s) if s == id_a.as_bytes() => 0,
                    Some(s) if s == id_b.as_bytes() => 1,
                    other => bail!(
                        "key {}: {SERVED_BY} is {:?}, neither worker",
                        key(i),
                        other.map(String::from_utf8_lossy)
                    ),
                };
            } else {
                last = format!("{} {}", answer.status, String::from_utf8_lossy(answer.body));
                still.push(i);
            }
        }
        if still.is_empty() {
            return Ok(owners);
        }
        if Instant::now() > deadline {
            bail!(
                "after 60 s {} keys are not readable through worker A (last answer: {last})",
                still.len()
            );
        }
        missing = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one phase on the load generator's runtime.
async fn load(
    client_rt: &Arc<tokio::runtime::Runtime>,
    args: &HttpArgs,
    targets: [SocketAddr; 2],
    plans: [Plan; 2],
) -> Result<Phase> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let rt = client_rt.clone();
    let (connections, warmup, secs) = (
        args.connections,
        Duration::from_secs_f64(args.warmup_secs),
        Duration::from_secs_f64(args.secs),
    );
    std::thread::Builder::new()
        .name("load-generator".into())
        .spawn(move || {
            let _ = tx.send(rt.block_on(generate(connections, warmup, secs, targets, plans)));
        })?;
    rx.await.context("the load generator stopped")?
}

/// What one connection saw.
#[derive(Debug, Default)]
struct ConnStats {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u64>,
}

async fn generate(
    connections: usize,
    warmup: Duration,
    secs: Duration,
    targets: [SocketAddr; 2],
    plans: [Plan; 2],
) -> Result<Phase> {
    let mut conns = Vec::with_capacity(connections);
    for c in 0..connections {
        conns.push(Conn::open(targets[c % 2]).await?);
    }
    let start = Instant::now();
    let (warm_end, end) = (start + warmup, start + warmup + secs);
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(warm_end.into()).await;
        let (c0, t0) = (process_cpu_time(), Instant::now());
        tokio::time::sleep_until(end.into()).await;
        (process_cpu_time().saturating_sub(c0), t0.elapsed())
    });
    let mut tasks = Vec::with_capacity(connections);
    for (c, mut conn) in conns.into_iter().enumerate() {
        let plan = plans[c % 2].clone();
        let addr = targets[c % 2];
        tasks.push(tokio::spawn(async move {
            let mut stats = ConnStats {
                latencies: Vec::with_capacity(1 << 16),
                ..ConnStats::default()
            };
            // Each connection walks the keys from its own place.
            let mut next = (c / 2) * plan.len() / connections.div_ceil(2).max(1);
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let req = &plan[next % plan.len()];
                next += 1;
                let outcome = match conn.get(&req.wire).await {
                    Ok(a) => check(&a, req),
                    Err(err) => Err(format!("connection error: {err:#}")),
                };
                let t1 = Instant::now();
                let counted = t1 >= warm_end && t1 < end;
                if counted {
                    stats.requests += 1;
                    stats.latencies.push((t1 - t0).as_nanos() as u64);
                }
                if let Err(e) = outcome {
                    stats.errors += 1;
                    stats.first_error.get_or_insert(e);
                    // Start afresh on a new connection.
                    match Conn::open(addr).await {
                        Ok(c) => conn = c,
                        Err(err) => {
                            stats
                                .first_error
                                .get_or_insert(format!("reconnecting: {err:#}"));
                            stats.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            stats
        }));
    }
    let mut phase = Phase::default();
    for t in tasks {
        let s = t.await?;
        phase.requests += s.requests;
        phase.errors += s.errors;
        if phase.first_error.is_none() {
            phase.first_error = s.first_error;
        }
        phase.latencies.extend(s.latencies);
    }
    phase.latencies.sort_unstable();
    (phase.cpu, phase.window) = cpu.await?;
    Ok(phase)
}

fn check(a: &Answer<'_>, req: &Req) -> Result<(), String> {
    if a.status != 200 {
        return Err(format!(
            "status {}: {}",
            a.status,
            String::from_utf8_lossy(a.body)
        ));
    }
    if a.body != req.body.as_slice() {
        // Accept any JSON spelling of the same object.
        let same = serde_json::from_slice::<serde_json::Value>(a.body).ok()
            == serde_json::from_slice::<serde_json::Value>(&req.body).ok();
        if !same {
            return Err(format!(
                "body {} (expected {})",
                String::from_utf8_lossy(a.body),
                String::from_utf8_lossy(&req.body)
            ));
        }
    }
    if a.served_by != Some(req.served_by.as_bytes()) {
        return Err(format!(
            "{SERVED_BY} {:?} (expected {})",
            a.served_by.map(String::from_utf8_lossy),
            req.served_by
        ));
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 client connection, one request at a time.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An answer, borrowed from the connection's buffer.
#[derive(Debug)]
struct Answer<'a> {
    status: u16,
    served_by: Option<&'a [u8]>,
    body: &'a [u8],
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `wire` (one whole request) and reads the answer.
    async fn get(&mut self, wire: &[u8]) -> Result<Answer<'_>> {
        self.stream.write_all(wire).await?;
        self.buf.clear();
        // The head.
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        // The head's lines, each as (start, end) in the buffer without its "\r\n": the
        // status line first, then the headers.
        let mut status = None;
        let mut length = None;
        let mut served = None;
        let mut at = 0;
        while let Some(n) = self.buf[at..head_end - 2].iter().position(|b| *b == b'\n') {
            let (s, e) = (at, at + n.saturating_sub(1));
            at += n + 1;
            let line = &self.buf[s..e];
            if status.is_none() {
                status = Some(
                    std::str::from_utf8(line)
                        .ok()
                        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
                        .and_then(|l| l.get(..3))
                        .and_then(|c| c.parse::<u16>().ok())
                        .with_context(|| {
                            format!(
                                "not an HTTP/1.1 status line: {:?}",
                                String::from_utf8_lossy(line)
                            )
                        })?,
                );
                continue;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, raw) = (&line[..colon], &line[colon + 1..]);
            let value = raw.trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            } else if name.eq_ignore_ascii_case(SERVED_BY.as_bytes()) {
                let v = s + colon + 1 + (raw.len() - raw.trim_ascii_start().len());
                served = Some((v, v + value.len()));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                bail!("a chunked answer (not supported by this client)");
            }
        }
        let status = status.context("an answer without a status line")?;
        let length = length.context("an answer without Content-Length")?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        ensure!(
            self.buf.len() == head_end + length,
            "more bytes than the answer (pipelining is not used)"
        );
        Ok(Answer {
            status,
            served_by: served.map(|(s, e)| &self.buf[s..e]),
            body: &self.buf[head_end..],
        })
    }

    async fn fill(&mut self) -> Result<()> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        ensure!(n > 0, "the server closed the connection");
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Req {
        request("127.0.0.1:1".parse().unwrap(), 42, &Arc::from("w-b"))
    }

    fn answer<'a>(status: u16, served_by: Option<&'a [u8]>, body: &'a [u8]) -> Answer<'a> {
        Answer {
            status,
            served_by,
            body,
        }
    }

    #[test]
    fn the_expected_answer_passes() {
        let r = req();
        assert_eq!(r.body, b"{\"k00042\":42}");
        assert!(check(&answer(200, Some(b"w-b"), b"{\"k00042\":42}"), &r).is_ok());
        // Another spelling of the same JSON object.
        assert!(check(&answer(200, Some(b"w-b"), b"{ \"k00042\" : 42 }"), &r).is_ok());
    }

    #[test]
    fn wrong_answers_are_errors() {
        let r = req();
        assert!(check(&answer(503, Some(b"w-b"), b"{\"k00042\":42}"), &r).is_err());
        assert!(check(&answer(200, Some(b"w-b"), b"{\"k00042\":41}"), &r).is_err());
        assert!(check(&answer(200, Some(b"w-a"), b"{\"k00042\":42}"), &r).is_err());
        assert!(check(&answer(200, None, b"{\"k00042\":42}"), &r).is_err());
    }

    #[tokio::test]
    async fn the_client_reads_keep_alive_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for body in ["{\"a\":1}", "{\"bb\":22}"] {
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nX-Faust-Served-By:  w-a \r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                // The head and the body in separate writes.
                s.write_all(head.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(body.as_bytes()).await.unwrap();
            }
        });
        let mut conn = Conn::open(addr).await.unwrap();
        for body in [&b"{\"a\":1}"[..], b"{\"bb\":22}"] {
            let a = conn
                .get(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(a.served_by, Some(&b"w-a"[..]));
            assert_eq!(a.body, body);
        }
    }
}
