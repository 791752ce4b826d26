use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::token::validate_label;
use crate::CoreError;

/// The built-in role: every action on every path plus token, role, cluster and KMS
/// administration. Created on first start; cannot be changed or deleted.
pub const ADMIN_ROLE: &str = "admin";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Create,
    Update,
    Delete,
    Destroy,
    List,
    Rotate,
    All,
}

impl Action {
    pub const NAMES: &'static str = "create, update, delete, destroy, list, rotate or *";

    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Destroy => "destroy",
            Action::List => "list",
            Action::Rotate => "rotate",
            Action::All => "*",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        Ok(match s.trim() {
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "destroy" => Action::Destroy,
            "list" => Action::List,
            "rotate" => Action::Rotate,
            "*" => Action::All,
            other => {
                return Err(CoreError::InvalidArgument(format!("unknown action {other:?}; expected {}", Action::NAMES)))
            }
        })
    }
}

/// One permission: `action` on secrets matching `pattern` (exact name, prefix ending in `*`,
/// or `*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub action: Action,
    pub pattern: String,
}

impl Grant {
    pub fn new(action: Action, pattern: &str) -> Result<Self, CoreError> {
        validate_pattern(pattern)?;
        Ok(Grant { action, pattern: pattern.to_string() })
    }

    /// Parses `ACTION[,ACTION...]:PATTERN`, e.g. `create,update:app/*`.
    pub fn parse_many(spec: &str) -> Result<Vec<Grant>, CoreError> {
        let (actions, pattern) = spec.split_once(':').ok_or_else(|| {
            CoreError::InvalidArgument(format!("grant {spec:?} must look like ACTION[,ACTION]:PATTERN"))
        })?;
        actions.split(',').map(|a| Grant::new(a.parse()?, pattern)).collect()
    }

    pub fn matches(&self, action: Action, name: &str) -> bool {
        (self.action == Action::All || self.action == action) && pattern_matches(&self.pattern, name)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.action, self.pattern)
    }
}

/// Whether `pattern` (exact name, prefix ending in `*`, or `*`) matches `name`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Refuses a pattern that is malformed or can never match a secret name.
pub fn validate_pattern(p: &str) -> Result<(), CoreError> {
    let body = p.strip_suffix('*').unwrap_or(p);
    if p.is_empty() {
        return Err(CoreError::InvalidArgument("grant pattern must not be empty".into()));
    }
    if body.contains('*') {
        return Err(CoreError::InvalidArgument(format!(
            "pattern {p:?}: '*' may only stand at the end (exact name, prefix*, or *)"
        )));
    }
    if p.len() > 256 {
        return Err(CoreError::InvalidArgument("grant pattern is longer than 256 bytes".into()));
    }
    if let Some(c) = body.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))) {
        return Err(CoreError::InvalidArgument(format!("pattern {p:?} contains {c:?}")));
    }
    // A pattern that no valid name can match is refused: an exact pattern must be a valid
    // name; a prefix must be the start of one (its last segment may be partial or empty).
    let never =
        |why: &str| Err(CoreError::InvalidArgument(format!("pattern {p:?} can never match a secret name: {why}")));
    if p == "*" {
        return Ok(());
    }
    if body.starts_with('/') {
        return never("names do not start with '/'");
    }
    let prefix = p.ends_with('*');
    let segments: Vec<&str> = body.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        if last && prefix {
            break;
        }
        match *seg {
            "" => return never("names have no empty segment ('//')"),
            "." | ".." => return never("names have no '.' or '..' segment"),
            _ => {}
        }
    }
    if !prefix {
        crate::SecretName::parse(p).map_err(|e| CoreError::InvalidArgument(format!("pattern {p:?}: {e}")))?;
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub grants: Vec<Grant>,
}

impl Role {
    pub fn new(name: &str, grants: Vec<Grant>) -> Result<Self, CoreError> {
        validate_label("role", name)?;
        if grants.is_empty() {
            return Err(CoreError::InvalidArgument("a role needs at least one grant".into()));
        }
        Ok(Role { name: name.to_string(), grants })
    }

    pub fn builtin_admin() -> Self {
        Role { name: ADMIN_ROLE.to_string(), grants: vec![Grant { action: Action::All, pattern: "*".into() }] }
    }

    pub fn is_admin(&self) -> bool {
        self.name == ADMIN_ROLE
    }

    pub fn allows(&self, action: Action, name: &str) -> bool {
        self.is_admin() || self.grants.iter().any(|g| g.matches(action, name))
    }

    /// Whether the role grants `action` on any name at all.
    pub fn grants_action(&self, action: Action) -> bool {
        self.is_admin() || self.grants.iter().any(|g| g.action == action || g.action == Action::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_can_never_match_are_refused() {
        for bad in ["/app/*", "app/../*", "app//x", "app/./x", "/x", "app//*", "..", "a/../b"] {
            let e = Grant::new(Action::Create, bad).unwrap_err().to_string();
            assert!(e.contains("never match") || e.contains("pattern"), "{bad}: {e}");
        }
        for good in ["*", "app/*", "app/", "app/db", "app/.hidden", "app/pre*", "app/.*", "a-b_c.d/e"] {
            if good == "app/" {
                assert!(Grant::new(Action::Create, good).is_err(), "an exact pattern must be a valid name");
                continue;
            }
            assert!(Grant::new(Action::Create, good).is_ok(), "{good}");
        }
    }

    #[test]
    fn grants_match_exact_prefix_and_star() {
        let role = Role::new(
            "app-writer",
            [Grant::parse_many("create,update:app/*").unwrap(), Grant::parse_many("list:db/main").unwrap()].concat(),
        )
        .unwrap();
        assert!(role.allows(Action::Create, "app/x"));
        assert!(role.allows(Action::Update, "app/x/y"));
        assert!(!role.allows(Action::Delete, "app/x"));
        assert!(!role.allows(Action::Create, "other/x"));
        assert!(!role.allows(Action::Create, "app"));
        assert!(role.allows(Action::List, "db/main"));
        assert!(!role.allows(Action::List, "db/main2"));
        let all = Role::new("r", Grant::parse_many("*:*").unwrap()).unwrap();
        assert!(all.allows(Action::Destroy, "anything/at/all"));
    }

    #[test]
    fn bad_grants_are_rejected() {
        assert!(Grant::parse_many("create").is_err());
        assert!(Grant::parse_many("fly:app/*").unwrap_err().to_string().contains("unknown action"));
        assert!(Grant::parse_many("create:a*b").is_err());
        assert!(Grant::parse_many("create:").is_err());
        assert!(Role::new("bad name", vec![]).is_err());
        assert!(Role::new("ok", vec![]).is_err());
    }
}
