//! The leader-gated DEK re-wrap worker.
//!
//! Runs on every node, acts only while the node is leader. With AWS KMS it polls
//! ListKeyRotations; on its first run it adopts the newest rotation as the cluster watermark
//! without sweeping. With the local keyring a rotation is `vaultctl kms rotate`, recorded in
//! replicated state, and the first run's baseline is 0 (every older DEK moves, so the old key
//! can leave the keyring). When a newer rotation appears, a pass walks every version still holding a wrapped DEK below it,
//! ReEncrypts the DEK inside KMS (same encryption context), and commits each result through
//! Raft with an idempotent command, paced to `VAULT_KMS_REWRAP_MAX_PER_SEC`. The cluster
//! watermark advances only after a pass with no failures. Progress lives in the replicated
//! per-version watermarks, so a pass interrupted by a leader change or crash is resumed by the
//! next leader, skipping what is done.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vault_core::kms::KeyManager;

use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};
use vault_core::kms::EncryptionContext;
use vault_core::SecretName;
use vault_raft::transport::{ForwardError, ForwardRequest};
use vault_raft::Command;

use crate::config::RewrapConfig;
use crate::vault::Vault;

const BATCH: usize = 128;
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a local-keyring worker looks for a rotation in the replicated state.
const LOCAL_ROTATION_CHECK: Duration = Duration::from_secs(2);
/// After a pass with failures, try again this soon (or at the poll interval, if shorter).
const RETRY_AFTER_FAILURES: Duration = Duration::from_secs(30);
/// How long a re-wrap request waits for the worker's answer: well within the API's request
/// limit, so the caller hears the pass's progress or "retry", never a bare cancellation.
const KICK_WAIT: Duration = Duration::from_secs(10);

/// What a forced pass (`vaultctl kms rewrap`) did.
#[derive(Clone, Debug)]
pub enum KickOutcome {
    Adopted {
        watermark_ms: u64,
    },
    UpToDate {
        watermark_ms: u64,
    },
    Started {
        target_ms: u64,
        pending: u64,
    },
    /// A pass was already under way: the worker takes requests only between passes, which
    /// can take hours, so the request is answered with the pass's progress instead.
    Running {
        target_ms: Option<u64>,
        done: u64,
        total: u64,
    },
    Failed(String),
}

/// Progress of the current or last pass on this node.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub running: bool,
    pub target_ms: Option<u64>,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    pub latest_rotation_ms: Option<u64>,
}

pub struct Rewrapper {
    vault: Arc<Vault>,
    config: RewrapConfig,
    kick_tx: mpsc::Sender<oneshot::Sender<KickOutcome>>,
    kick_rx: Mutex<Option<mpsc::Receiver<oneshot::Sender<KickOutcome>>>>,
    progress: Mutex<Progress>,
}

impl Rewrapper {
    pub fn new(vault: Arc<Vault>, config: RewrapConfig) -> Arc<Self> {
        let (kick_tx, kick_rx) = mpsc::channel(4);
        Arc::new(Rewrapper {
            vault,
            config,
            kick_tx,
            kick_rx: Mutex::new(Some(kick_rx)),
            progress: Mutex::new(Progress::default()),
        })
    }

    /// Whether this node's worker may run: the key manager rotates, and either rotations are
    /// the cluster's own (local keyring: `vaultctl kms rotate` is the operator's go-ahead) or
    /// the worker is configured on.
    pub fn enabled(&self) -> bool {
        let kms = &self.vault.kms;
        kms.supports_rotation() && (self.config.enabled || kms.rotates_through_cluster())
    }

    /// The newest rotation of the master key (ms): for the local keyring, when `kms rotate`
    /// made the current key current (replicated state); for AWS, ListKeyRotations.
    pub async fn latest_rotation(&self) -> Result<Option<u64>, String> {
        if self.vault.kms.rotates_through_cluster() {
            let mk = self.vault.reader.master_key().map_err(|e| format!("read the master key: {e}"))?;
            return Ok(mk.and_then(|mk| mk.rotated_at_ms()));
        }
        self.vault.kms.latest_rotation_ms().await.map_err(|e| format!("ListKeyRotations: {e}"))
    }

    /// The key DEKs are re-wrapped onto: the cluster's current master key.
    fn target_key(&self) -> Result<String, String> {
        match self.vault.reader.master_key() {
            Ok(Some(mk)) => Ok(mk.key_id),
            Ok(None) => Ok(self.vault.kms.key_id().to_string()),
            Err(e) => Err(format!("read the master key: {e}")),
        }
    }

