//! Parsing of durations and times given on the command line.

use anyhow::{anyhow, bail};

/// A point in time given to `flag` (`--since`, `--until`): milliseconds since the epoch, or
/// an age (`30m`, `12h`, `7d`) before now.
pub fn parse_time(flag: &str, s: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let age_ms = parse_ttl(s)
        .map_err(|_| anyhow!("{flag} {s:?}: expected milliseconds since the epoch, or an age such as 30m, 12h or 7d"))?
        .saturating_mul(1000);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Ok(now.saturating_sub(age_ms))
}

/// A duration in seconds: `90`, `90s`, `30m`, `12h`, `7d`.
pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| anyhow!("duration {s:?}: expected e.g. 3600, 30m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {s:?}: unit must be s, m, h or d"),
    };
    let secs = n.checked_mul(mult).ok_or_else(|| anyhow!("duration {s:?} is too long"))?;
    if secs == 0 {
        bail!("a duration must be more than zero");
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
