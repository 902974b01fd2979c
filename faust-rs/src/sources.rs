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

type Channel = (async_channel::Sender<Batch>, async_channel::Receiver<Batch>);

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

    /// The receiving end of `agent`'s channel for `topic`, created on first use.
    pub(crate) fn receiver(
        &self,
        agent: &Arc<str>,
        topic: &str,
        capacity: usize,
    ) -> async_channel::Receiver<Batch> {
        let mut routes = self.lock();
        let per_topic = routes.entry(topic.to_owned()).or_default();
        if let Some((_, rx)) = per_topic.get(agent) {
            return rx.clone();
        }
        // `capacity` counts records; the channel holds batches of up to BATCH_MAX.
        let (tx, rx) = async_channel::bounded(capacity.div_ceil(BATCH_MAX).max(2));
        per_topic.insert(agent.clone(), (tx, rx.clone()));
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

    /// The senders of every channel of `topic`.
    pub(crate) fn senders(&self, topic: &str) -> Vec<async_channel::Sender<Batch>> {
        self.lock()
            .get(topic)
            .map(|m| m.values().map(|(tx, _)| tx.clone()).collect())
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
            for (tx, _) in per_topic.values() {
                tx.close();
            }
        }
    }
}
