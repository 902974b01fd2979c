//! The [`Sensor`] trait: Faust's sensor hooks, called by the worker as events flow.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// A topic and one of its partitions, as given to [`Sensor`] hooks.
///
/// ```
/// use faust::sensor::TopicPartition;
/// let tp = TopicPartition { topic: "orders", partition: 3 };
/// assert_eq!(format!("{}[{}]", tp.topic, tp.partition), "orders[3]");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicPartition<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
}

/// Hooks called by a running worker as records come in, flow through agents, are
/// acknowledged, written to tables, committed and sent: Faust's sensor interface.
///
/// Every method has a default that does nothing: implement the ones you need and register
/// the sensor with [`App::sensor`](crate::App::sensor) before the worker starts. The
/// worker's own figures (the [`Monitor`](crate::sensor::Monitor) behind `/stats` and
/// `/metrics`) are kept whether or not sensors are registered; with none registered, the
/// hooks cost nothing.
///
/// Hooks are called inline, on the worker's tasks, often once per record: keep them
/// cheap (an atomic increment, a channel send), never block, never panic (a panic is
/// caught and logged, and the hook's work is lost). They take `&self`: use atomics or
/// locks for state.
///
/// | hook | when |
/// |---|---|
/// | [`on_message_in`](Sensor::on_message_in) | a record was taken from Kafka |
/// | [`on_stream_event_in`](Sensor::on_stream_event_in) | an agent's stream yields the record's event |
/// | [`on_stream_event_out`](Sensor::on_stream_event_out) | the agent asked for its next event: it is done with this one |
/// | [`on_message_out`](Sensor::on_message_out) | the record is acknowledged (every agent that received it is done) |
/// | [`on_table_get`](Sensor::on_table_get), [`on_table_set`](Sensor::on_table_set), [`on_table_del`](Sensor::on_table_del) | a table is read or written |
/// | [`on_commit_initiated`](Sensor::on_commit_initiated), [`on_commit_completed`](Sensor::on_commit_completed) | offsets are committed |
/// | [`on_send_initiated`](Sensor::on_send_initiated), [`on_send_completed`](Sensor::on_send_completed), [`on_send_error`](Sensor::on_send_error) | a record is handed to the producer |
/// | [`on_rebalance_start`](Sensor::on_rebalance_start), [`on_rebalance_return`](Sensor::on_rebalance_return) | the group's assignment changes |
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use faust::sensor::{Sensor, TopicPartition};
/// use faust::App;
///
/// /// Counts the records of one topic that were fully processed.
/// #[derive(Default)]
/// struct Processed {
///     orders: AtomicU64,
/// }
///
/// impl Sensor for Processed {
///     fn on_message_out(&self, tp: TopicPartition<'_>, _offset: i64) {
///         if tp.topic == "orders" {
///             self.orders.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let app = App::new("shop");
/// let processed = Arc::new(Processed::default());
/// app.sensor(processed.clone());
/// assert_eq!(processed.orders.load(Ordering::Relaxed), 0);
/// ```
pub trait Sensor: Send + Sync + 'static {
    /// A record was taken from Kafka (before any agent sees it).
    fn on_message_in(&self, tp: TopicPartition<'_>, offset: i64) {
        let _ = (tp, offset);
    }

    /// The stream of agent `agent` yields the event of a record.
    fn on_stream_event_in(&self, agent: &str, tp: TopicPartition<'_>, offset: i64) {
        let _ = (agent, tp, offset);
    }

    /// Agent `agent` is done with the event of a record (it asked for the next one, or its
    /// stream ended). For a batch (`take`), called once per record of the batch.
    fn on_stream_event_out(&self, agent: &str, tp: TopicPartition<'_>, offset: i64) {
        let _ = (agent, tp, offset);
    }

    /// A record was acknowledged: every agent that received it is done with it, and its
    /// offset may be committed.
    fn on_message_out(&self, tp: TopicPartition<'_>, offset: i64) {
        let _ = (tp, offset);
    }

    /// A key of table `table` is read (`key`: the key as encoded by the table's key
    /// codec).
    fn on_table_get(&self, table: &str, key: &[u8]) {
        let _ = (table, key);
    }

    /// A key of table `table` is set (or updated in place).
    fn on_table_set(&self, table: &str, key: &[u8]) {
        let _ = (table, key);
    }

    /// A key of table `table` is deleted.
    fn on_table_del(&self, table: &str, key: &[u8]) {
        let _ = (table, key);
    }

    /// Offsets are about to be committed (their tables were flushed).
    fn on_commit_initiated(&self) {}

    /// Offsets were committed; `elapsed` includes the flush of the tables.
    fn on_commit_completed(&self, elapsed: Duration) {
        let _ = elapsed;
    }

    /// A record is handed to the producer (key and value sizes in bytes, encoded).
    fn on_send_initiated(&self, topic: &str, key_size: usize, value_size: usize) {
        let _ = (topic, key_size, value_size);
    }

    /// The producer took the record (it is enqueued for delivery).
    fn on_send_completed(&self, topic: &str, elapsed: Duration) {
        let _ = (topic, elapsed);
    }

    /// The producer refused the record.
    fn on_send_error(&self, topic: &str, error: &Error) {
        let _ = (topic, error);
    }

    /// The group's assignment is changing: partitions are being assigned or revoked.
    fn on_rebalance_start(&self) {}

    /// The worker finished its part of the rebalance (revoked partitions were drained and
    /// committed, or assigned ones are being restored) and handed control back to Kafka.
    fn on_rebalance_return(&self, elapsed: Duration) {
        let _ = elapsed;
    }
}

