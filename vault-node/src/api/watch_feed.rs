//! One watch's stream: the backlog from the history table, then live events, without gaps or
//! repeats.
//!
//! A task (the [`Feed`]) produces messages into a small bounded channel; the response stream
//! takes them from it. The feed subscribed to the live broadcast before it read anything, so
//! every event applied after its start reaches it one way or the other; it keeps `pos`, the
//! revision up to which everything covered has been sent, and drops any event at or below it
//! (the seam between replay and live). A feed that falls behind the broadcast reads the table
//! from `pos` instead: only a client that stops reading is cut, when the channel stays full
//! for [`SLOW_GRACE`]: its stream ends with RESOURCE_EXHAUSTED naming the last revision the
//! stream handed out, from which it resumes without loss. The watch's [`Slot`] belongs to the
//! feed: a cut (or any end) frees it at once, whether or not the client's side is polled again.
//!
//! The table is read a page at a time on the blocking pool, at most [`REPLAY_READERS`] pages
//! at once per node, and a replay stops as soon as its client is gone: a replay that matches
//! nothing never holds a runtime thread.
//!
//! Every event is checked against the reader rules as they are when it is sent (the node's
//! rules as of its applied index, loaded once per index and shared by every watch: see
//! [`watch_rules`](super::watch_rules); the check itself allocates nothing); when the rules
//! change so that the watch itself is no longer allowed, the stream ends with
//! PERMISSION_DENIED, audited (action `secret.watch`) like a refusal at subscribe time. At
//! node shutdown the stream ends cleanly, after a last progress message.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;
use vault_core::model::ReaderRules;
use vault_raft::watch_log::{Published, Replay, ReplayError};
use vault_raft::{ChangeEvent, ChangeKind};

use crate::api::watch::{compacted, Slot, Subscription, WatchHub};
use crate::auth::caller::Caller;
use crate::pb;
use crate::vault::Vault;

pub type WatchStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WatchSecretsResponse, Status>> + Send + 'static>>;

/// Messages a stream holds for a client that has not taken them yet.
const STREAM_BUFFER: usize = 64;
/// How long the buffer may stay full before the client is cut as not reading.
pub const SLOW_GRACE: Duration = Duration::from_secs(2);
/// A progress message goes out after this long without one.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Events read from the table at a time.
const REPLAY_PAGE: usize = 1000;
/// Pages of the table read at once on this node, by all its watches together.
pub(crate) const REPLAY_READERS: usize = 4;

/// Why a feed stopped.
enum End {
    /// The client went away, or the node is shutting down: nothing more to say.
    Quiet,
    /// The client stopped reading.
    Behind,
    /// A status to end the stream with.
    Fail(&'static str, Status),
}

pub(crate) struct Feed {
    vault: Arc<Vault>,
    hub: Arc<WatchHub>,
    caller: Caller,
    sub: Subscription,
    rules: Arc<ReaderRules>,
    live: broadcast::Receiver<Arc<Published>>,
    /// Everything covered up to here has been sent (or was filtered out).
    pos: u64,
    /// Replay the table from `pos` first.
    replay: bool,
    last_sent: Instant,
}

impl Feed {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        vault: Arc<Vault>,
        hub: Arc<WatchHub>,
        caller: Caller,
        sub: Subscription,
        rules: Arc<ReaderRules>,
        live: broadcast::Receiver<Arc<Published>>,
        start: u64,
        replay: bool,
    ) -> Self {
        Feed { vault, hub, caller, sub, rules, live, pos: start, replay, last_sent: Instant::now() }
    }

