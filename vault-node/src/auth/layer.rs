//! The tower layer in front of every API service.
//!
//! - Reads (`GetSecret`, `BatchGetSecrets`): the client address must be in the allowlist.
//! - Health checks: open.
//! - Everything else under `vault.v1`: `authorization: Bearer <token>`, checked after a
//!   linearizable barrier so a revoked token is refused on every node at once. `PutSecret`
//!   skips the barrier: its command carries the token and is authorized again when applied,
//!   which is what decides.
//!
//! On success the [`Caller`] goes into the request extensions; on failure the request never
//! reaches a handler, and the refusal is audited.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use tower::{Layer, Service};
use vault_core::time::now_ms;
use vault_core::token::RawToken;

use super::allowlist::Allowlist;
use super::caller::{Caller, Principal};
use super::client_ip;
use crate::error::{code_words, from_store};
use crate::vault::Vault;

pub struct AuthPolicy {
    pub vault: Arc<Vault>,
    pub allowed_ips: Allowlist,
    pub trust_proxy: bool,
    pub trusted_proxies: Allowlist,
}

#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<AuthPolicy>,
}

impl AuthLayer {
    pub fn new(policy: AuthPolicy) -> Self {
        AuthLayer { policy: Arc::new(policy) }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, policy: self.policy.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
}

enum Kind {
    Read,
    Management,
    /// Authorized again when its command is applied, so this node's state suffices here.
    ManagementWrite,
    Open,
}

fn classify(path: &str) -> Kind {
    match path {
        "/vault.v1.Secrets/GetSecret" | "/vault.v1.Secrets/BatchGetSecrets" => Kind::Read,
        "/vault.v1.Secrets/PutSecret" => Kind::ManagementWrite,
        p if p.starts_with("/vault.v1.") => Kind::Management,
        _ => Kind::Open,
    }
}

/// `Secrets/PutSecret` -> `PutSecret`, for audit records of refused calls.
fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What authentication looks at, taken from the request before any await.
struct AuthInput {
    path: String,
    headers: http::HeaderMap,
    peer: Option<IpAddr>,
}

impl AuthInput {
    fn of<B>(req: &http::Request<B>) -> Self {
        AuthInput { path: req.uri().path().to_string(), headers: req.headers().clone(), peer: peer_ip(req) }
    }
}

fn peer_ip<B>(req: &http::Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()))
        .map(|a| a.ip())
}

impl AuthPolicy {
    async fn authenticate(&self, req: &AuthInput) -> Result<Option<Caller>, Status> {
        let kind = classify(&req.path);
        if matches!(kind, Kind::Open) {
            return Ok(None);
        }
        let action = method_name(&req.path);
        let Some(peer) = req.peer else {
            return Err(Status::permission_denied("client address unknown; refused"));
        };
        let forwarded: Vec<&str> =
            req.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        let ip = match client_ip::resolve(peer, &forwarded, self.trust_proxy, &self.trusted_proxies) {
            Ok(ip) => ip,
            Err(why) => {
                let status = Status::permission_denied(why);
                self.audit_refusal(peer.to_string(), peer, action, &status)?;
                return Err(status);
            }
        };
        match kind {
            Kind::Read => {
                if self.allowed_ips.contains(ip) {
                    Ok(Some(Caller { ip, principal: None }))
                } else {
                    let status =
                        Status::permission_denied(format!("client address {ip} is not allowed to read secrets"));
                    self.audit_refusal(ip.to_string(), ip, action, &status)?;
                    Err(status)
                }
            }
            _ => match self.token_principal(req, matches!(kind, Kind::Management)).await {
                Ok(principal) => Ok(Some(Caller { ip, principal: Some(principal) })),
                Err(status) => {
                    if status.code() != tonic::Code::Unavailable {
                        self.audit_refusal("-".into(), ip, action, &status)?;
                    }
                    Err(status)
                }
            },
        }
    }

    /// The token's record and role. With `barrier`, read after a linearizable barrier, so a
    /// token revoked anywhere before this call is refused here. Without it, a token this node
    /// does not know yet gets one barrier before it is refused.
    async fn token_principal(&self, req: &AuthInput, barrier: bool) -> Result<Principal, Status> {
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let value = header.to_str().map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let raw = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() => rest.trim(),
            _ => return Err(Status::unauthenticated("authorization header must be: Bearer <token>")),
        };
        let hash = RawToken::presented(raw).hash();
        if barrier {
            self.vault.linearize().await?;
        }
        let mut token = self.vault.reader.token_by_hash(&hash).map_err(from_store)?;
        if token.is_none() && !barrier {
            // A token created through another node may not have reached this one yet: catch
            // up, then look again. (A revoked token still present here is refused when the
            // write applies, which checks the token again.)
            self.vault.linearize().await?;
            token = self.vault.reader.token_by_hash(&hash).map_err(from_store)?;
        }
        let token = token.ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        if token.is_expired(now_ms()) {
            return Err(Status::unauthenticated(format!("token {} has expired", token.name)));
        }
        let role = self.vault.reader.role(&token.role).map_err(from_store)?.ok_or_else(|| {
            Status::permission_denied(format!("role {} of token {} no longer exists", token.role, token.name))
        })?;
        Ok(Principal { token, role })
    }

    fn audit_refusal(&self, actor: String, ip: IpAddr, action: &str, status: &Status) -> Result<(), Status> {
        let outcome = format!("{}: {}", code_words(status.code()), status.message());
        self.vault.audit_raw(actor, ip.to_string(), action, None, outcome)
    }
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        // The ready service goes with this request; a fresh clone waits for the next one.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let policy = self.policy.clone();
        let input = AuthInput::of(&req);
        Box::pin(async move {
            match policy.authenticate(&input).await {
                Ok(Some(caller)) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Ok(None) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
