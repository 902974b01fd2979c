//! Where a produced message was stored: the outcome a delivery report carries.
//!
//! Its own module so the client's driver, which reads delivery reports, and the producer,
//! which hands them out, both depend on it rather than on each other.

use crate::error::{Error, Result};
use crate::native::cstr_to_string;
use crate::sys;

/// Where a message was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
    /// The message's timestamp (ms since the epoch), if known.
    pub timestamp: Option<i64>,
}

/// The outcome of one message in a delivery report.
pub(crate) fn delivery_result(m: &sys::rd_kafka_message_t) -> Result<Delivery> {
    let mut ts_type = sys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: valid message.
    let ts = unsafe { sys::rd_kafka_message_timestamp(m, &mut ts_type) };
    if m.err == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(Delivery {
            partition: m.partition,
            offset: m.offset,
            timestamp: (ts >= 0).then_some(ts),
        })
    } else {
        // SAFETY: valid message; the topic handle lives as long as the message.
        let topic = cstr_to_string(unsafe { sys::rd_kafka_topic_name(m.rkt) });
        let code = crate::ErrorCode::from(m.err);
        Err(Error::Partition {
            topic,
            partition: m.partition,
            code,
            message: code.description(),
        })
    }
}
