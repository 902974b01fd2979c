//! Tables: key/value state kept in LMDB and replicated through a changelog topic.
//!
//! A [`Table`] is declared on the app (`app.table::<K, V>("name")`) and used from agents
//! like a map: [`get`](Table::get), [`set`](Table::set), [`delete`](Table::delete),
//! [`update`](Table::update) (`table[k] += v` in Faust). A write made while an agent
//! processes an event belongs to that event's partition (as in Faust, the table is
//! co-partitioned with the stream that feeds it); elsewhere, to the key's partition.
//!
//! Writes go to an in-memory write cache that reads see at once. Every commit interval
//! the cache is flushed: each key's last value goes to the changelog topic
//! `<app id>-<table>-changelog` (repeated writes of a key collapse into one record),
//! followed by a commit marker that records the source offsets the data corresponds to;
//! then the data and the changelog offset are written to LMDB in one transaction, and
//! only then are the source offsets committed. See `docs/src/design/tables.md`.

pub(crate) mod changelog;
pub(crate) mod partitioner;
pub(crate) mod recovery;
pub(crate) mod restore;
pub(crate) mod store;
pub(crate) mod tables;
pub mod window;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::App;
use crate::codec::{Auto, Codec, Json};
use crate::error::{Error, Result};
use store::{Change, MAX_KEY_BYTES};
pub use window::{EventTime, WindowRange, WindowedTable, Windows};

/// The partition of a key (its bytes, as the key codec writes them) among `partitions`:
/// Kafka's default partitioner (murmur2), which the app's producer and its tables use.
///
/// ```
/// assert_eq!(faust::table::partition_for(b"kafka", 8), faust::table::partition_for(b"kafka", 8));
/// assert!((0..8).contains(&faust::table::partition_for(b"u1", 8)));
/// ```
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    partitioner::partition_for(key, partitions)
}

/// Whether each worker holds its own partitions or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Partitioned: a worker holds the partitions it owns (and standby copies).
    Table,
    /// Every worker holds every partition.
    Global,
}

struct Config<V> {
    default: Option<Arc<dyn Fn() -> V + Send + Sync>>,
    public: bool,
    partitions: Option<i32>,
    help: String,
}

/// The writes of one partition not yet in LMDB.
struct Layers<V> {
    /// Written since the last flush began.
    dirty: HashMap<Vec<u8>, Option<V>>,
    /// Being flushed (read until the flush is in LMDB).
    flushing: HashMap<Vec<u8>, Option<V>>,
}

impl<V> Default for Layers<V> {
    fn default() -> Self {
        Self {
            dirty: HashMap::new(),
            flushing: HashMap::new(),
        }
    }
}

pub(crate) struct Core<K, V> {
    name: Arc<str>,
    changelog: String,
    kind: Kind,
    app: App,
    key_codec: RwLock<Arc<dyn Codec<K>>>,
    value_codec: RwLock<Arc<dyn Codec<V>>>,
    config: RwLock<Config<V>>,
    /// The partition count, fixed when the worker starts.
    resolved: AtomicI32,
    layers: Mutex<HashMap<i32, Layers<V>>>,
    writes: AtomicU64,
    /// Set when the table became a windowed table (its keys carry a window).
    pub(crate) windowed: std::sync::atomic::AtomicBool,
}

/// A table with keys `K` and values `V`. Cloning is cheap (a handle).
///
/// ```
/// use faust::App;
/// let app = App::new("payments");
/// let totals = app.table::<String, i64>("user_to_amount").default(0).public(true);
/// let transactions = app.topic::<String, i64>("transactions");
/// app.agent("sum", &transactions, move |mut stream| {
///     let totals = totals.clone();
///     async move {
///         while let Some((user, amount)) = stream.next_item().await {
///             let user = user.unwrap_or_default();
///             totals.update(&user, |total| *total += amount)?;
///         }
///         Ok(())
///     }
/// });
/// assert_eq!(app.table_names(), vec!["user_to_amount".to_string()]);
/// ```
pub struct Table<K, V> {
    core: Arc<Core<K, V>>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.core.name)
            .field("changelog", &self.core.changelog)
            .finish()
    }
}

