//! `vaultctl reader`: reader rules and reader client certificates.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::rpc;
use crate::failure::Failure;
use crate::output::{outln, print_json, table};

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a rule: clients at --cidr, or presenting a certificate named --cert-cn, may read
    /// the names --grant matches. Once any rule exists, every read needs one.
    Create {
        name: String,
        /// Client address or network (10.0.1.0/24, ::1); repeat for more.
        #[arg(long = "cidr", value_name = "CIDR")]
        cidrs: Vec<String>,
        /// Common name of a client certificate (signed by the node's VAULT_TLS_CLIENT_CA).
        #[arg(long = "cert-cn", value_name = "CN")]
        cert_cns: Vec<String>,
        /// Secret name pattern: exact, prefix ending in `*`, or `*`; repeat for more.
        #[arg(long = "grant", value_name = "PATTERN", required = true)]
        grants: Vec<String>,
        /// Replace the rule if it exists.
        #[arg(long)]
        replace: bool,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Mint a reader client certificate for CN into --out: reader-<CN>.pem and .key, signed by
    /// reader-ca.pem (created there on first use; point VAULT_TLS_CLIENT_CA at it).
    Cert {
        cn: String,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

/// What it means that no reader rule is in force.
pub const NO_READER_RULE: &str = "rules stay required once in force, so no read is allowed until a rule is created \
     (a rule with --cidr 0.0.0.0/0 --cidr ::/0 --grant '*' leaves VAULT_ALLOWED_IPS alone to decide)";

/// `reader cert`: needs no server.
pub fn cert(cn: &str, out: &Path, days: i64) -> Result<(), Failure> {
    for path in crate::certs::mint_reader(out, cn, days)? {
        outln!("wrote {}", path.display());
    }
    Ok(())
}

fn reader_json(r: &pb::ReaderInfo) -> serde_json::Value {
    json!({
        "name": r.name, "cidrs": r.cidrs, "cert_cns": r.cert_cns, "grants": r.grants,
        "created_at_ms": r.created_at_ms,
    })
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    let show = |readers: Vec<pb::ReaderInfo>| {
        table(
            &["NAME", "CIDRS", "CERT CNS", "GRANTS"],
            readers
                .into_iter()
                .map(|r| vec![r.name, r.cidrs.join(" "), r.cert_cns.join(" "), r.grants.join(" ")])
                .collect(),
        );
    };
    match cmd {
        Cmd::Create { name, cidrs, cert_cns, grants, replace } => {
            rpc!(
                c,
                Route::Write,
                admin.create_reader,
                pb::CreateReaderRequest { name: name.clone(), cidrs, cert_cns, grants, replace }
            )
            .await?;
            if json {
                print_json(json!({"name": name, "created": true}));
            } else {
                outln!("reader {name} created");
            }
        }
        Cmd::List => {
            let readers = rpc!(c, Route::Write, admin.list_readers, pb::ListReadersRequest {}).await?.readers;
            if json {
                print_json(json!(readers.iter().map(reader_json).collect::<Vec<_>>()));
            } else {
                show(readers);
            }
        }
        Cmd::Get { name } => {
            let r = rpc!(c, Route::Write, admin.get_reader, pb::GetReaderRequest { name }).await?;
            if json {
                print_json(reader_json(&r));
            } else {
                show(vec![r]);
            }
        }
        Cmd::Delete { name } => {
            rpc!(c, Route::Write, admin.delete_reader, pb::DeleteReaderRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "deleted": true}));
            } else {
                outln!("reader {name} deleted");
            }
            // Rules stay required with none left: every read is refused; say so.
            if rpc!(c, Route::Write, admin.list_readers, pb::ListReadersRequest {})
                .await
                .is_ok_and(|r| r.readers.is_empty())
            {
                eprintln!("warning: no reader rule is left: {NO_READER_RULE}");
            }
        }
        // Handled before connecting.
        Cmd::Cert { .. } => {}
    }
    Ok(())
}
