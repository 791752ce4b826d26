use vault_core::model::{AuditRecord, HookBinding, ReaderRule, Role, TokenRecord};

use tonic::Status;
use vault_raft::AuditQuery;

use crate::pb;

impl From<&TokenRecord> for pb::TokenInfo {
    fn from(t: &TokenRecord) -> Self {
        pb::TokenInfo {
            name: t.name.clone(),
            role: t.role.clone(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
        }
    }
}

impl From<&Role> for pb::RoleInfo {
    fn from(r: &Role) -> Self {
        pb::RoleInfo {
            name: r.name.clone(),
            grants: r.grants.iter().map(|g| g.to_string()).collect(),
            builtin: r.is_admin(),
        }
    }
}

impl From<AuditRecord> for pb::AuditEntry {
    fn from(a: AuditRecord) -> Self {
        pb::AuditEntry {
            seq: a.seq,
            time_ms: a.time_ms,
            node_id: a.node_id,
            actor: a.actor,
            client_ip: a.client_ip,
            action: a.action,
            secret: a.secret.unwrap_or_default(),
            outcome: a.outcome,
        }
    }
}

impl From<&HookBinding> for pb::HookBindingInfo {
    fn from(b: &HookBinding) -> Self {
        pb::HookBindingInfo { hook: b.hook.clone(), names: b.names.clone(), created_at_ms: b.created_at_ms }
    }
}

impl From<&ReaderRule> for pb::ReaderInfo {
    fn from(r: &ReaderRule) -> Self {
        pb::ReaderInfo {
            name: r.name.clone(),
            cidrs: r.cidrs.clone(),
            cert_cns: r.cert_cns.clone(),
            grants: r.grants.clone(),
            created_at_ms: r.created_at_ms,
        }
    }
}

impl pb::ListAuditRequest {
    /// The search this request asks for, with the limit defaulted (`default`) and capped
    /// (`max`). A filter that is set must not be empty: an empty one would match nothing (or,
    /// for the secret, everything), and is more likely a client's mistake than a search.
    pub fn to_query(&self, default: usize, max: usize) -> Result<AuditQuery, Status> {
        let exact = |field: &str, value: &Option<String>| match value.as_deref() {
            Some("") => Err(Status::invalid_argument(format!("{field} is empty: leave it unset to match any {field}"))),
            other => Ok(other.map(str::to_string)),
        };
        Ok(AuditQuery {
            limit: match self.limit as usize {
                0 => default,
                n => n.min(max),
            },
            secret: (!self.secret.is_empty()).then(|| self.secret.clone()),
            actor: exact("actor", &self.actor)?,
            action: exact("action", &self.action)?,
            outcome: exact("outcome", &self.outcome)?,
            since_ms: (self.since_ms > 0).then_some(self.since_ms),
            until_ms: self.until_ms,
        })
    }
}
