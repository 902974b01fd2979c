//! Rule (docs/src/design/client.md, "Per queue: ... drain until empty before clearing readiness";
//! "A drain cut short ... must reschedule itself"): no wake-up is ever lost.
//!
//! Many messages over several partitions and brokers, produced in random bursts with
//! random pauses, some sent with `try_send` and some with `send`, half of the delivery
//! futures dropped and half awaited (some of those polled with a short timeout first and
//! awaited again); statistics every 10 ms interleaved with delivery reports on the
//! producer's and the consumer's event queues; a consumer that reads at random speeds:
//! plain `recv`, `next_event`, fast phases (reads back to back), slow phases (random
//! small delays between reads), periods where it has caught up and waits idle on its
//! fd, and `recv` futures dropped mid-wait by a random short `tokio::time::timeout`
//! before calling again (`recv` is cancel safe). Every message produced must be consumed exactly once (by
//! content: a set of ids; and by position: each partition's offsets are `0..n` with no
//! repeat) before a deadline, and both clients' statistics watches must have updated.
//! A second variant reads one partition through `Consumer::split_partition_queue`, from
//! its own task, with the same random behaviour, while the consumer reads the others.
//!
//! The producer's side of the rule ("A full producer queue is awaited (woken by delivery
//! reports), never slept on"): `send_waiting_for_room_is_woken` has a `send` wait for
//! room in a queue of one message, many times over, where the one delivery report that
//! frees the queue is also the last one (nothing else would wake the sender again); and
//! `full_queue_error_is_retriable` checks the `_QUEUE_FULL` error of `try_send` is
//! retriable, as `try_send` documents.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use ffi_tests::{init_tracing, unique_name, wait_until, Fixture, Rng};
use rdkafka_async::{
    Consumer, ConsumerEvent, DeliveryFuture, Message, PartitionQueue, Producer, Record,
};

const MESSAGES: u64 = 30_000;
const PARTITIONS: i32 = 6;
const BROKERS: i32 = 3;
const DEADLINE: Duration = Duration::from_secs(90);

/// The value of message `id`: its id and a padding of a length and byte derived from it.
fn payload(id: u64) -> Vec<u8> {
    let mut v = format!("id:{id}:").into_bytes();
    v.extend(std::iter::repeat_n(
        b'a' + (id % 26) as u8,
        (id % 97) as usize,
    ));
    v
}

/// Parses and checks a payload made by [`payload`].
fn parse(bytes: &[u8]) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(bytes).context("payload is not UTF-8")?;
    let rest = text.strip_prefix("id:").context("payload lacks its id")?;
    let (id, _) = rest.split_once(':').context("payload lacks its id")?;
    let id: u64 = id.parse()?;
    ensure!(bytes == payload(id), "payload of id {id} is corrupt");
    Ok(id)
}

/// What the readers have seen, shared by the consumer's and the partition queue's tasks.
#[derive(Default)]
struct Seen {
    ids: HashSet<u64>,
    /// Per partition, the offsets seen.
    offsets: BTreeMap<i32, BTreeSet<i64>>,
    duplicates: Vec<String>,
    total: u64,
}

impl Seen {
    fn record(&mut self, m: &Message) -> anyhow::Result<()> {
        let id = parse(m.payload().context("message without a value")?)?;
        self.total += 1;
        let fresh_offset = self
            .offsets
            .entry(m.partition())
            .or_default()
            .insert(m.offset());
        if !self.ids.insert(id) || !fresh_offset {
            self.duplicates.push(format!(
                "id {id} at {}[{}]@{}",
                m.topic(),
                m.partition(),
                m.offset()
            ));
        }
        Ok(())
    }
}

/// Counters of the reader's behaviour, printed at the end.
#[derive(Default, Debug)]
struct Behaviour {
    fast_phases: u64,
    slow_phases: u64,
    /// Plain `recv` calls.
    plain: u64,
    /// `next_event` calls.
    events: u64,
    /// `recv` calls dropped mid-wait by their timeout.
    cancelled: u64,
    /// `recv` calls under a timeout that returned a message in time.
    raced: u64,
}

