//! The part every client shares: the librdkafka handle, its event queues and the driver
//! task that drains them.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;

use tokio::sync::{watch, Notify};

use crate::config::{set_native, ClientConfig};
use crate::delivery::{delivery_result, Delivery};
use crate::error::{Error, Result};
use crate::native::{cstr_to_string, NativePtr};
use crate::queue::{Event, IoQueue, Readiness};
use crate::slots::{opaque_to_key, Slots};
use crate::stats::Statistics;
use crate::sys;

/// Which librdkafka client type to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Producer,
    Consumer,
    Admin,
}

/// Owns the `rd_kafka_t`; destroying it joins librdkafka's threads, so it is done on
/// tokio's blocking pool, never on a runtime worker.
#[derive(Debug)]
pub(crate) struct NativeClient {
    rk: Option<NativePtr<sys::rd_kafka_t>>,
}

impl NativeClient {
    pub(crate) fn ptr(&self) -> *mut sys::rd_kafka_t {
        self.rk
            .as_ref()
            .map_or(std::ptr::null_mut(), NativePtr::ptr)
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        let Some(rk) = self.rk.take() else { return };
        match tokio::runtime::Handle::try_current() {
            // `rd_kafka_destroy` joins librdkafka's threads: keep it off the workers. If
            // the runtime is shutting down the closure is dropped instead, which destroys
            // the handle on this thread.
            Ok(handle) => drop(handle.spawn_blocking(move || drop(rk))),
            Err(_) => drop(rk),
        }
    }
}

/// How many events the driver handles before it yields to other tasks.
const DRIVER_BUDGET: usize = 512;

/// State shared by a client's handles, its futures and its driver task.
///
/// Field order is drop order: the queues go before the handle they belong to.
#[derive(Debug)]
pub(crate) struct Client {
    /// librdkafka's main queue: logs, statistics, errors and delivery reports.
    main: IoQueue,
    /// Answers to the operations this crate starts (commits, admin requests).
    replies: IoQueue,
    /// Pending operations answered on `replies`.
    pub(crate) ops: Slots<Result<Event>>,
    /// Pending deliveries of produced messages (producers only).
    pub(crate) deliveries: Slots<Result<Delivery>>,
    /// Messages handed to librdkafka whose delivery report has not come yet.
    pub(crate) in_flight: AtomicUsize,
    /// Notified when delivery reports free room in the producer queue.
    pub(crate) drained: Notify,
    /// Set when the last user handle is gone; the driver then finishes and exits.
    closing: AtomicBool,
    wake_driver: Notify,
    stats: watch::Sender<Option<Arc<Statistics>>>,
    fatal: watch::Sender<Option<Error>>,
    kind: Kind,
    native: NativeClient,
}

impl Client {
    /// Creates the librdkafka handle with events routed to queues, and starts the driver.
    pub(crate) fn new(kind: Kind, config: &ClientConfig, events: i32) -> Result<Arc<Self>> {
        let readiness = Readiness::new()?;
        let conf = config.to_native()?;
        set_native(&conf, "log.queue", "true")?;
        // SAFETY: valid conf; events are delivered on queues instead of callbacks.
        unsafe {
            sys::rd_kafka_conf_set_events(
                conf.ptr(),
                events
                    | sys::RD_KAFKA_EVENT_ERROR
                    | sys::RD_KAFKA_EVENT_STATS
                    | sys::RD_KAFKA_EVENT_LOG,
            )
        };
        let rd_type = match kind {
            Kind::Producer | Kind::Admin => sys::rd_kafka_type_t::RD_KAFKA_PRODUCER,
            Kind::Consumer => sys::rd_kafka_type_t::RD_KAFKA_CONSUMER,
        };
        let mut errstr = [0 as std::os::raw::c_char; 512];
        // SAFETY: `rd_kafka_new` takes ownership of the conf only on success.
        let rk =
            unsafe { sys::rd_kafka_new(rd_type, conf.ptr(), errstr.as_mut_ptr(), errstr.len()) };
        // SAFETY: non-null `rk` is a new handle we own.
        let Some(rk) = (unsafe { NativePtr::from_ptr(rk) }) else {
            return Err(Error::ClientCreation(cstr_to_string(errstr.as_ptr())));
        };
        conf.into_raw(); // now owned by `rk`
                         // Owned from here on, so that a failure below destroys it off the runtime too.
        let native = NativeClient { rk: Some(rk) };
        // SAFETY: valid handle; a null queue routes logs to the main queue.
        Error::check(unsafe { sys::rd_kafka_set_log_queue(native.ptr(), std::ptr::null_mut()) })?;
        // SAFETY: valid handle; both calls return new queue handles we own.
        let (main, replies) = unsafe {
            (
                NativePtr::from_ptr(sys::rd_kafka_queue_get_main(native.ptr())),
                NativePtr::from_ptr(sys::rd_kafka_queue_new(native.ptr())),
            )
        };
        let (Some(main), Some(replies)) = (main, replies) else {
            return Err(Error::ClientCreation(
                "could not get the client's queues".into(),
            ));
        };
        let client = Arc::new(Self {
            main: IoQueue::new(main, readiness.clone()),
            replies: IoQueue::new(replies, readiness),
            ops: Slots::default(),
            deliveries: Slots::default(),
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
            closing: AtomicBool::new(false),
            wake_driver: Notify::new(),
            stats: watch::channel(None).0,
            fatal: watch::channel(None).0,
            kind,
            native,
        });
        tokio::spawn(drive(client.clone()));
        Ok(client)
    }

