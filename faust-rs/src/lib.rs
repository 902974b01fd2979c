//! # faust-rs
//!
//! Stream processing on Apache Kafka in the spirit of Python's Faust and of Kafka Streams,
//! built on [`rdkafka_async`].
//!
//! An [`App`] declares typed [`Topic`]s and *agents*: async functions over a [`Stream`] of
//! events. A worker ([`App::start`], or the CLI from [`App::main`]) runs them: it consumes
//! the topics as a consumer group (scale out by starting more workers with the same app
//! id), hands events to the agents, and commits offsets only up to the events the agents
//! finished (at-least-once). With no broker configured, the worker starts an embedded
//! Kafka (librdkafka's mock cluster) in-process.
//!
//! ```no_run
//! use faust::App;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Transaction { user: String, amount: i64 }
//!
//! fn main() -> anyhow::Result<()> {
//!     let app = App::new("payments");
//!     let transactions = app.topic::<String, Transaction>("transactions");
//!     app.agent("audit", &transactions, |mut stream| async move {
//!         while let Some(tx) = stream.next().await {
//!             println!("{} paid {}", tx.user, tx.amount);
//!         }
//!         Ok(())
//!     });
//!     app.main() // `worker`, `send`, `status`, `ping`, `agents`, `tables`
//! }
//! ```
// `unsafe` is denied everywhere but in the one call that opens LMDB (`table::store`).
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod acks;
mod agent;
mod app;
#[doc(hidden)]
pub mod cli;
pub mod cluster;
mod conductor;
mod current;
mod event;
mod runtime;
mod sources;
mod topics;
mod worker;

pub mod codec;
pub mod error;
pub mod sensor;
pub mod settings;
pub mod stream;
pub mod table;
pub mod topic;
pub mod web;

pub use agent::AgentHandle;
pub use app::App;
pub use error::{AgentError, AgentResult, Error, Result};
pub use event::{Ack, Event};
pub use settings::Settings;
pub use stream::Stream;
pub use table::{Table, WindowedTable};
pub use topic::Topic;
pub use worker::Worker;

/// The Kafka client faust-rs is built on.
pub use rdkafka_async;
