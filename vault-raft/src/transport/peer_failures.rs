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

/// What the log has said about one peer, and its current failure streak.
#[derive(Debug, Default)]
struct PeerLog {
    /// When the current streak of failures began (`None`: the last call worked).
    streak_since: Option<Instant>,
    streak_failures: u64,
    /// Whether the current streak has had its first line.
    reported: bool,
    /// When a line about this peer was last written.
    last_line: Option<Instant>,
    /// Failures since that line (including short streaks never reported on their own).
    unreported: u64,
}

/// What to log after a call, if anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// A streak's first line; `earlier` failures (short streaks, each over before it was
    /// reported) came since the last line about this peer.
    Failing { earlier: u64 },
    /// A streak went on for another period: this many failures since the last line.
    StillFailing { failures: u64, for_secs: u64 },
    /// A call worked after a reported streak of this many failures.
    Recovered { failures: u64, for_secs: u64 },
}

/// The failure streaks of this node's calls to each peer, shared by all its Raft clients.
/// At most one line per peer per [`SUMMARY_EVERY`] says that calls fail, so a peer that
/// keeps failing and recovering (a slow link) is summarised too, plus one line when a
/// reported streak ends.
#[derive(Clone, Debug, Default)]
pub struct PeerFailures {
    peers: Arc<Mutex<HashMap<NodeId, PeerLog>>>,
}

impl PeerFailures {
    /// Records a call to `peer` that failed (`Some(error)`) or worked (`None`), and logs what
    /// an operator should see.
    pub fn record(&self, peer: NodeId, error: Option<&dyn std::fmt::Display>) {
        match (self.note(peer, error.is_some(), Instant::now()), error) {
            (Some(Report::Failing { earlier }), Some(e)) => tracing::warn!(
                peer,
                error = %e,
                earlier_failures = earlier,
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
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let p = peers.entry(peer).or_default();
        if !failed {
            let since = p.streak_since.take()?;
            let failures = std::mem::take(&mut p.streak_failures);
            if !std::mem::take(&mut p.reported) {
                return None;
            }
            p.last_line = Some(now);
            p.unreported = 0;
            return Some(Report::Recovered { failures, for_secs: now.duration_since(since).as_secs() });
        }
        let since = *p.streak_since.get_or_insert(now);
        p.streak_failures += 1;
        p.unreported += 1;
        if p.last_line.is_some_and(|at| now.duration_since(at) < SUMMARY_EVERY) {
            return None;
        }
        p.last_line = Some(now);
        let unreported = std::mem::take(&mut p.unreported);
        if std::mem::replace(&mut p.reported, true) {
            Some(Report::StillFailing { failures: unreported, for_secs: now.duration_since(since).as_secs() })
        } else {
            Some(Report::Failing { earlier: unreported - 1 })
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
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(f.note(2, false, t0), None, "calls that work say nothing");
        assert_eq!(f.note(2, true, t0), Some(Report::Failing { earlier: 0 }));
        for i in 1..200 {
            assert_eq!(f.note(2, true, at(i * 100)), None, "retry {i}");
        }
        assert_eq!(f.note(3, true, t0), Some(Report::Failing { earlier: 0 }), "each peer has its own streak");
        let later = t0 + SUMMARY_EVERY + Duration::from_secs(1);
        assert_eq!(f.note(2, true, later), Some(Report::StillFailing { failures: 200, for_secs: 31 }));
        assert_eq!(f.note(2, true, later + Duration::from_secs(1)), None);
        assert_eq!(
            f.note(2, false, later + Duration::from_secs(2)),
            Some(Report::Recovered { failures: 202, for_secs: 33 })
        );
        assert_eq!(f.note(2, false, later + Duration::from_secs(3)), None);
    }

    #[test]
    fn a_peer_that_keeps_failing_and_recovering_is_summarised_not_logged_per_flap() {
        let f = PeerFailures::default();
        let t0 = Instant::now();
        assert_eq!(f.note(2, true, t0), Some(Report::Failing { earlier: 0 }));
        assert_eq!(f.note(2, false, t0 + Duration::from_secs(1)), Some(Report::Recovered { failures: 1, for_secs: 1 }));
        // Flaps within the quiet period: nothing, however many.
        let mut lines = 0;
        for i in 0..100 {
            let t = t0 + Duration::from_secs(2) + Duration::from_millis(i * 200);
            lines += usize::from(f.note(2, true, t).is_some());
            lines += usize::from(f.note(2, false, t + Duration::from_millis(100)).is_some());
        }
        assert_eq!(lines, 0);
        // The next failure after the quiet period is reported with the flaps before it.
        let later = t0 + SUMMARY_EVERY + Duration::from_secs(2);
        assert_eq!(f.note(2, true, later), Some(Report::Failing { earlier: 100 }));
        assert_eq!(f.note(2, false, later), Some(Report::Recovered { failures: 1, for_secs: 0 }));
    }
}
