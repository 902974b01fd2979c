//! The command line, run as processes: every app's `main()` (through the test app) and the
//! `faust` program.
//!
//! - `--help` works for the app, the `faust` program and each of their subcommands;
//! - `agents` and `tables` list what the app defines;
//! - `status`, `ping` and `send` fail with a clear message and status 1 when no worker
//!   answers;
//! - against a worker on its embedded broker, `status` and `ping` (of the app, and of
//!   `faust -A host:port` or `FAUSTAPP`) answer, and `send` delivers records the worker
//!   processes (`send` asks the worker's `/status` for the broker address);
//! - `faust broker --port P --topic t:3` prints `bootstrap.servers=...`, serves Kafka
//!   clients on P with the topic made (`send --broker` of the app and of `faust` included),
//!   exits 0 on SIGTERM, and reports a busy port.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka_async::{Admin, ClientConfig, Consumer, Offset, Producer, Record, TopicPartitionList};

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_works_everywhere() {
    let app_commands = [
        "worker", "start", "send", "status", "ping", "agents", "tables",
    ];
    let out = run(TESTAPP, &["--help"], &[]).await;
    assert_ok("app --help", &out);
    for command in app_commands.iter().filter(|c| **c != "start") {
        assert!(
            out.stdout.contains(command),
            "{command} missing:\n{}",
            out.stdout
        );
    }
    for command in app_commands {
        let out = run(TESTAPP, &[command, "--help"], &[]).await;
        assert_ok(&format!("app {command} --help"), &out);
        assert!(out.stdout.contains("Usage:"), "{}", out.stdout);
    }
    let out = run(FAUST, &["--help"], &[]).await;
    assert_ok("faust --help", &out);
    for command in ["status", "ping", "send", "broker"] {
        assert!(
            out.stdout.contains(command),
            "{command} missing:\n{}",
            out.stdout
        );
        let out = run(FAUST, &[command, "--help"], &[]).await;
        assert_ok(&format!("faust {command} --help"), &out);
        assert!(out.stdout.contains("Usage:"), "{}", out.stdout);
    }
    let out = run(FAUST, &["broker", "--help"], &[]).await;
    assert!(out.stdout.contains("--port"), "{}", out.stdout);
    assert!(out.stdout.contains("--topic"), "{}", out.stdout);
    // A mistake is a usage error (status 2), not a crash.
    let out = run(TESTAPP, &["bogus"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_tables_list_what_the_app_defines() {
    let out = run(TESTAPP, &["agents"], &[]).await;
    assert_ok("agents", &out);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("process "))
        .unwrap_or_else(|| panic!("no agent `process`:\n{}", out.stdout));
    assert!(line.contains("events"), "{line}");
    assert!(line.contains("topic:processed"), "{line}");
    let out = run(TESTAPP, &["agents"], &[("TESTAPP_INPUT", "other-input")]).await;
    assert!(out.stdout.contains("other-input"), "{}", out.stdout);
    let out = run(TESTAPP, &["tables"], &[]).await;
    assert_ok("tables", &out);
    assert!(out.stdout.contains("no tables"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_worker_status_ping_and_send_fail_clearly() {
    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let runs: Vec<(&str, Vec<&str>)> = vec![
        (TESTAPP, vec!["--web-port", &port, "status"]),
        (TESTAPP, vec!["--web-port", &port, "ping"]),
        (TESTAPP, vec!["--web-port", &port, "send", "events", "{}"]),
        (FAUST, vec!["-A", &address, "status"]),
        (FAUST, vec!["-A", &address, "ping"]),
        (FAUST, vec!["-A", &address, "send", "events", "{}"]),
    ];
    for (program, args) in runs {
        let out = run(program, &args, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}\n{}",
            out.status,
            out.stderr
        );
        let expected = format!("error: no worker answers at http://127.0.0.1:{port}");
        assert!(
            out.stderr.starts_with(&expected),
            "{args:?}: unclear message:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("refused"),
            "{args:?}: the reason is missing:\n{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_running_worker_status_ping_and_send_work() {
    let web = free_port();
    let port = web.to_string();
    let address = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(TESTAPP);
    cmd.args(["--web-port", &port, "worker"])
        .env("TESTAPP_TAG", "cli");
    let mut worker = Proc::spawn("worker-embedded", cmd);
    worker.wait_web(web, Duration::from_secs(60)).await;

    let out = run(TESTAPP, &["--web-port", &port, "ping"], &[]).await;
    assert_ok("app ping", &out);
    assert!(
        out.stdout
            .starts_with(&format!("pong from http://127.0.0.1:{port}")),
        "{}",
        out.stdout
    );
    let out = run(TESTAPP, &["--web-port", &port, "status"], &[]).await;
    assert_ok("app status", &out);
    for expected in [
        "app:        faust-testapp",
        "state:      running",
        "(embedded in the worker)",
        "process <- events (x1) -> topic:processed",
    ] {
        assert!(
            out.stdout.contains(expected),
            "no {expected:?} in:\n{}",
            out.stdout
        );
    }
    let out = run(FAUST, &["-A", &address, "ping"], &[]).await;
    assert_ok("faust ping", &out);
    assert!(out.stdout.starts_with("pong"), "{}", out.stdout);
    let out = run(
        FAUST,
        &["status"],
        &[("FAUSTAPP", &format!("http://{address}/"))],
    )
    .await;
    assert_ok("FAUSTAPP=... faust status", &out);
    assert!(out.stdout.contains("faust-testapp"), "{}", out.stdout);

    // `send` asks the worker for its (embedded) broker.
    let out = run(
        TESTAPP,
        &["--web-port", &port, "send", "events", r#"{"id": 7}"#, "7"],
        &[],
    )
    .await;
    assert_ok("app send", &out);
    assert!(out.stdout.starts_with("sent to events["), "{}", out.stdout);
    let out = run(
        FAUST,
        &["-A", &address, "send", "events", r#"{"id": 8}"#, "8"],
        &[],
    )
    .await;
    assert_ok("faust send", &out);
    let out = run(
        FAUST,
        &[
            "-A",
            &port,
            "send",
            "--partition",
            "0",
            "events",
            r#"{"id": 9}"#,
        ],
        &[],
    )
    .await;
    assert_ok("faust send --partition", &out);
    assert!(
        out.stdout.starts_with("sent to events[0]@"),
        "{}",
        out.stdout
    );

    // The worker processed them: its output is on its embedded broker.
    let status = worker_status(web).await.expect("a status");
    let broker = status["broker"].as_str().expect("a broker").to_owned();
    let partitions = 8; // the app's default
    let output = Collector::start(&broker, "processed", partitions);
    output
        .wait_for_all(&BTreeSet::from([7, 8, 9]), Duration::from_secs(60))
        .await;
    assert!(output.records().iter().all(|r| r.worker == "cli"));
    let out = run(TESTAPP, &["--web-port", &port, "status"], &[]).await;
    assert!(out.stdout.contains("3 events"), "{}", out.stdout);
    assert!(out.stdout.contains("3 records in"), "{}", out.stdout);

    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    let out = run(TESTAPP, &["--web-port", &port, "ping"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "the stopped worker answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faust_broker_serves_clients_and_stops_on_sigterm() {
    let port = free_port();
    let mut cmd = Command::new(FAUST);
    cmd.args([
        "broker",
        "--port",
        &port.to_string(),
        "--topic",
        "t:3",
        "--topic",
        "u",
    ]);
    let mut broker = Proc::spawn("faust-broker", cmd);
    let log = broker
        .wait_log("bootstrap.servers=", Duration::from_secs(60))
        .await;
    let bootstrap = format!("127.0.0.1:{port}");
    assert!(
        log.lines()
            .any(|l| l == format!("bootstrap.servers={bootstrap}")),
        "{log}"
    );

    let config = ClientConfig::new().bootstrap_servers(&bootstrap);
    let metadata = Admin::new(config.clone())
        .expect("an admin client")
        .metadata(None, Duration::from_secs(30))
        .await
        .expect("metadata");
    let t = metadata.topic("t").expect("topic t exists");
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(metadata.topic("u").expect("topic u").partitions.len(), 1);
    assert!(
        metadata.brokers.iter().all(|b| b.port == port),
        "clients are sent elsewhere: {:?}",
        metadata.brokers
    );

    let producer = Producer::new(config.clone()).expect("a producer");
    let delivery = producer
        .send(Record::to("t").partition(2).value("hello"))
        .await
        .expect("enqueued")
        .await
        .expect("delivered");
    let mut consumer =
        Consumer::new(config.group_id("cli-test").enable_auto_commit(false)).expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add("t", 2, Offset::At(delivery.offset));
    consumer.assign(&tpl).await.expect("assign");
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record in time")
        .expect("a record");
    assert_eq!(m.payload(), Some(&b"hello"[..]));
    consumer.close().await.expect("closed");
    drop(producer);

    // `send` with a broker needs no worker.
    let out = run(
        TESTAPP,
        &["--broker", &bootstrap, "send", "t", r#"{"id": 1}"#, "1"],
        &[],
    )
    .await;
    assert_ok("app send --broker", &out);
    assert!(out.stdout.starts_with("sent to t["), "{}", out.stdout);
    let out = run(
        FAUST,
        &["send", "-b", &bootstrap, "--partition", "1", "t", "hello"],
        &[],
    )
    .await;
    assert_ok("faust send -b", &out);
    assert_eq!(out.stdout.trim(), "sent to t[1]@0");

    let signalled = Instant::now();
    broker.signal("TERM");
    let status = broker.wait_exit(Duration::from_secs(30)).await;
    println!(
        "faust broker stopped {:.0} ms after SIGTERM",
        signalled.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(status.code(), Some(0), "{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faust_broker_reports_a_busy_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = run(FAUST, &["broker", "--port", &port], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    let out = run(FAUST, &["broker", "--port", "0", "--topic", "t:x"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("t:x"), "{}", out.stderr);
}
