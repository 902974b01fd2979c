//! The admin client: create and delete topics, describe configurations, read cluster
//! metadata.
//!
//! Admin requests are librdkafka admin operations whose answers arrive as events on the
//! client's reply queue, like every other answer in this crate: nothing blocks a runtime
//! worker, and each call is bounded by [`AdminOptions::request_timeout`] (librdkafka
//! answers `_TIMED_OUT` when it passes). Metadata is the exception: librdkafka's only
//! complete form of it is blocking, so [`Admin::metadata`] runs on tokio's blocking pool.
//!
//! ```no_run
//! use std::time::Duration;
//! use rdkafka_async::admin::{AdminOptions, NewTopic};
//! use rdkafka_async::{Admin, ClientConfig};
//!
//! # async fn demo() -> rdkafka_async::Result<()> {
//! let admin = Admin::new(ClientConfig::new().bootstrap_servers("localhost:9092"))?;
//! let opts = AdminOptions::new().request_timeout(Duration::from_secs(10));
//! let topics = [NewTopic::new("words", 8).replication(3).config("cleanup.policy", "compact")];
//! for result in admin.create_topics(&topics, &opts).await? {
//!     result.result?;
//! }
//! let metadata = admin.metadata(Some("words"), Duration::from_secs(5)).await?;
//! assert_eq!(metadata.topics[0].partitions.len(), 8);
//! # Ok(()) }
//! ```

use std::ffi::{c_char, c_int};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{Client, Kind, OpFuture};
use crate::config::ClientConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::native::{cstr_to_string, NativePtr};
use crate::queue::Event;
use crate::sys;

use sys::rd_kafka_admin_op_t as AdminOp;

// librdkafka copies these values from broker answers without checking them against its
// enums (an `int16`/`int8` stored in an enum-typed field), while rdkafka-sys binds the
// return types as Rust enums, for which an unknown value would be undefined behaviour.
// Declared here with the C enums' ABI type, `int`, and converted with a check.
extern "C" {
    #[link_name = "rd_kafka_topic_result_error"]
    fn topic_result_error_raw(result: *const sys::rd_kafka_topic_result_t) -> c_int;
    #[link_name = "rd_kafka_ConfigResource_error"]
    fn config_resource_error_raw(resource: *const sys::rd_kafka_ConfigResource_t) -> c_int;
    #[link_name = "rd_kafka_ConfigEntry_source"]
    fn config_entry_source_raw(entry: *const sys::rd_kafka_ConfigEntry_t) -> c_int;
    #[link_name = "rd_kafka_event_error"]
    fn event_error_raw(event: *mut sys::rd_kafka_event_t) -> c_int;
}

/// Options shared by the admin requests.
///
/// `None` leaves librdkafka's default: the request timeout is `socket.timeout.ms`
/// (60 s unless configured), and so is the operation timeout.
///
/// ```
/// use std::time::Duration;
/// let opts = rdkafka_async::admin::AdminOptions::new()
///     .request_timeout(Duration::from_secs(5))
///     .validate_only(true);
/// assert_eq!(opts.request_timeout, Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminOptions {
    /// How long the whole request may take, from the call to the answer (at most one
    /// hour): finding the broker to ask, sending, and waiting for its reply. When it
    /// passes the call fails with `_TIMED_OUT`.
    pub request_timeout: Option<Duration>,
    /// How long the broker waits for the operation to finish on the whole cluster before
    /// answering (create and delete topics only; other calls ignore it). Zero answers as
    /// soon as the controller accepted the request.
    pub operation_timeout: Option<Duration>,
    /// Only check that the request would succeed, change nothing (create topics only;
    /// other calls ignore it).
    pub validate_only: bool,
}

impl AdminOptions {
    /// librdkafka's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets [`operation_timeout`](Self::operation_timeout).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Sets [`validate_only`](Self::validate_only).
    pub fn validate_only(mut self, validate_only: bool) -> Self {
        self.validate_only = validate_only;
        self
    }

