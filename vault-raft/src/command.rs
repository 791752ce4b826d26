//! Commands replicated through Raft and what applying them returns.
//!
//! A command carries only ciphertext, wrapped keys and token hashes: sealing happens on the
//! node that receives a write, before the command enters the log. Timestamps are taken by
//! that node, so every replica applies the same bytes.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vault_core::envelope::SealedValue;
use vault_core::model::{AuditContext, HookBinding, ReaderRule, Role, RotationPolicy, TokenRecord};
use vault_core::token::TokenHash;

use crate::snapshot_file::FamilyRecord;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// First start: the built-in `admin` role and, once ever, the bootstrap token.
    Bootstrap {
        admin_role: Role,
        token: Option<TokenRecord>,
    },
    /// Writes `version` of `name`; applies only when it is exactly one past the current
    /// version, and (with `expected_version`) only when the current version matches.
    PutSecret {
        name: String,
        version: u64,
        sealed: SealedValue,
        expected_version: Option<u64>,
        max_versions: Option<u32>,
        now_ms: u64,
        /// The caller's token, authorized again when applied: the write lands only if the token
        /// still exists, has not expired at `now_ms`, and its role grants create (first
        /// version) or update on `name`. So no read barrier is needed before proposing.
        auth: Option<TokenHash>,
    },
    DeleteSecret {
        name: String,
    },
    DeleteVersions {
        name: String,
        versions: Vec<u64>,
        now_ms: u64,
    },
    UndeleteVersions {
        name: String,
        versions: Vec<u64>,
    },
    DestroyVersions {
        name: String,
        versions: Vec<u64>,
        now_ms: u64,
    },
    CreateToken {
        record: TokenRecord,
    },
    RevokeToken {
        name: String,
    },
    /// First run of the re-wrap worker: take `watermark_ms` as the cluster watermark, unless
    /// one is already set.
    AdoptRewrapWatermark {
        watermark_ms: u64,
    },
    /// A re-wrap pass to `watermark_ms` finished without failures.
    AdvanceRewrapWatermark {
        watermark_ms: u64,
    },
    /// Replaces one version's wrapped DEK with its re-wrapped form. A no-op when the version
    /// is gone or destroyed, already at or past `watermark_ms`, or no longer holds
    /// `from_wrapped` (someone else re-wrapped it). Never touches ciphertext or nonce.
    RewrapVersion {
        name: String,
        version: u64,
        #[serde(with = "vault_core::byte_buf")]
        from_wrapped: Vec<u8>,
        key_id: String,
        #[serde(with = "vault_core::byte_buf")]
        wrapped_dek: Vec<u8>,
        watermark_ms: u64,
    },
    /// Creates a role; with `replace`, also overwrites an existing one.
    PutRole {
        role: Role,
        replace: bool,
    },
    DeleteRole {
        name: String,
    },
    /// Several commands proposed together in one log entry (see `proposals`), applied in
    /// order, each with its own response, as if they were consecutive entries. Never nested.
    /// Shared, not copied: the leader hands the entry to its log, to every follower's
    /// replication and to its state machine. Encoded exactly as a `Vec` would be.
    Batch(Arc<[Command]>),
    // New variants go last: the encoding numbers variants in order, and old logs must decode.
    /// A client write with the identity of the caller who asked for it. Applying it checks,
    /// against the replicated state at `now_ms`, that the token exists, has not expired and
    /// grants what `cmd` needs, then applies `cmd`. Every client write is proposed this way,
    /// on the leader or forwarded by a follower, so the leader re-authorizes each one.
    AsCaller {
        auth: TokenHash,
        now_ms: u64,
        cmd: Box<Command>,
        /// Written to every node's audit log, with the outcome, in the batch that applies
        /// `cmd` (or rejects it).
        audit: AuditContext,
    },
    /// Records the cluster's master key (`rotate: false`: only when none is recorded yet) or
    /// makes a new one current (`rotate: true`, `vaultctl kms rotate`). Leader only.
    SetMasterKey {
        key_id: String,
        check: Option<String>,
        now_ms: u64,
        rotate: bool,
    },
    /// Soft-deletes every live version of a secret (`delete`); they can be undeleted. The
    /// secret and its highest version number stay.
    SoftDeleteSecret {
        name: String,
        now_ms: u64,
    },
    /// Destroys every version of a secret for good (`destroy`): ciphertext and wrapped DEKs
    /// are purged. The secret's highest version number stays, so numbers never repeat.
    DestroySecret {
        name: String,
        now_ms: u64,
    },
    /// Starts receiving a restore (`vaultctl snapshot restore`): empties the staging area and
    /// expects `records` records in chunks numbered from 0. A newer `id` supersedes an older
    /// restore that never committed. Nothing live changes until `RestoreCommit`.
    RestoreBegin {
        id: u64,
        records: u64,
    },
    /// The next chunk of restore `id`; applies only as chunk `seq` of that restore.
    RestoreChunk {
        id: u64,
        seq: u64,
        records: Vec<FamilyRecord>,
    },
    /// Replaces the secrets, versions, tokens and roles with restore `id`'s staged records, in
    /// one atomic batch on every node, once every record has arrived. Membership, the applied
    /// index and the cluster's master key record stay this cluster's; version numbers never go
    /// back (see `apply`).
    RestoreCommit {
        id: u64,
    },
    /// Raises the cluster's feature level (see `features`); never lowers it. Leader only.
    SetFeatureLevel {
        level: u32,
    },
    /// Creates a reader rule; with `replace`, also overwrites an existing one.
    PutReader {
        rule: ReaderRule,
        replace: bool,
    },
    DeleteReader {
        name: String,
    },
    /// Sets (or replaces) the rotation policy of an existing secret.
    SetRotation {
        name: String,
        policy: RotationPolicy,
    },
    ClearRotation {
        name: String,
    },
    /// Makes a rotation due now (`vaultctl secret rotate`). Answers the policy's attempt count
    /// as it stood, so the caller can wait for the next attempt.
    RotateNow {
        name: String,
    },
    /// The leader (`node_id`) rotated `name` from version `from_version`: `sealed` becomes
    /// `version`, written like a put (exactly one past the current version, under the
    /// cluster's master key), only while `from_version` is still the current version and live
    /// (no write, delete or destroy came between) and the policy exists and has made exactly
    /// `attempts` attempts (two leaders never both rotate one attempt; a replaced policy's
    /// attempts never match). The policy moves on by its period. Leader only.
    RotationDone {
        name: String,
        from_version: u64,
        version: u64,
        sealed: SealedValue,
        now_ms: u64,
        attempts: u64,
        node_id: u64,
    },
    /// The leader's attempt failed: the old version stays current and the policy is retried at
    /// `retry_at_ms`. `error` never holds a value. Leader only.
    RotationFailed {
        name: String,
        now_ms: u64,
        error: String,
        retry_at_ms: u64,
        attempts: u64,
        node_id: u64,
    },
    /// Binds a rotation hook to the names it may rotate; replaces an earlier binding of it.
    /// Admin only.
    BindHook {
        binding: HookBinding,
    },
    /// Removes a hook's binding: policies that name the hook stop running it. Admin only.
    UnbindHook {
        hook: String,
    },
}

