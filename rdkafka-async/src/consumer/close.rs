//! Leaving the group: librdkafka's close driven from the consumer queue, bounded.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::shared::Shared;
use crate::error::{Error, Result};
use crate::queue::Readiness;
use crate::sys;

/// The bound of [`super::Consumer::close`] and of the close a dropped consumer makes.
pub(super) const DEFAULT: Duration = Duration::from_secs(10);

/// Starts librdkafka's close on the consumer queue and serves it until the consumer is
/// closed, or `timeout` passes (`_TIMED_OUT`; the handle is then destroyed in the
/// background when its last owner goes).
pub(super) async fn leave_group(
    shared: &Arc<Shared>,
    readiness: &Readiness,
    timeout: Duration,
) -> Result<()> {
    // SAFETY: valid handle and queue; the close continues on that queue.
    Error::from_rd_error(unsafe {
        sys::rd_kafka_consumer_close_queue(shared.client.ptr(), shared.control.ptr())
    })?;
    // SAFETY: valid handle.
    let closed = || unsafe { sys::rd_kafka_consumer_closed(shared.client.ptr()) } != 0;
    let closing = async {
        loop {
            while let Some(event) = shared.control.poll_event() {
                if closed() {
                    // Events left are moot, and applying one would wait forever on a
                    // group thread that no longer answers.
                    return Ok(());
                }
                if event.kind() == sys::RD_KAFKA_EVENT_REBALANCE {
                    // As librdkafka's own close does: whatever the event (a revocation,
                    // or an assignment that predates the close), unassign everything.
                    // That waits for librdkafka's group thread, which may not answer
                    // while terminating: off the runtime, bounded by the timeout.
                    drop(event);
                    shared
                        .off_runtime(|s| {
                            // SAFETY: valid handle; null unassigns everything.
                            Error::check(unsafe {
                                sys::rd_kafka_assign(s.client.ptr(), std::ptr::null())
                            })
                        })
                        .await?;
                }
            }
            if closed() {
                return Ok(());
            }
            readiness.signalled().await?;
        }
    };
    match tokio::time::timeout_at(Instant::now() + timeout, closing).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(target: "rdkafka_async", ?timeout, "consumer close timed out; the client is destroyed in the background");
            Err(Error::from_code(
                sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
            ))
        }
    }
}
