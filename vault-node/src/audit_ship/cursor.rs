//! A sink's cursor: the sequence number of the last record it took, in
//! `<data dir>/audit-sinks/<sink>.cursor`. Node-local (not replicated, not in backups): it
//! belongs with this node's own audit chain, in the same directory.
//!
//! Written after the sink took the records and replaced atomically (a temporary file, synced,
//! renamed, the directory synced), so after a crash it names a record the sink took: at worst
//! the records after it are sent again, never skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub(crate) struct Cursor {
    path: PathBuf,
}

impl Cursor {
    /// The cursor of sink `name` under `data_dir` (its folder is created here).
    pub fn open(data_dir: &Path, name: &str) -> std::io::Result<Cursor> {
        let dir = data_dir.join("audit-sinks");
        std::fs::create_dir_all(&dir)?;
        Ok(Cursor { path: dir.join(format!("{name}.cursor")) })
    }

    /// The last record shipped; 0 when none was.
    pub fn load(&self) -> std::io::Result<u64> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a number", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Records `seq` as shipped, durably.
    pub fn store(&self, seq: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("cursor.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{seq}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_starts_at_zero_and_keeps_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::open(dir.path(), "socket").unwrap();
        assert_eq!(c.load().unwrap(), 0);
        c.store(41).unwrap();
        c.store(42).unwrap();
        assert_eq!(Cursor::open(dir.path(), "socket").unwrap().load().unwrap(), 42);
        std::fs::write(dir.path().join("audit-sinks/socket.cursor"), "x").unwrap();
        assert!(c.load().is_err());
    }
}