impl Command {
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Bootstrap { .. } => "bootstrap",
            Command::PutSecret { .. } => "put_secret",
            Command::DeleteSecret { .. } => "delete_secret",
            Command::DeleteVersions { .. } => "delete_versions",
            Command::UndeleteVersions { .. } => "undelete_versions",
            Command::DestroyVersions { .. } => "destroy_versions",
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::PutRole { .. } => "put_role",
            Command::DeleteRole { .. } => "delete_role",
            Command::AdoptRewrapWatermark { .. } => "adopt_rewrap_watermark",
            Command::AdvanceRewrapWatermark { .. } => "advance_rewrap_watermark",
            Command::RewrapVersion { .. } => "rewrap_version",
            Command::Batch(_) => "batch",
            Command::AsCaller { .. } => "as_caller",
            Command::SetMasterKey { .. } => "set_master_key",
            Command::SoftDeleteSecret { .. } => "soft_delete_secret",
            Command::DestroySecret { .. } => "destroy_secret",
            Command::RestoreBegin { .. } => "restore_begin",
            Command::RestoreChunk { .. } => "restore_chunk",
            Command::RestoreCommit { .. } => "restore_commit",
            Command::SetFeatureLevel { .. } => "set_feature_level",
            Command::PutReader { .. } => "put_reader",
            Command::DeleteReader { .. } => "delete_reader",
            Command::SetRotation { .. } => "set_rotation",
            Command::ClearRotation { .. } => "clear_rotation",
            Command::RotateNow { .. } => "rotate_now",
            Command::RotationDone { .. } => "rotation_done",
            Command::RotationFailed { .. } => "rotation_failed",
            Command::BindHook { .. } => "bind_hook",
            Command::UnbindHook { .. } => "unbind_hook",
        }
    }

    /// What a client write is about, as its audit record names it.
    pub fn audit_subject(&self) -> Option<String> {
        match self {
            Command::PutSecret { name, .. }
            | Command::DeleteSecret { name }
            | Command::DeleteVersions { name, .. }
            | Command::UndeleteVersions { name, .. }
            | Command::DestroyVersions { name, .. }
            | Command::SoftDeleteSecret { name, .. }
            | Command::DestroySecret { name, .. }
            | Command::SetRotation { name, .. }
            | Command::ClearRotation { name }
            | Command::RotateNow { name, .. }
            | Command::RotationDone { name, .. }
            | Command::RotationFailed { name, .. } => Some(name.clone()),
            Command::PutReader { rule, .. } => Some(format!("reader:{}", rule.name)),
            Command::DeleteReader { name } => Some(format!("reader:{name}")),
            Command::BindHook { binding } => Some(format!("hook:{}", binding.hook)),
            Command::UnbindHook { hook } => Some(format!("hook:{hook}")),
            Command::CreateToken { record } => Some(format!("token:{}", record.name)),
            Command::RevokeToken { name } => Some(format!("token:{name}")),
            Command::PutRole { role, .. } => Some(format!("role:{}", role.name)),
            Command::DeleteRole { name } => Some(format!("role:{name}")),
            Command::RestoreBegin { id, .. } | Command::RestoreChunk { id, .. } | Command::RestoreCommit { id } => {
                Some(format!("restore:{id:016x}"))
            }
            _ => None,
        }
    }

    /// Whether this is a client write: what the API proposes on a caller's behalf.
    fn is_client_write(&self) -> bool {
        matches!(
            self,
            Command::PutSecret { .. }
                | Command::DeleteSecret { .. }
                | Command::DeleteVersions { .. }
                | Command::UndeleteVersions { .. }
                | Command::DestroyVersions { .. }
                | Command::CreateToken { .. }
                | Command::RevokeToken { .. }
                | Command::PutRole { .. }
                | Command::DeleteRole { .. }
                | Command::SoftDeleteSecret { .. }
                | Command::DestroySecret { .. }
                | Command::RestoreBegin { .. }
                | Command::RestoreChunk { .. }
                | Command::RestoreCommit { .. }
                | Command::PutReader { .. }
                | Command::DeleteReader { .. }
                | Command::SetRotation { .. }
                | Command::ClearRotation { .. }
                | Command::RotateNow { .. }
                | Command::BindHook { .. }
                | Command::UnbindHook { .. }
        )
    }

    /// Whether the leader may propose this for a caller ([`Command::AsCaller`]): a client
    /// write, and a put that carries no second, other token of its own. Bootstrap, master-key,
    /// re-wrap and watermark commands, batches and wrappers are made by the leader itself.
    pub fn is_caller_write(&self) -> bool {
        match self {
            Command::PutSecret { auth, .. } => auth.is_none(),
            c => c.is_client_write(),
        }
    }

    /// Sets every time the command carries to `at_ms` (a token's expiry and a policy's due
    /// time to as far after it as asked): the leader's clock, not the clock of the node that
    /// served the caller.
    pub fn stamp(&mut self, at_ms: u64) {
        match self {
            Command::PutSecret { now_ms, .. }
            | Command::DeleteVersions { now_ms, .. }
            | Command::DestroyVersions { now_ms, .. }
            | Command::SoftDeleteSecret { now_ms, .. }
            | Command::DestroySecret { now_ms, .. }
            | Command::AsCaller { now_ms, .. }
            | Command::SetMasterKey { now_ms, .. }
            | Command::RotationDone { now_ms, .. }
            | Command::RotationFailed { now_ms, .. } => *now_ms = at_ms,
            // A token created now, living as long as asked.
            Command::CreateToken { record } => {
                let lifetime = record.expires_at_ms.map(|e| e.saturating_sub(record.created_at_ms));
                record.created_at_ms = at_ms;
                record.expires_at_ms = lifetime.map(|l| at_ms.saturating_add(l));
            }
            Command::PutReader { rule, .. } => rule.created_at_ms = at_ms,
            Command::BindHook { binding } => binding.created_at_ms = at_ms,
            // A policy as the API makes it: due one period from now, no history.
            Command::SetRotation { policy, .. } => {
                *policy = vault_core::model::RotationPolicy {
                    next_due_ms: at_ms.saturating_add(policy.every_ms),
                    last_rotated_ms: None,
                    last_attempt_ms: None,
                    failures: 0,
                    last_error: None,
                    attempts: 0,
                    ..policy.clone()
                };
            }
            _ => {}
        }
    }

    /// Roughly how many bytes the command takes in the log: enough to bound a batch.
    pub fn approx_size(&self) -> usize {
        const FIXED: usize = 64;
        match self {
            Command::PutSecret { name, sealed, .. } => {
                FIXED + name.len() + sealed.ciphertext.len() + sealed.wrapped_dek.len() + sealed.key_id.len()
            }
            Command::RewrapVersion { name, from_wrapped, key_id, wrapped_dek, .. } => {
                FIXED + name.len() + from_wrapped.len() + key_id.len() + wrapped_dek.len()
            }
            Command::Batch(cmds) => cmds.iter().map(Command::approx_size).sum(),
            Command::AsCaller { cmd, .. } => FIXED + cmd.approx_size(),
            Command::DeleteVersions { versions, .. }
            | Command::UndeleteVersions { versions, .. }
            | Command::DestroyVersions { versions, .. } => FIXED + 8 * versions.len(),
            Command::RestoreChunk { records, .. } => FIXED + records.iter().map(FamilyRecord::size).sum::<usize>(),
            Command::RotationDone { name, sealed, .. } => {
                FIXED + name.len() + sealed.ciphertext.len() + sealed.wrapped_dek.len() + sealed.key_id.len()
            }
            _ => FIXED * 4,
        }
    }
}

