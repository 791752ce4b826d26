//! The Raft listener's connections: the TLS handshake done here (not by tonic), so that the
//! peer's node id is read from its certificate once per connection, the handshake is
//! bounded in time, the number of connections is capped, and a reloaded certificate is used
//! for the next connection.
//!
//! With mutual TLS, no caller keeps a slot for long without being a member:
//! - With mutual TLS the handshake requires a client certificate from the cluster CA
//!   (`security`), so a caller without one never gets past it, which takes at most
//!   [`HANDSHAKE_TIMEOUT`].
//! - Until its certificate shows it a current member, a connection holds one of the
//!   [`MAX_CONNECTIONS`] less [`MEMBER_SLOTS`] shared slots and one of its address's
//!   [`MAX_PER_ADDRESS`] (an IPv6 address counts as its /64). A member's connection then moves
//!   to one of the [`MEMBER_SLOTS`], which nothing else takes, and no longer counts against
//!   its address (members on one host, as in tests, do not crowd each other out).
//! - A connection whose certificate names no current member is served (its calls are
//!   answered PERMISSION_DENIED) only until the next membership check, every
//!   [`MEMBERSHIP_RECHECK`]; so is one whose node is removed later.
//! - A connection on which the peer sends nothing for [`IDLE_TIMEOUT`] is closed (members'
//!   clients send HTTP/2 keepalive pings every 10 s, also between calls), and TCP keepalive
//!   finds peers that vanished without closing.
//!
//! What is left: a member's connection is known as one only after its handshake, so callers
//! from several addresses that keep [`MAX_CONNECTIONS`] less [`MEMBER_SLOTS`] handshakes
//! stalled (each for up to [`HANDSHAKE_TIMEOUT`], again and again) delay new member
//! connections, and so do connections with a cluster-CA certificate naming no member, renewed
//! as the membership check closes them (connections members already hold keep serving); bind
//! the Raft port to the cluster's private network. In dev mode (no TLS)
//! connections carry no identity: the per-address cap and the idle timeout bound them.

use std::future::Future;
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
use vault_core::addr_bucket::{AddrCounts, AddrSlot};

use super::admission::is_member;
use super::security::{cert_node_id, TransportSecurity};
use crate::cluster::Cluster;
use crate::typ::NodeId;

/// How long a peer may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most Raft connections open (or handshaking) at once. A cluster needs a few per peer.
pub const MAX_CONNECTIONS: usize = 256;
/// Of [`MAX_CONNECTIONS`], the slots kept for connections whose certificate names a current
/// member.
pub const MEMBER_SLOTS: usize = 64;
/// Most connections from one address (an IPv6 /64) that are not known members' at once.
pub const MAX_PER_ADDRESS: usize = 32;
/// A connection on which the peer sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an open connection's certificate is checked against the membership.
pub const MEMBERSHIP_RECHECK: Duration = Duration::from_secs(10);
/// TCP keepalive: first probe after this much silence, then every [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_TIME: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
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

