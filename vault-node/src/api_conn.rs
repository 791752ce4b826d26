//! Client connections to the API, as HTTP/2 sees them, and the TLS handshake for them.
//!
//! h2 writes a DATA frame whose payload is over 256 bytes as a separate buffer ("chained")
//! when the connection supports vectored writes, and must flush before it can queue the next
//! frame. A `GetSecret` reply (a 256-byte value and its fields) crosses that line, so a reply
//! took two writes, its trailers going out in the second: counted with `vault-bench --perf
//! /tmp/p --perf-mode stat`, the leader made 1.94 `writev` per read at 64 clients. Without
//! vectored writes h2 copies payloads up to 1 KiB into its 16 KiB write buffer, so a reply's
//! frames leave together, now and then with other replies' (0.92 socket writes per read
//! after the change). Larger payloads are still written in two parts, as before.
//!
//! The same holds over TLS, where each of those writes is also a TLS record of its own. So
//! with `VAULT_TLS_CERT` the handshake is done here, not by tonic (whose TLS stream reports
//! vectored writes and sits above anything we could wrap), and h2 writes to the TLS stream
//! through [`ApiConn`] too.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::{BoxStream, StreamExt};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{crypto, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use vault_core::addr_bucket::{AddrBucket, AddrCounts, AddrSlot};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed over to the server but not yet taken by it.
const ACCEPTED_BACKLOG: usize = 64;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An API connection that reports no vectored writes, so h2 coalesces small frames. It holds
/// one of the listener's connection slots, and is closed when the client sends nothing for the
/// idle timeout (HTTP/2 keepalive pings count as something).
pub struct ApiConn {
    stream: Stream,
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    _slot: Slot,
}

/// A connection's place under the listener's limits: one of the global slots and one of its
/// address's; both are given back when the connection closes.
struct Slot {
    _global: OwnedSemaphorePermit,
    _addr: Option<AddrSlot>,
}

/// What the auth layer learns about a connection: the TCP peer, and the common name of the
/// client certificate it presented over TLS (verified against `VAULT_TLS_CLIENT_CA`), if any.
#[derive(Clone, Debug)]
pub struct ApiConnectInfo {
    pub tcp: TcpConnectInfo,
    pub client_cn: Option<Arc<str>>,
    /// For calls the operator console makes for a logged-in browser: the session's token name,
    /// which names the actor of reads (authorized, like every read, by address and reader
    /// rules). Only the console sets it: it is never taken from the network.
    pub console_user: Option<Arc<str>>,
}

impl Connected for ApiConn {
    type ConnectInfo = ApiConnectInfo;

    fn connect_info(&self) -> ApiConnectInfo {
        match &self.stream {
            Stream::Plain(s) => ApiConnectInfo { tcp: s.connect_info(), client_cn: None, console_user: None },
            Stream::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let client_cn =
                    session.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| common_name(leaf));
                ApiConnectInfo { tcp: tcp.connect_info(), client_cn, console_user: None }
            }
        }
    }
}

/// The subject common name of a certificate (the first, if several; `None` if it has none or
/// it is not text).
fn common_name(der: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(Arc::from(cn))
}

/// What both kinds of connection are, to h2.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

impl ApiConn {
    fn new(stream: Stream, idle: Duration, slot: Slot) -> Self {
        ApiConn { stream, idle, idle_timer: Box::pin(tokio::time::sleep(idle)), _slot: slot }
    }

    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn Io> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s),
            Stream::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

impl AsyncRead for ApiConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match self.as_mut().io().poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let idle = self.idle;
                    self.idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle API connection"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for ApiConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The API's TLS settings from a PEM certificate chain and private key: rustls' safe default
/// protocol versions (TLS 1.2 and 1.3) with the ring provider, and HTTP/2 by ALPN. With
/// `client_ca`, a client may present a certificate, which must chain to that CA (reader rules
/// can name its subject); a client without one is served as before (tokens and addresses).
pub fn tls_acceptor(cert_path: &Path, key_path: &Path, client_ca: Option<&Path>) -> anyhow::Result<TlsAcceptor> {
    tls_acceptor_for(cert_path, key_path, client_ca, b"h2")
}

/// The same certificate for HTTP/1.1 (the console), with no client certificates asked for.
pub fn console_tls_acceptor(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    tls_acceptor_for(cert_path, key_path, None, b"http/1.1")
}

fn tls_acceptor_for(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
    alpn: &[u8],
) -> anyhow::Result<TlsAcceptor> {
    let cert_pem = std::fs::read(cert_path).with_context(|| format!("read VAULT_TLS_CERT {}", cert_path.display()))?;
    let key_pem = std::fs::read(key_path).with_context(|| format!("read VAULT_TLS_KEY {}", key_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("VAULT_TLS_CERT {} is not a PEM certificate chain", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("VAULT_TLS_CERT {} holds no certificate", cert_path.display());
    }
    // The parse error is not shown: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| anyhow::anyhow!("VAULT_TLS_KEY {} holds no PEM private key", key_path.display()))?;
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("API TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let pem =
                std::fs::read(ca_path).with_context(|| format!("read VAULT_TLS_CLIENT_CA {}", ca_path.display()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("VAULT_TLS_CLIENT_CA {} is not PEM", ca_path.display()))?;
                roots.add(cert).context("VAULT_TLS_CLIENT_CA holds an unusable certificate")?;
            }
            if roots.is_empty() {
                anyhow::bail!("VAULT_TLS_CLIENT_CA {} holds no certificate", ca_path.display());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(chain, key).context("API TLS certificate and key do not match or are unsupported")?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Aborts the accept task when the server is done with its connections.
pub struct AcceptTask(tokio::task::JoinHandle<()>);

impl Drop for AcceptTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bounds on the API listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Connections open (or handshaking) at once; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// The same, from one client address, so one client cannot take every slot.
    pub max_per_addr: usize,
    /// A connection on which the client sends nothing for this long is closed.
    pub idle: Duration,
}

/// Pause after a failed accept (for example out of file descriptors), so the loop backs off
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server's stream of connections: plaintext as accepted, or TLS once the handshake is
/// done. Handshakes run on their own tasks, so a slow or silent client holds up no one else;
/// one that fails or takes longer than [`HANDSHAKE_TIMEOUT`] is dropped (logged at debug).
/// Beyond `limits.max_connections`, new connections are closed at once.
pub fn connections(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
) -> (BoxStream<'static, io::Result<ApiConn>>, AcceptTask) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_addr = AddrCounts::default();
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    let task = tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(global) = slots.clone().try_acquire_owned() else {
                tracing::debug!(peer = ?tcp.peer_addr().ok(), "API connection limit reached; closing");
                continue;
            };
            // IPv6 by its /64: one client can use every address in it.
            let addr = match tcp.peer_addr() {
                Ok(peer) => match per_addr.take(peer.ip(), limits.max_per_addr) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(peer = %AddrBucket::of(peer.ip()), "API connection limit for one address reached; closing");
                        continue;
                    }
                },
                Err(_) => None,
            };
            let slot = Slot { _global: global, _addr: addr };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = tls.clone() else {
                let _ = tx.send(Ok(ApiConn::new(Stream::Plain(tcp), limits.idle, slot))).await;
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(ApiConn::new(Stream::Tls(Box::new(tls)), limits.idle, slot))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(?peer, error = %e, "API TLS handshake failed"),
                    Err(_) => tracing::debug!(?peer, "API TLS handshake timed out"),
                }
            });
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed();
    (stream, AcceptTask(task))
}
