//! The `client` benchmark: rdkafka-async against rust-rdkafka on one mock cluster.
//!
//! See the crate documentation for what is measured; every number comes from one run
//! of one process, on one `rdkafka_async::MockCluster` with a single broker.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer as _,
    ProducerContext,
};
use rdkafka::{ClientContext, Message as _};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use crate::measure::{percentile, thousands, Run, Span, Trials};

/// Payload size of every benchmark message, in bytes.
const PAYLOAD_LEN: usize = 100;
/// Partitions of each produce topic.
const PRODUCE_PARTITIONS: i32 = 8;
/// Partitions of the consume topic: enough to keep each under the mock's retention cap.
const CONSUME_PARTITIONS: i32 = 64;
/// Partitions of each latency topic.
const LATENCY_PARTITIONS: i32 = 8;
/// Deliveries `FutureProducer` keeps in flight (each is a boxed oneshot).
const WINDOW: usize = 10_000;
/// Deliveries rdkafka-async's `Producer` keeps in flight: as many as the producer queue
/// holds (`queue.buffering.max.messages`); its delivery futures allocate nothing per
/// message, so the window is bounded by librdkafka's queue, not by memory per future.
const OURS_WINDOW: usize = 1_000_000;
/// The mock broker keeps at most this many bytes per partition (and at most 100,000
/// message sets), dropping older data silently.
const MOCK_PARTITION_BYTES: u64 = 5 * 1024 * 1024;
/// Upper bound on librdkafka's per-record overhead in the mock's log (v2 record framing).
const RECORD_OVERHEAD: u64 = 40;
/// The latency test's stamp for warm-up messages.
const WARMUP_STAMP: u64 = u64::MAX;

/// Options of `faust-bench client`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// Messages per throughput trial (and in the consume topic).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Trials of each throughput benchmark per client; the best one counts.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Duration of the latency test, in seconds.
    #[arg(long, default_value_t = 3)]
    latency_secs: u64,
    /// Message rate of the latency test, per second (sent in equal parts every 1 ms).
    #[arg(long, default_value_t = 20_000)]
    latency_rate: u64,
    /// The latency test producers' `linger.ms`.
    #[arg(long, default_value_t = 1)]
    latency_linger_ms: u32,
    /// The consumers' `fetch.wait.max.ms` (librdkafka's default: 500). The mock broker
    /// holds a fetch response without data this long even when data arrives meanwhile.
    #[arg(long, default_value_t = 1)]
    fetch_wait_max_ms: u32,
    /// The consumers' `fetch.queue.backoff.ms`, or `default` for librdkafka's (1000).
    #[arg(long, default_value = "10")]
    fetch_queue_backoff_ms: String,
}

