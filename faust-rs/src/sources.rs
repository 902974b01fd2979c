//! Where consumed records go: one channel per (agent, topic), shared by the agent's
//! concurrent instances; the conductor subscribes to every topic that has a channel.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::event::Inbound;

/// Records travel to agents in batches (what the consumer had fetched), so that handing
/// them over costs one channel operation and at most one wake-up per batch.
pub(crate) type Batch = Vec<Arc<Inbound>>;

/// The most records in one batch.
pub(crate) const BATCH_MAX: usize = 256;

struct Channel {
    tx: async_channel::Sender<Batch>,
    rx: async_channel::Receiver<Batch>,
    /// The most records per batch on this channel: 1 for an agent with several
    /// instances, so that each record goes to whichever instance is free.
    max_batch: usize,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

/// Where the conductor sends a topic's records: a channel and its batch size.
pub(crate) type Route = (async_channel::Sender<Batch>, usize);

#[derive(Debug)]
pub(crate) struct Sources {
    /// topic -> agent -> channel
    routes: Mutex<HashMap<String, HashMap<Arc<str>, Channel>>>,
    version: AtomicU64,
    topics: watch::Sender<BTreeSet<String>>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            routes: Mutex::default(),
            version: AtomicU64::new(0),
            topics: watch::channel(BTreeSet::new()).0,
        }
    }
}

impl Sources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<Arc<str>, Channel>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The receiving end of `agent`'s channel for `topic`, created on first use. The
    /// channel buffers about `capacity` records; `instances` is the agent's concurrency.
    pub(crate) fn receiver(
        &self,
        agent: &Arc<str>,
        topic: &str,
        capacity: usize,
        instances: usize,
    ) -> async_channel::Receiver<Batch> {
        let mut routes = self.lock();
        let per_topic = routes.entry(topic.to_owned()).or_default();
        if let Some(c) = per_topic.get(agent) {
            return c.rx.clone();
        }
        let capacity = capacity.max(1);
        let max_batch = if instances > 1 {
            1
        } else {
            // At least two batches fit, so the conductor fills one while the agent works
            // on the other.
            (capacity / 2).clamp(1, BATCH_MAX)
        };
        let (tx, rx) = async_channel::bounded(capacity.div_ceil(max_batch).max(1));
        per_topic.insert(
            agent.clone(),
            Channel {
                tx,
                rx: rx.clone(),
                max_batch,
            },
        );
        let topics: BTreeSet<String> = routes.keys().cloned().collect();
        // Published under the lock: concurrent additions then publish in order, and the
        // last set published has every topic (published after the lock, an older, smaller
        // set could overwrite a newer one, and the conductor would never subscribe to a
        // topic).
        self.version.fetch_add(1, Ordering::AcqRel);
        self.topics.send_replace(topics);
        drop(routes);
        rx
    }

    /// The routes of every channel of `topic`.
    pub(crate) fn senders(&self, topic: &str) -> Vec<Route> {
        self.lock()
            .get(topic)
            .map(|m| m.values().map(|c| (c.tx.clone(), c.max_batch)).collect())
            .unwrap_or_default()
    }

    /// Changes whenever a channel is added.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Watches the set of topics with channels.
    pub(crate) fn topics(&self) -> watch::Receiver<BTreeSet<String>> {
        self.topics.subscribe()
    }

    /// Closes every channel: streams end once they drained what was queued.
    pub(crate) fn close_all(&self) {
        for per_topic in self.lock().values() {
            for c in per_topic.values() {
                c.tx.close();
            }
        }
    }
}
