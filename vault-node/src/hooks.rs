//! Which hook an `exec:` rotation generator may run, checked in this order:
//!
//! 1. **Lexically**: the path must lie inside `VAULT_ROTATION_HOOKS_DIR`, compared as text
//!    (`.` and repeated `/` dropped, `..` refused) before anything on the file system is
//!    looked at.
//! 2. **Bound**: an admin must have bound that hook (its path inside the directory) to name
//!    patterns covering the secret (`vaultctl rotation hook bind`).
//!
//! Every refusal at these two steps answers the one [`HOOK_REFUSED`] text, so a caller with a
//! `rotate` grant learns nothing about which files exist on the leader (`exec:/etc/shadow` and
//! `exec:/nonexistent` read the same); the reason goes to the node's log. The API checks both
//! when a policy is set; the leader checks them again before each run, so a binding removed
//! later stops the hook.
//!
//! 3. **On disk** (the leader, at run time, only for a bound hook): the resolved file must
//!    still be inside the directory, and only root or the node's user may own or write it and
//!    the directories on its way ([`allowed_hook`]). These errors name the problem: the path
//!    is one an admin bound.

use std::path::{Path, PathBuf};

use vault_core::model::hook_under;
use vault_raft::reader::StateReader;
use vault_raft::StoreError;

/// What a caller is told when a hook path is refused at the lexical or binding step.
pub const HOOK_REFUSED: &str = "hook not allowed: an exec: generator must name a file inside \
     VAULT_ROTATION_HOOKS_DIR that an admin bound to this secret's name (vaultctl rotation hook bind)";

/// Why a hook was refused at the lexical or binding step; for the node's log only.
#[derive(Debug)]
pub struct Refused(pub String);

/// The hook (its path inside `dir`) that `exec_path` names, if it lies lexically inside `dir`
/// and a binding of it covers `name`. Reads the bindings as this node has applied them; looks
/// at nothing on the file system but `dir` itself (resolved, for a directory reached through a
/// link).
pub fn bound_hook(
    reader: &StateReader,
    dir: Option<&Path>,
    exec_path: &str,
    name: &str,
) -> Result<Result<String, Refused>, StoreError> {
    let Some(dir) = dir else {
        return Ok(Err(Refused("VAULT_ROTATION_HOOKS_DIR is not set on this node".into())));
    };
    let written = std::path::absolute(dir).ok();
    let hook = written
        .and_then(|d| hook_under(&d, exec_path))
        .or_else(|| dir.canonicalize().ok().and_then(|d| hook_under(&d, exec_path)));
    let Some(hook) = hook else {
        return Ok(Err(Refused(format!("{exec_path} is not inside VAULT_ROTATION_HOOKS_DIR {}", dir.display()))));
    };
    Ok(match reader.hook_binding(&hook)? {
        Some(b) if b.covers(name) => Ok(hook),
        Some(b) => Err(Refused(format!("hook {hook} is bound to {:?}, which do not cover {name}", b.names))),
        None => Err(Refused(format!("hook {hook} is not bound to any names"))),
    })
}

/// `hook`, resolved (links followed), if it is a file inside `dir` (also resolved).
pub fn allowed_hook(dir: Option<&Path>, hook: &Path) -> Result<PathBuf, String> {
    let dir = dir.ok_or("exec: generators need VAULT_ROTATION_HOOKS_DIR on the leader; it is not set")?;
    let dir = dir.canonicalize().map_err(|e| format!("VAULT_ROTATION_HOOKS_DIR {}: {e}", dir.display()))?;
    let resolved = hook.canonicalize().map_err(|e| format!("hook {}: {e}", hook.display()))?;
    if !resolved.starts_with(&dir) || !resolved.is_file() {
        return Err(format!("hook {} is not a file inside VAULT_ROTATION_HOOKS_DIR {}", hook.display(), dir.display()));
    }
    // Whoever can change the hook, or swap it or a directory on its way for another, runs
    // code as this node and sees the values it makes: like sshd's StrictModes, only root and
    // this node's user may own them, and no one else may write to them. Above the hooks
    // directory is the operator's to secure (a test's /tmp would fail any such check).
    let mut path = resolved.as_path();
    loop {
        guarded(path)?;
        if path == dir {
            break;
        }
        path =
            path.parent().ok_or_else(|| format!("hook {} has no parent inside the hooks directory", hook.display()))?;
    }
    Ok(resolved)
}

