use vault_core::model::{AuditRecord, HookBinding, ReaderRule, Role, TokenRecord};

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