    /// librdkafka options for `api`, answering with `opaque`. Options that `api` does not
    /// take are left out.
    fn to_native(
        &self,
        rk: *mut sys::rd_kafka_t,
        api: AdminOp,
        opaque: *mut std::ffi::c_void,
    ) -> Result<NativePtr<sys::rd_kafka_AdminOptions_t>> {
        // SAFETY: valid handle; the options object is new and ours.
        let options = unsafe { NativePtr::from_ptr(sys::rd_kafka_AdminOptions_new(rk, api)) }
            .ok_or_else(|| Error::InvalidArgument(format!("no admin options for {api:?}")))?;
        let mut errstr = [0 as c_char; 512];
        let check = |what: &str, err: sys::rd_kafka_resp_err_t, errstr: &[c_char]| {
            if err == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "admin option {what}: {}",
                    cstr_to_string(errstr.as_ptr())
                )))
            }
        };
        if let Some(timeout) = self.request_timeout {
            // SAFETY: valid options; `errstr`'s length is passed.
            let err = unsafe {
                sys::rd_kafka_AdminOptions_set_request_timeout(
                    options.ptr(),
                    millis(timeout),
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            };
            check("request_timeout", err, &errstr)?;
        }
        let takes_operation_timeout = matches!(
            api,
            AdminOp::RD_KAFKA_ADMIN_OP_CREATETOPICS | AdminOp::RD_KAFKA_ADMIN_OP_DELETETOPICS
        );
        if let (Some(timeout), true) = (self.operation_timeout, takes_operation_timeout) {
            // SAFETY: valid options, and `api` takes an operation timeout.
            let err = unsafe {
                sys::rd_kafka_AdminOptions_set_operation_timeout(
                    options.ptr(),
                    millis(timeout),
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            };
            check("operation_timeout", err, &errstr)?;
        }
        if self.validate_only && api == AdminOp::RD_KAFKA_ADMIN_OP_CREATETOPICS {
            // SAFETY: valid options, and `api` takes validate_only.
            let err = unsafe {
                sys::rd_kafka_AdminOptions_set_validate_only(
                    options.ptr(),
                    1,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            };
            check("validate_only", err, &errstr)?;
        }
        // SAFETY: valid options; the opaque is an integer that librdkafka only hands back.
        unsafe { sys::rd_kafka_AdminOptions_set_opaque(options.ptr(), opaque) };
        Ok(options)
    }
}

/// A topic to create with [`Admin::create_topics`].
///
/// ```
/// use rdkafka_async::admin::NewTopic;
/// let topic = NewTopic::new("orders", 8).replication(3).config("cleanup.policy", "compact");
/// assert_eq!(topic.replication, 3);
/// assert_eq!(topic.config, [("cleanup.policy".to_owned(), "compact".to_owned())]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic's name.
    pub name: String,
    /// Number of partitions; -1 for the broker's default (`num.partitions`).
    pub partitions: i32,
    /// Replication factor; -1 (the default) for the broker's `default.replication.factor`.
    pub replication: i32,
    /// Topic configuration, e.g. `("cleanup.policy", "compact")`.
    pub config: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic of `partitions` partitions with the broker's default replication factor.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: -1,
            config: Vec::new(),
        }
    }

    /// Sets the replication factor.
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication;
        self
    }

    /// Adds a topic configuration entry.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    fn to_native(&self) -> Result<NativePtr<sys::rd_kafka_NewTopic_t>> {
        // librdkafka passes 0 on to the broker, which refuses it.
        if self.partitions == 0 || self.replication == 0 {
            return Err(Error::InvalidArgument(format!(
                "topic `{}`: partitions ({}) and replication ({}) must be -1 or at least 1",
                self.name, self.partitions, self.replication
            )));
        }
        let name = Client::cstring(&self.name)?;
        let mut errstr = [0 as c_char; 512];
        // SAFETY: valid string; `errstr`'s length is passed; the name is copied.
        let ptr = unsafe {
            sys::rd_kafka_NewTopic_new(
                name.as_ptr(),
                self.partitions,
                self.replication,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        // SAFETY: a non-null result is a new object that we own.
        let topic = unsafe { NativePtr::from_ptr(ptr) }.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "topic `{}`: {}",
                self.name,
                cstr_to_string(errstr.as_ptr())
            ))
        })?;
        for (key, value) in &self.config {
            let (k, v) = (Client::cstring(key)?, Client::cstring(value)?);
            // SAFETY: valid topic and strings; both strings are copied.
            let err =
                unsafe { sys::rd_kafka_NewTopic_set_config(topic.ptr(), k.as_ptr(), v.as_ptr()) };
            Error::check(err).map_err(|e| {
                Error::InvalidArgument(format!("topic `{}`: config `{key}`: {e}", self.name))
            })?;
        }
        Ok(topic)
    }
}

/// The outcome of one topic of [`Admin::create_topics`] or [`Admin::delete_topics`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TopicResult {
    /// The topic.
    pub name: String,
    /// What the broker answered for this topic.
    pub result: Result<()>,
}

/// A resource whose configuration [`Admin::describe_configs`] reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceSpec {
    /// A topic, by name.
    Topic(String),
    /// A broker, by id.
    Broker(i32),
}

impl ResourceSpec {
    /// A topic resource.
    pub fn topic(name: impl Into<String>) -> Self {
        Self::Topic(name.into())
    }

    fn to_native(&self) -> Result<NativePtr<sys::rd_kafka_ConfigResource_t>> {
        let (kind, name) = match self {
            Self::Topic(name) => (
                sys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
                Client::cstring(name)?,
            ),
            Self::Broker(id) => (
                sys::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_BROKER,
                Client::cstring(&id.to_string())?,
            ),
        };
        // SAFETY: valid type and string; the name is copied.
        let ptr = unsafe { sys::rd_kafka_ConfigResource_new(kind, name.as_ptr()) };
        // SAFETY: a non-null result is a new object that we own.
        unsafe { NativePtr::from_ptr(ptr) }
            .ok_or_else(|| Error::InvalidArgument(format!("config resource {self:?}")))
    }
}

/// Where a configuration value comes from (Kafka's `ConfigSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigSource {
    /// Not reported by the broker (old brokers), or a source this crate does not know.
    Unknown,
    /// Set on this topic.
    DynamicTopic,
    /// Set dynamically on this broker.
    DynamicBroker,
    /// Set dynamically as the default of every broker.
    DynamicDefaultBroker,
    /// From the broker's configuration file.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    /// Set on a consumer group.
    Group,
}

impl ConfigSource {
    fn from_raw(raw: c_int) -> Self {
        use sys::rd_kafka_ConfigSource_t::*;
        match raw {
            x if x == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG as c_int => Self::DynamicTopic,
            x if x == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_BROKER_CONFIG as c_int => Self::DynamicBroker,
            x if x == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG as c_int => {
                Self::DynamicDefaultBroker
            }
            x if x == RD_KAFKA_CONFIG_SOURCE_STATIC_BROKER_CONFIG as c_int => Self::StaticBroker,
            x if x == RD_KAFKA_CONFIG_SOURCE_DEFAULT_CONFIG as c_int => Self::Default,
            x if x == RD_KAFKA_CONFIG_SOURCE_GROUP_CONFIG as c_int => Self::Group,
            _ => Self::Unknown,
        }
    }
}

/// One configuration entry of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigEntry {
    /// The property name, e.g. `cleanup.policy`.
    pub name: String,
    /// The value; `None` when unset or hidden (sensitive).
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: ConfigSource,
    /// The value is the default.
    pub is_default: bool,
    /// The value cannot be changed.
    pub read_only: bool,
    /// The value is a secret (the broker does not send it).
    pub sensitive: bool,
}

/// The configuration of one resource asked for with [`Admin::describe_configs`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConfigResourceResult {
    /// The resource, as asked for.
    pub resource: ResourceSpec,
    /// Its entries, or why the broker did not describe it.
    pub result: Result<Vec<ConfigEntry>>,
}

