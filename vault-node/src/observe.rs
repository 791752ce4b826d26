//! What an operator watches: Prometheus metrics, liveness and readiness, on their own HTTP
//! listener (`VAULT_METRICS_ADDR`), and the per-RPC request metrics layer of the API.
//!
//! Counters that belong to other parts (the DEK cache, the audit log, Raft, the re-wrap worker)
//! are read when `/metrics` is scraped; RPC and KMS calls are recorded as they happen. No label
//! ever carries a secret name, a token name, a key id or a client address: RPC labels come from
//! the fixed table of the API's methods, anything else is `other`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use http_body::{Body as HttpBody, Frame};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::rpcs;
use crate::rewrap::Rewrapper;
use crate::vault::Vault;

/// Why a node is not ready: a coarse reason that anyone may be shown (`/readyz`,
/// `ServerStatus`, which need no credentials), and the detail (key ids, peers, errors) that
/// only the node's log gets.
#[derive(Clone, Debug)]
pub struct NotReady {
    pub reason: &'static str,
    pub detail: String,
}

impl NotReady {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        NotReady { reason, detail: detail.into() }
    }
}

/// Whether this node is alive and ready, as `/healthz`, `/readyz` and the gRPC health service
/// report it. Both flip to "no" when shutdown begins.
pub struct Health {
    stopping: AtomicBool,
    /// `Ok` when ready; otherwise why not.
    ready: RwLock<Result<(), NotReady>>,
}

impl Default for Health {
    fn default() -> Self {
        Health { stopping: AtomicBool::new(false), ready: RwLock::new(Err(NotReady::new("starting", "starting"))) }
    }
}

impl Health {
    /// Records readiness; the detail of a new reason goes to the log (once, not every check).
    pub fn set_ready(&self, ready: Result<(), NotReady>) {
        let mut slot = self.ready.write().unwrap_or_else(|p| p.into_inner());
        if let Err(now) = &ready {
            if slot.as_ref().err().is_none_or(|before| before.reason != now.reason) {
                tracing::warn!(reason = now.reason, detail = %now.detail, "not ready");
            }
        }
        *slot = ready;
    }

    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn alive(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
    }

    /// `Err` with the coarse reason (never key ids or other detail) when not ready.
    pub fn ready(&self) -> Result<(), String> {
        if !self.alive() {
            return Err("shutting down".into());
        }
        self.ready.read().unwrap_or_else(|p| p.into_inner()).clone().map_err(|n| n.reason.to_string())
    }
}

/// Seconds buckets for request and KMS latency histograms: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Seconds buckets for the write pipeline's stages, most of which take well under a
/// millisecond: 10 µs to 10 s.
const STAGE_BUCKETS: &[f64] =
    &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0];
const STAGE_HISTOGRAMS: &[&str] = &[
    "vault_raft_write_queue_seconds",
    "vault_raft_write_entry_seconds",
    "vault_raft_log_sync_seconds",
    "vault_raft_apply_sync_wait_seconds",
    "vault_raft_apply_seconds",
];
/// Buckets for counts (commands per entry, entries in flight, entries per sync).
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const COUNT_HISTOGRAMS: &[&str] = &[
    "vault_raft_write_entry_commands",
    "vault_raft_write_in_flight",
    "vault_raft_log_sync_entries",
    "vault_audit_write_reads",
];

