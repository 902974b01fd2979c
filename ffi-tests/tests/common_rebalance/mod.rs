//! Small helpers shared by `rebalance.rs`, `errors_injected.rs` and `valgrind_core.rs`.
//!
//! Waiting is always for a condition, with a deadline: never a fixed sleep standing in for
//! "long enough".
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use rdkafka_async::sys::rd_kafka_resp_err_t;
use rdkafka_async::{ClientConfig, Error, ErrorCode, MockCluster};
use tokio::time::Instant;

/// Routes `tracing` output (ours and librdkafka's logs) to the test's captured output,
/// filtered by `RUST_LOG` (default: warnings).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// An `ErrorCode` from librdkafka's enum.
pub fn code(raw: rd_kafka_resp_err_t) -> ErrorCode {
    ErrorCode::from(raw)
}

/// The error's code, or a panic naming the error if it has none.
pub fn code_of(err: &Error) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected an error with a Kafka code, got {err:?}"))
}

/// A mock cluster of `brokers` brokers with `topic` of `partitions` partitions.
pub fn mock_with_topic(brokers: i32, topic: &str, partitions: i32) -> MockCluster {
    let cluster = MockCluster::new(brokers).expect("mock cluster");
    cluster
        .create_topic(topic, partitions, 1)
        .expect("create topic");
    cluster
}

/// Client configuration pointing at `cluster`, quiet logs.
pub fn base_config(cluster: &MockCluster) -> ClientConfig {
    ClientConfig::new()
        .bootstrap_servers(cluster.bootstrap_servers())
        .set("log_level", "3")
}

/// Runs `fut` with a deadline; panics naming `what` if it does not finish in time.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Waits until `cond()` holds, checking it again after each short pause; panics with
/// `what` and the last `describe()` if it still does not hold after `timeout`.
///
/// Only for conditions that have no notification to await (for example a counter that
/// a background task decrements); the pause is the check interval, not a guess of how
/// long the work takes.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}: {}",
                describe()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
