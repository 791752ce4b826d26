//! Installing a checked backup through Raft: `RestoreBegin`, the records in chunks streamed
//! from the file, `RestoreCommit`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::Status;
use vault_core::keys::DataKey;
use vault_raft::backup_check::{BackupChecker, BackupItem};
use vault_raft::snapshot_file::{read_backup, FamilyRecord};
use vault_raft::{Command, CommandResponse, StoreError};

use super::check::Checked;
use super::{refused, CHUNK_BYTES};
use crate::auth::caller::Caller;
use crate::error::ApiError;
use crate::vault::Vault;

/// Chunks of records read ahead of the proposals.
const READ_AHEAD: usize = 2;

/// Proposes the backup at `path` (already checked) through Raft; returns how many records of
/// each family the commit installed (`SM_CFS` order). The file is read again, record by record
/// (never whole in memory), and its MAC checked again on the way: should it differ from what
/// was checked, the restore stops before its commit and nothing live changes.
pub(super) async fn stage(
    vault: &Arc<Vault>,
    caller: &Caller,
    path: &Path,
    checked: &Checked,
) -> Result<Vec<u64>, ApiError> {
    let id = rand::random::<u64>();
    let total = checked.records;
    tracing::info!(restore = format!("{id:016x}"), records = total, "restoring a backup through Raft");
    vault.write_ok(caller, Command::RestoreBegin { id, records: total }).await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<FamilyRecord>>(READ_AHEAD);
    let (at, key, max_record) = (path.to_path_buf(), DataKey::from_slice(checked.mac.expose())?, checked.max_record);
    let reading = tokio::task::spawn_blocking(move || read_chunks(at, &key, max_record, tx));
    let mut seq = 0;
    let mut sent = 0u64;
    while let Some(records) = rx.recv().await {
        sent += records.len() as u64;
        vault.write_ok(caller, Command::RestoreChunk { id, seq, records }).await?;
        seq += 1;
    }
    match reading.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(Status::internal(format!("reading the backup to restore failed: {e}")).into()),
    }
    if sent != total {
        return Err(refused(format!("the file changed while it was restored ({sent} of {total} records)")));
    }
    let counts = match vault.write_ok(caller, Command::RestoreCommit { id }).await? {
        CommandResponse::Restored { records } => records,
        other => return Err(Status::internal(format!("unexpected reply to a restore: {other:?}")).into()),
    };
    tracing::info!(restore = format!("{id:016x}"), "backup restored");
    Ok(counts)
}

/// Reads the records a restore installs into chunks of at most [`CHUNK_BYTES`] (or one record,
/// if larger: at most `max_record`), so that no `RestoreChunk` outgrows a Raft message.
fn read_chunks(
    path: PathBuf,
    key: &DataKey,
    max_record: usize,
    tx: tokio::sync::mpsc::Sender<Vec<FamilyRecord>>,
) -> Result<(), ApiError> {
    let file = std::fs::File::open(path).map_err(StoreError::from)?;
    let mut checker = BackupChecker::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let stopped = || StoreError::Corrupt("the restore stopped".into());
    let read = read_backup(file, key, max_record, |record| {
        match checker.record(&record) {
            Ok(BackupItem::Ignored) => return Ok(()),
            Ok(_) => {}
            Err(why) => return Err(StoreError::Corrupt(why)),
        }
        if bytes + record.size() > CHUNK_BYTES && !chunk.is_empty() {
            tx.blocking_send(std::mem::take(&mut chunk)).map_err(|_| stopped())?;
            bytes = 0;
        }
        bytes += record.size();
        chunk.push(record);
        Ok(())
    });
    match read {
        Ok(_) => {}
        Err(StoreError::Corrupt(why)) => return Err(refused(why)),
        Err(e) => return Err(e.into()),
    }
    checker.finish().map_err(refused)?;
    if !chunk.is_empty() {
        tx.blocking_send(chunk).map_err(|_| ApiError::from(stopped()))?;
    }
    Ok(())
}