/// Installs the process-wide metrics recorder. Without it (no `VAULT_METRICS_ADDR`), every
/// `metrics::` call is a no-op.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let buckets_error = |e| anyhow::anyhow!("metrics buckets: {e}");
    let mut builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).map_err(buckets_error)?;
    for (names, buckets) in [(STAGE_HISTOGRAMS, STAGE_BUCKETS), (COUNT_HISTOGRAMS, COUNT_BUCKETS)] {
        for name in names {
            builder = builder.set_buckets_for_metric(Matcher::Full((*name).into()), buckets).map_err(buckets_error)?;
        }
    }
    let handle = builder.install_recorder().map_err(|e| anyhow::anyhow!("install the metrics recorder: {e}"))?;
    describe();
    metrics::gauge!("vault_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// The HELP lines of every metric this node exports.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("vault_grpc_requests_total", "API calls by RPC and gRPC status code");
    describe_histogram!("vault_grpc_request_duration_seconds", Unit::Seconds, "API call latency by RPC");
    describe_histogram!(
        "vault_kms_request_duration_seconds",
        Unit::Seconds,
        "key manager call latency by operation and outcome"
    );
    describe_counter!("vault_kms_errors_total", "failed key manager calls by operation and outcome");
    describe_gauge!("vault_watchers", "WatchSecrets streams open on this node");
    describe_counter!("vault_watch_events_sent_total", "change events sent to watchers");
    describe_counter!(
        "vault_watch_cut_total",
        "watches this node ended: slow_consumer, compacted, permission_denied or error"
    );
    describe_gauge!(
        "vault_backup_last_success_timestamp_seconds",
        Unit::Seconds,
        "when this node last wrote and verified a scheduled backup (Unix time)"
    );
    describe_gauge!(
        "vault_backup_last_failure_timestamp_seconds",
        Unit::Seconds,
        "when a scheduled backup attempt on this node last failed (Unix time)"
    );
    describe_gauge!("vault_backup_last_size_bytes", Unit::Bytes, "size of the last verified scheduled backup");
    describe_gauge!(
        "vault_backup_last_duration_seconds",
        Unit::Seconds,
        "how long the last scheduled backup attempt took"
    );
    describe_counter!("vault_backup_failures_total", "scheduled backup attempts that failed or did not verify");
    describe_gauge!("vault_raft_term", "current Raft term");
    describe_gauge!("vault_raft_leader_id", "node id of the leader this node knows (0: none)");
    describe_gauge!("vault_raft_is_leader", "1 on the leader");
    describe_gauge!("vault_raft_last_log_index", "index of the last entry in this node's log");
    describe_gauge!("vault_raft_commit_index", "highest commit index this node knows since it started");
    describe_gauge!("vault_raft_applied_index", "index of the last entry applied to this node's state");
    describe_gauge!("vault_raft_snapshot_index", "last log index the current snapshot covers");
    describe_gauge!("vault_raft_log_entries", "entries in the log (not yet purged into a snapshot)");
    describe_gauge!("vault_raft_snapshot_bytes", Unit::Bytes, "size of the current snapshot file");
    describe_gauge!("vault_raft_members", "members of the cluster (voters and learners)");
    describe_gauge!("vault_storage_bytes", Unit::Bytes, "bytes of files in the data directory");
    describe_counter!("vault_dek_cache_hits_total", "reads that found their unwrapped data key cached");
    describe_counter!("vault_dek_cache_misses_total", "reads that had to ask the key manager");
    describe_gauge!("vault_dek_cache_entries", "unwrapped data keys cached");
    describe_counter!("vault_audit_write_failures_total", "audit records that could not be written, by target");
    describe_gauge!("vault_audit_sink_up", "1 while the audit sink takes records (by sink: file, socket, syslog)");
    describe_gauge!(
        "vault_audit_sink_lag_records",
        "audit records in this node's log not yet shipped to the sink (by sink)"
    );
    describe_counter!(
        "vault_audit_removed_over_hard_cap_total",
        "audit records younger than VAULT_AUDIT_MIN_RETAIN_DAYS removed because the log was past VAULT_AUDIT_HARD_MAX_MB"
    );
    describe_gauge!("vault_rewrap_enabled", "1 when the re-wrap worker is enabled");
    describe_gauge!("vault_rewrap_running", "1 while a re-wrap pass runs on this node (the leader)");
    describe_gauge!("vault_rewrap_pass_versions", "versions the current or last re-wrap pass covers");
    describe_gauge!("vault_rewrap_pass_done_versions", "versions re-wrapped in the current or last pass");
    describe_gauge!("vault_rewrap_pass_failed_versions", "versions that failed in the current or last pass");
    describe_gauge!("vault_rewrap_pending_versions", "versions the current pass has yet to re-wrap");
    describe_histogram!(
        "vault_raft_write_queue_seconds",
        Unit::Seconds,
        "leader: each write's wait for a proposer (the entry that carries it)"
    );
    describe_histogram!("vault_raft_write_entry_commands", "leader: writes per entry proposed");
    describe_histogram!(
        "vault_raft_write_in_flight",
        "leader: entries in flight from client writes when an entry is proposed, itself included"
    );
    describe_histogram!(
        "vault_raft_write_entry_seconds",
        Unit::Seconds,
        "leader: an entry's time from proposal to answer (append, replicate, commit, apply)"
    );
    describe_histogram!("vault_raft_log_sync_seconds", Unit::Seconds, "time of each fsync of the Raft log");
    describe_histogram!("vault_raft_log_sync_entries", "log entries each fsync made durable");
    describe_histogram!(
        "vault_raft_apply_sync_wait_seconds",
        Unit::Seconds,
        "wait before applying for the entries to be synced in this node's own log"
    );
    describe_histogram!("vault_raft_apply_seconds", Unit::Seconds, "time to apply each run of committed entries");
    #[cfg(feature = "counting-alloc")]
    {
        describe_counter!("vault_alloc_total", "allocations so far (counting-alloc builds only)");
        describe_counter!(
            "vault_alloc_bytes_total",
            Unit::Bytes,
            "bytes allocated so far (counting-alloc builds only)"
        );
    }
    describe_histogram!("vault_audit_write_reads", "reads (requests) whose audit records one shared write held");
    describe_gauge!("vault_ready", "1 when /readyz answers 200");
    describe_gauge!("vault_build_info", "always 1; the version label names this build");
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    vault: Arc<Vault>,
    rewrapper: Arc<Rewrapper>,
    health: Arc<Health>,
    data_dir: PathBuf,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    vault: Arc<Vault>,
    rewrapper: Arc<Rewrapper>,
    health: Arc<Health>,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Histogram samples queue up raw until they are drained into their buckets, which a
    // scrape does; drained every few seconds as well, a node nobody scrapes (or one scraped
    // rarely) keeps them bounded instead of holding every sample of every write.
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    };
    let state = Scrape { handle, vault, rewrapper, health, data_dir };
    let app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    upkeep.abort();
    served
}

