//! The settings of the node's newer features, each parsed on its own: durations, the disk
//! free-space limit, the console, scheduled backups and the audit sinks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::{BackupConfig, RawConfig, S3Config};
use crate::audit_ship::{Framing, SinkConfig, Target};

impl RawConfig {
    /// A duration such as `90s`, `15m` or `8h` (at least a second).
    pub(super) fn duration(&self, key: &str, default: Duration) -> anyhow::Result<Duration> {
        match self.get(key) {
            None => Ok(default),
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) if d >= Duration::from_secs(1) => Ok(d),
                Ok(_) => bail!("{key}={s:?} must be at least 1s"),
                Err(e) => bail!("{key}={s:?} is not a duration such as 90s, 15m or 8h: {e}"),
            },
        }
    }

    pub(super) fn disk_limit(&self) -> anyhow::Result<crate::disk::DiskLimit> {
        let percent = self.parse::<f64>("VAULT_DISK_MIN_FREE_PERCENT", 2.0)?;
        if !(0.0..=50.0).contains(&percent) {
            bail!("VAULT_DISK_MIN_FREE_PERCENT={percent} must be between 0 and 50");
        }
        let mb = self.parse::<u64>("VAULT_DISK_MIN_FREE_MB", 512)?;
        Ok(crate::disk::DiskLimit { min_free_bytes: mb.saturating_mul(1 << 20), min_free_percent: percent })
    }

    /// The console's settings; `None` unless `VAULT_UI_ADDR` is set.
    pub(super) fn ui(&self) -> anyhow::Result<Option<crate::console::UiConfig>> {
        let Some(addr) = self.get("VAULT_UI_ADDR") else { return Ok(None) };
        let addr = addr.parse().map_err(|e| anyhow!("VAULT_UI_ADDR={addr:?} is not host:port: {e}"))?;
        let ui = crate::console::UiConfig {
            addr,
            session_idle: self.duration("VAULT_UI_SESSION_IDLE", Duration::from_secs(15 * 60))?,
            session_max: self.duration("VAULT_UI_SESSION_MAX", Duration::from_secs(8 * 3600))?,
            logins_per_min: self.parse::<u32>("VAULT_UI_LOGIN_RATE", 10)?.max(1),
            insecure: self.flag("VAULT_UI_INSECURE")?,
        };
        ui.check_transport(self.get("VAULT_TLS_CERT").is_some())?;
        Ok(Some(ui))
    }

    /// `VAULT_BACKUP_*`.
    pub(super) fn backup(&self) -> anyhow::Result<BackupConfig> {
        let every =
            self.get("VAULT_BACKUP_EVERY").map(|_| self.duration("VAULT_BACKUP_EVERY", Duration::ZERO)).transpose()?;
        let max_age = self
            .get("VAULT_BACKUP_MAX_AGE")
            .map(|_| self.duration("VAULT_BACKUP_MAX_AGE", Duration::ZERO))
            .transpose()?;
        let dir = self.get("VAULT_BACKUP_DIR").map(PathBuf::from);
        let s3 = self.get("VAULT_BACKUP_S3_BUCKET").map(|bucket| S3Config {
            bucket: bucket.to_string(),
            prefix: self.get("VAULT_BACKUP_S3_PREFIX").unwrap_or_default().to_string(),
        });
        if dir.is_some() && s3.is_some() {
            bail!("set VAULT_BACKUP_DIR or VAULT_BACKUP_S3_BUCKET, not both");
        }
        if every.is_some() && dir.is_none() && s3.is_none() {
            bail!("VAULT_BACKUP_EVERY needs a destination: VAULT_BACKUP_DIR or VAULT_BACKUP_S3_BUCKET");
        }
        Ok(BackupConfig { every, dir, keep: self.parse("VAULT_BACKUP_KEEP", 0)?, max_age, s3 })
    }

    /// The audit sinks, each with its `_REQUIRED` switch (which needs its sink set).
    pub(super) fn audit_sinks(&self) -> anyhow::Result<Vec<SinkConfig>> {
        let sinks = [
            ("file", "VAULT_AUDIT_FILE", "VAULT_AUDIT_FILE_REQUIRED", Framing::Lines),
            ("socket", "VAULT_AUDIT_SOCKET", "VAULT_AUDIT_SOCKET_REQUIRED", Framing::Lines),
            ("syslog", "VAULT_AUDIT_SYSLOG", "VAULT_AUDIT_SYSLOG_REQUIRED", Framing::Syslog),
        ];
        let mut out = Vec::new();
        for (name, key, required_key, framing) in sinks {
            let required = self.flag(required_key)?;
            let Some(value) = self.get(key) else {
                if required {
                    bail!("{required_key} is set but {key} is not");
                }
                continue;
            };
            let target = match name {
                "file" => Target::File(PathBuf::from(value)),
                _ => Target::parse_socket(value).map_err(|e| anyhow!("{key}: {e}"))?,
            };
            out.push(SinkConfig { name, target, framing, required });
        }
        Ok(out)
    }
}
