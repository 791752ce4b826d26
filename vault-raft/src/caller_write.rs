//! How the leader turns a caller's write into the command it proposes.
//!
//! A write reaches the leader from the node that served the caller, perhaps a follower. That
//! node is trusted to pass on what the caller sent, not to vouch for it: every member holds
//! every token's hash (the replicated token table), so a hash proves nothing about who asked.
//! The leader therefore works only from what a member cannot make up:
//! - the **raw bearer token** the caller presented, which the leader hashes itself;
//! - **its own clock** for every time the command carries, so an expired token stays expired;
//! - the **actor** named by the token record the leader holds, and the **node** named by the
//!   forwarding peer's certificate.
//!
//! What the serving node still says, and is recorded but not trusted for any decision: the
//! client's address and the call's audit action. The action must still be in the form every
//! API call's is (`noun.verb`, lower case) and not one of the `audit.` actions the node writes
//! about its own chain, so a member cannot put a forged `audit.chain_broken` in every log. Applying the command checks the token again
//! against the replicated state (`apply::apply_as_caller`).

use vault_core::model::{
    audit_field, audit_field_owned, validate_hook_path, validate_label, AuditContext, HookBinding, ReaderRule, Role,
    RotationPolicy, MAX_AUDIT_FIELD, MAX_MAX_VERSIONS,
};
use vault_core::time::now_ms;
use vault_core::token::RawToken;
use vault_core::{CoreError, SecretName};

use crate::cluster::Cluster;
use crate::command::Command;
use crate::transport::{CallerWrite, ForwardError};
use crate::typ::NodeId;

/// Actor recorded for a token this leader does not hold; applying the write refuses it.
pub const UNKNOWN_TOKEN_ACTOR: &str = "unknown token";

impl Cluster {
    /// A write a peer forwards must carry a token this leader holds and that has not expired
    /// by its clock. Refused here, with the peer's other refusals (budgeted, see
    /// `transport::peer_audit`), rather than proposed and refused when applied: a member must
    /// not fill every node's log and audit log with writes no one could have asked for. A
    /// token created a moment ago that this leader has not applied yet is refused as
    /// unavailable, so the caller tries again.
    pub(crate) fn check_caller_token(&self, token: &RawToken) -> Result<(), tonic::Status> {
        match self.reader.token_by_hash(&token.hash()) {
            Ok(Some(t)) if t.is_expired(now_ms()) => {
                Err(tonic::Status::permission_denied(format!("token {} has expired", t.name)))
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(tonic::Status::unavailable(
                "the leader holds no such token (yet): unknown, revoked, or just created",
            )),
            Err(e) => Err(tonic::Status::unavailable(format!("read the token table: {e}"))),
        }
    }

    /// The command this leader proposes for `write`, which node `via` served.
    pub(crate) fn caller_command(&self, write: CallerWrite, via: NodeId) -> Result<Command, ForwardError> {
        let CallerWrite { token, mut cmd, client_ip, action } = write;
        if !cmd.is_caller_write() {
            return Err(ForwardError::Refused(format!("{} is not a client write", cmd.kind())));
        }
        check_input(&cmd).map_err(|e| ForwardError::Rejected(format!("{}: {e}", cmd.kind())))?;
        check_action(&action).map_err(ForwardError::Rejected)?;
        let auth = token.hash();
        let actor = match self.reader.token_by_hash(&auth) {
            Ok(Some(record)) => record.name,
            Ok(None) => UNKNOWN_TOKEN_ACTOR.to_string(),
            Err(e) => return Err(ForwardError::Unavailable(format!("read the token table: {e}"))),
        };
        let now = now_ms();
        cmd.stamp(now);
        Ok(Command::AsCaller {
            auth,
            now_ms: now,
            cmd: Box::new(cmd),
            audit: AuditContext {
                node_id: via,
                actor,
                client_ip: audit_field_owned(client_ip, MAX_AUDIT_FIELD),
                action: audit_field_owned(action, MAX_AUDIT_FIELD),
            },
        })
    }
}

/// The checks the API makes of a client's input before it builds a command, made again here:
/// a command from a peer's caller must hold nothing the API would have refused (a secret name
/// outside the rules, a rotation period under the least, a role or rule not in the form its
/// create call stores), whatever node it came through.
fn check_input(cmd: &Command) -> Result<(), CoreError> {
    let name = |n: &str| SecretName::parse(n).map(|_| ());
    match cmd {
        Command::PutSecret { name: n, max_versions, .. } => {
            name(n)?;
            match max_versions {
                Some(m) if !(1..=MAX_MAX_VERSIONS).contains(m) => {
                    Err(CoreError::InvalidArgument(format!("max_versions must be 1 to {MAX_MAX_VERSIONS}")))
                }
                _ => Ok(()),
            }
        }
        Command::DeleteSecret { name: n }
        | Command::DeleteVersions { name: n, .. }
        | Command::UndeleteVersions { name: n, .. }
        | Command::DestroyVersions { name: n, .. }
        | Command::SoftDeleteSecret { name: n, .. }
        | Command::DestroySecret { name: n, .. }
        | Command::ClearRotation { name: n }
        | Command::RotateNow { name: n } => name(n),
        Command::SetRotation { name: n, policy } => {
            name(n)?;
            RotationPolicy::new(policy.every_ms, policy.generator.clone(), 0).map(|_| ())
        }
        Command::CreateToken { record } => {
            validate_label("token", &record.name)?;
            validate_label("role", &record.role)
        }
        Command::RevokeToken { name: n } => validate_label("token", n),
        Command::PutRole { role, .. } => same(&Role::new(&role.name, role.grants.clone())?, role, "role"),
        Command::DeleteRole { name: n } => validate_label("role", n),
        Command::PutReader { rule, .. } => {
            let made = ReaderRule::new(&rule.name, &rule.cidrs, &rule.cert_cns, &rule.grants, rule.created_at_ms)?;
            same(&made, rule, "reader rule")
        }
        Command::DeleteReader { name: n } => validate_label("reader", n),
        Command::BindHook { binding } => {
            same(&HookBinding::new(&binding.hook, &binding.names, binding.created_at_ms)?, binding, "hook binding")
        }
        Command::UnbindHook { hook } => validate_hook_path(hook),
        // Restores are checked record by record before they are proposed (`backup_check`), and
        // apply takes their chunks only in order.
        _ => Ok(()),
    }
}

/// A forwarded audit action must be `[a-z_]+.[a-z_]+` and not name the chain's own records.
fn check_action(action: &str) -> Result<(), String> {
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let ok = match action.split_once('.') {
        Some((noun, verb)) => word(noun) && word(verb) && noun != "audit",
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the audit action {:?} is not a caller's (noun.verb in lower case, not audit.*)",
            audit_field(action, 64)
        ))
    }
}

/// `asked` must be what its create call would store: already checked and normalized.
fn same<T: PartialEq>(made: &T, asked: &T, what: &str) -> Result<(), CoreError> {
    if made == asked {
        Ok(())
    } else {
        Err(CoreError::InvalidArgument(format!("the {what} is not in the form its create call stores")))
    }
}
