//! The operator console: server-rendered HTML on its own listener (`VAULT_UI_ADDR`, off unless
//! set), over TLS whenever the API is, with no JavaScript and no asset from elsewhere.
//!
//! - **Same authorization and audit as the API.** Every action is a gRPC call through the API's
//!   own stack ([`grpc`]): the session's token and the browser's address, nothing else.
//! - **Sessions** ([`session`]): a token is exchanged for a random id in an HttpOnly,
//!   SameSite=Strict cookie (Secure under TLS), with idle and absolute expiry; logout ends it.
//! - **CSRF**: every form carries the session's CSRF value; a POST without it, or with a
//!   foreign `Origin`, is refused with 403. The login form uses a double-submit cookie.
//! - **Headers**: a strict Content-Security-Policy (`default-src 'none'`, styles from this
//!   node only), nosniff, frame denial, no referrer, `no-store` on every page.
//! - **Values** are shown only by `POST /secret/reveal`, a `GetSecret` through the API
//!   (audited as one), in a page that is not cached.
//! - **Logins** are rate-limited per address (IPv6 by /64) and each attempt is an API call
//!   (`WhoAmI`), audited as `token.whoami` or as a refusal.

mod access;
mod audit;
mod backups;
mod cluster;
pub mod grpc;
mod login;
mod page;
mod rotation;
mod secrets;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use vault_core::addr_bucket::{AddrBucket, AddrCounts};

use crate::auth::refusals::RateLimiter;
use crate::vault::Vault;
use grpc::ApiStack;
use session::Sessions;

/// The console's settings (`VAULT_UI_*`).
#[derive(Clone, Debug)]
pub struct UiConfig {
    pub addr: SocketAddr,
    /// A session unused this long ends (`VAULT_UI_SESSION_IDLE`).
    pub session_idle: Duration,
    /// A session ends this long after its login (`VAULT_UI_SESSION_MAX`).
    pub session_max: Duration,
    /// Login attempts per minute per client address (`VAULT_UI_LOGIN_RATE`).
    pub logins_per_min: u32,
    /// Plain HTTP on a non-loopback address is allowed (`VAULT_UI_INSECURE`).
    pub insecure: bool,
}

impl UiConfig {
    /// Without TLS the console serves only loopback, unless told otherwise.
    pub fn check_transport(&self, tls: bool) -> anyhow::Result<()> {
        if !tls && !self.addr.ip().is_loopback() && !self.insecure {
            anyhow::bail!(
                "VAULT_UI_ADDR={} is not a loopback address and the API has no TLS (VAULT_TLS_CERT): \
                 tokens and session cookies would cross the network in the clear; serve TLS, bind \
                 the console to loopback, or set VAULT_UI_INSECURE=true",
                self.addr
            );
        }
        Ok(())
    }
}

/// Connections the console serves at once, and from one client address (IPv6: per /64).
const MAX_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_ADDR: usize = 32;
/// A request's body must arrive whole within this, and be at most this large (a login's much
/// smaller), before any handler sees it: a client dribbling a body holds nothing for long.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_LOGIN_BODY_BYTES: usize = 4 * 1024;
/// How long a browser may take to send a request's headers (and to finish a TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The console's shared state.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

pub struct Inner {
    pub api: ApiStack,
    vault: Arc<Vault>,
    pub sessions: Sessions,
    logins: RateLimiter<AddrBucket>,
    /// Served over TLS: cookies are `Secure`, and HSTS is sent.
    pub secure: bool,
}

