//! Scheduled backups (`VAULT_BACKUP_EVERY`), taken by the leader only.
//!
//! Every node runs the worker; it acts only while its node leads. An attempt takes a backup
//! after a linearizable barrier (which a deposed leader cannot pass), checks it still leads,
//! and writes it to the destination under a name of its own: the cluster id, the UTC time and
//! the applied index (`vault-<cluster>-<yyyymmddThhmmssZ>-<index>.vbk`), so two leaders in a
//! handover write different files and each is whole or absent ([`super::dest`]). It then
//! reads the backup back and runs every check a restore makes, installing nothing; only a
//! verified backup counts, and only after one does retention remove this cluster's oldest
//! backups beyond `VAULT_BACKUP_KEEP` (and older than `VAULT_BACKUP_MAX_AGE`, never the
//! newest). A failed or unverifiable attempt is logged, counted and retried with a backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use vault_core::kms::KeyManager;
use vault_core::time::now_ms;

use super::dest::{cluster_id, BackupName, Destination};
use super::{check, stage, Scratch};
use crate::auth::caller::Caller;
use crate::config::BackupConfig;
use crate::error::ApiError;
use crate::pb;
use crate::vault::Vault;

/// First retry after a failure; it doubles up to the period (and this cap).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Temporary files of a crashed writer are swept once this old.
const PARTIAL_AGE: Duration = Duration::from_secs(3600);

/// What this node's worker did last.
#[derive(Clone, Debug, Default)]
struct State {
    last_success_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    failures: u64,
    failing: u64,
    last_name: String,
    last_size: u64,
    last_duration_ms: u64,
    last_error: String,
}

pub struct Backups {
    vault: Arc<Vault>,
    every: Option<Duration>,
    keep: usize,
    max_age: Option<Duration>,
    dest: Destination,
    state: Mutex<State>,
}

/// Why an attempt did not produce a verified backup.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("no longer the leader")]
    NotLeader,
    #[error("{0}")]
    Failed(String),
}

fn api_words(e: ApiError) -> String {
    let s: Status = e.into();
    s.message().to_string()
}

