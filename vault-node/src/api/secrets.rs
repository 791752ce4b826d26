//! The `Secrets` service.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::model::{Action, Generator, ReaderDecision, ReaderRules, RotationPolicy};
use vault_core::{SecretBytes, SecretName};
use vault_raft::{Command, CommandResponse};

use crate::api::listing;
use crate::api::page_token::Listing;
use crate::auth::caller::{caller_of, Caller};
use crate::error::{answer, blocking, ApiError};
use crate::pb;
use crate::pb::secrets_server::Secrets;
use crate::vault::Vault;

/// Most names in one `BatchGetSecrets`.
const MAX_BATCH: usize = 100;
/// Most versions named in one lifecycle call.
const MAX_VERSIONS_PER_CALL: usize = 100;
/// How long `RotateSecret` waits for the leader's attempt (longer than a hook may run by
/// default), and how often it looks.
const ROTATE_WAIT: std::time::Duration = std::time::Duration::from_secs(50);
const ROTATE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

pub struct SecretsService {
    vault: Arc<Vault>,
    /// `VAULT_ROTATION_HOOKS_DIR`, to check an `exec:` policy's hook when it is set.
    hooks_dir: Option<std::path::PathBuf>,
    /// This node's watches (see `api::watch`).
    watch: Arc<crate::api::watch::WatchHub>,
}

/// Refuses a read from an address that may not read (decided by the auth layer; refused here,
/// so the refusal is recorded with the secret's name, like an allowed read).
fn read_gate(caller: &Caller) -> Result<(), Status> {
    match &caller.read_denied {
        Some(why) => Err(Status::permission_denied(why.clone())),
        None => Ok(()),
    }
}

impl SecretsService {
    pub fn new(
        vault: Arc<Vault>,
        hooks_dir: Option<std::path::PathBuf>,
        watch: Arc<crate::api::watch::WatchHub>,
    ) -> Self {
        SecretsService { vault, hooks_dir, watch }
    }

    /// An `exec:` generator is accepted only for a hook bound to `name` (see `hooks`); every
    /// refusal reads the same, whatever is on disk.
    fn check_hook(&self, generator: &Generator, name: &SecretName) -> Result<(), ApiError> {
        let Generator::Exec(path) = generator else { return Ok(()) };
        let dir = self.hooks_dir.as_deref();
        if let Err(crate::hooks::Refused(why)) = crate::hooks::bound_hook(&self.vault.reader, dir, path, name.as_str())?
        {
            tracing::info!(secret = name.as_str(), hook = path.as_str(), %why, "exec: rotation policy refused");
            return Err(Status::permission_denied(crate::hooks::HOOK_REFUSED).into());
        }
        Ok(())
    }
}

/// Whether `rules` (the reader rules as this node has applied them) let `caller` read `name`:
/// the rule that allows it, or `None` when no rule exists (the address allowlist alone
/// decides). Callers make the read linearizable before loading the rules, so a rule deleted
/// anywhere is not applied here afterwards.
fn reader_rule(rules: &ReaderRules, caller: &Caller, name: &SecretName) -> Result<Option<String>, Status> {
    let ip = crate::auth::allowlist::canonical(caller.ip);
    match rules.decide(ip, caller.cert_cn.as_deref(), name.as_str()) {
        ReaderDecision::NoRules => Ok(None),
        ReaderDecision::Allowed(rule) => Ok(Some(rule)),
        ReaderDecision::Denied(why) => Err(Status::permission_denied(why)),
    }
}

fn parse_name(raw: &str) -> Result<SecretName, ApiError> {
    Ok(SecretName::parse(raw)?)
}

fn check_versions(versions: &[u64]) -> Result<(), Status> {
    if versions.is_empty() {
        return Err(Status::invalid_argument("name at least one version"));
    }
    if versions.len() > MAX_VERSIONS_PER_CALL {
        return Err(Status::invalid_argument(format!("at most {MAX_VERSIONS_PER_CALL} versions per call")));
    }
    if versions.contains(&0) {
        return Err(Status::invalid_argument("versions start at 1"));
    }
    Ok(())
}

