//! The reader rules the watches of one node check their events against, loaded once per
//! applied index and shared by every watch.
//!
//! Reader rules change only when an entry is applied, so the rules as of an applied index
//! never change. A watch asks for the rules with the applied index it read just before
//! (`WatchLog::applied`); the first to ask at an index loads them (one point lookup in
//! RocksDB when they did not change, see `StateReader::reader_rules`), every other watch
//! gets the same `Arc`. Rules loaded after the index was read are at least as new as it: a
//! watch never checks an event against rules older than the event, and a rule deleted
//! before an event's entry was applied stops that event.

use std::sync::{Arc, Mutex};

use vault_core::model::ReaderRules;

/// The rules last loaded, with the applied index they were loaded at (or after).
#[derive(Default)]
pub(crate) struct SharedRules {
    at: Mutex<Option<(u64, Arc<ReaderRules>)>>,
}

impl SharedRules {
    /// The rules as of `applied` or later: the shared ones when they were loaded at or after
    /// `applied`, otherwise `load`ed now (by one caller; the others wait and share them).
    pub(crate) fn get<E>(
        &self,
        applied: u64,
        load: impl FnOnce() -> Result<Arc<ReaderRules>, E>,
    ) -> Result<Arc<ReaderRules>, E> {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((loaded_at, rules)) = at.as_ref() {
            if *loaded_at >= applied {
                return Ok(rules.clone());
            }
        }
        let rules = load()?;
        *at = Some((applied, rules.clone()));
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use vault_core::model::ReaderRule;

    use super::*;

    fn rules(grant: &str) -> Arc<ReaderRules> {
        let rule = ReaderRule::new("r", &["127.0.0.1".into()], &[], &[grant.into()], 1).unwrap();
        Arc::new(ReaderRules::new(vec![rule]))
    }

    #[test]
    fn rules_are_loaded_once_per_applied_index_and_shared() {
        let shared = SharedRules::default();
        let loads = Cell::new(0);
        let load = |grant: &'static str| {
            let loads = &loads;
            move || -> Result<_, ()> {
                loads.set(loads.get() + 1);
                Ok(rules(grant))
            }
        };
        let first = shared.get(5, load("a/*")).unwrap();
        for _ in 0..1000 {
            let again = shared.get(5, load("never")).unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(loads.get(), 1, "one load for every watch at one applied index");
        // A caller that read an older index gets the newer rules, without a load.
        assert!(Arc::ptr_eq(&first, &shared.get(4, load("never")).unwrap()));
        assert_eq!(loads.get(), 1);
        // The index moved (perhaps a rule changed): loaded again, once.
        let moved = shared.get(6, load("b/*")).unwrap();
        assert!(!Arc::ptr_eq(&first, &moved));
        assert!(moved.iter().any(|r| r.grants_name("b/x")));
        assert!(Arc::ptr_eq(&moved, &shared.get(6, load("never")).unwrap()));
        assert_eq!(loads.get(), 2);
    }

    #[test]
    fn a_failed_load_is_returned_and_not_kept() {
        let shared = SharedRules::default();
        let kept = shared.get(3, || Ok::<_, &str>(rules("a/*"))).unwrap();
        assert_eq!(shared.get(4, || Err("rocksdb")).err(), Some("rocksdb"));
        // The next caller at that index loads again rather than sharing a failure.
        let loaded = shared.get(4, || Ok::<_, &str>(rules("b/*"))).unwrap();
        assert!(!Arc::ptr_eq(&kept, &loaded));
    }
}