impl ConfigResourceResult {
    /// The entry called `name`, if the resource was described and has it.
    pub fn get(&self, name: &str) -> Option<&ConfigEntry> {
        self.result.as_ref().ok()?.iter().find(|e| e.name == name)
    }
}

/// Cluster metadata: the brokers, and the topics asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The broker that answered.
    pub orig_broker_id: i32,
    /// Its name (`host:port/id`).
    pub orig_broker_name: String,
    /// The brokers that are up.
    pub brokers: Vec<BrokerMetadata>,
    /// The topics.
    pub topics: Vec<TopicMetadata>,
}

impl Metadata {
    /// The topic called `name`, if it is in the answer.
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The broker with id `id`, if it is in the answer.
    pub fn broker(&self, id: i32) -> Option<&BrokerMetadata> {
        self.brokers.iter().find(|b| b.id == id)
    }
}

/// A broker in [`Metadata`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BrokerMetadata {
    /// The broker id.
    pub id: i32,
    /// Its advertised host.
    pub host: String,
    /// Its advertised port.
    pub port: u16,
}

/// A topic in [`Metadata`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicMetadata {
    /// The topic's name.
    pub name: String,
    /// Its partitions, in the broker's order.
    pub partitions: Vec<PartitionMetadata>,
    /// The broker's error for the topic, e.g. `UNKNOWN_TOPIC_OR_PART`.
    pub error: Option<ErrorCode>,
}

/// A partition in [`Metadata`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetadata {
    /// The partition number.
    pub id: i32,
    /// The leader's broker id (-1 if none).
    pub leader: i32,
    /// The brokers holding a replica.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isrs: Vec<i32>,
    /// The broker's error for the partition, e.g. `LEADER_NOT_AVAILABLE`.
    pub error: Option<ErrorCode>,
}

/// An admin client: topics, configurations, metadata; every call is asynchronous.
///
/// Answers arrive on the client's reply queue, drained by its driver task; a call blocks
/// no runtime worker, and ends by [`AdminOptions::request_timeout`] at the latest.
#[derive(Debug)]
pub struct Admin {
    client: Arc<Client>,
}

impl Admin {
    /// Creates an admin client. Must be called inside a tokio runtime.
    ///
    /// Unless `config` sets `allow.auto.create.topics`, it is turned off: asking for the
    /// metadata of a missing topic then reports `UNKNOWN_TOPIC_OR_PART` instead of
    /// creating the topic on brokers that auto-create (librdkafka's producer default,
    /// which an admin client otherwise inherits).
    pub fn new(config: ClientConfig) -> Result<Self> {
        let config = if config.get("allow.auto.create.topics").is_some() {
            config
        } else {
            config.set("allow.auto.create.topics", "false")
        };
        Ok(Self {
            client: Client::new(Kind::Admin, &config, 0)?,
        })
    }