impl SecretsService {
    /// Shared by delete/undelete/destroy of versions.
    async fn lifecycle(
        &self,
        req: Request<pb::VersionsRequest>,
        action: Action,
        make: impl FnOnce(String, Vec<u64>) -> Command,
    ) -> Result<Response<pb::VersionsResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            check_versions(&r.versions)?;
            caller.require_on_existing(action, name.as_str())?;
            match self.vault.write_ok(&caller, make(name.to_string(), r.versions.clone())).await? {
                CommandResponse::Changed { versions } => Ok(versions),
                _ => Ok(Vec::new()),
            }
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(pb::VersionsResponse { changed: result? }))
    }
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    #[tracing::instrument(skip_all)]
    async fn put_secret(&self, req: Request<pb::PutSecretRequest>) -> Result<Response<pb::PutSecretResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let value = SecretBytes::new(r.value);
        let result = answer(async {
            let name = parse_name(&r.name)?;
            self.vault.put_secret(&caller, &name, &value, r.expected_version, r.max_versions).await
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(pb::PutSecretResponse { version: result? }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_secret(&self, req: Request<pb::GetSecretRequest>) -> Result<Response<pb::GetSecretResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let mut rule = None;
        let result = answer(async {
            read_gate(&caller)?;
            let name = parse_name(&r.name)?;
            self.vault.linearize().await?;
            let rules = self.vault.reader.reader_rules()?;
            rule = reader_rule(&rules, &caller, &name)?;
            self.vault.open_secret(&name, r.version).await
        })
        .await;
        self.vault.audit_read(&caller, &r.name, &result, rule.as_deref()).await?;
        let (record, value) = result?;
        Ok(Response::new(pb::GetSecretResponse {
            name: r.name,
            version: record.version,
            value: value.into_unprotected(),
            created_at_ms: record.created_at_ms,
        }))
    }

    /// Answers each name on its own: one refused or missing name does not fail the others.
    #[tracing::instrument(skip_all)]
    async fn batch_get_secrets(
        &self,
        req: Request<pb::BatchGetSecretsRequest>,
    ) -> Result<Response<pb::BatchGetSecretsResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        if r.requests.len() > MAX_BATCH {
            let refused: Result<(), Status> =
                Err(Status::invalid_argument(format!("at most {MAX_BATCH} names per batch, not {}", r.requests.len())));
            self.vault.audit(&caller, None, &refused)?;
            refused?;
        }
        if let Err(refusal) = read_gate(&caller) {
            // The address may not read: the whole call is refused, each name on record.
            for item in &r.requests {
                self.vault.audit(&caller, Some(&item.name), &Err::<(), _>(refusal.clone()))?;
            }
            return Err(refusal);
        }
        // One barrier for the whole batch: every item is read after it, under the rules as of then.
        let rules = answer(async {
            self.vault.linearize().await?;
            Ok(self.vault.reader.reader_rules()?)
        })
        .await;
        let mut results = Vec::with_capacity(r.requests.len());
        // The items' records, written together before the answer leaves.
        let mut records = Vec::with_capacity(r.requests.len());
        for item in r.requests {
            let mut rule = None;
            let result = answer(async {
                let rules = rules.as_ref().map_err(Clone::clone)?;
                let name = parse_name(&item.name)?;
                rule = reader_rule(rules, &caller, &name)?;
                self.vault.open_secret(&name, item.version).await
            })
            .await;
            match self.vault.read_record(&caller, &item.name, &result, rule.as_deref()) {
                Some(record) => records.push(record),
                None => self.vault.audit(&caller, Some(&item.name), &result)?,
            }
            let outcome = match result {
                Ok((record, value)) => pb::batch_get_result::Result::Secret(pb::GetSecretResponse {
                    name: item.name.clone(),
                    version: record.version,
                    value: value.into_unprotected(),
                    created_at_ms: record.created_at_ms,
                }),
                Err(s) => pb::batch_get_result::Result::Error(pb::ItemError {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                }),
            };
            results.push(pb::BatchGetResult { name: item.name, result: Some(outcome) });
        }
        self.vault.audit_reads(records).await?;
        Ok(Response::new(pb::BatchGetSecretsResponse { results }))
    }

    async fn list_secrets(
        &self,
        req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let listing = Listing::Secrets;
            let scope = listing::scope(&caller, listing, &r.prefix, r.page_size, &r.page_token)?;
            self.vault.linearize().await?;
            let reader = self.vault.reader.clone();
            let (items, more) = blocking(move || reader.list_secrets(&scope.ranges, &scope.after, scope.limit)).await?;
            let last = items.last().map(|(name, _)| name.as_str());
            let next_page_token = listing::next_token(listing, &r.prefix, last, more);
            let secrets = items.iter().map(|(n, m)| pb::SecretSummary::from_meta(n.clone(), m)).collect();
            Ok(pb::ListSecretsResponse { secrets, next_page_token })
        })
        .await;
        self.vault.audit(&caller, None, &result)?;
        Ok(Response::new(result?))
    }

    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            caller.require(Action::List, name.as_str())?;
            self.vault.linearize().await?;
            let meta = self
                .vault
                .reader
                .secret_meta(name.as_str())?
                .ok_or_else(|| Status::not_found(format!("secret {name} does not exist")))?;
            let versions = self.vault.reader.versions(name.as_str())?;
            let rotation = self.vault.reader.rotation(name.as_str())?;
            Ok(pb::ListVersionsResponse {
                name: name.to_string(),
                current_version: meta.current_version,
                max_versions: meta.max_versions,
                versions: versions.iter().map(pb::VersionInfo::from).collect(),
                rotation: rotation.map(|p| pb::RotationInfo::from_policy(name.to_string(), &p)),
            })
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(result?))
    }

    async fn set_rotation(&self, req: Request<pb::SetRotationRequest>) -> Result<Response<pb::RotationInfo>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            caller.require_on_existing(Action::Rotate, name.as_str())?;
            let generator: Generator = r.generator.parse()?;
            self.check_hook(&generator, &name)?;
            let every_ms = r.every_secs.checked_mul(1000).ok_or_else(|| Status::invalid_argument("period too long"))?;
            let policy = RotationPolicy::new(every_ms, generator, vault_core::time::now_ms())?;
            let info = pb::RotationInfo::from_policy(name.to_string(), &policy);
            self.vault.write_ok(&caller, Command::SetRotation { name: name.to_string(), policy }).await?;
            Ok(info)
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(result?))
    }

    async fn get_rotation(&self, req: Request<pb::GetRotationRequest>) -> Result<Response<pb::RotationInfo>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            // Reading a policy is listing the name's metadata, like `versions`.
            caller.require(Action::List, name.as_str())?;
            self.vault.linearize().await?;
            let policy = self
                .vault
                .reader
                .rotation(name.as_str())?
                .ok_or_else(|| Status::not_found(format!("secret {name} has no rotation policy")))?;
            Ok(pb::RotationInfo::from_policy(name.to_string(), &policy))
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(result?))
    }

    /// Every policy the caller may see (`list` on its name), a page at a time, like
    /// `list_secrets`.
    async fn list_rotations(
        &self,
        req: Request<pb::ListRotationsRequest>,
    ) -> Result<Response<pb::ListRotationsResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let listing = Listing::Rotations;
            let scope = listing::scope(&caller, listing, &r.prefix, r.page_size, &r.page_token)?;
            self.vault.linearize().await?;
            let reader = self.vault.reader.clone();
            let (items, more) =
                blocking(move || reader.list_rotations(&scope.ranges, &scope.after, scope.limit)).await?;
            let last = items.last().map(|(name, _)| name.as_str());
            let next_page_token = listing::next_token(listing, &r.prefix, last, more);
            let rotations = items.iter().map(|(n, p)| pb::RotationInfo::from_policy(n.clone(), p)).collect();
            Ok(pb::ListRotationsResponse { rotations, next_page_token })
        })
        .await;
        self.vault.audit(&caller, None, &result)?;
        Ok(Response::new(result?))
    }

    async fn clear_rotation(
        &self,
        req: Request<pb::ClearRotationRequest>,
    ) -> Result<Response<pb::ClearRotationResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            caller.require_on_existing(Action::Rotate, name.as_str())?;
            self.vault.write_ok(&caller, Command::ClearRotation { name: name.to_string() }).await?;
            Ok(pb::ClearRotationResponse {})
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(result?))
    }

    /// Makes the rotation due now, then waits (on this node's applied state, after barriers)
    /// until the leader's worker has made the next attempt, and answers with its outcome.
    async fn rotate_secret(
        &self,
        req: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            caller.require_on_existing(Action::Rotate, name.as_str())?;
            let cmd = Command::RotateNow { name: name.to_string() };
            let CommandResponse::RotationQueued { attempts } = self.vault.write_ok(&caller, cmd).await? else {
                return Err(Status::internal("unexpected answer to a rotation request").into());
            };
            // On the leader, the worker starts the attempt now (through a follower, the
            // leader's worker finds it due within a second).
            self.vault.rotation_wake.notify_one();
            let deadline = tokio::time::Instant::now() + ROTATE_WAIT;
            loop {
                tokio::time::sleep(ROTATE_POLL).await;
                self.vault.linearize().await?;
                let policy = self
                    .vault
                    .reader
                    .rotation(name.as_str())?
                    .ok_or_else(|| Status::not_found(format!("the rotation policy of {name} was cleared")))?;
                if policy.attempts > attempts {
                    return match policy.last_error {
                        Some(why) if policy.failures > 0 => Err(Status::unavailable(format!(
                            "rotation of {name} failed: {why}; the old version stays current and the leader retries"
                        ))
                        .into()),
                        _ => {
                            let meta = self.vault.reader.secret_meta(name.as_str())?;
                            Ok(pb::RotateSecretResponse { version: meta.map_or(0, |m| m.current_version) })
                        }
                    };
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Status::unavailable(format!(
                        "rotation of {name} is due but the leader has not attempted it within {ROTATE_WAIT:?}"
                    ))
                    .into());
                }
            }
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        Ok(Response::new(result?))
    }

    async fn delete_secret(
        &self,
        req: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let result = answer(async {
            let name = parse_name(&r.name)?;
            let now_ms = vault_core::time::now_ms();
            let cmd = if r.destroy {
                caller.require_on_existing(Action::Destroy, name.as_str())?;
                Command::DestroySecret { name: name.to_string(), now_ms }
            } else {
                caller.require_on_existing(Action::Delete, name.as_str())?;
                Command::SoftDeleteSecret { name: name.to_string(), now_ms }
            };
            self.vault.write_ok(&caller, cmd).await
        })
        .await;
        self.vault.audit(&caller, Some(&r.name), &result)?;
        result?;
        Ok(Response::new(pb::DeleteSecretResponse {}))
    }

    async fn delete_versions(
        &self,
        req: Request<pb::VersionsRequest>,
    ) -> Result<Response<pb::VersionsResponse>, Status> {
        let now = vault_core::time::now_ms();
        self.lifecycle(req, Action::Delete, |name, versions| Command::DeleteVersions { name, versions, now_ms: now })
            .await
    }

    async fn undelete_versions(
        &self,
        req: Request<pb::VersionsRequest>,
    ) -> Result<Response<pb::VersionsResponse>, Status> {
        self.lifecycle(req, Action::Update, |name, versions| Command::UndeleteVersions { name, versions }).await
    }

    async fn destroy_versions(
        &self,
        req: Request<pb::VersionsRequest>,
    ) -> Result<Response<pb::VersionsResponse>, Status> {
        let now = vault_core::time::now_ms();
        self.lifecycle(req, Action::Destroy, |name, versions| Command::DestroyVersions { name, versions, now_ms: now })
            .await
    }

    type WatchSecretsStream = crate::api::watch::WatchStream;

    #[tracing::instrument(skip_all)]
    async fn watch_secrets(
        &self,
        req: Request<pb::WatchSecretsRequest>,
    ) -> Result<Response<Self::WatchSecretsStream>, Status> {
        crate::api::watch::watch_secrets(&self.vault, &self.watch, req).await
    }
}
