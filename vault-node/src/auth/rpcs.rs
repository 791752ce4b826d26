//! Every RPC of the public API in one table: what access it needs and the action name its
//! audit records carry, whether the call is allowed or refused.

/// What a call must present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health checks.
    Open,
    /// Secret reads: the client address must be allowlisted (and, with reader rules, granted).
    Read,
    /// A bearer token, read after a linearizable barrier (revocation is immediate).
    Manage,
    /// A bearer token, looked up without a barrier: the write's command carries it and the
    /// leader authorizes it again when applying it, which is what decides.
    ManageWrite,
    /// A bearer token of the built-in admin role.
    Admin,
}

/// One RPC: its full gRPC path, access and audit action.
#[derive(Clone, Copy, Debug)]
pub struct Rpc {
    pub path: &'static str,
    pub access: Access,
    pub action: &'static str,
    /// Exempt from the server's request timeout (`VAULT_API_REQUEST_TIMEOUT_SECS`): it streams
    /// for as long as its data takes, or waits for work that it bounds itself, longer than
    /// the server's limit, and answers with what became of that work when its own bound is hit.
    pub unbounded: bool,
}

const fn rpc(path: &'static str, access: Access, action: &'static str) -> Rpc {
    Rpc { path, access, action, unbounded: false }
}

const fn streaming(path: &'static str, access: Access, action: &'static str) -> Rpc {
    Rpc { path, access, action, unbounded: true }
}

/// A cluster change: it waits on the leader for up to its own bound (a new node catching up
/// from a large store takes minutes), then says what state it left, which the server's
/// shorter limit would replace with a bare CANCELLED.
const fn cluster_change(path: &'static str, access: Access, action: &'static str) -> Rpc {
    Rpc { path, access, action, unbounded: true }
}

