//! The worker's LMDB environment: one database per table, plus the checkpoints.
//!
//! A table's entries are stored under `partition (4 bytes, big endian) ++ key bytes`, so a
//! partition's entries are one prefix range. The checkpoint of a table partition (the next
//! changelog offset to apply, and the source offsets the data corresponds to) is written in
//! the same write transaction as the data it describes.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, WithoutTls};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// LMDB keys are limited to 511 bytes by default; 4 of them hold the partition.
pub(crate) const MAX_KEY_BYTES: usize = 511 - 4;

/// Where a table partition stands: the next changelog offset to apply, and the source
/// offsets (topic, partition, offset) its data corresponds to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) changelog: i64,
    #[serde(default)]
    pub(crate) sources: Vec<(String, i32, i64)>,
    /// The origin marks of forwarded records (see `changelog::Marker`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) origins: Vec<super::changelog::OriginMark>,
}

/// One change to write: a key and its new value (`None`: deleted).
pub(crate) type Change = (Vec<u8>, Option<Vec<u8>>);

/// The LMDB environment of a worker (closed when the worker stops).
#[derive(Clone)]
pub(crate) struct Store {
    open: Arc<RwLock<Option<Open>>>,
    dir: PathBuf,
}

struct Open {
    env: Env<WithoutTls>,
    dbs: RwLock<HashMap<String, Database<Bytes, Bytes>>>,
    checkpoints: Database<Bytes, Bytes>,
    /// Held while open: one worker per data directory.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn store_err(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Store(format!("{what}: {err}"))
}

pub(crate) fn prefixed(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn checkpoint_key(table: &str, partition: i32) -> Vec<u8> {
    let mut k = table.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Opens the environment. The only `unsafe` outside the Kafka client: see
/// `docs/src/design/tables.md`.
#[allow(unsafe_code)]
fn open_env(dir: &Path, map_size: usize) -> heed::Result<Env<WithoutTls>> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(1024);
    // SAFETY: heed's contract for memory-mapped files: the environment's files must not be
    // modified other than through LMDB. The directory belongs to this worker alone (held
    // by an exclusive lock on `LOCK`, taken before this call), it is opened once per
    // process (`Store::open` is called once per worker and heed refuses a second open of
    // the same path), and it lives on a local disk (the data directory).
    unsafe { options.open(dir) }
}

impl Store {
    /// Opens (creating it if needed) the environment under `datadir/tables`; `fresh`
    /// starts it empty (the embedded broker starts without changelogs). Fails if another
    /// worker uses the same directory.
    pub(crate) fn open(datadir: &Path, map_size: usize, fresh: bool) -> Result<Self> {
        std::fs::create_dir_all(datadir)?;
        let lock = File::create(datadir.join("LOCK"))?;
        if let Err(err) = lock.try_lock() {
            return Err(Error::Store(format!(
                "the data directory {} is used by another worker ({err}); give each worker its own --datadir",
                datadir.display()
            )));
        }
        let dir = datadir.join("tables");
        if fresh && dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let env = open_env(&dir, map_size).map_err(|e| store_err("opening LMDB", e))?;
        let mut wtxn = env.write_txn().map_err(|e| store_err("LMDB", e))?;
        let checkpoints = env
            .create_database(&mut wtxn, Some("__checkpoints"))
            .map_err(|e| store_err("LMDB", e))?;
        wtxn.commit().map_err(|e| store_err("LMDB", e))?;
        Ok(Self {
            open: Arc::new(RwLock::new(Some(Open {
                env,
                dbs: RwLock::default(),
                checkpoints,
                _lock: lock,
            }))),
            dir,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Open) -> Result<T>) -> Result<T> {
        let guard = self.open.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(open) => f(open),
            None => Err(Error::Store(
                "the table store is closed (the worker stopped)".into(),
            )),
        }
    }

    /// Closes the environment and releases the data directory (blocking: call it from a
    /// blocking thread).
    pub(crate) fn close(&self) {
        let open = self.open.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(open) = open {
            let Open { env, _lock, .. } = open;
            env.prepare_for_closing().wait();
            drop(_lock);
        }
    }

    /// Creates the database of `table` (at start, so reads never create it).
    pub(crate) fn ensure(&self, table: &str) -> Result<()> {
        self.with(|o| o.db(table).map(|_| ()))
    }

    /// The stored value of `key` in `table`'s `partition`.
    pub(crate) fn get(&self, table: &str, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|o| o.get(table, partition, key))
    }

    /// Every entry of a partition, in key order.
    pub(crate) fn entries(&self, table: &str, partition: i32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with(|o| o.entries(table, partition))
    }

    /// The checkpoint of a table partition (`None`: nothing applied yet).
    pub(crate) fn checkpoint(&self, table: &str, partition: i32) -> Result<Option<Checkpoint>> {
        self.with(|o| o.checkpoint(table, partition))
    }

    /// Deletes a table partition's entries and checkpoint (before rebuilding it).
    pub(crate) fn clear(&self, table: &str, partition: i32) -> Result<()> {
        self.with(|o| o.clear(table, partition))
    }

    /// Writes changes of several table partitions and their checkpoints in one
    /// transaction. Blocking: call it from a blocking thread.
    pub(crate) fn write(&self, batches: &[WriteBatch]) -> Result<()> {
        self.with(|o| o.write(batches))
    }

    /// [`Store::write`] on a blocking thread.
    pub(crate) async fn write_async(&self, batches: Vec<WriteBatch>) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(&batches))
            .await
            .map_err(|e| store_err("LMDB writer", e))?
    }
}

