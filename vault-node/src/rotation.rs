//! The leader-run scheduled rotation worker.
//!
//! Every node runs it; it acts only while the node leads. Each policy lives in the replicated
//! state with its next due time, so a new leader picks up where the old one stopped. For a due
//! secret the worker opens the current value, runs the policy's generator, seals the result
//! for the next version and commits it with `RotationDone`, which lands only while the policy
//! has made exactly the attempts the worker saw (two leaders never both rotate one attempt).
//! A failure is committed as `RotationFailed`: the old version stays current, the error (never
//! a value) is recorded and the attempt is retried after a backoff that doubles, from
//! `VAULT_ROTATION_RETRY_SECS` up to the policy's period (at most an hour). Both are audited on
//! every node. Starts are paced to `VAULT_ROTATION_MAX_PER_SEC`.
//!
//! An `exec:` hook may only be a file inside `VAULT_ROTATION_HOOKS_DIR` that an admin bound to
//! the secret's name (`hooks`): a token with `rotate` can name a hook but cannot make a node run
//! anything its operator did not put there, nor a hook for names it was not bound to. The hook
//! runs with an empty environment (plus `VAULT_SECRET_NAME` and `VAULT_SECRET_VERSION`), gets the
//! current value on stdin, and prints the next one on stdout; what it writes to stderr is
//! dropped, since it could hold a value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use openraft::ServerState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use vault_core::model::{Generator, RotationPolicy, VersionState};
use vault_core::time::now_ms;
use vault_core::{envelope, SecretBytes, SecretName};
use vault_raft::{Command, CommandResponse, Rejection};
use zeroize::Zeroizing;

use crate::config::RotationConfig;
use crate::hooks;
use crate::vault::Vault;

/// How often the leader looks for due rotations when nothing wakes it.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Due policies taken per look.
const BATCH: usize = 64;
/// Longest wait between retries, whatever the period.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Most of a hook's output read: past the largest value setting (3 MiB) it is refused anyway.
const HOOK_OUTPUT_LIMIT: u64 = (3 << 20) + 2;
/// Least wait after an attempt whose outcome is unknown (a commit that timed out may still land).
const HOLD_BACK: Duration = Duration::from_secs(30);
/// Times a sealed value is sealed again when writes to the same secret keep taking its version.
const MAX_RESEALS: usize = 5;

/// Why an attempt did not rotate.
enum Failure {
    /// Recorded in the policy (and retried after a backoff).
    Failed(String),
    /// Not recorded: leadership moved, the policy changed under the attempt, or the commit's
    /// outcome is unknown (it timed out). Whoever leads next finds the policy still due, after a
    /// read barrier that shows whether the commit landed; this node holds the name back a while.
    Dropped(String),
}

pub struct Rotator {
    vault: Arc<Vault>,
    config: RotationConfig,
    /// Names whose last attempt here ended with an unknown outcome, until when they wait.
    held_back: Mutex<HashMap<String, Instant>>,
}

impl Rotator {
    pub fn new(vault: Arc<Vault>, config: RotationConfig) -> Arc<Self> {
        Arc::new(Rotator { vault, config, held_back: Mutex::new(HashMap::new()) })
    }

