//! Topics: named, typed (key and value codecs), with a partition count.

use std::fmt;
use std::sync::Arc;

use rdkafka_async::{Delivery, Message, Record};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::App;
use crate::codec::{Auto, Codec, CodecError, Json};
use crate::error::{Error, Result};

/// How a topic is declared to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// The name.
    pub name: String,
    /// Partitions; `None` uses the app's `topic_partitions`.
    pub partitions: Option<i32>,
    /// Created by the app for its own use (repartition topics, changelogs).
    pub internal: bool,
}

/// Where and how a record is sent (see [`Topic::send_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// An explicit partition (default: by key).
    pub partition: Option<i32>,
    /// The record's timestamp, ms since the epoch (default: now).
    pub timestamp: Option<i64>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl SendOptions {
    /// No options: partition by key, timestamp now, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends to `partition`.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
}

/// A typed Kafka topic.
///
/// ```
/// use faust::{App, codec::Binary};
/// let app = App::new("shop");
/// let orders = app.topic::<String, serde_json::Value>("orders").partitions(4);
/// let compact = app.topic::<String, Vec<u32>>("compact").value_codec(Binary);
/// assert_eq!(orders.name(), "orders");
/// # let _ = compact;
/// ```
pub struct Topic<K, V> {
    pub(crate) name: Arc<str>,
    pub(crate) key_codec: Arc<dyn Codec<K>>,
    pub(crate) value_codec: Arc<dyn Codec<V>>,
    pub(crate) app: App,
}

impl<K, V> Clone for Topic<K, V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key_codec: self.key_codec.clone(),
            value_codec: self.value_codec.clone(),
            app: self.app.clone(),
        }
    }
}

impl<K: 'static, V: 'static> fmt::Debug for Topic<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("key_codec", &self.key_codec.name())
            .field("value_codec", &self.value_codec.name())
            .finish()
    }
}

impl<K, V> Topic<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A topic with [`Auto`] keys and JSON values.
    pub(crate) fn json(app: App, name: &str) -> Self {
        Self {
            name: name.into(),
            key_codec: Arc::new(Auto),
            value_codec: Arc::new(Json),
            app,
        }
    }
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> Topic<K, V> {
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Uses `codec` for keys.
    pub fn key_codec(mut self, codec: impl Codec<K>) -> Self {
        self.key_codec = Arc::new(codec);
        self
    }

    /// Uses `codec` for values.
    pub fn value_codec(mut self, codec: impl Codec<V>) -> Self {
        self.value_codec = Arc::new(codec);
        self
    }

    /// Sets the partition count used when the app creates the topic.
    pub fn partitions(self, partitions: i32) -> Self {
        self.app.declare_topic(TopicSpec {
            name: self.name.to_string(),
            partitions: Some(partitions),
            internal: false,
        });
        self
    }

    /// Decodes a consumed record.
    pub(crate) fn decode(&self, m: &Message) -> Result<(Option<K>, V), CodecError> {
        let key = m.key().map(|k| self.key_codec.decode(k)).transpose()?;
        let value = self.value_codec.decode(m.payload().unwrap_or_default())?;
        Ok((key, value))
    }

    /// Encodes a key and value.
    pub(crate) fn encode(&self, key: Option<&K>, value: &V) -> Result<(Option<Vec<u8>>, Vec<u8>)> {
        let key = key.map(|k| self.key_codec.encode(k)).transpose()?;
        Ok((key, self.value_codec.encode(value)?))
    }

    /// Sends a record and waits for the broker's acknowledgement. Needs a running worker.
    ///
    /// Cancel safety: if cancelled after the record was enqueued, it is still delivered.
    pub async fn send(&self, key: Option<&K>, value: &V) -> Result<Delivery> {
        self.send_to(key, value, None).await
    }

    /// Sends a record to an explicit partition.
    ///
    /// Cancel safety: as [`Topic::send`].
    pub async fn send_to(
        &self,
        key: Option<&K>,
        value: &V,
        partition: Option<i32>,
    ) -> Result<Delivery> {
        let options = SendOptions {
            partition,
            ..SendOptions::default()
        };
        let delivery = self.enqueue(key, value, &options).await?;
        Ok(delivery.await?)
    }

    /// Sends a record with a partition, a timestamp and headers, and waits for the
    /// broker's acknowledgement.
    ///
    /// ```no_run
    /// # async fn demo(orders: faust::Topic<String, String>) -> faust::Result<()> {
    /// use faust::topic::SendOptions;
    /// let options = SendOptions::new().partition(2).timestamp(1_700_000_000_000).header("source", "web");
    /// orders.send_with(Some(&"k".to_string()), &"v".to_string(), &options).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Cancel safety: as [`Topic::send`].
    pub async fn send_with(
        &self,
        key: Option<&K>,
        value: &V,
        options: &SendOptions,
    ) -> Result<Delivery> {
        let delivery = self.enqueue(key, value, options).await?;
        Ok(delivery.await?)
    }

    /// Enqueues a record without waiting for its delivery; await the returned future to
    /// know it was stored. Many records can be in flight at once.
    ///
    /// Cancel safety: cancel safe (if cancelled, the record was not enqueued).
    pub async fn send_soon(
        &self,
        key: Option<&K>,
        value: &V,
    ) -> Result<rdkafka_async::DeliveryFuture> {
        self.enqueue(key, value, &SendOptions::default()).await
    }

    /// Enqueues a record; the future resolves on delivery.
    pub(crate) async fn enqueue(
        &self,
        key: Option<&K>,
        value: &V,
        options: &SendOptions,
    ) -> Result<rdkafka_async::DeliveryFuture> {
        let rt = self.app.runtime()?;
        let (k, v) = self.encode(key, value)?;
        let mut record = Record::to(&self.name).value(&v);
        if let Some(k) = &k {
            record = record.key(k);
        }
        if let Some(p) = options.partition {
            record = record.partition(p);
        }
        if let Some(ts) = options.timestamp {
            record = record.timestamp(ts);
        }
        for (name, value) in &options.headers {
            record = record.header(name, value);
        }
        rt.monitor
            .on_send_initiated(&self.name, k.as_ref().map_or(0, Vec::len), v.len());
        let started = std::time::Instant::now();
        let delivery = rt.producer.send(record).await.map_err(Error::from);
        rt.monitor
            .on_send(&self.name, started.elapsed(), delivery.as_ref().err());
        delivery
    }
}
