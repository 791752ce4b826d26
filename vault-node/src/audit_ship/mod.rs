//! Audit shipping: each configured sink (`VAULT_AUDIT_FILE`, `VAULT_AUDIT_SOCKET`,
//! `VAULT_AUDIT_SYSLOG`) has a shipper that reads this node's own audit log after the sink's
//! durable cursor ([`cursor`]) and sends the records, as JSON lines carrying their chain
//! position and MAC ([`vault_raft::audit_shipped`]).
//!
//! - **Never ahead of the log, never a gap**: a record is shipped only once it is in the
//!   node's log, in sequence order; a sink that is down is caught up from the cursor when it
//!   returns. The cursor moves only after the sink took the records.
//! - **At least once**: after a crash between a send and the cursor's write, or when a stream
//!   breaks, records are sent again (those sent on a connection in the [`RESEND_WINDOW`]
//!   before it broke, which the peer may not have read). A repeat is the same line (same
//!   `seq`, same MAC): receivers drop it by `seq`, as `vaultctl audit verify --file` does.
//! - **Fail-closed per sink** (`VAULT_AUDIT_<SINK>_REQUIRED=true`): while the sink is down or
//!   more than `VAULT_AUDIT_SINK_MAX_LAG` records behind, the node refuses client changes and
//!   reads with UNAVAILABLE "audit sink X is not taking records"
//!   ([`vault_raft::SinkBoard`]). Otherwise (the default) the node keeps working, logs one line
//!   when the sink fails and one when it takes records again, and the lag shows in
//!   `vault_audit_sink_lag_records` and `vault_audit_sink_up`.
//! - **Rotation**: the file sink reopens its path on SIGHUP. Records written before the
//!   reopen are in the renamed file, those after in the new one; none is lost, since the
//!   cursor only moves once a write is synced.

pub(crate) mod conn;
mod cursor;
pub(crate) mod syslog;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vault_raft::{AuditLog, SinkStatus};

use conn::Conn;
pub use conn::{Framing, Target};
use cursor::Cursor;

/// Records read from the log and sent in one go, at most.
const BATCH: usize = 512;
/// Records sent on a connection this long before it broke are sent again on the next one.
pub const RESEND_WINDOW: Duration = Duration::from_secs(2);
/// How often an idle stream is checked for a peer that went away.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Waits between attempts to reach a sink that is down: from the first, doubling to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One configured sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// `file`, `socket` or `syslog`: names the metrics' `sink` label, the cursor and the
    /// refusal.
    pub name: &'static str,
    pub target: Target,
    pub framing: Framing,
    /// `VAULT_AUDIT_<SINK>_REQUIRED`.
    pub required: bool,
}

/// Starts a shipper per sink; they stop when `stop` is cancelled. `hup` changes on every
/// SIGHUP (the file sink reopens its path). Fails if a cursor cannot be read, or (as before
/// shipping) if the file sink's file cannot be opened.
pub async fn spawn(
    log: &AuditLog,
    data_dir: &Path,
    sinks: &[SinkConfig],
    max_lag: u64,
    hup: watch::Receiver<u64>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use anyhow::Context;
    let mut tasks = Vec::new();
    for sink in sinks {
        let cursor =
            Cursor::open(data_dir, sink.name).with_context(|| format!("open the {} sink's cursor", sink.name))?;
        let pos = cursor.load().with_context(|| format!("read the {} sink's cursor", sink.name))?;
        if let Target::File(path) = &sink.target {
            Conn::open(&sink.target, sink.framing)
                .await
                .with_context(|| format!("open VAULT_AUDIT_FILE {}", path.display()))?;
        }
        let status = log.sinks().add(sink.name, sink.required);
        let shipper = Shipper {
            log: log.clone(),
            sink: sink.clone(),
            cursor,
            pos,
            status,
            max_lag,
            conn: None,
            recent: VecDeque::new(),
            failing: None,
            hostname: syslog::hostname(),
        };
        tracing::info!(sink = sink.name, target = %sink.target, required = sink.required, from = pos, "audit sink shipping");
        tasks.push(tokio::spawn(shipper.run(hup.clone(), stop.clone())));
    }
    Ok(tasks)
}

struct Shipper {
    log: AuditLog,
    sink: SinkConfig,
    cursor: Cursor,
    /// The last record sent (the cursor, or behind it after a broken stream).
    pos: u64,
    status: Arc<SinkStatus>,
    max_lag: u64,
    conn: Option<Conn>,
    /// First record of each batch sent on the current connection lately, and when.
    recent: VecDeque<(u64, Instant)>,
    /// Why the sink is not taking records, once that was logged.
    failing: Option<String>,
    hostname: String,
}

