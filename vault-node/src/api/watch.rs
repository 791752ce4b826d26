//! `Secrets/WatchSecrets`: what a watch may cover, who may open one, and how many are open.
//!
//! A watch is checked like a `GetSecret` when it opens (the read gate of the client's address;
//! once reader rules exist, a rule matching the client must grant each exact name, and for
//! each prefix at least one name under it), audited (allowed or refused, under action
//! `secret.watch`; again, as refused, if a rule change ends it later), and counted against `VAULT_WATCH_MAX`, `VAULT_WATCH_MAX_PER_ADDR` (the
//! resolved client address, grouped like the rate limits: an IPv6 /64 is one address) and
//! `VAULT_WATCH_MAX_PER_CONNECTION`. Nothing that reveals the node's applied index or floor is
//! said to a client before it is authorized. The stream itself (replay, live events,
//! per-event checks, progress, cuts) is [`watch_feed`](super::watch_feed). See docs/watch.md.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use vault_core::addr_bucket::AddrBucket;
use vault_core::model::{ReaderDecision, ReaderRules};
use vault_core::SecretName;
use vault_raft::{ChangeEvent, ChangeKind, WatchLog};

pub use crate::api::watch_feed::WatchStream;
use crate::api::watch_feed::{self, Feed};
use crate::api::watch_rules::SharedRules;
use crate::api_conn::ApiConnectInfo;
use crate::auth::caller::{caller_of, Caller};
use crate::config::WatchConfig;
use crate::error::answer;
use crate::pb;
use crate::vault::Vault;

/// Most names and prefixes in one watch, together.
pub const MAX_WATCH_TERMS: usize = 100;

/// This node's watches: the history they read, their bounds, and the signal that ends them
/// at shutdown.
pub struct WatchHub {
    pub(crate) log: WatchLog,
    limits: WatchConfig,
    open: Mutex<Open>,
    /// Pages of the history table being read at once (see [`watch_feed`]).
    pub(crate) replays: tokio::sync::Semaphore,
    pub(crate) stop: CancellationToken,
    /// The reader rules every watch checks its events against (see `watch_rules`).
    pub(crate) rules: SharedRules,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_conn: HashMap<SocketAddr, usize>,
    per_addr: HashMap<AddrBucket, usize>,
}

/// Decrements `key`'s count in `map`, forgetting it at zero.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// One open watch's place under the bounds; given back when its feed ends (the client went
/// away, was cut, or the node stops), not when the client's side of the stream is dropped.
pub(crate) struct Slot {
    hub: Arc<WatchHub>,
    conn: Option<SocketAddr>,
    addr: AddrBucket,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(conn) = self.conn {
            release(&mut open.per_conn, &conn);
        }
        release(&mut open.per_addr, &self.addr);
        metrics::gauge!("vault_watchers").set(open.total as f64);
    }
}

impl WatchHub {
    /// `stop` ends every stream (cleanly) when the node shuts down.
    pub fn new(log: WatchLog, limits: WatchConfig, stop: CancellationToken) -> Arc<Self> {
        log.set_history(limits.history);
        Arc::new(WatchHub {
            log,
            limits,
            open: Mutex::new(Open::default()),
            replays: tokio::sync::Semaphore::new(watch_feed::REPLAY_READERS),
            stop,
            rules: SharedRules::default(),
        })
    }

    /// A place for one more watch from `conn`, whose client resolved to `ip`.
    pub(crate) fn admit(self: &Arc<Self>, conn: Option<SocketAddr>, ip: IpAddr) -> Result<Slot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.max_watchers {
            return Err(Status::resource_exhausted(format!(
                "this node has {} watches open, its limit (VAULT_WATCH_MAX); watch through another node or later",
                open.total
            )));
        }
        let addr = AddrBucket::of(ip);
        let from_addr = open.per_addr.get(&addr).copied().unwrap_or(0);
        if from_addr >= self.limits.max_per_addr {
            return Err(Status::resource_exhausted(format!(
                "{addr} has {from_addr} watches open, its limit (VAULT_WATCH_MAX_PER_ADDR); \
                 watch more names in one watch"
            )));
        }
        if let Some(conn) = conn {
            let n = open.per_conn.entry(conn).or_insert(0);
            if *n >= self.limits.max_per_connection {
                return Err(Status::resource_exhausted(format!(
                    "this connection has {n} watches open, its limit (VAULT_WATCH_MAX_PER_CONNECTION); \
                     watch more names in one watch, or open another connection"
                )));
            }
            *n += 1;
        }
        *open.per_addr.entry(addr).or_insert(0) += 1;
        open.total += 1;
        metrics::gauge!("vault_watchers").set(open.total as f64);
        Ok(Slot { hub: self.clone(), conn, addr })
    }
}

/// What one watch covers.
#[derive(Debug)]
pub(crate) struct Subscription {
    names: BTreeSet<String>,
    prefixes: Vec<String>,
    /// How its audit records name it.
    subject: String,
}

