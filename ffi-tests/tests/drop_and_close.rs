//! Rules (docs/src/design/client.md): "`Drop` never blocks the runtime", "Messages are owned,
//! `Send + 'static` ... no lifetime tied to the consumer", and `Consumer::close`
//! "completes within about `timeout` even if every broker is gone".
//!
//! `drops_never_block_the_runtime`: on a current-thread runtime (where any blocking drop
//! stalls everything), every handle is dropped, in several orders, and each `drop` is
//! timed: a producer with messages in flight to a broker that is down, delivery futures
//! of those messages, a consumer that is subscribed and assigned but not closed, a
//! partition queue split off it, messages kept after their consumer was dropped (their
//! payload must still read back intact), an admin client, and the mock cluster itself,
//! dropped first in some orders and last in others. Each client drop must take < 50 ms
//! (the mock cluster's, which joins its thread, only < 5 s); the times are printed.
//!
//! Every undeliverable message's delivery future, kept aside past all those drops, must
//! still resolve (with `_MSG_TIMED_OUT`): a dropped producer keeps reporting.
//!
//! `close_with_all_brokers_down_is_bounded`: consumers that joined their groups and read a
//! message are closed after every broker was taken down. `close()` must finish within its
//! documented 10 s bound (plus a margin), `close_within(2 s)` within 2 s (plus a margin),
//! the drop of the consumer whose close gave up must take < 50 ms, and the runtime
//! (current-thread) must stay responsive meanwhile: a ticking task keeps ticking. The
//! times are printed.
//!
//! `messages_outlive_consumer_and_runtime`: messages read back intact after their
//! consumer and the runtime it ran on are gone, also on another thread.
//!
//! `commit_handle_after_its_consumer_resolves_closed`: a commit through a `CommitHandle`
//! whose consumer was dropped resolves (with `Closed` once the client stopped), never hangs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use ffi_tests::{init_tracing, unique_name, wait_for_assignment, wait_until, Fixture, Rng};
use rdkafka_async::{
    Admin, Consumer, DeliveryFuture, Message, MockCluster, PartitionQueue, Producer, Record,
};

/// The most a client handle's drop may take.
const DROP_BOUND: Duration = Duration::from_millis(50);
/// The mock cluster is not a client: its drop joins the mock's thread, which may only
/// notice on its next one-second tick (see `MockCluster`'s docs). Only a hang fails.
const MOCK_DROP_BOUND: Duration = Duration::from_secs(5);
/// `Consumer::close`'s documented bound.
const CLOSE_BOUND: Duration = Duration::from_secs(10);
/// Kept messages per consumer, and in-flight messages per producer.
const KEPT: usize = 5;
const IN_FLIGHT: usize = 50;

/// One live handle of each kind, dropped one by one in a chosen order.
#[allow(dead_code)] // The handles are only held, to be dropped.
enum Handle {
    Cluster(MockCluster),
    Producer(Producer),
    Delivery(DeliveryFuture),
    Consumer(Consumer),
    PartitionQueue(PartitionQueue),
    Message(Message, Vec<u8>),
    Admin(Admin),
}

impl Handle {
    fn kind(&self) -> &'static str {
        match self {
            Handle::Cluster(_) => "mock cluster",
            Handle::Producer(_) => "producer",
            Handle::Delivery(_) => "delivery future",
            Handle::Consumer(_) => "consumer",
            Handle::PartitionQueue(_) => "partition queue",
            Handle::Message(..) => "message",
            Handle::Admin(_) => "admin",
        }
    }
}

