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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{crypto, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handed over to the server but not yet taken by it.
const ACCEPTED_BACKLOG: usize = 64;

/// An API connection that reports no vectored writes, so h2 coalesces small frames.
pub enum ApiConn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for ApiConn {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP peer in both cases: the auth layer takes the client address from it.
    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            ApiConn::Plain(s) => s.connect_info(),
            ApiConn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// What both kinds of connection are, to h2.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

impl ApiConn {
    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn Io> {
        match self.get_mut() {
            ApiConn::Plain(s) => Pin::new(s),
            ApiConn::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

impl AsyncRead for ApiConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
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
/// protocol versions (TLS 1.2 and 1.3) with the ring provider, no client certificates (callers
/// prove themselves with bearer tokens and their address), and HTTP/2 by ALPN.
pub fn tls_acceptor(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
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
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("API TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("API TLS certificate and key do not match or are unsupported")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Aborts the accept task when the server is done with its connections.
pub struct AcceptTask(tokio::task::JoinHandle<()>);

impl Drop for AcceptTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's stream of connections: plaintext as accepted, or TLS once the handshake is
/// done. Handshakes run on their own tasks, so a slow or silent client holds up no one else;
/// one that fails or takes longer than [`HANDSHAKE_TIMEOUT`] is dropped (logged at debug).
pub fn connections(
    incoming: TcpIncoming,
    tls: Option<TlsAcceptor>,
) -> (BoxStream<'static, io::Result<ApiConn>>, Option<AcceptTask>) {
    let Some(acceptor) = tls else {
        return (incoming.map(|c| c.map(ApiConn::Plain)).boxed(), None);
    };
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    let task = tokio::spawn(async move {
        let mut incoming = incoming;
        while let Some(accepted) = incoming.next().await {
            let tcp = match accepted {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(error = %e, "API accept failed");
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(ApiConn::Tls(Box::new(tls)))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(?peer, error = %e, "API TLS handshake failed"),
                    Err(_) => tracing::debug!(?peer, "API TLS handshake timed out"),
                }
            });
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed();
    (stream, Some(AcceptTask(task)))
}