/// Something to read messages from with the random schedule: the consumer itself or a
/// split-off partition queue.
trait Source {
    async fn next(&mut self) -> rdkafka_async::Result<Message>;
    /// `next_event`, where there is one; rebalances are completed.
    async fn next_via_event(&mut self) -> rdkafka_async::Result<Message> {
        self.next().await
    }
}

impl Source for Consumer {
    async fn next(&mut self) -> rdkafka_async::Result<Message> {
        self.recv().await
    }

    async fn next_via_event(&mut self) -> rdkafka_async::Result<Message> {
        loop {
            match self.next_event().await? {
                ConsumerEvent::Message(m) => return Ok(m),
                ConsumerEvent::Rebalance(r) => {
                    println!("rebalance while reading: {r:?}");
                    r.complete().await?;
                }
            }
        }
    }
}

impl Source for PartitionQueue {
    async fn next(&mut self) -> rdkafka_async::Result<Message> {
        self.recv().await
    }
}

/// Runs `fut` unless every message was seen first (then `None`). This never re-polls
/// the read: a lost wake-up leaves it pending and fails the test by its deadline.
async fn unless_done<F: std::future::Future>(
    fut: F,
    done: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        _ = done.wait_for(|d| *d) => None,
    }
}

/// Reads with a random schedule until `all_seen` says every message was seen.
///
/// The reader alternates between phases of a random length: fast phases (reads back to
/// back) and slow ones (some reads preceded by a small delay). Each read is, at random,
/// a plain `recv`, a `next_event`, or a `recv` whose future is dropped after a random
/// short time if nothing came (then the next read calls again).
async fn read_randomly<S: Source>(
    source: &mut S,
    mut rng: Rng,
    seen: &Mutex<Seen>,
    expect_partition: impl Fn(i32) -> bool,
    all_seen: &tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<Behaviour> {
    let mut done = all_seen.subscribe();
    let mut b = Behaviour::default();
    let check = |m: Message| -> anyhow::Result<()> {
        ensure!(
            expect_partition(m.partition()),
            "message of partition {} read from the wrong source",
            m.partition()
        );
        let mut seen = seen.lock().unwrap();
        seen.record(&m)?;
        if seen.ids.len() as u64 >= MESSAGES {
            all_seen.send_replace(true);
        }
        Ok(())
    };
    'phases: while !*done.borrow() {
        let slow = rng.chance(0.2);
        if slow {
            b.slow_phases += 1;
        } else {
            b.fast_phases += 1;
        }
        for _ in 0..rng.range(1, 300) {
            if *done.borrow() {
                break 'phases;
            }
            if slow && rng.chance(0.15) {
                // Work between reads, on purpose.
                tokio::time::sleep(Duration::from_micros(rng.range(500, 3_000))).await;
            }
            match rng.below(10) {
                // A wait cut short: the recv future is dropped mid-wait, then called again.
                0..=2 => {
                    let limit = if rng.chance(0.6) {
                        Duration::from_micros(rng.range(0, 3_000))
                    } else {
                        Duration::from_micros(rng.range(3_000, 40_000))
                    };
                    match tokio::time::timeout(limit, source.next()).await {
                        Ok(m) => {
                            b.raced += 1;
                            check(m?)?;
                        }
                        Err(_) => b.cancelled += 1,
                    }
                }
                3 => {
                    b.events += 1;
                    match unless_done(source.next_via_event(), &mut done).await {
                        Some(m) => check(m?)?,
                        None => break 'phases,
                    }
                }
                _ => {
                    b.plain += 1;
                    match unless_done(source.next(), &mut done).await {
                        Some(m) => check(m?)?,
                        None => break 'phases,
                    }
                }
            }
        }
    }
    Ok(b)
}

fn is_queue_full(err: &rdkafka_async::Error) -> bool {
    err.code().is_some_and(|c| {
        c.raw() == rdkafka_async::sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__QUEUE_FULL
    })
}

