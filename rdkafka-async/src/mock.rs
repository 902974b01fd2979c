//! librdkafka's built-in mock Kafka cluster, for tests and local development.
//!
//! [`MockCluster`] runs a small in-process Kafka cluster on loopback: it speaks the Kafka
//! protocol well enough for producers, consumers (including consumer groups and
//! transactions) and metadata, and it can inject faults: brokers going down, latency,
//! per-request errors, leader moves. Its brokers listen on ports the kernel picks;
//! [`MockCluster::listen_on`] adds fixed ports in front of them.
//!
//! ```
//! use rdkafka_async::MockCluster;
//!
//! let cluster = MockCluster::new(3)?;
//! cluster.create_topic("orders", 6, 3)?;
//! assert_eq!(cluster.bootstrap_servers().split(',').count(), 3);
//! # Ok::<(), rdkafka_async::Error>(())
//! ```

use std::ffi::CString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::raw::{c_char, c_int};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::ClientConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::native::{cstr_to_string, NativePtr};
use crate::sys;

/// Kafka protocol API keys (request types), for [`MockCluster::push_request_errors`] and
/// the other per-request fault injectors.
///
/// ```
/// use rdkafka_async::mock::api_key;
/// assert_eq!(api_key::PRODUCE, 0);
/// assert_eq!(api_key::JOIN_GROUP, 11);
/// ```
pub mod api_key {
    /// `Produce`.
    pub const PRODUCE: i16 = 0;
    /// `Fetch`.
    pub const FETCH: i16 = 1;
    /// `ListOffsets`.
    pub const LIST_OFFSETS: i16 = 2;
    /// `Metadata`.
    pub const METADATA: i16 = 3;
    /// `OffsetCommit`.
    pub const OFFSET_COMMIT: i16 = 8;
    /// `OffsetFetch`.
    pub const OFFSET_FETCH: i16 = 9;
    /// `FindCoordinator`.
    pub const FIND_COORDINATOR: i16 = 10;
    /// `JoinGroup`.
    pub const JOIN_GROUP: i16 = 11;
    /// `Heartbeat`.
    pub const HEARTBEAT: i16 = 12;
    /// `LeaveGroup`.
    pub const LEAVE_GROUP: i16 = 13;
    /// `SyncGroup`.
    pub const SYNC_GROUP: i16 = 14;
    /// `DescribeGroups`.
    pub const DESCRIBE_GROUPS: i16 = 15;
    /// `ListGroups`.
    pub const LIST_GROUPS: i16 = 16;
    /// `SaslHandshake`.
    pub const SASL_HANDSHAKE: i16 = 17;
    /// `ApiVersions`.
    pub const API_VERSIONS: i16 = 18;
    /// `CreateTopics`.
    pub const CREATE_TOPICS: i16 = 19;
    /// `DeleteTopics`.
    pub const DELETE_TOPICS: i16 = 20;
    /// `DeleteRecords`.
    pub const DELETE_RECORDS: i16 = 21;
    /// `InitProducerId`.
    pub const INIT_PRODUCER_ID: i16 = 22;
    /// `OffsetForLeaderEpoch`.
    pub const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
    /// `AddPartitionsToTxn`.
    pub const ADD_PARTITIONS_TO_TXN: i16 = 24;
    /// `AddOffsetsToTxn`.
    pub const ADD_OFFSETS_TO_TXN: i16 = 25;
    /// `EndTxn`.
    pub const END_TXN: i16 = 26;
    /// `TxnOffsetCommit`.
    pub const TXN_OFFSET_COMMIT: i16 = 28;
    /// `DescribeConfigs`.
    pub const DESCRIBE_CONFIGS: i16 = 32;
    /// `AlterConfigs`.
    pub const ALTER_CONFIGS: i16 = 33;
    /// `SaslAuthenticate`.
    pub const SASL_AUTHENTICATE: i16 = 36;
    /// `CreatePartitions`.
    pub const CREATE_PARTITIONS: i16 = 37;
    /// `DeleteGroups`.
    pub const DELETE_GROUPS: i16 = 42;
    /// `OffsetDelete`.
    pub const OFFSET_DELETE: i16 = 47;
    /// `ConsumerGroupHeartbeat` (the KIP-848 consumer protocol).
    pub const CONSUMER_GROUP_HEARTBEAT: i16 = 68;
}

/// Which kind of coordinator [`MockCluster::set_coordinator`] pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoordinatorType {
    /// The group coordinator of a `group.id`.
    Group,
    /// The transaction coordinator of a `transactional.id`.
    Transaction,
}

