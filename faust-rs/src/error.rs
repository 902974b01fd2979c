//! The library's error type.

/// An error an agent function may return: anything that is an error (`anyhow::Error`
/// converts into it with `?`).
pub type AgentError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an agent function returns.
pub type AgentResult = Result<(), AgentError>;

/// Errors of faust-rs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Kafka client failed.
    #[error(transparent)]
    Kafka(#[from] rdkafka_async::Error),
    /// A key or value could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// A setting is invalid.
    #[error("invalid setting {name}: {reason}")]
    Setting {
        /// The setting (as in `FAUST_*` or the CLI flag).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The app was used in a way its lifecycle does not allow (e.g. a topic declared
    /// after the worker started).
    #[error("{0}")]
    Lifecycle(String),
    /// The worker stopped because an agent failed and the policy says to stop.
    #[error("agent {agent} failed: {reason}")]
    AgentFailed {
        /// The agent's name.
        agent: String,
        /// The failure.
        reason: String,
    },
    /// A record could not be decoded and the policy says to stop.
    #[error("undecodable record at {topic}[{partition}]@{offset}: {reason}")]
    BadRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// The codec's error.
        reason: String,
    },
    /// A table operation failed (a key too long, an absent key without default, ...).
    #[error("table {table}: {reason}")]
    Table {
        /// The table.
        table: String,
        /// What went wrong.
        reason: String,
    },
    /// The table store (LMDB) failed.
    #[error("table store: {0}")]
    Store(String),
    /// An I/O error (web server, data directory).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
