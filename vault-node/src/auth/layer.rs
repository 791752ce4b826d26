//! The tower layer in front of every API service.
//!
//! What each RPC needs comes from one table (`rpcs`):
//! - Reads: the client address is resolved here; whether it may read is decided here too, but
//!   the refusal is made (and recorded) by the handler once it knows the secret's name.
//! - Health checks: open.
//! - Everything else under `vault.v1`: `authorization: Bearer <token>`, checked after a
//!   linearizable barrier so a revoked token is refused on every node at once. `PutSecret`
//!   skips the barrier: its command carries the token and is authorized again when applied,
//!   which is what decides.
//!
//! On success the [`Caller`] goes into the request extensions; on failure the request never
//! reaches a handler, and the refusal is audited (rate-limited per address).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};
use vault_core::time::now_ms;
use vault_core::token::RawToken;

use super::allowlist::Allowlist;
use super::caller::{Caller, Principal};
use super::client_ip;
use super::header_limit;
use super::refusals::RateLimiter;
use super::rpcs::{self, Access};
use crate::api_conn::ApiConnectInfo;
use crate::error::ApiError;
use crate::vault::Vault;
use vault_core::addr_bucket::AddrBucket;

pub struct AuthPolicy {
    pub vault: Arc<Vault>,
    pub allowed_ips: Allowlist,
    pub trust_proxy: bool,
    pub trusted_proxies: Allowlist,
    /// Requests per second per client address (IPv6 by its /64), and per token; `None`: no
    /// limit.
    pub rate_per_addr: Option<RateLimiter<AddrBucket>>,
    pub rate_per_token: Option<RateLimiter<[u8; 32]>>,
    /// Longest a call may run ([`rpcs::Rpc::unbounded`] calls excepted: backup and restore
    /// stream as long as their data takes).
    pub request_timeout: std::time::Duration,
    /// Largest header list a call may carry (see [`header_limit`]).
    pub max_header_bytes: usize,
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

/// What authentication looks at, taken from the request before any await.
struct AuthInput {
    path: String,
    headers: http::HeaderMap,
    peer: Option<IpAddr>,
    /// The verified client certificate's common name, if one was presented.
    client_cn: Option<Arc<str>>,
    /// Set by the operator console only (see `ApiConnectInfo::console_user`).
    console_user: Option<Arc<str>>,
}

impl AuthInput {
    fn of<B>(req: &http::Request<B>) -> Self {
        let info = req.extensions().get::<ApiConnectInfo>();
        AuthInput {
            path: req.uri().path().to_string(),
            headers: req.headers().clone(),
            peer: info.and_then(|i| i.tcp.remote_addr()).map(|a| a.ip()),
            client_cn: info.and_then(|i| i.client_cn.clone()),
            console_user: info.and_then(|i| i.console_user.clone()),
        }
    }
}

impl AuthPolicy {
    async fn authenticate(&self, req: &AuthInput) -> Result<Option<Caller>, Status> {
        let rpc = rpcs::lookup(&req.path);
        let action = rpc.action;
        if rpc.access == Access::Open {
            return Ok(None);
        }
        let Some(peer) = req.peer else {
            return Err(Status::permission_denied("client address unknown; refused"));
        };
        let values = req.headers.get_all("x-forwarded-for");
        if self.trust_proxy && self.trusted_proxies.contains(peer) && values.iter().any(|v| v.to_str().is_err()) {
            // Never ignored: the proxy would be taken for the client.
            let status = Status::permission_denied("x-forwarded-for from the proxy is not valid ASCII; refused");
            return Err(self.vault.audit_refusal(peer.to_string(), peer, action, None, status));
        }
        let forwarded: Vec<&str> = values.iter().filter_map(|v| v.to_str().ok()).collect();
        let ip = match client_ip::resolve(peer, &forwarded, self.trust_proxy, &self.trusted_proxies) {
            Ok(ip) => ip,
            Err(why) => {
                let status = Status::permission_denied(why);
                return Err(self.vault.audit_refusal(peer.to_string(), peer, action, None, status));
            }
        };
        if let Some(rate) = &self.rate_per_addr {
            let bucket = AddrBucket::of(ip);
            if !rate.take(&bucket, now_ms()) {
                return Err(Status::resource_exhausted(format!(
                    "request rate limit for {bucket} reached; retry in {} s",
                    rate.retry_after_secs()
                )));
            }
        }
        match rpc.access {
            Access::Open => Ok(None),
            Access::Read => {
                let mut caller = Caller::new(ip, None, action);
                // A trusted proxy's connection carries the proxy's certificate, not the client's:
                // its subject must not lend the proxy's grants to every client behind it.
                let via_proxy = self.trust_proxy && self.trusted_proxies.contains(peer);
                caller.cert_cn = if via_proxy { None } else { req.client_cn.clone() };
                caller.console_user = req.console_user.clone();
                if !self.allowed_ips.contains(ip) {
                    caller.read_denied = Some(format!("client address {ip} is not allowed to read secrets"));
                }
                Ok(Some(caller))
            }
            Access::Manage | Access::ManageWrite | Access::Admin => {
                match self.token_principal(req, rpc.access != Access::ManageWrite).await.map_err(Status::from) {
                    Ok(principal) => {
                        if let Some(rate) = &self.rate_per_token {
                            if !rate.take(&principal.token.hash.0, now_ms()) {
                                return Err(Status::resource_exhausted(format!(
                                    "request rate limit for token {} reached; retry in {} s",
                                    principal.token.name,
                                    rate.retry_after_secs()
                                )));
                            }
                        }
                        Ok(Some(Caller::new(ip, Some(principal), action)))
                    }
                    Err(status) if status.code() == tonic::Code::Unavailable => Err(status),
                    Err(status) => Err(self.vault.audit_refusal("-".into(), ip, action, None, status)),
                }
            }
        }
    }