/// Sets up every kind of handle on a fresh cluster. Also returns one more delivery
/// future of an undeliverable message, kept aside as a witness: it must still resolve
/// after everything else was dropped.
async fn handles() -> anyhow::Result<(Vec<Handle>, DeliveryFuture)> {
    let fx = Fixture::new(1, 2)?;
    let side_topic = unique_name("side");
    fx.cluster.create_topic(&side_topic, 1, 1)?;

    // A consumer that joined, holds an assignment and read KEPT messages.
    let producer = Producer::new(fx.producer_config().message_timeout(Duration::from_secs(5)))?;
    let mut expected = Vec::new();
    for i in 0..KEPT {
        let value = format!("kept message {i} {}", "x".repeat(i * 100));
        producer
            .send(Record::to(&fx.topic).value(&value))
            .await?
            .await?;
        expected.push(value.into_bytes());
    }
    let mut consumer = Consumer::new(fx.consumer_config(&unique_name("drops")))?;
    consumer.subscribe(&[&fx.topic]).await?;
    wait_for_assignment(&mut consumer, Duration::from_secs(30)).await?;
    let mut messages = Vec::new();
    for _ in 0..KEPT {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("the consumer read nothing")??;
        let payload = m.payload().context("no payload")?.to_vec();
        ensure!(expected.contains(&payload), "unexpected payload");
        messages.push(Handle::Message(m, payload));
    }
    let queue = consumer.split_partition_queue(&side_topic, 0)?;
    let admin = Admin::new(fx.base_config())?;

    // The broker goes down, then the producer gets messages it cannot deliver.
    fx.cluster.set_broker_down(1)?;
    let mut deliveries = Vec::new();
    for i in 0..IN_FLIGHT {
        let value = format!("undeliverable {i}");
        deliveries.push(Handle::Delivery(
            producer.try_send(&Record::to(&fx.topic).value(&value))?,
        ));
    }
    let witness = producer.try_send(&Record::to(&fx.topic).value("witness"))?;
    ensure!(
        producer.in_flight() == IN_FLIGHT + 1,
        "in flight: {}",
        producer.in_flight()
    );

    let Fixture { cluster, .. } = fx;
    let mut all = vec![
        Handle::Cluster(cluster),
        Handle::Producer(producer),
        Handle::Consumer(consumer),
        Handle::PartitionQueue(queue),
        Handle::Admin(admin),
    ];
    all.extend(deliveries);
    all.extend(messages);
    Ok((all, witness))
}

/// The witness resolves (at the latest when its message times out: `message.timeout.ms`
/// = 5 s): the dropped producer's messages are still reported, nothing hangs.
async fn witness_resolves(witness: DeliveryFuture) -> anyhow::Result<String> {
    let start = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), witness)
        .await
        .context("the delivery future of a dropped producer never resolved")?;
    ensure!(
        outcome.is_err(),
        "an undeliverable message was delivered: {outcome:?}"
    );
    Ok(format!(
        "witness delivery future resolved after {:?}: {}",
        start.elapsed(),
        outcome.unwrap_err()
    ))
}

/// Drops `handles` front to back, timing each drop; the kept messages are read back
/// after every drop. Returns the timing report and the client drops over the bound.
fn drop_in_order(mut handles: Vec<Handle>) -> anyhow::Result<(String, Vec<String>)> {
    let mut report = String::new();
    let mut too_slow = Vec::new();
    let mut timings: Vec<(&'static str, Duration)> = Vec::new();
    while !handles.is_empty() {
        let h = handles.remove(0);
        let kind = h.kind();
        let start = Instant::now();
        drop(h);
        let took = start.elapsed();
        timings.push((kind, took));
        let bound = if kind == "mock cluster" {
            MOCK_DROP_BOUND
        } else {
            DROP_BOUND
        };
        if took >= bound {
            too_slow.push(format!("{kind}: {took:?} (bound {bound:?})"));
        }
        // Messages outlive whatever was dropped: still readable, payload intact.
        for h in &handles {
            if let Handle::Message(m, payload) = h {
                ensure!(
                    m.payload() == Some(payload.as_slice()),
                    "a kept message's payload changed after dropping the {kind}"
                );
                ensure!(!m.topic().is_empty() && m.offset() >= 0);
            }
        }
    }
    // One line per run of the same kind: count, max and total time.
    let mut i = 0;
    while i < timings.len() {
        let kind = timings[i].0;
        let run: Vec<Duration> = timings[i..]
            .iter()
            .take_while(|(k, _)| *k == kind)
            .map(|(_, d)| *d)
            .collect();
        let max = run.iter().max().copied().unwrap_or_default();
        if run.len() == 1 {
            write!(report, "{kind} {max:?}; ")?;
        } else {
            write!(report, "{}x {kind} max {max:?}; ", run.len())?;
        }
        i += run.len();
    }
    Ok((report, too_slow))
}

#[tokio::test(flavor = "current_thread")]
async fn drops_never_block_the_runtime() -> anyhow::Result<()> {
    init_tracing();
    let mut rng = Rng::from_env("drop orders");
    let rank_of =
        |order: &[&str], h: &Handle| order.iter().position(|k| *k == h.kind()).unwrap_or(99) as u64;
    let orders: Vec<(&str, Vec<&str>)> = vec![
        (
            "mock cluster last",
            vec![
                "delivery future",
                "producer",
                "partition queue",
                "consumer",
                "message",
                "admin",
                "mock cluster",
            ],
        ),
        (
            "mock cluster first",
            vec![
                "mock cluster",
                "producer",
                "delivery future",
                "consumer",
                "message",
                "partition queue",
                "admin",
            ],
        ),
        (
            "consumer before its messages and queue",
            vec![
                "consumer",
                "admin",
                "partition queue",
                "producer",
                "mock cluster",
                "message",
                "delivery future",
            ],
        ),
        (
            "messages first",
            vec![
                "message",
                "admin",
                "delivery future",
                "consumer",
                "producer",
                "partition queue",
                "mock cluster",
            ],
        ),
    ];
    let mut failures = Vec::new();
    let mut witnesses = Vec::new();
    for (name, order) in &orders {
        let (mut hs, witness) = handles().await?;
        hs.sort_by_key(|h| rank_of(order, h));
        let (report, slow) = drop_in_order(hs)?;
        println!("drop times, {name}: {report}");
        witnesses.push(witness);
        failures.extend(slow.into_iter().map(|s| format!("{name}: {s}")));
    }
    // Random orders, interleaving kinds.
    for round in 0..3 {
        let (hs, witness) = handles().await?;
        let keys: Vec<u64> = (0..hs.len()).map(|_| rng.next_u64()).collect();
        let mut keyed: Vec<(u64, Handle)> = keys.into_iter().zip(hs).collect();
        keyed.sort_by_key(|(k, _)| *k);
        let order: Vec<&str> = keyed.iter().map(|(_, h)| h.kind()).collect();
        let hs: Vec<Handle> = keyed.into_iter().map(|(_, h)| h).collect();
        let (report, slow) = drop_in_order(hs)?;
        println!(
            "drop times, random order {round} ({}): {report}",
            order.join(", ")
        );
        witnesses.push(witness);
        failures.extend(
            slow.into_iter()
                .map(|s| format!("random order {round}: {s}")),
        );
    }
    for witness in witnesses {
        println!("{}", witness_resolves(witness).await?);
    }
    // The runtime is still alive and well: timers fire.
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(1)).await;
    ensure!(
        start.elapsed() < Duration::from_secs(1),
        "the runtime is sluggish after the drops"
    );
    ensure!(failures.is_empty(), "drops over their bound: {failures:?}");
    Ok(())
}