/// Short and free of key material: openraft prints entries in its debug logs.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::PutSecret { name, version, .. } => write!(f, "PutSecret({name}:{version})"),
            Command::DeleteSecret { name } => write!(f, "DeleteSecret({name})"),
            Command::DeleteVersions { name, versions, .. }
            | Command::UndeleteVersions { name, versions }
            | Command::DestroyVersions { name, versions, .. } => write!(f, "{}({name} {versions:?})", self.kind()),
            Command::CreateToken { record } => write!(f, "CreateToken({})", record.name),
            Command::RevokeToken { name } => write!(f, "RevokeToken({name})"),
            Command::PutRole { role, .. } => write!(f, "PutRole({})", role.name),
            Command::DeleteRole { name } => write!(f, "DeleteRole({name})"),
            Command::Bootstrap { token, .. } => write!(f, "Bootstrap(token: {})", token.is_some()),
            Command::AdoptRewrapWatermark { watermark_ms } | Command::AdvanceRewrapWatermark { watermark_ms } => {
                write!(f, "{}({watermark_ms})", self.kind())
            }
            Command::RewrapVersion { name, version, watermark_ms, .. } => {
                write!(f, "RewrapVersion({name}:{version} -> {watermark_ms})")
            }
            Command::Batch(cmds) => write!(f, "Batch({})", cmds.len()),
            Command::AsCaller { cmd, .. } => write!(f, "AsCaller({cmd:?})"),
            Command::SetMasterKey { key_id, rotate, .. } => write!(f, "SetMasterKey({key_id}, rotate: {rotate})"),
            Command::SoftDeleteSecret { name, .. } | Command::DestroySecret { name, .. } => {
                write!(f, "{}({name})", self.kind())
            }
            Command::RestoreBegin { id, records } => write!(f, "RestoreBegin({id:016x}, {records} records)"),
            Command::RestoreChunk { id, seq, records } => {
                write!(f, "RestoreChunk({id:016x} #{seq}, {} records)", records.len())
            }
            Command::RestoreCommit { id } => write!(f, "RestoreCommit({id:016x})"),
            Command::SetFeatureLevel { level } => write!(f, "SetFeatureLevel({level})"),
            Command::PutReader { rule, .. } => write!(f, "PutReader({})", rule.name),
            Command::DeleteReader { name } => write!(f, "DeleteReader({name})"),
            Command::SetRotation { name, .. }
            | Command::ClearRotation { name }
            | Command::RotateNow { name, .. }
            | Command::RotationFailed { name, .. } => write!(f, "{}({name})", self.kind()),
            Command::RotationDone { name, version, .. } => write!(f, "RotationDone({name}:{version})"),
            Command::BindHook { binding } => write!(f, "BindHook({})", binding.hook),
            Command::UnbindHook { hook } => write!(f, "UnbindHook({hook})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Blank and membership entries, and commands with nothing to report.
    Ok,
    Written {
        version: u64,
    },
    /// Whether a re-wrap or watermark command changed anything (false: it was a no-op).
    Applied {
        changed: bool,
    },
    /// Versions whose state changed.
    Changed {
        versions: Vec<u64>,
    },
    Rejected(Rejection),
    /// One response per command of a `Command::Batch`, in order.
    Batch(Vec<CommandResponse>),
    /// A restore committed: how many records of each family it installed (`SM_CFS` order).
    Restored {
        records: Vec<u64>,
    },
    /// A rotation was made due: the policy's attempt count when it was.
    RotationQueued {
        attempts: u64,
    },
}

