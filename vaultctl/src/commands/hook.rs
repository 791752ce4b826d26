//! `vaultctl rotation hook`: which secret names each exec: rotation hook may rotate.

use clap::Subcommand;
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::rpc;
use crate::failure::Failure;
use crate::output::{outln, print_json, table};

#[derive(Subcommand)]
pub enum HooksCmd {
    /// Hook bindings: an exec: policy is accepted, and run, only for names its hook is bound to.
    #[command(subcommand)]
    Hook(Cmd),
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Bind HOOK (its path inside VAULT_ROTATION_HOOKS_DIR) to the names it may rotate;
    /// replaces its earlier binding.
    Bind {
        hook: String,
        /// Secret name patterns: exact, prefix ending in `*`, or `*`.
        #[arg(long = "names", value_name = "PATTERN", required = true, num_args = 1..)]
        names: Vec<String>,
    },
    List,
    /// Remove HOOK's binding: policies that name it stop running it.
    Unbind {
        hook: String,
    },
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Bind { hook, names } => {
            rpc!(c, Route::Write, admin.bind_hook, pb::BindHookRequest { hook: hook.clone(), names: names.clone() })
                .await?;
            if json {
                print_json(json!({"hook": hook, "names": names, "bound": true}));
            } else {
                outln!("hook {hook} bound to {}", names.join(" "));
            }
        }
        Cmd::List => {
            let bindings =
                rpc!(c, Route::Write, admin.list_hook_bindings, pb::ListHookBindingsRequest {}).await?.bindings;
            if json {
                let shown: Vec<_> = bindings
                    .iter()
                    .map(|b| json!({"hook": b.hook, "names": b.names, "created_at_ms": b.created_at_ms}))
                    .collect();
                print_json(json!(shown));
            } else {
                table(&["HOOK", "NAMES"], bindings.into_iter().map(|b| vec![b.hook, b.names.join(" ")]).collect());
            }
        }
        Cmd::Unbind { hook } => {
            rpc!(c, Route::Write, admin.unbind_hook, pb::UnbindHookRequest { hook: hook.clone() }).await?;
            if json {
                print_json(json!({"hook": hook, "unbound": true}));
            } else {
                outln!("hook {hook} unbound");
            }
        }
    }
    Ok(())
}
