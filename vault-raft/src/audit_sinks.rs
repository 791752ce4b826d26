//! Where the node's audit shippers (`vault-node`'s `audit_ship`) say how each sink is doing,
//! and where the write paths ask whether a *required* sink refuses: a read's or refusal's
//! record ([`crate::AuditLog::append`], [`crate::AuditLog::append_all`]) and a client change
//! (on the node that took it, and again on the leader) are refused while one does.
//!
//! Node-local, never replicated: each node ships its own chain.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How one sink is doing, as its shipper last saw it.
#[derive(Debug)]
pub struct SinkStatus {
    /// `file`, `socket` or `syslog`.
    pub name: String,
    /// `VAULT_AUDIT_<SINK>_REQUIRED`: changes and reads are refused while this sink refuses.
    pub required: bool,
    up: AtomicBool,
    /// The last record the sink took.
    shipped: AtomicU64,
    refusing: AtomicBool,
}

impl SinkStatus {
    /// Whether the last attempt to reach the sink worked.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records of the node's log not yet shipped to the sink, when `newest` is the log's newest.
    pub fn lag(&self, newest: u64) -> u64 {
        newest.saturating_sub(self.shipped.load(Ordering::Relaxed))
    }
}

/// Every sink of this node. Cheap to clone; all clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct SinkBoard {
    sinks: Arc<Mutex<Vec<Arc<SinkStatus>>>>,
    /// How many required sinks refuse now: the write paths look at this first.
    refusing: Arc<AtomicUsize>,
}

impl SinkBoard {
    /// Adds a sink, down until its shipper first reaches it (a required sink refuses until
    /// then).
    pub fn add(&self, name: &str, required: bool) -> Arc<SinkStatus> {
        let status = Arc::new(SinkStatus {
            name: name.to_string(),
            required,
            up: AtomicBool::new(false),
            shipped: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        });
        self.sinks.lock().unwrap_or_else(|p| p.into_inner()).push(status.clone());
        self.set(&status, false, 0, 0, u64::MAX);
        status
    }

    /// What the shipper of `status` saw: whether the sink takes records, the last one it
    /// took (`shipped`) and the log's newest (`head`); a required sink refuses while it is down
    /// or more than `max_lag` records behind.
    pub fn set(&self, status: &SinkStatus, up: bool, shipped: u64, head: u64, max_lag: u64) {
        status.up.store(up, Ordering::Relaxed);
        status.shipped.store(shipped, Ordering::Relaxed);
        let refuse = status.required && (!up || head.saturating_sub(shipped) > max_lag);
        if status.refusing.swap(refuse, Ordering::AcqRel) != refuse {
            match refuse {
                true => self.refusing.fetch_add(1, Ordering::AcqRel),
                false => self.refusing.fetch_sub(1, Ordering::AcqRel),
            };
        }
    }

    /// Every sink, in the order they were added.
    pub fn sinks(&self) -> Vec<Arc<SinkStatus>> {
        self.sinks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why records cannot be taken now: `audit sink X is not taking records`, naming the first
    /// required sink that refuses; `None` when every required sink takes them.
    pub fn refusal(&self) -> Option<String> {
        if self.refusing.load(Ordering::Acquire) == 0 {
            return None;
        }
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let s = sinks.iter().find(|s| s.refusing.load(Ordering::Acquire))?;
        Some(format!("audit sink {} is not taking records", s.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_required_sink_that_is_down_or_behind_refuses() {
        let board = SinkBoard::default();
        let optional = board.add("file", false);
        assert_eq!(board.refusal(), None, "an optional sink never refuses");
        let required = board.add("socket", true);
        assert_eq!(board.refusal().as_deref(), Some("audit sink socket is not taking records"));
        board.set(&required, true, 95, 100, 10);
        assert_eq!(board.refusal(), None);
        board.set(&required, true, 89, 100, 10);
        assert!(board.refusal().is_some(), "lag past the bound refuses");
        board.set(&optional, false, 0, 1_000, 10);
        board.set(&required, true, 100, 100, 10);
        assert_eq!(board.refusal(), None);
        assert_eq!((optional.up(), optional.lag(1_000)), (false, 1_000));
    }
}