impl Subscription {
    fn parse(r: &pb::WatchSecretsRequest) -> Result<Self, Status> {
        let terms = r.names.len() + r.prefixes.len();
        if terms == 0 {
            return Err(Status::invalid_argument("name at least one secret name or prefix to watch"));
        }
        if terms > MAX_WATCH_TERMS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_WATCH_TERMS} names and prefixes per watch, not {terms}"
            )));
        }
        let invalid =
            |what: &str, raw: &str, e: vault_core::CoreError| Status::invalid_argument(format!("{what} {raw:?}: {e}"));
        let mut names = BTreeSet::new();
        for n in &r.names {
            SecretName::parse(n).map_err(|e| invalid("name", n, e))?;
            names.insert(n.clone());
        }
        for p in &r.prefixes {
            // A prefix is any start of a valid name: itself a name, perhaps with a '/' after.
            if !p.is_empty() {
                SecretName::parse(p.strip_suffix('/').unwrap_or(p)).map_err(|e| invalid("prefix", p, e))?;
            }
        }
        Ok(Subscription { names, prefixes: r.prefixes.clone(), subject: audit_subject(r) })
    }

    /// How the watch is named in its audit records.
    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }

    pub(crate) fn covers(&self, name: &str) -> bool {
        self.names.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Whether `rules` let `caller` hold this watch: the rules that allow it (empty when no
    /// rule exists), or the refusal.
    pub(crate) fn authorize(&self, rules: &ReaderRules, caller: &Caller) -> Result<Vec<String>, Status> {
        let ip = crate::auth::allowlist::canonical(caller.ip);
        let cn = caller.cert_cn.as_deref();
        let mut allowed = BTreeSet::new();
        let decisions = self
            .names
            .iter()
            .map(|n| rules.decide(ip, cn, n))
            .chain(self.prefixes.iter().map(|p| rules.decide_prefix(ip, cn, p)));
        for d in decisions {
            match d {
                ReaderDecision::NoRules => {}
                ReaderDecision::Allowed(rule) => {
                    allowed.insert(rule);
                }
                ReaderDecision::Denied(why) => return Err(Status::permission_denied(why)),
            }
        }
        Ok(allowed.into_iter().collect())
    }

    /// Whether `caller` may be told of `event` under `rules`: covered by this watch and
    /// readable like a `GetSecret` of its name. A reset (the whole store replaced) concerns
    /// every watch. Allocates nothing: it runs for every event and every watch.
    pub(crate) fn shows(&self, rules: &ReaderRules, caller: &Caller, event: &ChangeEvent) -> bool {
        if event.kind == ChangeKind::Reset {
            return true;
        }
        if !self.covers(&event.name) {
            return false;
        }
        let ip = crate::auth::allowlist::canonical(caller.ip);
        rules.allows(ip, caller.cert_cn.as_deref(), &event.name)
    }
}

/// How the watch is named in its audit record: its names, and its prefixes with a `*`.
fn audit_subject(r: &pb::WatchSecretsRequest) -> String {
    let terms: Vec<String> =
        r.names.iter().cloned().chain(r.prefixes.iter().map(|p| format!("{p}*"))).take(MAX_WATCH_TERMS).collect();
    terms.join(",")
}

/// Opens a watch for `req` (see the module doc).
pub async fn watch_secrets(
    vault: &Arc<Vault>,
    hub: &Arc<WatchHub>,
    req: Request<pb::WatchSecretsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let caller = caller_of(&req)?;
    let conn = req.extensions().get::<ApiConnectInfo>().and_then(|i| i.tcp.remote_addr());
    let r = req.into_inner();
    let mut rules_used = Vec::new();
    let result = answer(async {
        if let Some(why) = &caller.read_denied {
            return Err(Status::permission_denied(why.clone()).into());
        }
        let sub = Subscription::parse(&r)?;
        // Authorized before anything about this node's history (applied index, floor) is
        // said, and before the barrier costs the cluster anything.
        sub.authorize(&*vault.reader.reader_rules()?, &caller)?;
        // After the barrier this node has applied everything committed before the call: a
        // revision any client was given is at or below what it has applied.
        vault.linearize().await?;
        let applied = hub.log.applied();
        if r.after_revision > applied {
            return Err(Status::invalid_argument(format!(
                "revision {} is ahead of this cluster ({applied})",
                r.after_revision
            ))
            .into());
        }
        let floor = hub.log.floor();
        if r.after_revision != 0 && r.after_revision < floor {
            return Err(compacted(r.after_revision, floor).into());
        }
        // Again with the rules as of the barrier, which the feed starts from.
        let rules = vault.reader.reader_rules()?;
        rules_used = sub.authorize(&rules, &caller)?;
        let slot = hub.admit(conn, caller.ip)?;
        Ok((sub, rules, slot))
    })
    .await;
    let rule = (!rules_used.is_empty()).then(|| rules_used.join(", "));
    vault.audit_read(&caller, &audit_subject(&r), &result, rule.as_deref())?;
    let (sub, rules, slot) = result?;
    // Subscribed before the start is read: the history stores `applied` before it broadcasts
    // a batch, so every event after the start reaches this receiver.
    let live = hub.log.subscribe();
    let start = if r.after_revision == 0 { hub.log.applied() } else { r.after_revision };
    let feed = Feed::new(vault.clone(), hub.clone(), caller, sub, rules, live, start, r.after_revision != 0);
    Ok(Response::new(watch_feed::spawn(feed, slot)))
}

/// The status of a watch from a revision older than this node keeps.
pub(crate) fn compacted(asked: u64, floor: u64) -> Status {
    Status::out_of_range(format!(
        "revision {asked} was compacted; oldest kept is {floor}: read again and watch from a newer revision"
    ))
}