    fn is_leader(&self) -> bool {
        self.vault.cluster.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Runs until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut metrics = self.vault.cluster.raft.metrics();
        loop {
            if self.is_leader() {
                // Neither shutdown nor a lost leadership waits for a hook: dropping the attempt
                // kills it, and the rotation is still due for whoever leads next (which looks
                // after a read barrier, so it sees any attempt of this one's that committed).
                tokio::select! {
                    _ = self.tick(&stop) => {}
                    _ = lost_leadership(&mut metrics) => {}
                    _ = stop.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = self.vault.rotation_wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// The due policies, as of everything committed (when any look due here).
    fn due(&self) -> Option<vault_raft::reader::DueRotations> {
        match self.vault.reader.due_rotations(now_ms(), BATCH) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "rotation: reading the policies failed");
                None
            }
        }
    }

    async fn tick(&self, stop: &CancellationToken) {
        let Some(mut found) = self.due() else { return };
        if !found.due.is_empty() {
            // Everything committed before this node led is applied first: a policy that an
            // earlier leader's attempt already moved on is not attempted again. (Only when
            // something looks due: an idle leader takes no barrier every second.)
            if let Err(e) = self.vault.linearize().await {
                tracing::debug!(error = ?e, "rotation: no read barrier; not rotating now");
                return;
            }
            let Some(again) = self.due() else { return };
            found = again;
        }
        metrics::gauge!("vault_rotation_policies").set(found.total as f64);
        metrics::gauge!("vault_rotations_failing").set(found.failing as f64);
        let pace = Duration::from_secs(1) / self.config.max_per_sec.max(1);
        for (name, policy) in found.due {
            if stop.is_cancelled() || !self.is_leader() {
                return;
            }
            if self.held_back(&name) {
                continue;
            }
            self.rotate(&name, &policy).await;
            tokio::time::sleep(pace).await;
        }
    }

    /// Whether an attempt of this node's on `name` ended with an unknown outcome recently (see
    /// [`Failure::Dropped`]): it is not attempted again until the hold-back has passed.
    fn held_back(&self, name: &str) -> bool {
        let mut held = self.held_back.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        held.retain(|_, until| *until > now);
        held.contains_key(name)
    }

    async fn rotate(&self, name: &str, policy: &RotationPolicy) {
        match self.attempt(name, policy).await {
            Ok(version) => {
                metrics::counter!("vault_rotations_total", "outcome" => "ok").increment(1);
                tracing::info!(secret = name, version, "rotated");
            }
            Err(Failure::Dropped(why)) => {
                metrics::counter!("vault_rotations_total", "outcome" => "dropped").increment(1);
                let until = Instant::now() + self.config.retry.max(HOLD_BACK);
                self.held_back.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), until);
                tracing::warn!(secret = name, %why, "rotation not committed (or not known to be); tried again later");
            }
            Err(Failure::Failed(why)) => {
                metrics::counter!("vault_rotations_total", "outcome" => "failed").increment(1);
                let now = now_ms();
                let retry_at_ms = now.saturating_add(backoff(self.config.retry, policy).as_millis() as u64);
                tracing::warn!(secret = name, error = %why, retry_at_ms, "rotation failed; the old version stays current");
                let cmd = Command::RotationFailed {
                    name: name.to_string(),
                    now_ms: now,
                    error: why,
                    retry_at_ms,
                    attempts: policy.attempts,
                    node_id: self.vault.node_id,
                };
                if let Err(e) = self.vault.write_local(cmd).await {
                    tracing::warn!(secret = name, error = %e, "rotation: recording the failure failed");
                }
            }
        }
    }

    /// One attempt: a value made from the current live version, committed as the next one.
    /// A random value is made again when a write, delete or destroy comes between; a hook's is
    /// not (the hook has acted on the old value): the attempt fails and is retried on the new
    /// current version.
    async fn attempt(&self, raw_name: &str, policy: &RotationPolicy) -> Result<u64, Failure> {
        let name = SecretName::parse(raw_name).map_err(|e| Failure::Failed(e.to_string()))?;
        let store = |e: vault_raft::StoreError| Failure::Dropped(e.to_string());
        for _ in 0..MAX_RESEALS {
            let current = self.vault.reader.secret_meta(name.as_str()).map_err(store)?.map_or(0, |m| m.current_version);
            let live = self.vault.reader.version(name.as_str(), current).map_err(store)?;
            if !live.is_some_and(|v| v.state == VersionState::Live) {
                return Err(Failure::Failed(format!(
                    "the current version ({current}) is not live (deleted or destroyed); rotation waits for a live one"
                )));
            }
            let next = match &policy.generator {
                Generator::Exec(path) => {
                    let hook = self.permitted_hook(path, &name)?;
                    let (_, old) = self.vault.open_secret(&name, current).await.map_err(|e| {
                        Failure::Failed(format!("opening version {current}: {}", tonic::Status::from(e).message()))
                    })?;
                    let run = HookRun { name: &name, version: current, attempt: policy.attempts };
                    let made = run_hook(&hook, self.config.hook_timeout, &run, &old).await.map_err(Failure::Failed)?;
                    // Unbound while it ran: its value is not committed.
                    self.permitted_hook(path, &name)?;
                    made
                }
                other => generate_random(other).map_err(Failure::Failed)?,
            };
            if next.len() > self.vault.max_value_bytes {
                return Err(Failure::Failed(format!(
                    "the generator made {} bytes; values hold at most {}",
                    next.len(),
                    self.vault.max_value_bytes
                )));
            }
            let key_id = crate::master_key::sealing_key(&self.vault)
                .map_err(|e| Failure::Failed(tonic::Status::from(e).message().to_string()))?;
            let version = current
                .checked_add(1)
                .ok_or_else(|| Failure::Failed(format!("secret {name} has used every version number")))?;
            let sealed = envelope::seal(self.vault.kms.as_ref(), &key_id, &name, version, &next)
                .await
                .map_err(|e| Failure::Failed(format!("sealing: {e}")))?;
            let cmd = Command::RotationDone {
                name: name.to_string(),
                from_version: current,
                version,
                sealed,
                now_ms: now_ms(),
                attempts: policy.attempts,
                node_id: self.vault.node_id,
            };
            match self.vault.write_local(cmd).await {
                Ok(CommandResponse::Written { version }) => return Ok(version),
                Ok(CommandResponse::Rejected(Rejection::VersionConflict { .. })) if policy.generator.is_exec() => {
                    return Err(Failure::Failed(
                        "a write, delete or destroy changed the secret while the hook ran; retried from the new \
                         current version"
                            .into(),
                    ))
                }
                Ok(CommandResponse::Rejected(Rejection::VersionConflict { .. } | Rejection::WrongMasterKey { .. })) => {
                    // A write came between (or the key rotated): catch up, make a new value.
                    self.vault.linearize().await.map_err(|e| Failure::Dropped(format!("{e:?}")))?;
                }
                Ok(other) => return Err(Failure::Dropped(format!("{other:?}"))),
                Err(e) => return Err(Failure::Dropped(tonic::Status::from(e).message().to_string())),
            }
        }
        Err(Failure::Failed(format!("writes to the secret came between {MAX_RESEALS} attempts in a row")))
    }
}