/// A deterministic refusal decided while applying; every replica decides the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotFound(String),
    AlreadyExists(String),
    /// Check-and-set failed: the caller expected `expected`, the secret is at `actual`.
    CasMismatch {
        expected: u64,
        actual: u64,
    },
    /// Another write took the version this one was sealed for; re-seal and retry.
    VersionConflict {
        current: u64,
    },
    FailedPrecondition(String),
    Unauthenticated(String),
    PermissionDenied(String),
    /// The value was sealed under a master key that is not the cluster's current one.
    WrongMasterKey {
        sealed_with: String,
        cluster: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leader stamps a caller's command with its own clock: a forwarding node cannot
    /// back-date a write or a token's expiry.
    #[test]
    fn stamping_sets_every_time_from_the_leaders_clock() {
        use vault_core::model::{Generator, RotationPolicy, TokenRecord};
        let record = TokenRecord {
            name: "t".into(),
            hash: vault_core::token::RawToken::generate().hash(),
            role: "admin".into(),
            created_at_ms: 1,
            expires_at_ms: Some(1_001),
        };
        let mut token = Command::CreateToken { record };
        token.stamp(5_000);
        let Command::CreateToken { record } = &token else { unreachable!() };
        assert_eq!((record.created_at_ms, record.expires_at_ms), (5_000, Some(6_000)));

        let mut del = Command::DestroySecret { name: "a".into(), now_ms: 1 };
        del.stamp(7);
        assert_eq!(del, Command::DestroySecret { name: "a".into(), now_ms: 7 });

        let mut policy = RotationPolicy::new(3_600_000, Generator::Random(8), 1).expect("policy");
        policy.attempts = 99;
        let mut set = Command::SetRotation { name: "a".into(), policy };
        set.stamp(10);
        let Command::SetRotation { policy, .. } = &set else { unreachable!() };
        assert_eq!((policy.next_due_ms, policy.attempts), (3_600_010, 0));
    }

    /// A batch is shared through an `Arc` in memory; in logs, snapshots and on the wire it must
    /// stay what a `Vec` of commands was, so logs written before still decode.
    #[test]
    fn a_shared_batch_encodes_as_a_sequence_of_commands() {
        let cmds = vec![Command::DeleteSecret { name: "a".into() }, Command::RevokeToken { name: "t".into() }];
        let whole = postcard::to_stdvec(&Command::Batch(cmds.clone().into())).expect("encode");
        let items = postcard::to_stdvec(&cmds).expect("encode");
        assert!(whole.ends_with(&items), "{whole:?} vs {items:?}");
        assert_eq!(whole.len(), items.len() + 1, "one byte of variant index, then the sequence");
        let back: Command = postcard::from_bytes(&whole).expect("decode");
        assert!(matches!(back, Command::Batch(b) if b.len() == 2));
    }
}