impl std::ops::Deref for Console {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Console {
    pub fn new(api: ApiStack, vault: Arc<Vault>, config: &UiConfig, secure: bool) -> Self {
        let per_min = f64::from(config.logins_per_min.max(1));
        Console(Arc::new(Inner {
            api,
            vault,
            sessions: Sessions::new(config.session_idle, config.session_max),
            logins: RateLimiter::new(per_min / 60.0, per_min),
            secure,
        }))
    }
}

impl Inner {
    /// A session lives only as long as its token: one revoked (anywhere: this node has applied
    /// it moments later) or expired ends the session at its next request. Reads are authorized
    /// by address, so without this a revoked token's session could still reveal values.
    fn still_valid(
        &self,
        session: session::Session,
        cookie: Option<&str>,
    ) -> Result<session::Session, session::Lookup> {
        let live = match self.vault.reader.token_by_hash(&session.token.hash()) {
            Ok(Some(t)) => !t.is_expired(vault_core::time::now_ms()),
            // Storage trouble: fail closed (the login page will say what the API says).
            Ok(None) | Err(_) => false,
        };
        if live {
            return Ok(session);
        }
        if let Some(c) = cookie {
            self.sessions.end(c);
        }
        Err(session::Lookup::Ended)
    }
}

fn router(console: Console) -> Router {
    let secure = console.secure;
    Router::new()
        .route("/", get(root))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/cluster", get(cluster::show))
        .route("/cluster/confirm", get(cluster::confirm))
        .route("/cluster/action", post(cluster::act))
        .route("/secrets", get(secrets::list))
        .route("/secret", get(secrets::show))
        .route("/secret/reveal", post(secrets::reveal))
        .route("/secret/put", post(secrets::put))
        .route("/secret/confirm", get(secrets::confirm))
        .route("/secret/versions", post(secrets::versions))
        .route("/audit", get(audit::search))
        .route("/audit/export", get(audit::export))
        .route("/audit/verify", get(audit::verify))
        .route("/access", get(access::show))
        .route("/access/token", post(access::create_token))
        .route("/access/revoke", post(access::revoke_token))
        .route("/access/role", post(access::create_role))
        .route("/access/role/delete", post(access::delete_role))
        .route("/access/reader", post(access::create_reader))
        .route("/access/reader/delete", post(access::delete_reader))
        .route("/rotation", get(rotation::list))
        .route("/rotation/rotate", post(rotation::rotate))
        .route("/backups", get(backups::show))
        .route("/backups/snapshot", post(backups::snapshot))
        .route("/static/console.css", get(stylesheet))
        .fallback(not_found)
        .layer(middleware::from_fn(move |req: Request, next: Next| guard(secure, req, next)))
        .with_state(console)
}

/// Around every request: the body read whole within its bounds, a panic answered as a page
/// (the node's log has the rest), and the security headers on whatever goes out.
async fn guard(secure: bool, req: Request, next: Next) -> Response {
    use futures::FutureExt as _;
    let limit = if req.uri().path() == "/login" { MAX_LOGIN_BODY_BYTES } else { MAX_BODY_BYTES };
    let (parts, body) = req.into_parts();
    let mut response = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => plain(StatusCode::REQUEST_TIMEOUT, "The request's body did not arrive in time."),
        Ok(Err(_)) => plain(StatusCode::PAYLOAD_TOO_LARGE, "The request is too large, or was cut short."),
        Ok(Ok(bytes)) => {
            let req = Request::from_parts(parts, axum::body::Body::from(bytes));
            match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
                Ok(response) => response,
                Err(_) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The console failed on this page (a bug: the node's log says where).",
                ),
            }
        }
    };
    page::security_headers(&mut response, secure);
    response
}

fn plain(status: StatusCode, text: &str) -> Response {
    let body = maud::html! { p { a href="/" { "Back to the console" } } };
    (status, page::document("Refused", None, None, Some(text), body)).into_response()
}

async fn root(headers: axum::http::HeaderMap, axum::extract::State(c): axum::extract::State<Console>) -> Redirect {
    match c.sessions.get(session::cookie(&headers, session::cookie_name(c.secure))) {
        Ok(_) => Redirect::to("/cluster"),
        Err(_) => Redirect::to("/login"),
    }
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")],
        include_str!("console.css"),
    )
        .into_response()
}

async fn not_found() -> Response {
    let body = maud::html! { p { a href="/" { "Back to the console" } } };
    (StatusCode::NOT_FOUND, page::document("Not found", None, None, None, body)).into_response()
}

/// Serves the console on `listener` until `stop`. With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    console: Console,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(console.clone());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_addr = AddrCounts::default();
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            _ = sweep.tick() => { console.sessions.sweep(); continue }
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "console accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let Some(addr_slot) = per_addr.take(peer.ip(), MAX_CONNECTIONS_PER_ADDR) else {
            drop(stream);
            continue;
        };
        let app = app.clone().map_request(move |req: http::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let (tls, stop) = (tls.clone(), stop.clone());
        connections.spawn(async move {
            let _slots = (slot, addr_slot);
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let served = match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    finish(conn, &stop).await
                }
                Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let conn = http.serve_connection(TokioIo::new(tls), service);
                        finish(conn, &stop).await
                    }
                    _ => Ok(()),
                },
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "console connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// Serves one connection; at shutdown lets the request in flight finish.
async fn finish<I, S>(conn: hyper::server::conn::http1::Connection<I, S>, stop: &CancellationToken) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(5), conn).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    }
}

/// Binds the console's listener (at start-up, so a taken port fails the start).
pub async fn bind(config: &UiConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.addr).await.with_context(|| format!("bind VAULT_UI_ADDR {}", config.addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui(addr: &str, insecure: bool) -> UiConfig {
        UiConfig {
            addr: addr.parse().expect("addr"),
            session_idle: Duration::from_secs(60),
            session_max: Duration::from_secs(600),
            logins_per_min: 10,
            insecure,
        }
    }

    #[test]
    fn plain_http_is_for_loopback_unless_told_otherwise() {
        assert!(ui("127.0.0.1:8300", false).check_transport(false).is_ok());
        assert!(ui("[::1]:8300", false).check_transport(false).is_ok());
        let refused = ui("0.0.0.0:8300", false).check_transport(false).expect_err("refused");
        assert!(refused.to_string().contains("VAULT_UI_INSECURE"), "{refused}");
        assert!(ui("0.0.0.0:8300", false).check_transport(true).is_ok(), "TLS");
        assert!(ui("10.0.0.5:8300", true).check_transport(false).is_ok(), "told otherwise");
    }
}