impl<K, V> Table<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(app: &App, name: &str, kind: Kind) -> Self {
        let core = Arc::new(Core {
            name: Arc::from(name),
            changelog: format!("{}-{}-changelog", app.id(), name),
            kind,
            app: app.clone(),
            key_codec: RwLock::new(Arc::new(Auto)),
            value_codec: RwLock::new(Arc::new(Json)),
            config: RwLock::new(Config {
                default: None,
                public: false,
                partitions: None,
                help: String::new(),
            }),
            resolved: AtomicI32::new(0),
            layers: Mutex::new(HashMap::new()),
            writes: AtomicU64::new(0),
            windowed: std::sync::atomic::AtomicBool::new(false),
        });
        app.register_table(core.clone());
        Self { core }
    }
}

impl<K, V> Table<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn configure(self, f: impl FnOnce(&mut Config<V>)) -> Self {
        f(&mut self.core.config.write().unwrap_or_else(|e| e.into_inner()));
        self
    }

    /// The value of keys not in the table, for [`Table::update`] and
    /// [`Table::get_or_default`] (Faust's `default=`).
    pub fn default(self, value: V) -> Self {
        self.default_with(move || value.clone())
    }

    /// Like [`Table::default`], computed each time.
    pub fn default_with(self, f: impl Fn() -> V + Send + Sync + 'static) -> Self {
        self.configure(|c| c.default = Some(Arc::new(f)))
    }

    /// Whether the table is served by the web API (`/api/table/<name>/`).
    pub fn public(self, public: bool) -> Self {
        self.configure(|c| c.public = public)
    }

    /// Partitions of the table and its changelog (default: the app's
    /// `topic_partitions`). Match the partitions of the topics that feed it.
    pub fn partitions(self, partitions: i32) -> Self {
        self.configure(|c| c.partitions = Some(partitions))
    }

    /// A description, shown by the CLI and the web pages.
    pub fn help(self, text: &str) -> Self {
        let text = text.to_owned();
        self.configure(|c| c.help = text)
    }

    /// Uses `codec` for keys (default: [`Auto`]).
    pub fn key_codec(self, codec: impl Codec<K>) -> Self {
        *self
            .core
            .key_codec
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(codec);
        self
    }

    /// Uses `codec` for values (default: [`Json`]).
    pub fn value_codec(self, codec: impl Codec<V>) -> Self {
        *self
            .core
            .value_codec
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(codec);
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The changelog topic, `<app id>-<name>-changelog`.
    pub fn changelog_topic(&self) -> &str {
        &self.core.changelog
    }

    /// Records written to this table by this worker since it started.
    pub fn writes(&self) -> u64 {
        self.core.writes.load(Ordering::Relaxed)
    }

    /// The value of `key`, if present.
    ///
    /// Reads see every write this worker made, flushed or not. Errors: no running worker,
    /// a key that does not encode, a stored value that does not decode, LMDB failing.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let (kb, p) = self.core.locate(key)?;
        self.core.get_bytes(&kb, p)
    }

    /// The value of `key`, or the table's default.
    pub fn get_or_default(&self, key: &K) -> Result<V> {
        match self.get(key)? {
            Some(v) => Ok(v),
            None => self.core.default_value(),
        }
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &K, value: V) -> Result<()> {
        let (kb, p) = self.core.locate(key)?;
        self.core.write(kb, p, Some(value));
        Ok(())
    }

    /// Removes `key` (a tombstone in the changelog).
    pub fn delete(&self, key: &K) -> Result<()> {
        let (kb, p) = self.core.locate(key)?;
        self.core.write(kb, p, None);
        Ok(())
    }

    /// Changes the value of `key` in place, starting from the table's default if absent
    /// (`table[key] += amount` is `table.update(&key, |v| *v += amount)`); returns what `f`
    /// returns.
    pub fn update<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Result<R> {
        let (kb, p) = self.core.locate(key)?;
        self.core.update_bytes(kb, p, f)
    }

    /// The entries of one partition held by this worker, in key-byte order.
    pub fn partition_items(&self, partition: i32) -> Result<Vec<(K, V)>> {
        self.core.partition_items(partition)
    }
}

