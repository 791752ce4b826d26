//! What a node keeps on disk: the Raft log (segment files, or RocksDB for a node held below
//! feature level 5, behind [`node_log::NodeLog`]) and the state machine's WAL upkeep; the
//! RocksDB stores join them as they are touched (STYLE: `vault-raft/src` in folders by role).

pub mod node_log;
pub mod raft_log;
pub mod state_wal;