impl CoordinatorType {
    /// librdkafka's name for the type: `"group"` or `"transaction"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Transaction => "transaction",
        }
    }
}

/// An in-process mock Kafka cluster (librdkafka's `rd_kafka_mock_cluster_t`).
///
/// Brokers have ids `1..=n` and listen on loopback ports chosen by the kernel; point a
/// client's `bootstrap.servers` at [`bootstrap_servers`](Self::bootstrap_servers). Topics
/// are auto-created on first use (4 partitions) unless created first with
/// [`create_topic`](Self::create_topic). The cluster runs on librdkafka's own thread and
/// needs no tokio runtime; all methods may be called from any thread. Dropping it stops
/// the brokers.
///
/// Most setters hand a command to the mock's thread and wait for it to be applied. That
/// is usually immediate, but librdkafka's mock can miss the wake-up and apply it on its
/// next one-second tick, so a setter may occasionally block for up to a second.
///
/// The consumer-group "initial rebalance delay" is set to 0 (a real broker's default
/// is 3 s), so groups form immediately; see
/// [`set_group_initial_rebalance_delay`](Self::set_group_initial_rebalance_delay).
///
/// ```
/// use std::time::Duration;
/// use rdkafka_async::mock::{api_key, MockCluster};
/// use rdkafka_async::{sys::rd_kafka_resp_err_t, ErrorCode};
///
/// let cluster = MockCluster::new(3)?;
/// cluster.create_topic("events", 3, 2)?;
/// // The next two Produce requests fail with NOT_LEADER_FOR_PARTITION.
/// let not_leader = ErrorCode::from(rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
/// cluster.push_request_errors(api_key::PRODUCE, &[not_leader, not_leader]);
/// cluster.set_broker_rtt(2, Duration::from_millis(50))?;
/// cluster.set_broker_down(3)?;
/// assert!(cluster.set_broker_down(4).is_err());
/// # Ok::<(), rdkafka_async::Error>(())
/// ```
pub struct MockCluster {
    // Field order matters: fields drop in declaration order, and the mock cluster must be
    // destroyed before the handle it was created with (librdkafka asserts this). Both are
    // destroyed by `Drop`, off the runtime's workers (destroying joins threads).
    cluster: std::mem::ManuallyDrop<NativePtr<sys::rd_kafka_mock_cluster_t>>,
    // Only kept alive for the cluster, which uses it internally.
    _handle: std::mem::ManuallyDrop<NativePtr<sys::rd_kafka_t>>,
    /// Each broker's real listener, index `i` for broker `i + 1`.
    broker_addrs: Vec<SocketAddr>,
}

impl MockCluster {
    /// The broker id meaning "every broker" for the broker fault injectors.
    pub const ALL_BROKERS: i32 = -1;

