//! A real rsyslogd for the audit shipping tests (Debian's `rsyslog`, which `make deps`
//! installs): started by the test as its own child (`rsyslogd -n -f CONF -i PIDFILE`) on a
//! private TCP port with its own configuration in the test's directory (imtcp in, omfile out),
//! never the system's; killed by its own PID when dropped. And `vaultctl audit verify --file`,
//! which checks what it wrote off the node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, free_port};

pub struct Rsyslog {
    child: Child,
    pub port: u16,
    /// Where rsyslog writes each message of APP-NAME `vault`: APP-NAME, MSGID, structured
    /// data and MSG, one line each.
    pub out: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd with its files in `dir` and waits until it listens.
    pub async fn start(dir: &Path) -> Rsyslog {
        let exe = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("rsyslogd is missing: `make deps` installs Debian's rsyslog");
        let port = free_port();
        let out = dir.join("rsyslog-out.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
                 template(name=\"vaultfields\" type=\"string\" string=\"%app-name% %msgid% %structured-data% %msg%\\n\")\n\
                 if $app-name == \"vault\" then action(type=\"omfile\" file=\"{o}\" template=\"vaultfields\")\n",
                d = dir.display(),
                o = out.display()
            ),
        )
        .expect("write rsyslog.conf");
        let child = Command::new(exe)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslog.stderr")).expect("rsyslog.stderr"))
            .spawn()
            .expect("start rsyslogd");
        let r = Rsyslog { child, port, out };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", r.port)).await.is_err() {
            assert!(Instant::now() < deadline, "rsyslogd does not listen on {} after 10 s", r.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r
    }

    /// `VAULT_AUDIT_SYSLOG` for a node shipping here.
    pub fn target(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }

    /// Every message rsyslog wrote so far.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out).unwrap_or_default().lines().map(String::from).collect()
    }

    /// The MSG of every message: the shipped JSON lines.
    pub fn shipped_lines(&self) -> Vec<String> {
        self.messages().iter().filter_map(|m| m.find('{').map(|i| m[i..].to_string())).collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vaultctl audit verify --file F... --audit-key-file KEY` (needs no node): whether it
/// passed, and what it printed.
pub fn verify_shipped(files: &[&Path], key: &Path) -> (bool, String) {
    let mut cmd = Command::new(bin("vaultctl"));
    cmd.env_clear().args(["audit", "verify"]);
    for f in files {
        cmd.arg("--file").arg(f);
    }
    let out = cmd.arg("--audit-key-file").arg(key).output().expect("run vaultctl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