/// librdkafka properties: the same for every client of a role.
type Props = Vec<(&'static str, String)>;

/// The librdkafka settings of every client, printed once.
#[derive(Debug)]
struct Settings {
    bootstrap: String,
    producer: Props,
    consumer: Props,
    latency_producer: Props,
}

impl Settings {
    fn new(bootstrap: String, args: &ClientArgs) -> Result<Self> {
        let producer: Props = vec![
            ("linger.ms", "5".into()),
            ("batch.num.messages", "10000".into()),
            ("queue.buffering.max.messages", "1000000".into()),
        ];
        let mut consumer: Props = vec![
            ("group.id", "faust-bench".into()),
            ("enable.auto.commit", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("fetch.wait.max.ms", args.fetch_wait_max_ms.to_string()),
        ];
        match args.fetch_queue_backoff_ms.as_str() {
            "default" => {}
            ms => {
                let ms: u32 = ms
                    .parse()
                    .context("--fetch-queue-backoff-ms: a number or `default`")?;
                consumer.push(("fetch.queue.backoff.ms", ms.to_string()));
            }
        }
        let mut latency_producer = producer.clone();
        latency_producer[0].1 = args.latency_linger_ms.to_string();
        Ok(Self {
            bootstrap,
            producer,
            consumer,
            latency_producer,
        })
    }

    fn ours(&self, props: &Props) -> rdkafka_async::ClientConfig {
        props.iter().fold(
            rdkafka_async::ClientConfig::new().bootstrap_servers(self.bootstrap.clone()),
            |config, (k, v)| config.set(*k, v.clone()),
        )
    }

    fn theirs(&self, props: &Props) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in props {
            config.set(*k, v);
        }
        config
    }
}

fn show(props: &Props) -> String {
    props
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `fut` as a task on the runtime (so it runs on a worker, as an application's
/// tasks do) and waits for it.
fn on_runtime<T, F>(rt: &Runtime, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    rt.block_on(async { tokio::spawn(fut).await? })
}

/// A generous bound on one trial, so that a stall fails instead of hanging.
fn trial_deadline(messages: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_micros(messages * 50)
}

/// The partition of the `i`-th message: round robin, the same for every client.
fn partition_of(i: u64, partitions: i32) -> i32 {
    (i % partitions as u64) as i32
}

/// Runs the `client` benchmark.
pub(crate) fn run(rt: &Runtime, args: ClientArgs) -> Result<()> {
    ensure!(args.messages > 0, "--messages must be positive");
    ensure!(args.trials > 0, "--trials must be positive");
    let n = args.messages;

    let cluster = rdkafka_async::MockCluster::new(1)?;
    let settings = Settings::new(cluster.bootstrap_servers(), &args)?;

    println!("faust-bench client: rdkafka-async vs rust-rdkafka 0.39 (librdkafka 2.12.1)");
    println!(
        "one in-process mock cluster (1 broker) at {}; {} tokio workers; {} CPUs",
        settings.bootstrap,
        tokio_workers(rt),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("librdkafka settings, the same for every client:");
    println!("  producers:            {}", show(&settings.producer));
    println!("  consumers:            {}", show(&settings.consumer));
    println!(
        "  latency producers:    {}",
        show(&settings.latency_producer)
    );
    println!(
        "  (fetch.queue.backoff.ms: librdkafka's 1000 ms stalls every consumer for ~1 s each \
         time its queue passes queued.max.messages.kbytes, as CONFIGURATION.md warns; \
         fetch.wait.max.ms: the mock holds a fetch without data that long, even if data \
         arrives meanwhile)"
    );
    println!(
        "produce: {n} x {PAYLOAD_LEN} B to a fresh {PRODUCE_PARTITIONS}-partition topic per \
         trial (partitions round robin, no key), every delivery awaited: up to {OURS_WINDOW} in flight \
         for Producer (the producer queue's bound), {WINDOW} for FutureProducer, send + poll(0) and a final flush (in 1 ms polls) for BaseProducer; \
         one warm-up delivery first, untimed"
    );
    println!(
        "consume: {n} x {PAYLOAD_LEN} B produced once, before the trials, into one \
         {CONSUME_PARTITIONS}-partition topic, partition after partition in ~1 MB message \
         sets (the mock returns one message set per partition per fetch); its watermarks are \
         checked (low 0, highs summing to {n}: nothing dropped by the mock's retention cap). \
         Each trial is a new consumer that looks the topic up (a watermark query, untimed), \
         assigns all {CONSUME_PARTITIONS} partitions from the beginning (manual assign, no \
         group rebalance) and reads all {n}, touching every payload; timed from the first \
         message to the last"
    );
    println!(
        "CPU: getrusage(RUSAGE_SELF) user+sys over the timed part (the whole process, so \
         including the in-process mock broker)"
    );
    println!();

    // Produce.
    let mut produce = [Trials::default(), Trials::default(), Trials::default()];
    for trial in 0..args.trials {
        for k in rotation(trial) {
            let topic = format!("produce-{k}-{trial}");
            cluster.create_topic(&topic, PRODUCE_PARTITIONS, 1)?;
            let run = match k {
                0 => on_runtime(
                    rt,
                    produce_ours(settings.ours(&settings.producer), topic, n),
                )?,
                1 => on_runtime(
                    rt,
                    produce_future(settings.theirs(&settings.producer), topic, n),
                )?,
                _ => produce_base(
                    &settings.theirs(&settings.producer),
                    &topic,
                    n,
                    |i| partition_of(i, PRODUCE_PARTITIONS),
                    true,
                )?,
            };
            progress("produce", PRODUCERS[k], trial, &run, "");
            produce[k].runs.push(run);
        }
    }

    // Consume: one topic, produced once, checked.
    let consume_topic = "consume-64".to_owned();
    cluster.create_topic(&consume_topic, CONSUME_PARTITIONS, 1)?;
    let per_partition = n.div_ceil(CONSUME_PARTITIONS as u64);
    ensure!(
        per_partition * (PAYLOAD_LEN as u64 + RECORD_OVERHEAD) < MOCK_PARTITION_BYTES
            && per_partition < 100_000,
        "{n} messages over {CONSUME_PARTITIONS} partitions exceed the mock's retention cap"
    );
    // The mock answers a fetch with at most one message set per partition: fill each
    // partition in turn, in message sets as large as librdkafka makes them (~1 MB), so
    // that the consumers, not the mock's fetch round trips, set the pace.
    let mut fill = settings.theirs(&settings.producer);
    fill.set("linger.ms", "100")
        .set("batch.num.messages", "1000000");
    produce_base(
        &fill,
        &consume_topic,
        n,
        |i| ((i / per_partition) as i32).min(CONSUME_PARTITIONS - 1),
        false,
    )
    .context("filling the consume topic")?;
    check_watermarks(&settings, &consume_topic, n)?;

    let mut consume = [Trials::default(), Trials::default(), Trials::default()];
    for trial in 0..args.trials {
        for k in rotation(trial) {
            let topic = consume_topic.clone();
            let (run, startup) = match k {
                0 => on_runtime(
                    rt,
                    consume_ours(settings.ours(&settings.consumer), topic, n),
                )?,
                1 => on_runtime(
                    rt,
                    consume_stream(settings.theirs(&settings.consumer), topic, n),
                )?,
                _ => consume_base(&settings.theirs(&settings.consumer), &topic, n)?,
            };
            let first = format!("  (first message {startup:.1?} after assign)");
            progress("consume", CONSUMERS[k], trial, &run, &first);
            consume[k].runs.push(run);
        }
    }

    // Latency.
    let ticks = args.latency_secs * 1000;
    let per_tick = (args.latency_rate / 1000).max(1);
    let origin = Instant::now();
    let mut latency = Vec::new();
    for (k, name) in LATENCY_CLIENTS.iter().enumerate() {
        let topic = format!("latency-{k}");
        cluster.create_topic(&topic, LATENCY_PARTITIONS, 1)?;
        let producer = &settings.latency_producer;
        let lat = if k == 0 {
            on_runtime(
                rt,
                latency_ours(
                    settings.ours(producer),
                    settings.ours(&settings.consumer),
                    topic,
                    ticks,
                    per_tick,
                    origin,
                ),
            )?
        } else {
            on_runtime(
                rt,
                latency_theirs(
                    settings.theirs(producer),
                    settings.theirs(&settings.consumer),
                    topic,
                    ticks,
                    per_tick,
                    origin,
                ),
            )?
        };
        eprintln!(
            "latency  {name:<42} p50 {:.3} ms  p99 {:.3} ms",
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0))
        );
        latency.push(lat);
    }

    // Report.
    println!(
        "throughput: {} messages x {PAYLOAD_LEN} B, best of {} trial(s) (CPU: lowest)",
        thousands(n as f64),
        args.trials
    );
    println!(
        "{:<8} {:<32} {:>13} {:>14}   msgs/s per trial",
        "", "client", "best msgs/s", "CPU s/M msgs"
    );
    for (what, names, trials) in [
        ("produce", &PRODUCERS, &produce),
        ("consume", &CONSUMERS, &consume),
    ] {
        for (name, t) in names.iter().zip(trials.iter()) {
            let per_trial = t
                .runs
                .iter()
                .map(|r| thousands(r.rate()))
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "{what:<8} {name:<32} {:>13} {:>14.3}   {per_trial}",
                thousands(t.best_rate()),
                t.best_cpu_per_million(),
            );
        }
    }
    println!();
    println!(
        "end-to-end latency: {} msgs/s ({per_tick} every 1 ms) for {} s, {} partitions, \
         linger.ms={}",
        thousands((per_tick * 1000) as f64),
        args.latency_secs,
        LATENCY_PARTITIONS,
        settings.latency_producer[0].1,
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "client", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "messages"
    );
    for (name, lat) in LATENCY_CLIENTS.iter().zip(&latency) {
        println!(
            "{name:<44} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9}",
            ms(percentile(lat, 50.0)),
            ms(percentile(lat, 99.0)),
            ms(percentile(lat, 99.9)),
            ms(lat.last().copied().unwrap_or(0)),
            lat.len()
        );
    }
    println!();
    println!(
        "ratios produce_vs_future={:.2} produce_vs_base={:.2} consume_vs_stream={:.2} \
         consume_vs_base={:.2} cpu_consume_vs_stream={:.2}",
        produce[0].best_rate() / produce[1].best_rate(),
        produce[0].best_rate() / produce[2].best_rate(),
        consume[0].best_rate() / consume[1].best_rate(),
        consume[0].best_rate() / consume[2].best_rate(),
        consume[0].best_cpu_per_million() / consume[1].best_cpu_per_million(),
    );
    Ok(())
}

const PRODUCERS: [&str; 3] = [
    "rdkafka-async Producer",
    "rust-rdkafka FutureProducer",
    "rust-rdkafka BaseProducer",
];
const CONSUMERS: [&str; 3] = [
    "rdkafka-async Consumer",
    "rust-rdkafka StreamConsumer",
    "rust-rdkafka BaseConsumer",
];
const LATENCY_CLIENTS: [&str; 2] = [
    "rdkafka-async Producer+Consumer",
    "rust-rdkafka FutureProducer+StreamConsumer",
];

/// The order of the three clients in a trial: rotated, so that none always goes first.
fn rotation(trial: usize) -> [usize; 3] {
    let mut order = [0, 1, 2];
    order.rotate_left(trial % 3);
    order
}

/// One trial's result, on stderr as the run goes.
fn progress(what: &str, name: &str, trial: usize, run: &Run, note: &str) {
    eprintln!(
        "{what:<8} {name:<32} trial {}: {:>11} msgs/s  {:.3} CPU s/M msgs{note}",
        trial + 1,
        thousands(run.rate()),
        run.cpu_per_million()
    );
}

fn tokio_workers(rt: &Runtime) -> usize {
    rt.metrics().num_workers()
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// Nanoseconds since `origin`.
fn stamp(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

fn stamp_of(payload: Option<&[u8]>) -> Result<u64> {
    let bytes = payload
        .and_then(|p| p.get(..8))
        .ok_or_else(|| anyhow!("latency message without a stamp"))?;
    Ok(u64::from_le_bytes(bytes.try_into()?))
}

// ---------------------------------------------------------------------------------
// Produce.

async fn produce_ours(config: rdkafka_async::ClientConfig, topic: String, n: u64) -> Result<Run> {
    use rdkafka_async::{Producer, Record};
    let producer = Producer::new(config)?;
    let payload = [b'x'; PAYLOAD_LEN];
    // Warm-up: connection and topic metadata.
    producer
        .send(Record::to(&topic).partition(0).value(&payload[..]))
        .await?
        .await?;

    let timed = async {
        let span = Span::start();
        let mut window = VecDeque::with_capacity(OURS_WINDOW.min(n as usize));
        for i in 0..n {
            if window.len() == OURS_WINDOW {
                if let Some(oldest) = window.pop_front() {
                    oldest.await?;
                }
            }
            let record = Record::to(&topic)
                .partition(partition_of(i, PRODUCE_PARTITIONS))
                .value(&payload[..]);
            window.push_back(producer.send(record).await?);
        }
        for delivery in window {
            delivery.await?;
        }
        anyhow::Ok(span.stop(n))
    };
    tokio::time::timeout(trial_deadline(n), timed)
        .await
        .context("rdkafka-async produce trial stalled")?
}

async fn produce_future(config: rdkafka::ClientConfig, topic: String, n: u64) -> Result<Run> {
    let producer: FutureProducer = config.create()?;
    let payload = [b'x'; PAYLOAD_LEN];
    let record = |p| {
        FutureRecord::<[u8], [u8]>::to(&topic)
            .partition(p)
            .payload(&payload[..])
    };
    // Warm-up: connection and topic metadata.
    producer
        .send(record(0), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;

    let timed = async {
        let span = Span::start();
        let mut window = VecDeque::with_capacity(WINDOW);
        for i in 0..n {
            if window.len() == WINDOW {
                if let Some(oldest) = window.pop_front() {
                    await_future_delivery(oldest).await?;
                }
            }
            let mut rec = record(partition_of(i, PRODUCE_PARTITIONS));
            loop {
                match producer.send_result(rec) {
                    Ok(delivery) => {
                        window.push_back(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        match window.pop_front() {
                            Some(oldest) => await_future_delivery(oldest).await?,
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        for delivery in window {
            await_future_delivery(delivery).await?;
        }
        anyhow::Ok(span.stop(n))
    };
    tokio::time::timeout(trial_deadline(n), timed)
        .await
        .context("FutureProducer trial stalled")?
}

async fn await_future_delivery(delivery: rdkafka::producer::DeliveryFuture) -> Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => bail!("FutureProducer delivery canceled"),
    }
}

/// Counts delivery reports for the `BaseProducer`.
#[derive(Debug, Default)]
struct CountingContext {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// `BaseProducer`: send + `poll(0)`, `poll` and retry on a full queue, then wait for
/// the remaining delivery reports (a flush).
///
/// With `warm_up`, one message to partition 0 is delivered before the timed part.
fn produce_base(
    config: &rdkafka::ClientConfig,
    topic: &str,
    n: u64,
    partition_of: impl Fn(u64) -> i32,
    warm_up: bool,
) -> Result<Run> {
    let producer: BaseProducer<CountingContext> =
        config.create_with_context(CountingContext::default())?;
    let payload = [b'x'; PAYLOAD_LEN];
    let record = |p| {
        BaseRecord::<[u8], [u8]>::to(topic)
            .partition(p)
            .payload(&payload[..])
    };
    let send = |mut rec: BaseRecord<'_, [u8], [u8]>| -> Result<()> {
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    };
    let ctx = producer.context();
    let warm_ups = u64::from(warm_up);
    if warm_up {
        // Connection and topic metadata.
        send(record(0))?;
        producer.flush(Duration::from_secs(10))?;
        ensure!(ctx.delivered.load(Ordering::Relaxed) == 1, "warm-up failed");
    }

    let span = Span::start();
    for i in 0..n {
        send(record(partition_of(i)))?;
        producer.poll(Duration::ZERO);
    }
    // The final flush. rust-rdkafka 0.39's `flush` polls in steps of 100 ms (its
    // `poll(t)` always lasts `t`), which would add up to 100 ms to every trial; waiting
    // for the last delivery reports in 1 ms polls is what the raw client can do.
    let deadline = Instant::now() + trial_deadline(n);
    let reported = || ctx.delivered.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed);
    while reported() < n + warm_ups {
        ensure!(Instant::now() < deadline, "BaseProducer flush stalled");
        producer.poll(Duration::from_millis(1));
    }
    let run = span.stop(n);

    let (delivered, failed) = (
        ctx.delivered.load(Ordering::Relaxed) - warm_ups,
        ctx.failed.load(Ordering::Relaxed),
    );
    ensure!(
        delivered == n && failed == 0,
        "BaseProducer: {delivered} of {n} delivered, {failed} failed"
    );
    Ok(run)
}

// ---------------------------------------------------------------------------------
// Consume.

/// Checks that the consume topic holds exactly `n` messages from offset 0.
fn check_watermarks(settings: &Settings, topic: &str, n: u64) -> Result<()> {
    let consumer: BaseConsumer = settings.theirs(&settings.consumer).create()?;
    let mut total = 0;
    for p in 0..CONSUME_PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ensure!(
            low == 0,
            "{topic} [{p}]: low watermark {low}: the mock dropped data"
        );
        total += high as u64;
    }
    ensure!(
        total == n,
        "{topic}: high watermarks sum to {total}, not {n}"
    );
    Ok(())
}

async fn consume_ours(
    config: rdkafka_async::ClientConfig,
    topic: String,
    n: u64,
) -> Result<(Run, Duration)> {
    use rdkafka_async::{Consumer, Offset, TopicPartitionList};
    let mut consumer = Consumer::new(config)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_range(&topic, 0..CONSUME_PARTITIONS, Offset::Beginning);
    // Warm-up: the topic's metadata, so that no partition waits for its leader.
    consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .await?;
    let read = async {
        let assigned = Instant::now();
        consumer.assign(&tpl).await?;
        let first = consumer.recv().await?;
        let startup = assigned.elapsed();
        let mut bytes = first.payload().map_or(0, <[u8]>::len) as u64;
        drop(first);
        let span = Span::start();
        for _ in 1..n {
            let msg = consumer.recv().await?;
            bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
        }
        let run = span.stop(n - 1);
        ensure!(bytes == n * PAYLOAD_LEN as u64, "consumed {bytes} bytes");
        anyhow::Ok((run, startup))
    };
    let measured = tokio::time::timeout(trial_deadline(n), read)
        .await
        .context("rdkafka-async consume trial stalled")??;
    consumer.close().await?;
    Ok(measured)
}

async fn consume_stream(
    config: rdkafka::ClientConfig,
    topic: String,
    n: u64,
) -> Result<(Run, Duration)> {
    let consumer: StreamConsumer = config.create()?;
    let tpl = all_partitions(&topic, CONSUME_PARTITIONS)?;
    // Warm-up: the topic's metadata, so that no partition waits for its leader.
    consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10))?;
    let read = async {
        let assigned = Instant::now();
        consumer.assign(&tpl)?;
        let first = consumer.recv().await?;
        let startup = assigned.elapsed();
        let mut bytes = first.payload().map_or(0, <[u8]>::len) as u64;
        drop(first);
        let span = Span::start();
        for _ in 1..n {
            let msg = consumer.recv().await?;
            bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
        }
        let run = span.stop(n - 1);
        ensure!(bytes == n * PAYLOAD_LEN as u64, "consumed {bytes} bytes");
        anyhow::Ok((run, startup))
    };
    tokio::time::timeout(trial_deadline(n), read)
        .await
        .context("StreamConsumer trial stalled")?
}

fn consume_base(config: &rdkafka::ClientConfig, topic: &str, n: u64) -> Result<(Run, Duration)> {
    let consumer: BaseConsumer = config.create()?;
    let tpl = all_partitions(topic, CONSUME_PARTITIONS)?;
    // Warm-up: the topic's metadata, so that no partition waits for its leader.
    consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let deadline = Instant::now() + trial_deadline(n);
    let assigned = Instant::now();
    consumer.assign(&tpl)?;
    let mut startup = Duration::ZERO;
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut span = None;
    while count < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                count += 1;
                bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
                if count == 1 {
                    drop(msg);
                    startup = assigned.elapsed();
                    span = Some(Span::start());
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => ensure!(Instant::now() < deadline, "BaseConsumer trial stalled"),
        }
    }
    let run = span.context("no message")?.stop(n - 1);
    ensure!(bytes == n * PAYLOAD_LEN as u64, "consumed {bytes} bytes");
    Ok((run, startup))
}

fn all_partitions(topic: &str, partitions: i32) -> Result<rdkafka::TopicPartitionList> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
    }
    Ok(tpl)
}

// ---------------------------------------------------------------------------------
// Latency.

/// How long the latency consumer may take to see the warm-up messages, or the last one.
const LATENCY_GRACE: Duration = Duration::from_secs(30);

async fn latency_ours(
    producer_config: rdkafka_async::ClientConfig,
    consumer_config: rdkafka_async::ClientConfig,
    topic: String,
    ticks: u64,
    per_tick: u64,
    origin: Instant,
) -> Result<Vec<u64>> {
    use rdkafka_async::{Consumer, Offset, Producer, Record, TopicPartitionList};
    let expected = ticks * per_tick;

    let mut consumer = Consumer::new(consumer_config)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_range(&topic, 0..LATENCY_PARTITIONS, Offset::Beginning);
    consumer.assign(&tpl).await?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let receiver = tokio::spawn(async move {
        for _ in 0..LATENCY_PARTITIONS {
            let msg = consumer.recv().await?;
            ensure!(
                stamp_of(msg.payload())? == WARMUP_STAMP,
                "unexpected message"
            );
        }
        let _ = ready_tx.send(());
        let mut latencies = Vec::with_capacity(expected as usize);
        while (latencies.len() as u64) < expected {
            let msg = consumer.recv().await?;
            let now = stamp(origin);
            latencies.push(now.saturating_sub(stamp_of(msg.payload())?));
        }
        consumer.close().await?;
        anyhow::Ok(latencies)
    });

    let producer = Producer::new(producer_config)?;
    let mut payload = [b'x'; PAYLOAD_LEN];
    payload[..8].copy_from_slice(&WARMUP_STAMP.to_le_bytes());
    for p in 0..LATENCY_PARTITIONS {
        let record = Record::to(&topic).partition(p).value(&payload[..]);
        producer.send(record).await?.await?;
    }
    tokio::time::timeout(LATENCY_GRACE, ready_rx)
        .await
        .context("latency consumer never saw the warm-up messages")??;

    let (tx, mut rx) = mpsc::unbounded_channel::<rdkafka_async::DeliveryFuture>();
    let collector = tokio::spawn(async move {
        while let Some(delivery) = rx.recv().await {
            delivery.await?;
        }
        anyhow::Ok(())
    });
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    let mut i = 0u64;
    for _ in 0..ticks {
        interval.tick().await;
        for _ in 0..per_tick {
            payload[..8].copy_from_slice(&stamp(origin).to_le_bytes());
            let record = Record::to(&topic)
                .partition(partition_of(i, LATENCY_PARTITIONS))
                .value(&payload[..]);
            tx.send(producer.send(record).await?)
                .map_err(|_| anyhow!("delivery collector gone"))?;
            i += 1;
        }
    }
    drop(tx);
    collector.await??;
    let mut latencies = tokio::time::timeout(LATENCY_GRACE, receiver)
        .await
        .context("latency consumer stalled")???;
    latencies.sort_unstable();
    Ok(latencies)
}

async fn latency_theirs(
    producer_config: rdkafka::ClientConfig,
    consumer_config: rdkafka::ClientConfig,
    topic: String,
    ticks: u64,
    per_tick: u64,
    origin: Instant,
) -> Result<Vec<u64>> {
    let expected = ticks * per_tick;

    let consumer: StreamConsumer = consumer_config.create()?;
    consumer.assign(&all_partitions(&topic, LATENCY_PARTITIONS)?)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let receiver = tokio::spawn(async move {
        for _ in 0..LATENCY_PARTITIONS {
            let msg = consumer.recv().await?;
            ensure!(
                stamp_of(msg.payload())? == WARMUP_STAMP,
                "unexpected message"
            );
        }
        let _ = ready_tx.send(());
        let mut latencies = Vec::with_capacity(expected as usize);
        while (latencies.len() as u64) < expected {
            let msg = consumer.recv().await?;
            let now = stamp(origin);
            latencies.push(now.saturating_sub(stamp_of(msg.payload())?));
        }
        anyhow::Ok(latencies)
    });

    let producer: FutureProducer = producer_config.create()?;
    let mut payload = [b'x'; PAYLOAD_LEN];
    payload[..8].copy_from_slice(&WARMUP_STAMP.to_le_bytes());
    for p in 0..LATENCY_PARTITIONS {
        let record = FutureRecord::<[u8], [u8]>::to(&topic)
            .partition(p)
            .payload(&payload[..]);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }
    tokio::time::timeout(LATENCY_GRACE, ready_rx)
        .await
        .context("latency consumer never saw the warm-up messages")??;

    let (tx, mut rx) = mpsc::unbounded_channel::<rdkafka::producer::DeliveryFuture>();
    let collector = tokio::spawn(async move {
        while let Some(delivery) = rx.recv().await {
            await_future_delivery(delivery).await?;
        }
        anyhow::Ok(())
    });
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    let mut i = 0u64;
    for _ in 0..ticks {
        interval.tick().await;
        for _ in 0..per_tick {
            payload[..8].copy_from_slice(&stamp(origin).to_le_bytes());
            let record = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(partition_of(i, LATENCY_PARTITIONS))
                .payload(&payload[..]);
            // The queue holds far more than a 3 s run: QueueFull would be a failure.
            let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
            tx.send(delivery)
                .map_err(|_| anyhow!("delivery collector gone"))?;
            i += 1;
        }
    }
    drop(tx);
    collector.await??;
    let mut latencies = tokio::time::timeout(LATENCY_GRACE, receiver)
        .await
        .context("latency consumer stalled")???;
    latencies.sort_unstable();
    Ok(latencies)
}
