//! A TCP proxy that delays every byte by a fixed time in each direction, so that a cluster on
//! loopback can be measured as if its members were a LAN or a zone apart (the kernel here has
//! no `netem`). It forwards bytes and looks at none, so mutual TLS passes through it: a peer
//! that dials the proxy talks to the node behind it, whose certificate names the node (and
//! 127.0.0.1), whatever port was dialed.
//!
//! Each direction of a connection is a reader and a writer. The reader stamps each chunk with
//! its release time (arrival + delay) as it arrives and queues it; the writer sends each chunk
//! at its release time. So bytes keep their order, and the delay does not bound throughput:
//! as on a long link, many chunks are in flight at once. Release times are kept with a
//! `timerfd`, which wakes to the microsecond: tokio's own timers round up to the millisecond,
//! and the delays to model are as small as 0.25 ms.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Bytes one read takes at most.
const CHUNK: usize = 64 * 1024;
/// Bytes one write of chunks that are due together takes at most.
const MAX_WRITE: usize = 256 * 1024;
/// Chunks queued in one direction at most; a full queue stops the reader, which the sender
/// sees as TCP back-pressure.
const QUEUE: usize = 4096;

/// One listening proxy. Dropping it closes the listener and every connection through it.
pub struct DelayProxy {
    addr: SocketAddr,
    target: SocketAddr,
    forwarded: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to `target`, each
    /// direction delayed by `delay`. Runs on the calling tokio runtime (which must have I/O
    /// enabled) until dropped.
    pub async fn start(target: SocketAddr, delay: Duration) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let accept = tokio::spawn(async move {
            // Owned here, so aborting this task ends every connection with it.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => {
                            conns.spawn(relay(inbound, target, delay, counter.clone()));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "delay proxy: accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(DelayProxy { addr, target, forwarded, accept })
    }

    /// Where peers dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the bytes go.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Bytes written on, both directions together, since the start.
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Joins `inbound` to a new connection to `target` until both directions end, or either fails
/// (then both sockets close, as a broken link would leave them).
async fn relay(inbound: TcpStream, target: SocketAddr, delay: Duration, forwarded: Arc<AtomicU64>) {
    let Ok(outbound) = TcpStream::connect(target).await else { return };
    // Small messages (Raft heartbeats, votes) must not wait for Nagle on either hop.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let _ = tokio::try_join!(
        one_way(in_read, out_write, delay, forwarded.clone()),
        one_way(out_read, in_write, delay, forwarded),
    );
}

/// Copies `from` to `to`, each chunk released `delay` after it was read; at the end of `from`,
/// shuts `to` down for writing (a half-close passes through).
async fn one_way(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    forwarded: Arc<AtomicU64>,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, bytes::Bytes)>(QUEUE);
    let reader = async move {
        let mut buf = BytesMut::new();
        loop {
            if buf.capacity() < CHUNK / 16 {
                buf.reserve(CHUNK);
            }
            if from.read_buf(&mut buf).await? == 0 {
                return Ok::<(), io::Error>(());
            }
            let chunk = buf.split().freeze();
            if tx.send((Instant::now() + delay, chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        let timer = Timer::new()?;
        // A chunk taken from the queue that was not yet due.
        let mut held: Option<(Instant, bytes::Bytes)> = None;
        let mut batch = BytesMut::new();
        loop {
            let (release, chunk) = match held.take() {
                Some(next) => next,
                None => match rx.recv().await {
                    Some(next) => next,
                    None => break,
                },
            };
            timer.sleep_until(release).await?;
            // What else is due by now leaves in the same write: under load, one system call
            // and one wake-up for many chunks.
            let now = Instant::now();
            let mut out = chunk;
            while batch.len() < MAX_WRITE {
                let Ok((release, next)) = rx.try_recv() else { break };
                if release > now {
                    held = Some((release, next));
                    break;
                }
                if batch.is_empty() {
                    batch.extend_from_slice(&out);
                }
                batch.extend_from_slice(&next);
            }
            if !batch.is_empty() {
                out = batch.split().freeze();
            }
            to.write_all(&out).await?;
            forwarded.fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        to.shutdown().await
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// A one-shot timer with the kernel's resolution (`timerfd` on the monotonic clock, which
/// `Instant` reads too), awaited through the runtime's I/O driver.
struct Timer(AsyncFd<RawTimer>);

struct RawTimer(TimerFd);

impl AsRawFd for RawTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    fn new() -> io::Result<Timer> {
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        // SAFETY: `RawTimer` owns the timer's descriptor, which stays open, and is the same
        // one `as_raw_fd` returns, for as long as the `AsyncFd` holds it.
        let fd = unsafe { AsyncFd::register_with_interest(RawTimer(fd), tokio::io::Interest::READABLE)? };
        Ok(Timer(fd))
    }

    /// Returns at `at` (at once if it has passed).
    async fn sleep_until(&self, at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if at <= now {
            return Ok(());
        }
        let left = TimeSpec::from_duration(at - now);
        self.0.get_ref().0.set(Expiration::OneShot(left), TimerSetTimeFlags::empty())?;
        loop {
            let mut ready = self.0.readable().await?;
            // A readiness left over from the previous expiry reads as "would block" and is
            // cleared here; the loop then waits for this one.
            match ready.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(done) => return done,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes every connection until its end.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo server");
        let addr = listener.local_addr().expect("echo address");
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = conn.set_nodelay(true);
                    let (mut r, mut w) = conn.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn bytes_arrive_intact_and_in_order() {
        let proxy = DelayProxy::start(echo_server().await, Duration::from_micros(500)).await.expect("start proxy");
        let conn = TcpStream::connect(proxy.addr()).await.expect("connect to the proxy");
        let (mut r, mut w) = conn.into_split();
        // 4 MiB in writes of uneven sizes, so chunks split and merge on the way.
        let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let to_send = sent.clone();
        let writing = tokio::spawn(async move {
            let mut at = 0;
            let mut size = 1;
            while at < to_send.len() {
                let end = (at + size).min(to_send.len());
                w.write_all(&to_send[at..end]).await.expect("write through the proxy");
                at = end;
                size = size * 7 % 9973 + 1;
            }
            w.shutdown().await.expect("half-close");
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut got))
            .await
            .expect("the echo ends within 30 s")
            .expect("read the echo");
        writing.await.expect("writer");
        assert_eq!(got.len(), sent.len(), "every byte comes back, and the half-close passes through");
        assert!(got == sent, "bytes come back unchanged and in order");
        assert_eq!(proxy.forwarded_bytes(), 2 * sent.len() as u64, "both directions are counted");
    }

    #[tokio::test]
    async fn a_round_trip_takes_at_least_twice_the_delay() {
        let delay = Duration::from_millis(20);
        let proxy = DelayProxy::start(echo_server().await, delay).await.expect("start proxy");
        let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect to the proxy");
        conn.set_nodelay(true).expect("nodelay");
        for round in 0..5u8 {
            let t0 = Instant::now();
            conn.write_all(&[round; 100]).await.expect("write");
            let mut back = [0u8; 100];
            conn.read_exact(&mut back).await.expect("read the echo");
            let took = t0.elapsed();
            assert_eq!(back, [round; 100]);
            assert!(took >= 2 * delay, "round trip {round} took {took:?}, less than twice the delay {delay:?}");
        }
    }
}