impl Backups {
    /// The worker, when a destination is configured.
    pub async fn new(vault: Arc<Vault>, config: BackupConfig) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(dest) = super::destination(&config).await? else { return Ok(None) };
        Ok(Some(Arc::new(Backups {
            vault,
            every: config.every,
            keep: config.keep,
            max_age: config.max_age,
            dest,
            state: Mutex::new(State::default()),
        })))
    }

    fn is_leader(&self) -> bool {
        self.vault.cluster.raft.metrics().borrow().state == ServerState::Leader
    }

    /// This cluster's id in backup names (see [`cluster_id`]).
    fn cluster(&self) -> String {
        let first = match self.vault.reader.master_key() {
            Ok(Some(mk)) => mk.previous.first().cloned().unwrap_or(mk.key_id),
            _ => self.vault.kms.key_id().to_string(),
        };
        cluster_id(&first)
    }

    /// Runs until `stop`: while leading, a backup every period, retried after failures.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(every) = self.every else { return };
        let tick = (every / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
        let mut was_leader = false;
        let mut due = Instant::now() + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.cancelled() => return,
            }
            let leader = self.is_leader();
            if leader && !was_leader {
                // A new leader goes by the newest backup at the destination, not its own clock.
                due = self.due_after_newest(every).await;
            }
            was_leader = leader;
            if !leader || Instant::now() < due {
                continue;
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                r = self.attempt() => r,
                _ = stop.cancelled() => return,
            };
            match outcome {
                Ok(()) => due = started + every,
                Err(AttemptError::NotLeader) => {}
                Err(AttemptError::Failed(why)) => {
                    let failing = self.failed(&why, started.elapsed());
                    let backoff =
                        FIRST_RETRY.saturating_mul(1 << failing.min(20).saturating_sub(1)).min(every.min(MAX_RETRY));
                    due = Instant::now() + backoff;
                }
            }
        }
    }

    /// When the next backup is due, by the newest of this cluster's at the destination.
    async fn due_after_newest(&self, every: Duration) -> Instant {
        let cluster = self.cluster();
        let newest = match self.dest.list().await {
            Ok(entries) => entries.iter().filter_map(|e| BackupName::parse(&cluster, &e.name)).max(),
            Err(_) => None,
        };
        let age = newest.map(|n| Duration::from_millis(now_ms().saturating_sub(n.created_ms())));
        match age {
            Some(age) if age < every => Instant::now() + (every - age),
            _ => Instant::now(),
        }
    }

    /// Records a failure: one log line, the metrics, the state.
    fn failed(&self, why: &str, took: Duration) -> u64 {
        tracing::warn!(destination = %self.dest.describe(), error = %why, "scheduled backup failed; retrying");
        metrics::counter!("vault_backup_failures_total").increment(1);
        metrics::gauge!("vault_backup_last_failure_timestamp_seconds").set(now_ms() as f64 / 1000.0);
        metrics::gauge!("vault_backup_last_duration_seconds").set(took.as_secs_f64());
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.last_failure_ms = Some(now_ms());
        s.failures += 1;
        s.failing += 1;
        s.last_error = why.to_string();
        s.failing
    }

    /// One backup: taken, written, verified, then retention.
    async fn attempt(&self) -> Result<(), AttemptError> {
        let started = Instant::now();
        let cluster = self.cluster();
        let (file, header) = super::save(&self.vault).await.map_err(|e| AttemptError::Failed(api_words(e)))?;
        // The barrier inside `save` confirmed leadership with a quorum; a leader deposed since
        // stops here (and, were it slower, its name would still differ from the new leader's).
        if !self.is_leader() {
            return Err(AttemptError::NotLeader);
        }
        let name = BackupName::new(&cluster, header.created_ms, header.applied_index);
        self.dest.sweep_partials(&cluster, PARTIAL_AGE).await;
        let size = self.dest.put(&name.name, file).await.map_err(|e| AttemptError::Failed(e.to_string()))?;
        if let Err(why) = self.verify(&name.name).await {
            // Not a backup anyone should restore: removed, and the attempt counts as failed.
            let _ = self.dest.delete(&name.name).await;
            return Err(AttemptError::Failed(format!("{} did not verify: {why}", name.name)));
        }
        let took = started.elapsed();
        tracing::info!(backup = %name.name, bytes = size, index = header.applied_index, "scheduled backup written and verified");
        metrics::gauge!("vault_backup_last_success_timestamp_seconds").set(now_ms() as f64 / 1000.0);
        metrics::gauge!("vault_backup_last_size_bytes").set(size as f64);
        metrics::gauge!("vault_backup_last_duration_seconds").set(took.as_secs_f64());
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.last_success_ms = Some(now_ms());
            s.failing = 0;
            s.last_name = name.name.clone();
            s.last_size = size;
            s.last_duration_ms = took.as_millis() as u64;
            s.last_error.clear();
        }
        if let Err(why) = self.retain(&cluster, &name).await {
            tracing::warn!(error = %why, "backup retention failed; the new backup is kept");
        }
        Ok(())
    }

    /// Reads backup `name` back from the destination and runs a restore's checks on it.
    async fn verify(&self, name: &str) -> Result<(), String> {
        let scratch = Scratch::new(&self.vault, "verify");
        self.dest.fetch(name, &scratch.0, self.vault.restore_max_bytes).await.map_err(|e| e.to_string())?;
        let checked = check::check(&self.vault, &scratch.0).await.map_err(api_words)?;
        self.named_for(name, &checked)
    }

    /// A backup's name must be the one its authenticated header gives it: an old backup
    /// renamed to a newer name (by whoever can write to the destination) is not taken for the
    /// newest.
    fn named_for(&self, name: &str, checked: &check::Checked) -> Result<(), String> {
        let h = &checked.header;
        let cluster = BackupName::parse_any(name).map_or_else(|| self.cluster(), |(c, _)| c);
        let expected = BackupName::new(&cluster, h.created_ms, h.applied_index);
        if expected.name == name {
            Ok(())
        } else {
            Err(format!(
                "backup {name} holds the state at index {} taken as {}: its name does not match its contents (renamed?)",
                h.applied_index, expected.name
            ))
        }
    }

    /// Removes this cluster's backups beyond the newest `keep`, and those older than the
    /// maximum age, but never `newest` (just verified).
    async fn retain(&self, cluster: &str, newest: &BackupName) -> Result<(), String> {
        if self.keep == 0 && self.max_age.is_none() {
            return Ok(());
        }
        let mut names: Vec<BackupName> = self
            .dest
            .list()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter_map(|e| BackupName::parse(cluster, &e.name))
            .collect();
        names.sort();
        let excess = if self.keep > 0 { names.len().saturating_sub(self.keep) } else { 0 };
        let cutoff = self.max_age.map(|a| now_ms().saturating_sub(a.as_millis() as u64));
        for (i, n) in names.iter().enumerate() {
            let too_old = cutoff.is_some_and(|c| n.created_ms() < c);
            if n != newest && (i < excess || too_old) {
                self.dest.delete(&n.name).await.map_err(|e| e.to_string())?;
                tracing::info!(backup = %n.name, "old backup removed (retention)");
            }
        }
        Ok(())
    }

    /// The worker's state; the destination and the last error only for admins (`ServerStatus`
    /// is open to anyone).
    pub fn state(&self, admin: bool) -> pb::BackupState {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        pb::BackupState {
            every_secs: self.every.map_or(0, |d| d.as_secs()),
            destination: if admin { self.dest.describe() } else { String::new() },
            last_success_ms: s.last_success_ms,
            last_failure_ms: s.last_failure_ms,
            failures: s.failures,
            failing_since_success: s.failing,
            last_name: s.last_name,
            last_size_bytes: s.last_size,
            last_duration_ms: s.last_duration_ms,
            last_error: if admin { s.last_error } else { String::new() },
        }
    }

    /// The backups at the destination, of any cluster id, oldest first; with `verify`, each
    /// checked (a backup another master key sealed fails its check).
    pub async fn list(&self, verify: bool) -> Result<pb::ListBackupsResponse, ApiError> {
        let entries = self.dest.list().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mut found: Vec<(BackupName, u64)> =
            entries.iter().filter_map(|e| BackupName::parse_any(&e.name).map(|(_, n)| (n, e.size))).collect();
        found.sort();
        let mut backups = Vec::with_capacity(found.len());
        for (n, size) in found {
            let (verified, error) = if verify {
                match self.verify(&n.name).await {
                    Ok(()) => (true, String::new()),
                    Err(why) => (false, why),
                }
            } else {
                (false, String::new())
            };
            backups.push(pb::BackupInfo {
                created_ms: n.created_ms(),
                applied_index: n.index,
                name: n.name,
                size_bytes: size,
                verified,
                error,
            });
        }
        Ok(pb::ListBackupsResponse { destination: self.dest.describe(), backups, state: Some(self.state(true)) })
    }

    /// Restores backup `name` from the destination, through every check and Raft.
    pub async fn restore(&self, caller: &Caller, name: &str) -> Result<pb::RestoreSnapshotResponse, ApiError> {
        if BackupName::parse_any(name).is_none() {
            return Err(Status::invalid_argument(format!(
                "{name:?} is not a backup's name (vault-<cluster>-<time>-<index>.vbk): see `vaultctl snapshot list`"
            ))
            .into());
        }
        let scratch = Scratch::new(&self.vault, "restore");
        self.dest.fetch(name, &scratch.0, self.vault.restore_max_bytes).await.map_err(|e| match e {
            super::dest::DestError::NotFound(_) => Status::not_found(e.to_string()),
            super::dest::DestError::TooLarge(..) => Status::invalid_argument(e.to_string()),
            other => Status::unavailable(other.to_string()),
        })?;
        let checked = check::check(&self.vault, &scratch.0).await?;
        self.named_for(name, &checked).map_err(Status::failed_precondition)?;
        let counts = stage::stage(&self.vault, caller, &scratch.0, &checked).await?;
        drop(scratch);
        Ok(super::restored(&checked, &counts))
    }
}
