//! A sink's open connection: an appended file, a Unix or TCP stream, or a Unix datagram socket
//! (syslog's `/dev/log`), and how a batch of records is written to it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixDatagram, UnixStream};
use vault_raft::ShippedRecord;

use super::syslog;

/// How long a connect or a batch may take before the sink counts as not taking records.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a sink sends records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Target {
    /// `unix:/path` or `tcp:host:port` (the socket and syslog sinks' settings).
    pub fn parse_socket(value: &str) -> Result<Target, String> {
        if let Some(path) = value.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = value.strip_prefix("tcp:") {
            if addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) {
                return Ok(Target::Tcp(addr.to_string()));
            }
        }
        Err(format!("`{value}` is neither unix:/path nor tcp:host:port"))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File(p) => write!(f, "{}", p.display()),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// What goes on the wire: JSON lines, or syslog messages carrying them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Lines,
    Syslog,
}

pub(crate) enum Conn {
    File(tokio::fs::File),
    Tcp(TcpStream),
    Unix(UnixStream),
    Datagram(UnixDatagram),
}

impl Conn {
    pub async fn open(target: &Target, framing: Framing) -> io::Result<Conn> {
        let open = async {
            Ok(match target {
                Target::File(path) => {
                    // Owner-only: records name secrets, actors and client addresses.
                    let mut f = tokio::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).await?;
                    // A write cut short (a crash, a full disk) may have left a line without its
                    // end: end it, so the next record starts a line of its own.
                    if ends_mid_line(path).await? {
                        f.write_all(b"\n").await?;
                    }
                    Conn::File(f)
                }
                Target::Tcp(addr) => Conn::Tcp(TcpStream::connect(addr).await?),
                Target::Unix(path) if framing == Framing::Syslog => {
                    let s = UnixDatagram::unbound()?;
                    s.connect(path)?;
                    Conn::Datagram(s)
                }
                Target::Unix(path) => Conn::Unix(UnixStream::connect(path).await?),
            })
        };
        tokio::time::timeout(IO_TIMEOUT, open).await.map_err(|_| timed_out("connect"))?
    }

    /// Whether the peer of a stream is still there: a stream it closed reads end-of-file
    /// (whatever it sends is read and dropped). A file or datagram socket shows nothing here.
    pub fn alive(&self) -> bool {
        let mut buf = [0u8; 512];
        let read = match self {
            Conn::Tcp(s) => s.try_read(&mut buf),
            Conn::Unix(s) => s.try_read(&mut buf),
            Conn::File(_) | Conn::Datagram(_) => return true,
        };
        match read {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    /// Writes `batch` and returns once the sink has it: a file synced to disk, a stream or
    /// datagram handed to the peer's socket.
    pub async fn send(&mut self, batch: &[ShippedRecord], framing: Framing, hostname: &str) -> io::Result<()> {
        if !self.alive() {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "the peer closed the connection"));
        }
        let mut messages = Vec::with_capacity(batch.len());
        for r in batch {
            let line = r.to_line().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            messages.push(match framing {
                Framing::Lines => line,
                Framing::Syslog => syslog::message(r, &line, hostname),
            });
        }
        let is_file = matches!(self, Conn::File(_));
        let write = async {
            match self {
                Conn::Datagram(s) => {
                    for m in &messages {
                        s.send(m.as_bytes()).await?;
                    }
                    Ok(())
                }
                Conn::File(f) => {
                    f.write_all(stream_bytes(&messages, framing).as_bytes()).await?;
                    f.flush().await?;
                    f.sync_data().await
                }
                Conn::Tcp(s) => s.write_all(stream_bytes(&messages, framing).as_bytes()).await,
                Conn::Unix(s) => s.write_all(stream_bytes(&messages, framing).as_bytes()).await,
            }
        };
        // A file write is not given up on: a dropped write could still land after the batch
        // is sent again, and the two would interleave. A slow disk shows as lag instead.
        if is_file {
            return write.await;
        }
        tokio::time::timeout(IO_TIMEOUT, write).await.map_err(|_| timed_out("write"))?
    }
}

