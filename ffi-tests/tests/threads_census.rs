//! Rule (docs/src/design/client.md): the client adds no threads of its own. A process running a
//! producer, a subscribed consumer that is receiving, and an admin client has only
//! tokio's threads (workers and blocking pool, named `tokio-rt` here), the test harness's
//! thread(s), and librdkafka's own threads: `rdk:main` per handle, `rdk:broker<id>` per
//! broker connection (`rdk:broker-1` for bootstrap, internal and logical brokers),
//! `rdk:bg` if a background queue is used, and `rdk:mock` for the mock cluster (names from
//! `rd_kafka_set_thread_sysname` in librdkafka's `rdkafka.c`, `rdkafka_broker.c`,
//! `rdkafka_background.c`, `rdkafka_mock.c`). In particular there is no polling thread per
//! producer or admin client (rust-rdkafka's "producer polling thread" / "admin client
//! polling thread"): adding producers and admins adds only librdkafka threads.
//!
//! This file holds a single test on purpose: other tests of the same binary would run
//! concurrently and add their threads to the census.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use ffi_tests::{init_tracing, thread_names, unique_name, Fixture};
use rdkafka_async::{Admin, Consumer, Producer, Record};

const TOKIO_NAME: &str = "tokio-rt";

/// Linux keeps at most 15 bytes of a thread name.
fn comm_of(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

fn is_librdkafka(name: &str) -> bool {
    name == "rdk:main"
        || name == "rdk:bg"
        || name == "rdk:mock"
        || name
            .strip_prefix("rdk:broker")
            .is_some_and(|id| id.parse::<i32>().is_ok())
}

fn census(names: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in names {
        *counts.entry(n.clone()).or_default() += 1;
    }
    counts
}

fn print_census(label: &str, names: &[String]) {
    println!("--- thread census: {label} ({} threads)", names.len());
    for (name, count) in census(names) {
        println!("  {count:>3} x {name:?}");
    }
}

fn count(names: &[String], pred: impl Fn(&str) -> bool) -> usize {
    names.iter().filter(|n| pred(n)).count()
}

#[test]
fn only_tokio_and_librdkafka_threads() -> anyhow::Result<()> {
    init_tracing();
    // The process's own name (the main thread's comm) and the harness thread running us.
    let process_comm = std::fs::read_to_string("/proc/self/comm")?
        .trim_end()
        .to_owned();
    let harness = comm_of(std::thread::current().name().unwrap_or("main"));
    let allowed = |name: &str| {
        name == TOKIO_NAME || name == process_comm || name == harness || is_librdkafka(name)
    };
    print_census("before the runtime", &thread_names()?);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(TOKIO_NAME)
        .enable_all()
        .build()?;

    let fx = Fixture::new(1, 2)?;
    rt.block_on(async {
        let producer = Producer::new(fx.producer_config())?;
        let mut consumer = Consumer::new(fx.consumer_config(&unique_name("census")))?;
        consumer.subscribe(&[&fx.topic]).await?;
        let admin = Admin::new(fx.base_config())?;

        // The consumer receives in its own task, and stays inside `recv` during the census.
        let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let consumer_task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = consumer.recv() => {
                        let m = m?;
                        let _ = got_tx.send(m.payload().map(<[u8]>::to_vec));
                    }
                    _ = &mut stop_rx => break,
                }
            }
            consumer.close().await?;
            anyhow::Ok(())
        });

        producer
            .send(Record::to(&fx.topic).key("k").value("census"))
            .await?
            .await?;
        let got = tokio::time::timeout(Duration::from_secs(30), got_rx.recv())
            .await
            .context("the consumer received nothing within 30 s")?;
        ensure!(
            got == Some(Some(b"census".to_vec())),
            "unexpected message {got:?}"
        );

        let names = thread_names()?;
        print_census(
            "producer + receiving consumer + admin + mock cluster",
            &names,
        );
        let strangers: Vec<_> = names.iter().filter(|n| !allowed(n)).collect();
        ensure!(
            strangers.is_empty(),
            "threads that are neither tokio's, the harness's nor librdkafka's: {strangers:?} \
             (harness thread {harness:?}, process {process_comm:?})"
        );
        ensure!(
            !names.iter().any(|n| n.contains("polling")
                || n.starts_with("producer poll")
                || n.starts_with("admin client")),
            "a polling thread exists: {names:?}"
        );
        // One rdk:main per librdkafka handle: producer, consumer, admin, and the handle
        // the mock cluster is created with.
        ensure!(
            count(&names, |n| n == "rdk:main") == 4,
            "expected 4 rdk:main threads, found {}",
            count(&names, |n| n == "rdk:main")
        );
        ensure!(
            count(&names, |n| n == "rdk:mock") == 1,
            "expected one rdk:mock thread"
        );
        ensure!(
            count(&names, |n| n == TOKIO_NAME) >= 2,
            "the two tokio workers are missing"
        );

        // More producers and admins add librdkafka threads only.
        let others_before = count(&names, |n| !is_librdkafka(n));
        let mains_before = count(&names, |n| n == "rdk:main");
        let mut extra_producers = Vec::new();
        let mut extra_admins = Vec::new();
        for _ in 0..3 {
            extra_producers.push(Producer::new(fx.producer_config())?);
            extra_admins.push(Admin::new(fx.base_config())?);
        }
        for p in &extra_producers {
            p.send(Record::to(&fx.topic).value("more")).await?.await?;
        }
        let names = thread_names()?;
        print_census("after 3 more producers and 3 more admins", &names);
        ensure!(
            count(&names, |n| !is_librdkafka(n)) == others_before,
            "non-librdkafka threads went from {others_before} to {}",
            count(&names, |n| !is_librdkafka(n))
        );
        ensure!(count(&names, |n| n == "rdk:main") == mains_before + 6);
        let strangers: Vec<_> = names.iter().filter(|n| !allowed(n)).collect();
        ensure!(strangers.is_empty(), "unexpected threads: {strangers:?}");

        for p in extra_producers.iter().chain([&producer]) {
            tokio::time::timeout(Duration::from_secs(30), p.flush()).await??;
        }
        let _ = stop_tx.send(());
        consumer_task.await??;
        drop((producer, admin, extra_producers, extra_admins));

        // Dropped clients are destroyed in the background while the runtime runs (on its
        // blocking pool): their librdkafka threads exit; the mock cluster's stay.
        let took = ffi_tests::wait_until(
            Duration::from_secs(30),
            "dropped clients' threads exited",
            || thread_names().is_ok_and(|names| count(&names, |n| n == "rdk:main") == 1),
        )
        .await?;
        let names = thread_names()?;
        print_census(
            &format!("clients dropped, runtime alive, after {took:?}"),
            &names,
        );
        let strangers: Vec<_> = names.iter().filter(|n| !allowed(n)).collect();
        ensure!(strangers.is_empty(), "unexpected threads: {strangers:?}");
        anyhow::Ok(())
    })?;

    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names = thread_names()?;
        if count(&names, |n| n == "rdk:main") == 1 && count(&names, |n| n == TOKIO_NAME) == 0 {
            print_census("runtime dropped, mock cluster alive", &names);
            break;
        }
        if Instant::now() > deadline {
            print_census("runtime dropped (timed out)", &names);
            anyhow::bail!("threads still alive 30 s after the runtime was dropped");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(fx);
    let names = thread_names()?;
    print_census("everything dropped", &names);
    ensure!(
        !names.iter().any(|n| is_librdkafka(n)),
        "librdkafka threads outlive every handle: {names:?}"
    );
    Ok(())
}
