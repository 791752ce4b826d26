//! What a node keeps on disk. For now only the segment-file Raft log lives here; the RocksDB
//! stores join it as they are touched (STYLE: `vault-raft/src` in folders by role).

pub mod raft_log;
pub mod state_wal;
