//! The event an agent instance is processing, as Faust's `current_event()`: table writes
//! made while processing it go to its partition.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static PARTITION: Cell<Option<i32>>;
}

/// Runs an agent instance with a current-event slot.
pub(crate) fn scope<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    PARTITION.scope(Cell::new(None), fut)
}

/// Records the partition of the event just handed to the agent.
pub(crate) fn set_partition(partition: Option<i32>) {
    let _ = PARTITION.try_with(|c| c.set(partition));
}

/// The partition of the event being processed by the calling agent instance, if any.
pub(crate) fn partition() -> Option<i32> {
    PARTITION.try_with(Cell::get).ok().flatten()
}
