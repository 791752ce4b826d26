//! `vaultctl audit`: the audit log of the node addressed, and its hash chain.

use crate::clock::fmt_ms;
use clap::Subcommand;
use serde_json::json;
use tonic::Code;
use vault_client::{pb, Client};
use vault_core::model::audit_field;

use crate::commands::{addressed, rpc};
use crate::failure::Failure;
use crate::output::{outln, print_json, table};
use crate::util::parse_time;

#[derive(Subcommand)]
pub enum Cmd {
    /// Recent records, newest first: the newest --limit of those that match every filter
    /// given (each exact).
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only records about this secret.
        #[arg(long)]
        secret: Option<String>,
        /// Only records of this actor: a token's name, or a reader's address.
        #[arg(long)]
        actor: Option<String>,
        /// Only records of this action, e.g. secret.get, secret.put, token.create.
        #[arg(long)]
        action: Option<String>,
        /// Only records with this outcome: its status in words (ok, "permission denied",
        /// "not found", ...) or the whole outcome text.
        #[arg(long)]
        outcome: Option<String>,
        /// Only records at or after this: milliseconds since the epoch, or an age such as 30m,
        /// 12h or 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only records at or before this: milliseconds since the epoch, or an age such as 30m,
        /// 12h or 7d.
        #[arg(long)]
        until: Option<String>,
    },
    /// Check this node's audit hash chain; names the first missing or altered record and exits
    /// non-zero if there is one. Prints the head (`SEQ:MAC`): keep it off the node and pass it
    /// to `--extends` later to catch a rollback of the whole data directory. With --file,
    /// checks shipped records (JSON lines) off the node instead, with the audit key.
    Verify {
        /// A head printed by an earlier verify: the log must still grow from it.
        #[arg(long, value_name = "SEQ:MAC", conflicts_with = "file")]
        extends: Option<String>,
        /// A file of shipped records (VAULT_AUDIT_FILE, a socket's capture, syslog's MSG
        /// extracted), one JSON object per line; repeat for rotated files, oldest first.
        #[arg(long, value_name = "FILE")]
        file: Vec<std::path::PathBuf>,
        /// The audit key for --file, in VAULT_AUDIT_KEY_FILE's format; repeat for old keys.
        #[arg(long, value_name = "FILE", requires = "file")]
        audit_key_file: Vec<std::path::PathBuf>,
    },
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        // `--file` needs no node: `main` runs it before connecting (`audit_file::verify`).
        Cmd::Verify { extends, .. } => {
            let extends = extends.unwrap_or_default();
            let r = rpc!(c, addressed(c), admin.verify_audit, pb::VerifyAuditRequest { extends }).await?;
            if json {
                print_json(json!({
                    "ok": r.ok, "problem": r.problem, "checked": r.checked, "legacy": r.legacy,
                    "unverifiable": r.unverifiable, "first_seq": r.first_seq, "last_seq": r.last_seq,
                    "head": r.head,
                }));
            } else {
                let span = match (r.first_seq, r.last_seq) {
                    (Some(a), Some(b)) => format!("records {a} to {b}"),
                    _ => "no records".into(),
                };
                outln!(
                    "{span}: {} checked, {} from before chaining, {} under retired keys this node no longer holds",
                    r.checked,
                    r.legacy,
                    r.unverifiable
                );
                if !r.head.is_empty() {
                    outln!("head: {}", r.head);
                }
                if r.ok {
                    outln!("audit chain intact");
                }
            }
            if r.ok {
                Ok(())
            } else {
                Err(Failure::status(Code::DataLoss, format!("audit chain broken: {}", r.problem)))
            }
        }
        Cmd::List { limit, secret, actor, action, outcome, since, until } => {
            let since_ms = since.as_deref().map(|s| parse_time("--since", s)).transpose()?.unwrap_or(0);
            let until_ms = until.as_deref().map(|s| parse_time("--until", s)).transpose()?;
            let secret = secret.unwrap_or_default();
            let req = pb::ListAuditRequest { limit, secret, since_ms, actor, action, outcome, until_ms };
            let r = rpc!(c, addressed(c), admin.list_audit, req).await?;
            if json {
                print_json(json!(r
                    .records
                    .iter()
                    .map(|a| json!({
                        "seq": a.seq, "time_ms": a.time_ms, "node_id": a.node_id, "actor": a.actor,
                        "client_ip": a.client_ip, "action": a.action, "secret": a.secret, "outcome": a.outcome,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                table(
                    &["TIME", "NODE", "ACTOR", "CLIENT", "ACTION", "SECRET", "OUTCOME"],
                    r.records
                        .into_iter()
                        .map(|a| {
                            // Client-supplied text: escaped, so nothing reaches the terminal raw.
                            let safe = |s: &str| audit_field(s, usize::MAX);
                            vec![
                                fmt_ms(a.time_ms),
                                a.node_id.to_string(),
                                safe(&a.actor),
                                safe(&a.client_ip),
                                safe(&a.action),
                                safe(&a.secret),
                                safe(&a.outcome),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
    }
}
