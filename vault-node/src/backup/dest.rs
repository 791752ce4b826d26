//! Where scheduled backups go: a local directory (written beside, fsynced, renamed), or an S3
//! bucket (one PutObject, atomic per object). Also the naming scheme
//! `vault-<cluster>-<yyyymmddThhmmssZ>-<index>.vbk` that tells this cluster's backups apart.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A failure at the destination. Messages name paths, buckets and keys, never file contents.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("S3 {op} {key}: {why}")]
    S3 { op: &'static str, key: String, why: String },
    #[error("{0} is larger than the {1} MiB a restore may take here (VAULT_RESTORE_MAX_MB)")]
    TooLarge(String, u64),
    #[error("no backup named {0} at the destination")]
    NotFound(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DestError + 'a {
    move |source| DestError::Io { what, path: path.display().to_string(), source }
}

/// A scheduled backup's name, parsed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackupName {
    /// `yyyymmddThhmmssZ` (sorts as time), then the applied index.
    pub stamp: String,
    pub index: u64,
    pub name: String,
}

impl BackupName {
    /// The name of a backup of cluster `cluster` taken at `created_ms` holding `index`.
    pub fn new(cluster: &str, created_ms: u64, index: u64) -> BackupName {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms);
        let rfc = humantime::format_rfc3339_seconds(at).to_string();
        let stamp: String = rfc.chars().filter(|c| *c != '-' && *c != ':').collect();
        BackupName { name: format!("vault-{cluster}-{stamp}-{index}.vbk"), stamp, index }
    }

    /// `name` if it is a backup of cluster `cluster` by this scheme (anything else, including
    /// other clusters' backups and temporary files, is `None`).
    pub fn parse(cluster: &str, name: &str) -> Option<BackupName> {
        let rest = name.strip_prefix("vault-")?.strip_prefix(cluster)?.strip_prefix('-')?.strip_suffix(".vbk")?;
        let (stamp, index) = rest.split_once('-')?;
        let ok = stamp.len() == 16
            && stamp.as_bytes()[8] == b'T'
            && stamp.ends_with('Z')
            && stamp.chars().enumerate().all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit());
        let digits = !index.is_empty() && index.len() <= 20 && index.chars().all(|c| c.is_ascii_digit());
        if !ok || !digits {
            return None;
        }
        Some(BackupName { stamp: stamp.to_string(), index: index.parse().ok()?, name: name.to_string() })
    }

    /// `name` if it is a backup by this scheme of any cluster, with that cluster's id. Listing
    /// and restoring by name take these: after a master-key rotation a new cluster (started
    /// under the current key) has another id than the backups of the cluster it replaces, and
    /// what decides whether a backup is this cluster's is its MAC, under the master key, not
    /// its name. (Retention touches only this cluster's own names.)
    pub fn parse_any(name: &str) -> Option<(String, BackupName)> {
        let cluster = name.strip_prefix("vault-")?.get(..12)?;
        if !cluster.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            return None;
        }
        Some((cluster.to_string(), BackupName::parse(cluster, name)?))
    }

    /// When it was taken (ms since the epoch), from the name.
    pub fn created_ms(&self) -> u64 {
        let s = &self.stamp;
        let rfc = format!("{}-{}-{}T{}:{}:{}Z", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15]);
        humantime::parse_rfc3339(&rfc)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// The cluster id in backup names: 12 hex digits of SHA-256 of the cluster's first master key