/// A consumer of its own group that joined and read the topic's message.
async fn joined_consumer(fx: &Fixture) -> anyhow::Result<Consumer> {
    // Auto-commit on (the default): close tries a final commit, the worst case.
    let mut consumer = Consumer::new(fx.consumer_config(&unique_name("close")))?;
    consumer.subscribe(&[&fx.topic]).await?;
    wait_for_assignment(&mut consumer, Duration::from_secs(30)).await?;
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    ensure!(m.payload() == Some(&b"before the outage"[..]));
    Ok(consumer)
}

fn is_timed_out(err: &rdkafka_async::Error) -> bool {
    err.code().map(|c| c.raw())
        == Some(rdkafka_async::sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT)
}

#[tokio::test(flavor = "current_thread")]
async fn close_with_all_brokers_down_is_bounded() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(3, 3)?;
    let producer = Producer::new(fx.producer_config())?;
    producer
        .send(Record::to(&fx.topic).value("before the outage"))
        .await?
        .await?;
    drop(producer);
    let consumer = joined_consumer(&fx).await?;
    let mut short = joined_consumer(&fx).await?;

    for id in fx.cluster.broker_ids() {
        fx.cluster.set_broker_down(id)?;
    }

    // A ticking task: on a current-thread runtime it only ticks if closing never blocks.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut ticks, mut max_gap, mut last) = (0u64, Duration::ZERO, Instant::now());
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    ticks += 1;
                    max_gap = max_gap.max(last.elapsed());
                    last = Instant::now();
                }
                _ = &mut stop_rx => break,
            }
        }
        (ticks, max_gap.max(last.elapsed()))
    });
    let started = Instant::now();
    wait_until(Duration::from_secs(5), "the ticker runs", || {
        started.elapsed() > Duration::from_millis(30)
    })
    .await?;

    // Both at once: `close()` (10 s bound) and `close_within(2 s)`, then the drop of the
    // consumer whose close gave up.
    const SHORT: Duration = Duration::from_secs(2);
    let start = Instant::now();
    let close = async {
        let result =
            tokio::time::timeout(CLOSE_BOUND + Duration::from_secs(20), consumer.close()).await;
        (result, start.elapsed())
    };
    let close_short = async {
        let result =
            tokio::time::timeout(SHORT + Duration::from_secs(20), short.close_within(SHORT)).await;
        let took = start.elapsed();
        let dropped = Instant::now();
        drop(short);
        (result, took, dropped.elapsed())
    };
    let ((result, took), (short_result, short_took, short_drop)) = tokio::join!(close, close_short);
    let _ = stop_tx.send(());
    let (ticks, max_gap) = ticker.await?;
    println!(
        "with all {} brokers down: close() took {took:?} ({result:?}); close_within({SHORT:?}) \
         took {short_took:?} ({short_result:?}), then its drop {short_drop:?}; the ticker \
         ticked {ticks} times, longest gap {max_gap:?}",
        fx.cluster.broker_count()
    );

    let result = result.context("close() did not return within 30 s")?;
    // Timing out at its bound is allowed; any other failure is not.
    if let Err(err) = &result {
        ensure!(is_timed_out(err), "close failed: {err:?}");
    }
    ensure!(
        took <= CLOSE_BOUND + Duration::from_secs(2),
        "close() took {took:?}, over its documented bound of {CLOSE_BOUND:?}"
    );
    let short_result = short_result.context("close_within(2 s) did not return within 22 s")?;
    if let Err(err) = &short_result {
        ensure!(is_timed_out(err), "close_within failed: {err:?}");
    }
    ensure!(
        short_took <= SHORT + Duration::from_secs(1),
        "close_within({SHORT:?}) took {short_took:?}"
    );
    ensure!(
        short_drop < DROP_BOUND,
        "dropping a consumer whose close timed out took {short_drop:?}"
    );
    if ffi_tests::under_valgrind() {
        // Valgrind serialises threads: gaps of the ticker measure valgrind, not us.
        return Ok(());
    }
    ensure!(
        max_gap < Duration::from_millis(300),
        "the runtime stalled for {max_gap:?} while closing"
    );
    let expected_ticks = took.as_millis() as u64 / 10;
    ensure!(
        ticks * 2 >= expected_ticks,
        "only {ticks} ticks during a {took:?} close (expected about {expected_ticks})"
    );
    Ok(())
}

