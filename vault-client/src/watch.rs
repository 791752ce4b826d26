//! [`Client::watch`]: a stream of secret changes that outlives the node it is connected to.
//!
//! The server sends changes in commit order, every event of one revision (Raft log index) in
//! one message, and a message's `revision` says that everything up to it was sent. So the
//! stream keeps the last revision received and, when its node goes away (transport error,
//! `UNAVAILABLE`, end of stream, or silence longer than the idle limit), subscribes again on
//! another node with `after_revision` = that revision, backing off between rounds: nothing is
//! missed and nothing comes twice (events at or below the last revision are dropped, should
//! a node ever resend them). A revision the cluster no longer keeps ends the stream with
//! [`Error::Compacted`]; refusals (permission, bad request) end it with their error.
//!
//! Started with `after_revision` 0 ("from now"), the stream has no revision to resume from
//! until the first message arrives (the server sends one as soon as it is subscribed).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, Inner, Route};
use crate::error::{Error, Result};
use crate::pb;

/// First pause before subscribing again after every node failed; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Silence after which a node is taken as gone (the server sends progress while idle).
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(15);

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A new version was written.
    Put,
    /// A version was soft-deleted.
    Delete,
    Undelete,
    /// A version was destroyed for good.
    Destroy,
    /// The rotation policy wrote a new version.
    Rotation,
    /// The secret and all its versions were removed (version 0).
    Remove,
    /// A restore replaced the store: read every watched secret again (name empty).
    Reset,
    /// A kind this client does not know (a newer server).
    Other(i32),
}

impl ChangeKind {
    fn from_wire(v: i32) -> ChangeKind {
        match pb::ChangeKind::try_from(v) {
            Ok(pb::ChangeKind::Put) => ChangeKind::Put,
            Ok(pb::ChangeKind::Delete) => ChangeKind::Delete,
            Ok(pb::ChangeKind::Undelete) => ChangeKind::Undelete,
            Ok(pb::ChangeKind::Destroy) => ChangeKind::Destroy,
            Ok(pb::ChangeKind::Rotation) => ChangeKind::Rotation,
            Ok(pb::ChangeKind::Remove) => ChangeKind::Remove,
            Ok(pb::ChangeKind::Reset) => ChangeKind::Reset,
            _ => ChangeKind::Other(v),
        }
    }

    /// Lower-case name (`put`, `rotation`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Put => "put",
            ChangeKind::Delete => "delete",
            ChangeKind::Undelete => "undelete",
            ChangeKind::Destroy => "destroy",
            ChangeKind::Rotation => "rotation",
            ChangeKind::Remove => "remove",
            ChangeKind::Reset => "reset",
            ChangeKind::Other(_) => "unknown",
        }
    }
}

/// One change of one secret (never its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub version: u64,
    pub kind: ChangeKind,
    /// The cluster-wide revision (Raft log index) of the change.
    pub revision: u64,
}

/// One message of the watch: the events of one or more revisions, and the revision up to
/// which everything was sent (resume from here). No events: progress only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    pub revision: u64,
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct WatchRequest {
    /// Exact names.
    pub names: Vec<String>,
    /// Name prefixes ("" covers every name).
    pub prefixes: Vec<String>,
    /// Resume after this revision (0: changes from now on).
    pub after_revision: u64,
    /// Reconnect when a node sends nothing for this long (default [`DEFAULT_IDLE_LIMIT`]).
    pub idle_limit: Option<Duration>,
}

/// The stream [`Client::watch`] returns. Dropping it ends the subscription.
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchBatch>>,
    task: JoinHandle<()>,
    node: Arc<Mutex<Option<String>>>,
}

impl Watch {
    /// The node the watch is subscribed to now (none while it is between nodes).
    pub fn node(&self) -> Option<String> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Stream for Watch {
    type Item = Result<WatchBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Watches `req.names` and `req.prefixes` from `req.after_revision`, across node loss
    /// (module doc). Must be called inside a Tokio runtime.
    pub fn watch(&self, req: WatchRequest) -> Watch {
        let (tx, rx) = mpsc::channel(64);
        let node = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(self.inner.clone(), req, tx, node.clone()));
        Watch { rx, task, node }
    }
}

/// Why one subscription ended.
enum End {
    /// The consumer is gone.
    Dropped,
    /// Try another node.
    NodeLost,
    /// Tell the consumer and stop.
    Fatal(Error),
}

