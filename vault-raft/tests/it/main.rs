//! Storage tests against real RocksDB files in temporary directories.

mod apply_semantics;
mod conformance;
mod snapshots;
