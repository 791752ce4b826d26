//! Linearizability checker for histories of the vault's versioned secrets (Jepsen style).
//!
//! The fault-injection runner records every client operation as an [`Event`]: which process
//! invoked what on which key, when it was invoked, when it completed and what came back.
//! [`check`] decides whether a correct, linearizable vault could have produced the history and,
//! when it could not, explains why with a small offending sub-history ([`render`] prints it).
//!
//! # Model (per key: a versioned register)
//!
//! A key has `highest` (0 = never written; it only grows, also across deletes) and keeps the
//! versions `oldest..=highest`, at most `max_versions` of them (older ones are pruned forever).
//! Each kept version has a value and is live or deleted.
//!
//! * `put(v)` creates version `highest + 1`, live, then prunes; `put(v, cas=e)` does the same
//!   only when `e == highest`, and otherwise answers `cas-mismatch` without any effect.
//! * `get(latest)` finds the newest live kept version; `get(version=n)` finds version `n` when it
//!   is kept and live; otherwise both answer `not-found`.
//! * `delete` marks every kept version deleted (`not-found` when the key never existed).
//!
//! # Algorithm
//!
//! Linearizability is local, so every key is checked on its own:
//!
//! 1. **Direct checks** flag what no ordering can explain, without a search: two acknowledged
//!    puts with the same version, a compare-and-set written at the wrong version, a read of a
//!    value or version/value pair that no put could have produced, an acknowledged version read
//!    back as missing with no delete or pruning possible in between, and version numbers that
//!    skip versions no put could have created.
//! 2. **Search** (Wing & Gong with Lowe's memoisation, as porcupine does): every operation becomes
//!    a call and a return entry in a time-sorted doubly linked list (calls first on equal times,
//!    so touching operations count as concurrent). A depth-first search linearizes one operation
//!    whose call precedes the earliest pending return, applies it to a mutable model that keeps
//!    an undo record, and lifts its entries out of the list; once only returns of linearized
//!    operations precede a pending return, every choice at that level has failed and it
//!    backtracks. A memo of visited (linearized-set bitset, model state) pairs prunes repeated
//!    work. Definite failures are dropped; operations with an unknown outcome return at +inf and
//!    are optional: the search ends successfully once every operation with a known outcome is
//!    linearized, which is the same as placing the rest at the very end, where they affect
//!    nothing that was observed. Sound pruning rules keep this fast:
//!    * an operation that can never change the state (a read, a cas-mismatch, a not-found
//!      delete) and is valid now is linearized at once, with no alternative tried: in any valid
//!      order from here it could be moved to the front;
//!    * no operation is linearized when it would make a pending acknowledged one impossible
//!      forever (raising the highest version past a pending acknowledged version or a pending
//!      read of an older latest version, deleting a version a pending read finds, ...);
//!    * an unknown operation is only linearized when it changes the state, and an unknown delete
//!      only while some pending read found nothing;
//!    * unknown puts whose value nobody read (and unknown deletes) are interchangeable, so only
//!      the earliest-invoked unused one of each kind is tried.
//!
//!    A step budget per key turns pathological searches into an [`Inconclusive`] result.
//! 3. **Shrinking**: for a key that is not linearizable, the shortest failing time prefix is found
//!    by binary search (operations that complete after the cutoff become unknown); then the
//!    shortest failing suffix of that, by invocation; then operations are dropped one by one,
//!    latest first, while the rest still fails. A subset of the operations is checked as a
//!    history of its own; the suffix and the drops use a relaxed model that allows for puts left
//!    out (see `Model`) where it still fails, so that a dropped put does not make every subset
//!    fail trivially. Whatever is reported fails the strict check by itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Versions kept per key by default.
pub const DEFAULT_MAX_VERSIONS: u64 = 10;
/// Search steps per key before it is reported as [`Inconclusive`].
pub const DEFAULT_STEP_BUDGET: u64 = 5_000_000;
/// Operations that the greedy shrinker tries to drop one by one.
pub const DEFAULT_SHRINK_CANDIDATES: usize = 200;
/// Direct anomalies of one kind reported per key; the rest are only counted.
const MAX_PER_KIND: usize = 10;
/// Time of a return that never happened (unknown outcome).
const NEVER: u64 = u64::MAX;

/// An operation on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write a new version; with `expected`, only when it equals the highest version.
    Put { value: u64, expected: Option<u64> },
    /// Read the newest live version (`None`) or one specific version.
    Get { version: Option<u64> },
    /// Soft-delete every kept version.
    Delete,
}

/// What an operation that completed normally returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ret {
    Written { version: u64 },
    CasMismatch,
    Found { version: u64, value: u64 },
    NotFound,
    Deleted,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Completed with this result.
    Ok(Ret),
    /// Definitely failed, without any effect.
    Fail,
    /// Indeterminate: it may or may not have taken effect, at any time after its invocation.
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    pub id: u64,
    pub process: u32,
    pub node: u32,
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    /// `None` for [`Outcome::Unknown`].
    pub complete_ns: Option<u64>,
}

/// What kind of impossibility an [`Anomaly`] shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// Two acknowledged puts on one key got the same version.
    DuplicateVersion,
    /// A put with `cas = e` was acknowledged as written at a version other than `e + 1`.
    CasViolation,
    /// A read returned a value (or version/value pair) that no put could have written.
    UnwrittenValue,
    /// An acknowledged version was later read as missing although nothing could remove it.
    LostWrite,
    /// A version was acknowledged or read although not enough puts could have run before it to
    /// create every lower version.
    Hole,
    /// No linearization explains the key's history.
    NotLinearizable,
}

/// One problem found on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub key: String,
    pub message: String,
    /// The events that show the problem, sorted by invocation time.
    pub sub_history: Vec<Event>,
}

/// A key whose search ran out of its step budget: neither valid nor proven invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconclusive {
    pub key: String,
    /// Operations that took part in the search.
    pub ops: usize,
    pub steps: u64,
}

/// The result of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct keys in the history.
    pub keys: usize,
    /// Events in the history.
    pub ops: usize,
    pub anomalies: Vec<Anomaly>,
    pub inconclusive: Vec<Inconclusive>,
    /// Search steps spent on all keys (not counting shrinking): a deterministic cost measure.
    pub search_steps: u64,
}

impl Report {
    /// True when no anomaly was found and every key was decided.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty() && self.inconclusive.is_empty()
    }

    /// True when some anomaly has this kind.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.anomalies.iter().any(|a| a.kind == kind)
    }
}

/// Parameters of [`check_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Versions kept per key (0 is treated as 1).
    pub max_versions: u64,
    /// Search steps per key before giving up on it as inconclusive.
    pub step_budget: u64,
    /// Operations the shrinker tries to drop one at a time (the latest ones).
    pub shrink_candidates: usize,
    /// Search steps the shrinker may spend per anomaly, over all its trials.
    pub shrink_budget: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_versions: DEFAULT_MAX_VERSIONS,
            step_budget: DEFAULT_STEP_BUDGET,
            shrink_candidates: DEFAULT_SHRINK_CANDIDATES,
            shrink_budget: DEFAULT_STEP_BUDGET,
        }
    }
}

/// Checks a history with `max_versions` kept per key and default limits.
pub fn check(history: &[Event], max_versions: u64) -> Report {
    check_with(history, &CheckOptions { max_versions, ..CheckOptions::default() })
}

/// Checks a history: direct checks, then the linearizability search, key by key.
pub fn check_with(history: &[Event], options: &CheckOptions) -> Report {
    let max_versions = options.max_versions.max(1);
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in history.iter().enumerate() {
        by_key.entry(e.key.as_str()).or_default().push(i);
    }
    let mut report = Report { keys: by_key.len(), ops: history.len(), ..Report::default() };
    for (key, idxs) in &by_key {
        report.anomalies.extend(direct_anomalies(key, history, idxs, max_versions));
        let ops = search_ops(history, idxs);
        let (verdict, steps) = search(&ops, max_versions, options.step_budget, false);
        report.search_steps += steps;
        match verdict {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => {
                report.inconclusive.push(Inconclusive { key: key.to_string(), ops: ops.len(), steps })
            }
            Verdict::NotLinearizable => {
                let (sub, culprit) = shrink(&ops, max_versions, options);
                let culprit = culprit
                    .map(|i| format!("it stops being explainable when #{} completes; ", history[i].id))
                    .unwrap_or_default();
                let message = format!(
                    "no linearization explains the {} operations on this key (failed ones and unknown reads \
                     left out); {culprit}the smallest failing sub-history found has {} operations",
                    ops.len(),
                    sub.len()
                );
                let sub_history = sorted_events(history, sub.iter().map(|o| o.event));
                report.anomalies.push(Anomaly {
                    kind: AnomalyKind::NotLinearizable,
                    key: key.to_string(),
                    message,
                    sub_history,
                });
            }
        }
    }
    report
}

/// Renders a report: a summary line, then each anomaly with its sub-history, one event a line.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "checked {} keys, {} ops: {} anomalies, {} inconclusive\n",
        report.keys,
        report.ops,
        report.anomalies.len(),
        report.inconclusive.len()
    );
    for (n, a) in report.anomalies.iter().enumerate() {
        out.push_str(&format!("{}. {} on key {:?}: {}\n", n + 1, a.kind, a.key, a.message));
        for e in &a.sub_history {
            out.push_str(&format!("     {e}\n"));
        }
    }
    for i in &report.inconclusive {
        out.push_str(&format!(
            "inconclusive: key {:?} ({} ops): gave up after {} search steps\n",
            i.key, i.ops, i.steps
        ));
    }
    out
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { value, expected: None } => write!(f, "put(v={value})"),
            Op::Put { value, expected: Some(e) } => write!(f, "put(v={value}, cas={e})"),
            Op::Get { version: None } => write!(f, "get(latest)"),
            Op::Get { version: Some(v) } => write!(f, "get(version={v})"),
            Op::Delete => write!(f, "delete"),
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Written { version } => write!(f, "written {version}"),
            Ret::CasMismatch => write!(f, "cas-mismatch"),
            Ret::Found { version, value } => write!(f, "found v={value} at version {version}"),
            Ret::NotFound => write!(f, "not-found"),
            Ret::Deleted => write!(f, "deleted"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(r) => write!(f, "{r}"),
            Outcome::Fail => write!(f, "fail"),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Seconds with microseconds, e.g. `1.204000s`.
fn secs(ns: u64) -> String {
    format!("{}.{:06}s", ns / 1_000_000_000, (ns % 1_000_000_000) / 1_000)
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.complete_ns.map_or_else(|| "?".to_string(), secs);
        write!(
            f,
            "#{} p{}@n{} [{}..{}] {} -> {}",
            self.id,
            self.process,
            self.node,
            secs(self.invoke_ns),
            end,
            self.op,
            self.outcome
        )
    }
}

