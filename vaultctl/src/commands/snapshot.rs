//! `vaultctl snapshot`: backup and restore of the replicated state.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::fmt_ms;
use anyhow::{anyhow, Context};
use clap::Subcommand;
use serde_json::json;
use tonic::Request;
use vault_client::{pb, Client, Error, Route};

use crate::commands::{addressed, rpc};
use crate::failure::Failure;
use crate::output::{outln, print_json};
use crate::reader::NO_READER_RULE;

#[derive(Subcommand)]
pub enum Cmd {
    /// Write a consistent backup (ciphertext, wrapped data keys, token hashes, roles) to FILE.
    Save { file: PathBuf },
    /// Replace the cluster's secrets, tokens and roles with a backup, through Raft: FILE, or
    /// `--name NAME`, a scheduled backup at the node's destination (see `snapshot list`).
    Restore {
        #[arg(required_unless_present = "name")]
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "file")]
        name: Option<String>,
    },
    /// The scheduled backups at the node's destination (VAULT_BACKUP_DIR or S3): name, size,
    /// time, index; with `--verify`, each read back and checked as a restore would.
    List {
        #[arg(long)]
        verify: bool,
    },
}

/// How long a backup or restore may take end to end.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Save { file } => {
            use std::os::unix::fs::OpenOptionsExt;
            let (addr, mut stream) = c
                .call(Route::Read, pb::SaveSnapshotRequest {}, |c, r| async move {
                    let mut req = Request::new(r);
                    req.set_timeout(SNAPSHOT_TIMEOUT);
                    let addr = c.addr().to_string();
                    c.admin().save_snapshot(req).await.map(|r| r.map(|s| (addr, s)))
                })
                .await?;
            // Written beside the target and renamed into place once complete: FILE is never
            // a partial backup. Owner-only: it holds wrapped keys and token hashes.
            let tmp = file.with_extension(format!("partial-{}", std::process::id()));
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("create {}", tmp.display()))?;
            let mut bytes = 0u64;
            let received = async {
                while let Some(chunk) = stream.message().await.map_err(|s| Error::from_status(&addr, s))? {
                    out.write_all(&chunk.data).with_context(|| format!("write {}", tmp.display()))?;
                    bytes += chunk.data.len() as u64;
                }
                out.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
                std::fs::rename(&tmp, &file).with_context(|| format!("rename to {}", file.display()))?;
                Ok::<_, Failure>(())
            }
            .await;
            if received.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            received?;
            if json {
                print_json(json!({ "file": file.display().to_string(), "bytes": bytes }));
            } else {
                outln!("wrote {} ({bytes} bytes)", file.display());
            }
            Ok(())
        }
        Cmd::List { verify } => list(c, verify, json).await,
        Cmd::Restore { file: None, name: Some(name) } => {
            let rules_before = rules_in_force(c).await;
            let r = c
                .call(Route::Write, pb::RestoreBackupRequest { name }, |c, r| async move {
                    let mut req = Request::new(r);
                    req.set_timeout(SNAPSHOT_TIMEOUT);
                    c.admin().restore_backup(req).await
                })
                .await?;
            print_restored(&r, json, rules_before);
            Ok(())
        }
        Cmd::Restore { file: None, name: None } => Err(anyhow!("name a FILE or --name NAME").into()),
        Cmd::Restore { file: Some(file), .. } => {
            // Streamed from the file, never read whole; a read error ends the upload (which the
            // node then refuses as truncated) and is reported here.
            let source = std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?;
            let read_error = std::sync::Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
            let seen = read_error.clone();
            let chunks = futures::stream::unfold(Some(source), move |source| {
                let seen = seen.clone();
                async move {
                    let mut source = source?;
                    let mut data = Vec::with_capacity(256 << 10);
                    match Read::by_ref(&mut source).take(256 << 10).read_to_end(&mut data) {
                        Ok(0) => None,
                        Ok(_) => Some((pb::SnapshotChunk { data }, Some(source))),
                        Err(e) => {
                            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            None
                        }
                    }
                }
            });
            // Sent once, to the node addressed: a stream read from the file cannot be replayed.
            let upload = std::sync::Arc::new(std::sync::Mutex::new(Some(chunks)));
            // A restore puts back the backup's reader rules: none, if it predates them.
            let rules_before = rules_in_force(c).await;
            let answer = c
                .call(addressed(c), (), |c, ()| {
                    let chunks = upload.lock().unwrap_or_else(|p| p.into_inner()).take();
                    async move {
                        let chunks = chunks.ok_or_else(|| tonic::Status::internal("the backup was already sent"))?;
                        let mut req = Request::new(chunks);
                        req.set_timeout(SNAPSHOT_TIMEOUT);
                        c.admin().restore_snapshot(req).await
                    }
                })
                .await;
            if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(anyhow!("read {}: {e}", file.display()).into());
            }
            let r = answer?;
            print_restored(&r, json, rules_before);
            Ok(())
        }
    }
}

