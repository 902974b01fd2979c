//! The crate's one error type.

use std::fmt;

use crate::native::{cstr_to_string, NativePtr};
use crate::sys;

/// A librdkafka or broker error code (`rd_kafka_resp_err_t`).
///
/// ```
/// use rdkafka_async::ErrorCode;
/// let code = ErrorCode::from(rdkafka_async::sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT);
/// assert_eq!(code.name(), "_TIMED_OUT");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(sys::rd_kafka_resp_err_t);

impl ErrorCode {
    /// The code as librdkafka's enum.
    pub fn raw(self) -> sys::rd_kafka_resp_err_t {
        self.0
    }

    /// librdkafka's name for the code, e.g. `"UNKNOWN_TOPIC_OR_PART"`.
    pub fn name(self) -> &'static str {
        // SAFETY: `rd_kafka_err2name` returns a static, NUL-terminated string.
        let ptr = unsafe { sys::rd_kafka_err2name(self.0) };
        if ptr.is_null() {
            return "?";
        }
        // SAFETY: as above; the string is static and valid UTF-8 (ASCII).
        unsafe { std::ffi::CStr::from_ptr(ptr) }
            .to_str()
            .unwrap_or("?")
    }

    /// A human-readable description.
    pub fn description(self) -> String {
        // SAFETY: `rd_kafka_err2str` returns a static, NUL-terminated string.
        cstr_to_string(unsafe { sys::rd_kafka_err2str(self.0) })
    }

    /// Whether this is `RD_KAFKA_RESP_ERR_NO_ERROR`.
    pub fn is_ok(self) -> bool {
        self.0 == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    }

    /// Errors that go away by themselves: time-outs, transport failures, leader moves,
    /// rebalances in progress, full queues.
    pub fn is_retriable(self) -> bool {
        use sys::rd_kafka_resp_err_t::*;
        matches!(
            self.0,
            RD_KAFKA_RESP_ERR__TIMED_OUT
                | RD_KAFKA_RESP_ERR__TRANSPORT
                | RD_KAFKA_RESP_ERR__QUEUE_FULL
                | RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
                | RD_KAFKA_RESP_ERR__WAIT_COORD
                | RD_KAFKA_RESP_ERR__RESOLVE
                | RD_KAFKA_RESP_ERR__MSG_TIMED_OUT
                | RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT
                | RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION
                | RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE
                | RD_KAFKA_RESP_ERR_NOT_COORDINATOR
                | RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE
                | RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS
                | RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS
                | RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS
                | RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND
                | RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION
                | RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
        )
    }
}

impl From<sys::rd_kafka_resp_err_t> for ErrorCode {
    fn from(code: sys::rd_kafka_resp_err_t) -> Self {
        Self(code)
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({})", self.name())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration property was rejected by librdkafka or by this crate.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The property name.
        key: String,
        /// librdkafka's explanation.
        reason: String,
    },
    /// librdkafka could not create the client.
    #[error("could not create the client: {0}")]
    ClientCreation(String),
    /// An error reported by librdkafka or by a broker.
    #[error("{message} ({code})")]
    Kafka {
        /// The error code.
        code: ErrorCode,
        /// The message librdkafka gave, or the code's description.
        message: String,
        /// librdkafka says the client can no longer be used.
        fatal: bool,
        /// librdkafka says the operation may succeed if retried.
        retriable: bool,
    },
    /// A message failed to be delivered, or a consumed message carried an error.
    #[error("{topic}[{partition}]: {code}: {message}")]
    Partition {
        /// The topic.
        topic: String,
        /// The partition (-1 if unknown).
        partition: i32,
        /// The error code.
        code: ErrorCode,
        /// The message librdkafka gave, or the code's description.
        message: String,
    },
    /// An argument was invalid before reaching librdkafka (for example a NUL in a name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client was closed (or is closing) and cannot do this any more.
    #[error("the client is closed")]
    Closed,
    /// An operating system error (event fds, tokio registration).
    #[error("I/O error: {0}")]
    Io(String),
    /// No tokio runtime with I/O and time enabled is running.
    #[error("no tokio runtime: create clients inside a tokio runtime with I/O and time enabled")]
    NoRuntime,
    /// A statistics document did not parse.
    #[error("statistics did not parse: {0}")]
    Statistics(String),
}

impl Error {
    /// An error from a bare code.
    pub(crate) fn from_code(code: sys::rd_kafka_resp_err_t) -> Self {
        let code = ErrorCode(code);
        Self::Kafka {
            code,
            message: code.description(),
            fatal: code.0 == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FATAL,
            retriable: code.is_retriable(),
        }
    }

    /// `Ok(())` for `NO_ERROR`, the error otherwise.
    pub(crate) fn check(code: sys::rd_kafka_resp_err_t) -> Result<(), Error> {
        if code == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(Self::from_code(code))
        }
    }

    /// Takes ownership of an `rd_kafka_error_t` (null means success).
    pub(crate) fn from_rd_error(err: *mut sys::rd_kafka_error_t) -> Result<(), Error> {
        // SAFETY: librdkafka hands us ownership of a non-null error object.
        let Some(err) = (unsafe { NativePtr::from_ptr(err) }) else {
            return Ok(());
        };
        // SAFETY: `err` is valid for these read-only accessors.
        unsafe {
            Err(Self::Kafka {
                code: ErrorCode(sys::rd_kafka_error_code(err.ptr())),
                message: cstr_to_string(sys::rd_kafka_error_string(err.ptr())),
                fatal: sys::rd_kafka_error_is_fatal(err.ptr()) != 0,
                // librdkafka does not flag every transient error (e.g. `_QUEUE_FULL`).
                retriable: sys::rd_kafka_error_is_retriable(err.ptr()) != 0
                    || ErrorCode(sys::rd_kafka_error_code(err.ptr())).is_retriable(),
            })
        }
    }

    /// The error code, when the error came from librdkafka or a broker.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Kafka { code, .. } | Self::Partition { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Kafka { retriable, .. } => *retriable,
            Self::Partition { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether the client is unusable after this error and must be recreated.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Kafka { fatal: true, .. })
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