    /// Starts a mock cluster of `brokers` brokers (ids `1..=brokers`).
    ///
    /// Needs no tokio runtime. The cluster holds a minimal producer handle for
    /// librdkafka's bookkeeping; its log level is 3 (errors), printed on stderr.
    ///
    /// ```
    /// let cluster = rdkafka_async::MockCluster::new(1)?;
    /// assert!(cluster.bootstrap_servers().starts_with("127.0.0.1:"));
    /// # Ok::<(), rdkafka_async::Error>(())
    /// ```
    pub fn new(brokers: i32) -> Result<Self> {
        if brokers < 1 {
            return Err(Error::InvalidArgument(format!(
                "a mock cluster needs at least one broker, not {brokers}"
            )));
        }
        let conf = ClientConfig::new()
            .set("log_level", "3")
            .client_id("rdkafka-async-mock")
            .to_native()?;
        let mut errstr = [0 as c_char; 512];
        // SAFETY: `conf` is a valid configuration and `errstr`'s length is passed. On
        // success librdkafka takes ownership of `conf` (released with `into_raw` below);
        // on failure it stays ours and `conf` frees it.
        let rk = unsafe {
            sys::rd_kafka_new(
                sys::rd_kafka_type_t::RD_KAFKA_PRODUCER,
                conf.ptr(),
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        // SAFETY: a non-null `rd_kafka_new` result is a new handle that we own.
        let Some(handle) = (unsafe { NativePtr::from_ptr(rk) }) else {
            return Err(Error::ClientCreation(cstr_to_string(errstr.as_ptr())));
        };
        let _owned_by_handle = conf.into_raw();

        // SAFETY: `handle` is a valid handle; the cluster it returns is owned by us and is
        // destroyed before `handle` (field order of `MockCluster`).
        let mc = unsafe { sys::rd_kafka_mock_cluster_new(handle.ptr(), brokers) };
        // SAFETY: a non-null result is a new cluster that we own.
        let Some(cluster) = (unsafe { NativePtr::from_ptr(mc) }) else {
            return Err(Error::ClientCreation(
                "rd_kafka_mock_cluster_new failed (librdkafka logged why on stderr)".into(),
            ));
        };
        let mut this = Self {
            cluster: std::mem::ManuallyDrop::new(cluster),
            _handle: std::mem::ManuallyDrop::new(handle),
            broker_addrs: Vec::new(),
        };
        let bootstraps = this.bootstrap_servers();
        // `rd_kafka_mock_cluster_new` writes the list in broker order (ids 1..=n).
        let broker_addrs = bootstraps
            .split(',')
            .map(|addr| addr.parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| {
                Error::ClientCreation(format!(
                    "unexpected mock bootstrap list `{bootstraps}`: {err}"
                ))
            })?;
        if broker_addrs.len() != brokers as usize {
            return Err(Error::ClientCreation(format!(
                "mock bootstrap list `{bootstraps}` does not have {brokers} brokers"
            )));
        }
        this.broker_addrs = broker_addrs;
        this.set_group_initial_rebalance_delay(Duration::ZERO)?;
        tracing::debug!(brokers, bootstrap_servers = %bootstraps, "mock cluster started");
        Ok(this)
    }

    /// The brokers' real addresses as a `bootstrap.servers` list (`127.0.0.1:port,...`,
    /// in broker id order).
    ///
    /// This is the list the cluster was created with: it does not follow
    /// [`set_broker_advertised_address`](Self::set_broker_advertised_address) or
    /// [`listen_on`](Self::listen_on) (use [`MockListener::bootstrap_servers`] then).
    pub fn bootstrap_servers(&self) -> String {
        // SAFETY: the cluster is valid; the string lives as long as the cluster and is
        // copied before returning.
        cstr_to_string(unsafe { sys::rd_kafka_mock_cluster_bootstraps(self.cluster.ptr()) })
    }

    /// The number of brokers.
    pub fn broker_count(&self) -> usize {
        self.broker_addrs.len()
    }

    /// The broker ids: `1..=n`.
    ///
    /// ```
    /// let cluster = rdkafka_async::MockCluster::new(3)?;
    /// assert_eq!(cluster.broker_ids().collect::<Vec<_>>(), [1, 2, 3]);
    /// # Ok::<(), rdkafka_async::Error>(())
    /// ```
    pub fn broker_ids(&self) -> RangeInclusive<i32> {
        1..=self.broker_addrs.len() as i32
    }

    /// The real loopback address of each broker, index `i` for broker `i + 1`.
    pub fn broker_addresses(&self) -> &[SocketAddr] {
        &self.broker_addrs
    }

    /// Creates a topic (the mock refuses the CreateTopics admin request).
    ///
    /// Fails with `TOPIC_ALREADY_EXISTS` if it exists, which includes topics a client
    /// already auto-created by using them.
    pub fn create_topic(&self, name: &str, partitions: i32, replication_factor: i32) -> Result<()> {
        if partitions < 1 || replication_factor < 1 {
            return Err(Error::InvalidArgument(format!(
                "topic `{name}`: partitions ({partitions}) and replication factor \
                 ({replication_factor}) must be at least 1"
            )));
        }
        let topic = c_string("topic name", name)?;
        // SAFETY: the cluster and the string are valid for the call, which copies the name.
        Error::check(unsafe {
            sys::rd_kafka_mock_topic_create(
                self.cluster.ptr(),
                topic.as_ptr(),
                partitions,
                replication_factor,
            )
        })?;
        tracing::debug!(
            topic = name,
            partitions,
            replication_factor,
            "mock topic created"
        );
        Ok(())
    }

    /// Disconnects every client of broker `broker_id` and refuses new connections until
    /// [`set_broker_up`](Self::set_broker_up); [`ALL_BROKERS`](Self::ALL_BROKERS) for all.
    /// Partition leadership does not move.
    pub fn set_broker_down(&self, broker_id: i32) -> Result<()> {
        // SAFETY: the cluster is valid.
        Error::check(unsafe { sys::rd_kafka_mock_broker_set_down(self.cluster.ptr(), broker_id) })
    }

    /// Lets broker `broker_id` accept connections again
    /// ([`ALL_BROKERS`](Self::ALL_BROKERS) for all).
    pub fn set_broker_up(&self, broker_id: i32) -> Result<()> {
        // SAFETY: the cluster is valid.
        Error::check(unsafe { sys::rd_kafka_mock_broker_set_up(self.cluster.ptr(), broker_id) })
    }

    /// Delays every response of broker `broker_id` by `rtt` (millisecond resolution;
    /// [`ALL_BROKERS`](Self::ALL_BROKERS) for all; zero removes the delay).
    pub fn set_broker_rtt(&self, broker_id: i32, rtt: Duration) -> Result<()> {
        let rtt_ms = millis_i32("broker rtt", rtt)?;
        // SAFETY: the cluster is valid.
        Error::check(unsafe {
            sys::rd_kafka_mock_broker_set_rtt(self.cluster.ptr(), broker_id, rtt_ms)
        })
    }

    /// Makes the next `errors.len()` requests of type `api_key` (see [`api_key`]), on any
    /// broker, fail with these codes, in order.
    ///
    /// `_TRANSPORT` (`RD_KAFKA_RESP_ERR__TRANSPORT`) makes the broker drop the connection
    /// instead of answering.
    pub fn push_request_errors(&self, api_key: i16, errors: &[ErrorCode]) {
        if errors.is_empty() {
            return;
        }
        let raw: Vec<sys::rd_kafka_resp_err_t> = errors.iter().map(|code| code.raw()).collect();
        // SAFETY: the cluster is valid and `raw` holds `raw.len()` codes, copied by the call.
        unsafe {
            sys::rd_kafka_mock_push_request_errors_array(
                self.cluster.ptr(),
                api_key,
                raw.len(),
                raw.as_ptr(),
            )
        }
    }

    /// Makes the next `errors.len()` requests of type `api_key` to broker `broker_id` be
    /// answered with these codes (`NO_ERROR` for a normal answer), each after its
    /// delay. These take precedence over [`push_request_errors`](Self::push_request_errors).
    ///
    /// Fails with `_UNKNOWN_BROKER` if there is no such broker.
    pub fn push_broker_request_error_rtts(
        &self,
        broker_id: i32,
        api_key: i16,
        errors: &[(ErrorCode, Duration)],
    ) -> Result<()> {
        let entries = errors
            .iter()
            .map(|&(code, rtt)| Ok((code.raw() as c_int, millis_i32("request rtt", rtt)?)))
            .collect::<Result<Vec<_>>>()?;
        if entries.is_empty() {
            // Still report an unknown broker.
            return self.broker_error_stack_count(broker_id, api_key).map(drop);
        }
        // The C function is variadic; push one (error, rtt) pair per call, which appends
        // to the same stack in order.
        for (code, rtt_ms) in entries {
            // SAFETY: the cluster is valid; `cnt` is 1 and exactly one (int, int) pair of
            // variadic arguments follows, as the function reads them.
            Error::check(unsafe {
                sys::rd_kafka_mock_broker_push_request_error_rtts(
                    self.cluster.ptr(),
                    broker_id,
                    api_key,
                    1,
                    code,
                    rtt_ms,
                )
            })?;
        }
        Ok(())
    }

    /// How many errors pushed with
    /// [`push_broker_request_error_rtts`](Self::push_broker_request_error_rtts) for
    /// `api_key` broker `broker_id` still has to return.
    pub fn broker_error_stack_count(&self, broker_id: i32, api_key: i16) -> Result<usize> {
        let mut count = 0usize;
        // SAFETY: the cluster is valid and `count` is a valid out-pointer.
        Error::check(unsafe {
            sys::rd_kafka_mock_broker_error_stack_cnt(
                self.cluster.ptr(),
                broker_id,
                api_key,
                &mut count,
            )
        })?;
        Ok(count)
    }

    /// Forgets the errors pushed with [`push_request_errors`](Self::push_request_errors)
    /// for `api_key` that were not returned yet.
    pub fn clear_request_errors(&self, api_key: i16) {
        // SAFETY: the cluster is valid.
        unsafe { sys::rd_kafka_mock_clear_request_errors(self.cluster.ptr(), api_key) }
    }

    /// Makes Metadata (and AddPartitionsToTxn) requests report `code` for `topic`;
    /// `NO_ERROR` clears it. Creates the topic (with default settings) if it is missing.
    pub fn set_topic_error(&self, topic: &str, code: ErrorCode) -> Result<()> {
        let topic = c_string("topic name", topic)?;
        // SAFETY: the cluster and the string are valid for the call, which copies it.
        unsafe {
            sys::rd_kafka_mock_topic_set_error(self.cluster.ptr(), topic.as_ptr(), code.raw())
        }
        Ok(())
    }

    /// Moves the leadership of `topic`'s `partition` to broker `broker_id` (`-1`: no
    /// leader). Creates the topic if it is missing.
    pub fn set_partition_leader(&self, topic: &str, partition: i32, broker_id: i32) -> Result<()> {
        if partition < 0 {
            return Err(Error::InvalidArgument(format!(
                "partition must not be negative, not {partition}"
            )));
        }
        let topic = c_string("topic name", topic)?;
        // SAFETY: the cluster and the string are valid for the call, which copies it.
        Error::check(unsafe {
            sys::rd_kafka_mock_partition_set_leader(
                self.cluster.ptr(),
                topic.as_ptr(),
                partition,
                broker_id,
            )
        })
    }

    /// Pins the coordinator of a `group.id` or `transactional.id` to broker `broker_id`
    /// (which need not exist), instead of the default hashing.
    pub fn set_coordinator(
        &self,
        key_type: CoordinatorType,
        key: &str,
        broker_id: i32,
    ) -> Result<()> {
        let key_type_c = c_string("coordinator type", key_type.as_str())?;
        let key = c_string("coordinator key", key)?;
        // SAFETY: the cluster and both strings are valid for the call, which copies them.
        Error::check(unsafe {
            sys::rd_kafka_mock_coordinator_set(
                self.cluster.ptr(),
                key_type_c.as_ptr(),
                key.as_ptr(),
                broker_id,
            )
        })
    }

    /// Sets the brokers' `group.initial.rebalance.delay.ms`: how long a new consumer
    /// group waits for more members before its first rebalance (millisecond resolution).
    /// [`new`](Self::new) sets it to zero.
    pub fn set_group_initial_rebalance_delay(&self, delay: Duration) -> Result<()> {
        let delay_ms = millis_i32("initial rebalance delay", delay)?;
        // SAFETY: the cluster is valid.
        unsafe { sys::rd_kafka_mock_group_initial_rebalance_delay_ms(self.cluster.ptr(), delay_ms) }
        Ok(())
    }

    /// Makes Metadata responses advertise broker `broker_id` at `host:port` (clients then
    /// connect there). The broker keeps listening on its real address
    /// ([`broker_addresses`](Self::broker_addresses)).
    pub fn set_broker_advertised_address(
        &self,
        broker_id: i32,
        host: &str,
        port: u16,
    ) -> Result<()> {
        if !self.broker_ids().contains(&broker_id) {
            return Err(Error::InvalidArgument(format!(
                "no mock broker {broker_id} (brokers are {}..={})",
                self.broker_ids().start(),
                self.broker_ids().end()
            )));
        }
        let host = c_string("host", host)?;
        // SAFETY: the cluster and the string are valid for the call, which copies it.
        unsafe {
            sys::rd_kafka_mock_broker_set_host_port(
                self.cluster.ptr(),
                broker_id,
                host.as_ptr(),
                c_int::from(port),
            )
        }
        Ok(())
    }

    /// Listens on fixed loopback ports, one per broker, in front of the brokers' ephemeral
    /// ports: broker `i` gets `127.0.0.1:(first_port + i - 1)`, and each connection there is
    /// forwarded to the broker. Metadata responses then advertise the fixed ports, so
    /// clients bootstrapped with [`MockListener::bootstrap_servers`] reach every broker
    /// through them. `first_port` 0 lets the kernel pick a free port for each broker.
    ///
    /// The forwarders run as tasks of the current tokio runtime until the returned
    /// [`MockListener`] is dropped. A broker that is [down](Self::set_broker_down) still
    /// accepts on its fixed port, but closes the connection at once.
    ///
    /// Fails with [`Error::Io`] if a port cannot be bound, and [`Error::NoRuntime`]
    /// outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the ports bound so far
    /// are released, no forwarder is started and the advertised addresses are unchanged.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let cluster = rdkafka_async::MockCluster::new(2)?;
    /// let listener = cluster.listen_on(0).await?; // 0: any free ports
    /// let servers = listener.bootstrap_servers();
    /// assert_eq!(servers.split(',').count(), 2);
    /// assert_ne!(servers, cluster.bootstrap_servers());
    /// # Ok::<(), rdkafka_async::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn listen_on(&self, first_port: u16) -> Result<MockListener> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let count = self.broker_addrs.len();
        if first_port != 0 && usize::from(first_port) + count - 1 > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument(format!(
                "{count} brokers from port {first_port} go past port {}",
                u16::MAX
            )));
        }
        let mut listeners = Vec::with_capacity(count);
        for i in 0..count {
            let port = if first_port == 0 {
                0
            } else {
                first_port + i as u16
            };
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|err| Error::Io(format!("could not listen on {addr}: {err}")))?;
            listeners.push(listener);
        }
        // No await from here on: the rest happens completely or not at all.
        let addresses = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        for (broker_id, addr) in self.broker_ids().zip(&addresses) {
            self.set_broker_advertised_address(broker_id, &addr.ip().to_string(), addr.port())?;
        }
        let tasks = listeners
            .into_iter()
            .zip(self.broker_ids().zip(self.broker_addrs.iter().copied()))
            .map(|(listener, (broker_id, target))| {
                tokio::spawn(forward_broker(listener, broker_id, target))
            })
            .collect();
        let listener = MockListener { addresses, tasks };
        tracing::debug!(
            bootstrap_servers = %listener.bootstrap_servers(),
            "mock cluster listening on fixed ports"
        );
        Ok(listener)
    }
}

