//! librdkafka queues wired to tokio's reactor.
//!
//! A [`Readiness`] is a non-blocking `eventfd` registered with tokio. librdkafka writes to
//! it when a queue it was enabled on turns non-empty, once per period in which the reader
//! has not polled (`rd_kafka_queue_io_event_enable`). The reader's protocol, which never
//! loses a wake-up:
//!
//! 1. wait until the fd is readable, then read it (this resets the counter);
//! 2. poll the queues until they are empty (each poll re-arms librdkafka's write);
//! 3. if a drain stops early (a budget, a full buffer), do not wait on the fd: reschedule
//!    and drain again, since nothing will be written while the queue stays non-empty.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::{Error, Result};
use crate::native::NativePtr;
use crate::sys;

/// The value librdkafka writes to the eventfd: an eventfd takes 8-byte counters.
static WAKE_PAYLOAD: u64 = 1;

/// A non-blocking eventfd.
#[derive(Debug)]
struct EventFd(OwnedFd);

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Reads (and so resets) the counter; `WouldBlock` when it is zero.
    fn read(&self) -> io::Result<()> {
        let mut buf = 0u64;
        // SAFETY: `buf` is 8 writable bytes, the size an eventfd read needs.
        let n = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// An eventfd registered with the current tokio runtime; librdkafka queues signal it.
#[derive(Debug)]
pub(crate) struct Readiness {
    fd: AsyncFd<EventFd>,
}

impl Readiness {
    /// Creates the fd and registers it with the current runtime.
    pub(crate) fn new() -> Result<Arc<Self>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        // SAFETY: the `EventFd` owns its descriptor and closes it only when dropped, which
        // is after the `AsyncFd` deregistered it.
        let fd = unsafe { AsyncFd::register_with_interest(EventFd::new()?, Interest::READABLE) }
            .map_err(|e| Error::Io(e.to_string()))?;
        Ok(Arc::new(Self { fd }))
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    /// Ready when librdkafka signalled since the last call; the signal is consumed.
    ///
    /// After `Ready`, the caller must drain its queues until they are empty.
    pub(crate) fn poll_signalled(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().read()) {
                Ok(result) => return Poll::Ready(result),
                // The counter was zero: readiness is cleared, wait for the next write.
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits for a signal (see [`Readiness::poll_signalled`]).
    ///
    /// Cancel safe: a cancelled wait consumes nothing.
    pub(crate) async fn signalled(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_signalled(cx)).await
    }
}

/// A librdkafka queue whose non-empty transitions signal a [`Readiness`].
///
/// Dropping it disables the io event before the queue is destroyed, and the fd (shared
/// through the `Arc`) is closed only after every queue using it let go.
#[derive(Debug)]
pub(crate) struct IoQueue {
    queue: NativePtr<sys::rd_kafka_queue_t>,
    readiness: Arc<Readiness>,
}

impl IoQueue {
    /// Takes ownership of `queue` and wires it to `readiness`.
    pub(crate) fn new(queue: NativePtr<sys::rd_kafka_queue_t>, readiness: Arc<Readiness>) -> Self {
        // SAFETY: the queue is valid; librdkafka copies the payload (8 bytes, static).
        unsafe {
            sys::rd_kafka_queue_io_event_enable(
                queue.ptr(),
                readiness.raw_fd(),
                (&WAKE_PAYLOAD as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        Self { queue, readiness }
    }

    /// The raw queue, owned by `self`.
    pub(crate) fn ptr(&self) -> *mut sys::rd_kafka_queue_t {
        self.queue.ptr()
    }

    /// The readiness this queue signals.
    pub(crate) fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// Pops one event without blocking.
    pub(crate) fn poll_event(&self) -> Option<Event> {
        // SAFETY: valid queue; timeout 0 never blocks; the event is ours to destroy.
        unsafe { NativePtr::from_ptr(sys::rd_kafka_queue_poll(self.queue.ptr(), 0)) }.map(Event)
    }
}

impl Drop for IoQueue {
    fn drop(&mut self) {
        // SAFETY: valid queue; fd -1 disables the io event before the queue goes away.
        unsafe { sys::rd_kafka_queue_io_event_enable(self.queue.ptr(), -1, std::ptr::null(), 0) }
    }
}

/// An owned librdkafka event.
#[derive(Debug)]
pub(crate) struct Event(pub(crate) NativePtr<sys::rd_kafka_event_t>);

impl Event {
    pub(crate) fn ptr(&self) -> *mut sys::rd_kafka_event_t {
        self.0.ptr()
    }

    /// `RD_KAFKA_EVENT_*`.
    pub(crate) fn kind(&self) -> i32 {
        // SAFETY: valid event.
        unsafe { sys::rd_kafka_event_type(self.ptr()) }
    }

    /// The event's error code.
    pub(crate) fn error_code(&self) -> sys::rd_kafka_resp_err_t {
        // SAFETY: valid event.
        unsafe { sys::rd_kafka_event_error(self.ptr()) }
    }

    /// The event's error, if any.
    pub(crate) fn error(&self) -> Result<()> {
        let code = self.error_code();
        if code == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        // SAFETY: valid event; the string lives as long as the event.
        let message =
            crate::native::cstr_to_string(unsafe { sys::rd_kafka_event_error_string(self.ptr()) });
        // The fatal flag only exists on error events (elsewhere it reads unrelated bytes).
        // SAFETY: valid event.
        let fatal = self.kind() == sys::RD_KAFKA_EVENT_ERROR
            && unsafe { sys::rd_kafka_event_error_is_fatal(self.ptr()) } != 0;
        let code = crate::ErrorCode::from(code);
        Err(Error::Kafka {
            code,
            message,
            fatal,
            retriable: code.is_retriable(),
        })
    }

    /// The opaque value of the operation this event answers.
    pub(crate) fn opaque(&self) -> usize {
        // SAFETY: valid event.
        unsafe { sys::rd_kafka_event_opaque(self.ptr()) as usize }
    }
}
