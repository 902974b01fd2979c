//! A client whose creation fails half-way leaves nothing behind.
//!
//! This file holds a single test on purpose: it counts the process's librdkafka threads,
//! which other tests of the same binary would change.

use std::time::Duration;

use ffi_tests::{init_tracing, wait_until, Fixture};
use rdkafka_async::Consumer;

const DEADLINE: Duration = Duration::from_secs(60);

/// `Consumer::new` that fails after librdkafka's handle was made (no `group.id`: no
/// consumer queue) destroys that handle: librdkafka's thread count goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_consumer_new_frees_its_handle() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 1)?;
    let threads = || {
        ffi_tests::thread_names()
            .map(|names| names.iter().filter(|n| n.starts_with("rdk:")).count())
            .unwrap_or(usize::MAX)
    };
    let baseline = threads();
    for _ in 0..3 {
        let err = Consumer::new(fx.base_config()).expect_err("a consumer without group.id");
        println!("Consumer::new without group.id: {err}");
    }
    wait_until(
        DEADLINE,
        "librdkafka's threads of the failed handles to end",
        || threads() <= baseline,
    )
    .await?;
    Ok(())
}