/// How often histogram samples are drained into buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

async fn healthz(State(s): State<Scrape>) -> impl IntoResponse {
    if s.health.alive() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_string())
    }
}

async fn readyz(State(s): State<Scrape>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics_page(State(s): State<Scrape>) -> impl IntoResponse {
    let dir = s.data_dir.clone();
    // Walking the data directory touches the file system: off the async threads.
    let disk = tokio::task::spawn_blocking(move || (dir_bytes(&dir), newest_snapshot_bytes(&dir.join("snapshots"))))
        .await
        .unwrap_or((0, 0));
    collect(&s, disk);
    s.handle.run_upkeep();
    let mut page = s.handle.render();
    page.push_str(&follower_series(&s));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], page)
}

/// Per-follower replication, written at each scrape from the leader's view rather than kept
/// in the recorder: a follower that was removed, or a node that no longer leads, then has no
/// series left behind at their last value.
fn follower_series(s: &Scrape) -> String {
    use std::fmt::Write;
    let m = s.vault.cluster.raft.metrics().borrow().clone();
    let Some(replication) = &m.replication else { return String::new() };
    let last = m.last_log_index.unwrap_or(0);
    let followers: Vec<(u64, u64)> = replication
        .iter()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, matched)| (*id, matched.map_or(0, |l| l.index)))
        .collect();
    let mut out = String::new();
    let mut write = |name: &str, help: &str, value: &dyn Fn(u64) -> u64| {
        let _ = writeln!(out, "# HELP {name} on the leader: {help}\n# TYPE {name} gauge");
        for (id, matched) in &followers {
            let _ = writeln!(out, "{name}{{follower=\"{id}\"}} {}", value(*matched));
        }
    };
    write("vault_raft_follower_matched_index", "highest index known replicated to each follower", &|m| m);
    write("vault_raft_follower_lag_entries", "entries each follower is behind", &|m| last.saturating_sub(m));
    out
}