async fn run(
    inner: Arc<Inner>,
    req: WatchRequest,
    tx: mpsc::Sender<Result<WatchBatch>>,
    current: Arc<Mutex<Option<String>>>,
) {
    let set_current = |url: Option<&str>| *current.lock().unwrap_or_else(|p| p.into_inner()) = url.map(str::to_string);
    let mut last = req.after_revision;
    let mut backoff = FIRST_BACKOFF;
    let idle = req.idle_limit.unwrap_or(DEFAULT_IDLE_LIMIT);
    loop {
        for node in inner.order(&Route::Read) {
            let wire = pb::WatchSecretsRequest {
                names: req.names.clone(),
                prefixes: req.prefixes.clone(),
                after_revision: last,
            };
            let mut stub = node.conn(&inner.settings.auth).secrets();
            let opened = tokio::select! {
                r = tokio::time::timeout(inner.settings.timeout, stub.watch_secrets(wire)) => r,
                _ = tx.closed() => return,
            };
            let end = match opened {
                Err(_) => End::NodeLost,
                Ok(Err(s)) => classify(Error::from_status(&node.url, s)),
                Ok(Ok(stream)) => {
                    set_current(Some(&node.url));
                    let end = follow(stream.into_inner(), &node.url, &tx, &mut last, &mut backoff, idle).await;
                    set_current(None);
                    end
                }
            };
            match end {
                End::Dropped => return,
                End::NodeLost => node.failed(),
                End::Fatal(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Passes one node's messages on until it fails; keeps `last` at the last revision passed.
async fn follow(
    mut stream: tonic::Streaming<pb::WatchSecretsResponse>,
    addr: &str,
    tx: &mpsc::Sender<Result<WatchBatch>>,
    last: &mut u64,
    backoff: &mut Duration,
    idle: Duration,
) -> End {
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(idle, stream.message()) => r,
            _ = tx.closed() => return End::Dropped,
        };
        let msg = match next {
            Err(_) | Ok(Ok(None)) => return End::NodeLost,
            Ok(Err(s)) => return classify(Error::from_status(addr, s)),
            Ok(Ok(Some(msg))) => msg,
        };
        *backoff = FIRST_BACKOFF;
        let Some(batch) = accept(msg, last) else { continue };
        if tx.send(Ok(batch)).await.is_err() {
            return End::Dropped;
        }
    }
}

/// The batch to pass on for `msg`, dropping anything at or below `last` (already passed);
/// advances `last`.
fn accept(msg: pb::WatchSecretsResponse, last: &mut u64) -> Option<WatchBatch> {
    let events: Vec<Event> = msg
        .events
        .into_iter()
        .filter(|e| e.revision > *last)
        .map(|e| Event { name: e.name, version: e.version, kind: ChangeKind::from_wire(e.kind), revision: e.revision })
        .collect();
    let top = events.iter().map(|e| e.revision).max().unwrap_or(0).max(msg.revision);
    if events.is_empty() && top <= *last {
        return None;
    }
    *last = top;
    Some(WatchBatch { events, revision: top })
}

/// Whether a failure means "try another node" or ends the watch.
fn classify(e: Error) -> End {
    match e {
        e if e.is_node_failure() => End::NodeLost,
        Error::ResourceExhausted(_) => End::NodeLost,
        Error::Server { code: tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled, .. } => {
            End::NodeLost
        }
        e => End::Fatal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, revision: u64) -> pb::WatchEvent {
        pb::WatchEvent { name: name.into(), version: 1, kind: pb::ChangeKind::Put as i32, revision }
    }

    #[test]
    fn resent_revisions_are_dropped_and_progress_advances() {
        let mut last = 10;
        let got = accept(pb::WatchSecretsResponse { events: vec![ev("a", 9), ev("b", 11)], revision: 11 }, &mut last);
        assert_eq!(got.map(|b| (b.events.len(), b.revision)), Some((1, 11)));
        assert_eq!(last, 11);
        // A stale progress message passes nothing.
        assert!(accept(pb::WatchSecretsResponse { events: vec![], revision: 7 }, &mut last).is_none());
        // Progress beyond the last event moves the resume point.
        let got = accept(pb::WatchSecretsResponse { events: vec![], revision: 20 }, &mut last);
        assert_eq!(got, Some(WatchBatch { events: vec![], revision: 20 }));
        assert_eq!(last, 20);
    }

    #[test]
    fn kinds_map_from_the_wire() {
        assert_eq!(ChangeKind::from_wire(pb::ChangeKind::Rotation as i32), ChangeKind::Rotation);
        assert_eq!(ChangeKind::from_wire(99), ChangeKind::Other(99));
        assert_eq!(ChangeKind::Reset.as_str(), "reset");
    }

    #[test]
    fn compaction_and_refusals_end_the_watch_node_loss_does_not() {
        assert!(matches!(
            classify(Error::Compacted { message: "compacted".into(), oldest: Some(4) }),
            End::Fatal(Error::Compacted { .. })
        ));
        assert!(matches!(classify(Error::PermissionDenied("no".into())), End::Fatal(_)));
        assert!(matches!(
            classify(Error::Transport { addr: "a".into(), message: "reset".into(), connected: true }),
            End::NodeLost
        ));
        assert!(matches!(classify(Error::NodeUnavailable { message: "x".into(), leader: None }), End::NodeLost));
        // A node cuts a consumer that fell behind; the stream resumes where it was.
        assert!(matches!(classify(Error::ResourceExhausted("slow".into())), End::NodeLost));
    }
}
