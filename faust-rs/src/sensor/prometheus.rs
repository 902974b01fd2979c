//! The Monitor's figures in the Prometheus text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{LatencySnapshot, MonitorSnapshot};

/// The `Content-Type` of [`MonitorSnapshot::prometheus`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP faust_{name} {help}");
        let _ = writeln!(self.0, "# TYPE faust_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str("faust_");
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn labelled<V: Copy + Into<f64>>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: &BTreeMap<String, V>,
    ) {
        self.family(name, kind, help);
        for (k, v) in values {
            self.sample(name, &[(label, k)], (*v).into());
        }
    }

    fn latency(&mut self, name: &str, what: &str, l: &LatencySnapshot) {
        self.family(
            &format!("{name}_latency_seconds"),
            "summary",
            &format!("{what}, seconds."),
        );
        self.sample(
            &format!("{name}_latency_seconds_sum"),
            &[],
            l.sum_ms / 1000.0,
        );
        self.sample(
            &format!("{name}_latency_seconds_count"),
            &[],
            l.count as f64,
        );
        self.single(
            &format!("{name}_latency_last_seconds"),
            "gauge",
            &format!("{what}, the latest, seconds."),
            l.last_ms / 1000.0,
        );
    }
}

/// A label value, escaped (backslash, double quote, line feed).
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: Go's float syntax (`+Inf`, `-Inf`, `NaN`, or a decimal).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Counts as `f64` for [`Out::labelled`].
#[derive(Clone, Copy)]
struct Count(u64);

impl From<Count> for f64 {
    fn from(c: Count) -> f64 {
        c.0 as f64
    }
}

fn counts(m: &BTreeMap<String, u64>) -> BTreeMap<String, Count> {
    m.iter().map(|(k, v)| (k.clone(), Count(*v))).collect()
}

impl MonitorSnapshot {
    /// The figures in the Prometheus text exposition format 0.0.4 (served on `/metrics`
    /// with the `Content-Type`
    /// [`PROMETHEUS_CONTENT_TYPE`](super::PROMETHEUS_CONTENT_TYPE)): names prefixed `faust_`, counters
    /// ending in `_total`, per-topic, per-agent and per-table figures labelled `topic`,
    /// `agent` and `table`, latencies as summaries (`_sum` and `_count`, seconds) plus a
    /// gauge of the latest.
    ///
    /// ```
    /// let text = faust::sensor::Monitor::default().snapshot().prometheus();
    /// assert!(text.contains("# TYPE faust_events_total counter\nfaust_events_total 0\n"));
    /// ```
    pub fn prometheus(&self) -> String {
        let mut o = Out(String::with_capacity(4096));
        o.single(
            "uptime_seconds",
            "gauge",
            "Seconds since the worker started.",
            self.uptime_s,
        );
        o.single(
            "messages_received_total",
            "counter",
            "Records taken from Kafka.",
            self.messages_in as f64,
        );
        o.single(
            "messages_received_per_second",
            "gauge",
            "Records taken from Kafka per second (recent).",
            self.messages_per_s,
        );
        o.single(
            "events_total",
            "counter",
            "Events handed to agents.",
            self.events_total as f64,
        );
        o.single(
            "events_per_second",
            "gauge",
            "Events handed to agents per second (recent).",
            self.events_per_s,
        );
        o.labelled(
            "topic_events_total",
            "counter",
            "Events handed to agents, by source topic.",
            "topic",
            &counts(&self.events_by_topic),
        );
        o.labelled(
            "topic_events_per_second",
            "gauge",
            "Events handed to agents per second (recent), by source topic.",
            "topic",
            &self.events_per_s_by_topic,
        );
        o.labelled(
            "agent_events_total",
            "counter",
            "Events handed to agents, by agent.",
            "agent",
            &counts(&self.events_by_agent),
        );
        o.labelled(
            "agent_events_per_second",
            "gauge",
            "Events handed to agents per second (recent), by agent.",
            "agent",
            &self.events_per_s_by_agent,
        );
        o.single(
            "table_writes_total",
            "counter",
            "Records written to tables (sets, updates, deletes).",
            self.table_writes as f64,
        );
        o.single(
            "table_writes_per_second",
            "gauge",
            "Records written to tables per second (recent).",
            self.table_writes_per_s,
        );
        o.labelled(
            "table_records_written_total",
            "counter",
            "Records written to tables, by table.",
            "table",
            &counts(&self.table_writes_by_table),
        );
        o.labelled(
            "table_records_written_per_second",
            "gauge",
            "Records written to tables per second (recent), by table.",
            "table",
            &self.table_writes_per_s_by_table,
        );
        for (name, help, v) in [
            (
                "decode_errors_total",
                "Records that did not decode.",
                self.decode_errors,
            ),
            (
                "agent_failures_total",
                "Agent failures (errors and panics).",
                self.agent_failures,
            ),
            (
                "agent_restarts_total",
                "Agent restarts.",
                self.agent_restarts,
            ),
            (
                "send_errors_total",
                "Sends the producer refused.",
                self.send_errors,
            ),
            (
                "recovered_records_total",
                "Changelog records applied by recovery and standby replicas.",
                self.recovered_records,
            ),
            (
                "changelog_records_total",
                "Changelog records written by table flushes.",
                self.changelog_records,
            ),
        ] {
            o.single(name, "counter", help, v as f64);
        }
        o.latency(
            "processing",
            "Processing time of a record, from taken from Kafka to acknowledged",
            &self.processing,
        );
        o.latency(
            "commit",
            "Commit latency, including the flush of tables",
            &self.commit,
        );
        o.latency("send", "Producer send (enqueue) latency", &self.send);
        o.latency("through", "through() latency", &self.through);
        o.latency("group_by", "group_by() latency", &self.group_by);
        o.latency(
            "rebalance",
            "Time the worker took for its part of a rebalance",
            &self.rebalance,
        );
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_values_are_go_floats() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1e-7), "0.0000001");
    }

    #[test]
    fn every_sample_follows_its_family() {
        let mut s = MonitorSnapshot::default();
        s.events_by_topic.insert("we\"ird".into(), 3);
        s.events_per_s_by_topic.insert("we\"ird".into(), 1.5);
        let text = s.prometheus();
        assert!(text.contains("faust_topic_events_total{topic=\"we\\\"ird\"} 3\n"));
        assert!(text.contains("faust_topic_events_per_second{topic=\"we\\\"ird\"} 1.5\n"));
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(name.starts_with(&family), "{name} outside {family}");
            }
        }
    }
}