/// Produces `MESSAGES` records in random bursts with random pauses; returns the kept
/// delivery futures' checker task.
async fn produce_randomly(
    producer: Producer,
    topic: String,
    mut rng: Rng,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let (keep_tx, mut keep_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, DeliveryFuture)>();
    // Awaits the kept delivery futures while producing goes on; some are first polled
    // with a short timeout (cancelled) and then awaited again.
    let mut checker_rng = rng.fork();
    let checker = tokio::spawn(async move {
        let mut checked = 0u64;
        while let Some((id, mut fut)) = keep_rx.recv().await {
            if checker_rng.chance(0.2) {
                let limit = Duration::from_micros(checker_rng.range(0, 2000));
                if let Ok(res) = tokio::time::timeout(limit, &mut fut).await {
                    res.with_context(|| format!("delivery of id {id}"))?;
                    checked += 1;
                    continue;
                }
            }
            fut.await.with_context(|| format!("delivery of id {id}"))?;
            checked += 1;
        }
        anyhow::Ok(checked)
    });

    let (mut id, mut bursts, mut try_sends, mut full, mut idle) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while id < MESSAGES {
        bursts += 1;
        // Now and then let the readers catch up completely, so they go idle on their fds
        // (and some of their waits are cancelled) before the next burst arrives.
        if rng.chance(0.08) {
            let so_far = id;
            wait_until(DEADLINE, "the readers caught up with the producer", || {
                seen.lock().unwrap().ids.len() as u64 >= so_far
            })
            .await?;
            idle += 1;
            // On purpose: the readers stay idle for a while.
            tokio::time::sleep(Duration::from_millis(rng.range(5, 60))).await;
        }
        let burst = rng.range(1, 300).min(MESSAGES - id);
        for _ in 0..burst {
            let value = payload(id);
            let key = id.to_string();
            let mut record = Record::to(&topic).value(&value);
            record = if rng.chance(0.5) {
                record.partition(rng.below(PARTITIONS as u64) as i32)
            } else {
                record.key(&key)
            };
            let fut = if rng.chance(0.3) {
                try_sends += 1;
                match producer.try_send(&record) {
                    Ok(fut) => fut,
                    // (Whether it says `is_retriable` is checked by its own test below.)
                    Err(err) if is_queue_full(&err) => {
                        full += 1;
                        producer.send(record).await?
                    }
                    Err(err) => return Err(err.into()),
                }
            } else {
                producer.send(record).await?
            };
            if rng.chance(0.5) {
                let _ = keep_tx.send((id, fut));
            }
            id += 1;
        }
        // A pause between bursts, on purpose (this is the producer's behaviour).
        // Mostly short, often long enough for the readers to catch up and wait on their
        // fds (where a lost wake-up would leave them).
        let pause = match rng.below(20) {
            0 => Duration::from_millis(rng.range(50, 150)),
            1..=5 => Duration::from_millis(rng.range(10, 50)),
            _ => Duration::from_micros(rng.range(0, 8_000)),
        };
        tokio::time::sleep(pause).await;
    }
    drop(keep_tx);
    tokio::time::timeout(DEADLINE, producer.flush())
        .await
        .context("flush did not finish")??;
    ensure!(
        producer.in_flight() == 0,
        "in flight after flush: {}",
        producer.in_flight()
    );
    let checked = checker.await??;
    ensure!(
        producer.outstanding_slots() == 0,
        "delivery slots leaked: {}",
        producer.outstanding_slots()
    );
    println!(
        "producer: {MESSAGES} sent in {bursts} bursts ({try_sends} try_send, {full} found the \
         queue full), {checked} delivery futures awaited, {idle} idle periods for the readers"
    );
    Ok(())
}