/// Messages are `'static`: they outlive their consumer and even the runtime the consumer
/// ran on; read back after both are gone, their payloads are intact, and dropping them
/// then (which destroys the client, on this thread since no runtime is left) finishes.
#[test]
fn messages_outlive_consumer_and_runtime() -> anyhow::Result<()> {
    init_tracing();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fx = Fixture::new(1, 1)?;
    let kept: Vec<(Message, Vec<u8>)> = rt.block_on(async {
        let producer = Producer::new(fx.producer_config())?;
        let mut expected = Vec::new();
        for i in 0..KEPT {
            let value = format!("outlives the runtime {i}");
            producer
                .send(Record::to(&fx.topic).value(&value))
                .await?
                .await?;
            expected.push(value.into_bytes());
        }
        let mut consumer = Consumer::new(fx.consumer_config(&unique_name("outlive")))?;
        consumer.subscribe(&[&fx.topic]).await?;
        let mut kept = Vec::new();
        for want in expected {
            let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
            ensure!(
                m.payload() == Some(want.as_slice()),
                "out of order or corrupt"
            );
            kept.push((m, want));
        }
        drop(consumer);
        anyhow::Ok(kept)
    })?;
    let start = Instant::now();
    drop(rt);
    println!(
        "runtime dropped in {:?} with {} messages still held",
        start.elapsed(),
        kept.len()
    );
    for (m, want) in &kept {
        ensure!(
            m.payload() == Some(want.as_slice()),
            "payload changed after the runtime was dropped"
        );
        ensure!(m.topic() == fx.topic);
    }
    // Moved to another thread and read there too.
    let kept = std::thread::spawn(move || {
        for (m, want) in &kept {
            assert_eq!(m.payload(), Some(want.as_slice()));
        }
        kept
    })
    .join()
    .map_err(|_| anyhow::anyhow!("reading messages on another thread panicked"))?;
    let start = Instant::now();
    drop(kept);
    println!(
        "the last message dropped (destroying the consumer's client, outside any runtime) in {:?}",
        start.elapsed()
    );
    Ok(())
}

/// A commit handle that outlives its consumer: once the consumer's client has stopped
/// (nothing is left to read librdkafka's answers), a commit resolves with `Closed`
/// instead of waiting forever.
#[tokio::test(flavor = "current_thread")]
async fn commit_handle_after_its_consumer_resolves_closed() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 1)?;
    let consumer = Consumer::new(fx.consumer_config(&unique_name("orphan")))?;
    let handle = consumer.commit_handle();
    drop(consumer);
    // The driver exits on its own schedule after the drop: every commit until then is
    // answered by the broker (or fails), none may hang.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(30), handle.commit_stored())
            .await
            .context("a commit through an orphaned handle hung")?;
        match answer {
            Err(rdkafka_async::Error::Closed) => return Ok(()),
            other => {
                ensure!(
                    Instant::now() < deadline,
                    "never closed, last answer {other:?}"
                );
                tokio::task::yield_now().await;
            }
        }
    }
}
