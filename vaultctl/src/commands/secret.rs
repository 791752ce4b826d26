//! `vaultctl secret`: values, versions and rotation policies.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::clock::fmt_ms;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::rpc;
use crate::failure::Failure;
use crate::output::{outln, print_json, table};
use crate::util::parse_ttl;

#[derive(Subcommand)]
pub enum Cmd {
    /// Write a new version; prints its number. The value comes from --value, --file or stdin.
    Put {
        name: String,
        #[arg(long, conflicts_with = "file", allow_hyphen_values = true)]
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Check-and-set: only if the current version is N (0 = must not exist).
        #[arg(long)]
        cas: Option<u64>,
        /// Keep at most this many versions.
        #[arg(long)]
        max_versions: Option<u32>,
    },
    /// Print a value, raw.
    Get {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Secret names and metadata (never values).
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Versions of a secret and their states.
    Versions { name: String },
    /// Soft-delete every version of a secret (or only --versions); `undelete` restores them.
    Delete(VersionsArg),
    /// Restore soft-deleted versions.
    Undelete(RequiredVersions),
    /// Purge versions' ciphertext and wrapped data key for good (--versions, or --all).
    Destroy(DestroyArgs),
    /// Scheduled rotation policies.
    #[command(subcommand)]
    Rotation(RotationCmd),
    /// Rotate now by the secret's policy (the leader runs it); prints the new version. Needs
    /// `rotate`.
    Rotate { name: String },
    /// Print each change of NAMEs and of names under each --prefix (REVISION KIND NAME
    /// VERSION, or one JSON object per line), never values, until interrupted. Resumes on
    /// another node when its node goes away; exits with `out of range` when --after-revision
    /// is older than the cluster keeps.
    Watch(crate::commands::watch::WatchArgs),
}

#[derive(Args)]
pub struct VersionsArg {
    name: String,
    /// Comma-separated versions, e.g. 1,2.
    #[arg(long, value_delimiter = ',')]
    versions: Vec<u64>,
}

#[derive(Args)]
pub struct RequiredVersions {
    name: String,
    #[arg(long, value_delimiter = ',', required = true)]
    versions: Vec<u64>,
}

#[derive(Args)]
pub struct DestroyArgs {
    name: String,
    /// Versions to destroy for good (needs `destroy`).
    #[arg(long, value_delimiter = ',', required_unless_present = "all", conflicts_with = "all")]
    versions: Vec<u64>,
    /// Destroy every version of the secret for good; its highest version number is kept.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
pub enum RotationCmd {
    /// Rotate NAME every --every (e.g. 30d, 12h) with --generator: random:N (N random bytes,
    /// URL-safe base64), hex:N (N random bytes, hex) or exec:/path (a hook in the leader's
    /// VAULT_ROTATION_HOOKS_DIR: gets the old value on stdin, prints the new one). Needs `rotate`.
    Set {
        name: String,
        #[arg(long)]
        every: String,
        #[arg(long)]
        generator: String,
    },
    /// The policy and its progress: next due, last rotation, failures and the last error.
    Get { name: String },
    /// Every policy on a name the token may list (under --prefix), in name order: period,
    /// generator, next due, failures and the last error.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Stop rotating NAME.
    Clear { name: String },
}

fn read_value(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    Ok(match (value, file) {
        (Some(v), _) => v.into_bytes(),
        (None, Some(f)) => std::fs::read(&f).with_context(|| format!("read --file {}", f.display()))?,
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("read the value from stdin")?;
            buf
        }
    })
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Watch(args) => return crate::commands::watch::run(c, args, json).await,
        Cmd::Put { name, value, file, cas, max_versions } => {
            let value = read_value(value, file)?;
            let req = pb::PutSecretRequest { name: name.clone(), value, expected_version: cas, max_versions };
            let r = rpc!(c, Route::Write, secrets.put_secret, req).await?;
            if json {
                print_json(json!({"name": name, "version": r.version}));
            } else {
                outln!("{}", r.version);
            }
        }
        Cmd::Get { name, version } => {
            let r =
                rpc!(c, Route::Read, secrets.get_secret, pb::GetSecretRequest { name, version: version.unwrap_or(0) })
                    .await?;
            if json {
                let value = match std::str::from_utf8(&r.value) {
                    Ok(s) => json!({"value": s}),
                    Err(_) => {
                        json!({"value_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &r.value)})
                    }
                };
                let mut obj = json!({"name": r.name, "version": r.version, "created_at_ms": r.created_at_ms});
                if let (Some(o), Some(v)) = (obj.as_object_mut(), value.as_object()) {
                    o.extend(v.clone());
                }
                print_json(obj);
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&r.value).context("write value to stdout")?;
                out.flush().context("write value to stdout")?;
            }
        }
        Cmd::List { prefix } => {
            let all = c.list(&prefix).await?;
            if json {
                print_json(json!(all
                    .iter()
                    .map(|s| json!({
                        "name": s.name, "current_version": s.current_version, "max_versions": s.max_versions,
                        "created_at_ms": s.created_at_ms, "updated_at_ms": s.updated_at_ms,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                table(
                    &["NAME", "VERSION", "MAX", "UPDATED"],
                    all.into_iter()
                        .map(|s| {
                            vec![
                                s.name,
                                s.current_version.to_string(),
                                s.max_versions.to_string(),
                                fmt_ms(s.updated_at_ms),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Cmd::Versions { name } => {
            let r = rpc!(c, Route::Read, secrets.list_versions, pb::ListVersionsRequest { name }).await?;
            if json {
                print_json(json!({
                    "name": r.name, "current_version": r.current_version, "max_versions": r.max_versions,
                    "versions": r.versions.iter().map(|v| json!({
                        "version": v.version, "state": v.state, "created_at_ms": v.created_at_ms,
                        "key_id": v.key_id, "rewrap_watermark_ms": v.rewrap_watermark_ms,
                        "ciphertext_sha256": v.ciphertext_sha256, "wrapped_dek_sha256": v.wrapped_dek_sha256,
                    })).collect::<Vec<_>>(),
                    "rotation": r.rotation.as_ref().map(rotation_json),
                }));
            } else {
                if let Some(rotation) = &r.rotation {
                    print_rotation(rotation);
                }
                table(
                    &["VERSION", "STATE", "CREATED", "KEY", "REWRAPPED"],
                    r.versions
                        .into_iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                v.state,
                                fmt_ms(v.created_at_ms),
                                v.key_id,
                                fmt_ms(v.rewrap_watermark_ms),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Cmd::Rotation(RotationCmd::Set { name, every, generator }) => {
            let every_secs = parse_ttl(&every)?;
            let r = rpc!(c, Route::Write, secrets.set_rotation, pb::SetRotationRequest { name, every_secs, generator })
                .await?;
            if json {
                print_json(rotation_json(&r));
            } else {
                print_rotation(&r);
            }
        }
        Cmd::Rotation(RotationCmd::Get { name }) => {
            let r = rpc!(c, Route::Read, secrets.get_rotation, pb::GetRotationRequest { name }).await?;
            if json {
                print_json(rotation_json(&r));
            } else {
                print_rotation(&r);
            }
        }
        Cmd::Rotation(RotationCmd::List { prefix }) => {
            let all = c.list_rotations(&prefix).await?;
            if json {
                print_json(json!(all.iter().map(rotation_json).collect::<Vec<_>>()));
            } else {
                let never = |ms: u64| if ms == 0 { "never".to_string() } else { fmt_ms(ms) };
                table(
                    &["NAME", "EVERY", "GENERATOR", "NEXT DUE", "LAST ROTATED", "FAILURES", "LAST ERROR"],
                    all.into_iter()
                        .map(|r| {
                            vec![
                                r.name,
                                format!("{} s", r.every_secs),
                                r.generator,
                                fmt_ms(r.next_due_ms),
                                never(r.last_rotated_ms),
                                r.failures.to_string(),
                                // A hook's words: escaped, so nothing reaches the terminal raw.
                                vault_core::model::audit_field(&r.last_error, usize::MAX),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Cmd::Rotation(RotationCmd::Clear { name }) => {
            rpc!(c, Route::Write, secrets.clear_rotation, pb::ClearRotationRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "cleared": true}));
            }
        }
        Cmd::Rotate { name } => {
            let r =
                rpc!(c, Route::Write, secrets.rotate_secret, pb::RotateSecretRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "version": r.version}));
            } else {
                outln!("{}", r.version);
            }
        }
        Cmd::Delete(VersionsArg { name, versions }) => {
            if versions.is_empty() {
                rpc!(
                    c,
                    Route::Write,
                    secrets.delete_secret,
                    pb::DeleteSecretRequest { name: name.clone(), destroy: false }
                )
                .await?;
                if json {
                    print_json(json!({"name": name, "deleted": true}));
                }
            } else {
                let r = rpc!(c, Route::Write, secrets.delete_versions, pb::VersionsRequest { name, versions }).await?;
                print_changed(&r.changed, json);
            }
        }
        Cmd::Undelete(RequiredVersions { name, versions }) => {
            let r = rpc!(c, Route::Write, secrets.undelete_versions, pb::VersionsRequest { name, versions }).await?;
            print_changed(&r.changed, json);
        }
        Cmd::Destroy(DestroyArgs { name, all: true, .. }) => {
            rpc!(c, Route::Write, secrets.delete_secret, pb::DeleteSecretRequest { name: name.clone(), destroy: true })
                .await?;
            if json {
                print_json(json!({"name": name, "destroyed": true}));
            }
        }
        Cmd::Destroy(DestroyArgs { name, versions, .. }) => {
            let r = rpc!(c, Route::Write, secrets.destroy_versions, pb::VersionsRequest { name, versions }).await?;
            print_changed(&r.changed, json);
        }
    }
    Ok(())
}

fn print_changed(changed: &[u64], json: bool) {
    if json {
        print_json(json!({"changed": changed}));
    } else {
        let list: Vec<String> = changed.iter().map(|v| v.to_string()).collect();
        outln!("changed: {}", if list.is_empty() { "none".to_string() } else { list.join(",") });
    }
}

fn rotation_json(r: &pb::RotationInfo) -> serde_json::Value {
    json!({
        "name": r.name, "every_secs": r.every_secs, "generator": r.generator, "next_due_ms": r.next_due_ms,
        "last_rotated_ms": r.last_rotated_ms, "last_attempt_ms": r.last_attempt_ms, "failures": r.failures,
        "last_error": r.last_error,
    })
}

/// The policy in words, for `rotation get` and `secret versions`.
fn print_rotation(r: &pb::RotationInfo) {
    let never = |ms: u64| if ms == 0 { "never".to_string() } else { fmt_ms(ms) };
    outln!("rotation: every {} s by {}, next due {}", r.every_secs, r.generator, fmt_ms(r.next_due_ms));
    outln!(
        "last rotated {}, last attempt {}, failures since: {}",
        never(r.last_rotated_ms),
        never(r.last_attempt_ms),
        r.failures
    );
    if !r.last_error.is_empty() {
        outln!("last error: {}", r.last_error);
    }
}