    async fn run(&mut self, tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>) -> End {
        if let Err(end) = self.start(tx).await {
            return end;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once, not on every turn: each registers with a waker list, the stop's shared by
        // every watch of the node.
        let hub = self.hub.clone();
        let stop = hub.stop.cancelled();
        let closed = tx.closed();
        tokio::pin!(stop, closed);
        loop {
            let step = tokio::select! {
                biased;
                _ = &mut stop => {
                    // A last word of where the client stands; no waiting for it.
                    let _ = tx.try_send(Ok(progress(self.pos)));
                    return End::Quiet;
                }
                _ = &mut closed => return End::Quiet,
                got = self.live.recv() => match got {
                    Ok(published) => self.on_published(tx, &published).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.replay(tx).await,
                    Err(broadcast::error::RecvError::Closed) => return End::Quiet,
                },
                _ = tick.tick() => self.idle(tx).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn start(&mut self, tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>) -> Result<(), End> {
        if self.replay {
            self.replay(tx).await?;
        }
        self.send(tx, progress(self.pos)).await
    }

    /// Sends what the table holds after `pos`, page by page, and moves `pos` to what this node
    /// had applied when the last page was read.
    async fn replay(&mut self, tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>) -> Result<(), End> {
        loop {
            if tx.is_closed() || self.hub.stop.is_cancelled() {
                return Err(End::Quiet);
            }
            let applied = self.hub.log.applied();
            let page = match self.read_page().await? {
                Ok(page) => page,
                Err(ReplayError::Compacted { asked, floor }) => {
                    return Err(End::Fail("compacted", compacted(asked, floor)))
                }
                Err(ReplayError::Store(e)) => {
                    tracing::error!(error = %e, "read the watch history");
                    return Err(End::Fail("error", Status::unavailable("this node cannot read its watch history")));
                }
            };
            self.send_events(tx, &page.events).await?;
            if !page.more {
                self.pos = self.pos.max(applied);
                return Ok(());
            }
        }
    }

    /// One page of the table after `pos`, read on the blocking pool under the node's bound.
    async fn read_page(&self) -> Result<Result<Replay, ReplayError>, End> {
        let _permit = self.hub.replays.acquire().await.map_err(|_| End::Quiet)?;
        let (log, pos) = (self.hub.log.clone(), self.pos);
        tokio::task::spawn_blocking(move || log.read_after(pos, REPLAY_PAGE)).await.map_err(|e| {
            tracing::error!(error = %e, "the watch history reader failed");
            End::Fail("error", Status::unavailable("this node cannot read its watch history"))
        })
    }

    async fn on_published(
        &mut self,
        tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>,
        published: &Published,
    ) -> Result<(), End> {
        if published.floor > self.pos {
            // A snapshot was installed (or the history pruned) past where this watch stands.
            return Err(End::Fail("compacted", compacted(self.pos, published.floor)));
        }
        self.send_events(tx, &published.events).await?;
        self.pos = self.pos.max(published.revision);
        Ok(())
    }

    /// Every few seconds: the rules again, and progress when nothing went out for a while.
    async fn idle(&mut self, tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>) -> Result<(), End> {
        self.check_rules()?;
        if self.last_sent.elapsed() < PROGRESS_EVERY {
            return Ok(());
        }
        // What was broadcast up to `sent` is in the receiver by now: take it first, so the
        // progress never claims a revision whose events are still waiting.
        let applied = self.hub.log.sent();
        loop {
            match self.live.try_recv() {
                Ok(published) => self.on_published(tx, &published).await?,
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.replay(tx).await?,
                Err(_) => break,
            }
        }
        self.pos = self.pos.max(applied);
        self.send(tx, progress(self.pos)).await
    }

    /// Takes the node's reader rules as of now (shared by every watch, loaded once per applied
    /// index: see `watch_rules`); when they changed, the watch ends if it is no longer allowed.
    fn check_rules(&mut self) -> Result<(), End> {
        let vault = &self.vault;
        let rules = self.hub.rules.get(self.hub.log.applied(), || vault.reader.reader_rules()).map_err(|e| {
            tracing::error!(error = %e, "read the reader rules for a watch");
            End::Fail("error", Status::unavailable("this node cannot read its reader rules"))
        })?;
        if !Arc::ptr_eq(&rules, &self.rules) {
            self.sub.authorize(&rules, &self.caller).map_err(|s| End::Fail("permission_denied", s))?;
            self.rules = rules;
        }
        Ok(())
    }

    /// Sends the events after `pos` that this watch shows, one message per revision.
    async fn send_events(
        &mut self,
        tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>,
        events: &[ChangeEvent],
    ) -> Result<(), End> {
        if events.iter().all(|e| e.revision <= self.pos) {
            return Ok(());
        }
        self.check_rules()?;
        let mut i = 0;
        while i < events.len() {
            let revision = events[i].revision;
            let end = events[i..].iter().position(|e| e.revision != revision).map_or(events.len(), |n| i + n);
            let group = &events[i..end];
            i = end;
            if revision <= self.pos {
                continue;
            }
            // Allocates only for what this watch shows.
            let shown: Vec<pb::WatchEvent> = group
                .iter()
                .filter(|e| self.sub.shows(&self.rules, &self.caller, e))
                .map(|e| pb::WatchEvent {
                    name: e.name.clone(),
                    version: e.version,
                    kind: kind(e.kind) as i32,
                    revision,
                })
                .collect();
            if !shown.is_empty() {
                let n = shown.len() as u64;
                self.send(tx, pb::WatchSecretsResponse { events: shown, revision }).await?;
                metrics::counter!("vault_watch_events_sent_total").increment(n);
            }
            self.pos = revision;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        tx: &mpsc::Sender<Result<pb::WatchSecretsResponse, Status>>,
        msg: pb::WatchSecretsResponse,
    ) -> Result<(), End> {
        // Room in the buffer is the usual case: no timer for it.
        let msg = match tx.try_send(Ok(msg)) {
            Ok(()) => {
                self.last_sent = Instant::now();
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Quiet),
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        match tokio::time::timeout(SLOW_GRACE, tx.send(msg)).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(End::Quiet),
            Err(_) => Err(End::Behind),
        }
    }
}

fn progress(revision: u64) -> pb::WatchSecretsResponse {
    pb::WatchSecretsResponse { events: Vec::new(), revision }
}

fn kind(k: ChangeKind) -> pb::ChangeKind {
    match k {
        ChangeKind::Put => pb::ChangeKind::Put,
        ChangeKind::Delete => pb::ChangeKind::Delete,
        ChangeKind::Undelete => pb::ChangeKind::Undelete,
        ChangeKind::Destroy => pb::ChangeKind::Destroy,
        ChangeKind::Rotation => pb::ChangeKind::Rotation,
        ChangeKind::Remove => pb::ChangeKind::Remove,
        ChangeKind::Reset => pb::ChangeKind::Reset,
    }
}

/// The client's side of a feed.
struct Out {
    rx: mpsc::Receiver<Result<pb::WatchSecretsResponse, Status>>,
    /// Fires when the feed cut the client as not reading.
    cut: Option<oneshot::Receiver<()>>,
    /// The revision of the last message handed to the client.
    delivered: u64,
    done: bool,
}

impl Out {
    async fn next(&mut self) -> Option<Result<pb::WatchSecretsResponse, Status>> {
        if self.done {
            return None;
        }
        loop {
            let Out { rx, cut, delivered, .. } = self;
            let fired = async {
                match cut.as_mut() {
                    Some(c) => Some(c.await.is_ok()),
                    None => std::future::pending().await,
                }
            };
            let got = tokio::select! {
                biased;
                fired = fired => Err(fired),
                got = rx.recv() => Ok(got),
            };
            match got {
                // The feed ended without cutting: only the channel is left to read.
                Err(Some(false)) | Err(None) => self.cut = None,
                Err(Some(true)) => {
                    self.done = true;
                    return Some(Err(Status::resource_exhausted(format!(
                        "watch fell behind; resume from revision {}",
                        *delivered
                    ))));
                }
                Ok(Some(Ok(msg))) => {
                    *delivered = msg.revision;
                    return Some(Ok(msg));
                }
                Ok(Some(Err(status))) => {
                    self.done = true;
                    return Some(Err(status));
                }
                Ok(None) => return None,
            }
        }
    }
}

/// Starts `feed` and returns the stream the client reads.
pub(crate) fn spawn(mut feed: Feed, slot: Slot) -> WatchStream {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let (cut_tx, cut_rx) = oneshot::channel();
    let out = Out { rx, cut: Some(cut_rx), delivered: feed.pos, done: false };
    tokio::spawn(async move {
        let end = feed.run(&tx).await;
        // The watch is over for the node, read or not: its place goes to the next one now.
        drop(slot);
        match end {
            End::Quiet => {}
            End::Behind => {
                metrics::counter!("vault_watch_cut_total", "reason" => "slow_consumer").increment(1);
                let _ = cut_tx.send(());
            }
            End::Fail(reason, status) => {
                metrics::counter!("vault_watch_cut_total", "reason" => reason).increment(1);
                if status.code() == tonic::Code::PermissionDenied {
                    let refused: Result<(), Status> = Err(status.clone());
                    if let Err(e) = feed.vault.audit(&feed.caller, Some(feed.sub.subject()), &refused) {
                        tracing::warn!(error = %e, "audit the end of a watch");
                    }
                }
                if tokio::time::timeout(SLOW_GRACE, tx.send(Err(status))).await.is_err() {
                    let _ = cut_tx.send(());
                }
            }
        }
    });
    Box::pin(futures::stream::unfold(out, |mut out| async move { out.next().await.map(|item| (item, out)) }))
}
