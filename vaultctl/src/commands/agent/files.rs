//! Writing a rendered file so that a reader sees the old content or the new, never a part, and
//! never a moment when anyone but its owner (and group, when the mode says so) could read it:
//! the temporary file is created with the final mode (`O_EXCL`, so nothing else's file is
//! reused), given its owner before a byte is written, synced, renamed over the destination, and
//! the directory synced.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Owner(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    move |source| WriteError::Io { what, path: path.to_path_buf(), source }
}

/// A user name or number.
pub fn resolve_user(s: &str) -> Result<Uid, WriteError> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid),
        Ok(None) => Err(WriteError::Owner(format!("no user {s:?} on this host"))),
        Err(e) => Err(WriteError::Owner(format!("look up user {s:?}: {e}"))),
    }
}

/// A group name or number.
pub fn resolve_group(s: &str) -> Result<Gid, WriteError> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(WriteError::Owner(format!("no group {s:?} on this host"))),
        Err(e) => Err(WriteError::Owner(format!("look up group {s:?}: {e}"))),
    }
}

/// Whether `path` holds exactly `content` with `mode` (so there is nothing to write).
pub fn unchanged(path: &Path, content: &[u8], mode: u32) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    if meta.permissions().mode() & 0o777 != mode || meta.len() != content.len() as u64 {
        return false;
    }
    std::fs::read(path).map(Zeroizing::new).is_ok_and(|old| old.as_slice() == content)
}

/// A directory other users may write lets them replace the rendered file or squat on the
/// temporary one: refused (the agent's own user and root may write it).
fn check_dir(dir: &Path) -> Result<(), WriteError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(io("stat directory", dir))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return Err(WriteError::Owner(format!(
            "directory {} may be written by other users (mode {:o}, owner uid {}): render into a directory only \
             root or the agent's user can write",
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid()
        )));
    }
    Ok(())
}

/// Replaces `path` with `content`, atomically, with `mode` and the given owner.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<Uid>,
    group: Option<Gid>,
) -> Result<(), WriteError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    check_dir(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A random name, created exclusively (mode 0600), removed if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".vault-agent.tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    // The final mode: the umask may have taken bits the mode asks for; it never adds any.
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io("chmod", tmp.path()))?;
    if owner.is_some() || group.is_some() {
        nix::unistd::fchown(tmp.as_file(), owner, group)
            .map_err(|e| WriteError::Owner(format!("chown {}: {e}", tmp.path().display())))?;
    }
    tmp.write_all(content).map_err(io("write", path))?;
    tmp.as_file().sync_all().map_err(io("sync", path))?;
    tmp.persist(path).map_err(|e| WriteError::Io { what: "rename onto", path: path.to_path_buf(), source: e.error })?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.conf");
        std::fs::write(&path, "old").expect("seed");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&path, b"new content", 0o640, None, None).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new content");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o640);
        assert!(unchanged(&path, b"new content", 0o640));
        assert!(!unchanged(&path, b"new content", 0o600), "a mode change is a change");
        assert!(!unchanged(&path, b"other", 0o640));
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    /// Rendering into a directory other users may write (like /tmp) is refused: they could
    /// replace the file or squat on the temporary name.
    #[test]
    fn a_directory_other_users_may_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let e = write_atomic(&dir.path().join("db.conf"), b"x", 0o600, None, None).expect_err("world-writable");
        assert!(e.to_string().contains("other users"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
        write_atomic(&dir.path().join("db.conf"), b"x", 0o600, None, None).expect("owner-only directory");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone").join("db.conf");
        assert!(write_atomic(&path, b"x", 0o600, None, None).is_err(), "no such directory");
        assert!(resolve_user("no-such-user-here").is_err());
        assert_eq!(resolve_user("0").expect("uid"), Uid::from_raw(0));
    }
}