impl Rotator {
    /// The hook `path` may run for `name` (see `hooks`): bound to the name now, not only when
    /// the policy was set. A refusal is recorded as the one generic text; why, only in this
    /// node's log.
    fn permitted_hook(&self, path: &str, name: &SecretName) -> Result<PathBuf, Failure> {
        let dir = self.config.hooks_dir.as_deref();
        let refused = |why: String| {
            tracing::warn!(secret = name.as_str(), hook = path, %why, "rotation hook refused");
            Failure::Failed(hooks::HOOK_REFUSED.into())
        };
        let bound = match hooks::bound_hook(&self.vault.reader, dir, path, name.as_str()) {
            Ok(Ok(hook)) => hook,
            Ok(Err(hooks::Refused(why))) => return Err(refused(why)),
            Err(e) => return Err(Failure::Dropped(e.to_string())),
        };
        let resolved = hooks::allowed_hook(dir, Path::new(path)).map_err(Failure::Failed)?;
        // The binding names a file, not a link to another: a link inside the directory must not
        // let the names bound to it run a hook bound to others.
        if !hooks::resolves_to_itself(dir, &bound, &resolved) {
            return Err(refused(format!("hook {bound} is a link to {}: bind the file itself", resolved.display())));
        }
        Ok(resolved)
    }
}