    /// The token's record and role. With `barrier`, read after a linearizable barrier, so a
    /// token revoked anywhere before this call is refused here. Without it, a token this node
    /// does not know yet gets one barrier before it is refused.
    async fn token_principal(&self, req: &AuthInput, barrier: bool) -> Result<Principal, ApiError> {
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let value = header.to_str().map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let raw = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() => rest.trim(),
            _ => return Err(Status::unauthenticated("authorization header must be: Bearer <token>").into()),
        };
        let presented = RawToken::presented(raw);
        let hash = presented.hash();
        if barrier {
            self.vault.linearize().await?;
        }
        let mut token = self.vault.reader.token_by_hash(&hash)?;
        if token.is_none() && !barrier {
            // A token created through another node may not have reached this one yet: catch
            // up, then look again. (A revoked token still present here is refused when the
            // write applies, which checks the token again.)
            self.vault.linearize().await?;
            token = self.vault.reader.token_by_hash(&hash)?;
        }
        let token = token.ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        if token.is_expired(now_ms()) {
            return Err(Status::unauthenticated(format!("token {} has expired", token.name)).into());
        }
        let role = self.vault.reader.role(&token.role)?.ok_or_else(|| {
            Status::permission_denied(format!("role {} of token {} no longer exists", token.role, token.name))
        })?;
        Ok(Principal { token, role, presented })
    }
}

/// A request that is not gRPC (say, JSON) is refused before anything reads its body.
fn not_grpc(headers: &http::HeaderMap) -> Option<Status> {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let grpc = ct == "application/grpc" || ct.starts_with("application/grpc+") || ct.starts_with("application/grpc;");
    (!grpc).then(|| Status::invalid_argument("content-type must be application/grpc (this is a gRPC API)"))
}

/// tonic answers a request body it cannot decode (bad framing, bad protobuf, invalid UTF-8 in
/// a string field) with INTERNAL; those are the client's errors: INVALID_ARGUMENT, here, for
/// every service. Any other INTERNAL (a bug) is left as it is.
fn malformed_as_invalid_argument(response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else { return response };
    const DECODE_FAILURES: [&str; 4] =
        ["failed to decode", "protocol error", "Unexpected EOF decoding", "Error decompressing"];
    if status.code() == tonic::Code::Internal && DECODE_FAILURES.iter().any(|p| status.message().starts_with(p)) {
        let short: String = status.message().chars().take(200).collect();
        return Status::invalid_argument(format!("malformed request: {short}")).into_http();
    }
    response
}

/// Reads (and drops) what is left of a refused request's body, at most `REFUSED_BODY_BYTES`
/// within `REFUSED_BODY_WAIT`, before the refusal is sent. Answering while the client is still
/// sending makes HTTP/2 reset the stream, and some clients (curl) then report a stream error
/// instead of the status.
async fn drain<B: http_body::Body>(body: B) {
    use http_body_util::BodyExt;
    const REFUSED_BODY_BYTES: usize = 64 << 10;
    const REFUSED_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
    let mut body = std::pin::pin!(body);
    let mut seen = 0usize;
    let _ = tokio::time::timeout(REFUSED_BODY_WAIT, async {
        while seen < REFUSED_BODY_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, bytes::Buf::remaining).max(1),
                _ => return,
            }
        }
    })
    .await;
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
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
        let too_large = header_limit::check(&req, policy.max_header_bytes);
        Box::pin(async move {
            // An oversized header list is answered at once and dropped, not held while the body
            // drains.
            if let Some(refusal) = too_large {
                drop((req, input));
                return Ok(refusal.into_http());
            }
            if let Some(refusal) = not_grpc(&input.headers) {
                drain(req.into_body()).await;
                return Ok(refusal.into_http());
            }
            let limit = (!rpcs::lookup(&input.path).unbounded).then_some(policy.request_timeout);
            let work = async {
                match policy.authenticate(&input).await {
                    Ok(Some(caller)) => {
                        req.extensions_mut().insert(caller);
                        inner.call(req).await.map(Ok)
                    }
                    Ok(None) => inner.call(req).await.map(Ok),
                    Err(status) => Ok(Err(status)),
                }
            };
            let outcome = match limit {
                Some(limit) => match tokio::time::timeout(limit, work).await {
                    Ok(r) => r?,
                    Err(_) => Err(Status::cancelled(format!("request ran past the server's limit of {limit:?}"))),
                },
                None => work.await?,
            };
            match outcome {
                Ok(response) => Ok(malformed_as_invalid_argument(response)),
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