/// A connection's place under the limits: a shared slot and one of its address's until it is
/// known to be a member's, then one of the member slots.
enum Slot {
    Unverified { _shared: OwnedSemaphorePermit, _address: Option<AddrSlot> },
    Member(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// The listener's limits, shared by the accept loop and the handshake tasks.
#[derive(Clone)]
struct Limits {
    shared: Arc<Semaphore>,
    members: Arc<Semaphore>,
    addresses: AddrCounts,
}

/// One accepted Raft connection; holds its slot (see the module doc) until it closes.
pub struct RaftConn {
    io: Io,
    peer: PeerIdentity,
    _slot: Slot,
    /// [`IDLE_TIMEOUT`] (shorter in unit tests).
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    /// With mutual TLS: the cluster, to check the peer's membership every
    /// [`MEMBERSHIP_RECHECK`].
    recheck: Option<(Cluster, Pin<Box<tokio::time::Sleep>>)>,
}

impl Connected for RaftConn {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl RaftConn {
    fn new(
        io: Io,
        peer: PeerIdentity,
        slot: Slot,
        idle: Duration,
        recheck: Option<(Cluster, Pin<Box<tokio::time::Sleep>>)>,
    ) -> Self {
        RaftConn { io, peer, _slot: slot, idle, idle_timer: Box::pin(tokio::time::sleep(idle)), recheck }
    }

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
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if let Poll::Ready(r) = self.as_mut().io().poll_read(cx, buf) {
            if buf.filled().len() > before {
                let idle = self.idle;
                self.idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            return Poll::Ready(r);
        }
        if self.idle_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle Raft connection")));
        }
        let this = self.get_mut();
        if let Some((cluster, timer)) = &mut this.recheck {
            while timer.as_mut().poll(cx).is_ready() {
                if !this.peer.node_id.is_some_and(|id| is_member(cluster, id)) {
                    tracing::debug!(peer = ?this.peer.addr, node = ?this.peer.node_id, "closing a Raft connection of a non-member");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::PermissionDenied, "not a cluster member")));
                }
                timer.as_mut().reset(tokio::time::Instant::now() + MEMBERSHIP_RECHECK);
            }
        }
        Poll::Pending
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

/// TCP keepalive, so that a peer that vanished (a host gone without closing) is noticed even
/// while the connection is not idle by [`IDLE_TIMEOUT`]'s measure.
fn keepalive(tcp: &TcpStream) {
    let params = socket2::TcpKeepalive::new().with_time(KEEPALIVE_TIME).with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    let params = params.with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&params) {
        tracing::debug!(error = %e, "set TCP keepalive on a Raft connection");
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

/// The Raft server's stream of connections. Handshakes run on their own tasks; a new
/// connection past the limits (see the module doc) is closed at once. `cluster` tells which
/// node ids are members.
pub fn connections(
    listener: TcpListener,
    security: TransportSecurity,
    cluster: Cluster,
) -> (BoxStream<'static, io::Result<RaftConn>>, AcceptTask) {
    let limits = Limits {
        shared: Arc::new(Semaphore::new(MAX_CONNECTIONS - MEMBER_SLOTS)),
        members: Arc::new(Semaphore::new(MEMBER_SLOTS)),
        addresses: AddrCounts::default(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "Raft accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some(address) = limits.addresses.take(from.ip(), MAX_PER_ADDRESS) else {
                tracing::warn!(peer = %from, "Raft connection limit for one address ({MAX_PER_ADDRESS}) reached; closing");
                continue;
            };
            let Ok(shared) = limits.shared.clone().try_acquire_owned() else {
                tracing::warn!(peer = %from, "Raft connection limit ({MAX_CONNECTIONS}) reached; closing");
                continue;
            };
            let slot = Slot::Unverified { _shared: shared, _address: Some(address) };
            let _ = tcp.set_nodelay(true);
            keepalive(&tcp);
            let (security, tx, limits, cluster) = (security.clone(), tx.clone(), limits.clone(), cluster.clone());
            tokio::spawn(async move {
                match establish(tcp, &security).await {
                    Ok((io, peer)) => {
                        let _ = tx.send(Ok(admitted(io, peer, slot, &limits, &security, cluster))).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "Raft connection dropped during the TLS handshake"),
                }
            });
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed();
    (stream, AcceptTask(task))
}

/// A connection past its handshake: a current member's moves to a member slot (when one is
/// free); with mutual TLS, every connection's membership is checked again from now on.
fn admitted(
    io: Io,
    peer: PeerIdentity,
    slot: Slot,
    limits: &Limits,
    security: &TransportSecurity,
    cluster: Cluster,
) -> RaftConn {
    let member = peer.node_id.is_some_and(|id| is_member(&cluster, id));
    let slot = match member.then(|| limits.members.clone().try_acquire_owned().ok()).flatten() {
        Some(permit) => Slot::Member(permit),
        None => slot,
    };
    // A non-member is still answered (PERMISSION_DENIED, which says why) until the first check.
    let recheck = security.is_tls().then(|| (cluster, Box::pin(tokio::time::sleep(MEMBERSHIP_RECHECK))));
    RaftConn::new(io, peer, slot, IDLE_TIMEOUT, recheck)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_by_host_and_ipv6_by_their_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("an address");
        let counts = AddrCounts::default();
        let held: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|i| counts.take(ip(&format!("2001:db8::{:x}", i + 1)), MAX_PER_ADDRESS).expect("under the cap"))
            .collect();
        assert!(counts.take(ip("2001:db8::ffff"), MAX_PER_ADDRESS).is_none(), "one /64 is one address");
        assert!(counts.take(ip("2001:db9::1"), MAX_PER_ADDRESS).is_some(), "another /64 is not");
        drop(held);
        assert!(counts.take(ip("2001:db8::1"), MAX_PER_ADDRESS).is_some(), "slots come back when closed");
    }

    /// A connection stays open while the peer sends something, and is closed once it has sent
    /// nothing for the idle timeout; its slot comes back.
    #[tokio::test]
    async fn a_connection_that_carries_nothing_is_closed_after_the_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut peer = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let shared = Arc::new(Semaphore::new(1));
        let slot = Slot::Unverified { _shared: shared.clone().try_acquire_owned().expect("a slot"), _address: None };
        let idle = Duration::from_millis(400);
        let mut conn = RaftConn::new(Io::Plain(server), PeerIdentity::default(), slot, idle, None);
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            tokio::time::sleep(idle / 2).await;
            peer.write_all(b"ping").await.expect("write");
            assert_eq!(conn.read(&mut buf).await.expect("open while the peer talks"), 4);
        }
        let quiet = tokio::time::Instant::now();
        let err = conn.read(&mut buf).await.expect_err("closed when the peer goes quiet");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(quiet.elapsed() >= idle && started.elapsed() >= idle * 2, "{:?}", quiet.elapsed());
        assert_eq!(shared.available_permits(), 0);
        drop(conn);
        assert_eq!(shared.available_permits(), 1, "the slot comes back");
    }
}
