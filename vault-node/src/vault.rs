//! The vault's operations over Raft and the local state: what the gRPC handlers call.

use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;
use tonic::Status;
use vault_core::dek_cache::DekCache;
use vault_core::envelope;

use vault_core::model::{
    audit_field, Action, AuditRecord, VersionRecord, VersionState, MAX_REFUSAL_OUTCOME, MAX_REFUSED_NAME,
};
use vault_core::time::now_ms;
use vault_core::{CoreError, SecretBytes, SecretName};
use vault_raft::transport::{CallerWrite, ForwardRequest, ForwardResponse};
use vault_raft::{AuditLog, Cluster, Command, CommandResponse, StateReader};

use crate::auth::caller::Caller;
use crate::auth::refusals::RefusalLimiter;
use crate::error::{code_words, ApiError};
use crate::kms::MeteredKms;

/// How long a write may wait for its Raft commit before the caller is told to retry.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Vault {
    pub node_id: u64,
    pub cluster: Cluster,
    /// Whether this node has a Raft listener and can reach peers.
    pub transport_enabled: bool,
    pub reader: StateReader,
    pub audit_log: AuditLog,
    /// The configured key manager, timed and watched (see [`MeteredKms`]).
    pub kms: Arc<MeteredKms>,
    pub dek_cache: DekCache,
    pub max_value_bytes: usize,
    /// Largest backup a restore takes, in bytes (`VAULT_RESTORE_MAX_MB`).
    pub restore_max_bytes: u64,
    /// Per-address limit on recording refusals.
    pub refusals: RefusalLimiter,
    /// Where backups are written before they are sent and restores are received before they are
    /// checked (inside the data directory; emptied at start).
    pub scratch_dir: std::path::PathBuf,
    /// Alive and ready, as `/healthz`, `/readyz`, gRPC health and `vaultctl status` say.
    pub health: Arc<crate::observe::Health>,
    /// Writes to one name take turns on this node.
    pub name_queue: crate::name_queue::NameQueue,
    /// Wakes this node's rotation worker (a `RotateSecret` it took committed) rather than
    /// leaving the attempt to its next once-a-second look.
    pub rotation_wake: tokio::sync::Notify,
}

/// Whether a status is a refusal (rate-limited in the audit log).
fn is_refusal(s: &Status) -> bool {
    matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
}

impl Vault {
    /// The leader's API address, as recorded in the membership.
    pub fn leader_api_addr(&self) -> Option<String> {
        self.cluster.leader().map(|(_, n)| n.api_addr)
    }