/// Sets the gauges and counters owned elsewhere from their current values.
fn collect(s: &Scrape, (data_bytes, snapshot_bytes): (u64, u64)) {
    use metrics::{counter, gauge};
    let m = s.vault.cluster.raft.metrics().borrow().clone();
    gauge!("vault_raft_term").set(m.current_term as f64);
    gauge!("vault_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
    gauge!("vault_raft_is_leader").set(f64::from(u8::from(m.current_leader == Some(m.id))));
    gauge!("vault_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    gauge!("vault_raft_applied_index").set(m.last_applied.map_or(0, |l| l.index) as f64);
    gauge!("vault_raft_commit_index").set(s.vault.cluster.synced.committed_index().unwrap_or(0) as f64);
    gauge!("vault_raft_snapshot_index").set(m.snapshot.map_or(0, |l| l.index) as f64);
    let first = m.purged.map_or(0, |p| p.index + 1);
    gauge!("vault_raft_log_entries").set(m.last_log_index.map_or(0, |l| (l + 1).saturating_sub(first)) as f64);
    gauge!("vault_raft_snapshot_bytes").set(snapshot_bytes as f64);
    gauge!("vault_storage_bytes").set(data_bytes as f64);
    gauge!("vault_raft_members").set(m.membership_config.membership().nodes().count() as f64);

    let (hits, misses) = s.vault.dek_cache.lookups();
    counter!("vault_dek_cache_hits_total").absolute(hits);
    counter!("vault_dek_cache_misses_total").absolute(misses);
    gauge!("vault_dek_cache_entries").set(s.vault.dek_cache.len() as f64);

    counter!("vault_audit_write_failures_total", "target" => "log").absolute(s.vault.audit_log.failures());
    let newest = *s.vault.audit_log.newest().borrow();
    for sink in s.vault.audit_log.sinks().sinks() {
        gauge!("vault_audit_sink_up", "sink" => sink.name.clone()).set(f64::from(u8::from(sink.up())));
        gauge!("vault_audit_sink_lag_records", "sink" => sink.name.clone()).set(sink.lag(newest) as f64);
    }
    counter!("vault_audit_removed_over_hard_cap_total").absolute(s.vault.audit_log.over_hard_cap());

    let p = s.rewrapper.progress();
    gauge!("vault_rewrap_enabled").set(f64::from(u8::from(s.rewrapper.enabled())));
    gauge!("vault_rewrap_running").set(f64::from(u8::from(p.running)));
    gauge!("vault_rewrap_pass_versions").set(p.total as f64);
    gauge!("vault_rewrap_pass_done_versions").set(p.done as f64);
    gauge!("vault_rewrap_pass_failed_versions").set(p.failed as f64);
    gauge!("vault_rewrap_pending_versions").set(p.total.saturating_sub(p.done + p.failed) as f64);

    gauge!("vault_ready").set(f64::from(u8::from(s.health.ready().is_ok())));

    #[cfg(feature = "counting-alloc")]
    {
        let (allocations, bytes) = crate::alloc_count::totals();
        counter!("vault_alloc_total").absolute(allocations);
        counter!("vault_alloc_bytes_total").absolute(bytes);
    }
}

/// Bytes of every file under `dir` (RocksDB files, snapshots, the audit key).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Size of the newest snapshot file in `dir`.
fn newest_snapshot_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap-"))
        .filter_map(|e| e.metadata().ok())
        .filter_map(|m| Some((m.modified().ok()?, m.len())))
        .max()
        .map_or(0, |(_, len)| len)
}

/// The label an RPC's metrics carry: its path if it is one of the API's (or health or
/// reflection), else `other` (the client chooses the path; it must not choose labels).
fn rpc_label(path: &str) -> &'static str {
    const OPEN: [&str; 4] = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    rpcs::RPCS.iter().map(|r| r.path).chain(OPEN).find(|p| *p == path).unwrap_or("other")
}