    /// Creates topics; one result per topic, in the order given.
    ///
    /// The call fails as a whole (`Err`) when the request could not be answered, e.g.
    /// `_TIMED_OUT` when no controller was found within the request timeout; otherwise
    /// each topic's [`TopicResult::result`] says whether it was created.
    ///
    /// Cancel safety: dropping the future abandons the wait, not the request: the topics
    /// may still be created, and the answer is discarded.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        opts: &AdminOptions,
    ) -> Result<Vec<TopicResult>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let op = self.start_create_topics(topics, opts)?;
        let event = answer(op, sys::RD_KAFKA_EVENT_CREATETOPICS_RESULT, "CreateTopics").await?;
        let mut cnt = 0;
        // SAFETY: a CREATETOPICS_RESULT event; the array lives as long as the event.
        let items = unsafe {
            let result = sys::rd_kafka_event_CreateTopics_result(event.ptr());
            array(
                sys::rd_kafka_CreateTopics_result_topics(result, &mut cnt),
                cnt,
            )
        };
        Ok(topic_results(items, topics.iter().map(|t| t.name.as_str())))
    }

    fn start_create_topics(&self, topics: &[NewTopic], opts: &AdminOptions) -> Result<OpFuture> {
        unique(topics.iter().map(|t| t.name.as_str()))?;
        let natives = topics
            .iter()
            .map(NewTopic::to_native)
            .collect::<Result<Vec<_>>>()?;
        let mut ptrs: Vec<_> = natives.iter().map(NativePtr::ptr).collect();
        self.start(
            AdminOp::RD_KAFKA_ADMIN_OP_CREATETOPICS,
            opts,
            |rk, options, queue| {
                // SAFETY: valid handle, topics, options and queue; librdkafka copies the
                // topics and the options, which are freed when this function returns.
                unsafe {
                    sys::rd_kafka_CreateTopics(rk, ptrs.as_mut_ptr(), ptrs.len(), options, queue)
                }
            },
        )
    }

    /// Deletes topics; one result per topic, in the order given.
    ///
    /// Fails as a whole as [`Admin::create_topics`] does.
    ///
    /// Cancel safety: dropping the future abandons the wait, not the request: the topics
    /// may still be deleted, and the answer is discarded.
    pub async fn delete_topics(
        &self,
        names: &[&str],
        opts: &AdminOptions,
    ) -> Result<Vec<TopicResult>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let op = self.start_delete_topics(names, opts)?;
        let event = answer(op, sys::RD_KAFKA_EVENT_DELETETOPICS_RESULT, "DeleteTopics").await?;
        let mut cnt = 0;
        // SAFETY: a DELETETOPICS_RESULT event; the array lives as long as the event.
        let items = unsafe {
            let result = sys::rd_kafka_event_DeleteTopics_result(event.ptr());
            array(
                sys::rd_kafka_DeleteTopics_result_topics(result, &mut cnt),
                cnt,
            )
        };
        Ok(topic_results(items, names.iter().copied()))
    }

    fn start_delete_topics(&self, names: &[&str], opts: &AdminOptions) -> Result<OpFuture> {
        unique(names.iter().copied())?;
        let natives = names
            .iter()
            .map(|name| {
                let name = Client::cstring(name)?;
                // SAFETY: valid string, copied; a non-null result is a new object we own.
                unsafe { NativePtr::from_ptr(sys::rd_kafka_DeleteTopic_new(name.as_ptr())) }
                    .ok_or_else(|| Error::InvalidArgument(format!("topic {name:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ptrs: Vec<_> = natives.iter().map(NativePtr::ptr).collect();
        self.start(
            AdminOp::RD_KAFKA_ADMIN_OP_DELETETOPICS,
            opts,
            |rk, options, queue| {
                // SAFETY: valid handle, topics, options and queue; librdkafka copies the
                // topics and the options, which are freed when this function returns.
                unsafe {
                    sys::rd_kafka_DeleteTopics(rk, ptrs.as_mut_ptr(), ptrs.len(), options, queue)
                }
            },
        )
    }

    /// Reads the configuration of topics and brokers; one result per resource, in the
    /// order given.
    ///
    /// librdkafka sends a request naming a broker to that broker and one naming only
    /// topics to the controller, and takes at most one broker per request; so this sends
    /// one request for all the topics and one per broker, concurrently. When a request
    /// fails as a whole, its resources carry its error; `Err` is returned only for
    /// invalid arguments.
    ///
    /// Cancel safety: dropping the future abandons the wait (the requests only read).
    pub async fn describe_configs(
        &self,
        resources: &[ResourceSpec],
        opts: &AdminOptions,
    ) -> Result<Vec<ConfigResourceResult>> {
        // Groups of indexes into `resources`: all topics, then each broker alone.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let topics: Vec<usize> = (0..resources.len())
            .filter(|&i| !matches!(resources[i], ResourceSpec::Broker(_)))
            .collect();
        if !topics.is_empty() {
            groups.push(topics);
        }
        groups.extend(
            (0..resources.len())
                .filter(|&i| matches!(resources[i], ResourceSpec::Broker(_)))
                .map(|i| vec![i]),
        );
        // Start every request before awaiting any, so that they run concurrently.
        let ops = groups
            .iter()
            .map(|group| {
                let group: Vec<&ResourceSpec> = group.iter().map(|&i| &resources[i]).collect();
                self.start_describe_configs(&group, opts)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut results: Vec<Option<Result<Vec<ConfigEntry>>>> = vec![None; resources.len()];
        for (group, op) in groups.iter().zip(ops) {
            match answer(
                op,
                sys::RD_KAFKA_EVENT_DESCRIBECONFIGS_RESULT,
                "DescribeConfigs",
            )
            .await
            {
                Ok(event) => {
                    let mut cnt = 0;
                    // SAFETY: a DESCRIBECONFIGS_RESULT event; the array lives as long as
                    // the event.
                    let items = unsafe {
                        let result = sys::rd_kafka_event_DescribeConfigs_result(event.ptr());
                        array(
                            sys::rd_kafka_DescribeConfigs_result_resources(result, &mut cnt),
                            cnt,
                        )
                    };
                    // librdkafka puts the answers in the order of the request.
                    for (n, &i) in group.iter().enumerate() {
                        results[i] = Some(match items.get(n) {
                            // SAFETY: a resource of the event, alive as long as it.
                            Some(&item) if !item.is_null() => unsafe { config_resource(item) },
                            _ => Err(missing_answer("DescribeConfigs")),
                        });
                    }
                }
                Err(err) => {
                    for &i in group {
                        results[i] = Some(Err(err.clone()));
                    }
                }
            }
        }
        Ok(resources
            .iter()
            .zip(results)
            .map(|(resource, result)| ConfigResourceResult {
                resource: resource.clone(),
                result: result.unwrap_or_else(|| Err(missing_answer("DescribeConfigs"))),
            })
            .collect())
    }

    fn start_describe_configs(
        &self,
        resources: &[&ResourceSpec],
        opts: &AdminOptions,
    ) -> Result<OpFuture> {
        let natives = resources
            .iter()
            .map(|r| r.to_native())
            .collect::<Result<Vec<_>>>()?;
        let mut ptrs: Vec<_> = natives.iter().map(NativePtr::ptr).collect();
        self.start(
            AdminOp::RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS,
            opts,
            |rk, options, queue| {
                // SAFETY: valid handle, resources, options and queue; librdkafka copies the
                // resources and the options, which are freed when this function returns.
                unsafe {
                    sys::rd_kafka_DescribeConfigs(rk, ptrs.as_mut_ptr(), ptrs.len(), options, queue)
                }
            },
        )
    }

    /// The cluster's brokers and the metadata of `topic`, or of every topic (`None`).
    ///
    /// A missing topic is not an error of the call: its [`TopicMetadata::error`] is
    /// `UNKNOWN_TOPIC_OR_PART`. `Err` means no broker answered within `timeout` (or
    /// `topic` holds a NUL byte).
    ///
    /// This runs `rd_kafka_metadata`, which blocks, on tokio's blocking pool: librdkafka's
    /// asynchronous alternatives cannot replace it. `rd_kafka_DescribeTopics` takes a
    /// list of names (no "all topics") and returns no broker list, and
    /// `rd_kafka_DescribeCluster` sends DescribeCluster (API key 60), which the mock
    /// cluster does not implement; and librdkafka sends both to the controller, which the
    /// mock cluster does not report, so on it both fail with `_TIMED_OUT` ("Failed while
    /// waiting for controller"; see the tests). Metadata must work on the mock.
    ///
    /// Cancel safety: dropping the future abandons the wait; the blocking call still runs
    /// to its end (at most `timeout`) and its answer is discarded.
    pub async fn metadata(&self, topic: Option<&str>, timeout: Duration) -> Result<Metadata> {
        let client = self.client.clone();
        let topic = topic.map(Client::cstring).transpose()?;
        let timeout_ms = millis(timeout);
        // `rd_kafka_metadata` blocks: run it on the blocking pool (see above).
        tokio::task::spawn_blocking(move || fetch_metadata(&client, topic.as_deref(), timeout_ms))
            .await
            .map_err(|e| Error::Io(format!("metadata task failed: {e}")))?
    }

    /// Builds the options of `api` carrying a new operation's opaque, and calls `call`
    /// (the C function that starts the request) with the handle, the options and the
    /// reply queue. librdkafka's admin calls never refuse: errors come as the answer.
    fn start(
        &self,
        api: AdminOp,
        opts: &AdminOptions,
        call: impl FnOnce(
            *mut sys::rd_kafka_t,
            *const sys::rd_kafka_AdminOptions_t,
            *mut sys::rd_kafka_queue_t,
        ),
    ) -> Result<OpFuture> {
        let op = self.client.start_op();
        let options = match opts.to_native(self.client.ptr(), api, op.opaque()) {
            Ok(options) => options,
            Err(err) => {
                op.cancel();
                return Err(err);
            }
        };
        call(self.client.ptr(), options.ptr(), self.client.reply_queue());
        Ok(op)
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.client.release();
    }
}

/// `rd_kafka_metadata` for `topic` (all topics if `None`); blocks up to `timeout_ms`.
fn fetch_metadata(
    client: &Client,
    topic: Option<&std::ffi::CStr>,
    timeout_ms: c_int,
) -> Result<Metadata> {
    let rkt = match topic {
        Some(name) => {
            // SAFETY: valid handle and name; the result is a new reference on the
            // client's topic object, ours to release.
            let ptr = unsafe {
                sys::rd_kafka_topic_new(client.ptr(), name.as_ptr(), std::ptr::null_mut())
            };
            // SAFETY: as above; `NativePtr` releases it with `rd_kafka_topic_destroy`.
            let rkt = unsafe { NativePtr::from_ptr(ptr) };
            Some(rkt.ok_or_else(|| Error::InvalidArgument(format!("topic {name:?}")))?)
        }
        None => None,
    };
    let mut md: *const sys::rd_kafka_metadata_t = std::ptr::null();
    // SAFETY: valid handle, topic handle (or null with all topics) and out-pointer; the
    // caller runs this off the runtime's workers.
    let err = unsafe {
        sys::rd_kafka_metadata(
            client.ptr(),
            c_int::from(rkt.is_none()),
            rkt.as_ref().map_or(std::ptr::null_mut(), NativePtr::ptr),
            &mut md,
            timeout_ms,
        )
    };
    Error::check(err)?;
    // SAFETY: on success `md` is a metadata object that we own.
    let md =
        unsafe { NativePtr::from_ptr(md.cast_mut()) }.ok_or_else(|| missing_answer("Metadata"))?;
    // SAFETY: a valid metadata object, read while we hold it.
    Ok(unsafe { metadata_from_native(md.ptr()) })
}

/// Awaits the answer of an admin operation: the event, if it has the expected type and
/// no request-level error.
///
/// The error is read here rather than with `Event::error`, which also asks
/// `rd_kafka_event_error_is_fatal`: that reads the union member of error events, which
/// for an admin result holds unrelated bytes. An admin answer is never fatal.
async fn answer(op: OpFuture, kind: i32, what: &str) -> Result<Event> {
    let event = op.await?;
    // SAFETY: a valid event, alive while we hold it.
    let code = code_from_raw(unsafe { event_error_raw(event.ptr()) });
    if !code.is_ok() {
        // SAFETY: as above; the string is copied.
        return Err(broker_error(code, unsafe {
            sys::rd_kafka_event_error_string(event.ptr())
        }));
    }
    if event.kind() != kind {
        return Err(Error::Kafka {
            code: ErrorCode::from(sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FAIL),
            message: format!("{what}: unexpected answer (event type {})", event.kind()),
            fatal: false,
            retriable: false,
        });
    }
    Ok(event)
}

/// The error for a resource that an answer left out.
fn missing_answer(what: &str) -> Error {
    Error::Kafka {
        code: ErrorCode::from(sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FAIL),
        message: format!("{what}: no answer for this item"),
        fatal: false,
        retriable: false,
    }
}

/// Refuses a topic named twice, which brokers refuse too (librdkafka does not check).
fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(Error::InvalidArgument(format!(
                "topic `{name}` is named twice"
            )));
        }
    }
    Ok(())
}

/// Milliseconds for librdkafka's `int` timeouts (saturating).
fn millis(d: Duration) -> c_int {
    d.as_millis().try_into().unwrap_or(c_int::MAX)
}

/// An error code read from a broker answer; unknown codes become `UNKNOWN` (-1).
fn code_from_raw(raw: c_int) -> ErrorCode {
    ErrorCode::from(
        sys::rd_kafka_resp_err_t::try_from(raw)
            .unwrap_or(sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_UNKNOWN),
    )
}

/// A broker error, with librdkafka's message when it has one.
fn broker_error(code: ErrorCode, message: *const c_char) -> Error {
    let message = cstr_to_string(message);
    Error::Kafka {
        code,
        message: if message.is_empty() {
            code.description()
        } else {
            message
        },
        fatal: false,
        retriable: code.is_retriable(),
    }
}

/// Borrows a C array of `cnt` pointers (null gives an empty slice).
///
/// # Safety
///
/// A non-null `ptr` must point to `cnt` pointers that live for `'a`.
unsafe fn array<'a, T>(ptr: *mut *const T, cnt: usize) -> &'a [*const T] {
    if ptr.is_null() || cnt == 0 {
        &[]
    } else {
        // SAFETY: caller contract.
        unsafe { std::slice::from_raw_parts(ptr, cnt) }
    }
}

/// Borrows a C array of `cnt` values (null or non-positive `cnt` gives an empty slice).
///
/// # Safety
///
/// A non-null `ptr` must point to `cnt` initialized values that live for `'a`.
unsafe fn values<'a, T>(ptr: *const T, cnt: c_int) -> &'a [T] {
    match usize::try_from(cnt) {
        Ok(cnt) if cnt > 0 && !ptr.is_null() => {
            // SAFETY: caller contract.
            unsafe { std::slice::from_raw_parts(ptr, cnt) }
        }
        _ => &[],
    }
}

/// One result per requested name, from the answer's topic results (in request order).
fn topic_results<'n>(
    items: &[*const sys::rd_kafka_topic_result_t],
    names: impl Iterator<Item = &'n str>,
) -> Vec<TopicResult> {
    names
        .enumerate()
        .map(|(n, name)| match items.get(n) {
            Some(&item) if !item.is_null() => {
                // SAFETY: a topic result of the event the caller holds.
                let (code, message, answered) = unsafe {
                    (
                        code_from_raw(topic_result_error_raw(item)),
                        sys::rd_kafka_topic_result_error_string(item),
                        cstr_to_string(sys::rd_kafka_topic_result_name(item)),
                    )
                };
                TopicResult {
                    name: answered,
                    result: if code.is_ok() {
                        Ok(())
                    } else {
                        Err(broker_error(code, message))
                    },
                }
            }
            _ => TopicResult {
                name: name.to_owned(),
                result: Err(missing_answer("topic")),
            },
        })
        .collect()
}

/// The entries of one described resource, or its error.
///
/// # Safety
///
/// `item` must be a resource of a DescribeConfigs result that the caller holds.
unsafe fn config_resource(item: *const sys::rd_kafka_ConfigResource_t) -> Result<Vec<ConfigEntry>> {
    // SAFETY: caller contract.
    let code = code_from_raw(unsafe { config_resource_error_raw(item) });
    if !code.is_ok() {
        // SAFETY: caller contract; the string is copied.
        return Err(broker_error(code, unsafe {
            sys::rd_kafka_ConfigResource_error_string(item)
        }));
    }
    let mut cnt = 0;
    // SAFETY: caller contract; the entries live as long as the resource.
    let entries = unsafe { array(sys::rd_kafka_ConfigResource_configs(item, &mut cnt), cnt) };
    Ok(entries
        .iter()
        .filter(|e| !e.is_null())
        .map(|&e| {
            // SAFETY: an entry of the resource; the strings are copied.
            unsafe {
                let value = sys::rd_kafka_ConfigEntry_value(e);
                ConfigEntry {
                    name: cstr_to_string(sys::rd_kafka_ConfigEntry_name(e)),
                    value: (!value.is_null()).then(|| cstr_to_string(value)),
                    source: ConfigSource::from_raw(config_entry_source_raw(e)),
                    is_default: sys::rd_kafka_ConfigEntry_is_default(e) != 0,
                    read_only: sys::rd_kafka_ConfigEntry_is_read_only(e) != 0,
                    sensitive: sys::rd_kafka_ConfigEntry_is_sensitive(e) != 0,
                }
            }
        })
        .collect())
}

/// Copies a metadata object into owned structs.
///
/// Error fields are read as integers through raw pointers: librdkafka stores the broker's
/// codes unchecked, so they may lie outside rdkafka-sys's `rd_kafka_resp_err_t`.
///
/// # Safety
///
/// `md` must be a valid metadata object that lives for the call.
unsafe fn metadata_from_native(md: *const sys::rd_kafka_metadata_t) -> Metadata {
    /// `Some` for a non-zero code.
    fn code(raw: c_int) -> Option<ErrorCode> {
        (raw != 0).then(|| code_from_raw(raw))
    }
    // SAFETY: caller contract: every array holds its count of entries, which live as long
    // as `md`; fields are read through raw places, without references to the structs, and
    // the error fields (`rd_kafka_resp_err_t`, `repr(i32)`) as `c_int`.
    unsafe {
        let brokers = values((*md).brokers.cast_const(), (*md).broker_cnt)
            .iter()
            .map(|b| BrokerMetadata {
                id: b.id,
                host: cstr_to_string(b.host),
                port: u16::try_from(b.port).unwrap_or(0),
            })
            .collect();
        let mut topics = Vec::new();
        let topic_cnt = usize::try_from((*md).topic_cnt).unwrap_or(0);
        for t in 0..topic_cnt {
            let topic = (*md).topics.add(t);
            let mut partitions = Vec::new();
            for p in 0..usize::try_from((*topic).partition_cnt).unwrap_or(0) {
                let part = (*topic).partitions.add(p);
                partitions.push(PartitionMetadata {
                    id: (*part).id,
                    leader: (*part).leader,
                    replicas: values((*part).replicas.cast_const(), (*part).replica_cnt).to_vec(),
                    isrs: values((*part).isrs.cast_const(), (*part).isr_cnt).to_vec(),
                    error: code(std::ptr::addr_of!((*part).err).cast::<c_int>().read()),
                });
            }
            topics.push(TopicMetadata {
                name: cstr_to_string((*topic).topic),
                partitions,
                error: code(std::ptr::addr_of!((*topic).err).cast::<c_int>().read()),
            });
        }
        Metadata {
            orig_broker_id: (*md).orig_broker_id,
            orig_broker_name: cstr_to_string((*md).orig_broker_name),
            brokers,
            topics,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;
    use std::time::Instant;

    use super::*;
    use crate::MockCluster;

    /// The request timeout of the calls the mock cannot answer.
    const TIMEOUT: Duration = Duration::from_secs(2);
    /// Scheduling slack on top of [`TIMEOUT`].
    const SLACK: Duration = Duration::from_secs(3);

    fn code(err: &Error) -> sys::rd_kafka_resp_err_t {
        err.code().expect("a librdkafka error").raw()
    }

    /// Runs `fut` with a guard against hanging; returns its output and how long it took.
    async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
        let start = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("the admin call did not resolve");
        (out, start.elapsed())
    }

    /// A 3-broker mock with topic `t` (4 partitions, 2 replicas) and an admin client.
    fn setup() -> (MockCluster, Admin) {
        let cluster = MockCluster::new(3).unwrap();
        cluster.create_topic("t", 4, 2).unwrap();
        let admin =
            Admin::new(ClientConfig::new().bootstrap_servers(cluster.bootstrap_servers())).unwrap();
        (cluster, admin)
    }

    fn short() -> AdminOptions {
        AdminOptions::new().request_timeout(TIMEOUT)
    }

    #[tokio::test]
    async fn metadata_of_one_topic() {
        let (cluster, admin) = setup();
        let (md, _) = timed(admin.metadata(Some("t"), Duration::from_secs(10))).await;
        let md = md.unwrap();

        let mut brokers: Vec<_> = md.brokers.iter().map(|b| (b.id, b.port)).collect();
        brokers.sort();
        let expected: Vec<_> = cluster
            .broker_ids()
            .zip(cluster.broker_addresses().iter().map(|a| a.port()))
            .collect();
        assert_eq!(brokers, expected);

        assert_eq!(md.topics.len(), 1);
        let topic = md.topic("t").unwrap();
        assert_eq!(topic.error, None);
        assert_eq!(topic.partitions.len(), 4);
        for (i, p) in topic.partitions.iter().enumerate() {
            assert_eq!(p.id, i as i32);
            assert_eq!(p.error, None);
            assert!(
                cluster.broker_ids().contains(&p.leader),
                "leader {} of partition {i}",
                p.leader
            );
            assert!(md.broker(p.leader).is_some());
            assert_eq!(p.replicas.len(), 2);
            assert!(p.replicas.contains(&p.leader));
            assert!(!p.isrs.is_empty() && p.isrs.iter().all(|r| p.replicas.contains(r)));
        }
        assert_eq!(admin.client.ops.len(), 0);
    }

    #[tokio::test]
    async fn metadata_of_all_topics() {
        let (cluster, admin) = setup();
        cluster.create_topic("u", 2, 1).unwrap();
        let (md, _) = timed(admin.metadata(None, Duration::from_secs(10))).await;
        let md = md.unwrap();
        let mut topics: Vec<_> = md
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions.len(), t.error))
            .collect();
        topics.sort_by_key(|t| t.0);
        assert_eq!(topics, [("t", 4, None), ("u", 2, None)]);
        assert_eq!(md.brokers.len(), 3);
    }

    #[tokio::test]
    async fn metadata_of_a_missing_topic_does_not_create_it() {
        let (cluster, admin) = setup();
        let (md, _) = timed(admin.metadata(Some("ghost"), Duration::from_secs(10))).await;
        let ghost = md.unwrap().topic("ghost").cloned().unwrap();
        assert_eq!(
            ghost.error.map(ErrorCode::raw),
            Some(sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        );
        assert!(ghost.partitions.is_empty());
        let (md, _) = timed(admin.metadata(None, Duration::from_secs(10))).await;
        assert!(md.unwrap().topic("ghost").is_none());

        // A configured `allow.auto.create.topics` is kept: the mock then creates the topic.
        let config = ClientConfig::new()
            .bootstrap_servers(cluster.bootstrap_servers())
            .set("allow.auto.create.topics", "true");
        let auto = Admin::new(config).unwrap();
        let (md, _) = timed(auto.metadata(Some("ghost"), Duration::from_secs(10))).await;
        let ghost = md.unwrap().topic("ghost").cloned().unwrap();
        assert_eq!(ghost.error, None);
        assert!(!ghost.partitions.is_empty());
    }

    #[tokio::test]
    async fn metadata_without_a_broker_fails_within_its_timeout() {
        // Port 1 on loopback refuses connections.
        let admin = Admin::new(ClientConfig::new().bootstrap_servers("127.0.0.1:1")).unwrap();
        let (md, elapsed) = timed(admin.metadata(None, TIMEOUT)).await;
        let err = md.unwrap_err();
        assert!(err.code().is_some(), "{err}");
        assert!(elapsed < TIMEOUT + SLACK, "took {elapsed:?}");
    }

    #[tokio::test]
    async fn create_and_delete_topics_time_out_on_the_mock() {
        // The mock implements neither CreateTopics nor DeleteTopics and reports no
        // controller; librdkafka waits for one until the request timeout.
        let (cluster, admin) = setup();
        let topics = [NewTopic::new("new", 3)
            .replication(2)
            .config("cleanup.policy", "compact")];
        let opts = short()
            .operation_timeout(Duration::from_secs(1))
            .validate_only(true);
        let ((created, deleted), elapsed) = timed(async {
            tokio::join!(
                admin.create_topics(&topics, &opts),
                admin.delete_topics(&["t"], &opts)
            )
        })
        .await;
        // The two requests ran concurrently.
        assert!(elapsed < TIMEOUT + SLACK, "took {elapsed:?}");
        for result in [created, deleted] {
            let err = result.unwrap_err();
            assert_eq!(
                code(&err),
                sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
                "{err}"
            );
            assert!(err.to_string().contains("controller"), "{err}");
            assert!(err.is_retriable() && !err.is_fatal());
        }
        assert_eq!(admin.client.ops.len(), 0);
        // Nothing changed.
        let (md, _) = timed(admin.metadata(None, Duration::from_secs(10))).await;
        let md = md.unwrap();
        assert!(md.topic("t").is_some() && md.topic("new").is_none());
        drop(cluster);
    }

    #[tokio::test]
    async fn describe_configs_fails_per_resource_on_the_mock() {
        let (_cluster, admin) = setup();
        let opts = short();

        // Brokers are asked directly, one request each, and answer at once that they do
        // not know DescribeConfigs.
        let resources = [ResourceSpec::Broker(1), ResourceSpec::Broker(2)];
        let (results, elapsed) = timed(admin.describe_configs(&resources, &opts)).await;
        let results = results.unwrap();
        assert!(elapsed < TIMEOUT, "took {elapsed:?}");
        assert_eq!(
            results
                .iter()
                .map(|r| r.resource.clone())
                .collect::<Vec<_>>(),
            resources
        );
        for r in &results {
            let err = r.result.as_ref().unwrap_err();
            assert_eq!(
                code(err),
                sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE,
                "{err}"
            );
            assert!(!err.is_fatal());
            assert!(r.get("log.retention.ms").is_none());
        }

        // Topics go to the controller, which the mock lacks: the request times out. The
        // results keep the order asked for.
        let resources = [ResourceSpec::Broker(3), ResourceSpec::topic("t")];
        let (results, elapsed) = timed(admin.describe_configs(&resources, &opts)).await;
        let results = results.unwrap();
        assert!(elapsed < TIMEOUT + SLACK, "took {elapsed:?}");
        assert_eq!(results[0].resource, ResourceSpec::Broker(3));
        assert_eq!(
            code(results[0].result.as_ref().unwrap_err()),
            sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE
        );
        assert_eq!(results[1].resource, ResourceSpec::topic("t"));
        assert_eq!(
            code(results[1].result.as_ref().unwrap_err()),
            sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT
        );
        assert_eq!(admin.client.ops.len(), 0);
    }

    #[tokio::test]
    async fn invalid_arguments_fail_without_a_request() {
        let (_cluster, admin) = setup();
        let opts = short();
        let invalid = |r: Result<Vec<TopicResult>>| matches!(r, Err(Error::InvalidArgument(_)));
        assert!(invalid(
            admin
                .create_topics(&[NewTopic::new("zero", 0)], &opts)
                .await
        ));
        assert!(invalid(
            admin
                .create_topics(&[NewTopic::new("a\0b", 1)], &opts)
                .await
        ));
        assert!(invalid(
            admin
                .create_topics(&[NewTopic::new("c", 1).config("x\0", "y")], &opts)
                .await
        ));
        assert!(invalid(admin.delete_topics(&["a\0b"], &opts).await));
        let too_long = AdminOptions::new().request_timeout(Duration::from_secs(7200));
        assert!(invalid(
            admin
                .create_topics(&[NewTopic::new("c", 1)], &too_long)
                .await
        ));
        assert!(matches!(
            admin
                .describe_configs(&[ResourceSpec::topic("a\0b")], &opts)
                .await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            admin.metadata(Some("a\0b"), TIMEOUT).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(admin.create_topics(&[], &opts).await.unwrap().is_empty());
        assert!(admin.delete_topics(&[], &opts).await.unwrap().is_empty());
        assert!(admin.describe_configs(&[], &opts).await.unwrap().is_empty());
        assert_eq!(admin.client.ops.len(), 0);

        let dup = [NewTopic::new("d", 1), NewTopic::new("d", 2)];
        assert!(invalid(admin.create_topics(&dup, &opts).await));
        assert!(invalid(admin.delete_topics(&["d", "e", "d"], &opts).await));
        assert_eq!(admin.client.ops.len(), 0);
    }

    #[tokio::test]
    async fn calls_can_be_spawned() {
        // `tokio::spawn` needs the futures to be `Send`.
        let (_cluster, admin) = setup();
        let admin = Arc::new(admin);
        let a = admin.clone();
        let task = tokio::spawn(async move {
            let topics = [NewTopic::new("x", 1)];
            let opts = AdminOptions::new().request_timeout(Duration::from_millis(1));
            let created = a.create_topics(&topics, &opts).await;
            let deleted = a.delete_topics(&["x"], &opts).await;
            let described = a.describe_configs(&[ResourceSpec::Broker(1)], &opts).await;
            let md = a.metadata(Some("t"), Duration::from_secs(10)).await;
            (
                created.is_err(),
                deleted.is_err(),
                described.is_ok(),
                md.is_ok(),
            )
        });
        let (out, _) = timed(task).await;
        assert_eq!(out.unwrap(), (true, true, true, true));
        assert_eq!(admin.client.ops.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_call_frees_its_slot_when_answered() {
        let (_cluster, admin) = setup();
        let opts = short();
        let topics = [NewTopic::new("x", 1)];
        {
            let mut call = pin!(admin.create_topics(&topics, &opts));
            let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
            assert!(first.is_pending());
            assert_eq!(admin.client.ops.len(), 1);
        }
        // Abandoned, not freed: librdkafka still holds the opaque.
        assert_eq!(admin.client.ops.len(), 1);
        // A later request with the same timeout is answered after the first one.
        let (deleted, _) = timed(admin.delete_topics(&["x"], &opts)).await;
        assert!(deleted.is_err());
        assert_eq!(admin.client.ops.len(), 0);
    }

    /// Why [`Admin::metadata`] is not built on librdkafka's asynchronous DescribeTopics
    /// and DescribeCluster: on the mock both wait for a controller until they time out.
    #[tokio::test]
    async fn async_metadata_forms_time_out_on_the_mock() {
        let (_cluster, admin) = setup();
        let opts = AdminOptions::new().request_timeout(Duration::from_secs(1));
        let name = Client::cstring("t").unwrap();
        let mut names = [name.as_ptr()];
        // SAFETY: one valid name; the collection copies it.
        let topics = unsafe {
            sys::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), names.len())
        };
        let describe_topics = admin
            .start(
                AdminOp::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
                &opts,
                |rk, options, queue| {
                    // SAFETY: valid handle, collection, options and queue; all are copied.
                    unsafe { sys::rd_kafka_DescribeTopics(rk, topics, options, queue) }
                },
            )
            .unwrap();
        // SAFETY: the collection is ours and was copied by the call.
        unsafe { sys::rd_kafka_TopicCollection_destroy(topics) };
        let describe_cluster = admin
            .start(
                AdminOp::RD_KAFKA_ADMIN_OP_DESCRIBECLUSTER,
                &opts,
                |rk, options, queue| {
                    // SAFETY: valid handle, options and queue; the options are copied.
                    unsafe { sys::rd_kafka_DescribeCluster(rk, options, queue) }
                },
            )
            .unwrap();
        let ((topics, cluster), _) = timed(async {
            tokio::join!(
                answer(
                    describe_topics,
                    sys::RD_KAFKA_EVENT_DESCRIBETOPICS_RESULT,
                    "DescribeTopics"
                ),
                answer(
                    describe_cluster,
                    sys::RD_KAFKA_EVENT_DESCRIBECLUSTER_RESULT,
                    "DescribeCluster"
                ),
            )
        })
        .await;
        for err in [topics.unwrap_err(), cluster.unwrap_err()] {
            assert_eq!(
                code(&err),
                sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
                "{err}"
            );
            assert!(err.to_string().contains("controller"), "{err}");
        }
        assert_eq!(admin.client.ops.len(), 0);
    }
}