    /// Returns once this node has applied everything committed before the call: reads after
    /// it are linearizable, on the leader and on followers alike.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        Ok(self.cluster.read_barrier(WRITE_TIMEOUT).await?)
    }

    /// Proposes a client write on behalf of `caller` (forwarded to the leader when this node
    /// is not it); returns once a quorum committed it and the leader applied it. The command
    /// travels with the caller's token, and applying it authorizes it again against the
    /// replicated state. Refused while this node does not hold the cluster's master key.
    pub async fn write_as(&self, caller: &Caller, cmd: Command) -> Result<CommandResponse, ApiError> {
        crate::master_key::sealing_key(self)?;
        self.propose_as(caller, cmd).await
    }

    /// [`write_as`](Self::write_as) for a caller that has already checked the master key (a
    /// put, which sealed under it).
    async fn propose_as(&self, caller: &Caller, cmd: Command) -> Result<CommandResponse, ApiError> {
        // This node's disk: the leader checks its own again before it proposes.
        self.cluster.room.check().map_err(Status::resource_exhausted)?;
        // A required audit sink that does not take records refuses the change before it can
        // commit (the leader checks its own sinks again).
        if let Some(why) = self.audit_log.sinks().refusal() {
            return Err(Status::unavailable(format!("{why}; change refused")).into());
        }
        // The leader authorizes, stamps and audits the write from the token itself.
        let write = CallerWrite {
            token: caller.presented_token()?,
            cmd,
            client_ip: caller.ip.to_string(),
            action: caller.action.to_string(),
        };
        // From here the change may commit: its record travels with it.
        caller.mark_proposed();
        match self.cluster.submit(ForwardRequest::CallerWrite(write), WRITE_TIMEOUT).await? {
            ForwardResponse::Written(r) => Ok(r),
            other => Err(Status::internal(format!("unexpected reply to a write: {other:?}")).into()),
        }
    }

    /// [`write_as`](Self::write_as), with a deterministic rejection turned into its status.
    pub async fn write_ok(&self, caller: &Caller, cmd: Command) -> Result<CommandResponse, ApiError> {
        match self.write_as(caller, cmd).await? {
            CommandResponse::Rejected(r) => Err(r.into()),
            other => Ok(other),
        }
    }

    /// Proposes a command this node makes itself (bootstrap, master key), on this node only:
    /// peers never accept such commands forwarded, so a follower gets `UNAVAILABLE`.
    pub async fn write_local(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        match self.cluster.handle_local(ForwardRequest::Write(cmd), WRITE_TIMEOUT).await? {
            ForwardResponse::Written(r) => Ok(r),
            other => Err(Status::internal(format!("unexpected reply to a write: {other:?}")).into()),
        }
    }

    /// Records a read: its outcome, and the reader rule that allowed it (when rules exist).
    /// Returns once the record is written, in one write with the records of concurrent reads
    /// (see `vault_raft::AuditLog::append_all`); refusals go through [`Self::audit`].
    pub async fn audit_read<T>(
        &self,
        caller: &Caller,
        secret: &str,
        result: &Result<T, Status>,
        rule: Option<&str>,
    ) -> Result<(), Status> {
        match self.read_record(caller, secret, result, rule) {
            Some(record) => self.audit_reads(vec![record]).await,
            None => self.audit(caller, Some(secret), result),
        }
    }

    /// The record of a read, for [`Self::audit_reads`]; `None` for a refusal (rate-limited
    /// by [`Self::audit`]) or a call whose change was proposed (recorded when applied).
    pub fn read_record<T>(
        &self,
        caller: &Caller,
        secret: &str,
        result: &Result<T, Status>,
        rule: Option<&str>,
    ) -> Option<AuditRecord> {
        let outcome = match (result, rule) {
            _ if caller.was_proposed() => return None,
            (Err(s), _) if is_refusal(s) => return None,
            (Ok(_), Some(rule)) => format!("ok (reader rule {rule})"),
            (Ok(_), None) => "ok".to_string(),
            (Err(s), _) => format!("{}: {}", code_words(s.code()), s.message()),
        };
        Some(self.record(caller.actor(), caller.ip.to_string(), caller.action, Some(secret), outcome))
    }

    /// Writes the records of reads (see [`Self::read_record`]) as one batch, shared with
    /// concurrent reads; returns once they are written. A failure fails the request.
    pub async fn audit_reads(&self, records: Vec<AuditRecord>) -> Result<(), Status> {
        if records.is_empty() {
            return Ok(());
        }
        self.audit_log.append_all(records).await.map_err(audit_write_refused)
    }

    /// Records a call this node served, unless its change was proposed (the apply step records
    /// changes, with their outcome, on every node). A refusal (PERMISSION_DENIED,
    /// UNAUTHENTICATED) goes through the per-address refusal limit: past it the call answers
    /// RESOURCE_EXHAUSTED and is counted for a summary instead. A failure to record fails the
    /// request.
    pub fn audit<T>(&self, caller: &Caller, secret: Option<&str>, result: &Result<T, Status>) -> Result<(), Status> {
        if caller.was_proposed() {
            return Ok(());
        }
        match result {
            Err(s) if is_refusal(s) => {
                match self.audit_refusal(caller.actor(), caller.ip, caller.action, secret, s.clone()) {
                    e if e.code() == s.code() => Ok(()),
                    other => Err(other),
                }
            }
            _ => {
                let outcome = match result {
                    Ok(_) => "ok".to_string(),
                    Err(s) => format!("{}: {}", code_words(s.code()), s.message()),
                };
                self.audit_raw(caller.actor(), caller.ip.to_string(), caller.action, secret, outcome)
            }
        }
    }

    /// Records a refusal and returns the status to answer with: `refusal` itself, or
    /// RESOURCE_EXHAUSTED once `ip` is past its refusal rate (then it is only counted, and a
    /// summary record names the count), or UNAVAILABLE if the record cannot be written.
    pub fn audit_refusal(
        &self,
        actor: String,
        ip: IpAddr,
        action: &'static str,
        secret: Option<&str>,
        refusal: Status,
    ) -> Status {
        if !self.refusals.admit(ip, action, now_ms()) {
            return Status::resource_exhausted(format!(
                "too many refused requests from {ip} (or from all clients together); retry in {} s",
                self.refusals.retry_after_secs()
            ));
        }
        // Refusals are the records a client can make at will: their names and reasons are kept
        // short.
        let outcome =
            audit_field(&format!("{}: {}", code_words(refusal.code()), refusal.message()), MAX_REFUSAL_OUTCOME);
        let secret = secret.map(|s| audit_field(s, MAX_REFUSED_NAME));
        match self.audit_raw(actor, ip.to_string(), action, secret.as_deref(), outcome) {
            Ok(()) => refusal,
            Err(e) => e,
        }
    }

    /// Writes the summaries of refusals that were only counted (windows that ended, or all).
    pub fn flush_refusal_summaries(&self, all: bool) {
        for s in self.refusals.take_summaries(now_ms(), all) {
            let from = s.ip.map_or_else(|| "other addresses".to_string(), |ip| ip.to_string());
            let outcome = format!(
                "{} more refusal(s) from {from} in the {} s from {} (over the refusal rate: counted, not recorded one by one)",
                s.count,
                crate::auth::refusals::WINDOW_MS / 1000,
                s.window_start_ms
            );
            let _ = self.audit_raw(from.clone(), from, s.action, None, outcome);
        }
    }

    pub fn audit_raw(
        &self,
        actor: String,
        client_ip: String,
        action: &str,
        secret: Option<&str>,
        outcome: String,
    ) -> Result<(), Status> {
        let record = self.record(actor, client_ip, action, secret, outcome);
        self.audit_log.append(record).map_err(audit_write_refused)
    }

    fn record(
        &self,
        actor: String,
        client_ip: String,
        action: &str,
        secret: Option<&str>,
        outcome: String,
    ) -> AuditRecord {
        // `seq` and `node_id` are assigned by the audit log, which also caps every field.
        AuditRecord {
            seq: 0,
            time_ms: now_ms(),
            node_id: 0,
            actor,
            client_ip,
            action: action.to_string(),
            secret: secret.map(str::to_string),
            outcome,
        }
    }

    /// A new version of `name`. Seals here (fresh DEK, AAD `name:version`), then commits
    /// through Raft; re-seals for the next version if a concurrent write took this one.
    pub async fn put_secret(
        &self,
        caller: &Caller,
        name: &SecretName,
        value: &SecretBytes,
        expected_version: Option<u64>,
        max_versions: Option<u32>,
    ) -> Result<u64, ApiError> {
        if value.len() > self.max_value_bytes {
            return Err(CoreError::ValueTooLarge { len: value.len(), max: self.max_value_bytes }.into());
        }
        if let Some(m) = max_versions {
            if m == 0 || m > vault_core::model::MAX_MAX_VERSIONS {
                return Err(Status::invalid_argument(format!(
                    "max_versions must be between 1 and {}",
                    vault_core::model::MAX_MAX_VERSIONS
                ))
                .into());
            }
        }
        // Writers to one name take turns on this node. The first attempt trusts this node's
        // state for the version to seal; the apply step checks version, check-and-set and
        // authorization against the replicated state. A write through another node can still
        // take the version: then this one pays for a linearizable read and re-seals, until it
        // lands or the write's time is up. Only check-and-set writes can conflict for good.
        let _turn = self.name_queue.turn(name.as_str()).await?;
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        for attempt in 0.. {
            if attempt > 0 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                self.linearize().await?;
            }
            let meta = self.reader.secret_meta(name.as_str())?;
            let current = meta.as_ref().map_or(0, |m| m.current_version);
            // The refusal does not say which of create and update was missing: that would tell
            // a token without `list` whether the name exists.
            caller
                .require(if meta.is_none() { Action::Create } else { Action::Update }, name.as_str())
                .map_err(|_| Status::permission_denied(format!("{} may not write {name}", caller.actor())))?;
            let version = current
                .checked_add(1)
                .ok_or_else(|| Status::failed_precondition(format!("secret {name} has used every version number")))?;
            let key_id = crate::master_key::sealing_key(self)?;
            let sealed = envelope::seal(self.kms.as_ref(), &key_id, name, version, value).await?;
            let cmd = Command::PutSecret {
                name: name.to_string(),
                version,
                sealed,
                expected_version,
                max_versions,
                now_ms: now_ms(),
                auth: None,
            };
            match self.propose_as(caller, cmd).await? {
                CommandResponse::Written { version } => return Ok(version),
                // Another write took the version, or a rotation changed the key meanwhile:
                // re-seal for the state after a linearizable read.
                CommandResponse::Rejected(
                    vault_raft::Rejection::VersionConflict { .. } | vault_raft::Rejection::WrongMasterKey { .. },
                ) => continue,
                // The current version would tell a token that may not list the name whether it
                // exists (a check-and-set no version matches writes nothing).
                CommandResponse::Rejected(vault_raft::Rejection::CasMismatch { expected, .. })
                    if !caller.allows(Action::List, name.as_str()) =>
                {
                    return Err(Status::failed_precondition(format!(
                        "check-and-set failed: version {expected} is not the current one"
                    ))
                    .into())
                }
                CommandResponse::Rejected(r) => return Err(r.into()),
                other => return Err(Status::internal(format!("unexpected response to a put: {other:?}")).into()),
            }
        }
        Err(Status::unavailable(format!(
            "writes to {name} through other nodes kept taking the next version for {WRITE_TIMEOUT:?}; retry"
        ))
        .into())
    }

    /// The newest live version (`version == 0`) or the given one, opened, as this node has
    /// applied it: callers make the read linearizable first ([`Self::linearize`]).
    pub async fn open_secret(&self, name: &SecretName, version: u64) -> Result<(VersionRecord, SecretBytes), ApiError> {
        let record = if version == 0 {
            self.reader
                .latest_live(name.as_str())?
                .ok_or_else(|| Status::not_found(format!("secret {name} does not exist or has no live version")))?
        } else {
            let r = self
                .reader
                .version(name.as_str(), version)?
                .ok_or_else(|| Status::not_found(format!("version {version} of {name} does not exist")))?;
            match r.state {
                VersionState::Live => r,
                VersionState::Deleted { .. } => {
                    return Err(Status::not_found(format!("version {version} of {name} is deleted")).into())
                }
                VersionState::Destroyed { .. } => {
                    return Err(Status::not_found(format!("version {version} of {name} is destroyed")).into())
                }
            }
        };
        let sealed = record
            .sealed
            .as_ref()
            .ok_or_else(|| Status::internal(format!("live version {} of {name} has no ciphertext", record.version)))?;
        let value = envelope::open(self.kms.as_ref(), Some(&self.dek_cache), name, record.version, sealed).await?;
        Ok((record, value))
    }
}

/// The status of a request refused because its audit record could not be written: the
/// writer being too far behind (busy, retry) is said as such and not logged per request; any
/// other failure is logged.
fn audit_write_refused(e: vault_raft::StoreError) -> Status {
    if let vault_raft::StoreError::Busy(why) = &e {
        return Status::unavailable(format!("this node is busy: {why}; retry"));
    }
    if let vault_raft::StoreError::SinkRefuses(why) = &e {
        return Status::unavailable(format!("{why}; request refused"));
    }
    tracing::error!(error = %e, "audit log write failed");
    Status::unavailable("audit log unavailable on this node; request refused")
}
