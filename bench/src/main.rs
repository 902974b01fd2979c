//! # faust-bench
//!
//! Benchmarks of faust-rs. Each subcommand is one benchmark; all of them run on an
//! in-process librdkafka mock cluster, so they need no Kafka broker.
//!
//! ## `client`: rdkafka-async against rust-rdkafka
//!
//! ```text
//! cargo run --release -p faust-bench -- client                                # full run
//! cargo run --release -p faust-bench -- client --messages 100000 --trials 1   # smoke run
//! ```
//!
//! In one run, on one mock cluster (`rdkafka_async::MockCluster`, one broker), with the
//! same librdkafka settings for every client (printed at the start):
//!
//! * **produce**: `--messages` messages of 100 bytes to an 8-partition topic, every
//!   delivery awaited. rdkafka-async's `Producer` and rust-rdkafka's `FutureProducer`
//!   both keep a window of 10,000 deliveries in flight (awaiting the oldest when full);
//!   rust-rdkafka's `BaseProducer` (send + `poll(0)`, final `flush`) is the raw
//!   librdkafka limit.
//! * **consume**: the same number of messages, produced once into a 64-partition topic
//!   (under the mock's per-partition retention cap, which is checked), read by
//!   rdkafka-async's `Consumer`, rust-rdkafka's `StreamConsumer` and a `BaseConsumer`
//!   poll loop, each assigning all partitions from the beginning.
//! * **latency**: end-to-end p50/p99 at a steady 20,000 msgs/s for 3 s, rdkafka-async's
//!   producer + consumer against `FutureProducer` + `StreamConsumer`.
//!
//! Throughput is the best of `--trials` trials; CPU is the process's user + system time
//! (`getrusage(RUSAGE_SELF)`, so it includes the in-process mock broker) per million
//! messages, the lowest over the trials. The last line printed is
//!
//! ```text
//! ratios produce_vs_future=X produce_vs_base=X consume_vs_stream=X consume_vs_base=X cpu_consume_vs_stream=X
//! ```
//!
//! where each throughput ratio is rdkafka-async's best msgs/s divided by the other
//! client's (above 1.00: rdkafka-async is faster), and `cpu_consume_vs_stream` is
//! rdkafka-async's consumer CPU seconds per million messages divided by
//! `StreamConsumer`'s (below 1.00: rdkafka-async uses less CPU).

mod client;
mod measure;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Client(args) => client::run(&runtime, args),
    }
}