impl fmt::Debug for MockCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCluster")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish_non_exhaustive()
    }
}

/// Fixed loopback ports forwarding to a [`MockCluster`]'s brokers, from
/// [`MockCluster::listen_on`].
///
/// Dropping it closes the ports and every forwarded connection; the cluster keeps
/// advertising the fixed ports (see [`MockCluster::set_broker_advertised_address`]).
#[derive(Debug)]
pub struct MockListener {
    addresses: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl MockListener {
    /// The fixed addresses as a `bootstrap.servers` list (`127.0.0.1:port,...`, in broker
    /// id order).
    pub fn bootstrap_servers(&self) -> String {
        self.addresses
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The fixed addresses, index `i` for broker `i + 1`.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        // SAFETY: both fields are taken exactly once, here, and never used again.
        let (cluster, handle) = unsafe {
            (
                std::mem::ManuallyDrop::take(&mut self.cluster),
                std::mem::ManuallyDrop::take(&mut self._handle),
            )
        };
        // The cluster first, then its handle (librdkafka asserts this order). Destroying
        // the cluster joins its thread, which can take up to its one-second tick: keep it
        // off the runtime's workers.
        let destroy = move || {
            drop(cluster);
            drop(handle);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(destroy)),
            Err(_) => destroy(),
        }
    }
}