    /// The raw handle.
    pub(crate) fn ptr(&self) -> *mut sys::rd_kafka_t {
        self.native.ptr()
    }

    /// The queue operations should answer on.
    pub(crate) fn reply_queue(&self) -> *mut sys::rd_kafka_queue_t {
        self.replies.ptr()
    }

    /// The handle's name (`rdkafka#producer-1`).
    pub(crate) fn name(&self) -> String {
        // SAFETY: valid handle; the name lives as long as the handle.
        cstr_to_string(unsafe { sys::rd_kafka_name(self.ptr()) })
    }

    /// A watch of the latest statistics.
    pub(crate) fn statistics(&self) -> watch::Receiver<Option<Arc<Statistics>>> {
        self.stats.subscribe()
    }

    /// A watch that turns `Some` when librdkafka reports a fatal error.
    pub(crate) fn fatal_error(&self) -> watch::Receiver<Option<Error>> {
        self.fatal.subscribe()
    }

    /// Tells the driver that no user handle is left: it finishes outstanding work and
    /// exits.
    pub(crate) fn release(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake_driver.notify_one();
    }

    /// A C string for a name (for APIs that take `const char*`); NUL bytes are an error.
    pub(crate) fn cstring(s: &str) -> Result<CString> {
        CString::new(s).map_err(|_| Error::InvalidArgument(format!("NUL byte in {s:?}")))
    }

    fn finished(&self) -> bool {
        self.closing.load(Ordering::Acquire)
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.ops.waiting() == 0
    }

    /// Handles one event from the main or the reply queue.
    fn dispatch(&self, event: Event, wakers: &mut Vec<Waker>) {
        match event.kind() {
            sys::RD_KAFKA_EVENT_DR => {
                let delivered = self.deliver(&event, wakers);
                // librdkafka frees room in its queue when the report is destroyed: only
                // then may waiting senders retry.
                drop(event);
                self.in_flight.fetch_sub(delivered, Ordering::AcqRel);
                self.drained.notify_waiters();
            }
            sys::RD_KAFKA_EVENT_LOG => log_event(&event),
            sys::RD_KAFKA_EVENT_STATS => {
                // SAFETY: valid stats event; the string lives as long as the event.
                let json = cstr_to_string(unsafe { sys::rd_kafka_event_stats(event.ptr()) });
                match Statistics::parse(&json) {
                    Ok(stats) => {
                        self.stats.send_replace(Some(Arc::new(stats)));
                    }
                    Err(err) => tracing::warn!(target: "rdkafka_async", %err, "bad statistics"),
                }
            }
            sys::RD_KAFKA_EVENT_ERROR => {
                let err = event.error().err();
                if let Some(err) = err {
                    if err.is_fatal() {
                        tracing::error!(target: "rdkafka_async", client = %self.name(), %err, "fatal error");
                        self.fatal.send_replace(Some(err));
                    } else {
                        tracing::warn!(target: "rdkafka_async", client = %self.name(), %err, "client error");
                    }
                }
            }
            _ => match opaque_to_key(event.opaque()) {
                Some(key) => self.ops.complete(key, Ok(event)),
                // Answers nobody waits for (auto-commits): only errors are worth a line.
                None => {
                    if let Err(err) = event.error() {
                        tracing::warn!(target: "rdkafka_async", client = %self.name(), %err, "background operation failed");
                    }
                }
            },
        }
    }

