//! Whether this node takes new writes. The node's disk watcher says when free space falls
//! under its limit (and when it is back); until then the writes this node would store are
//! refused before they are proposed: a client write it receives, and on the leader every
//! write it would propose (forwarded ones too), with `RESOURCE_EXHAUSTED` naming the free
//! space and the limit. Reads, health and Raft traffic go on.

use std::sync::{Arc, RwLock};

/// Shared between the disk watcher, which sets it, and the write paths, which check it.
#[derive(Clone, Default, Debug)]
pub struct Room(Arc<RwLock<Option<String>>>);

impl Room {
    /// `Some(why)`: refuse writes, saying why; `None`: take them again.
    pub fn set_full(&self, why: Option<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// `Err(why)` while writes are refused.
    pub fn check(&self) -> Result<(), String> {
        match &*self.0.read().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}
