//! What this node's state machine has applied, published in memory for the read path.
//!
//! - **The applied index** ([`Applied::wait_for`]): the state machine publishes it after each
//!   applied batch's `db.write` and after a snapshot install, so a linearizable read waits on
//!   one `u64` (one waiter per read-index round, see `cluster`) instead of on openraft's
//!   metrics, which clone the whole `RaftMetrics` for every waiter on every change.
//! - **The generation** ([`Applied::generation`]): bumped after any applied batch that changed
//!   state the read path caches (the cluster's master key, the reader rules), after a snapshot
//!   install and (through the same batch rule) after a restore commit. A cache of that state
//!   (see `reader`) stores what it read only if the generation did not move while it read, and
//!   serves it only while the generation is the one it stored under. The bump comes after the
//!   write and before the applied index is published: a read that waited for an index sees
//!   every change applied up to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Applied {
    inner: Arc<Inner>,
}

struct Inner {
    generation: AtomicU64,
    index: watch::Sender<u64>,
}

/// Why [`Applied::wait_for`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("this node applied up to {applied} and did not reach {wanted} within {timeout:?}")]
    TimedOut { wanted: u64, applied: u64, timeout: Duration },
}

impl Applied {
    /// State applied up to `index` (the state machine's `last_applied` when it opens).
    pub fn new(index: u64) -> Self {
        Applied { inner: Arc::new(Inner { generation: AtomicU64::new(0), index: watch::channel(index).0 }) }
    }

    /// The generation of the cached state; see the module doc.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Cached state changed in the database: every cache stored under an older generation is
    /// stale. Call after the write, before [`Applied::publish`].
    pub(crate) fn bump(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Everything up to `index` is applied and readable.
    pub(crate) fn publish(&self, index: u64) {
        self.inner.index.send_if_modified(|at| {
            let moved = *at != index;
            *at = index;
            moved
        });
    }

    /// The applied index, as last published.
    pub fn index(&self) -> u64 {
        *self.inner.index.borrow()
    }

    /// Returns once everything up to `index` is applied, or after `timeout`.
    pub async fn wait_for(&self, index: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.inner.index.subscribe();
        let reached = tokio::time::timeout(timeout, async { rx.wait_for(|at| *at >= index).await.is_ok() }).await;
        match reached {
            Ok(true) => Ok(()),
            // The sender lives in `self`: it cannot close while we hold it.
            Ok(false) | Err(_) => Err(WaitError::TimedOut { wanted: index, applied: self.index(), timeout }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_returns_once_the_index_is_published_and_times_out_otherwise() {
        let applied = Applied::new(3);
        applied.wait_for(3, Duration::from_millis(10)).await.expect("already applied");
        assert!(applied.wait_for(5, Duration::from_millis(50)).await.is_err(), "index 5 is not applied");
        let waiter = {
            let applied = applied.clone();
            tokio::spawn(async move { applied.wait_for(5, Duration::from_secs(10)).await })
        };
        applied.publish(4);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "returned at 4");
        applied.publish(6);
        waiter.await.expect("join").expect("returned at 6");
        let g = applied.generation();
        applied.bump();
        assert_eq!(applied.generation(), g + 1);
    }
}
