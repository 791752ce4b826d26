//! `vaultctl secret watch`: one line per change of the watched names and prefixes, until
//! interrupted. Follows the client's watch: when the node goes away it resumes on another
//! from the last revision received, so no change is missed or printed twice.

use clap::Args;
use futures::StreamExt;
use serde_json::json;
use vault_client::{Client, Event, WatchRequest};

use crate::failure::Failure;
use crate::output::outln;

// No doc comment: the help text is the doc comment of the `Watch` variant in secret.rs.
#[derive(Args)]
pub struct WatchArgs {
    /// Exact secret names to watch.
    pub names: Vec<String>,
    /// Watch every name under this prefix ("" for all); repeat for more.
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// Resume after this revision (the last one printed); 0: changes from now on.
    #[arg(long, default_value_t = 0)]
    pub after_revision: u64,
}

pub async fn run(c: &Client, args: WatchArgs, json: bool) -> Result<(), Failure> {
    let WatchArgs { names, prefixes, after_revision } = args;
    if names.is_empty() && prefixes.is_empty() {
        return Err(anyhow::anyhow!("name at least one secret or --prefix to watch").into());
    }
    let mut watch = c.watch(WatchRequest { names, prefixes, after_revision, idle_limit: None });
    while let Some(batch) = watch.next().await {
        for e in batch?.events {
            print_event(&e, json);
        }
    }
    Ok(())
}

/// `REVISION KIND NAME VERSION`, or one JSON object per line.
fn print_event(e: &Event, json: bool) {
    if json {
        let line = json!({"revision": e.revision, "kind": e.kind.as_str(), "name": e.name, "version": e.version});
        outln!("{line}");
    } else {
        outln!("{} {} {} {}", e.revision, e.kind.as_str(), e.name, e.version);
    }
}