impl<K, V> Core<K, V>
where
    K: Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn key_codec(&self) -> Arc<dyn Codec<K>> {
        self.key_codec
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn value_codec(&self) -> Arc<dyn Codec<V>> {
        self.value_codec
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn store(&self) -> Result<store::Store> {
        Ok(self.app.runtime()?.tables.store()?.clone())
    }

    fn partitions_resolved(&self) -> Result<i32> {
        match self.resolved.load(Ordering::Acquire) {
            0 => Err(Error::Lifecycle(format!(
                "table {} is used before the worker started",
                self.name
            ))),
            n => Ok(n),
        }
    }

    /// The key's bytes and the partition a write of it goes to.
    fn locate(&self, key: &K) -> Result<(Vec<u8>, i32)> {
        let n = self.partitions_resolved()?;
        let kb = self
            .key_codec
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .encode(key)?;
        check_key(&self.name, &kb)?;
        let p = match self.kind {
            Kind::Table => crate::current::partition().filter(|p| *p < n),
            Kind::Global => None,
        }
        .unwrap_or_else(|| partitioner::partition_for(&kb, n));
        Ok((kb, p))
    }

    fn default_value(&self) -> Result<V> {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        match &config.default {
            Some(f) => Ok(f()),
            None => Err(Error::Table {
                table: self.name.to_string(),
                reason: "the key is absent and the table has no default".into(),
            }),
        }
    }

    fn load(&self, kb: &[u8], p: i32) -> Result<Option<V>> {
        match self.store()?.get(&self.name, p, kb)? {
            Some(bytes) => Ok(Some(self.value_codec().decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn get_bytes(&self, kb: &[u8], p: i32) -> Result<Option<V>> {
        crate::sensor::on_table_get(&self.app, &self.name, kb);
        {
            let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = layers.get(&p) {
                if let Some(v) = l.dirty.get(kb).or_else(|| l.flushing.get(kb)) {
                    return Ok(v.clone());
                }
            }
        }
        self.load(kb, p)
    }

    pub(crate) fn write(&self, kb: Vec<u8>, p: i32, value: Option<V>) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        crate::sensor::on_table_set(&self.app, &self.name, &kb, value.is_none());
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(p)
            .or_default()
            .dirty
            .insert(kb, value);
    }

    pub(crate) fn update_bytes<R>(
        &self,
        kb: Vec<u8>,
        p: i32,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R> {
        crate::sensor::on_table_set(&self.app, &self.name, &kb, false);
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        let l = layers.entry(p).or_default();
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(Some(v)) = l.dirty.get_mut(&kb) {
            return Ok(f(v));
        }
        let current = match l.dirty.get(&kb) {
            Some(deleted) => deleted.clone(),
            None => match l.flushing.get(&kb) {
                Some(v) => v.clone(),
                None => self.load(&kb, p)?,
            },
        };
        let mut value = match current {
            Some(v) => v,
            None => self.default_value()?,
        };
        let r = f(&mut value);
        l.dirty.insert(kb, Some(value));
        Ok(r)
    }

    fn partition_items(&self, partition: i32) -> Result<Vec<(K, V)>> {
        let mut merged: std::collections::BTreeMap<Vec<u8>, Option<V>> =
            std::collections::BTreeMap::new();
        let vc = self.value_codec();
        for (k, v) in self.store()?.entries(&self.name, partition)? {
            merged.insert(k, Some(vc.decode(&v)?));
        }
        {
            let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = layers.get(&partition) {
                for (k, v) in l.flushing.iter().chain(l.dirty.iter()) {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        let kc = self.key_codec();
        let mut out = Vec::with_capacity(merged.len());
        for (k, v) in merged {
            if let Some(v) = v {
                out.push((kc.decode(&k)?, v));
            }
        }
        Ok(out)
    }
}

fn check_key(table: &str, kb: &[u8]) -> Result<()> {
    if kb.len() > MAX_KEY_BYTES {
        return Err(Error::Table {
            table: table.to_owned(),
            reason: format!(
                "a key of {} bytes is longer than the {MAX_KEY_BYTES} bytes a table key may have",
                kb.len()
            ),
        });
    }
    Ok(())
}

/// What the worker needs of a table, whatever its types.
pub(crate) trait TableCore: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Records written by this worker since it started (sets, updates, deletes).
    fn writes(&self) -> u64;
    fn changelog(&self) -> &str;
    fn is_global(&self) -> bool;
    fn is_public(&self) -> bool;
    fn help(&self) -> String;
    /// The partition count given at declaration, if any.
    fn declared_partitions(&self) -> Option<i32>;
    /// Fixes the partition count (at start).
    fn resolve(&self, partitions: i32);
    fn partitions(&self) -> i32;
    /// Partitions with writes not flushed yet.
    fn dirty_partitions(&self) -> Vec<i32>;
    /// Starts flushing a partition: its pending writes, encoded.
    fn begin_flush(&self, partition: i32) -> Result<Vec<Change>>;
    /// Ends a flush: on success the flushed writes are in LMDB; on failure they become
    /// pending again (unless written again since).
    fn end_flush(&self, partition: i32, ok: bool);
    /// Forgets the cached writes of a partition (it was revoked, after its flush).
    fn forget(&self, partition: i32);
    /// Drops the pending writes of a partition (it was lost to another worker).
    fn discard(&self, partition: i32);
    /// Whether a changelog record's key and value decode.
    fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), crate::codec::CodecError>;
    /// The key bytes of a key given as text (a string key as it is; other keys as JSON).
    fn key_from_text(&self, text: &str) -> Result<Vec<u8>>;
    /// A key's text form (the inverse of [`TableCore::key_from_text`]).
    fn key_text(&self, kb: &[u8]) -> Result<String>;
    /// The partition a key (bytes) belongs to, outside any event.
    fn partition_of(&self, kb: &[u8]) -> i32;
    /// A key's value as JSON.
    fn get_json(&self, kb: &[u8], p: i32) -> Result<Option<serde_json::Value>>;
    /// Sets a key from a JSON value (which must decode as the table's value type).
    fn set_json(&self, kb: Vec<u8>, p: i32, value: serde_json::Value) -> Result<()>;
    /// Deletes a key.
    fn delete_key(&self, kb: Vec<u8>, p: i32);
    /// The entries of a partition held here, as (key text, JSON value), in key order.
    fn items_json(&self, p: i32) -> Result<Vec<(String, serde_json::Value)>>;
}

impl<K, V> TableCore for Core<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn key_from_text(&self, text: &str) -> Result<Vec<u8>> {
        use serde::de::value::{Error as DeError, StrDeserializer};
        let key: K = match K::deserialize(StrDeserializer::<DeError>::new(text)) {
            Ok(k) => k,
            Err(_) => serde_json::from_str(text).map_err(|e| Error::Table {
                table: self.name.to_string(),
                reason: format!("the key {text:?} does not decode: {e}"),
            })?,
        };
        let kb = self.key_codec().encode(&key)?;
        check_key(&self.name, &kb)?;
        Ok(kb)
    }
    fn key_text(&self, kb: &[u8]) -> Result<String> {
        let key = self.key_codec().decode(kb)?;
        Ok(match serde_json::to_value(&key) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(e) => String::from_utf8_lossy(kb).into_owned() + &format!(" ({e})"),
        })
    }
    fn partition_of(&self, kb: &[u8]) -> i32 {
        partitioner::partition_for(kb, self.partitions().max(1))
    }
    fn get_json(&self, kb: &[u8], p: i32) -> Result<Option<serde_json::Value>> {
        match self.get_bytes(kb, p)? {
            Some(v) => Ok(Some(serde_json::to_value(&v).map_err(|e| {
                Error::Table {
                    table: self.name.to_string(),
                    reason: format!("the value does not convert to JSON: {e}"),
                }
            })?)),
            None => Ok(None),
        }
    }
    fn set_json(&self, kb: Vec<u8>, p: i32, value: serde_json::Value) -> Result<()> {
        let v: V = serde_json::from_value(value).map_err(|e| Error::Table {
            table: self.name.to_string(),
            reason: format!("the value does not decode: {e}"),
        })?;
        self.write(kb, p, Some(v));
        Ok(())
    }
    fn delete_key(&self, kb: Vec<u8>, p: i32) {
        self.write(kb, p, None);
    }
    fn items_json(&self, p: i32) -> Result<Vec<(String, serde_json::Value)>> {
        let mut merged: std::collections::BTreeMap<Vec<u8>, Option<V>> =
            std::collections::BTreeMap::new();
        let vc = self.value_codec();
        for (k, v) in self.store()?.entries(&self.name, p)? {
            match vc.decode(&v) {
                Ok(v) => {
                    merged.insert(k, Some(v));
                }
                Err(err) => {
                    tracing::warn!(table = %self.name, %err, "a stored value does not decode; left out")
                }
            }
        }
        {
            let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = layers.get(&p) {
                for (k, v) in l.flushing.iter().chain(l.dirty.iter()) {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        let mut out = Vec::with_capacity(merged.len());
        for (k, v) in merged {
            if let Some(v) = v {
                let text = self.key_text(&k)?;
                let json = serde_json::to_value(&v).unwrap_or(serde_json::Value::Null);
                out.push((text, json));
            }
        }
        Ok(out)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    fn changelog(&self) -> &str {
        &self.changelog
    }
    fn is_global(&self) -> bool {
        self.kind == Kind::Global
    }
    fn is_public(&self) -> bool {
        // Windowed tables are not served by the web API (their keys carry a window).
        self.config.read().unwrap_or_else(|e| e.into_inner()).public
            && !self.windowed.load(Ordering::Relaxed)
    }
    fn help(&self) -> String {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .help
            .clone()
    }
    fn declared_partitions(&self) -> Option<i32> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .partitions
    }
    fn resolve(&self, partitions: i32) {
        self.resolved.store(partitions.max(1), Ordering::Release);
    }
    fn partitions(&self) -> i32 {
        self.resolved.load(Ordering::Acquire)
    }
    fn dirty_partitions(&self) -> Vec<i32> {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, l)| !l.dirty.is_empty())
            .map(|(p, _)| *p)
            .collect()
    }
    fn begin_flush(&self, partition: i32) -> Result<Vec<Change>> {
        let vc = self.value_codec();
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = layers.get_mut(&partition) else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::with_capacity(l.dirty.len());
        for (k, v) in &l.dirty {
            let bytes = v.as_ref().map(|v| vc.encode(v)).transpose()?;
            changes.push((k.clone(), bytes));
        }
        let dirty = std::mem::take(&mut l.dirty);
        l.flushing.extend(dirty);
        Ok(changes)
    }
    fn end_flush(&self, partition: i32, ok: bool) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = layers.get_mut(&partition) else {
            return;
        };
        let flushing = std::mem::take(&mut l.flushing);
        if !ok {
            for (k, v) in flushing {
                l.dirty.entry(k).or_insert(v);
            }
        }
    }
    fn forget(&self, partition: i32) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        if layers.get(&partition).is_some_and(|l| l.dirty.is_empty()) {
            layers.remove(&partition);
        }
    }
    fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), crate::codec::CodecError> {
        self.key_codec().decode(key)?;
        if let Some(v) = value {
            self.value_codec().decode(v)?;
        }
        Ok(())
    }
    fn discard(&self, partition: i32) {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&partition);
    }
}
