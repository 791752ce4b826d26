//! Scheduled rotation: a secret's policy (period and generator) and how far it has come.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Shortest period a policy may have.
pub const MIN_ROTATION_PERIOD_MS: u64 = 1000;
/// The longest rotation period: a hundred years (a due time past year 9999 has no calendar
/// form for people and tools to show).
pub const MAX_ROTATION_PERIOD_MS: u64 = 100 * 365 * 86_400_000;
/// Most random bytes a `random:` or `hex:` generator makes.
pub const MAX_GENERATED_BYTES: u16 = 4096;

/// What produces a secret's next value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generator {
    /// `random:N`: N random bytes, written as URL-safe base64 without padding.
    Random(u16),
    /// `hex:N`: N random bytes, written as lowercase hex (2N characters).
    Hex(u16),
    /// `exec:/path`: an executable in the node's hooks directory; it gets the current value on
    /// stdin and prints the next one on stdout.
    Exec(String),
}

impl Generator {
    pub fn is_exec(&self) -> bool {
        matches!(self, Generator::Exec(_))
    }
}

impl FromStr for Generator {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        let bad = |m: String| CoreError::InvalidArgument(m);
        let (kind, arg) = s
            .split_once(':')
            .ok_or_else(|| bad(format!("generator {s:?} must be random:N, hex:N or exec:/path/to/hook")))?;
        let bytes = || -> Result<u16, CoreError> {
            match arg.parse::<u16>() {
                Ok(n) if (1..=MAX_GENERATED_BYTES).contains(&n) => Ok(n),
                _ => Err(bad(format!("{kind}:N takes a byte count from 1 to {MAX_GENERATED_BYTES}, not {arg:?}"))),
            }
        };
        match kind {
            "random" => Ok(Generator::Random(bytes()?)),
            "hex" => Ok(Generator::Hex(bytes()?)),
            "exec" => {
                let ok = arg.starts_with('/')
                    && arg.len() <= 4096
                    && !arg.split('/').any(|seg| seg == "..")
                    && !arg.chars().any(char::is_control);
                if !ok {
                    return Err(bad(format!("exec:{arg:?} must be an absolute path without '..' segments")));
                }
                Ok(Generator::Exec(arg.to_string()))
            }
            other => Err(bad(format!("unknown generator {other:?}; expected random:N, hex:N or exec:/path"))),
        }
    }
}

impl fmt::Display for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Generator::Random(n) => write!(f, "random:{n}"),
            Generator::Hex(n) => write!(f, "hex:{n}"),
            Generator::Exec(p) => write!(f, "exec:{p}"),
        }
    }
}

/// A secret's rotation policy and its progress, replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    pub every_ms: u64,
    pub generator: Generator,
    /// When the leader next rotates (or retries) it.
    pub next_due_ms: u64,
    pub last_rotated_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Why the last attempt failed (never holds a value).
    pub last_error: Option<String>,
    /// Attempts made, successful or not: how `secret rotate` knows its attempt has run.
    pub attempts: u64,
}

impl RotationPolicy {
    pub fn new(every_ms: u64, generator: Generator, now_ms: u64) -> Result<Self, CoreError> {
        if every_ms < MIN_ROTATION_PERIOD_MS {
            return Err(CoreError::InvalidArgument(format!(
                "a rotation period must be at least {} s",
                MIN_ROTATION_PERIOD_MS / 1000
            )));
        }
        if every_ms > MAX_ROTATION_PERIOD_MS {
            return Err(CoreError::InvalidArgument("a rotation period must be at most 100 years".into()));
        }
        Ok(RotationPolicy {
            every_ms,
            generator,
            next_due_ms: now_ms.saturating_add(every_ms),
            last_rotated_ms: None,
            last_attempt_ms: None,
            failures: 0,
            last_error: None,
            attempts: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_parse_and_print_back() {
        for g in ["random:32", "hex:16", "exec:/etc/vault/hooks/db"] {
            assert_eq!(g.parse::<Generator>().unwrap().to_string(), g);
        }
        for bad in ["random", "random:0", "hex:99999", "exec:relative", "exec:/a/../b", "dice:6", "random:x"] {
            assert!(bad.parse::<Generator>().is_err(), "{bad}");
        }
        assert!(RotationPolicy::new(10, Generator::Random(8), 0).is_err(), "too short a period");
        assert!(RotationPolicy::new(MAX_ROTATION_PERIOD_MS + 1, Generator::Random(8), 0).is_err(), "too long a period");
        assert!(RotationPolicy::new(MAX_ROTATION_PERIOD_MS, Generator::Random(8), 0).is_ok());
        assert_eq!(RotationPolicy::new(5000, Generator::Random(8), 100).unwrap().next_due_ms, 5100);
    }
}
