//! The `Admin` service: tokens, roles, audit and cluster status. Admin role only.

use std::sync::Arc;
use vault_core::kms::KeyManager;

use tonic::{Request, Response, Status};
use vault_core::model::{validate_label, Grant, HookBinding, ReaderRule, Role, TokenRecord};
use vault_core::time::now_ms;
use vault_core::token::RawToken;
use vault_raft::transport::{AdminOp, ForwardRequest, ForwardResponse};
use vault_raft::{Command, NodeInfo};

use crate::auth::caller::{caller_of, Caller};
use crate::backup::schedule::Backups;
use crate::error::{answer, blocking, ApiError};
use crate::pb;
use crate::pb::admin_server::Admin;
use crate::rewrap::{KickOutcome, Rewrapper};
use crate::vault::Vault;

const MAX_AUDIT: usize = 10_000;
/// Membership changes may wait for a new node to catch up. These calls are exempt from the
/// server's request limit (`auth::rpcs`), and vaultctl waits longer than this for them.
const MEMBERSHIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long `cluster status` waits for the leader's replication view; past it (the leader
/// changing hands after the caller's token was checked) it answers with this node's own view,
/// well within the server's request limit. Without a quorum the token check itself refuses.
const LEADER_VIEW_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct AdminService {
    vault: Arc<Vault>,
    rewrapper: Arc<Rewrapper>,
    /// Scheduled backups and their destination, when configured.
    backups: Option<Arc<Backups>>,
}

impl AdminService {
    /// Runs an operator's cluster change on the leader (forwarded with the caller's token,
    /// which the leader checks again).
    async fn cluster_change(&self, caller: &Caller, op: AdminOp) -> Result<ForwardResponse, ApiError> {
        // Write-ahead: these changes are not commands with their own record, so the request is
        // on record before it is made; the outcome follows when the call ends.
        let subject = op.subject();
        self.vault.audit_raw(
            caller.actor(),
            caller.ip.to_string(),
            caller.action,
            Some(&subject),
            "requested".into(),
        )?;
        let req = ForwardRequest::CallerAdmin { token: caller.presented_token()?, op };
        Ok(self.vault.cluster.submit(req, MEMBERSHIP_TIMEOUT).await?)
    }

    /// Runs a membership change on the leader.
    async fn membership(&self, caller: &Caller, op: AdminOp) -> Result<pb::MemberChangeResponse, ApiError> {
        if !self.vault.transport_enabled {
            return Err(Status::failed_precondition(
                "this node has no Raft transport: configure VAULT_RAFT_TLS_CA/_CERT/_KEY to grow the cluster",
            )
            .into());
        }
        self.cluster_change(caller, op).await?;
        Ok(pb::MemberChangeResponse {})
    }

    /// An audited, admin-only membership change on node `req.id`.
    async fn member_change(
        &self,
        req: Request<pb::MemberRequest>,
        make: impl FnOnce(u64) -> AdminOp,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let caller = caller_of(&req)?;
        let id = req.into_inner().id;
        let subject = format!("node:{id}");
        self.admin(&caller, Some(&subject), self.membership(&caller, make(id))).await
    }

    pub fn new(vault: Arc<Vault>, rewrapper: Arc<Rewrapper>, backups: Option<Arc<Backups>>) -> Self {
        AdminService { vault, rewrapper, backups }
    }

    /// The backup destination, or `FAILED_PRECONDITION` when none is configured.
    fn backups(&self) -> Result<&Arc<Backups>, ApiError> {
        self.backups.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this node has no backup destination: set VAULT_BACKUP_DIR or VAULT_BACKUP_S3_BUCKET",
            )
            .into()
        })
    }

    /// Runs an admin-only operation and audits it.
    async fn admin<T, F>(&self, caller: &Caller, subject: Option<&str>, op: F) -> Result<Response<T>, Status>
    where
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        let result = match caller.require_admin(caller.action) {
            Ok(()) => answer(op).await,
            Err(e) => Err(e),
        };
        self.vault.audit(caller, subject, &result)?;
        result.map(Response::new)
    }
}

/// The longest token lifetime: a hundred years (an expiry past year 9999 has no calendar form).
const MAX_TOKEN_TTL_SECS: u64 = 100 * 365 * 86_400;