impl Drop for MockListener {
    fn drop(&mut self) {
        // Aborting a forwarder drops its listener and its `JoinSet` of connections.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Accepts connections on `listener` and forwards each to `target`, until aborted.
async fn forward_broker(listener: TcpListener, broker_id: i32, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    tracing::trace!(broker_id, %peer, "mock connection accepted");
                    connections.spawn(forward_connection(client, peer, broker_id, target));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(broker_id, error = %err, "mock listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies bytes both ways between a client and its broker until both sides close.
async fn forward_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    broker_id: i32,
    target: SocketAddr,
) {
    let mut broker = match TcpStream::connect(target).await {
        Ok(broker) => broker,
        Err(err) => {
            // The broker is down: closing the client's connection tells it so.
            tracing::debug!(broker_id, %peer, error = %err, "mock broker refused a forwarded connection");
            return;
        }
    };
    // Kafka requests are small and latency-bound.
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut broker).await {
        Ok((up, down)) => {
            tracing::trace!(broker_id, %peer, bytes_up = up, bytes_down = down, "mock connection closed")
        }
        Err(err) => tracing::trace!(broker_id, %peer, error = %err, "mock connection failed"),
    }
}

/// `s` as a C string, or [`Error::InvalidArgument`] naming `what` if it holds a NUL.
fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("NUL byte in the {what} {s:?}")))
}