impl Open {
    fn db(&self, table: &str) -> Result<Database<Bytes, Bytes>> {
        if let Some(db) = self
            .dbs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
        {
            return Ok(*db);
        }
        let mut wtxn = self.env.write_txn().map_err(|e| store_err("LMDB", e))?;
        let db = self
            .env
            .create_database(&mut wtxn, Some(&format!("t:{table}")))
            .map_err(|e| store_err("LMDB", e))?;
        wtxn.commit().map_err(|e| store_err("LMDB", e))?;
        self.dbs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.to_owned(), db);
        Ok(db)
    }

    fn get(&self, table: &str, partition: i32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let db = self.db(table)?;
        let rtxn = self.env.read_txn().map_err(|e| store_err("LMDB", e))?;
        let v = db
            .get(&rtxn, &prefixed(partition, key))
            .map_err(|e| store_err("LMDB read", e))?;
        Ok(v.map(<[u8]>::to_vec))
    }

    fn entries(&self, table: &str, partition: i32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let db = self.db(table)?;
        let rtxn = self.env.read_txn().map_err(|e| store_err("LMDB", e))?;
        let iter = db
            .prefix_iter(&rtxn, &partition.to_be_bytes())
            .map_err(|e| store_err("LMDB read", e))?;
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| store_err("LMDB read", e))?;
            out.push((k[4..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn checkpoint(&self, table: &str, partition: i32) -> Result<Option<Checkpoint>> {
        let rtxn = self.env.read_txn().map_err(|e| store_err("LMDB", e))?;
        let Some(bytes) = self
            .checkpoints
            .get(&rtxn, &checkpoint_key(table, partition))
            .map_err(|e| store_err("LMDB read", e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| store_err("corrupt checkpoint", e))
    }

    fn clear(&self, table: &str, partition: i32) -> Result<()> {
        let db = self.db(table)?;
        let mut wtxn = self.env.write_txn().map_err(|e| store_err("LMDB", e))?;
        let keys: Vec<Vec<u8>> = {
            let iter = db
                .prefix_iter(&wtxn, &partition.to_be_bytes())
                .map_err(|e| store_err("LMDB read", e))?;
            let mut keys = Vec::new();
            for item in iter {
                keys.push(item.map_err(|e| store_err("LMDB read", e))?.0.to_vec());
            }
            keys
        };
        for k in keys {
            db.delete(&mut wtxn, &k)
                .map_err(|e| store_err("LMDB write", e))?;
        }
        self.checkpoints
            .delete(&mut wtxn, &checkpoint_key(table, partition))
            .map_err(|e| store_err("LMDB write", e))?;
        wtxn.commit().map_err(|e| store_err("LMDB commit", e))
    }

    fn write(&self, batches: &[WriteBatch]) -> Result<()> {
        let mut dbs = Vec::with_capacity(batches.len());
        for b in batches {
            dbs.push(self.db(&b.table)?);
        }
        let mut wtxn = self.env.write_txn().map_err(|e| store_err("LMDB", e))?;
        for (b, db) in batches.iter().zip(dbs) {
            for (key, value) in &b.changes {
                let k = prefixed(b.partition, key);
                match value {
                    Some(v) => db.put(&mut wtxn, &k, v),
                    None => db.delete(&mut wtxn, &k).map(|_| ()),
                }
                .map_err(|e| store_err("LMDB write", e))?;
            }
            if let Some(cp) = &b.checkpoint {
                let bytes = serde_json::to_vec(cp).map_err(|e| store_err("checkpoint", e))?;
                self.checkpoints
                    .put(&mut wtxn, &checkpoint_key(&b.table, b.partition), &bytes)
                    .map_err(|e| store_err("LMDB write", e))?;
            }
        }
        wtxn.commit().map_err(|e| store_err("LMDB commit", e))
    }
}

/// The changes of one table partition, with the checkpoint they lead to.
#[derive(Debug, Default)]
pub(crate) struct WriteBatch {
    pub(crate) table: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) changes: Vec<Change>,
    pub(crate) checkpoint: Option<Checkpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closer(Store);
    impl Drop for Closer {
        fn drop(&mut self) {
            self.0.close();
        }
    }

    #[test]
    fn data_and_checkpoint_commit_together_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 26, false).unwrap();
            let _closed_at_end_of_scope = Closer(store.clone());
            store
                .write(&[WriteBatch {
                    table: "t".into(),
                    partition: 3,
                    changes: vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
                    checkpoint: Some(Checkpoint {
                        changelog: 7,
                        sources: vec![("src".into(), 3, 42)],
                        origins: Vec::new(),
                    }),
                }])
                .unwrap();
            assert!(
                Store::open(dir.path(), 1 << 26, false).is_err(),
                "a second worker on the same data directory is refused"
            );
        }
        let store = Store::open(dir.path(), 1 << 26, false).unwrap();
        assert_eq!(store.get("t", 3, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            store.get("t", 2, b"a").unwrap(),
            None,
            "partitions are apart"
        );
        assert_eq!(store.entries("t", 3).unwrap().len(), 1);
        let cp = store.checkpoint("t", 3).unwrap().unwrap();
        assert_eq!(cp.changelog, 7);
        assert_eq!(cp.sources, vec![("src".to_string(), 3, 42)]);
    }
}
