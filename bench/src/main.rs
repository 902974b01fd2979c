//! # faust-bench
//!
//! Benchmarks of faust-rs, one subcommand each (`faust-bench --help` lists them). The
//! `client` benchmark needs no Kafka broker: it runs on librdkafka's mock cluster, in
//! process.
//!
//! ## `client`: rdkafka-async against rust-rdkafka
//!
//! ```text
//! cargo run --release -p faust-bench -- client                                # full run
//! cargo run --release -p faust-bench -- client --messages 100000 --trials 1   # smoke run
//! ```
//!
//! In one run, on one mock cluster (`rdkafka_async::MockCluster`, one broker, in this
//! process), with the same librdkafka settings for every client (printed at the start):
//!
//! * **produce**: `--messages` messages of 100 bytes to a fresh 8-partition topic per
//!   trial, every delivery awaited (awaiting the oldest when the window is full).
//!   rust-rdkafka's `FutureProducer` keeps 10,000 deliveries in flight (each a boxed
//!   oneshot); rdkafka-async's `Producer`, whose delivery futures allocate nothing, keeps
//!   up to the producer queue's bound (`queue.buffering.max.messages` = 1,000,000), so
//!   librdkafka's linger does not cap its pipeline; rust-rdkafka's `BaseProducer` (send + `poll(0)`, then waiting for
//!   the last delivery reports) is the raw librdkafka limit.
//! * **consume**: the same number of messages, produced once into a 64-partition topic
//!   (under the mock's per-partition retention cap: its watermarks are checked), read in
//!   full by rdkafka-async's `Consumer`, rust-rdkafka's `StreamConsumer` and a
//!   `BaseConsumer` poll loop, each a new consumer that assigns all partitions from the
//!   beginning. Timed from the first message to the last, so librdkafka's start-up
//!   (offset lookups) is left out.
//! * **latency**: end-to-end p50/p99 at a steady 20,000 msgs/s for 3 s (20 messages every
//!   1 ms, each carrying its send time), rdkafka-async's `Producer` + `Consumer` against
//!   `FutureProducer` + `StreamConsumer`, with `linger.ms=1`.
//!
//! Two consumer settings matter on the mock and are set for every client:
//! `fetch.queue.backoff.ms=10` (librdkafka's 1000 ms default stalls a consumer for about
//! a second each time its queue passes `queued.max.messages.kbytes`, as librdkafka's
//! CONFIGURATION.md warns; `--fetch-queue-backoff-ms default` shows it) and
//! `fetch.wait.max.ms=1` (the mock holds a fetch that found no data for the whole wait,
//! even when data arrives meanwhile, which would dominate the latencies).
//!
//! Throughput is the best of `--trials` trials (the clients take turns going first); CPU
//! is the process's user + system time (`getrusage(RUSAGE_SELF)`, so it includes the
//! in-process mock broker) per million messages, the lowest over the trials. Each
//! trial's result goes to stderr as the run goes; the report goes to stdout, and its
//! last line is
//!
//! ```text
//! ratios produce_vs_future=X produce_vs_base=X consume_vs_stream=X consume_vs_base=X cpu_consume_vs_stream=X
//! ```
//!
//! where each throughput ratio is rdkafka-async's best msgs/s divided by the other
//! client's (above 1.00: rdkafka-async is faster), and `cpu_consume_vs_stream` is
//! rdkafka-async's consumer CPU seconds per million messages divided by
//! `StreamConsumer`'s (below 1.00: rdkafka-async uses less CPU).

#![forbid(unsafe_code)]

mod client;
mod http;
mod measure;
mod recovery;
mod w1;
mod w2;

use clap::{Parser, Subcommand};

/// Benchmarks of faust-rs on an in-process mock Kafka cluster.
#[derive(Debug, Parser)]
#[command(name = "faust-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// rdkafka-async against rust-rdkafka: produce and consume throughput, CPU, latency.
    Client(client::ClientArgs),
    /// W1 "passthrough count": a faust-rs agent against a bare rdkafka-async loop.
    W1(w1::W1Args),
    /// W2 "table aggregate": table[user] += amount with the changelog, against W1's agent.
    W2(w2::W2Args),
    /// Rebuilding a 1,000,000-key table from its changelog into an empty data directory.
    Recovery(recovery::RecoveryArgs),
    /// The table API over HTTP: GET of a local key and of a key forwarded to its owner.
    Http(http::HttpArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Client(args) => client::run(&runtime, args),
        Command::W1(args) => w1::run(&runtime, args),
        Command::W2(args) => w2::run(&runtime, args),
        Command::Recovery(args) => recovery::run(&runtime, args),
        Command::Http(args) => http::run(&runtime, args),
    }
}
