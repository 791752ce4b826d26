use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A validated secret name: 1–255 bytes of `[A-Za-z0-9._/-]`, no leading `/`, no empty,
/// `.` or `..` segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(raw: &str) -> Result<Self, CoreError> {
        validate_name(raw)?;
        Ok(SecretName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The associated data that binds a ciphertext to this name and a version: `name:version`.
    pub fn aad(&self, version: u64) -> Vec<u8> {
        format!("{}:{}", self.0, version).into_bytes()
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_name(raw: &str) -> Result<(), CoreError> {
    let err = |why: &str| Err(CoreError::InvalidName(why.to_string()));
    if raw.is_empty() {
        return err("name must not be empty");
    }
    if raw.len() > MAX_NAME_LEN {
        return Err(CoreError::InvalidName(format!("name is {} bytes; at most {MAX_NAME_LEN} are allowed", raw.len())));
    }
    if let Some(c) = raw.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))) {
        return Err(CoreError::InvalidName(format!("character {c:?} is not allowed; use only A-Z a-z 0-9 . _ / -")));
    }
    if raw.starts_with('/') {
        return err("name must not start with '/'");
    }
    for segment in raw.split('/') {
        match segment {
            "" => return err("name must not contain an empty segment ('//' or a trailing '/')"),
            "." | ".." => return err("name must not contain a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "db/password", "app/x.y_z-1", "a/b/c", "..a", "a..b/c", &"x".repeat(255)] {
            assert!(SecretName::parse(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_invalid_names_with_the_rule() {
        let cases = [
            ("", "empty"),
            ("/abs", "start with '/'"),
            ("a//b", "empty segment"),
            ("a/", "empty segment"),
            ("a/../b", "'..'"),
            ("./a", "'.'"),
            ("a b", "character ' '"),
            ("a:b", "character ':'"),
            ("é", "character"),
        ];
        for (raw, why) in cases {
            let e = SecretName::parse(raw).expect_err(raw).to_string();
            assert!(e.contains(why), "{raw:?}: {e} should mention {why}");
        }
        let long = "x".repeat(256);
        assert!(SecretName::parse(&long).unwrap_err().to_string().contains("256 bytes"));
    }

    #[test]
    fn aad_is_name_colon_version() {
        let n = SecretName::parse("db/password").unwrap();
        assert_eq!(n.aad(3), b"db/password:3".to_vec());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Action, Grant};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Any string: parsing never panics, and what it accepts obeys every rule.
        #[test]
        fn names_parse_without_panics_and_accepted_names_obey_the_rules(raw in any::<String>()) {
            if let Ok(n) = SecretName::parse(&raw) {
                let s = n.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_NAME_LEN);
                prop_assert!(!s.starts_with('/'));
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')));
                prop_assert!(s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
            }
        }

        /// Strings made of name characters, to reach the segment rules often.
        #[test]
        fn grants_parse_without_panics_and_accepted_ones_can_match(raw in "[a-z./*-]{0,12}") {
            if let Ok(g) = Grant::new(Action::Create, &raw) {
                // An accepted pattern matches some valid name.
                let candidate = match raw.strip_suffix('*') {
                    Some("") => "x".to_string(),
                    Some(prefix) if prefix.ends_with('/') => format!("{prefix}x"),
                    Some(prefix) => format!("{prefix}x"),
                    None => raw.clone(),
                };
                prop_assert!(SecretName::parse(&candidate).is_ok(), "{raw} accepted, but {candidate} is no name");
                prop_assert!(g.matches(Action::Create, &candidate));
            }
        }
    }
}
