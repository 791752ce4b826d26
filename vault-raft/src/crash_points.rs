//! Fail points that crash the node between its storage steps, for the crash tests.
//!
//! Compiled in only with the `failpoints` feature (TiKV's `fail` crate); without it every
//! [`crash_point`] is an empty inline function and the crate is not a dependency. The test
//! builds get the feature (`tests/Cargo.toml`); `make run`, `make bench` and release builds of
//! `vault-node` do not (`vault-node --version` says `+failpoints` when it is in).
//!
//! The points sit in the windows a crash can hit between the Raft log and the state machine:
//!
//! - [`APPLY_BEFORE_WRITE`]: a batch of committed entries is synced in the Raft log (the apply
//!   has waited for the syncer) and nothing of it is in RocksDB yet. The restarted node must
//!   apply the batch from the log, once.
//! - [`APPLY_AFTER_WRITE`]: the batch's data, audit records, watch events and `last_applied`
//!   are in RocksDB (one unsynced write batch, so in its WAL in the page cache) and nothing
//!   else happened: no answer to the client, no reader told, no WAL sync. The restarted node
//!   must not apply the batch again.
//!
//! A node reads its points from the `FAILPOINTS` environment variable at start
//! ([`setup`], fail-rs's syntax: `name=action;name=action`). Besides fail-rs's own actions
//! (`sleep(ms)`, `pause`, `panic`, `print`, counts like `3*off->return`), `return` is the
//! crash: `return` crashes at the first batch that reaches the point, `return(N)` at the first
//! batch whose last log index is `N` or more. The crash is a `SIGKILL` the node sends itself,
//! after one line on stderr naming the point and the index: no destructor, no flush, no
//! shutdown hook runs, as in a crash or an OOM kill.

/// After the log sync a batch waits for, before the state machine writes anything of it.
pub const APPLY_BEFORE_WRITE: &str = "apply_before_write";
/// After the state machine's write of a batch, before anything else (answers, WAL sync).
pub const APPLY_AFTER_WRITE: &str = "apply_after_write";

/// Whether the points are compiled in.
pub const COMPILED_IN: bool = cfg!(feature = "failpoints");

/// Configures the points named in `FAILPOINTS`; they stay configured while the returned
/// scenario lives. Panics on a malformed `FAILPOINTS`, as fail-rs does: only test builds get
/// here, and a test that armed nothing must not pass.
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    if let Ok(points) = std::env::var("FAILPOINTS") {
        eprintln!("vault: fail points armed: {points}");
    }
    fail::FailScenario::setup()
}

/// The point `name`, reached by a batch whose last log index is `index`.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_point(name: &'static str, index: u64) {
    fail::fail_point!(name, |arg: Option<String>| {
        let from = match arg.as_deref().map(str::parse::<u64>) {
            None => 0,
            Some(Ok(from)) => from,
            Some(Err(_)) => panic!("fail point {name}: return({arg:?}) is not a log index"),
        };
        if index >= from {
            crash(name, index);
        }
    });
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &'static str, _index: u64) {}

#[cfg(feature = "failpoints")]
fn crash(name: &str, index: u64) -> ! {
    eprintln!("vault: fail point {name} crashes the node at log index {index}");
    // SAFETY: getpid and kill have no preconditions; SIGKILL ends the process here.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}
