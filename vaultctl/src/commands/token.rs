//! `vaultctl token`: admin tokens.

use crate::clock::fmt_ms;
use clap::Subcommand;
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::rpc;
use crate::failure::Failure;
use crate::output::{outln, print_json, table};
use crate::util::parse_ttl;

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a token; prints the raw token once.
    Create {
        name: String,
        #[arg(long)]
        role: String,
        /// Lifetime: seconds, or a number with s, m, h or d.
        #[arg(long)]
        ttl: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Create { name, role, ttl } => {
            let ttl_secs = ttl.as_deref().map(parse_ttl).transpose()?.unwrap_or(0);
            let r = rpc!(c, Route::Write, admin.create_token, pb::CreateTokenRequest { name, role, ttl_secs }).await?;
            if json {
                print_json(json!({"name": r.name, "token": r.token, "expires_at_ms": r.expires_at_ms}));
            } else {
                outln!("{}", r.token);
            }
        }
        Cmd::List => {
            let r = rpc!(c, Route::Write, admin.list_tokens, pb::ListTokensRequest {}).await?;
            if json {
                print_json(json!(r.tokens.iter().map(|t| json!({
                    "name": t.name, "role": t.role, "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms,
                })).collect::<Vec<_>>()));
            } else {
                table(
                    &["NAME", "ROLE", "CREATED", "EXPIRES"],
                    r.tokens
                        .into_iter()
                        .map(|t| {
                            vec![
                                t.name,
                                t.role,
                                fmt_ms(t.created_at_ms),
                                t.expires_at_ms.map_or("never".into(), fmt_ms),
                            ]
                        })
                        .collect(),
                );
            }
        }
        Cmd::Revoke { name } => {
            rpc!(c, Route::Write, admin.revoke_token, pb::RevokeTokenRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "revoked": true}));
            }
        }
    }
    Ok(())
}
