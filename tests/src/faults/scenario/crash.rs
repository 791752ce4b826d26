//! The `crash-in-apply` nemesis: a member killed by a fail point between its Raft log and its
//! state machine (`vault_raft::crash_points`), under the clients' load, once per window and
//! role.
//!
//! A point is armed through `FAILPOINTS` at a node's start, so each strike kills the victim,
//! restarts it with the point armed a few seconds of entries ahead, and (for a leader strike)
//! hands it the leadership; it then kills itself at the first batch at or past that index,
//! and is restarted without the point. The history's check is what proves the window safe: no
//! acknowledged write lost, none applied twice.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vault_raft::crash_points::{APPLY_AFTER_WRITE, APPLY_BEFORE_WRITE};

use super::{status, wait_serving, Ctx, Impact};

/// How long a strike waits for the armed node to reach its point.
const REACH_WITHIN: Duration = Duration::from_secs(30);

impl Ctx<'_> {
    pub(super) async fn crash_in_apply(&mut self) -> anyhow::Result<()> {
        let strikes = [
            (APPLY_BEFORE_WRITE, true),
            (APPLY_AFTER_WRITE, false),
            (APPLY_AFTER_WRITE, true),
            (APPLY_BEFORE_WRITE, false),
        ];
        for (point, leader) in strikes {
            self.crash_at(point, leader).await?;
        }
        Ok(())
    }

    /// Entries the cluster appends per second under the load, at least 1.
    async fn entries_per_second(&mut self) -> anyhow::Result<u64> {
        let l = self.leader().await?;
        let token = self.nodes.token.clone();
        let first = status(l, &token).await?.last_log_index.unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let then = status(l, &token).await?.last_log_index.unwrap_or(0);
        Ok(then.saturating_sub(first).max(1))
    }

    async fn crash_at(&mut self, point: &str, leader: bool) -> anyhow::Result<()> {
        let rate = self.entries_per_second().await?;
        let (victim, role, impact) = if leader {
            (self.leader().await?, "leader", Impact::LeaderLoss)
        } else {
            (self.follower().await?, "follower", Impact::FollowerLoss)
        };
        let l = self.leader().await?;
        let token = self.nodes.token.clone();
        let now = status(l, &token).await?.last_log_index.unwrap_or(0);
        // A leader strike leaves time for the restart and the transfer.
        let at = if leader { now + 4 * rate } else { now + rate + 10 };
        let m = self.fault(format!("{point}: {role} {victim} restarted with the point armed at index {at}"), impact);
        self.nodes.kill(victim);
        self.nodes.specs[victim as usize - 1].set("FAILPOINTS", &format!("{point}=return({at})"));
        self.nodes.restart(victim);
        if leader {
            wait_serving(victim, Duration::from_secs(20)).await?;
            let from = self.leader().await?;
            if from != victim {
                let to = victim.to_string();
                if let Err(e) = self.ctl_blocking(from, vec!["cluster".into(), "transfer-leader".into(), to]).await {
                    self.say(&format!("transfer to the armed node failed: {e:#}"));
                }
            }
        }
        // Its role when last seen before the crash.
        let mut last_role = String::from("unknown");
        let deadline = Instant::now() + REACH_WITHIN;
        while !self.nodes.exited(victim) {
            if Instant::now() > deadline {
                bail!("node {victim} did not reach {point} at index {at} within {REACH_WITHIN:?} (is vault-node built with the failpoints feature? `vault-node --version`)");
            }
            if let Ok(s) = status(victim, &token).await {
                last_role = s.state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = self.nodes.spec(victim).log_path();
        let said = std::fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))?;
        if !said.contains(&format!("fail point {point} crashes the node")) {
            bail!("node {victim} exited, but not at {point}: see {}", log.display());
        }
        self.marks[m].what.push_str(&format!("; crashed there as {last_role}"));
        self.say(&format!("node {victim} crashed at {point} as {last_role}"));
        self.nodes.kill(victim);
        self.nodes.specs[victim as usize - 1].env.remove("FAILPOINTS");
        self.nodes.restart(victim);
        self.healed(m);
        self.settle().await;
        Ok(())
    }
}