    pub fn progress(&self) -> Progress {
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn is_leader(&self) -> bool {
        self.vault.cluster.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Asks the worker for a pass now; answers once it has started one or decided there is
    /// nothing to do.
    pub async fn kick(&self) -> KickOutcome {
        if let Some(running) = self.running() {
            return running;
        }
        let (tx, rx) = oneshot::channel();
        match self.kick_tx.try_send(tx) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return KickOutcome::Failed("the re-wrap worker is not running".into());
            }
            // Requests already wait for the worker: this one adds nothing.
            Err(mpsc::error::TrySendError::Full(_)) => {
                return self
                    .running()
                    .unwrap_or_else(|| KickOutcome::Failed("the re-wrap worker is busy; retry".into()));
            }
        }
        match tokio::time::timeout(KICK_WAIT, rx).await {
            Ok(reply) => reply.unwrap_or_else(|_| KickOutcome::Failed("the re-wrap worker stopped".into())),
            // A pass that began meanwhile (the request stays queued and is acted on after it),
            // or a slow check with the key manager.
            Err(_) => self.running().unwrap_or_else(|| {
                KickOutcome::Failed(format!("the re-wrap worker did not answer in {KICK_WAIT:?}; retry"))
            }),
        }
    }

    /// The running pass's progress, if one runs.
    fn running(&self) -> Option<KickOutcome> {
        let p = self.progress();
        p.running.then_some(KickOutcome::Running { target_ms: p.target_ms, done: p.done, total: p.total })
    }