/// Counts updates of a statistics watch until `stop` fires; returns (updates, last).
fn count_statistics(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<rdkafka_async::Statistics>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(u64, Option<Arc<rdkafka_async::Statistics>>)> {
    tokio::spawn(async move {
        let mut updates = 0;
        loop {
            tokio::select! {
                res = rx.changed() => {
                    if res.is_err() {
                        break;
                    }
                    updates += 1;
                }
                _ = stop.changed() => break,
            }
        }
        let last = rx.borrow().clone();
        (updates, last)
    })
}

async fn stress(split: bool) -> anyhow::Result<()> {
    init_tracing();
    let mut rng = Rng::from_env(if split {
        "stress with a split partition"
    } else {
        "stress"
    });
    let fx = Fixture::new(BROKERS, PARTITIONS)?;
    let stats = Duration::from_millis(10);
    let producer = Producer::new(
        fx.producer_config()
            .statistics_interval(stats)
            .enable_idempotence(true)
            .queue_buffering_max_messages(500),
    )?;
    let mut consumer = Consumer::new(
        fx.consumer_config(&unique_name("stress"))
            .statistics_interval(stats)
            .enable_auto_commit(false),
    )?;
    let split_queue = if split {
        Some(consumer.split_partition_queue(&fx.topic, 0)?)
    } else {
        None
    };
    consumer.subscribe(&[&fx.topic]).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let producer_stats = count_statistics(producer.statistics(), stop_rx.clone());
    let consumer_stats = count_statistics(consumer.statistics(), stop_rx.clone());

    let start = Instant::now();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let all_seen = Arc::new(tokio::sync::watch::channel(false).0);

    let produce = tokio::spawn({
        let run = produce_randomly(producer.clone(), fx.topic.clone(), rng.fork(), seen.clone());
        async move {
            // Shown at once: the readers would otherwise only report missing messages.
            run.await
                .inspect_err(|err| eprintln!("producer failed: {err:#}"))
        }
    });

    // The split partition's reader runs in its own task.
    let split_reader = split_queue.map(|mut queue| {
        let (seen, all_seen, rng) = (seen.clone(), all_seen.clone(), rng.fork());
        tokio::spawn(async move {
            let b = read_randomly(&mut queue, rng, &seen, |p| p == 0, &all_seen).await?;
            anyhow::Ok((b, queue))
        })
    });

    let read = read_randomly(
        &mut consumer,
        rng.fork(),
        &seen,
        |p| !split || p != 0,
        &all_seen,
    );
    let outcome = tokio::time::timeout(DEADLINE, read).await;
    let report = |seen: &Seen| {
        let missing: Vec<u64> = (0..MESSAGES)
            .filter(|i| !seen.ids.contains(i))
            .take(20)
            .collect();
        format!(
            "{} distinct ids of {MESSAGES} ({} messages), first missing {missing:?}, \
             per partition {:?}",
            seen.ids.len(),
            seen.total,
            seen.offsets
                .iter()
                .map(|(p, o)| (*p, o.len()))
                .collect::<Vec<_>>(),
        )
    };
    let behaviour = match outcome {
        Ok(b) => b?,
        Err(_) => bail!(
            "not every message was consumed within {DEADLINE:?}: {}; producer: task \
             finished {}, {} messages in flight, {} slots in use",
            report(&seen.lock().unwrap()),
            produce.is_finished(),
            producer.in_flight(),
            producer.outstanding_slots(),
        ),
    };
    let elapsed = start.elapsed();
    println!("consumer reads: {behaviour:?}");
    produce.await??;
    let mut queue = None;
    if let Some(task) = split_reader {
        let (b, q) = tokio::time::timeout(DEADLINE, task)
            .await
            .context("the split partition's reader did not finish")???;
        println!("partition queue reads: {b:?}");
        queue = Some(q);
    }

    // Nothing more may come: every message was already handed out once. A short quiet
    // period, on purpose: this checks for the absence of extra deliveries.
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.recv()).await;
    ensure!(
        extra.is_err(),
        "a message beyond the {MESSAGES} produced: {extra:?}"
    );
    if let Some(q) = queue.as_mut() {
        let extra = tokio::time::timeout(Duration::from_millis(300), q.recv()).await;
        ensure!(
            extra.is_err(),
            "an extra message on the partition queue: {extra:?}"
        );
    }

    {
        let seen = seen.lock().unwrap();
        println!("consumed in {elapsed:?}: {}", report(&seen));
        ensure!(
            seen.duplicates.is_empty(),
            "duplicates: {:?}",
            seen.duplicates
        );
        ensure!(
            seen.total == MESSAGES,
            "{} messages for {MESSAGES} ids",
            seen.total
        );
        for (p, offsets) in &seen.offsets {
            let n = offsets.len() as i64;
            ensure!(
                offsets.first() == Some(&0) && offsets.last() == Some(&(n - 1)),
                "partition {p}: offsets are not 0..{n}"
            );
        }
        if split {
            ensure!(
                seen.offsets.get(&0).is_some_and(|o| !o.is_empty()),
                "partition 0 received nothing"
            );
        }
    }

    stop_tx.send_replace(true);
    let (p_updates, p_last) = producer_stats.await?;
    let (c_updates, c_last) = consumer_stats.await?;
    println!(
        "statistics updates seen: producer {p_updates}, consumer {c_updates} (every {stats:?} \
         for {elapsed:?})"
    );
    ensure!(
        p_updates >= 5,
        "producer statistics updated {p_updates} times"
    );
    ensure!(
        c_updates >= 5,
        "consumer statistics updated {c_updates} times"
    );
    let (p_last, c_last) = (
        p_last.context("no producer stats")?,
        c_last.context("no consumer stats")?,
    );
    ensure!(p_last.client_type == "producer", "{:?}", p_last.client_type);
    ensure!(c_last.client_type == "consumer", "{:?}", c_last.client_type);
    ensure!(
        p_last.txmsgs >= MESSAGES,
        "producer stats txmsgs {}",
        p_last.txmsgs
    );

    drop(queue);
    tokio::time::timeout(Duration::from_secs(30), consumer.close())
        .await
        .context("close hung")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_wakeups() -> anyhow::Result<()> {
    stress(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_wakeups_with_split_partition_queue() -> anyhow::Result<()> {
    stress(true).await
}

/// `try_send` on a full producer queue fails with `_QUEUE_FULL`, which the docs of
/// `try_send` call retriable (it is exactly what `send` waits out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_error_is_retriable() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 1)?;
    let producer = Producer::new(fx.producer_config().queue_buffering_max_messages(1))?;
    let first = producer.try_send(&Record::to(&fx.topic).value("1"))?;
    let err = producer
        .try_send(&Record::to(&fx.topic).value("2"))
        .err()
        .context("a second message fit a queue of one")?;
    ensure!(is_queue_full(&err), "expected _QUEUE_FULL, got {err:?}");
    first.await?;
    ensure!(
        err.is_retriable(),
        "try_send's _QUEUE_FULL error says is_retriable() == false: {err:?}"
    );
    Ok(())
}

/// A `send` waiting for room in a full producer queue is woken when a delivery report
/// frees room, even when that report frees the whole queue (no later report would come
/// to wake it again). Many rounds with a queue of one message, on two workers, so the
/// woken sender often runs while the driver is still handling the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waiting_for_room_is_woken() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 1)?;
    let producer = Producer::new(fx.producer_config().queue_buffering_max_messages(1))?;
    for round in 0..300 {
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            producer.send(Record::to(&fx.topic).value("r")),
        )
        .await;
        let Ok(fut) = sent else {
            let in_flight = producer.in_flight();
            // Was there room all along? A try_send now tells.
            let now = producer
                .try_send(&Record::to(&fx.topic).value("probe"))
                .map(drop);
            bail!(
                "round {round}: send waited 10 s for room and was never woken, although \
                 {in_flight} messages are in flight and try_send now says {now:?}"
            );
        };
        let fut = fut?;
        // Not awaited: the next round's send is what waits for its report.
        drop(fut);
    }
    tokio::time::timeout(Duration::from_secs(30), producer.flush()).await??;
    Ok(())
}