/// id (stable across rotations; a cluster restored under the same key keeps it). Key ids are
/// not secret (`vaultctl kms status` shows them).
pub fn cluster_id(first_key_id: &str) -> String {
    let digest = Sha256::digest(first_key_id.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// One object or file at the destination.
pub struct Entry {
    pub name: String,
    pub size: u64,
}

/// A backup destination.
pub enum Destination {
    Dir(PathBuf),
    #[cfg(feature = "aws")]
    S3(super::s3::S3Dest),
}

impl Destination {
    /// As shown to operators: `dir:PATH` or `s3://BUCKET/PREFIX`.
    pub fn describe(&self) -> String {
        match self {
            Destination::Dir(d) => format!("dir:{}", d.display()),
            #[cfg(feature = "aws")]
            Destination::S3(s) => s.describe(),
        }
    }

    /// Writes `file` (from its start) as `name`, all or nothing; returns its size.
    pub async fn put(&self, name: &str, file: std::fs::File) -> Result<u64, DestError> {
        match self {
            Destination::Dir(dir) => {
                let (dir, name) = (dir.clone(), name.to_string());
                blocking(move || put_local(&dir, &name, file)).await
            }
            #[cfg(feature = "aws")]
            Destination::S3(s) => s.put(name, file).await,
        }
    }

    /// Copies backup `name` into `to`, refusing it past `max_bytes`.
    pub async fn fetch(&self, name: &str, to: &Path, max_bytes: u64) -> Result<(), DestError> {
        match self {
            Destination::Dir(dir) => {
                let (from, to) = (dir.join(name), to.to_path_buf());
                let name = name.to_string();
                blocking(move || {
                    // Only a regular file, never through a link (a link to a FIFO or a device
                    // would hang or fill the scratch directory), and without blocking on open.
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut src = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                        .open(&from)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => DestError::NotFound(name.clone()),
                            _ => io("open", &from)(e),
                        })?;
                    let meta = src.metadata().map_err(io("stat", &from))?;
                    if !meta.is_file() {
                        return Err(DestError::NotFound(name));
                    }
                    let size = meta.len();
                    if size > max_bytes {
                        return Err(DestError::TooLarge(name, max_bytes >> 20));
                    }
                    let mut dst = std::fs::File::create(&to).map_err(io("create", &to))?;
                    std::io::copy(&mut src.by_ref().take(max_bytes), &mut dst).map_err(io("copy to", &to))?;
                    Ok(())
                })
                .await
            }
            #[cfg(feature = "aws")]
            Destination::S3(s) => s.fetch(name, to, max_bytes).await,
        }
    }

    /// Every file or object at the destination (of any name; callers filter).
    pub async fn list(&self) -> Result<Vec<Entry>, DestError> {
        match self {
            Destination::Dir(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    let read = match std::fs::read_dir(&dir) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                        other => other.map_err(io("list", &dir))?,
                    };
                    let mut out = Vec::new();
                    for entry in read {
                        let entry = entry.map_err(io("list", &dir))?;
                        let Ok(name) = entry.file_name().into_string() else { continue };
                        let meta = entry.metadata().map_err(io("stat", &entry.path()))?;
                        if meta.is_file() {
                            out.push(Entry { name, size: meta.len() });
                        }
                    }
                    Ok(out)
                })
                .await
            }
            #[cfg(feature = "aws")]
            Destination::S3(s) => s.list().await,
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), DestError> {
        match self {
            Destination::Dir(dir) => {
                let path = dir.join(name);
                blocking(move || match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path)(e)),
                    _ => Ok(()),
                })
                .await
            }
            #[cfg(feature = "aws")]
            Destination::S3(s) => s.delete(name).await,
        }
    }

    /// Removes temporary files of this cluster's that a crashed writer left, once they are
    /// older than `older_than` (a writer that is still going is never that slow).
    pub async fn sweep_partials(&self, cluster: &str, older_than: std::time::Duration) {
        #[cfg_attr(not(feature = "aws"), allow(irrefutable_let_patterns))]
        let Destination::Dir(dir) = self
        else {
            return;
        };
        let (dir, prefix) = (dir.clone(), format!(".vault-{cluster}-"));
        let _ = blocking(move || {
            for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
                if name.starts_with(&prefix) && name.contains(".tmp-") && old.is_some_and(|a| a > older_than) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(())
        })
        .await;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DestError> + Send + 'static,
) -> Result<T, DestError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(DestError::Io { what: "run", path: String::new(), source: std::io::Error::other(e.to_string()) }),
    }
}

/// Copies `file` to `.NAME.tmp-RANDOM` in `dir` (owner-only), fsyncs it, renames it to `name`
/// and fsyncs the directory: `name` is whole or absent, whatever crashes when.
fn put_local(dir: &Path, name: &str, mut file: std::fs::File) -> Result<u64, DestError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("create directory", dir))?;
    let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
    let fin = dir.join(name);
    let result = (|| {
        file.seek(SeekFrom::Start(0)).map_err(io("rewind the backup for", &tmp))?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        let size = std::io::copy(&mut file, &mut out).map_err(io("write", &tmp))?;
        out.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &fin).map_err(io("rename into place", &fin))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync directory", dir))?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_belong_to_one_cluster() {
        let n = BackupName::new("0123456789ab", 1_765_157_408_123, 42);
        assert_eq!(n.name, "vault-0123456789ab-20251208T013008Z-42.vbk");
        let back = BackupName::parse("0123456789ab", &n.name).expect("parses");
        assert_eq!((back.index, back.created_ms()), (42, 1_765_157_408_000));
        assert!(BackupName::parse("ffffffffffff", &n.name).is_none());
        assert!(BackupName::parse("0123456789ab", &format!(".{}.tmp-00", n.name)).is_none());
        assert!(BackupName::parse("0123456789ab", "vault-0123456789ab-../x-1.vbk").is_none());
        assert!(BackupName::parse("0123456789ab", "vault-0123456789ab-20251208T013008Z-1/2.vbk").is_none());

        // Any cluster's name, for listing and restoring after a key rotation; nothing else.
        let (cluster, any) = BackupName::parse_any(&n.name).expect("any cluster's name parses");
        assert_eq!((cluster.as_str(), any.index), ("0123456789ab", 42));
        assert!(BackupName::parse_any("vault-0123456789AB-20251208T013008Z-42.vbk").is_none());
        assert!(BackupName::parse_any("vault-../../etc/p-20251208T013008Z-42.vbk").is_none());
        assert!(BackupName::parse_any("../etc/passwd").is_none());
        assert!(BackupName::parse_any(&format!(".{}.tmp-00", n.name)).is_none());
    }

    #[tokio::test]
    async fn a_directory_gives_only_regular_files_never_through_a_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = Destination::Dir(dir.path().to_path_buf());
        let to = dir.path().join("scratch");
        std::fs::write(dir.path().join("real.vbk"), b"backup bytes").expect("write");
        d.fetch("real.vbk", &to, 1 << 20).await.expect("a regular file is fetched");
        assert_eq!(std::fs::read(&to).expect("read"), b"backup bytes");
        std::os::unix::fs::symlink(dir.path().join("real.vbk"), dir.path().join("link.vbk")).expect("symlink");
        assert!(d.fetch("link.vbk", &to, 1 << 20).await.is_err(), "a link is not followed");
        let fifo = dir.path().join("fifo.vbk");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), d.fetch("fifo.vbk", &to, 1 << 20)).await;
        assert!(matches!(got, Ok(Err(_))), "a FIFO is refused at once");
    }
}
