//! What the log says about a peer that does not answer: one line when calls to it start
//! failing, a summary every [`SUMMARY_EVERY`] while they go on failing, and one line when
//! they work again. openraft retries (and would log) every failed call, tens of times a
//! second while a peer is down; the node's log filter drops those lines (see vault-node's
//! `logging`), and this is what takes their place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::typ::NodeId;

/// How often a peer that keeps failing is summarised.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// Failures in a row of the calls to one peer.
#[derive(Debug)]
struct Streak {
    since: Instant,
    /// Failures since the streak began, and since the last line about it.
    total: u64,
    unreported: u64,
    last_line: Instant,
}

/// What to log after a call, if anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The first failure of a streak.
    Failing,
    /// A streak went on for another period: this many failures since the last line.
    StillFailing { failures: u64, for_secs: u64 },
    /// A call worked after a streak of this many failures.
    Recovered { failures: u64, for_secs: u64 },
}

/// The failure streaks of this node's calls to each peer, shared by all its Raft clients.
#[derive(Clone, Debug, Default)]
pub struct PeerFailures {
    streaks: Arc<Mutex<HashMap<NodeId, Streak>>>,
}

impl PeerFailures {
    /// Records a call to `peer` that failed (`Some(error)`) or worked (`None`), and logs what
    /// an operator should see.
    pub fn record(&self, peer: NodeId, error: Option<&dyn std::fmt::Display>) {
        match (self.note(peer, error.is_some(), Instant::now()), error) {
            (Some(Report::Failing), Some(e)) => tracing::warn!(
                peer,
                error = %e,
                "raft calls to this peer fail; retrying, with a summary every {}s while it lasts",
                SUMMARY_EVERY.as_secs()
            ),
            (Some(Report::StillFailing { failures, for_secs }), Some(e)) => {
                tracing::warn!(peer, failures, for_secs, last_error = %e, "raft calls to this peer still fail")
            }
            (Some(Report::Recovered { failures, for_secs }), _) => {
                tracing::info!(peer, failures, for_secs, "raft calls to this peer work again")
            }
            _ => {}
        }
    }

    fn note(&self, peer: NodeId, failed: bool, now: Instant) -> Option<Report> {
        let mut streaks = self.streaks.lock().unwrap_or_else(|p| p.into_inner());
        if !failed {
            let s = streaks.remove(&peer)?;
            return Some(Report::Recovered { failures: s.total, for_secs: now.duration_since(s.since).as_secs() });
        }
        match streaks.get_mut(&peer) {
            None => {
                streaks.insert(peer, Streak { since: now, total: 1, unreported: 0, last_line: now });
                Some(Report::Failing)
            }
            Some(s) => {
                s.total += 1;
                s.unreported += 1;
                if now.duration_since(s.last_line) < SUMMARY_EVERY {
                    return None;
                }
                s.last_line = now;
                let failures = std::mem::take(&mut s.unreported);
                Some(Report::StillFailing { failures, for_secs: now.duration_since(s.since).as_secs() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_reported_once_then_summarised_then_closed() {
        let f = PeerFailures::default();
        let t0 = Instant::now();
        assert_eq!(f.note(2, false, t0), None, "calls that work say nothing");
        assert_eq!(f.note(2, true, t0), Some(Report::Failing));
        for i in 1..200 {
            assert_eq!(f.note(2, true, t0 + Duration::from_millis(i * 100)), None, "retry {i}");
        }
        assert_eq!(f.note(3, true, t0), Some(Report::Failing), "each peer has its own streak");
        let later = t0 + SUMMARY_EVERY + Duration::from_secs(1);
        assert_eq!(f.note(2, true, later), Some(Report::StillFailing { failures: 200, for_secs: 31 }));
        assert_eq!(f.note(2, true, later + Duration::from_secs(1)), None);
        assert_eq!(
            f.note(2, false, later + Duration::from_secs(2)),
            Some(Report::Recovered { failures: 202, for_secs: 33 })
        );
        assert_eq!(f.note(2, false, later + Duration::from_secs(3)), None);
        assert_eq!(f.note(2, true, later + Duration::from_secs(4)), Some(Report::Failing), "a new streak");
    }
}