/// Reader rules in force now: a restore puts back the backup's, none if it predates them.
async fn rules_in_force(c: &Client) -> usize {
    rpc!(c, Route::Write, admin.list_readers, pb::ListReadersRequest {}).await.map_or(0, |r| r.readers.len())
}

fn print_restored(r: &pb::RestoreSnapshotResponse, json: bool, rules_before: usize) {
    if json {
        print_json(json!({
            "secrets": r.secrets, "versions": r.versions, "tokens": r.tokens, "roles": r.roles,
            "reader_rules": r.reader_rules, "rotation_policies": r.rotation_policies,
            "source_node_id": r.source_node_id, "source_applied_index": r.source_applied_index,
            "created_ms": r.created_ms,
        }));
    } else {
        outln!(
            "restored {} secrets, {} versions, {} tokens, {} roles, {} reader rules, {} rotation policies \
             from a backup of node {} at index {} ({})",
            r.secrets,
            r.versions,
            r.tokens,
            r.roles,
            r.reader_rules,
            r.rotation_policies,
            r.source_node_id,
            r.source_applied_index,
            fmt_ms(r.created_ms)
        );
    }
    if rules_before > 0 && r.reader_rules == 0 {
        eprintln!("warning: the backup holds no reader rule ({rules_before} were in force): {NO_READER_RULE}");
    }
}

/// `snapshot list`: asked of the leader, whose destination the backups go to.
async fn list(c: &Client, verify: bool, json: bool) -> Result<(), Failure> {
    let r = c
        .call(Route::Write, pb::ListBackupsRequest { verify }, |c, r| async move {
            let mut req = Request::new(r);
            req.set_timeout(SNAPSHOT_TIMEOUT);
            c.admin().list_backups(req).await
        })
        .await?;
    let bad = r.backups.iter().filter(|b| verify && !b.verified).count();
    if json {
        let backups: Vec<_> = r
            .backups
            .iter()
            .map(|b| {
                let mut v = json!({
                    "name": b.name, "size_bytes": b.size_bytes, "created_ms": b.created_ms,
                    "applied_index": b.applied_index,
                });
                if verify {
                    v["verified"] = json!(b.verified);
                    v["error"] = json!(b.error);
                }
                v
            })
            .collect();
        print_json(json!({ "destination": r.destination, "backups": backups }));
    } else {
        outln!("{} backups at {}", r.backups.len(), r.destination);
        for b in &r.backups {
            let check = match (verify, b.verified) {
                (false, _) => String::new(),
                (true, true) => "  verified".to_string(),
                (true, false) => format!("  FAILED: {}", b.error),
            };
            outln!("{}  {} bytes  {}  index {}{check}", b.name, b.size_bytes, fmt_ms(b.created_ms), b.applied_index);
        }
    }
    if bad > 0 {
        return Err(Failure::status(tonic::Code::DataLoss, format!("{bad} backups failed their checks")));
    }
    Ok(())
}
