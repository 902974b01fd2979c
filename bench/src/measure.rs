//! Shared measurement helpers: process CPU time, timed runs, best-of-N and percentiles.

use std::time::{Duration, Instant};

/// CPU time (user + system) used so far by this whole process, over all of its threads.
///
/// Everything in the process counts: the clients' own threads, librdkafka's threads,
/// the tokio workers and, in these benchmarks, the in-process mock cluster's threads.
pub(crate) fn process_cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF) failed");
    timeval(usage.user_time()) + timeval(usage.system_time())
}

fn timeval(tv: nix::sys::time::TimeVal) -> Duration {
    Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
}

/// A running measurement: wall-clock and process CPU time since `start`.
#[derive(Debug)]
pub(crate) struct Span {
    wall: Instant,
    cpu: Duration,
}

impl Span {
    /// Starts measuring now.
    pub(crate) fn start() -> Self {
        Self {
            cpu: process_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// Stops measuring: `messages` were handled since `start`.
    pub(crate) fn stop(self, messages: u64) -> Run {
        let wall = self.wall.elapsed();
        let cpu = process_cpu_time().saturating_sub(self.cpu);
        Run {
            messages,
            wall,
            cpu,
        }
    }
}

/// One timed trial.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// Messages handled.
    pub(crate) messages: u64,
    /// Wall-clock time taken.
    pub(crate) wall: Duration,
    /// Process CPU time (user + system) used.
    pub(crate) cpu: Duration,
}

impl Run {
    /// Messages per second.
    pub(crate) fn rate(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPU seconds per million messages.
    pub(crate) fn cpu_per_million(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.messages as f64 / 1e6).max(1e-12)
    }
}

/// The trials of one client in one benchmark.
#[derive(Clone, Debug, Default)]
pub(crate) struct Trials {
    pub(crate) runs: Vec<Run>,
}

impl Trials {
    /// The best (highest) throughput over the trials, in messages per second.
    pub(crate) fn best_rate(&self) -> f64 {
        self.runs.iter().map(Run::rate).fold(0.0, f64::max)
    }

    /// The best (lowest) CPU seconds per million messages over the trials.
    pub(crate) fn best_cpu_per_million(&self) -> f64 {
        self.runs
            .iter()
            .map(Run::cpu_per_million)
            .fold(f64::INFINITY, f64::min)
    }
}

/// The `p`-th percentile (0 < p <= 100) of ascending `sorted` samples, nearest-rank method.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `1234567.8` as `"1,234,568"`.
pub(crate) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The records stored in `topic` (the sum of its partitions' high watermarks); fails if
/// the mock dropped any (a low watermark above 0: past its 5 MiB per partition).
pub(crate) async fn stored_records(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i64> {
    let probe = rdkafka_async::Consumer::new(
        rdkafka_async::ClientConfig::new()
            .bootstrap_servers(bootstrap)
            .group_id("faust-bench-probe"),
    )?;
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = probe
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .await?;
        anyhow::ensure!(
            low == 0,
            "the mock dropped records of {topic}[{p}] (low watermark {low}, high {high}): past its 5 MiB per partition"
        );
        total += high;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.4), "1,234,567");
    }

    #[test]
    fn cpu_time_advances() {
        let before = process_cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() > before);
    }
}