/// Clones the events with these indexes, without duplicates, sorted by invocation time.
fn sorted_events(history: &[Event], idxs: impl IntoIterator<Item = usize>) -> Vec<Event> {
    let mut idxs: Vec<usize> = idxs.into_iter().collect();
    idxs.sort_unstable();
    idxs.dedup();
    let mut events: Vec<Event> = idxs.into_iter().map(|i| history[i].clone()).collect();
    events.sort_by_key(|e| (e.invoke_ns, e.id));
    events
}

// ---------------------------------------------------------------------------------------------
// Direct checks
// ---------------------------------------------------------------------------------------------

/// When an event's effect window ends: its completion, or never for unknown outcomes.
fn done(e: &Event) -> u64 {
    match e.outcome {
        Outcome::Ok(_) => e.complete_ns.map_or(NEVER, |c| c.max(e.invoke_ns)),
        Outcome::Fail | Outcome::Unknown => NEVER,
    }
}

/// Collects direct anomalies of one key, at most [`MAX_PER_KIND`] shown per kind.
struct Collector<'a> {
    key: &'a str,
    history: &'a [Event],
    list: Vec<Anomaly>,
    counts: BTreeMap<AnomalyKind, usize>,
}

impl Collector<'_> {
    fn add(&mut self, kind: AnomalyKind, message: String, events: Vec<usize>) {
        let count = self.counts.entry(kind).or_default();
        *count += 1;
        if *count <= MAX_PER_KIND {
            let sub_history = sorted_events(self.history, events);
            self.list.push(Anomaly { kind, key: self.key.to_string(), message, sub_history });
        }
    }

    fn finish(mut self) -> Vec<Anomaly> {
        for (kind, count) in &self.counts {
            if *count > MAX_PER_KIND {
                if let Some(last) = self.list.iter_mut().rev().find(|a| a.kind == *kind) {
                    last.message.push_str(&format!(
                        " (and {} more {kind} anomalies on this key, not shown)",
                        count - MAX_PER_KIND
                    ));
                }
            }
        }
        self.list
    }
}

/// Counts, over a fixed set of positions, how many are present up to a position.
struct Fenwick(Vec<u64>);

