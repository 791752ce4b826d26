//! Hook bindings: the secret names each rotation hook may be run for.
//!
//! A `rotate` grant lets a token choose a secret's generator, but not which secrets a hook
//! (which may hold a database's admin credentials) acts on: an admin binds each hook, by its
//! path inside the hooks directory, to name patterns (the same syntax as role grants), and an
//! `exec:` policy is accepted, and run, only for a name a binding of its hook covers.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::role::{pattern_matches, validate_pattern};
use crate::CoreError;

/// Most name patterns one binding holds.
pub const MAX_BOUND_PATTERNS: usize = 64;
/// Longest hook path.
pub const MAX_HOOK_PATH: usize = 1024;

/// One hook and the names it may rotate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookBinding {
    /// The hook's path relative to the hooks directory (`db-password`, `db/rotate`).
    pub hook: String,
    /// Secret name patterns: exact, prefix ending in `*`, or `*`.
    pub names: Vec<String>,
    pub created_at_ms: u64,
}

impl HookBinding {
    /// Checks a binding as an admin asked for it.
    pub fn new(hook: &str, names: &[String], created_at_ms: u64) -> Result<Self, CoreError> {
        validate_hook_path(hook)?;
        if names.is_empty() || names.len() > MAX_BOUND_PATTERNS {
            return Err(CoreError::InvalidArgument(format!(
                "a hook binding needs 1 to {MAX_BOUND_PATTERNS} name patterns (--names)"
            )));
        }
        for p in names {
            validate_pattern(p)?;
        }
        Ok(HookBinding { hook: hook.to_string(), names: names.to_vec(), created_at_ms })
    }

    pub fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|p| pattern_matches(p, name))
    }
}

/// Refuses a hook path that is not a plain relative path inside the hooks directory:
/// segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`.
pub fn validate_hook_path(hook: &str) -> Result<(), CoreError> {
    let bad = |why: &str| Err(CoreError::InvalidArgument(format!("hook {hook:?}: {why}")));
    if hook.is_empty() || hook.len() > MAX_HOOK_PATH {
        return bad(&format!("a hook path is 1 to {MAX_HOOK_PATH} bytes"));
    }
    for seg in hook.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("a hook is named by its path inside the hooks directory, without empty, '.' or '..' segments");
        }
        if let Some(c) = seg.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return bad(&format!("{c:?} is not allowed (letters, digits, '.', '_', '-' and '/')"));
        }
    }
    Ok(())
}

/// The hook (its path relative to `dir`) that the absolute `exec_path` names, compared
/// lexically: nothing on the file system is looked at, so the answer says nothing about which
/// files exist. `None` when the path does not lie inside `dir`, or is not a valid hook path.
/// `dir` must be absolute.
pub fn hook_under(dir: &Path, exec_path: &str) -> Option<String> {
    let dir = lexical(dir)?;
    let path = lexical(Path::new(exec_path))?;
    let rest = path.strip_prefix(&dir).ok()?;
    let hook = rest.iter().map(|s| s.to_str()).collect::<Option<Vec<_>>>()?.join("/");
    validate_hook_path(&hook).ok()?;
    Some(hook)
}

/// `p` with `.` and repeated separators gone; `None` if it is relative or holds `..` (which a
/// symbolic link could make mean something else than its text).
fn lexical(p: &Path) -> Option<std::path::PathBuf> {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    out.has_root().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_cover_their_patterns_and_bad_ones_are_refused() {
        let b = HookBinding::new("db/rotate", &["db/*".into(), "app/pass".into()], 1).unwrap();
        assert!(b.covers("db/main") && b.covers("app/pass"));
        assert!(!b.covers("dev/x") && !b.covers("app/pass2"));
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "a/.", "a b", "a\n"] {
            assert!(HookBinding::new(bad, &["*".into()], 1).is_err(), "{bad:?}");
        }
        assert!(HookBinding::new("h", &[], 1).is_err(), "no patterns");
        assert!(HookBinding::new("h", &["a*b".into()], 1).is_err(), "a bad pattern");
    }

    #[test]
    fn an_exec_path_names_a_hook_only_inside_the_directory() {
        let dir = Path::new("/etc/vault/hooks");
        assert_eq!(hook_under(dir, "/etc/vault/hooks/db").as_deref(), Some("db"));
        assert_eq!(hook_under(dir, "/etc/vault/hooks//sub/./db").as_deref(), Some("sub/db"));
        assert_eq!(hook_under(Path::new("/etc/vault/hooks/"), "/etc/vault/hooks/db").as_deref(), Some("db"));
        for outside in [
            "/etc/shadow",
            "/nonexistent",
            "/etc/vault/hooks",
            "/etc/vault/hooksx/db",
            "/etc/vault/hooks/../shadow",
            "/etc/vault/hooks/a b",
            "etc/vault/hooks/db",
        ] {
            assert_eq!(hook_under(dir, outside), None, "{outside}");
        }
        assert_eq!(hook_under(Path::new("hooks"), "/hooks/db"), None, "a relative directory matches nothing");
    }
}