impl<S: Sensor + ?Sized> Sensor for Arc<S> {
    fn on_message_in(&self, tp: TopicPartition<'_>, offset: i64) {
        (**self).on_message_in(tp, offset)
    }
    fn on_stream_event_in(&self, agent: &str, tp: TopicPartition<'_>, offset: i64) {
        (**self).on_stream_event_in(agent, tp, offset)
    }
    fn on_stream_event_out(&self, agent: &str, tp: TopicPartition<'_>, offset: i64) {
        (**self).on_stream_event_out(agent, tp, offset)
    }
    fn on_message_out(&self, tp: TopicPartition<'_>, offset: i64) {
        (**self).on_message_out(tp, offset)
    }
    fn on_table_get(&self, table: &str, key: &[u8]) {
        (**self).on_table_get(table, key)
    }
    fn on_table_set(&self, table: &str, key: &[u8]) {
        (**self).on_table_set(table, key)
    }
    fn on_table_del(&self, table: &str, key: &[u8]) {
        (**self).on_table_del(table, key)
    }
    fn on_commit_initiated(&self) {
        (**self).on_commit_initiated()
    }
    fn on_commit_completed(&self, elapsed: Duration) {
        (**self).on_commit_completed(elapsed)
    }
    fn on_send_initiated(&self, topic: &str, key_size: usize, value_size: usize) {
        (**self).on_send_initiated(topic, key_size, value_size)
    }
    fn on_send_completed(&self, topic: &str, elapsed: Duration) {
        (**self).on_send_completed(topic, elapsed)
    }
    fn on_send_error(&self, topic: &str, error: &Error) {
        (**self).on_send_error(topic, error)
    }
    fn on_rebalance_start(&self) {
        (**self).on_rebalance_start()
    }
    fn on_rebalance_return(&self, elapsed: Duration) {
        (**self).on_rebalance_return(elapsed)
    }
}

/// The registered sensors (shared by everything that calls them).
#[derive(Clone, Default)]
pub(crate) struct Sensors(Arc<[Arc<dyn Sensor>]>);

impl std::fmt::Debug for Sensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sensors({})", self.0.len())
    }
}

impl Sensors {
    pub(crate) fn new(list: Vec<Arc<dyn Sensor>>) -> Self {
        Self(list.into())
    }

    /// Whether any sensor is registered (the callers' fast path).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Calls `f` on every sensor; a panic is logged and the next sensor is called.
    #[inline]
    pub(crate) fn each(&self, f: impl Fn(&dyn Sensor)) {
        if self.0.is_empty() {
            return;
        }
        self.call(&f);
    }

    #[inline(never)]
    fn call(&self, f: &dyn Fn(&dyn Sensor)) {
        for s in self.0.iter() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s.as_ref()))).is_err() {
                tracing::error!("a sensor hook panicked");
            }
        }
    }
}
