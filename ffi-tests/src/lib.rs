//! Shared helpers for the black-box tests of `rdkafka-async` in `tests/`.
//!
//! - [`Fixture`]: a mock cluster with one fresh topic, and client configurations for it.
//! - [`wait_until`] / [`wait_until_async`]: wait for a condition with a deadline, never a
//!   fixed sleep.
//! - [`unique_name`]: fresh topic and group names, unique within and across processes.
//! - [`Rng`]: a small seeded generator, so a failing random schedule can be replayed
//!   (`FFI_TESTS_SEED=<seed>`; every test prints the seed it used).
//! - [`init_tracing`]: logs to the test output, filtered by `RUST_LOG`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use rdkafka_async::{
    ClientConfig, Compression, Consumer, ConsumerEvent, MockCluster, OffsetReset, RebalanceKind,
    TopicPartitionList,
};

/// Installs a `tracing` subscriber writing to the test output (once per process).
/// The filter comes from `RUST_LOG` (default: warnings).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A name no other test (in this or another process) uses: `prefix-pid-n-nanos`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// A mock cluster with one topic created on it.
pub struct Fixture {
    /// The cluster (dropped with the fixture).
    pub cluster: MockCluster,
    /// The topic's (unique) name.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("bootstrap", &self.cluster.bootstrap_servers())
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl Fixture {
    /// Starts `brokers` mock brokers and creates a fresh topic of `partitions`
    /// partitions (replication factor 1).
    pub fn new(brokers: i32, partitions: i32) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(brokers).context("mock cluster")?;
        let topic = unique_name("topic");
        cluster
            .create_topic(&topic, partitions, 1)
            .context("create topic")?;
        Ok(Self {
            cluster,
            topic,
            partitions,
        })
    }

    /// `bootstrap.servers` only.
    pub fn base_config(&self) -> ClientConfig {
        ClientConfig::new().bootstrap_servers(self.cluster.bootstrap_servers())
    }

    /// A producer configuration: small linger, lz4 (what the mock needs, docs/src/client/admin-mock.md).
    pub fn producer_config(&self) -> ClientConfig {
        self.base_config()
            .linger(Duration::from_millis(5))
            .compression(Compression::Lz4)
    }

    /// A group consumer configuration reading from the earliest offset, with short
    /// session timeouts so the mock's group operations stay quick.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        self.base_config()
            .group_id(group)
            .auto_offset_reset(OffsetReset::Earliest)
            .session_timeout(Duration::from_secs(6))
            // librdkafka backs off 1 s by default when a fetch queue is full; keep tests
            // from idling on that (docs/src/client/admin-mock.md).
            .set("fetch.queue.backoff.ms", "10")
            // The mock parks a fetch that finds no data for the whole `fetch.wait.max.ms`
            // (500 ms by default) and does not answer it early when data arrives
            // (`rdkafka_mock_handlers.c`, Fetch): keep that latency small.
            .set("fetch.wait.max.ms", "10")
    }
}

/// Waits until `condition` holds, checking every few milliseconds, for at most `deadline`.
/// Returns how long it took; fails with `what` when the deadline passes.
pub async fn wait_until(
    deadline: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    wait_until_async(deadline, what, || std::future::ready(condition())).await
}

/// [`wait_until`] with an asynchronous condition.
pub async fn wait_until_async<F, Fut>(
    deadline: Duration,
    what: &str,
    mut condition: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drives `consumer` until a rebalance assigns it partitions, completes that rebalance
/// and returns the assigned partitions. Revocations on the way are completed too; a
/// message or an error before the assignment fails the wait.
pub async fn wait_for_assignment(
    consumer: &mut Consumer,
    deadline: Duration,
) -> anyhow::Result<TopicPartitionList> {
    let fut = async {
        loop {
            match consumer.next_event().await? {
                ConsumerEvent::Rebalance(r) if r.kind() == RebalanceKind::Assign => {
                    let parts = r.partitions().clone();
                    r.complete().await?;
                    return anyhow::Ok(parts);
                }
                ConsumerEvent::Rebalance(r) => r.complete().await?,
                ConsumerEvent::Message(m) => bail!("message before any assignment: {m:?}"),
            }
        }
    };
    tokio::time::timeout(deadline, fut)
        .await
        .with_context(|| format!("no assignment within {deadline:?}"))?
}

/// A small seeded pseudo-random generator (SplitMix64): tests print the seed, and
/// `FFI_TESTS_SEED` replays a schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `FFI_TESTS_SEED` if set, else from the clock; prints the seed.
    pub fn from_env(label: &str) -> Self {
        let seed = std::env::var("FFI_TESTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{label}: FFI_TESTS_SEED={seed}");
        Self::new(seed)
    }

    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A derived, independent generator (for another task).
    pub fn fork(&mut self) -> Self {
        Self(self.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The names of this process's threads, from `/proc/self/task/*/comm`.
pub fn thread_names() -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").context("read /proc/self/task")? {
        let path = entry?.path().join("comm");
        // A thread may exit between the listing and the read.
        if let Ok(comm) = std::fs::read_to_string(&path) {
            names.push(comm.trim_end().to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether the tests run under valgrind (`ffi-tests/valgrind.sh` sets
/// `FFI_TESTS_UNDER_VALGRIND=1`). Valgrind runs one thread at a time, many times slower:
/// tests then skip checks of how long something took, and keep every other check.
pub fn under_valgrind() -> bool {
    std::env::var_os("FFI_TESTS_UNDER_VALGRIND").is_some_and(|v| v == "1")
}
