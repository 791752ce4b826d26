//! Client connections to the API, as HTTP/2 sees them.
//!
//! h2 writes a DATA frame whose payload is over 256 bytes as a separate buffer ("chained")
//! when the connection supports vectored writes, and must flush before it can queue the next
//! frame. A `GetSecret` reply (a 256-byte value and its fields) crosses that line, so a reply
//! took two writes, its trailers going out in the second: counted with `vault-bench --perf
//! /tmp/p --perf-mode stat`, the leader made 1.94 `writev` per read at 64 clients. Without
//! vectored writes h2 copies payloads up to 1 KiB into its 16 KiB write buffer, so a reply's
//! frames leave together, now and then with other replies' (0.92 socket writes per read
//! after the change). Larger payloads are still written in two parts, as before. With
//! `VAULT_TLS_CERT`, h2 writes to the TLS stream on top of this one, which does report
//! vectored writes, so TLS connections do not change.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP connection that reports no vectored writes, so h2 coalesces small frames.
pub struct ApiConn(pub TcpStream);

impl Connected for ApiConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for ApiConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
