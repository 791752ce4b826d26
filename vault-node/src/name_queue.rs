//! Writes to one secret name queue on the node that seals them, one at a time. A version is
//! sealed into its value (AAD `name:version`), so concurrent writers to one name on one node
//! would otherwise race for the same version number and all but one would have to re-seal;
//! queued, each seals for the version after the previous one's. Writes through other nodes can
//! still take a version first; the writer then re-seals (see `Vault::put_secret`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tonic::Status;

/// Writers waiting for one name beyond which new ones are told to retry later.
pub const MAX_WAITING_PER_NAME: usize = 1024;

#[derive(Default)]
pub struct NameQueue {
    names: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// This writer's turn for a name; the next writer's turn starts when it is dropped.
pub struct Turn {
    _guard: OwnedMutexGuard<()>,
    slot: Arc<AsyncMutex<()>>,
    name: String,
    names: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

impl NameQueue {
    /// Waits for `name`'s turn. RESOURCE_EXHAUSTED when too many writers already wait.
    pub async fn turn(&self, name: &str) -> Result<Turn, Status> {
        let slot = {
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            let slot = names.entry(name.to_string()).or_default().clone();
            // The map holds one reference, each writer (waiting or writing) one more.
            if Arc::strong_count(&slot) > MAX_WAITING_PER_NAME + 1 {
                return Err(Status::resource_exhausted(format!(
                    "more than {MAX_WAITING_PER_NAME} writes to {name} are waiting on this node; retry shortly"
                )));
            }
            slot
        };
        let guard = slot.clone().lock_owned().await;
        Ok(Turn { _guard: guard, slot, name: name.to_string(), names: self.names.clone() })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this turn (its slot and its guard) hold the slot: nobody waits,
        // forget the name.
        if Arc::strong_count(&self.slot) == 3 {
            names.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_one_at_a_time_per_name_and_names_are_forgotten() {
        let q = NameQueue::default();
        let a = q.turn("x").await.unwrap();
        let other = q.turn("y").await.unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), q.turn("x")).await;
        assert!(waiting.is_err(), "x is taken");
        drop(a);
        let b = q.turn("x").await.unwrap();
        drop((b, other));
        assert!(q.names.lock().unwrap().is_empty());
    }
}
