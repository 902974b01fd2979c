//! # rdkafka-async
//!
//! An event-loop Kafka client: librdkafka driven by tokio's reactor.
//!
//! Every librdkafka queue this crate reads has a non-blocking `eventfd` that librdkafka
//! writes to when the queue turns non-empty (`rd_kafka_queue_io_event_enable`); the fd is
//! registered with tokio, so a task wakes exactly when there is something to read. There
//! are no polling threads of our own, no callbacks on librdkafka's threads, and nothing
//! blocks a runtime worker: delivery reports, commits, rebalances, admin results,
//! statistics and logs all arrive as events.
//!
//! ```no_run
//! use rdkafka_async::{ClientConfig, Consumer, MockCluster, Producer, Record};
//!
//! # async fn demo() -> rdkafka_async::Result<()> {
//! let cluster = MockCluster::new(1)?;
//! cluster.create_topic("greetings", 1, 1)?;
//! let config = ClientConfig::new().bootstrap_servers(cluster.bootstrap_servers());
//!
//! let producer = Producer::new(config.clone())?;
//! let delivery = producer.send(Record::to("greetings").key("k").value("hello")).await?;
//! println!("delivered at {:?}", delivery.await?);
//!
//! let mut consumer = Consumer::new(config.group_id("demo").set("auto.offset.reset", "earliest"))?;
//! consumer.subscribe(&["greetings"]).await?;
//! let message = consumer.recv().await?;
//! assert_eq!(message.payload(), Some(&b"hello"[..]));
//! consumer.close().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub use rdkafka_sys as sys;

mod client;
mod delivery;
mod native;
mod queue;
mod slots;

pub mod admin;
pub mod config;
pub mod consumer;
pub mod error;
pub mod message;
pub mod mock;
pub mod producer;
pub mod stats;
pub mod topic_partition_list;

pub use admin::{Admin, AdminOptions, Metadata, NewTopic, ResourceSpec};
pub use config::{AssignmentStrategy, ClientConfig, Compression, OffsetReset};
pub use consumer::{
    CommitHandle, Consumer, ConsumerEvent, PartitionQueue, Rebalance, RebalanceKind,
};
pub use error::{Error, ErrorCode, Result};
pub use message::{Headers, Message};
pub use mock::{CoordinatorType, MockCluster, MockListener};
pub use producer::{Delivery, DeliveryFuture, Producer, Record};
pub use stats::Statistics;
pub use topic_partition_list::{Offset, TopicPartition, TopicPartitionList};