    /// Completes the delivery futures of a delivery-report event (many messages each);
    /// returns how many messages it reported.
    fn deliver(&self, event: &Event, wakers: &mut Vec<Waker>) -> usize {
        let mut batch: [*const sys::rd_kafka_message_t; 256] = [std::ptr::null(); 256];
        let mut total = 0;
        loop {
            // SAFETY: valid DR event; `batch` has room for `batch.len()` pointers.
            let n = unsafe {
                sys::rd_kafka_event_message_array(event.ptr(), batch.as_mut_ptr(), batch.len())
            };
            if n == 0 {
                break;
            }
            total += n;
            let results = batch[..n].iter().filter_map(|&m| {
                // SAFETY: the messages live as long as the event, which we hold.
                let m = unsafe { &*m };
                let key = opaque_to_key(m._private as usize)?;
                Some((key, delivery_result(m)))
            });
            self.deliveries.complete_many(results, wakers);
        }
        total
    }
}

/// Routes a librdkafka log line to `tracing` (target `librdkafka`).
fn log_event(event: &Event) {
    let mut fac = std::ptr::null();
    let mut text = std::ptr::null();
    let mut level = 0;
    // SAFETY: valid log event; the strings live as long as the event.
    if unsafe { sys::rd_kafka_event_log(event.ptr(), &mut fac, &mut text, &mut level) } != 0 {
        return;
    }
    let (fac, text) = (cstr_to_string(fac), cstr_to_string(text));
    match level {
        0..=3 => tracing::error!(target: "librdkafka", facility = %fac, "{text}"),
        4 => tracing::warn!(target: "librdkafka", facility = %fac, "{text}"),
        5 | 6 => tracing::info!(target: "librdkafka", facility = %fac, "{text}"),
        _ => tracing::debug!(target: "librdkafka", facility = %fac, "{text}"),
    }
}

/// The driver task: drains the main and reply queues whenever their fd signals.
async fn drive(client: Arc<Client>) {
    let readiness = client.main.readiness().clone();
    let mut wakers = Vec::new();
    loop {
        let mut budget = DRIVER_BUDGET;
        'drain: for queue in [&client.main, &client.replies] {
            while let Some(event) = queue.poll_event() {
                client.dispatch(event, &mut wakers);
                budget -= 1;
                if budget == 0 {
                    break 'drain;
                }
            }
        }
        wakers.drain(..).for_each(Waker::wake);
        if client.finished() {
            break;
        }
        if budget == 0 {
            // Stopped early: the queues may still hold events, and librdkafka will not
            // signal again until they are empty. Drain again after other tasks ran.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            res = readiness.signalled() => {
                if let Err(err) = res {
                    tracing::error!(target: "rdkafka_async", %err, "event fd failed; driver stops");
                    break;
                }
            }
            () = client.wake_driver.notified() => {}
        }
    }
    tracing::trace!(target: "rdkafka_async", kind = ?client.kind, "driver finished");
    // Any operation still pending can no longer be answered.
    client.ops.fail_all(|| Err(Error::Closed));
    client.deliveries.fail_all(|| Err(Error::Closed));
}

/// The answer to an operation started with an opaque from [`Client::start_op`].
#[derive(Debug)]
pub(crate) struct OpFuture {
    client: Arc<Client>,
    key: usize,
    done: bool,
}

impl Client {
    /// Takes a slot for an operation whose answer arrives on the reply queue; pass
    /// `key_to_opaque(op.key())` to librdkafka, or call `cancel` if it was not started.
    /// Once the driver has exited (every user handle of the client is gone) the future
    /// resolves with [`Error::Closed`] instead of waiting for an answer nobody reads.
    pub(crate) fn start_op(self: &Arc<Self>) -> OpFuture {
        OpFuture {
            key: self.ops.insert(|| Err(Error::Closed)),
            client: self.clone(),
            done: false,
        }
    }
}

impl OpFuture {
    pub(crate) fn opaque(&self) -> *mut std::ffi::c_void {
        crate::slots::key_to_opaque(self.key)
    }

    /// The operation was refused before it started: free the slot.
    pub(crate) fn cancel(mut self) {
        self.done = true;
        self.client.ops.cancel(self.key);
    }
}

impl std::future::Future for OpFuture {
    type Output = Result<Event>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let out = std::task::ready!(self.client.ops.poll(self.key, cx));
        self.done = true;
        std::task::Poll::Ready(out)
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        if !self.done {
            self.client.ops.abandon(self.key);
        }
    }
}