/// Resolves once this node is no longer the leader.
async fn lost_leadership(metrics: &mut tokio::sync::watch::Receiver<vault_raft::typ::RaftMetrics>) {
    while metrics.borrow_and_update().state == ServerState::Leader {
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Wait before retrying a policy that has failed `policy.failures` times before this failure:
/// `first`, doubled for each earlier failure, at most the period (and an hour).
fn backoff(first: Duration, policy: &RotationPolicy) -> Duration {
    let cap = Duration::from_millis(policy.every_ms).min(MAX_BACKOFF).max(first);
    first.saturating_mul(1u32 << policy.failures.min(20)).min(cap)
}

/// A `random:` or `hex:` value.
fn generate_random(generator: &Generator) -> Result<SecretBytes, String> {
    match generator {
        Generator::Random(n) => {
            let bytes = random_bytes(*n);
            Ok(SecretBytes::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*bytes).into_bytes()))
        }
        Generator::Hex(n) => {
            let bytes = random_bytes(*n);
            // Written straight into the value's buffer, which is zeroized with it: no
            // intermediate `String` (`format!`) is left behind in freed memory.
            let mut out = Vec::with_capacity(bytes.len() * 2);
            for b in bytes.iter() {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
            }
            Ok(SecretBytes::new(out))
        }
        Generator::Exec(path) => Err(format!("exec:{path} is a hook, not a random generator")),
    }
}

/// Fresh bytes straight from the operating system, like other long-lived secrets.
fn random_bytes(n: u16) -> Zeroizing<Vec<u8>> {
    vault_core::keys::os_random(usize::from(n))
}

/// The process group of a running hook (its id is the hook's pid). Dropped while armed (a
/// timeout, a cancelled attempt), it kills the whole group: a hook's children (a `sleep`, a
/// database client) go with it and cannot hold its output open.
struct HookGroup(Option<u32>);

impl Drop for HookGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) takes no pointers; a negative pid names the hook's own group,
            // which it was started in (`process_group(0)`) and which has not been reaped.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// What a hook is told about the rotation it makes (in its environment).
struct HookRun<'a> {
    name: &'a SecretName,
    /// The version whose value it gets on stdin.
    version: u64,
    /// The policy's attempt number: the same when an attempt is made again after its outcome
    /// was lost, so a hook can tell a repeat from a new rotation.
    attempt: u64,
}