/// gRPC status code names, as the `code` label.
fn code_label(code: Option<&[u8]>) -> &'static str {
    let n: Option<i32> = code.and_then(|c| std::str::from_utf8(c).ok()).and_then(|c| c.trim().parse().ok());
    n.map_or("none", |n| code_name(tonic::Code::from_i32(n)))
}

/// A status code's name as gRPC writes it (`FAILED_PRECONDITION`).
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Counts every API call by RPC and status code, and times it from the request's arrival to
/// its status (the trailers, or the headers of a trailers-only answer).
#[derive(Clone, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let rpc = rpc_label(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            let (parts, body) = response.into_parts();
            let mut pending = Pending { rpc, start, done: false };
            if let Some(code) = parts.headers.get("grpc-status") {
                // Trailers-only: the status is already here.
                pending.finish(Some(code.as_bytes()));
            }
            Ok(http::Response::from_parts(parts, Body::new(Observed { inner: body, pending })))
        })
    }
}

/// A call whose status is not yet known.
struct Pending {
    rpc: &'static str,
    start: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: Option<&[u8]>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = code_label(code);
        let elapsed = self.start.elapsed().as_secs_f64();
        CALL_METRICS.with(|handles| {
            let mut handles = handles.borrow_mut();
            let (calls, duration) = handles.entry((self.rpc, code)).or_insert_with(|| {
                (
                    metrics::counter!("vault_grpc_requests_total", "rpc" => self.rpc, "code" => code),
                    metrics::histogram!("vault_grpc_request_duration_seconds", "rpc" => self.rpc),
                )
            });
            calls.increment(1);
            duration.record(elapsed);
        });
    }
}

/// The per-call metrics of one (rpc, code): the call counter and the duration histogram.
type CallHandles = (metrics::Counter, metrics::Histogram);

thread_local! {
    /// The per-call metrics' handles by (rpc, code), both from fixed sets of labels: the
    /// macros would build, hash and look up their labels on every call.
    static CALL_METRICS: std::cell::RefCell<std::collections::HashMap<(&'static str, &'static str), CallHandles>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

impl Drop for Pending {
    /// A body dropped before its trailers: the client went away.
    fn drop(&mut self) {
        if !self.done {
            self.finish(Some(b"1"));
        }
    }
}

/// A response body that reports the call's status when its trailers go by.
struct Observed {
    inner: Body,
    pending: Pending,
}

impl HttpBody for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.pending.finish(trailers.get("grpc-status").map(|v| v.as_bytes()));
                }
            }
            Poll::Ready(Some(Err(_))) => this.pending.finish(Some(b"2")),
            Poll::Ready(None) => this.pending.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How often the key manager is probed when nothing else calls it.
const KMS_PROBE_EVERY: Duration = Duration::from_secs(30);

/// The key manager half of readiness: the last call to the provider (a real one, or a probe,
/// DescribeKey for AWS, made at most every [`KMS_PROBE_EVERY`]) got an answer, or this node
/// holds cached data keys to read with through an outage.
#[derive(Default)]
pub struct KmsCheck {
    last_probe: Option<Instant>,
}

impl KmsCheck {
    pub async fn check(&mut self, vault: &Vault) -> Result<(), NotReady> {
        use vault_core::kms::KeyManager;
        if self.last_probe.is_none_or(|at| at.elapsed() >= KMS_PROBE_EVERY) {
            self.last_probe = Some(Instant::now());
            if let Err(e) = vault.kms.probe().await {
                tracing::warn!(error = %e, "key manager probe failed");
            }
        }
        match vault.kms.reachability() {
            crate::kms::Reachability::Unreachable if vault.dek_cache.is_empty() => Err(NotReady::new(
                "the key manager is unreachable and no data keys are cached",
                "the key manager did not answer its last call and no data keys are cached",
            )),
            _ => Ok(()),
        }
    }
}