/// `d` in whole milliseconds as an `i32`, or [`Error::InvalidArgument`] naming `what`.
fn millis_i32(what: &str, d: Duration) -> Result<i32> {
    i32::try_from(d.as_millis())
        .map_err(|_| Error::InvalidArgument(format!("{what} of {d:?} is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::Future;
    use std::time::Instant;

    use crate::sys::rd_kafka_resp_err_t as E;

    fn code(err: E) -> ErrorCode {
        ErrorCode::from(err)
    }

    #[test]
    fn three_broker_cluster() {
        let cluster = MockCluster::new(3).unwrap();
        let servers = cluster.bootstrap_servers();
        let entries: Vec<&str> = servers.split(',').collect();
        assert_eq!(entries.len(), 3, "{servers}");
        for entry in &entries {
            assert!(entry.starts_with("127.0.0.1:"), "{servers}");
        }
        assert_eq!(cluster.broker_count(), 3);
        assert_eq!(cluster.broker_ids(), 1..=3);
        let addrs: Vec<String> = cluster
            .broker_addresses()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(addrs, entries);
        assert!(format!("{cluster:?}").contains(&servers));

        cluster.create_topic("t", 4, 3).unwrap();
        let err = cluster.create_topic("t", 4, 3).unwrap_err();
        assert_eq!(
            err.code(),
            Some(code(E::RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS))
        );

        cluster.set_broker_down(2).unwrap();
        cluster.set_broker_up(2).unwrap();
        cluster.set_broker_down(MockCluster::ALL_BROKERS).unwrap();
        cluster.set_broker_up(MockCluster::ALL_BROKERS).unwrap();
        cluster
            .set_broker_rtt(1, Duration::from_millis(20))
            .unwrap();
        cluster.set_broker_rtt(1, Duration::ZERO).unwrap();
        cluster.set_partition_leader("t", 0, 3).unwrap();
        cluster.set_partition_leader("t", 1, -1).unwrap();
        cluster
            .set_coordinator(CoordinatorType::Group, "g", 2)
            .unwrap();
        cluster
            .set_coordinator(CoordinatorType::Transaction, "tx", 1)
            .unwrap();
        cluster
            .set_topic_error("t", code(E::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE))
            .unwrap();
        cluster
            .set_topic_error("t", code(E::RD_KAFKA_RESP_ERR_NO_ERROR))
            .unwrap();
        cluster
            .set_group_initial_rebalance_delay(Duration::from_millis(10))
            .unwrap();
        cluster
            .set_broker_advertised_address(3, "localhost", 9999)
            .unwrap();
    }

    #[test]
    fn out_of_range_arguments_are_errors() {
        let cluster = MockCluster::new(3).unwrap();
        for id in [0, 4, 99, -2] {
            assert!(cluster.set_broker_down(id).is_err(), "down {id}");
            assert!(cluster.set_broker_up(id).is_err(), "up {id}");
            assert!(
                cluster
                    .set_broker_rtt(id, Duration::from_millis(1))
                    .is_err(),
                "rtt {id}"
            );
            assert!(matches!(
                cluster.set_broker_advertised_address(id, "h", 1),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(cluster.set_partition_leader("t", 0, 4).is_err());
        assert!(matches!(
            cluster.set_partition_leader("t", -1, 1),
            Err(Error::InvalidArgument(_))
        ));
        cluster.create_topic("two", 2, 1).unwrap();
        let err = cluster.set_partition_leader("two", 2, 1).unwrap_err();
        assert_eq!(
            err.code(),
            Some(code(E::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART))
        );
        assert!(matches!(
            cluster.create_topic("zero", 0, 1),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            cluster.create_topic("zero", 1, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            cluster.create_topic("a\0b", 1, 1),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            cluster.set_broker_rtt(1, Duration::from_secs(u64::MAX)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            MockCluster::new(0),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn request_errors() {
        let cluster = MockCluster::new(2).unwrap();
        let timeout = code(E::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
        cluster.push_request_errors(api_key::PRODUCE, &[timeout, timeout]);
        cluster.push_request_errors(api_key::PRODUCE, &[]);
        cluster.clear_request_errors(api_key::PRODUCE);

        assert_eq!(
            cluster.broker_error_stack_count(1, api_key::FETCH).unwrap(),
            0
        );
        cluster
            .push_broker_request_error_rtts(
                1,
                api_key::FETCH,
                &[
                    (timeout, Duration::from_millis(5)),
                    (code(E::RD_KAFKA_RESP_ERR_NO_ERROR), Duration::ZERO),
                ],
            )
            .unwrap();
        assert_eq!(
            cluster.broker_error_stack_count(1, api_key::FETCH).unwrap(),
            2
        );
        assert_eq!(
            cluster.broker_error_stack_count(2, api_key::FETCH).unwrap(),
            0
        );
        let err = cluster
            .push_broker_request_error_rtts(3, api_key::FETCH, &[])
            .unwrap_err();
        assert_eq!(err.code(), Some(code(E::RD_KAFKA_RESP_ERR__UNKNOWN_BROKER)));
        assert!(cluster
            .push_broker_request_error_rtts(3, api_key::FETCH, &[(timeout, Duration::ZERO)])
            .is_err());
    }

    /// The brokers (id, host, port) that a client bootstrapped with `servers` is told
    /// about; blocks (up to a generous deadline) until a broker answers.
    fn metadata_brokers(servers: &str) -> Vec<(i32, String, u16)> {
        let conf = ClientConfig::new()
            .bootstrap_servers(servers)
            .set("log_level", "3")
            .to_native()
            .unwrap();
        let mut errstr = [0 as c_char; 512];
        // SAFETY: valid conf and errstr; ownership of conf passes on success.
        let rk = unsafe {
            sys::rd_kafka_new(
                sys::rd_kafka_type_t::RD_KAFKA_PRODUCER,
                conf.ptr(),
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        // SAFETY: a non-null result is an owned handle.
        let rk = unsafe { NativePtr::from_ptr(rk) }.expect("rd_kafka_new");
        let _ = conf.into_raw();
        let mut md: *const sys::rd_kafka_metadata_t = std::ptr::null();
        // SAFETY: valid handle and out-pointer; no topic handle.
        let err =
            unsafe { sys::rd_kafka_metadata(rk.ptr(), 1, std::ptr::null_mut(), &mut md, 30_000) };
        Error::check(err).expect("metadata");
        // SAFETY: on success `md` is an owned metadata object.
        let md = unsafe { NativePtr::from_ptr(md.cast_mut()) }.expect("metadata");
        // SAFETY: `md` is valid and its `brokers` array holds `broker_cnt` entries.
        let brokers = unsafe {
            let md = &*md.ptr();
            std::slice::from_raw_parts(md.brokers, md.broker_cnt as usize)
        };
        let mut out: Vec<_> = brokers
            .iter()
            .map(|b| (b.id, cstr_to_string(b.host), b.port as u16))
            .collect();
        out.sort();
        out
    }

    async fn assert_advertised(listener: &MockListener) {
        // Every fixed port accepts, and the forwarded connection reaches the broker.
        for addr in listener.addresses() {
            TcpStream::connect(addr).await.unwrap();
        }
        let servers = listener.bootstrap_servers();
        let brokers = tokio::task::spawn_blocking(move || metadata_brokers(&servers))
            .await
            .unwrap();
        let expected: Vec<_> = listener
            .addresses()
            .iter()
            .enumerate()
            .map(|(i, a)| (i as i32 + 1, "127.0.0.1".to_owned(), a.port()))
            .collect();
        assert_eq!(brokers, expected);
    }

    #[tokio::test]
    async fn listen_on_any_ports_advertises_them() {
        let cluster = MockCluster::new(3).unwrap();
        let listener = cluster.listen_on(0).await.unwrap();
        assert_eq!(listener.addresses().len(), 3);
        for (fixed, real) in listener.addresses().iter().zip(cluster.broker_addresses()) {
            assert_ne!(fixed, real);
        }
        assert_advertised(&listener).await;
    }

    #[tokio::test]
    async fn listen_on_a_given_port() {
        let cluster = MockCluster::new(2).unwrap();
        // Pick two consecutive free ports; another process may take them in between,
        // so retry with other ports.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, listener) = loop {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            drop(probe);
            if port < u16::MAX {
                if let Ok(listener) = cluster.listen_on(port).await {
                    break (port, listener);
                }
            }
            assert!(Instant::now() < deadline, "no two consecutive free ports");
        };
        let ports: Vec<u16> = listener.addresses().iter().map(|a| a.port()).collect();
        assert_eq!(ports, [port, port + 1]);
        assert_eq!(
            listener.bootstrap_servers(),
            format!("127.0.0.1:{port},127.0.0.1:{}", port + 1)
        );
        assert_advertised(&listener).await;

        // A port that is taken is a clear error.
        let err = cluster.listen_on(port).await.unwrap_err();
        assert!(
            matches!(err, Error::Io(ref m) if m.contains(&port.to_string())),
            "{err}"
        );
        drop(listener);
        // Dropping the listener frees the ports.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match cluster.listen_on(port).await {
                Ok(_) => break,
                Err(err) => assert!(Instant::now() < deadline, "ports not released: {err}"),
            }
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            cluster.listen_on(u16::MAX).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn listen_on_needs_a_runtime() {
        let cluster = MockCluster::new(1).unwrap();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(cluster.listen_on(0));
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Err(Error::NoRuntime)) => {}
            other => panic!("expected NoRuntime, got {other:?}"),
        }
    }
}
