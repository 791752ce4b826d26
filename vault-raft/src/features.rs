//! Feature levels: which commands a cluster may replicate while it is upgraded one node at a
//! time.
//!
//! Every build understands the commands of its [`FEATURE_LEVEL`] and below. A node reports the
//! level it understands (capped by `VAULT_MAX_FEATURE_LEVEL`, which holds a cluster back so the
//! older build can still be rolled back to). The cluster's level lives in the replicated state
//! (absent: [`BASE_LEVEL`]); the leader raises it to the lowest level every member reports,
//! never beyond, and never lowers it. A command above the cluster's level is refused on the
//! leader before it is proposed, so no member is ever sent a command it cannot decode. A node
//! that is sent one anyway (a member started on an older build after the level was raised)
//! cannot decode the message: it refuses it, names its level in the log, and applies nothing
//! past it until it is upgraded.

use crate::command::Command;

/// Commands and formats from before feature levels: everything up to `DestroySecret`.
pub const BASE_LEVEL: u32 = 1;

/// What this build understands. 2: backup restore (`RestoreBegin`, `RestoreChunk`,
/// `RestoreCommit`, the staging family in snapshots) and `SetFeatureLevel`. 3: reader rules and
/// scheduled rotation (their commands, and the `readers` and `rotation` families in snapshots).
/// 4: hook bindings (`BindHook`, `UnbindHook`, the `hook_bindings` family in snapshots), and
/// reader rules stay required once in force ([`READERS_REQUIRED_LEVEL`]). 5: the Raft log in
/// segment files ([`SEGMENT_LOG_LEVEL`]).
pub const FEATURE_LEVEL: u32 = 5;

/// From this level a node keeps its Raft log in segment files, moving it out of RocksDB at its
/// first start (`storage::raft_log::migrate`). Nothing replicated changes (the wire carries
/// the same messages whatever the storage, and snapshots are state machine files), so no
/// command needs this level and the cluster's level gates nothing here: what the level guards
/// is the node-local rollback promise of `VAULT_MAX_FEATURE_LEVEL`. A node capped below it keeps
/// the RocksDB log and moves nothing, so the previous build can still open its directory; a
/// moved directory refuses to open on an older build. Members on either log mix freely.
pub const SEGMENT_LOG_LEVEL: u32 = 5;

/// Whether a node whose own cap is `max_feature_level` (`None`: this build's level) runs on the
/// segment log.
pub fn segment_log_allowed(max_feature_level: Option<u32>) -> bool {
    max_feature_level.is_none_or(|cap| cap >= SEGMENT_LOG_LEVEL)
}

/// From this level, applying a reader-rule change (or a restore, or the raise to this level
/// with rules in force) marks rules required for good: a level-3 build would decide reads
/// without them once the last rule is gone.
pub const READERS_REQUIRED_LEVEL: u32 = 4;

impl Command {
    /// The cluster feature level this command needs.
    pub fn feature_level(&self) -> u32 {
        match self {
            // A chunk of a backup made at level 3 carries reader rules or rotation policies:
            // a node that cannot store those must never be sent it, or replicas would stage
            // different records and diverge at the commit.
            Command::RestoreChunk { records, .. } if records.iter().any(|r| r.family >= LEVEL_4_FAMILIES) => 4,
            Command::RestoreChunk { records, .. } if records.iter().any(|r| r.family >= LEVEL_3_FAMILIES) => 3,
            Command::RestoreBegin { .. }
            | Command::RestoreChunk { .. }
            | Command::RestoreCommit { .. }
            | Command::SetFeatureLevel { .. } => 2,
            Command::PutReader { .. }
            | Command::DeleteReader { .. }
            | Command::SetRotation { .. }
            | Command::ClearRotation { .. }
            | Command::RotateNow { .. }
            | Command::RotationDone { .. }
            | Command::RotationFailed { .. } => 3,
            Command::BindHook { .. } | Command::UnbindHook { .. } => 4,
            Command::AsCaller { cmd, .. } => cmd.feature_level(),
            Command::Batch(cmds) => cmds.iter().map(Command::feature_level).max().unwrap_or(BASE_LEVEL),
            _ => BASE_LEVEL,
        }
    }
}

/// Index into `SM_CFS` of the first family that level 3 added (`readers`, then `rotation`).
const LEVEL_3_FAMILIES: u8 = 7;
/// Index into `SM_CFS` of the first family that level 4 added (`hook_bindings`).
const LEVEL_4_FAMILIES: u8 = 9;

/// A level as a peer reported it: 0 (a build from before levels, which does not send one)
/// means [`BASE_LEVEL`].
pub fn reported(level: u32) -> u32 {
    level.max(BASE_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_need_what_they_wrap() {
        let restore = Command::RestoreCommit { id: 1 };
        assert_eq!(restore.feature_level(), 2);
        let old = Command::DeleteRole { name: "r".into() };
        assert_eq!(old.feature_level(), BASE_LEVEL);
        let batch = Command::Batch(vec![old.clone(), restore].into());
        assert_eq!(batch.feature_level(), 2);
        assert_eq!(Command::Batch(vec![old].into()).feature_level(), BASE_LEVEL);
        assert_eq!(reported(0), BASE_LEVEL);
    }

    #[test]
    fn a_restore_chunk_with_newer_families_needs_their_level() {
        use crate::db::{CF_READERS, CF_ROTATION, CF_SECRETS, SM_CFS};
        use crate::snapshot_file::FamilyRecord;
        let idx = |f: &str| SM_CFS.iter().position(|x| *x == f).expect("family") as u8;
        assert_eq!(idx(CF_READERS), LEVEL_3_FAMILIES);
        let chunk = |family: &str| Command::RestoreChunk {
            id: 1,
            seq: 0,
            records: vec![FamilyRecord { family: idx(family), key: b"k".to_vec(), value: vec![] }],
        };
        assert_eq!(chunk(CF_SECRETS).feature_level(), 2);
        assert_eq!(chunk(CF_READERS).feature_level(), 3);
        assert_eq!(chunk(CF_ROTATION).feature_level(), 3);
        assert_eq!(idx(crate::db::CF_HOOK_BINDINGS), LEVEL_4_FAMILIES);
        assert_eq!(chunk(crate::db::CF_HOOK_BINDINGS).feature_level(), 4);
        let bind = Command::UnbindHook { hook: "h".into() };
        assert_eq!(bind.feature_level(), 4);
    }
}
