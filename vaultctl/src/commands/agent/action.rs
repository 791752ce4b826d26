//! What the agent does after a file changed: run a command, signal a process named by a pid
//! file, or restart or signal the child it supervises (`[exec]`).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::config::{Action, Exec, ExecOnChange};

/// How long an on-change command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one action; failures are logged by the caller and do not stop the agent.
pub async fn perform(action: &Action) -> Result<(), String> {
    match action {
        Action::Command(argv) => run_command(argv).await,
        Action::Signal { pid_file, signal } => signal_pid_file(pid_file, *signal),
    }
}

/// Variables that hold the agent's credentials or point at them (`CREDENTIALS_DIRECTORY` is
/// where systemd's `LoadCredential=` puts the client key).
const CREDENTIAL_VARS: [&str; 5] =
    ["VAULT_TOKEN", "VAULT_TOKEN_FILE", "VAULT_CLIENT_KEY", "VAULT_CLIENT_CERT", "CREDENTIALS_DIRECTORY"];

/// The child gets neither the agent's token nor the variables that point at its credentials.
fn scrub(cmd: &mut Command) {
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
}

async fn run_command(argv: &[String]) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    scrub(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("start {program}: {e}"))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
        Ok(Err(e)) => Err(format!("wait for {program}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!("{program} ran longer than {} s and was killed", COMMAND_TIMEOUT.as_secs()))
        }
    }
}

/// Whether the agent may believe what `pid_file` says: a file (and a directory holding it)
/// that another user could write would let that user choose which process the agent signals.
/// The file must be owned by root or by the agent's user, and neither it nor its directory
/// writable by group or others.
fn trusted_pid_file(pid_file: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let file = std::fs::symlink_metadata(pid_file).map_err(|e| format!("pid file {}: {e}", pid_file.display()))?;
    if !file.file_type().is_file() {
        return Err(format!("pid file {} is not a regular file", pid_file.display()));
    }
    if file.uid() != 0 && file.uid() != me {
        return Err(format!(
            "pid file {} is owned by uid {}, neither root nor the agent's",
            pid_file.display(),
            file.uid()
        ));
    }
    if file.mode() & 0o022 != 0 {
        return Err(format!("pid file {} is writable by other users; not signalling", pid_file.display()));
    }
    let dir = pid_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir_meta = std::fs::metadata(dir).map_err(|e| format!("directory {}: {e}", dir.display()))?;
    if dir_meta.mode() & 0o022 != 0 || (dir_meta.uid() != 0 && dir_meta.uid() != me) {
        return Err(format!("pid file {} is in a directory other users may write; not signalling", pid_file.display()));
    }
    Ok(())
}

fn signal_pid_file(pid_file: &Path, signal: Signal) -> Result<(), String> {
    trusted_pid_file(pid_file)?;
    let text = std::fs::read_to_string(pid_file).map_err(|e| format!("read pid file {}: {e}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| format!("pid file {} does not hold a process id", pid_file.display()))?;
    kill(Pid::from_raw(pid), signal).map_err(|e| format!("send {signal} to {pid} ({}): {e}", pid_file.display()))
}

/// The supervised child of `[exec]`.
pub struct Supervised {
    exec: Exec,
    child: Option<Child>,
}

impl Supervised {
    pub fn new(exec: Exec) -> Self {
        Supervised { exec, child: None }
    }

    pub fn start(&mut self) -> Result<(), String> {
        let (program, args) = self.exec.command.split_first().ok_or("empty [exec] command")?;
        let mut cmd = Command::new(program);
        cmd.args(args).kill_on_drop(true);
        scrub(&mut cmd);
        // If the agent dies without stopping it (SIGKILL), the program gets SIGTERM rather
        // than running on unsupervised with files nobody keeps current.
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from));
        }
        let child = cmd.spawn().map_err(|e| format!("start {program}: {e}"))?;
        tracing::info!(pid = child.id(), program = program.as_str(), "started the supervised process");
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// After a file changed: restart the child, or signal it.
    pub async fn on_change(&mut self) -> Result<(), String> {
        match self.exec.on_change {
            ExecOnChange::Signal(signal) => match self.pid() {
                Some(pid) => {
                    kill(Pid::from_raw(pid as i32), signal).map_err(|e| format!("send {signal} to {pid}: {e}"))
                }
                None => self.start(),
            },
            ExecOnChange::Restart => {
                self.stop().await;
                self.start()
            }
        }
    }

    /// SIGTERM, then SIGKILL after the stop timeout.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(self.exec.stop_timeout, child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = child.kill().await;
    }

    /// Resolves when the child exits by itself (never while there is none).
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(child) => {
                let status = child.wait().await;
                self.child = None;
                status
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_report_failure_and_signals_need_a_live_pid() {
        assert!(perform(&Action::Command(vec!["true".into()])).await.is_ok());
        let e = perform(&Action::Command(vec!["false".into()])).await.expect_err("false fails");
        assert!(e.contains("exited"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("app.pid");
        std::fs::write(&pid_file, "not a pid").expect("write");
        let e = signal_pid_file(&pid_file, Signal::SIGHUP).expect_err("garbage");
        assert!(e.contains("does not hold"), "{e}");
        std::fs::write(&pid_file, "1").expect("write");
        assert!(signal_pid_file(&pid_file, Signal::SIGHUP).is_err(), "never init");
    }

    /// A pid file another user could write, or one in a directory another user could write,
    /// is not believed: that user would choose which process the agent signals.
    #[test]
    fn a_pid_file_others_can_write_is_not_believed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let pid_file = dir.path().join("app.pid");
        // Our own pid: SIGCONT does nothing to a running process.
        std::fs::write(&pid_file, std::process::id().to_string()).expect("write");
        std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(signal_pid_file(&pid_file, Signal::SIGCONT), Ok(()));
        std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        let e = signal_pid_file(&pid_file, Signal::SIGCONT).expect_err("group-writable file");
        assert!(e.contains("writable by other users"), "{e}");
        std::fs::set_permissions(&pid_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        let e = signal_pid_file(&pid_file, Signal::SIGCONT).expect_err("world-writable directory");
        assert!(e.contains("directory other users may write"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let link = dir.path().join("link.pid");
        std::os::unix::fs::symlink(&pid_file, &link).expect("symlink");
        assert!(trusted_pid_file(&link).is_err(), "a symlink is not a pid file");
    }
}