#[tonic::async_trait]
impl Admin for AdminService {
    #[tracing::instrument(skip_all)]
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("token:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            validate_label("token", &r.name)?;
            validate_label("role", &r.role)?;
            let raw = RawToken::generate();
            let now = now_ms();
            let expires_at_ms = match r.ttl_secs {
                0 => None,
                s if s > MAX_TOKEN_TTL_SECS => {
                    return Err(Status::invalid_argument("a token's lifetime must be at most 100 years").into())
                }
                s => Some(now.saturating_add(s.saturating_mul(1000))),
            };
            let record = TokenRecord {
                name: r.name.clone(),
                hash: raw.hash(),
                role: r.role.clone(),
                created_at_ms: now,
                expires_at_ms,
            };
            self.vault.write_ok(&caller, Command::CreateToken { record }).await?;
            Ok(pb::CreateTokenResponse { name: r.name.clone(), token: raw.expose().to_string(), expires_at_ms })
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            self.vault.linearize().await?;
            let tokens = self.vault.reader.tokens()?;
            Ok(pb::ListTokensResponse { tokens: tokens.iter().map(pb::TokenInfo::from).collect() })
        })
        .await
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("token:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            validate_label("token", &r.name)?;
            self.vault.write_ok(&caller, Command::RevokeToken { name: r.name.clone() }).await?;
            Ok(pb::RevokeTokenResponse {})
        })
        .await
    }

    async fn create_role(
        &self,
        req: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("role:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            let mut grants = Vec::new();
            for spec in &r.grants {
                grants.extend(Grant::parse_many(spec)?);
            }
            let role = Role::new(&r.name, grants)?;
            self.vault.write_ok(&caller, Command::PutRole { role, replace: r.replace }).await?;
            Ok(pb::CreateRoleResponse {})
        })
        .await
    }

    async fn get_role(&self, req: Request<pb::GetRoleRequest>) -> Result<Response<pb::RoleInfo>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("role:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            self.vault.linearize().await?;
            let role = self
                .vault
                .reader
                .role(&r.name)?
                .ok_or_else(|| Status::not_found(format!("role {} does not exist", r.name)))?;
            Ok(pb::RoleInfo::from(&role))
        })
        .await
    }

    async fn list_roles(&self, req: Request<pb::ListRolesRequest>) -> Result<Response<pb::ListRolesResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            self.vault.linearize().await?;
            let roles = self.vault.reader.roles()?;
            Ok(pb::ListRolesResponse { roles: roles.iter().map(pb::RoleInfo::from).collect() })
        })
        .await
    }

    async fn delete_role(
        &self,
        req: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("role:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            self.vault.write_ok(&caller, Command::DeleteRole { name: r.name.clone() }).await?;
            Ok(pb::DeleteRoleResponse {})
        })
        .await
    }

    async fn create_reader(
        &self,
        req: Request<pb::CreateReaderRequest>,
    ) -> Result<Response<pb::CreateReaderResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("reader:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            let rule = ReaderRule::new(&r.name, &r.cidrs, &r.cert_cns, &r.grants, vault_core::time::now_ms())?;
            self.vault.write_ok(&caller, Command::PutReader { rule, replace: r.replace }).await?;
            Ok(pb::CreateReaderResponse {})
        })
        .await
    }

    async fn get_reader(&self, req: Request<pb::GetReaderRequest>) -> Result<Response<pb::ReaderInfo>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("reader:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            self.vault.linearize().await?;
            let rule = self
                .vault
                .reader
                .reader_rule(&r.name)?
                .ok_or_else(|| Status::not_found(format!("reader {} does not exist", r.name)))?;
            Ok(pb::ReaderInfo::from(&rule))
        })
        .await
    }

    async fn list_readers(
        &self,
        req: Request<pb::ListReadersRequest>,
    ) -> Result<Response<pb::ListReadersResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            self.vault.linearize().await?;
            let readers = self.vault.reader.readers()?;
            Ok(pb::ListReadersResponse { readers: readers.iter().map(pb::ReaderInfo::from).collect() })
        })
        .await
    }

    async fn delete_reader(
        &self,
        req: Request<pb::DeleteReaderRequest>,
    ) -> Result<Response<pb::DeleteReaderResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("reader:{}", r.name);
        self.admin(&caller, Some(&subject), async {
            self.vault.write_ok(&caller, Command::DeleteReader { name: r.name.clone() }).await?;
            Ok(pb::DeleteReaderResponse {})
        })
        .await
    }

    async fn bind_hook(&self, req: Request<pb::BindHookRequest>) -> Result<Response<pb::BindHookResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("hook:{}", r.hook);
        self.admin(&caller, Some(&subject), async {
            let binding = HookBinding::new(&r.hook, &r.names, now_ms())?;
            self.vault.write_ok(&caller, Command::BindHook { binding }).await?;
            Ok(pb::BindHookResponse {})
        })
        .await
    }

    async fn list_hook_bindings(
        &self,
        req: Request<pb::ListHookBindingsRequest>,
    ) -> Result<Response<pb::ListHookBindingsResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            self.vault.linearize().await?;
            let bindings = self.vault.reader.hook_bindings()?;
            Ok(pb::ListHookBindingsResponse { bindings: bindings.iter().map(pb::HookBindingInfo::from).collect() })
        })
        .await
    }

    async fn unbind_hook(
        &self,
        req: Request<pb::UnbindHookRequest>,
    ) -> Result<Response<pb::UnbindHookResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("hook:{}", r.hook);
        self.admin(&caller, Some(&subject), async {
            self.vault.write_ok(&caller, Command::UnbindHook { hook: r.hook.clone() }).await?;
            Ok(pb::UnbindHookResponse {})
        })
        .await
    }

    /// Any valid token: who it is. The auth layer already checked it after a barrier (a
    /// revoked or expired token never gets here); this records that it was used.
    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::TokenInfo>, Status> {
        let caller = caller_of(&req)?;
        let result = caller.principal().map(|p| pb::TokenInfo::from(&p.token));
        self.vault.audit(&caller, None, &result)?;
        result.map(Response::new)
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        // Reading the log is itself audited, after the listing so it is not in its own answer.
        self.admin(&caller, None, async {
            let query = r.to_query(100, MAX_AUDIT)?;
            let log = self.vault.audit_log.clone();
            let records = blocking(move || log.list(&query)).await?;
            Ok(pb::ListAuditResponse { records: records.into_iter().map(pb::AuditEntry::from).collect() })
        })
        .await
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let caller = caller_of(&req)?;
        let extends = req.get_ref().extends.clone();
        self.admin(&caller, None, async {
            let extends = match extends.trim() {
                "" => None,
                text => Some(super::audit_head::parse(text)?),
            };
            let log = self.vault.audit_log.clone();
            let (r, grows) = blocking(move || {
                let r = log.verify()?;
                let grows = extends.map(|h| log.extends(h)).transpose()?.flatten();
                Ok::<_, vault_raft::StoreError>((r, grows))
            })
            .await?;
            let problem = r.problem.or(grows.map(|p| format!("the log does not extend the exported head: {p}")));
            Ok(pb::VerifyAuditResponse {
                ok: problem.is_none(),
                problem: problem.unwrap_or_default(),
                head: r.head.map(|(seq, mac)| super::audit_head::format(seq, &mac)).unwrap_or_default(),
                checked: r.checked,
                legacy: r.legacy,
                unverifiable: r.unverifiable,
                first_seq: r.first_seq,
                last_seq: r.last_seq,
            })
        })
        .await
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            // Replication progress is the leader's to know; ask it, wherever we are.
            let view = match self.vault.cluster.submit(ForwardRequest::LeaderView, LEADER_VIEW_WAIT).await {
                Ok(ForwardResponse::LeaderView(v)) => Some(v),
                _ => None,
            };
            Ok(crate::cluster::status(&self.vault, view.as_ref()))
        })
        .await
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = format!("node:{}", r.id);
        self.admin(&caller, Some(&subject), async {
            if r.id == 0 || !r.raft_addr.contains(':') || !r.api_addr.contains(':') {
                return Err(Status::invalid_argument("need ID >= 1, RAFT_ADDR host:port and API_ADDR host:port").into());
            }
            let node = NodeInfo { raft_addr: r.raft_addr.clone(), api_addr: r.api_addr.clone() };
            self.membership(&caller, AdminOp::AddLearner { id: r.id, node }).await
        })
        .await
    }

    async fn promote_member(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        self.member_change(req, |id| AdminOp::PromoteVoter { id }).await
    }

    async fn remove_member(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        self.member_change(req, |id| AdminOp::RemoveMember { id }).await
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        self.member_change(req, |to| AdminOp::TransferLeader { to }).await
    }

    async fn kms_status(&self, req: Request<pb::KmsStatusRequest>) -> Result<Response<pb::KmsStatusResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            self.vault.linearize().await?;
            let progress = self.rewrapper.progress();
            let kms = &self.vault.kms;
            let (latest, rotation_error) = if kms.supports_rotation() {
                match self.rewrapper.latest_rotation().await {
                    Ok(l) => (l, String::new()),
                    Err(e) => (progress.latest_rotation_ms, e),
                }
            } else {
                (None, format!("the {} key manager does not rotate keys", kms.kind()))
            };
            let state = self.vault.reader.rewrap_state()?;
            let target = match (latest, state.watermark_ms) {
                (Some(l), Some(w)) if l > w => Some(l),
                _ => None,
            };
            let reader = self.vault.reader.clone();
            let (total, pending, by_key) = blocking(move || {
                let (total, pending) = reader.rewrap_counts(target)?;
                Ok::<_, vault_raft::StoreError>((total, pending, reader.versions_by_key()?))
            })
            .await?;
            let cluster_key = self.vault.reader.master_key()?.map(|mk| mk.key_id);
            let missing = by_key.keys().chain(cluster_key.iter()).filter(|k| !kms.holds_key(k)).cloned().collect();
            let is_leader = self.vault.cluster.raft.metrics().borrow().state == openraft::ServerState::Leader;
            Ok(pb::KmsStatusResponse {
                kind: kms.kind().to_string(),
                key_id: kms.key_id().to_string(),
                enabled: self.rewrapper.enabled(),
                is_leader,
                leader_api_addr: self.vault.leader_api_addr().unwrap_or_default(),
                running: progress.running,
                watermark_ms: state.watermark_ms,
                latest_rotation_ms: latest,
                rotation_error,
                total_versions: total,
                pending_versions: pending,
                pass_target_ms: progress.target_ms,
                pass_total: progress.total,
                pass_done: progress.done,
                pass_failed: progress.failed,
                last_error: progress.last_error.unwrap_or_default(),
                cluster_key_id: cluster_key.unwrap_or_default(),
                node_key_ids: kms.key_ids(),
                versions_by_key: by_key.into_iter().collect(),
                missing_key_ids: missing,
            })
        })
        .await
    }

    type SaveSnapshotStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static>>;

    async fn save_snapshot(
        &self,
        req: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            let (file, header) = crate::backup::save(&self.vault).await?;
            tracing::info!(applied_index = header.applied_index, "backup saved for a client");
            let rx = crate::backup::stream_file(file);
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            Ok(Box::pin(stream) as Self::SaveSnapshotStream)
        })
        .await
    }

    async fn restore_snapshot(
        &self,
        req: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
        let caller = caller_of(&req)?;
        let chunks = req.into_inner();
        self.admin(&caller, None, crate::backup::restore(&self.vault, &caller, chunks)).await
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let caller = caller_of(&req)?;
        let verify = req.into_inner().verify;
        self.admin(&caller, None, async { self.backups()?.list(verify).await }).await
    }

    async fn restore_backup(
        &self,
        req: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
        let caller = caller_of(&req)?;
        let name = req.into_inner().name;
        let subject = format!("backup:{name}");
        self.admin(&caller, Some(&subject), async { self.backups()?.restore(&caller, &name).await }).await
    }

    async fn server_status(
        &self,
        _req: Request<pb::ServerStatusRequest>,
    ) -> Result<Response<pb::ServerStatusResponse>, Status> {
        let m = self.vault.cluster.raft.metrics().borrow().clone();
        let ready = self.vault.health.ready();
        Ok(Response::new(pb::ServerStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: m.id,
            state: crate::cluster::state_name(m.state).to_string(),
            leader_id: m.current_leader,
            leader_api_addr: self.vault.leader_api_addr().unwrap_or_default(),
            ready: ready.is_ok(),
            not_ready: ready.err().unwrap_or_default(),
            feature_level: self.vault.reader.feature_level().unwrap_or(vault_raft::features::BASE_LEVEL),
            backup: self.backups.as_ref().map(|b| b.state(false)),
        }))
    }

    async fn upgrade_cluster(
        &self,
        req: Request<pb::UpgradeClusterRequest>,
    ) -> Result<Response<pb::UpgradeClusterResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, Some("cluster"), async {
            match self.cluster_change(&caller, AdminOp::RaiseFeatureLevel).await? {
                ForwardResponse::FeatureLevel { level, members } => Ok(pb::UpgradeClusterResponse {
                    feature_level: level,
                    members: members
                        .into_iter()
                        .map(|(id, feature_level)| pb::MemberFeatureLevel { id, feature_level })
                        .collect(),
                }),
                other => Err(Status::internal(format!("unexpected reply to an upgrade: {other:?}")).into()),
            }
        })
        .await
    }

    async fn kms_rotate(&self, req: Request<pb::KmsRotateRequest>) -> Result<Response<pb::KmsRotateResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let subject = (!r.key_id.is_empty()).then(|| format!("key:{}", r.key_id));
        self.admin(&caller, subject.as_deref(), async {
            let kms = &self.vault.kms;
            if !kms.rotates_through_cluster() {
                return Err(Status::failed_precondition(format!(
                    "the {} key manager rotates its key material itself; use `vaultctl kms rewrap` after a rotation",
                    kms.kind()
                )).into());
            }
            let key_id = if r.key_id.is_empty() { kms.key_id().to_string() } else { r.key_id.clone() };
            if !kms.holds_key(&key_id) {
                return Err(Status::failed_precondition(format!(
                    "this node's keyring ({}) does not hold {key_id}",
                    kms.key_ids().join(", ")
                )).into());
            }
            self.vault.linearize().await?;
            let previous = self.vault.reader.master_key()?.map(|mk| mk.key_id).unwrap_or_default();
            if previous == key_id {
                return Err(Status::failed_precondition(format!(
                    "{key_id} is already the cluster's master key; put the new key first in VAULT_LOCAL_MASTER_KEYS, \
                     or name it with --key-id"
                )).into());
            }
            let check = kms.key_check(&key_id);
            self.cluster_change(&caller, AdminOp::RotateMasterKey { key_id: key_id.clone(), check }).await?;
            self.vault.linearize().await?;
            let reader = self.vault.reader.clone();
            let by_key = blocking(move || reader.versions_by_key()).await?;
            let pending = by_key.iter().filter(|(k, _)| **k != key_id).map(|(_, n)| n).sum();
            tracing::info!(from = %previous, to = %key_id, pending, "master key rotated; the leader's worker re-wraps older data keys");
            Ok(pb::KmsRotateResponse { previous_key_id: previous, key_id, pending_versions: pending })
        })
        .await
    }

    async fn kms_rewrap(&self, req: Request<pb::KmsRewrapRequest>) -> Result<Response<pb::KmsRewrapResponse>, Status> {
        let caller = caller_of(&req)?;
        self.admin(&caller, None, async {
            if !self.vault.kms.supports_rotation() {
                return Err(Status::failed_precondition(format!(
                    "the {} key manager does not rotate keys; nothing to re-wrap",
                    self.vault.kms.kind()
                )).into());
            }
            if !self.rewrapper.enabled() {
                return Err(Status::failed_precondition(
                    "the re-wrap worker is disabled on this node: set VAULT_KMS_REWRAP_ENABLED=true on every node first",
                ).into());
            }
            if self.vault.cluster.raft.metrics().borrow().state != openraft::ServerState::Leader {
                return Err(crate::error::unavailable_with_leader(
                    "re-wrap runs on the leader",
                    self.vault.leader_api_addr().as_deref(),
                )
                .into());
            }
            let (outcome, running) = match self.rewrapper.kick().await {
                KickOutcome::Adopted { watermark_ms } => {
                    (format!("first run: adopted the newest rotation ({watermark_ms}) as the baseline, no sweep"), false)
                }
                KickOutcome::UpToDate { watermark_ms } => {
                    (format!("up to date: no rotation newer than the watermark ({watermark_ms})"), false)
                }
                KickOutcome::Started { target_ms, pending } => {
                    (format!("pass to rotation {target_ms} started: {pending} version(s) to re-wrap"), true)
                }
                KickOutcome::Running { target_ms, done, total } => {
                    let to = target_ms.map_or_else(|| "a rotation".to_string(), |t| format!("rotation {t}"));
                    (format!("pass to {to} already running: {done}/{total} re-wrapped"), true)
                }
                KickOutcome::Failed(why) => return Err(Status::unavailable(why).into()),
            };
            Ok(pb::KmsRewrapResponse { outcome, running })
        })
        .await
    }
}