impl Fenwick {
    fn add(&mut self, pos: usize) {
        let mut i = pos + 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Present positions `< end`.
    fn prefix(&self, end: usize) -> u64 {
        let (mut i, mut sum) = (end, 0);
        while i > 0 {
            sum += self.0[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// Anomalies of one key that no ordering can explain (see [`AnomalyKind`]).
fn direct_anomalies(key: &str, history: &[Event], idxs: &[usize], max_versions: u64) -> Vec<Anomaly> {
    let id = |i: usize| history[i].id;
    let invoke = |i: usize| history[i].invoke_ns;
    let mut acked: Vec<(usize, u64)> = Vec::new(); // acknowledged puts: (event, version)
    let mut by_version: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut unknown_puts: Vec<usize> = Vec::new();
    let mut deleters: Vec<usize> = Vec::new(); // deletes that may have deleted something
    let mut writers: HashMap<u64, Vec<usize>> = HashMap::new(); // value -> puts that may have written it
    let mut attempted: HashSet<u64> = HashSet::new();
    let mut found: Vec<(usize, u64, u64)> = Vec::new(); // (read, version, value)
    let mut missing: Vec<(usize, Option<u64>)> = Vec::new(); // not-found reads: (read, version)
    for &i in idxs {
        let e = &history[i];
        match (e.op, e.outcome) {
            (Op::Put { value, .. }, outcome) => {
                attempted.insert(value);
                match outcome {
                    Outcome::Ok(Ret::Written { version }) => {
                        acked.push((i, version));
                        by_version.entry(version).or_default().push(i);
                        writers.entry(value).or_default().push(i);
                    }
                    Outcome::Unknown => {
                        unknown_puts.push(i);
                        writers.entry(value).or_default().push(i);
                    }
                    _ => {}
                }
            }
            (Op::Delete, Outcome::Ok(Ret::Deleted) | Outcome::Unknown) => deleters.push(i),
            (Op::Get { .. }, Outcome::Ok(Ret::Found { version, value })) => found.push((i, version, value)),
            (Op::Get { version }, Outcome::Ok(Ret::NotFound)) => missing.push((i, version)),
            _ => {}
        }
    }
    let put_value = |i: usize| match history[i].op {
        Op::Put { value, .. } => value,
        _ => 0,
    };
    let mut out = Collector { key, history, list: Vec::new(), counts: BTreeMap::new() };

    for (version, puts) in &by_version {
        if puts.len() > 1 {
            let ids: Vec<String> = puts.iter().map(|&p| format!("#{}", id(p))).collect();
            let message = format!("{} acknowledged puts all got version {version}: {}", puts.len(), ids.join(", "));
            out.add(AnomalyKind::DuplicateVersion, message, puts.clone());
        }
    }

    for &(p, version) in &acked {
        if let Op::Put { expected: Some(e), .. } = history[p].op {
            if e.checked_add(1) != Some(version) {
                let message = format!(
                    "#{} is a put with cas={e} acknowledged as written version {version}; a successful \
                     compare-and-set creates version {}",
                    id(p),
                    u128::from(e) + 1
                );
                out.add(AnomalyKind::CasViolation, message, vec![p]);
            }
        }
    }

    for &(r, version, value) in &found {
        let read_done = done(&history[r]);
        if let Some(puts) = by_version.get(&version) {
            if !puts.iter().any(|&p| put_value(p) == value) {
                let p = puts[0];
                let message = format!(
                    "#{} read value {value} at version {version}, but version {version} was acknowledged to #{}, \
                     which wrote value {}",
                    id(r),
                    id(p),
                    put_value(p)
                );
                let mut events = puts.clone();
                events.push(r);
                out.add(AnomalyKind::UnwrittenValue, message, events);
                continue;
            }
        }
        let candidates = writers.get(&value).map_or(&[][..], |w| w.as_slice());
        let plausible = candidates.iter().any(|&w| {
            invoke(w) <= read_done
                && match history[w].outcome {
                    Outcome::Ok(Ret::Written { version: written }) => written == version,
                    _ => true,
                }
        });
        if plausible {
            continue;
        }
        let why = if candidates.is_empty() {
            if attempted.contains(&value) {
                "only puts that failed or got cas-mismatch tried to write it".to_string()
            } else {
                "no put ever tried to write it to this key".to_string()
            }
        } else {
            let reasons: Vec<String> = candidates
                .iter()
                .take(4)
                .map(|&w| match history[w].outcome {
                    Outcome::Ok(Ret::Written { version: written }) if written != version => {
                        format!("#{} wrote it as version {written}", id(w))
                    }
                    _ => format!("#{} started only after the read completed", id(w)),
                })
                .collect();
            reasons.join(", ")
        };
        let message = format!("#{} read value {value} at version {version}, but {why}", id(r));
        let mut events: Vec<usize> = candidates.iter().copied().take(4).collect();
        events.push(r);
        out.add(AnomalyKind::UnwrittenValue, message, events);
    }

    // A version may have been pruned before a read completed only if the put creating version
    // `v + max_versions` (acknowledged with exactly that version, or any unknown put) started by then.
    let may_prune = |version: u64, by: u64| match version.checked_add(max_versions) {
        None => false,
        Some(pruner) => {
            unknown_puts.iter().any(|&u| invoke(u) <= by)
                || by_version.get(&pruner).is_some_and(|ps| ps.iter().any(|&q| invoke(q) <= by))
        }
    };
    // A delete can fall between a put (linearized after `from`) and a read (before `to`) when
    // their windows overlap.
    let may_delete = |from: u64, to: u64| deleters.iter().any(|&d| invoke(d) <= to && done(&history[d]) >= from);
    for &(r, version) in &missing {
        let (read_start, read_done) = (invoke(r), done(&history[r]));
        let completed_before = |p: usize| history[p].complete_ns.is_some_and(|c| c < read_start);
        match version {
            Some(v) => {
                let puts = by_version.get(&v).map_or(&[][..], |ps| ps.as_slice());
                if let Some(&p) = puts
                    .iter()
                    .find(|&&p| completed_before(p) && !may_delete(invoke(p), read_done) && !may_prune(v, read_done))
                {
                    let message = format!(
                        "#{} was acknowledged as version {v} before #{} started, which then found version {v} \
                         missing, although no delete could have run in between and too few puts started to \
                         prune it (max_versions={max_versions})",
                        id(p),
                        id(r)
                    );
                    out.add(AnomalyKind::LostWrite, message, vec![p, r]);
                }
            }
            None => {
                let last =
                    acked.iter().map(|&(p, _)| p).filter(|&p| completed_before(p)).max_by_key(|&p| (invoke(p), id(p)));
                if let Some(p) = last.filter(|&p| !may_delete(invoke(p), read_done)) {
                    let message = format!(
                        "#{} found no live version, although #{} was acknowledged before it started and no \
                         delete could have run in between",
                        id(r),
                        id(p)
                    );
                    out.add(AnomalyKind::LostWrite, message, vec![p, r]);
                }
            }
        }
    }

    hole_check(history, &acked, &found, &unknown_puts, &mut out);
    out.finish()
}

/// Flags the first (by completion) version claim that has too few possible creators below it.
///
/// Versions are created one by one, each by its own put: an acknowledged put with exactly that
/// version, or a put with unknown outcome. So when version `w` is acknowledged (or version `v`
/// read) by an operation completing at `t`, each of the versions `1..w` (`1..=v`) needs a
/// distinct creator that started by `t`.
fn hole_check(
    history: &[Event],
    acked: &[(usize, u64)],
    found: &[(usize, u64, u64)],
    unknown_puts: &[usize],
    out: &mut Collector<'_>,
) {
    // (completion, highest version that must exist below the claim, claimer, claimed version)
    let mut claims: Vec<(u64, Option<u64>, usize, u64)> = Vec::new();
    for &(p, w) in acked {
        claims.push((done(&history[p]), w.checked_sub(1), p, w));
    }
    for &(r, v, _) in found {
        claims.push((done(&history[r]), if v == 0 { None } else { Some(v) }, r, v));
    }
    claims.sort_by_key(|&(t, _, i, _)| (t, history[i].id));
    let mut versions: Vec<u64> = acked.iter().map(|&(_, w)| w).collect();
    versions.sort_unstable();
    versions.dedup();
    let mut by_invoke: Vec<(u64, u64)> = acked.iter().map(|&(p, w)| (history[p].invoke_ns, w)).collect();
    by_invoke.sort_unstable();
    let mut unknown_invokes: Vec<u64> = unknown_puts.iter().map(|&u| history[u].invoke_ns).collect();
    unknown_invokes.sort_unstable();
    let mut tree = Fenwick(vec![0; versions.len() + 1]);
    let mut present = vec![false; versions.len()];
    let (mut next_acked, mut unknowns) = (0, 0);
    let what = |i: usize| match history[i].op {
        Op::Put { .. } => "acknowledged to",
        _ => "read by",
    };
    for (t, top, x, w) in claims {
        let Some(top) = top else {
            let message = format!("version 0 was {} #{}, but versions start at 1", what(x), history[x].id);
            out.add(AnomalyKind::Hole, message, vec![x]);
            return;
        };
        while next_acked < by_invoke.len() && by_invoke[next_acked].0 <= t {
            let pos = versions.partition_point(|&v| v < by_invoke[next_acked].1);
            if !present[pos] {
                present[pos] = true;
                tree.add(pos);
            }
            next_acked += 1;
        }
        while unknowns < unknown_invokes.len() && unknown_invokes[unknowns] <= t {
            unknowns += 1;
        }
        let have =
            tree.prefix(versions.partition_point(|&v| v <= top)) - tree.prefix(versions.partition_point(|&v| v < 1));
        let lacking = top - have;
        if lacking <= unknowns as u64 {
            continue;
        }
        // Describe the first few versions without a possible acknowledged creator.
        let started: BTreeSet<u64> =
            acked.iter().filter(|&&(p, _)| history[p].invoke_ns <= t).map(|&(_, v)| v).filter(|&v| v >= 1).collect();
        let mut gaps: Vec<u128> = Vec::new();
        let mut expected = 1u128;
        for &v in started.range(..=top) {
            while expected < u128::from(v) && gaps.len() < 5 {
                gaps.push(expected);
                expected += 1;
            }
            expected = u128::from(v) + 1;
        }
        while expected <= u128::from(top) && gaps.len() < 5 {
            gaps.push(expected);
            expected += 1;
        }
        let gaps: Vec<u64> = gaps.into_iter().filter_map(|g| u64::try_from(g).ok()).collect();
        let gap_list: Vec<String> = gaps.iter().map(u64::to_string).collect();
        let message = format!(
            "version {w} was {} #{}, but {lacking} of the versions 1..={top} (first: {}) have no acknowledged put \
             that started before it completed, and only {unknowns} put(s) with unknown outcome could have \
             created them",
            what(x),
            history[x].id,
            gap_list.join(", ")
        );
        let mut events = vec![x];
        if let Some(&first) = gaps.first() {
            let near = |v: u64| acked.iter().filter(move |&&(_, w)| w == v).map(|&(p, _)| p);
            if let Some(below) = started.range(..first).next_back() {
                events.extend(near(*below).filter(|&p| history[p].invoke_ns <= t).take(1));
            }
            if let Some(above) = started.range(first..).next() {
                events.extend(near(*above).filter(|&p| history[p].invoke_ns <= t).take(1));
            }
            events.extend(near(first).take(2));
        }
        events.extend(unknown_puts.iter().copied().filter(|&u| history[u].invoke_ns <= t).take(3));
        out.add(AnomalyKind::Hole, message, events);
        return;
    }
}

// ---------------------------------------------------------------------------------------------
// Linearizability search
// ---------------------------------------------------------------------------------------------

/// An operation as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SOp {
    op: Op,
    /// `None`: unknown outcome, so the operation is optional.
    ret: Option<Ret>,
    call: u64,
    /// [`NEVER`] for unknown outcomes.
    ret_time: u64,
    /// Index of the event in the history.
    event: usize,
}

/// The search operations of one key: failures and unknown reads are left out.
fn search_ops(history: &[Event], idxs: &[usize]) -> Vec<SOp> {
    idxs.iter()
        .filter_map(|&i| {
            let e = &history[i];
            match e.outcome {
                Outcome::Fail => None,
                Outcome::Unknown => match e.op {
                    Op::Get { .. } => None,
                    op => Some(SOp { op, ret: None, call: e.invoke_ns, ret_time: NEVER, event: i }),
                },
                Outcome::Ok(ret) => Some(SOp {
                    op: e.op,
                    ret: Some(ret),
                    call: e.invoke_ns,
                    ret_time: e.complete_ns.map_or(NEVER, |c| c.max(e.invoke_ns)),
                    event: i,
                }),
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    NotLinearizable,
    Inconclusive,
}

/// What applying an operation does to the model.
#[derive(Clone, Copy, Debug)]
enum Effect {
    None,
    Push(u64),
    /// Relaxed model only: versions up to `to - 1` were created by puts outside the checked
    /// operations (ghosts), then version `to` with `value`.
    Jump {
        to: u64,
        value: u64,
    },
    Delete,
}

/// How to revert an applied [`Effect`].
#[derive(Clone, Copy, Debug)]
enum Undo {
    None,
    Pop(u64),
    Delete(u64),
}

/// The longest jump the relaxed model makes (a guard against absurd versions).
const MAX_JUMP: u64 = 1 << 20;

/// The state of one key: `values[n - 1]` is the value of version `n`; versions up to
/// `deleted_upto` are deleted; only the last `max_versions` are kept.
///
/// The *relaxed* model is only used to shrink a failing history. It checks a subset of the
/// operations while allowing for the ones left out: an acknowledged version or a read version
/// beyond `highest` means that unseen puts created the versions in between (ghosts, whose value
/// and liveness are unknown), and while `highest` is 0 nothing is known about earlier versions.
/// It accepts everything the strict model accepts, so a subset it rejects is rejected strictly.
struct Model {
    values: Vec<u64>,
    ghost: Vec<bool>,
    deleted_upto: u64,
    max_versions: u64,
    relaxed: bool,
}

impl Model {
    fn new(max_versions: u64, relaxed: bool) -> Self {
        Model { values: Vec::new(), ghost: Vec::new(), deleted_upto: 0, max_versions, relaxed }
    }

    fn highest(&self) -> u64 {
        self.values.len() as u64
    }

    /// Versions up to this one are pruned.
    fn floor(&self) -> u64 {
        self.highest().saturating_sub(self.max_versions)
    }

    /// Versions up to this one can not be read (pruned or deleted).
    fn dead_upto(&self) -> u64 {
        self.deleted_upto.max(self.floor())
    }

    /// Values of the kept versions, oldest first.
    fn kept(&self) -> &[u64] {
        &self.values[self.floor() as usize..]
    }

    /// Which kept versions are ghosts, oldest first.
    fn kept_ghosts(&self) -> &[bool] {
        &self.ghost[self.floor() as usize..]
    }

    fn value(&self, version: u64) -> u64 {
        self.values[(version - 1) as usize]
    }

    /// The result `op` has in this state and its effect; `push` is the value a put stores.
    fn predict(&self, op: &Op, push: u64) -> (Ret, Effect) {
        let h = self.highest();
        match *op {
            Op::Put { expected: Some(e), .. } if e != h => (Ret::CasMismatch, Effect::None),
            Op::Put { .. } => (Ret::Written { version: h + 1 }, Effect::Push(push)),
            Op::Get { version: None } if h > self.deleted_upto => {
                (Ret::Found { version: h, value: self.value(h) }, Effect::None)
            }
            Op::Get { version: Some(v) } if v > self.dead_upto() && v <= h => {
                (Ret::Found { version: v, value: self.value(v) }, Effect::None)
            }
            Op::Get { .. } => (Ret::NotFound, Effect::None),
            Op::Delete if h == 0 => (Ret::NotFound, Effect::None),
            Op::Delete if self.deleted_upto == h => (Ret::Deleted, Effect::None),
            Op::Delete => (Ret::Deleted, Effect::Delete),
        }
    }

    /// Relaxed model only: how `observed`, which the strict model does not give, can still be
    /// explained (see [`Model`]); `push` is the value a put stores.
    fn relax(&self, op: &Op, observed: Ret, push: u64) -> Option<Effect> {
        let h = self.highest();
        let jump = |to: u64, value: u64| (to > h && to - h <= MAX_JUMP).then_some(Effect::Jump { to, value });
        let live_ghost = |v: u64| v > self.dead_upto() && v <= h && self.ghost[(v - 1) as usize];
        match (*op, observed) {
            (Op::Put { expected: None, .. }, Ret::Written { version }) => jump(version, push),
            (Op::Put { expected: Some(e), .. }, Ret::Written { version }) if e.checked_add(1) == Some(version) => {
                jump(version, push)
            }
            (Op::Put { expected: Some(_), .. }, Ret::CasMismatch) if h == 0 => Some(Effect::None),
            (Op::Get { version: None }, Ret::Found { version, value }) => jump(version, value),
            (Op::Get { version: Some(v) }, Ret::Found { version, value }) if v == version => {
                if live_ghost(v) {
                    Some(Effect::None)
                } else {
                    jump(v, value)
                }
            }
            (Op::Get { version: Some(v) }, Ret::NotFound) if live_ghost(v) => Some(Effect::None),
            (Op::Delete, Ret::Deleted) if h == 0 => Some(Effect::None),
            _ => None,
        }
    }

    fn commit(&mut self, effect: Effect) -> Undo {
        match effect {
            Effect::None => Undo::None,
            Effect::Push(value) => {
                self.values.push(value);
                self.ghost.push(false);
                Undo::Pop(1)
            }
            Effect::Jump { to, value } => {
                let added = to - self.highest();
                self.values.resize((to - 1) as usize, 0);
                self.ghost.resize((to - 1) as usize, true);
                self.values.push(value);
                self.ghost.push(false);
                Undo::Pop(added)
            }
            Effect::Delete => {
                let old = self.deleted_upto;
                self.deleted_upto = self.highest();
                Undo::Delete(old)
            }
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::None => {}
            Undo::Pop(count) => {
                let len = self.values.len() - count as usize;
                self.values.truncate(len);
                self.ghost.truncate(len);
            }
            Undo::Delete(old) => self.deleted_upto = old,
        }
    }
}

/// A tree of minimums over a fixed number of slots.
struct MinTree {
    size: usize,
    data: Vec<u64>,
}

impl MinTree {
    fn new(values: &[u64]) -> Self {
        let size = values.len().next_power_of_two();
        let mut data = vec![NEVER; 2 * size];
        data[size..size + values.len()].copy_from_slice(values);
        for p in (1..size).rev() {
            data[p] = data[2 * p].min(data[2 * p + 1]);
        }
        MinTree { size, data }
    }

    fn set(&mut self, slot: usize, value: u64) {
        let mut p = slot + self.size;
        self.data[p] = value;
        while p > 1 {
            p /= 2;
            self.data[p] = self.data[2 * p].min(self.data[2 * p + 1]);
        }
    }

    fn min(&self) -> u64 {
        self.data[1]
    }

    /// The minimum over every slot but this one.
    fn min_except(&self, slot: usize) -> u64 {
        let (mut p, mut min) = (slot + self.size, NEVER);
        while p > 1 {
            min = min.min(self.data[p ^ 1]);
            p /= 2;
        }
        min
    }
}

/// A fast hasher for the memo keys (they are exact; the hash only picks buckets).
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z ^= z >> 33;
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
}

/// How an operation may be linearized in the current configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    /// Valid now and never changes the state: linearize it now, with no alternative.
    Forced,
    /// One of the choices to try.
    Candidate,
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// One level of the depth-first search: the candidates of a configuration.
struct Frame {
    start: usize,
    end: usize,
    next: usize,
    /// The candidate currently linearized below this level.
    taken: Option<(usize, Undo)>,
}

/// The search state of one key (see the module documentation).
struct Search {
    /// Acknowledged operations first (by call time), then optional ones (by call time).
    ops: Vec<SOp>,
    nreq: usize,
    req_words: usize,
    model: Model,
    /// The value a put stores in the model: its own when some read returned it, else one shared
    /// value nobody read, so that unobserved puts are interchangeable.
    push_value: Vec<u64>,
    /// Interchangeable optional operations: (class, rank by call time).
    class: Vec<Option<(usize, u32)>>,
    class_used: Vec<u32>,
    /// Versions an optional put may take: those at which its value (written by no other put)
    /// was read.
    allowed: Vec<Option<Vec<u64>>>,
    /// Per acknowledged operation: the highest version at which it can still be linearized after
    /// more puts (it is doomed once `highest` passes it).
    put_deadline: Vec<u64>,
    /// Per acknowledged operation: a delete at `highest >= this` makes it impossible.
    del_deadline: Vec<u64>,
    put_tree: MinTree,
    del_tree: MinTree,
    /// Acknowledged not-found reads not yet linearized: only they can need a delete.
    notfound_left: usize,
    required_left: usize,
    next: Vec<usize>,
    prev: Vec<usize>,
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    call_entry: Vec<usize>,
    ret_entry: Vec<usize>,
    bits: Vec<u64>,
    memo: HashSet<Box<[u64]>, BuildHasherDefault<FxHasher>>,
    key: Vec<u64>,
    cands: Vec<(usize, Effect)>,
    frames: Vec<Frame>,
    steps: u64,
    budget: u64,
}

/// Decides whether these operations of one key are linearizable (on the relaxed model when
/// `relaxed`, see [`Model`]); returns the steps used.
fn search(ops: &[SOp], max_versions: u64, budget: u64, relaxed: bool) -> (Verdict, u64) {
    let mut s = Search::new(ops, max_versions, budget, relaxed);
    let verdict = s.run();
    (verdict, s.steps)
}

impl Search {
    fn new(input: &[SOp], max_versions: u64, budget: u64, relaxed: bool) -> Self {
        let mut ops = input.to_vec();
        ops.sort_by_key(|o| (o.ret.is_none(), o.call, o.ret_time, o.event));
        let n = ops.len();
        let nreq = ops.iter().take_while(|o| o.ret.is_some()).count();

        // Values some read returned, with the versions they were read at.
        let mut observed: HashMap<u64, Vec<u64>> = HashMap::new();
        for o in &ops {
            if let Some(Ret::Found { version, value }) = o.ret {
                observed.entry(value).or_default().push(version);
            }
        }
        let mut unread = u64::MAX;
        while observed.contains_key(&unread) {
            unread = unread.wrapping_sub(1);
        }
        let mut writers: HashMap<u64, usize> = HashMap::new();
        for o in &ops {
            if let Op::Put { value, .. } = o.op {
                *writers.entry(value).or_default() += 1;
            }
        }

        let mut push_value = vec![0; n];
        let mut allowed = vec![None; n];
        let mut class = vec![None; n];
        let mut classes: HashMap<(u8, Option<u64>), (usize, u32)> = HashMap::new();
        for (i, o) in ops.iter().enumerate() {
            let class_key = match o.op {
                Op::Put { value, expected } => match observed.get(&value) {
                    Some(versions) => {
                        push_value[i] = value;
                        // (In the relaxed model a read may stand for an unseen writer.)
                        if o.ret.is_none() && writers.get(&value) == Some(&1) && !relaxed {
                            let mut versions = versions.clone();
                            versions.sort_unstable();
                            versions.dedup();
                            allowed[i] = Some(versions);
                        }
                        None
                    }
                    None => {
                        push_value[i] = unread;
                        Some((1, expected))
                    }
                },
                Op::Delete => Some((0, None)),
                Op::Get { .. } => None,
            };
            if let (None, Some(class_key)) = (o.ret, class_key) {
                let next_id = classes.len();
                let entry = classes.entry(class_key).or_insert((next_id, 0));
                class[i] = Some((entry.0, entry.1));
                entry.1 += 1;
            }
        }

        let mut put_deadline = vec![NEVER; nreq];
        let mut del_deadline = vec![NEVER; nreq];
        let mut notfound_left = 0;
        for (i, o) in ops[..nreq].iter().enumerate() {
            match (o.op, o.ret) {
                (Op::Put { .. }, Some(Ret::Written { version })) => put_deadline[i] = version.saturating_sub(1),
                (Op::Get { version: None }, Some(Ret::Found { version, .. })) => {
                    put_deadline[i] = version;
                    del_deadline[i] = version;
                }
                (Op::Get { version: Some(_) }, Some(Ret::Found { version, .. })) => {
                    put_deadline[i] = version.saturating_add(max_versions - 1);
                    del_deadline[i] = version;
                }
                (Op::Get { .. }, Some(Ret::NotFound)) => notfound_left += 1,
                (Op::Delete, Some(Ret::NotFound)) => put_deadline[i] = 0,
                _ => {}
            }
        }

        // Call and return entries, sorted by time with calls first on ties; entry 0 is the head.
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, o) in ops.iter().enumerate() {
            entries.push((o.call, false, i));
            entries.push((o.ret_time.max(o.call), true, i));
        }
        entries.sort_unstable();
        let total = entries.len() + 1;
        let mut entry_op = vec![0; total];
        let mut entry_is_call = vec![false; total];
        let mut call_entry = vec![0; n];
        let mut ret_entry = vec![0; n];
        for (k, &(_, is_ret, i)) in entries.iter().enumerate() {
            let e = k + 1;
            entry_op[e] = i;
            entry_is_call[e] = !is_ret;
            if is_ret {
                ret_entry[i] = e;
            } else {
                call_entry[i] = e;
            }
        }
        let next = (0..total).map(|e| if e + 1 < total { e + 1 } else { NIL }).collect();
        let prev = (0..total).map(|e| if e == 0 { NIL } else { e - 1 }).collect();
        let req_words = nreq.div_ceil(64);
        let opt_words = (n - nreq).div_ceil(64);
        Search {
            put_tree: MinTree::new(&put_deadline),
            del_tree: MinTree::new(&del_deadline),
            ops,
            nreq,
            req_words,
            model: Model::new(max_versions, relaxed),
            push_value,
            class,
            class_used: vec![0; classes.len()],
            allowed,
            put_deadline,
            del_deadline,
            notfound_left,
            required_left: nreq,
            next,
            prev,
            entry_op,
            entry_is_call,
            call_entry,
            ret_entry,
            bits: vec![0; req_words + opt_words],
            memo: HashSet::default(),
            key: Vec::new(),
            cands: Vec::new(),
            frames: Vec::new(),
            steps: 0,
            budget,
        }
    }

    fn run(&mut self) -> Verdict {
        if self.required_left == 0 {
            return Verdict::Linearizable;
        }
        self.expand();
        loop {
            if self.steps >= self.budget {
                return Verdict::Inconclusive;
            }
            self.steps += 1;
            let Some(top) = self.frames.len().checked_sub(1) else {
                return Verdict::NotLinearizable;
            };
            if let Some((i, undo)) = self.frames[top].taken.take() {
                self.retract(i, undo);
            }
            let frame = &mut self.frames[top];
            if frame.next == frame.end {
                let start = frame.start;
                self.cands.truncate(start);
                self.frames.pop();
                continue;
            }
            let (i, effect) = self.cands[frame.next];
            frame.next += 1;
            if let Some(undo) = self.advance(i, effect) {
                self.frames[top].taken = Some((i, undo));
                if self.required_left == 0 {
                    return Verdict::Linearizable;
                }
                self.expand();
            }
        }
    }

    /// Pushes a frame with the candidates of the current configuration: the operations whose call
    /// precedes every pending return and that may be linearized now. An operation that can never
    /// change the state (a read, a cas-mismatch, a not-found delete) and is valid now is the only
    /// candidate when there is one: in any valid order from here it can be moved to the front.
    fn expand(&mut self) {
        let start = self.cands.len();
        let mut forced = None;
        let mut e = self.next[HEAD];
        while e != NIL && self.entry_is_call[e] {
            self.steps += 1;
            let i = self.entry_op[e];
            match self.admissible(i) {
                Some((Admit::Forced, effect)) => {
                    forced = Some((i, effect));
                    break;
                }
                Some((Admit::Candidate, effect)) => self.cands.push((i, effect)),
                None => {}
            }
            e = self.next[e];
        }
        if let Some(choice) = forced {
            self.cands.truncate(start);
            self.cands.push(choice);
        }
        self.frames.push(Frame { start, end: self.cands.len(), next: start, taken: None });
    }

    /// Whether op `i` may be linearized now, and how, with its effect.
    fn admissible(&self, i: usize) -> Option<(Admit, Effect)> {
        let o = &self.ops[i];
        if let Some((c, rank)) = self.class[i] {
            if rank != self.class_used[c] {
                return None;
            }
        }
        let (ret, mut effect) = self.model.predict(&o.op, self.push_value[i]);
        match o.ret {
            Some(observed) if observed != ret => {
                if !self.model.relaxed {
                    return None;
                }
                let push = match o.op {
                    Op::Put { .. } => self.push_value[i],
                    _ => 0,
                };
                effect = self.model.relax(&o.op, observed, push)?;
            }
            None if matches!(effect, Effect::None) => return None,
            _ => {}
        }
        let h = self.model.highest();
        match effect {
            Effect::Push(_) | Effect::Jump { .. } => {
                // Raising the highest version past another pending operation's deadline makes
                // that operation impossible forever.
                let raised = if let Effect::Jump { to, .. } = effect { to } else { h + 1 };
                let others = if i < self.nreq { self.put_tree.min_except(i) } else { self.put_tree.min() };
                if others < raised {
                    return None;
                }
                if let Some(versions) = &self.allowed[i] {
                    if versions.binary_search(&(h + 1)).is_err() {
                        return None;
                    }
                }
            }
            // A delete that deletes a version a pending read finds, or an unknown one that no
            // pending not-found read could need.
            Effect::Delete if self.del_tree.min() <= h || (o.ret.is_none() && self.notfound_left == 0) => {
                return None;
            }
            _ => {}
        }
        // A delete that changes nothing now may still delete something later: not forced.
        let pure = matches!(o.ret, Some(Ret::Found { .. } | Ret::NotFound | Ret::CasMismatch));
        let admit = if pure && matches!(effect, Effect::None) { Admit::Forced } else { Admit::Candidate };
        Some((admit, effect))
    }

    /// Linearizes op `i` with `effect` unless the resulting configuration was visited before.
    fn advance(&mut self, i: usize, effect: Effect) -> Option<Undo> {
        let undo = self.model.commit(effect);
        self.mark(i, true);
        if !self.remember() {
            self.mark(i, false);
            self.model.undo(undo);
            return None;
        }
        self.lift(i);
        Some(undo)
    }

    fn retract(&mut self, i: usize, undo: Undo) {
        self.unlift(i);
        self.mark(i, false);
        self.model.undo(undo);
    }

    /// Records op `i` as linearized (`on`) or not in the bitset and the bookkeeping.
    fn mark(&mut self, i: usize, on: bool) {
        let bit = if i < self.nreq { i } else { self.req_words * 64 + (i - self.nreq) };
        self.bits[bit / 64] ^= 1 << (bit % 64);
        if let Some((c, _)) = self.class[i] {
            if on {
                self.class_used[c] += 1;
            } else {
                self.class_used[c] -= 1;
            }
        }
        if i < self.nreq {
            let (put, del) = if on { (NEVER, NEVER) } else { (self.put_deadline[i], self.del_deadline[i]) };
            self.put_tree.set(i, put);
            self.del_tree.set(i, del);
            let not_found = matches!((self.ops[i].op, self.ops[i].ret), (Op::Get { .. }, Some(Ret::NotFound)));
            if on {
                self.required_left -= 1;
                self.notfound_left -= usize::from(not_found);
            } else {
                self.required_left += 1;
                self.notfound_left += usize::from(not_found);
            }
        }
    }

    /// Adds the current configuration to the memo; false when it was already there.
    ///
    /// The key is exact: the model state (highest, first readable version, kept values) and the
    /// linearized set, with the leading all-linearized words of the acknowledged part counted
    /// rather than stored, and trailing empty words left out.
    fn remember(&mut self) -> bool {
        let key = &mut self.key;
        key.clear();
        key.push(self.model.highest());
        key.push(self.model.dead_upto());
        key.extend_from_slice(self.model.kept());
        if self.model.relaxed {
            for chunk in self.model.kept_ghosts().chunks(64) {
                key.push(chunk.iter().enumerate().fold(0, |word, (k, &g)| word | (u64::from(g) << k)));
            }
        }
        let req = &self.bits[..self.req_words];
        let lead = req.iter().take_while(|w| **w == u64::MAX).count();
        let end = req.iter().rposition(|w| *w != 0).map_or(lead, |p| p + 1).max(lead);
        key.push(lead as u64);
        key.push((end - lead) as u64);
        key.extend_from_slice(&req[lead..end]);
        key.extend_from_slice(&self.bits[self.req_words..]);
        if self.memo.contains(&key[..]) {
            return false;
        }
        self.memo.insert(key.clone().into_boxed_slice());
        true
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, i: usize) {
        self.unlink(self.call_entry[i]);
        self.unlink(self.ret_entry[i]);
    }

    fn unlift(&mut self, i: usize) {
        self.relink(self.ret_entry[i]);
        self.relink(self.call_entry[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Shrinking
// ---------------------------------------------------------------------------------------------

/// The operations invoked by `cutoff`; those completing after it become unknown (reads among
/// them are dropped, as unknown reads tell nothing).
fn prefix(ops: &[SOp], cutoff: u64) -> Vec<SOp> {
    ops.iter()
        .filter(|o| o.call <= cutoff)
        .filter_map(|o| {
            if o.ret_time <= cutoff {
                Some(*o)
            } else if matches!(o.op, Op::Get { .. }) {
                None
            } else {
                Some(SOp { ret: None, ret_time: NEVER, ..*o })
            }
        })
        .collect()
}

/// How many of the last operations (sorted by invocation) still fail, at the fewest: tries the
/// last 1, 2, 4, ... until one fails, then binary search between the last two sizes. `None` when
/// even all of them pass.
fn shortest_failing_suffix(ops: &[SOp], relaxed: bool, fails: &mut impl FnMut(&[SOp], bool) -> bool) -> Option<usize> {
    let n = ops.len();
    let (mut passing, mut size) = (0, 1.min(n));
    loop {
        if fails(&ops[n - size..], relaxed) {
            break;
        }
        if size == n {
            return None;
        }
        passing = size;
        size = (2 * size).min(n);
    }
    while size - passing > 1 {
        let mid = passing + (size - passing) / 2;
        if fails(&ops[n - mid..], relaxed) {
            size = mid;
        } else {
            passing = mid;
        }
    }
    Some(size)
}

/// Shrinks a non-linearizable set of operations of one key. Returns the kept operations and the
/// event whose completion ends the shortest failing prefix.
///
/// Every candidate is checked on its own, as a closed history; dropping a put then usually
/// fails for a trivial reason (a skipped version). So where the relaxed model (which allows for
/// left-out puts, see [`Model`]) still rejects the prefix, the rest of the shrinking uses it:
/// first the shortest failing suffix (by invocation), then single drops. Either way, what is
/// returned fails the strict check by itself.
fn shrink(ops: &[SOp], max_versions: u64, options: &CheckOptions) -> (Vec<SOp>, Option<usize>) {
    let mut allowance = options.shrink_budget;
    let mut fails = |candidate: &[SOp], relaxed: bool| {
        if allowance == 0 {
            return false;
        }
        let (verdict, steps) = search(candidate, max_versions, options.step_budget.min(allowance), relaxed);
        allowance = allowance.saturating_sub(steps);
        verdict == Verdict::NotLinearizable
    };

    // 1. The shortest failing prefix: failing is monotone in the cutoff, so binary search.
    let mut cutoffs: Vec<u64> =
        ops.iter().filter(|o| o.ret.is_some() && o.ret_time != NEVER).map(|o| o.ret_time).collect();
    cutoffs.sort_unstable();
    cutoffs.dedup();
    let mut current = ops.to_vec();
    let mut culprit = None;
    if let Some(&last) = cutoffs.last() {
        if fails(&prefix(ops, last), false) {
            let (mut lo, mut hi) = (0, cutoffs.len() - 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if fails(&prefix(ops, cutoffs[mid]), false) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            current = prefix(ops, cutoffs[hi]);
            culprit = current.iter().filter(|o| o.ret.is_some() && o.ret_time == cutoffs[hi]).map(|o| o.event).min();
        }
    }
    current.sort_by_key(|o| (o.call, o.event));

    // 2. The shortest failing suffix (by invocation), with the relaxed model where it fails at
    //    all, else with the strict one (then the failure is a skipped version or an unwritten
    //    value, which a suffix shows as well as anything).
    let n = current.len();
    let mut relaxed = true;
    let size = match shortest_failing_suffix(&current, true, &mut fails) {
        Some(size) => size,
        None => {
            relaxed = false;
            shortest_failing_suffix(&current, false, &mut fails).unwrap_or(n)
        }
    };
    current.drain(..n - size);

    // 3. Drop single operations, latest first (they are the closest to the failure).
    let order: Vec<usize> = current.iter().rev().map(|o| o.event).collect();
    let limit = options.shrink_candidates.min(order.len());
    for &event in &order[..limit] {
        let trial: Vec<SOp> = current.iter().copied().filter(|o| o.event != event).collect();
        if trial.len() < current.len() && fails(&trial, relaxed) {
            current = trial;
        }
    }
    // 4. The operations too old to be tried one by one: drop them in chunks, halving a chunk
    //    that can not go as a whole (newer half first), down to single operations.
    let mut chunks: Vec<Vec<usize>> = vec![order[limit..].to_vec()];
    while let Some(chunk) = chunks.pop() {
        if chunk.is_empty() {
            continue;
        }
        let drop: HashSet<usize> = chunk.iter().copied().collect();
        let trial: Vec<SOp> = current.iter().copied().filter(|o| !drop.contains(&o.event)).collect();
        if trial.len() < current.len() && fails(&trial, relaxed) {
            current = trial;
        } else if chunk.len() > 1 {
            let (newer, older) = chunk.split_at(chunk.len() / 2);
            chunks.push(older.to_vec());
            chunks.push(newer.to_vec());
        }
    }
    (current, culprit)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const MS: u64 = 1_000_000;

    /// Builds histories; times are in milliseconds.
    #[derive(Default)]
    struct H {
        events: Vec<Event>,
    }

    impl H {
        fn add(
            &mut self,
            process: u32,
            key: &str,
            op: Op,
            outcome: Outcome,
            invoke: u64,
            complete: Option<u64>,
        ) -> u64 {
            let id = self.events.len() as u64 + 1;
            self.events.push(Event {
                id,
                process,
                node: process % 3,
                key: key.to_string(),
                op,
                outcome,
                invoke_ns: invoke * MS,
                complete_ns: complete.map(|c| c * MS),
            });
            id
        }

        /// An operation on key "k" that completed at `end`.
        fn ok(&mut self, process: u32, op: Op, ret: Ret, start: u64, end: u64) -> u64 {
            self.add(process, "k", op, Outcome::Ok(ret), start, Some(end))
        }

        fn unknown(&mut self, process: u32, op: Op, start: u64) -> u64 {
            self.add(process, "k", op, Outcome::Unknown, start, None)
        }
    }

    fn put(value: u64) -> Op {
        Op::Put { value, expected: None }
    }
    fn cas(value: u64, expected: u64) -> Op {
        Op::Put { value, expected: Some(expected) }
    }
    fn latest() -> Op {
        Op::Get { version: None }
    }
    fn at(version: u64) -> Op {
        Op::Get { version: Some(version) }
    }
    fn written(version: u64) -> Ret {
        Ret::Written { version }
    }
    fn found(version: u64, value: u64) -> Ret {
        Ret::Found { version, value }
    }

    fn kinds(report: &Report) -> Vec<AnomalyKind> {
        report.anomalies.iter().map(|a| a.kind).collect()
    }

    fn assert_valid(report: &Report) {
        assert!(report.is_valid(), "expected a valid history, got:\n{}", render(report));
    }

    /// Asserts that the report is invalid with `kind` among its anomalies, and that the search
    /// agrees (every direct anomaly is also a linearizability violation).
    fn assert_flags(report: &Report, kind: AnomalyKind) {
        assert!(report.has(kind), "expected {kind}, got:\n{}", render(report));
        assert!(report.has(AnomalyKind::NotLinearizable), "search disagrees:\n{}", render(report));
    }

    fn not_linearizable(report: &Report) -> &Anomaly {
        report
            .anomalies
            .iter()
            .find(|a| a.kind == AnomalyKind::NotLinearizable)
            .unwrap_or_else(|| panic!("expected NotLinearizable, got:\n{}", render(report)))
    }

    #[test]
    fn valid_concurrent_history_has_no_anomalies() {
        let mut h = H::default();
        // Two overlapping puts; a read between them; a read of a specific version.
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, put(2), written(2), 5, 15);
        h.ok(3, latest(), found(1, 1), 6, 12);
        h.ok(4, at(1), found(1, 1), 20, 25);
        h.ok(5, latest(), found(2, 2), 20, 26);
        // A successful CAS and a concurrent one that lost.
        h.ok(1, cas(3, 2), written(3), 30, 40);
        h.ok(2, cas(4, 2), Ret::CasMismatch, 32, 45);
        // A delete, with a read overlapping it that still saw the old version.
        h.ok(3, Op::Delete, Ret::Deleted, 50, 60);
        h.ok(4, latest(), found(3, 3), 55, 58);
        h.ok(5, at(2), Ret::NotFound, 61, 62);
        h.ok(5, latest(), Ret::NotFound, 63, 64);
        // A definite failure, an unknown put that never took effect, an unknown read.
        h.add(1, "k", put(5), Outcome::Fail, 70, Some(80));
        h.unknown(2, put(6), 70);
        h.unknown(6, latest(), 71);
        // Versions keep growing after the delete.
        h.ok(3, put(7), written(4), 90, 100);
        h.ok(4, latest(), found(4, 7), 105, 110);
        h.ok(5, at(3), Ret::NotFound, 105, 111);
        h.ok(1, Op::Delete, Ret::Deleted, 120, 130);
        h.ok(1, Op::Delete, Ret::Deleted, 131, 132);
        // Another key that never existed.
        h.add(1, "other", Op::Delete, Outcome::Ok(Ret::NotFound), 0, Some(1));
        h.add(2, "other", latest(), Outcome::Ok(Ret::NotFound), 2, Some(3));
        h.add(3, "other", cas(1, 1), Outcome::Ok(Ret::CasMismatch), 4, Some(5));
        h.add(3, "other", cas(1, 0), Outcome::Ok(written(1)), 6, Some(7));
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_valid(&report);
        assert_eq!(report.keys, 2);
        assert_eq!(report.ops, h.events.len());
    }

    #[test]
    fn unknown_put_that_was_read_is_accepted() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.unknown(2, put(2), 11);
        h.ok(3, latest(), found(2, 2), 20, 25);
        h.ok(1, put(3), written(3), 30, 35);
        h.ok(4, at(2), found(2, 2), 40, 45);
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
    }

    #[test]
    fn unknown_put_never_observed_is_accepted() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.unknown(2, put(2), 11);
        h.unknown(5, cas(9, 1), 12);
        h.unknown(6, Op::Delete, 13);
        h.ok(3, latest(), found(1, 1), 20, 25);
        h.ok(1, put(3), written(2), 30, 35);
        h.ok(4, latest(), found(2, 3), 40, 45);
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
    }

    #[test]
    fn unknown_put_that_fills_a_version_is_accepted() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.unknown(2, put(2), 11);
        h.ok(1, put(3), written(3), 30, 35);
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
    }

    #[test]
    fn stale_read_is_not_linearizable_with_a_small_sub_history() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, put(2), written(2), 20, 30);
        let stale = h.ok(3, latest(), found(1, 1), 40, 50);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_eq!(kinds(&report), vec![AnomalyKind::NotLinearizable], "{}", render(&report));
        let sub = &not_linearizable(&report).sub_history;
        assert!(sub.len() <= 3, "{}", render(&report));
        assert!(sub.iter().any(|e| e.id == stale), "{}", render(&report));
        assert!(sub.windows(2).all(|w| w[0].invoke_ns <= w[1].invoke_ns));
    }

    #[test]
    fn lost_write_is_rejected() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, put(2), written(2), 11, 19);
        let w = h.ok(2, put(5), written(3), 20, 30);
        let r = h.ok(3, at(3), Ret::NotFound, 40, 50);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_flags(&report, AnomalyKind::LostWrite);
        let lost = report.anomalies.iter().find(|a| a.kind == AnomalyKind::LostWrite).expect("lost write");
        assert_eq!(lost.sub_history.iter().map(|e| e.id).collect::<Vec<_>>(), vec![w, r]);
    }

    #[test]
    fn lost_write_needs_a_read_that_started_after_the_put() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, put(5), written(2), 20, 30);
        h.ok(3, at(2), Ret::NotFound, 25, 50);
        h.ok(3, latest(), Ret::NotFound, 0, 1);
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
    }