    /// Runs until `stop` flips. Owned by the server; a no-op loop when disabled.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Some(mut kicks) = self.kick_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        if !self.enabled() {
            // Still answer kicks, so callers get a clear refusal instead of a hang.
            loop {
                tokio::select! {
                    k = kicks.recv() => match k {
                        Some(reply) => { let _ = reply.send(KickOutcome::Failed("the re-wrap worker is disabled".into())); }
                        None => return,
                    },
                    _ = stop.cancelled() => return,
                }
            }
        }
        let mut metrics = self.vault.cluster.raft.metrics();
        let mut reply: Option<oneshot::Sender<KickOutcome>> = None;
        loop {
            let leader = self.is_leader();
            let mut wait = self.config.poll;
            if self.vault.kms.rotates_through_cluster() {
                // A rotation is a committed command; checking for one reads local state only.
                wait = wait.min(LOCAL_ROTATION_CHECK);
            }
            if leader {
                let outcome = self.tick(&mut reply).await;
                if let KickOutcome::Failed(e) = &outcome {
                    tracing::warn!(error = %e, "re-wrap check failed");
                    self.update(|p| p.last_error = Some(e.clone()));
                }
                if self.progress().failed > 0 || matches!(outcome, KickOutcome::Failed(_)) {
                    wait = wait.min(RETRY_AFTER_FAILURES);
                }
                if let Some(r) = reply.take() {
                    let _ = r.send(outcome);
                }
            } else if let Some(r) = reply.take() {
                let _ = r.send(KickOutcome::Failed("this node is no longer the leader".into()));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                k = kicks.recv() => match k {
                    Some(r) => reply = Some(r),
                    None => return,
                },
                _ = became_leader(&mut metrics, leader) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn commit(&self, cmd: Command) -> Result<(), ForwardError> {
        // Local only: a node that lost leadership stops instead of forwarding.
        self.vault.cluster.handle_local(ForwardRequest::Write(cmd), COMMIT_TIMEOUT).await.map(|_| ())
    }

    async fn tick(&self, reply: &mut Option<oneshot::Sender<KickOutcome>>) -> KickOutcome {
        let latest = match self.latest_rotation().await {
            Ok(l) => l,
            Err(e) => return KickOutcome::Failed(e),
        };
        self.update(|p| p.latest_rotation_ms = latest);
        let state = match self.vault.reader.rewrap_state() {
            Ok(s) => s,
            Err(e) => return KickOutcome::Failed(format!("read re-wrap state: {e}")),
        };
        let Some(watermark) = state.watermark_ms else {
            // AWS keeps old key material, so the first run adopts the newest rotation without
            // a sweep. A local key that was rotated away may leave the keyring: every version
            // wrapped before the rotation must move, so the baseline is the beginning.
            let adopt = if self.vault.kms.rotates_through_cluster() { 0 } else { latest.unwrap_or(0) };
            return match self.commit(Command::AdoptRewrapWatermark { watermark_ms: adopt }).await {
                Ok(()) => {
                    tracing::info!(watermark_ms = adopt, "re-wrap worker adopted the newest rotation as its baseline");
                    KickOutcome::Adopted { watermark_ms: adopt }
                }
                Err(e) => KickOutcome::Failed(format!("adopt watermark: {e}")),
            };
        };
        match latest.filter(|t| *t > watermark) {
            None => KickOutcome::UpToDate { watermark_ms: watermark },
            Some(target) => self.pass(target, reply).await,
        }
    }

    async fn pass(&self, target: u64, reply: &mut Option<oneshot::Sender<KickOutcome>>) -> KickOutcome {
        let reader = self.vault.reader.clone();
        let pending = match tokio::task::spawn_blocking(move || reader.rewrap_counts(Some(target))).await {
            Ok(Ok((_, pending))) => pending,
            Ok(Err(e)) => return KickOutcome::Failed(format!("count versions: {e}")),
            Err(e) => return KickOutcome::Failed(format!("count versions: {e}")),
        };
        tracing::info!(target_ms = target, pending, "re-wrap pass starting");
        self.update(|p| {
            *p = Progress {
                running: true,
                target_ms: Some(target),
                total: pending,
                latest_rotation_ms: p.latest_rotation_ms,
                ..Default::default()
            }
        });
        if let Some(r) = reply.take() {
            let _ = r.send(KickOutcome::Started { target_ms: target, pending });
        }
        let outcome = self.sweep(target).await;
        let (done, failed) = {
            let p = self.progress();
            (p.done, p.failed)
        };
        let result = match outcome {
            Err(why) => KickOutcome::Failed(why),
            Ok(()) if failed > 0 => {
                KickOutcome::Failed(format!("{failed} version(s) failed; the pass will be retried"))
            }
            Ok(()) => match self.commit(Command::AdvanceRewrapWatermark { watermark_ms: target }).await {
                Ok(()) => {
                    tracing::info!(target_ms = target, done, "re-wrap pass complete; watermark advanced");
                    KickOutcome::Started { target_ms: target, pending }
                }
                Err(e) => KickOutcome::Failed(format!("advance watermark: {e}")),
            },
        };
        self.update(|p| p.running = false);
        result
    }

    /// Walks the pending versions once. `Err` when the pass had to stop (leadership lost).
    async fn sweep(&self, target: u64) -> Result<(), String> {
        let interval = match self.config.max_per_sec {
            0 => None,
            n => Some(Duration::from_secs_f64(1.0 / f64::from(n))),
        };
        let mut next_slot = Instant::now();
        let mut cursor: Option<(String, u64)> = None;
        let to_key = self.target_key()?;
        loop {
            let reader = self.vault.reader.clone();
            let after = cursor.clone();
            let batch = tokio::task::spawn_blocking(move || reader.pending_rewrap(after.as_ref(), target, BATCH))
                .await
                .map_err(|e| format!("scan versions: {e}"))?
                .map_err(|e| format!("scan versions: {e}"))?;
            if batch.is_empty() {
                return Ok(());
            }
            for item in batch {
                cursor = Some((item.name.clone(), item.version));
                if !self.is_leader() {
                    return Err("lost leadership; the new leader resumes the pass".into());
                }
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next_slot.into()).await;
                    next_slot = next_slot.max(Instant::now()) + iv;
                }
                let result = match SecretName::parse(&item.name) {
                    Err(e) => Err(e.to_string()),
                    Ok(name) => {
                        let ctx = EncryptionContext::new(&name, item.version);
                        match self.vault.kms.rewrap_data_key(&item.key_id, &item.wrapped, &ctx, &to_key).await {
                            Err(e) => Err(e.to_string()),
                            Ok(new) => {
                                let cmd = Command::RewrapVersion {
                                    name: item.name.clone(),
                                    version: item.version,
                                    from_wrapped: item.wrapped.clone(),
                                    key_id: new.key_id,
                                    wrapped_dek: new.wrapped,
                                    watermark_ms: target,
                                };
                                match self.commit(cmd).await {
                                    Err(ForwardError::NotLeader { .. }) => {
                                        return Err("lost leadership; the new leader resumes the pass".into())
                                    }
                                    other => other.map_err(|e| e.to_string()),
                                }
                            }
                        }
                    }
                };
                match result {
                    Ok(()) => self.update(|p| p.done += 1),
                    Err(e) => {
                        tracing::warn!(secret = %item.name, version = item.version, error = %e, "re-wrap failed");
                        self.update(|p| {
                            p.failed += 1;
                            p.last_error = Some(format!("{}:{}: {e}", item.name, item.version));
                        });
                    }
                }
            }
        }
    }
}

/// Resolves when this node goes from not leading to leading.
async fn became_leader(metrics: &mut watch::Receiver<vault_raft::typ::RaftMetrics>, mut was_leader: bool) {
    loop {
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let now = metrics.borrow().state == ServerState::Leader;
        if now && !was_leader {
            return;
        }
        was_leader = now;
    }
}
