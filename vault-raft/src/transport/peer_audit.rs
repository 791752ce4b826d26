//! What members asked of this node over the Raft port, written to its audit log: forwarded
//! requests it refused, and the cluster changes it ran for them.
//!
//! A member that forwards what it may not (a bare command, a cluster change authorized by a
//! token hash, a write that is no client write) is either on an older build or misbehaving;
//! either way the operator should see it in the audit log of the node it asked. Only members
//! get this far, and each is held to a budget per minute, past which its refusals are only
//! counted, the count said in the node's log at the member's next refusal in a later minute, so
//! a hostile member cannot fill the disk through this path. A cluster change a member forwards with an admin's token is recorded as
//! the node that served the operator records it (`requested`, then the outcome), with the
//! actor named by this node's own token record, so a change made through a member is on
//! record on the node that made it too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use vault_core::model::AuditRecord;
use vault_core::time::now_ms;

use crate::audit_log::AuditLog;
use crate::typ::NodeId;

/// Refusal records a minute, per member.
const PER_MEMBER_PER_MINUTE: u32 = 30;
const MINUTE_MS: u64 = 60_000;

/// A refusal's code as the API's audit records spell it.
fn code_words(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        _ => "refused",
    }
}

/// One member's refusals in one minute: the minute, records written in it, refusals only
/// counted.
type Minute = (u64, u32, u64);

/// Each member's refusals in its latest minute.
#[derive(Default)]
struct Budget(HashMap<NodeId, Minute>);

impl Budget {
    /// Takes one refusal of `from` in `minute`: whether it is recorded one by one (within
    /// [`PER_MEMBER_PER_MINUTE`]), and how many of the member's refusals in an earlier minute
    /// were only counted, which the caller says in the node's log (0: nothing to say).
    fn take(&mut self, from: NodeId, minute: u64) -> (bool, u64) {
        let (at, written, counted) = self.0.entry(from).or_insert((minute, 0, 0));
        let mut earlier = 0;
        if *at != minute {
            earlier = *counted;
            (*at, *written, *counted) = (minute, 0, 0);
        }
        if *written >= PER_MEMBER_PER_MINUTE {
            *counted += 1;
            return (false, earlier);
        }
        *written += 1;
        (true, earlier)
    }
}

#[derive(Clone)]
pub(crate) struct PeerAudit {
    log: AuditLog,
    budget: Arc<Mutex<Budget>>,
}

impl PeerAudit {
    pub(crate) fn new(log: AuditLog) -> Self {
        PeerAudit { log, budget: Arc::default() }
    }

    /// Records that node `from` (at `addr`) was refused `what`, because `why`.
    pub(crate) fn refused(&self, from: NodeId, addr: Option<SocketAddr>, what: &str, why: &tonic::Status) {
        let (record, earlier) = self.budget.lock().unwrap_or_else(|p| p.into_inner()).take(from, now_ms() / MINUTE_MS);
        if earlier > 0 {
            tracing::warn!(
                node = from,
                refusals = earlier,
                "more forwarded requests of this member refused than recorded one by one"
            );
        }
        if !record {
            return;
        }
        self.record(
            format!("node:{from}"),
            addr,
            "raft.forward",
            what,
            format!("{}: {}", code_words(why.code()), why.message()),
        );
    }

    /// Records a cluster change node `from` (at `addr`) forwarded for `actor`: `outcome` is
    /// `requested` before it runs, then how it ended.
    pub(crate) fn change(
        &self,
        actor: &str,
        from: NodeId,
        addr: Option<SocketAddr>,
        action: &str,
        subject: &str,
        outcome: String,
    ) {
        let ip = addr.map_or_else(|| "-".to_string(), |a| a.ip().to_string());
        self.record(
            actor.to_string(),
            addr,
            action,
            subject,
            format!("{outcome} (forwarded by node {from} from {ip})"),
        );
    }

    fn record(&self, actor: String, addr: Option<SocketAddr>, action: &str, subject: &str, outcome: String) {
        let record = AuditRecord {
            seq: 0,
            time_ms: now_ms(),
            node_id: 0, // set by `AuditLog::append`
            actor,
            client_ip: addr.map_or_else(|| "-".to_string(), |a| a.ip().to_string()),
            action: action.to_string(),
            secret: Some(subject.to_string()),
            outcome,
        };
        if let Err(e) = self.log.append(record) {
            tracing::error!(error = %e, "record a member's request in the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past its budget in a minute a member's refusals are only counted; the count is handed
    /// out once, when that member's next minute begins, which starts a fresh budget. Members
    /// have budgets of their own.
    #[test]
    fn a_members_refusals_past_its_budget_are_counted_and_said_once_in_its_next_minute() {
        let mut b = Budget::default();
        let budget = PER_MEMBER_PER_MINUTE as usize;
        let first: Vec<_> = (0..budget + 12).map(|_| b.take(2, 100)).collect();
        assert!(first[..budget].iter().all(|t| *t == (true, 0)), "{first:?}");
        assert!(first[budget..].iter().all(|t| *t == (false, 0)), "{first:?}");
        assert_eq!(b.take(3, 100), (true, 0), "another member's budget is its own");
        assert_eq!(b.take(2, 101), (true, 12), "the next minute says the count and records again");
        assert_eq!(b.take(2, 101), (true, 0), "said once");
        for _ in 2..budget {
            assert_eq!(b.take(2, 101), (true, 0));
        }
        assert_eq!(b.take(2, 101), (false, 0));
        assert_eq!(b.take(2, 105), (true, 1), "a later minute, not only the next, says it");
    }
}