    #[test]
    fn latest_read_missing_after_a_put_is_a_lost_write() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, latest(), Ret::NotFound, 20, 30);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::LostWrite);
        // An unknown delete that may have run in between explains it.
        h.unknown(3, Op::Delete, 5);
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
    }

    #[test]
    fn duplicate_version_is_rejected() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, put(2), written(2), 20, 30);
        h.ok(3, put(3), written(2), 25, 35);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_flags(&report, AnomalyKind::DuplicateVersion);
        let dup = report.anomalies.iter().find(|a| a.kind == AnomalyKind::DuplicateVersion).expect("duplicate");
        assert_eq!(dup.sub_history.len(), 2);
    }

    #[test]
    fn value_nobody_wrote_is_rejected() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, latest(), found(1, 99), 20, 30);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::UnwrittenValue);
    }

    #[test]
    fn value_at_the_wrong_version_or_from_a_failed_put_is_rejected() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, put(2), written(2), 11, 12);
        h.ok(2, at(2), found(2, 1), 20, 30);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::UnwrittenValue);

        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.add(2, "k", put(2), Outcome::Fail, 11, Some(12));
        h.ok(3, at(2), found(2, 2), 20, 30);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_flags(&report, AnomalyKind::UnwrittenValue);
        assert!(render(&report).contains("failed"), "{}", render(&report));

        // A read that completed before the put of its value started.
        let mut h = H::default();
        h.ok(2, latest(), found(1, 7), 0, 5);
        h.ok(1, put(7), written(1), 10, 20);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::UnwrittenValue);
    }

    #[test]
    fn cas_written_twice_with_the_same_expected_version_is_rejected() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, cas(2, 1), written(2), 20, 30);
        h.ok(2, cas(3, 1), written(3), 40, 50);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_flags(&report, AnomalyKind::CasViolation);

        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, cas(2, 1), written(2), 20, 30);
        h.ok(2, cas(3, 1), written(2), 40, 50);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::DuplicateVersion);

        // A mismatch when nothing could have changed the highest version.
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, cas(2, 1), Ret::CasMismatch, 20, 30);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_eq!(kinds(&report), vec![AnomalyKind::NotLinearizable], "{}", render(&report));

        // ... but a concurrent put explains it.
        h.ok(2, put(3), written(2), 15, 25);
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
    }

    #[test]
    fn pruned_versions_are_not_found() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, put(2), written(2), 11, 19);
        h.ok(1, put(3), written(3), 20, 30);
        h.ok(2, at(1), Ret::NotFound, 40, 50);
        h.ok(2, at(2), found(2, 2), 51, 52);
        // A read overlapping the third put may still see version 1.
        h.ok(3, at(1), found(1, 1), 25, 35);
        assert_valid(&check(&h.events, 2));

        // Found after the third put completed: version 1 was already pruned.
        h.ok(4, at(1), found(1, 1), 40, 50);
        let report = check(&h.events, 2);
        assert_eq!(kinds(&report), vec![AnomalyKind::NotLinearizable], "{}", render(&report));

        // Version 2 is still kept with max_versions 2: not-found loses it.
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, put(2), written(2), 11, 19);
        h.ok(1, put(3), written(3), 20, 30);
        h.ok(2, at(2), Ret::NotFound, 40, 50);
        assert_flags(&check(&h.events, 2), AnomalyKind::LostWrite);
    }

    #[test]
    fn read_after_delete_of_an_old_live_version_is_rejected() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, Op::Delete, Ret::Deleted, 20, 30);
        h.ok(3, latest(), found(1, 1), 25, 35); // overlaps the delete: fine
        assert_valid(&check(&h.events, DEFAULT_MAX_VERSIONS));
        let stale = h.ok(3, latest(), found(1, 1), 40, 50);
        let report = check(&h.events, DEFAULT_MAX_VERSIONS);
        assert_eq!(kinds(&report), vec![AnomalyKind::NotLinearizable], "{}", render(&report));
        assert!(not_linearizable(&report).sub_history.iter().any(|e| e.id == stale));

        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, Op::Delete, Ret::Deleted, 20, 30);
        h.ok(3, at(1), found(1, 1), 40, 50);
        assert!(check(&h.events, DEFAULT_MAX_VERSIONS).has(AnomalyKind::NotLinearizable));

        // A delete of a key that never existed must say not-found.
        let mut h = H::default();
        h.ok(2, Op::Delete, Ret::Deleted, 20, 30);
        assert!(check(&h.events, DEFAULT_MAX_VERSIONS).has(AnomalyKind::NotLinearizable));
    }

    #[test]
    fn skipped_versions_are_a_hole() {
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(1, put(2), written(3), 20, 30);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::Hole);
        // A read of a version no put could have created yet.
        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, at(2), found(2, 5), 11, 12);
        h.ok(1, put(5), written(2), 20, 30);
        assert_flags(&check(&h.events, DEFAULT_MAX_VERSIONS), AnomalyKind::Hole);
    }

    #[test]
    fn tiny_budget_is_inconclusive_not_an_anomaly() {
        let mut h = H::default();
        for i in 0..20 {
            h.ok(1, put(i + 1), written(i + 1), 10 * i, 10 * i + 5);
        }
        let options = CheckOptions { step_budget: 5, ..CheckOptions::default() };
        let report = check_with(&h.events, &options);
        assert!(report.anomalies.is_empty());
        assert_eq!(report.inconclusive.len(), 1);
        assert!(render(&report).contains("inconclusive: key \"k\""));
    }

    #[test]
    fn display_and_render() {
        let e = Event {
            id: 12,
            process: 3,
            node: 2,
            key: "k".into(),
            op: cas(77, 3),
            outcome: Outcome::Ok(written(4)),
            invoke_ns: 1_204_000_000,
            complete_ns: Some(1_210_500_000),
        };
        assert_eq!(e.to_string(), "#12 p3@n2 [1.204000s..1.210500s] put(v=77, cas=3) -> written 4");
        let unknown = Event { op: at(2), outcome: Outcome::Unknown, complete_ns: None, ..e };
        assert_eq!(unknown.to_string(), "#12 p3@n2 [1.204000s..?] get(version=2) -> unknown");

        let mut h = H::default();
        h.ok(1, put(1), written(1), 0, 10);
        h.ok(2, latest(), found(1, 99), 20, 30);
        let text = render(&check(&h.events, DEFAULT_MAX_VERSIONS));
        assert!(text.starts_with("checked 1 keys, 2 ops: 2 anomalies, 0 inconclusive\n"), "{text}");
        assert!(text.contains("UnwrittenValue on key \"k\""), "{text}");
        assert!(text.contains("#2 p2@n2 [0.020000s..0.030000s] get(latest) -> found v=99 at version 1"), "{text}");
    }

    // --- generated histories --------------------------------------------------------------------

    /// splitmix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// An independent, straightforward reference implementation of one key.
    #[derive(Default)]
    struct Reference {
        highest: u64,
        versions: BTreeMap<u64, (u64, bool)>,
    }

    impl Reference {
        fn apply(&mut self, op: Op, max_versions: u64) -> Ret {
            match op {
                Op::Put { expected: Some(e), .. } if e != self.highest => Ret::CasMismatch,
                Op::Put { value, .. } => {
                    self.highest += 1;
                    self.versions.insert(self.highest, (value, true));
                    while self.versions.len() as u64 > max_versions {
                        self.versions.pop_first();
                    }
                    Ret::Written { version: self.highest }
                }
                Op::Get { version: None } => match self.versions.iter().rev().find(|(_, (_, live))| *live) {
                    Some((&version, &(value, _))) => Ret::Found { version, value },
                    None => Ret::NotFound,
                },
                Op::Get { version: Some(v) } => match self.versions.get(&v) {
                    Some(&(value, true)) => Ret::Found { version: v, value },
                    _ => Ret::NotFound,
                },
                Op::Delete if self.highest == 0 => Ret::NotFound,
                Op::Delete => {
                    self.versions.values_mut().for_each(|v| v.1 = false);
                    Ret::Deleted
                }
            }
        }
    }

    /// A linearizable history of `n` operations on key "k" from `procs` concurrent processes
    /// (`deletes` percent of them deletes):
    /// each operation takes effect at a random point of its interval (or not at all, for failed
    /// and half of the unknown ones). Returns it with the final highest version and end time.
    fn generate(seed: u64, n: usize, procs: usize, max_versions: u64, deletes: u64) -> (Vec<Event>, u64, u64) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mode {
            Normal,
            UnknownApplied,
            UnknownLost,
            Fail,
        }
        let mut rng = Rng(seed);
        let mut clock = vec![0u64; procs];
        // (linearization point, id, process, invoke, complete, kind, mode)
        let mut plans = Vec::new();
        for id in 0..n as u64 {
            let p = (0..procs).min_by_key(|&p| clock[p]).expect("processes");
            let invoke = clock[p] + rng.below(300_000);
            let duration = 50_000 + rng.below(2_000_000);
            let lin = invoke + rng.below(duration + 1);
            let kind = rng.below(100);
            let mode = match rng.below(100) {
                0..=2 => Mode::UnknownApplied,
                3..=5 => Mode::UnknownLost,
                6..=7 => Mode::Fail,
                _ => Mode::Normal,
            };
            clock[p] = invoke + duration;
            plans.push((lin, id + 1, p as u32, invoke, invoke + duration, kind, mode));
        }
        plans.sort_unstable_by_key(|p| (p.0, p.1));
        let mut model = Reference::default();
        let mut events = Vec::new();
        for (_, id, process, invoke, complete, kind, mode) in plans {
            let op = if kind < deletes {
                Op::Delete
            } else {
                match rng.below(100) {
                    0..=34 => put(id),
                    35..=49 => {
                        let e = if rng.below(3) == 0 { model.highest.saturating_sub(1) } else { model.highest };
                        cas(id, e)
                    }
                    50..=74 => latest(),
                    _ => at(model.highest.saturating_sub(rng.below(max_versions + 3))),
                }
            };
            let (outcome, complete_ns) = match mode {
                Mode::Normal => (Outcome::Ok(model.apply(op, max_versions)), Some(complete)),
                Mode::UnknownApplied => {
                    model.apply(op, max_versions);
                    (Outcome::Unknown, None)
                }
                Mode::UnknownLost => (Outcome::Unknown, None),
                Mode::Fail => (Outcome::Fail, Some(complete)),
            };
            events.push(Event {
                id,
                process,
                node: process % 3,
                key: "k".into(),
                op,
                outcome,
                invoke_ns: invoke,
                complete_ns,
            });
        }
        events.sort_by_key(|e| (e.invoke_ns, e.id));
        let end = clock.iter().copied().max().unwrap_or(0);
        (events, model.highest, end)
    }

    #[test]
    fn generated_valid_histories_pass() {
        for seed in 0..60u64 {
            let max_versions = 1 + seed % 12;
            let (mut events, _, _) = generate(seed, 300, 2 + (seed % 14) as usize, max_versions, seed % 15);
            // Forgetting results only makes a history easier to explain.
            let mut rng = Rng(seed);
            let forget = seed % 40;
            for e in events.iter_mut() {
                if rng.below(100) < forget {
                    e.outcome = Outcome::Unknown;
                    e.complete_ns = None;
                }
            }
            let report = check(&events, max_versions);
            assert!(report.is_valid(), "seed {seed}:\n{}", render(&report));
        }
    }

    #[test]
    fn corrupted_histories_are_flagged_with_tiny_sub_histories() {
        let mut rng = Rng(5);
        let mut flagged = 0;
        for seed in 0..60u64 {
            let max_versions = 1 + seed % 12;
            let (mut events, _, _) = generate(seed * 11 + 1, 300, 2 + (seed % 14) as usize, max_versions, seed % 10);
            mutate(&mut rng, &mut events);
            let report = check(&events, max_versions);
            assert!(report.inconclusive.is_empty(), "{}", render(&report));
            if let Some(a) = report.anomalies.iter().find(|a| a.kind == AnomalyKind::NotLinearizable) {
                flagged += 1;
                assert!(a.sub_history.len() <= 4, "seed {seed}:\n{}", render(&report));
                assert!(!brute_force(&a.sub_history, max_versions), "seed {seed}:\n{}", render(&report));
            } else {
                assert!(report.is_valid(), "seed {seed}:\n{}", render(&report));
            }
        }
        assert!(flagged >= 30, "only {flagged} of 60 corrupted histories flagged");
    }

    #[test]
    fn large_concurrent_history_checks_fast() {
        let (events, _, _) = generate(42, 3000, 12, DEFAULT_MAX_VERSIONS, 2);
        let unknown = events.iter().filter(|e| e.outcome == Outcome::Unknown).count();
        assert!(unknown > 50, "only {unknown} unknown operations");
        let start = Instant::now();
        let report = check(&events, DEFAULT_MAX_VERSIONS);
        let elapsed = start.elapsed();
        assert!(report.anomalies.is_empty(), "{}", render(&report));
        assert!(report.inconclusive.is_empty(), "{}", render(&report));
        eprintln!("3000 ops, {unknown} unknown: {} search steps in {elapsed:?}", report.search_steps);
        assert!(report.search_steps < 200_000, "search took {} steps", report.search_steps);
    }

    #[test]
    fn stale_read_at_the_end_of_a_large_history_shrinks_to_a_few_operations() {
        let (mut events, highest, end) = generate(7, 600, 12, DEFAULT_MAX_VERSIONS, 2);
        let base = end / MS + 10;
        let mut h = H { events: Vec::new() };
        h.ok(1, put(1_000_001), written(highest + 1), base, base + 1);
        h.ok(2, put(1_000_002), written(highest + 2), base + 2, base + 3);
        h.ok(3, latest(), found(highest + 1, 1_000_001), base + 4, base + 5);
        let stale_id = 1_000_003;
        for (n, mut e) in h.events.into_iter().enumerate() {
            e.id = 1_000_001 + n as u64;
            events.push(e);
        }
        let report = check(&events, DEFAULT_MAX_VERSIONS);
        assert_eq!(kinds(&report), vec![AnomalyKind::NotLinearizable], "{}", render(&report));
        let sub = &not_linearizable(&report).sub_history;
        assert!(sub.len() <= 3, "{}", render(&report));
        assert!(sub.iter().any(|e| e.id == stale_id), "{}", render(&report));
        assert!(not_linearizable(&report).message.contains(&format!("#{stale_id}")), "{}", render(&report));
    }

    /// Exhaustive linearizability check for tiny histories, on the reference model: tries every
    /// order that respects real time, with unknown operations placed anywhere or nowhere.
    fn brute_force(events: &[Event], max_versions: u64) -> bool {
        fn go(ops: &[(Op, Option<Ret>, u64, u64)], used: &mut Vec<bool>, state: &Reference, mv: u64) -> bool {
            if ops.iter().zip(used.iter()).all(|(o, &u)| u || o.1.is_none()) {
                return true;
            }
            for x in 0..ops.len() {
                if used[x] {
                    continue;
                }
                // Every unused operation that completed before x was invoked must come first.
                if ops.iter().zip(used.iter()).any(|(y, &u)| !u && y.1.is_some() && y.3 < ops[x].2) {
                    continue;
                }
                let mut next = Reference { highest: state.highest, versions: state.versions.clone() };
                let ret = next.apply(ops[x].0, mv);
                if ops[x].1.is_some_and(|r| r != ret) {
                    continue;
                }
                used[x] = true;
                let ok = go(ops, used, &next, mv);
                used[x] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        let ops: Vec<(Op, Option<Ret>, u64, u64)> = events
            .iter()
            .filter_map(|e| match (e.outcome, e.op) {
                (Outcome::Ok(r), op) => Some((op, Some(r), e.invoke_ns, e.complete_ns.unwrap_or(NEVER))),
                (Outcome::Unknown, Op::Get { .. }) | (Outcome::Fail, _) => None,
                (Outcome::Unknown, op) => Some((op, None, e.invoke_ns, NEVER)),
            })
            .collect();
        go(&ops, &mut vec![false; ops.len()], &Reference::default(), max_versions)
    }

    /// Changes one result of a history at random (or nothing), to get invalid histories too.
    fn mutate(rng: &mut Rng, events: &mut [Event]) {
        let values: Vec<u64> = events
            .iter()
            .filter_map(|e| match e.op {
                Op::Put { value, .. } => Some(value),
                _ => None,
            })
            .collect();
        let i = rng.below(events.len() as u64) as usize;
        let bump = |v: u64, rng: &mut Rng| if rng.below(2) == 0 { v + 1 } else { v.saturating_sub(1) };
        let e = &mut events[i];
        if let (Op::Put { expected, .. }, true) = (e.op, rng.below(6) == 0) {
            // Reuse another put's value.
            e.op = Op::Put { value: values[rng.below(values.len() as u64) as usize], expected };
            return;
        }
        if rng.below(5) == 0 {
            // Forget the result, or claim the operation completed at its invocation.
            if rng.below(2) == 0 {
                e.outcome = Outcome::Unknown;
                e.complete_ns = None;
            } else if e.complete_ns.is_some() {
                e.complete_ns = Some(e.invoke_ns);
            }
            return;
        }
        e.outcome = match (e.op, e.outcome) {
            (_, Outcome::Ok(Ret::Written { version })) => match rng.below(3) {
                0 => Outcome::Ok(Ret::CasMismatch),
                _ => Outcome::Ok(Ret::Written { version: bump(version, rng) }),
            },
            (Op::Put { .. }, Outcome::Ok(Ret::CasMismatch)) => Outcome::Ok(Ret::Written { version: 1 + rng.below(4) }),
            (_, Outcome::Ok(Ret::Found { version, value })) => match rng.below(3) {
                0 => Outcome::Ok(Ret::NotFound),
                1 => Outcome::Ok(Ret::Found { version: bump(version, rng), value }),
                _ => Outcome::Ok(Ret::Found {
                    version,
                    value: values[rng.below(values.len().max(1) as u64) as usize % values.len().max(1)],
                }),
            },
            (Op::Get { .. }, Outcome::Ok(Ret::NotFound)) if !values.is_empty() => Outcome::Ok(Ret::Found {
                version: 1 + rng.below(4),
                value: values[rng.below(values.len() as u64) as usize],
            }),
            (Op::Delete, Outcome::Ok(Ret::NotFound)) => Outcome::Ok(Ret::Deleted),
            (Op::Delete, Outcome::Ok(Ret::Deleted)) => Outcome::Ok(Ret::NotFound),
            (_, other) => other,
        };
    }

    #[test]
    fn search_direct_checks_and_shrinking_agree_with_brute_force() {
        const SEEDS: u64 = 4000;
        let mut rng = Rng(99);
        let (mut valid, mut invalid) = (0, 0);
        for seed in 0..SEEDS {
            let n = 2 + (seed % 8) as usize;
            let mv = 1 + seed % 3;
            let (mut events, _, _) = generate(1000 + seed, n, 2 + (seed % 3) as usize, mv, 5 + seed % 20);
            for _ in 0..seed % 3 {
                mutate(&mut rng, &mut events);
            }
            let expected = brute_force(&events, mv);
            let report = check(&events, mv);
            let listing: Vec<String> = events.iter().map(|e| e.to_string()).collect();
            let context = format!("seed {seed}, max_versions {mv}\n{}\n{}", listing.join("\n"), render(&report));
            assert!(report.inconclusive.is_empty(), "{context}");
            assert_eq!(!report.has(AnomalyKind::NotLinearizable), expected, "{context}");
            // Direct anomalies are sound: only invalid histories have any.
            assert_eq!(report.anomalies.is_empty(), expected, "{context}");
            for a in &report.anomalies {
                assert!(!brute_force(&a.sub_history, mv), "sub-history of {} is linearizable:\n{context}", a.kind);
            }
            // The relaxed model used for shrinking accepts at least what the strict one does.
            let ops = search_ops(&events, &(0..events.len()).collect::<Vec<_>>());
            if search(&ops, mv, DEFAULT_STEP_BUDGET, true).0 == Verdict::NotLinearizable {
                assert!(!expected, "relaxed model rejects a linearizable history:\n{context}");
            }
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        eprintln!("{valid} valid, {invalid} invalid");
        assert!(valid > SEEDS / 6 && invalid > SEEDS / 6, "{valid} valid, {invalid} invalid");
    }
}