impl Shipper {
    async fn run(mut self, mut hup: watch::Receiver<u64>, stop: CancellationToken) {
        let mut newest = self.log.newest();
        let mut retry = RETRY_FIRST;
        // SIGHUPs handled so far (the idle wait below marks the channel seen when it wakes).
        let mut hups = *hup.borrow();
        while !stop.is_cancelled() {
            let now = *hup.borrow_and_update();
            if now != hups {
                hups = now;
                if matches!(self.sink.target, Target::File(_)) {
                    tracing::info!(sink = self.sink.name, "SIGHUP: reopening the audit file");
                    self.conn = None;
                }
            }
            let head = *newest.borrow_and_update();
            if self.pos > head {
                // A cursor past the log: the log was replaced under it. Ship what comes next.
                tracing::warn!(
                    sink = self.sink.name,
                    cursor = self.pos,
                    head,
                    "the audit sink's cursor is past the log's newest record; shipping from the log's newest"
                );
                self.pos = head;
            }
            let failed = match self.step(head).await {
                Ok(true) => {
                    retry = RETRY_FIRST;
                    continue;
                }
                Ok(false) => None,
                Err(e) => Some(e),
            };
            let head = *newest.borrow();
            match failed {
                None => {
                    self.recovered(head);
                    retry = RETRY_FIRST;
                    // Idle: wait for a record, a SIGHUP or the next probe.
                    tokio::select! {
                        _ = newest.changed() => {}
                        _ = hup.changed() => {}
                        _ = tokio::time::sleep(PROBE_EVERY) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                Some(e) => {
                    self.failed(&e, head);
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.cancelled() => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Connects if need be and sends the next batch: `Ok(true)` if it sent one, `Ok(false)`
    /// when there was nothing to send (and the sink is still there).
    async fn step(&mut self, head: u64) -> Result<bool, String> {
        if self.conn.as_ref().is_some_and(|c| !c.alive()) {
            self.broken();
            return Err("the peer closed the connection".into());
        }
        if self.conn.is_none() {
            let c = Conn::open(&self.sink.target, self.sink.framing)
                .await
                .map_err(|e| format!("connect to {}: {e}", self.sink.target))?;
            self.conn = Some(c);
            self.recent.clear();
        }
        if head <= self.pos {
            return Ok(false);
        }
        let (log, after) = (self.log.clone(), self.pos);
        let batch = tokio::task::spawn_blocking(move || log.shipped_after(after, BATCH))
            .await
            .map_err(|e| format!("read the audit log: {e}"))?
            .map_err(|e| format!("read the audit log: {e}"))?;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            // Nothing after the cursor any more: retention removed it.
            self.pos = head;
            return Ok(true);
        };
        let (first, last) = (first.record.seq, last.record.seq);
        if first > after + 1 && after > 0 {
            tracing::error!(
                sink = self.sink.name,
                from = after + 1,
                to = first - 1,
                "audit records were removed by retention before they were shipped: the sink will show a gap"
            );
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        if let Err(e) = conn.send(&batch, self.sink.framing, &self.hostname).await {
            self.broken();
            return Err(format!("send to {}: {e}", self.sink.target));
        }
        let now = Instant::now();
        self.recent.push_back((first, now));
        while self.recent.front().is_some_and(|(_, t)| now.duration_since(*t) > RESEND_WINDOW) {
            self.recent.pop_front();
        }
        self.pos = last;
        let cursor = self.cursor.clone();
        tokio::task::spawn_blocking(move || cursor.store(last))
            .await
            .map_err(|e| format!("store the cursor: {e}"))?
            .map_err(|e| format!("store the cursor after record {last}: {e}"))?;
        self.recovered(self.log_head());
        Ok(true)
    }

    fn log_head(&self) -> u64 {
        *self.log.newest().borrow()
    }

    /// The connection broke: drop it, and send again what it may not have delivered.
    fn broken(&mut self) {
        self.conn = None;
        let now = Instant::now();
        if let Some((first, _)) = self.recent.iter().find(|(_, t)| now.duration_since(*t) <= RESEND_WINDOW) {
            self.pos = self.pos.min(first.saturating_sub(1));
        }
        self.recent.clear();
    }

    fn failed(&mut self, why: &str, head: u64) {
        self.log.sinks().set(&self.status, false, self.pos, head, self.max_lag);
        if self.failing.is_none() {
            let effect = if self.sink.required {
                "changes and reads are refused until it does (VAULT_AUDIT_*_REQUIRED)"
            } else {
                "records stay in the node's log and are shipped when it returns"
            };
            tracing::warn!(sink = self.sink.name, target = %self.sink.target, error = %why, "audit sink is not taking records; {effect}");
            self.failing = Some(why.to_string());
        }
    }

    fn recovered(&mut self, head: u64) {
        let lag = head.saturating_sub(self.pos);
        self.log.sinks().set(&self.status, true, self.pos, head, self.max_lag);
        if self.failing.take().is_some() {
            tracing::info!(sink = self.sink.name, target = %self.sink.target, behind = lag, "audit sink takes records again");
        }
    }
}
