//! A service that reads its database password from the vault and picks up a rotation without a
//! restart (`make test` runs it against a real cluster):
//!
//! ```sh
//! VAULT_ADDR=10.0.0.1:8200,10.0.0.2:8200,10.0.0.3:8200 cargo run --example follow
//! ```
//!
//! It watches `app/db` (`SECRET_NAME`) first and reads it once the watch is live, so no change
//! falls between the read and the watch; then every new version is read again and "used" (here:
//! its version is printed, never the value). Reads need no token (an allowlisted address or a
//! reader rule); the watch moves to another node when its node goes away.

use futures::StreamExt;
use vault_client::{ChangeKind, Client, Error, WatchRequest};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let name = std::env::var("SECRET_NAME").unwrap_or_else(|_| "app/db".to_string());
    let vault = Client::from_env()?;
    loop {
        let mut watch = vault.watch(WatchRequest { names: vec![name.clone()], ..WatchRequest::default() });
        let mut live = false;
        while let Some(batch) = watch.next().await {
            let batch = match batch {
                Ok(batch) => batch,
                // Changes were missed: watch anew, which reads the secret again.
                Err(Error::Compacted { .. }) => break,
                Err(e) => return Err(e),
            };
            let new_value = batch.events.iter().any(|e| {
                matches!(e.kind, ChangeKind::Put | ChangeKind::Rotation | ChangeKind::Undelete | ChangeKind::Reset)
            });
            if !live || new_value {
                live = true;
                let db = vault.get(&name).await?;
                // A real service would reconnect its database pool with db.value here.
                println!("using {} version {}", db.name, db.version);
            }
        }
    }
}
