//! `vaultctl role`: roles and their grants.

use clap::Subcommand;
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::rpc;
use crate::failure::Failure;
use crate::output::{print_json, table};

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a role from grants ACTION[,ACTION]:PATTERN.
    Create {
        name: String,
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Replace the role if it exists.
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
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    let show = |roles: Vec<pb::RoleInfo>| {
        if json {
            print_json(json!(roles
                .iter()
                .map(|r| json!({"name": r.name, "grants": r.grants, "builtin": r.builtin}))
                .collect::<Vec<_>>()));
        } else {
            table(
                &["NAME", "GRANTS", "BUILTIN"],
                roles.into_iter().map(|r| vec![r.name, r.grants.join(" "), r.builtin.to_string()]).collect(),
            );
        }
    };
    match cmd {
        Cmd::Create { name, grants, replace } => {
            rpc!(c, Route::Write, admin.create_role, pb::CreateRoleRequest { name: name.clone(), grants, replace })
                .await?;
            if json {
                print_json(json!({"name": name, "created": true}));
            }
        }
        Cmd::List => show(rpc!(c, Route::Write, admin.list_roles, pb::ListRolesRequest {}).await?.roles),
        Cmd::Get { name } => show(vec![rpc!(c, Route::Write, admin.get_role, pb::GetRoleRequest { name }).await?]),
        Cmd::Delete { name } => {
            rpc!(c, Route::Write, admin.delete_role, pb::DeleteRoleRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "deleted": true}));
            }
        }
    }
    Ok(())
}
