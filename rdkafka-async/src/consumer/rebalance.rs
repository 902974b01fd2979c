//! A pending change of a consumer's assignment, applied by the application.

use std::fmt;
use std::sync::Arc;

use super::shared::Shared;
use crate::error::{Error, Result};
use crate::sys;
use crate::topic_partition_list::TopicPartitionList;

/// What a consumer yields: a message or a rebalance to act on.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// A message.
    Message(crate::message::Message),
    /// The group changed this member's partitions (see [`Rebalance`]).
    Rebalance(Rebalance),
}

/// Whether partitions are being given or taken away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebalanceKind {
    /// Partitions are assigned to this member.
    Assign,
    /// Partitions are revoked from this member.
    Revoke,
}

/// A pending change of assignment.
///
/// The change is applied when the value is completed ([`Rebalance::complete`]) or dropped,
/// so the application's asynchronous work (committing offsets of revoked partitions,
/// flushing state, loading state of assigned ones) finishes before the assignment changes.
/// From the moment a revocation is returned, no message of a revoked partition is handed
/// out. Eager protocols revoke everything and assign everything; `cooperative-sticky`
/// only the partitions that move.
///
/// Applying waits for librdkafka's group thread, so it runs on tokio's blocking pool, never
/// on a runtime worker nor inside `drop`; the consumer hands out nothing further until it
/// is applied.
pub struct Rebalance {
    pub(super) kind: RebalanceKind,
    pub(super) partitions: TopicPartitionList,
    pub(super) cooperative: bool,
    pub(super) lost: bool,
    pub(super) shared: Arc<Shared>,
    pub(super) done: bool,
}

impl fmt::Debug for Rebalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rebalance")
            .field("kind", &self.kind)
            .field("partitions", &self.partitions)
            .field("cooperative", &self.cooperative)
            .field("lost", &self.lost)
            .finish()
    }
}

impl Rebalance {
    /// Assign or revoke.
    pub fn kind(&self) -> RebalanceKind {
        self.kind
    }

    /// The partitions that are assigned or revoked.
    pub fn partitions(&self) -> &TopicPartitionList {
        &self.partitions
    }

    /// Whether the group uses the incremental (cooperative) protocol.
    pub fn is_cooperative(&self) -> bool {
        self.cooperative
    }

    /// For a revocation: the partitions were lost (the member was kicked out), so their
    /// offsets can no longer be committed.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Applies the change now and resolves when librdkafka has taken it.
    ///
    /// Cancel safety: cancelling does not cancel the change, which is applied anyway;
    /// only its outcome is then lost (it is logged).
    pub async fn complete(mut self) -> Result<()> {
        self.done = true;
        let apply = self.prepare()?;
        self.shared.off_runtime(apply).await
    }

    /// The part that does not wait (forwarding queues, marking partitions), then the
    /// librdkafka call that does, to run off the runtime.
    fn prepare(&self) -> Result<impl FnOnce(&Shared) -> Result<()> + Send + 'static> {
        let kind = self.kind;
        let cooperative = self.cooperative;
        if kind == RebalanceKind::Assign {
            self.shared.forget_revoked(&self.partitions);
            self.shared.forward(&self.partitions)?;
        }
        let tpl = self.partitions.to_native()?;
        Ok(move |shared: &Shared| {
            let rk = shared.client.ptr();
            // Valid handle and list in every call below; null unassigns everything.
            // SAFETY: as above.
            let cooperative_assign = || unsafe { sys::rd_kafka_incremental_assign(rk, tpl.ptr()) };
            // SAFETY: as above.
            let eager_assign = || unsafe { sys::rd_kafka_assign(rk, tpl.ptr()) };
            // SAFETY: as above.
            let cooperative_revoke =
                || unsafe { sys::rd_kafka_incremental_unassign(rk, tpl.ptr()) };
            // SAFETY: as above.
            let eager_revoke = || unsafe { sys::rd_kafka_assign(rk, std::ptr::null()) };
            match (kind, cooperative) {
                (RebalanceKind::Assign, true) => Error::from_rd_error(cooperative_assign()),
                (RebalanceKind::Assign, false) => Error::check(eager_assign()),
                (RebalanceKind::Revoke, true) => Error::from_rd_error(cooperative_revoke()),
                (RebalanceKind::Revoke, false) => Error::check(eager_revoke()),
            }
        })
    }
}

impl Drop for Rebalance {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let kind = self.kind;
        match self.prepare() {
            Ok(apply) => self.shared.apply_in_background(apply, move |err| {
                tracing::error!(target: "rdkafka_async", %err, ?kind, "applying a rebalance failed");
            }),
            Err(err) => {
                tracing::error!(target: "rdkafka_async", %err, ?kind, "applying a rebalance failed");
                self.shared.set_failure(err);
            }
        }
    }
}
