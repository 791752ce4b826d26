//! The Raft listener's connections: the TLS handshake done here (not by tonic), so that the
//! peer's node id is read from its certificate once per connection, the handshake is
//! bounded in time, the number of connections is capped, and a reloaded certificate is used
//! for the next connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::security::{cert_node_id, TransportSecurity};
use crate::typ::NodeId;

/// How long a peer may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most Raft connections open (or handshaking) at once. A cluster needs a few per peer.
pub const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (for example out of file descriptors), so the loop backs off
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who is on the other end of a Raft connection, as the service sees it in every request.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity {
    pub addr: Option<SocketAddr>,
    /// Whether a client certificate from the cluster CA was presented.
    pub has_cert: bool,
    /// The node id that certificate names.
    pub node_id: Option<NodeId>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted Raft connection; holds its slot under [`MAX_CONNECTIONS`] until it closes.
pub struct RaftConn {
    io: Io,
    peer: PeerIdentity,
    _slot: OwnedSemaphorePermit,
}

impl Connected for RaftConn {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl RaftConn {
    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn AsyncReadWrite> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s),
            Io::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

impl AsyncRead for RaftConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for RaftConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// Aborts the accept task when the server is done with its connections.
pub struct AcceptTask(tokio::task::JoinHandle<()>);

impl Drop for AcceptTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn establish(tcp: TcpStream, security: &TransportSecurity) -> io::Result<(Io, PeerIdentity)> {
    let addr = tcp.peer_addr().ok();
    let Some(config) = security.server_config() else {
        return Ok((Io::Plain(tcp), PeerIdentity { addr, has_cert: false, node_id: None }));
    };
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
    let peer = PeerIdentity { addr, has_cert: leaf.is_some(), node_id: leaf.and_then(|c| cert_node_id(c)) };
    Ok((Io::Tls(Box::new(tls)), peer))
}

/// The Raft server's stream of connections. Handshakes run on their own tasks; beyond
/// [`MAX_CONNECTIONS`] a new connection is closed at once.
pub fn connections(
    listener: TcpListener,
    security: TransportSecurity,
) -> (BoxStream<'static, io::Result<RaftConn>>, AcceptTask) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "Raft accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(peer = ?tcp.peer_addr().ok(), "Raft connection limit ({MAX_CONNECTIONS}) reached; closing");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (security, tx) = (security.clone(), tx.clone());
            tokio::spawn(async move {
                match establish(tcp, &security).await {
                    Ok((io, peer)) => {
                        let _ = tx.send(Ok(RaftConn { io, peer, _slot: slot })).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "Raft connection dropped during the TLS handshake"),
                }
            });
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed();
    (stream, AcceptTask(task))
}