/// Whether `resolved` (a hook's path with links followed) is the bound hook `bound` itself, as
/// a path inside the resolved `dir`: no link on the way led elsewhere.
pub fn resolves_to_itself(dir: Option<&Path>, bound: &str, resolved: &Path) -> bool {
    dir.and_then(|d| d.canonicalize().ok()).is_some_and(|d| d.join(bound) == resolved)
}

/// Refuses `path` if anyone but root and this process's user owns it or may write to it.
fn guarded(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{} is owned by uid {}, neither root nor this node's user (uid {me}): refusing to run the hook",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} may be written by group or others (mode {mode:04o}): refusing to run the hook",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A link inside the hooks directory resolves to another hook: the names bound to the link
    /// must not run the file it points to.
    #[test]
    fn a_link_to_another_hook_is_not_that_hook() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).expect("mkdir");
        std::fs::write(hooks.join("db-admin"), "#!/bin/sh\n").expect("write hook");
        std::os::unix::fs::symlink(hooks.join("db-admin"), hooks.join("app-rotate")).expect("symlink");
        let resolved = |h: &str| hooks.join(h).canonicalize().expect("resolve");
        assert!(resolves_to_itself(Some(&hooks), "db-admin", &resolved("db-admin")));
        assert!(!resolves_to_itself(Some(&hooks), "app-rotate", &resolved("app-rotate")));
        assert!(!resolves_to_itself(None, "db-admin", &resolved("db-admin")));
    }

    #[test]
    fn hooks_anyone_else_could_change_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hooks = dir.path().join("hooks");
        let sub = hooks.join("db");
        std::fs::create_dir_all(&sub).expect("mkdir");
        chmod(&hooks, 0o755);
        chmod(&sub, 0o755);
        let hook = sub.join("rotate");
        std::fs::write(&hook, "#!/bin/sh\n").expect("write");
        chmod(&hook, 0o755);
        assert!(allowed_hook(Some(&hooks), &hook).is_ok());
        for (path, mode) in [(&hook, 0o775), (&hook, 0o757), (&sub, 0o775), (&hooks, 0o777), (&hooks, 0o1777)] {
            chmod(path, mode);
            let err = allowed_hook(Some(&hooks), &hook).expect_err("a writable hook or directory is refused");
            assert!(err.contains("written by group or others") && err.contains(&format!("{mode:04o}")), "{err}");
            chmod(path, 0o755);
        }
        assert!(allowed_hook(Some(&hooks), &hook).is_ok(), "read and execute for others is fine");
        // As root, a hook owned by another user is refused too.
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&hook, Some(65534), None).expect("chown");
            let err = allowed_hook(Some(&hooks), &hook).expect_err("a hook owned by nobody is refused");
            assert!(err.contains("owned by uid 65534"), "{err}");
            std::os::unix::fs::chown(&sub, Some(65534), None).expect("chown");
            std::os::unix::fs::chown(&hook, Some(0), None).expect("chown");
            let err = allowed_hook(Some(&hooks), &hook).expect_err("a directory owned by nobody is refused");
            assert!(err.contains("owned by uid 65534"), "{err}");
        } else {
            eprintln!("SKIP the ownership half: needs root to chown");
        }
    }

    #[test]
    fn hooks_outside_the_directory_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).expect("mkdir");
        chmod(&hooks, 0o755);
        let inside = hooks.join("ok");
        std::fs::write(&inside, "#!/bin/sh\n").expect("write");
        chmod(&inside, 0o755);
        let outside = dir.path().join("evil");
        std::fs::write(&outside, "#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink(&outside, hooks.join("link")).expect("symlink");
        assert!(allowed_hook(Some(&hooks), &inside).is_ok());
        assert!(allowed_hook(None, &inside).unwrap_err().contains("VAULT_ROTATION_HOOKS_DIR"));
        assert!(allowed_hook(Some(&hooks), &outside).is_err());
        assert!(allowed_hook(Some(&hooks), &hooks.join("link")).is_err(), "a link leading out is followed");
        assert!(allowed_hook(Some(&hooks), &hooks.join("../evil")).is_err());
        assert!(allowed_hook(Some(&hooks), &hooks).is_err(), "the directory itself is not a hook");
    }
}
