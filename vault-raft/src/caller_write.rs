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
//! client's address and the call's audit action. Applying the command checks the token again
//! against the replicated state (`apply::apply_as_caller`).

use vault_core::model::{audit_field, AuditContext, MAX_AUDIT_FIELD};
use vault_core::time::now_ms;

use crate::cluster::Cluster;
use crate::command::Command;
use crate::transport::{CallerWrite, ForwardError};
use crate::typ::NodeId;

/// Actor recorded for a token this leader does not hold; applying the write refuses it.
pub const UNKNOWN_TOKEN_ACTOR: &str = "unknown token";

impl Cluster {
    /// The command this leader proposes for `write`, which node `via` served.
    pub(crate) fn caller_command(&self, write: CallerWrite, via: NodeId) -> Result<Command, ForwardError> {
        let CallerWrite { token, mut cmd, client_ip, action } = write;
        if !cmd.is_caller_write() {
            return Err(ForwardError::Refused(format!("{} is not a client write", cmd.kind())));
        }
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
                client_ip: audit_field(&client_ip, MAX_AUDIT_FIELD),
                action: audit_field(&action, MAX_AUDIT_FIELD),
            },
        })
    }
}