/// The table. A path under `vault.v1.` that is not here is a management call named
/// [`UNKNOWN`] (never the client's path, which it chooses).
pub const RPCS: &[Rpc] = &[
    rpc("/vault.v1.Secrets/PutSecret", Access::ManageWrite, "secret.put"),
    rpc("/vault.v1.Secrets/GetSecret", Access::Read, "secret.get"),
    rpc("/vault.v1.Secrets/BatchGetSecrets", Access::Read, "secret.get"),
    rpc("/vault.v1.Secrets/ListSecrets", Access::Manage, "secret.list"),
    rpc("/vault.v1.Secrets/ListVersions", Access::Manage, "secret.versions"),
    rpc("/vault.v1.Secrets/DeleteSecret", Access::Manage, "secret.delete"),
    rpc("/vault.v1.Secrets/DeleteVersions", Access::Manage, "secret.delete_versions"),
    rpc("/vault.v1.Secrets/UndeleteVersions", Access::Manage, "secret.undelete_versions"),
    rpc("/vault.v1.Secrets/DestroyVersions", Access::Manage, "secret.destroy_versions"),
    rpc("/vault.v1.Secrets/SetRotation", Access::Manage, "secret.rotation_set"),
    rpc("/vault.v1.Secrets/GetRotation", Access::Manage, "secret.rotation_get"),
    rpc("/vault.v1.Secrets/ListRotations", Access::Manage, "secret.rotation_list"),
    rpc("/vault.v1.Secrets/ClearRotation", Access::Manage, "secret.rotation_clear"),
    // Waits for the leader's attempt, which may run a hook for up to its own timeout.
    streaming("/vault.v1.Secrets/RotateSecret", Access::Manage, "secret.rotate"),
    // A stream that lasts as long as the client watches; it bounds itself (see `api::watch`).
    streaming("/vault.v1.Secrets/WatchSecrets", Access::Read, "secret.watch"),
    rpc("/vault.v1.Admin/CreateToken", Access::Admin, "token.create"),
    rpc("/vault.v1.Admin/ListTokens", Access::Admin, "token.list"),
    rpc("/vault.v1.Admin/RevokeToken", Access::Admin, "token.revoke"),
    rpc("/vault.v1.Admin/CreateRole", Access::Admin, "role.create"),
    rpc("/vault.v1.Admin/GetRole", Access::Admin, "role.get"),
    rpc("/vault.v1.Admin/ListRoles", Access::Admin, "role.list"),
    rpc("/vault.v1.Admin/DeleteRole", Access::Admin, "role.delete"),
    rpc("/vault.v1.Admin/ListAudit", Access::Admin, "audit.list"),
    rpc("/vault.v1.Admin/VerifyAudit", Access::Admin, "audit.verify"),
    rpc("/vault.v1.Admin/ClusterStatus", Access::Admin, "cluster.status"),
    cluster_change("/vault.v1.Admin/AddMember", Access::Admin, "cluster.add"),
    cluster_change("/vault.v1.Admin/PromoteMember", Access::Admin, "cluster.promote"),
    cluster_change("/vault.v1.Admin/RemoveMember", Access::Admin, "cluster.remove"),
    cluster_change("/vault.v1.Admin/TransferLeader", Access::Admin, "cluster.transfer_leader"),
    cluster_change("/vault.v1.Admin/UpgradeCluster", Access::Admin, "cluster.upgrade"),
    rpc("/vault.v1.Admin/ServerStatus", Access::Open, "status"),
    rpc("/vault.v1.Admin/KmsStatus", Access::Admin, "kms.status"),
    rpc("/vault.v1.Admin/KmsRewrap", Access::Admin, "kms.rewrap"),
    cluster_change("/vault.v1.Admin/KmsRotate", Access::Admin, "kms.rotate"),
    streaming("/vault.v1.Admin/SaveSnapshot", Access::Admin, "snapshot.save"),
    streaming("/vault.v1.Admin/RestoreSnapshot", Access::Admin, "snapshot.restore"),
    // With `verify`, reads back every backup at the destination: as long as they take.
    streaming("/vault.v1.Admin/ListBackups", Access::Admin, "backup.list"),
    streaming("/vault.v1.Admin/RestoreBackup", Access::Admin, "backup.restore"),
    rpc("/vault.v1.Admin/CreateReader", Access::Admin, "reader.create"),
    rpc("/vault.v1.Admin/GetReader", Access::Admin, "reader.get"),
    rpc("/vault.v1.Admin/ListReaders", Access::Admin, "reader.list"),
    rpc("/vault.v1.Admin/DeleteReader", Access::Admin, "reader.delete"),
    rpc("/vault.v1.Admin/BindHook", Access::Admin, "hook.bind"),
    rpc("/vault.v1.Admin/ListHookBindings", Access::Admin, "hook.list"),
    rpc("/vault.v1.Admin/UnbindHook", Access::Admin, "hook.unbind"),
    rpc("/vault.v1.Admin/WhoAmI", Access::Manage, "token.whoami"),
];

/// The action name of a call to an unlisted `vault.v1` path.
pub const UNKNOWN: &str = "unknown";

/// The table's entry for `path`; unlisted paths under `vault.v1.` are management calls named
/// [`UNKNOWN`], anything else (health, reflection) is open.
pub fn lookup(path: &str) -> Rpc {
    match RPCS.iter().find(|r| r.path == path) {
        Some(r) => *r,
        None if path.starts_with("/vault.v1.") => rpc("", Access::Manage, UNKNOWN),
        None => rpc("", Access::Open, "open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_api_is_in_the_table_once() {
        let proto = include_str!("../../../proto/vault/v1/vault.proto");
        let mut service = "";
        let mut declared = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or("");
            }
            if let Some(rest) = line.strip_prefix("rpc ") {
                let name = rest.split('(').next().unwrap_or("").trim();
                declared.push(format!("/vault.v1.{service}/{name}"));
            }
        }
        for path in &declared {
            assert_eq!(RPCS.iter().filter(|r| r.path == path).count(), 1, "{path} must be in the table once");
        }
        assert_eq!(declared.len(), RPCS.len(), "the table lists an RPC the API does not have");
        assert_eq!(lookup("/vault.v1.Secrets/Nope").action, UNKNOWN);
        assert_eq!(lookup("/grpc.health.v1.Health/Check").access, Access::Open);
    }
}