/// Runs `hook` with `old` on stdin; its stdout, less one trailing newline, is the next value.
async fn run_hook(hook: &Path, timeout: Duration, run: &HookRun<'_>, old: &SecretBytes) -> Result<SecretBytes, String> {
    let shown = hook.display();
    let mut command = tokio::process::Command::new(hook);
    let node = std::process::id();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl(2) and getppid(2) take no pointers, and nothing here allocates
    // (errors are bare OS error codes).
    unsafe {
        command.pre_exec(move || {
            // A node killed outright (SIGKILL, OOM) cannot kill its hook: the kernel does, the
            // moment the thread that started it dies. That thread is one of the runtime's
            // workers (the rotation worker is a task, and this runs on no blocking thread),
            // which live as long as the node: nothing in the node calls `block_in_place`, which
            // would turn a worker into a blocking thread that exits when idle and so kill a
            // running hook. The setting survives exec.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The node may have died before the setting took: then nothing would kill us.
            if u32::try_from(libc::getppid()).ok() != Some(node) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("VAULT_SECRET_NAME", run.name.as_str())
        .env("VAULT_SECRET_VERSION", run.version.to_string())
        .env("VAULT_ROTATION_ATTEMPT", run.attempt.to_string())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so what it starts is killed with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("hook {shown} could not start: {e}"))?;
    let mut group = HookGroup(child.id());
    let mut stdin = child.stdin.take().ok_or("hook stdin")?;
    let mut stdout = child.stdout.take().ok_or("hook stdout")?;
    let input = Zeroizing::new(old.expose().to_vec());
    let run = async {
        // A hook that does not read its input must not block the write: both run at once.
        let write = async {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let mut out = Zeroizing::new(Vec::new());
        let read = async { (&mut stdout).take(HOOK_OUTPUT_LIMIT).read_to_end(&mut out).await };
        let (_, read) = tokio::join!(write, read);
        read.map_err(|e| format!("reading the hook's output: {e}"))?;
        let status = child.wait().await.map_err(|e| format!("waiting for the hook: {e}"))?;
        // Reaped: its process group id may be taken by another process from now on.
        group.0 = None;
        Ok::<_, String>((status, out))
    };
    let (status, mut out) = match tokio::time::timeout(timeout, run).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("hook {shown} ran past {timeout:?} and was killed")),
    };
    if !status.success() {
        return Err(match status.code() {
            Some(code) => format!("hook {shown} exited with status {code}"),
            None => format!("hook {shown} was killed by a signal"),
        });
    }
    if out.ends_with(b"\n") {
        out.pop();
        if out.ends_with(b"\r") {
            out.pop();
        }
    }
    if out.is_empty() {
        return Err(format!("hook {shown} printed no value"));
    }
    Ok(SecretBytes::new(std::mem::take(&mut *out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(every_secs: u64, failures: u32) -> RotationPolicy {
        let mut p = RotationPolicy::new(every_secs * 1000, Generator::Random(8), 0).expect("policy");
        p.failures = failures;
        p
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_period() {
        let first = Duration::from_secs(1);
        assert_eq!(backoff(first, &policy(3600, 0)), Duration::from_secs(1));
        assert_eq!(backoff(first, &policy(3600, 1)), Duration::from_secs(2));
        assert_eq!(backoff(first, &policy(3600, 3)), Duration::from_secs(8));
        assert_eq!(backoff(first, &policy(5, 10)), Duration::from_secs(5), "capped by the period");
        assert_eq!(backoff(first, &policy(86_400 * 30, 40)), MAX_BACKOFF, "and by an hour");
        assert_eq!(
            backoff(Duration::from_secs(30), &policy(2, 0)),
            Duration::from_secs(30),
            "never below the first wait"
        );
    }

    #[test]
    fn generators_make_what_they_say() {
        let r = generate_random(&Generator::Random(24)).expect("random");
        assert_eq!(r.len(), 32, "24 bytes in unpadded base64");
        let r2 = generate_random(&Generator::Random(24)).expect("random");
        assert_ne!(r.expose(), r2.expose());
        let h = generate_random(&Generator::Hex(8)).expect("hex");
        assert_eq!(h.len(), 16);
        assert!(h.expose().iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(generate_random(&Generator::Exec("/bin/true".into())).is_err());
    }

    #[tokio::test]
    async fn a_hook_gets_the_old_value_and_its_failures_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let write_hook = |file: &str, body: &str| {
            let p = dir.path().join(file);
            std::fs::write(&p, body).expect("write hook");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            p
        };
        let name = SecretName::parse("db/pass").expect("name");
        let old = SecretBytes::new(b"old-pass".to_vec());
        let t = Duration::from_secs(5);
        let ok = write_hook(
            "ok",
            "#!/bin/sh\nold=$(cat)\nprintf '%s-%s-%s-%s-%s\\n' \"$old\" \"$VAULT_SECRET_NAME\" \"$VAULT_SECRET_VERSION\" \"$VAULT_ROTATION_ATTEMPT\" \"$(pwd)\"\n",
        );
        let run = HookRun { name: &name, version: 4, attempt: 7 };
        let v = run_hook(&ok, t, &run, &old).await.expect("hook runs");
        assert_eq!(v.expose(), b"old-pass-db/pass-4-7-/", "old value in, one newline stripped");
        let fails = write_hook("fails", "#!/bin/sh\necho oops >&2\nexit 3\n");
        assert!(run_hook(&fails, t, &run, &old).await.unwrap_err().contains("exited with status 3"));
        let silent = write_hook("silent", "#!/bin/sh\ncat >/dev/null\n");
        assert!(run_hook(&silent, t, &run, &old).await.unwrap_err().contains("printed no value"));
        let slow = write_hook("slow", "#!/bin/sh\nsleep 30 &\necho $! > \"$0.child\"\nsleep 5\necho late\n");
        let e = run_hook(&slow, Duration::from_millis(300), &run, &old).await.unwrap_err();
        assert!(e.contains("killed"), "{e}");
        // What the hook started went with it (gone, or a zombie awaiting its reaper).
        let child = std::fs::read_to_string(dir.path().join("slow.child")).expect("the hook wrote its child's pid");
        let stat = format!("/proc/{}/stat", child.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let gone = || {
            std::fs::read_to_string(&stat)
                .map_or(true, |s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        };
        while !gone() {
            assert!(std::time::Instant::now() < deadline, "the hook's child {} outlived it", child.trim());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
