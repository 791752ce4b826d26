use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line (tracing-subscriber's json), for log shippers.
    Json,
}

/// Logs to stderr, filtered by `VAULT_LOG` (or `RUST_LOG`), as text or JSON lines, without
/// openraft's line per failed call to a peer ([`PeerRetryNoise`]).
pub fn init(filter: &str, format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let base = tracing_subscriber::registry().with(filter).with(PeerRetryNoise);
    let fmt = || tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => base.with(fmt().with_ansi(std::io::stderr().is_terminal())).try_init(),
        LogFormat::Json => base.with(fmt().json()).try_init(),
    };
}

/// openraft logs every failed call to a peer, at WARN or ERROR, several lines each time, and
/// retries many times a second while the peer is down (200 and more ERROR lines a node for a
/// five-second outage). Those events are dropped here; the transport logs the first failure
/// per peer, a summary now and then, and the recovery instead (vault-raft's
/// `transport::peer_failures`). Storage errors and everything else openraft says stay.
pub struct PeerRetryNoise;

/// The messages of openraft's per-call failure events (0.9), by level: replication, its
/// backoff and progress (WARN); the failed call itself, leadership confirmation for reads,
/// and vote requests (ERROR). openraft logs a storage error during replication as
/// "error replication to target=" at ERROR: that one stays.
const RETRY_WARNINGS: &[&str] =
    &["error replication to target=", "backoff mode: drain events without processing them", "update progress error"];
const RETRY_ERRORS: &[&str] =
    &["RPCError", "timeout while confirming leadership for read request", "while requesting vote"];

impl PeerRetryNoise {
    fn is_retry_noise(target: &str, level: Level, message: &str) -> bool {
        if !target.starts_with("openraft") {
            return false;
        }
        match level {
            Level::WARN => RETRY_WARNINGS.iter().any(|m| message.contains(m)),
            Level::ERROR => RETRY_ERRORS.iter().any(|m| message.contains(m)) || message == "timeout",
            _ => false,
        }
    }
}

/// The `message` field of an event.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for PeerRetryNoise {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("openraft") || *meta.level() > Level::WARN {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        !Self::is_retry_noise(meta.target(), *meta.level(), &message.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects the messages of the events that get through.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
            let mut m = Message::default();
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }

    #[test]
    fn openraft_retry_lines_are_dropped_and_the_rest_kept() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(PeerRetryNoise).with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "openraft::replication", err = "unreachable", "RPCError");
            tracing::warn!(target: "openraft::replication", error = "x", "error replication to target={}", 2);
            tracing::error!(target: "openraft::core::raft_core", target = 2, error = "x", "timeout");
            tracing::error!(target: "openraft::replication", error = "disk", "error replication to target={}", 2);
            tracing::error!(target: "openraft::core::raft_core", "quit RaftCore::main on error");
            tracing::info!(target: "openraft::replication", "RPCError");
            tracing::error!(target: "vault_raft::transport", "RPCError");
        });
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            ["error replication to target=2", "quit RaftCore::main on error", "RPCError", "RPCError"],
            "a storage error at ERROR, openraft's other errors, and other targets stay"
        );
    }
}