/// Whether the file at `path` is not empty and does not end with a newline.
async fn ends_mid_line(path: &std::path::Path) -> io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    if f.metadata().await?.len() == 0 {
        return Ok(false);
    }
    f.seek(io::SeekFrom::End(-1)).await?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last).await?;
    Ok(last[0] != b'\n')
}

/// Messages as one stream: lines end in a newline; syslog messages are octet-counted.
fn stream_bytes(messages: &[String], framing: Framing) -> String {
    let mut out = String::new();
    for m in messages {
        match framing {
            Framing::Lines => {
                out.push_str(m);
                out.push('\n');
            }
            Framing::Syslog => out.push_str(&syslog::octet_counted(m)),
        }
    }
    out
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} took longer than {IO_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_left_mid_line_gets_its_line_ended_before_the_next_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"seq\":1}\n{\"seq\":2,\"act").expect("write");
        assert!(ends_mid_line(&path).await.expect("read"));
        let _conn = Conn::open(&Target::File(path.clone()), Framing::Lines).await.expect("open");
        assert!(!ends_mid_line(&path).await.expect("read"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("\"act\n"), "{text:?}");
        let fresh = dir.path().join("fresh.jsonl");
        let _conn = Conn::open(&Target::File(fresh.clone()), Framing::Lines).await.expect("open");
        let mode = std::fs::metadata(&fresh).expect("stat").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600, "a new file is owner-only");
        std::fs::write(dir.path().join("empty"), b"").expect("write");
        assert!(!ends_mid_line(&dir.path().join("empty")).await.expect("read"));
    }

    fn shipped(seq: u64) -> ShippedRecord {
        ShippedRecord {
            v: 1,
            chain_node_id: 1,
            record: vault_core::model::AuditRecord {
                seq,
                time_ms: 1_000,
                node_id: 1,
                actor: "a".into(),
                client_ip: "-".into(),
                action: "secret.get".into(),
                secret: None,
                outcome: "ok".into(),
            },
            key_id: None,
            prev_mac: None,
            mac: None,
        }
    }

    #[tokio::test]
    async fn a_unix_stream_gets_json_lines_and_a_unix_datagram_socket_one_syslog_message_each() {
        let dir = tempfile::tempdir().unwrap();
        let stream_path = dir.path().join("sink.sock");
        let listener = tokio::net::UnixListener::bind(&stream_path).unwrap();
        let mut c = Conn::open(&Target::Unix(stream_path), Framing::Lines).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        c.send(&[shipped(1), shipped(2)], Framing::Lines, "h").await.unwrap();
        let mut got = String::new();
        while got.matches('\n').count() < 2 {
            let mut buf = [0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(&mut peer, &mut buf).await.unwrap();
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let lines: Vec<ShippedRecord> = got.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines, vec![shipped(1), shipped(2)]);
        drop(peer);
        // A peer that closed the stream is seen before anything is written to it.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!c.alive());
        assert!(c.send(&[shipped(3)], Framing::Lines, "h").await.is_err());

        let dgram_path = dir.path().join("log.sock");
        let log = UnixDatagram::bind(&dgram_path).unwrap();
        let mut c = Conn::open(&Target::Unix(dgram_path.clone()), Framing::Syslog).await.unwrap();
        c.send(&[shipped(4), shipped(5)], Framing::Syslog, "h").await.unwrap();
        for seq in [4, 5] {
            let mut buf = [0u8; 4096];
            let n = log.recv(&mut buf).await.unwrap();
            let m = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(m.starts_with("<86>1 ") && m.contains(&format!("seq=\"{seq}\"]")), "{m}");
        }
        drop(log);
        std::fs::remove_file(&dgram_path).unwrap();
        assert!(c.send(&[shipped(6)], Framing::Syslog, "h").await.is_err(), "no listener at /dev/log is an error");
    }

    #[test]
    fn socket_targets_parse_and_anything_else_is_refused() {
        assert_eq!(Target::parse_socket("unix:/dev/log"), Ok(Target::Unix("/dev/log".into())));
        assert_eq!(Target::parse_socket("tcp:logs.example:6514"), Ok(Target::Tcp("logs.example:6514".into())));
        for bad in ["udp:x:1", "tcp:host", "tcp::1", "unix:", "/dev/log"] {
            assert!(Target::parse_socket(bad).is_err(), "{bad}");
        }
    }
}
