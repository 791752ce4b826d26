//! Starting a node: storage, key manager, Raft, bootstrap, and the API listener.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use vault_core::dek_cache::DekCache;
use vault_core::keys::AuditMacKey;
use vault_core::kms::KeyManager;
use vault_core::model::{Role, TokenRecord, ADMIN_ROLE, BOOTSTRAP_TOKEN_NAME};
use vault_core::time::now_ms;
use vault_raft::transport::{GrpcNetwork, PeerClients, RaftService, TransportSecurity};
use vault_raft::typ::Raft;
use vault_raft::{AuditKeys, AuditSetup, Cluster, ClusterParts, Command, NodeInfo, Storage};

use crate::api::admin::AdminService;
use crate::api::secrets::SecretsService;
use crate::api_conn;
use crate::auth::layer::{AuthLayer, AuthPolicy};
use crate::auth::refusals::{RateLimiter, RefusalLimiter};
use crate::config::{Config, RaftSecurity, RewrapConfig};
use crate::observe::{Health, KmsCheck, NotReady, RpcMetricsLayer};
use crate::pb::admin_server::AdminServer;
use crate::pb::secrets_server::SecretsServer;
use crate::rewrap::Rewrapper;
use crate::vault::Vault;

/// How long the Raft listener may finish replies after shutdown before it is cut off.
const RAFT_DRAIN: Duration = Duration::from_millis(300);
/// How long in-flight API calls may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most unwrapped DEKs kept in memory.
const DEK_CACHE_CAPACITY: usize = 100_000;

fn raft_config(
    snapshot_every: u64,
    max_value_bytes: usize,
    election: vault_raft::ElectionTiming,
) -> anyhow::Result<Arc<openraft::Config>> {
    let (election_timeout_min, election_timeout_max) = election.openraft_timeouts_ms();
    let c = openraft::Config {
        cluster_name: "vault".into(),
        heartbeat_interval: election.openraft_heartbeat_ms(),
        election_timeout_min,
        election_timeout_max,
        // Elections (with pre-vote) and heartbeats come from `vault_raft::elections`.
        enable_elect: false,
        enable_heartbeat: false,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: (snapshot_every / 10).min(1_000),
        // Purge as soon as a snapshot covers a batch; keeps the log (and restarts) short.
        purge_batch_size: (snapshot_every / 4).clamp(1, 1_024),
        install_snapshot_timeout: 10_000,
        // Entries hold batches of commands: bound how many go in one message.
        max_payload_entries: vault_raft::max_payload_entries(max_value_bytes),
        ..Default::default()
    };
    Ok(Arc::new(c.validate().context("validate raft config")?))
}

fn prepare_data_dir(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("create data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict permissions of {}", dir.display()))?;
    Ok(())
}

/// Runs a node until `shutdown` resolves.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    prepare_data_dir(&config)?;
    let security = match &config.raft_security {
        RaftSecurity::Disabled => None,
        RaftSecurity::MutualTls { files, cluster_secret } => {
            Some(TransportSecurity::load(Some(files), cluster_secret.as_deref()).context("load Raft TLS material")?)
        }
        RaftSecurity::InsecureWithSecret { cluster_secret } => {
            tracing::warn!(
                "VAULT_RAFT_INSECURE=true: Raft traffic is PLAINTEXT, protected only by the shared cluster \
                 secret. Anyone on the network path can read the (encrypted) secrets and the secret itself. \
                 Development only: use VAULT_RAFT_TLS_* in production."
            );
            Some(TransportSecurity::load(None, Some(cluster_secret)).context("set up Raft transport")?)
        }
    };
    let kms =
        crate::kms::build(std::mem::replace(&mut config.kms, crate::config::KmsConfig::Local { keys: Vec::new() }))
            .await?;
    let audit_setup = AuditSetup { keys: audit_keys(&config, kms.as_ref())?, retention: config.audit.retention };
    let scratch_dir = config.data_dir.join("scratch");
    crate::backup::prepare_scratch(&scratch_dir)
        .with_context(|| format!("prepare scratch directory {}", scratch_dir.display()))?;
    let storage = Storage::open_at_level(&config.data_dir, config.node_id, audit_setup, config.max_feature_level)
        .await
        .with_context(|| format!("open storage in {}", config.data_dir.display()))?;
    storage.watch.set_history(config.watch.history);

    // Bind first, so that a port in use fails the start before anything else happens.
    let api_listener =
        TcpListener::bind(config.api_addr).await.with_context(|| format!("bind API listener {}", config.api_addr))?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("bind metrics listener {addr}"))?),
        None => None,
    };
    let ui_listener = match &config.ui {
        Some(ui) => Some(crate::console::bind(ui).await?),
        None => None,
    };
    let raft_listener = match &security {
        Some(_) => Some(
            TcpListener::bind(config.raft_addr)
                .await
                .with_context(|| format!("bind Raft listener {}", config.raft_addr))?,
        ),
        None => None,
    };

    let peers = PeerClients::new(
        config.node_id,
        match &security {
            Some(s) => s.clone(),
            None => TransportSecurity::load(None, None).context("set up Raft clients")?,
        },
    );
    let raft = Raft::new(
        config.node_id,
        raft_config(config.snapshot_log_entries, config.max_value_bytes, config.election)?,
        GrpcNetwork::new(peers.clone(), storage.synced.clone()),
        storage.log_store,
        storage.state_machine,
    )
    .await
    .context("start raft")?;
    storage.synced.spawn_commit_refresher(raft.clone());
    let cluster = Cluster::new(
        raft.clone(),
        ClusterParts {
            node_id: config.node_id,
            peers: peers.clone(),
            synced: storage.synced.clone(),
            reader: storage.reader.clone(),
            bootstrap_ids: config.peers.iter().map(|(id, _)| *id).collect(),
            key_ids: kms.key_ids(),
            timing: config.election,
            max_in_flight: config.max_in_flight,
            max_feature_level: config.max_feature_level,
        },
    )
    .with_audit_sinks(storage.audit.sinks().clone());
    let _elections = cluster.spawn_elections();
    let _upgrades = cluster.spawn_feature_upgrades(Duration::from_secs(5));
    let me = NodeInfo { raft_addr: config.raft_advertise.clone(), api_addr: config.api_advertise.clone() };

    // Background work (health, audit upkeep, re-wrap, certificate reloads, bootstrap) stops
    // under this one token, once the API has drained.
    let background = CancellationToken::new();
    let mut tasks: JoinSet<()> = JoinSet::new();

    let raft_stop = CancellationToken::new();
    let raft_server = match (raft_listener, &security) {
        (Some(listener), Some(sec)) => {
            tracing::info!(raft = %listener.local_addr()?, mtls = sec.is_tls(), "raft listener up");
            let svc = RaftService::new(cluster.clone(), me.clone()).with_audit(storage.audit.clone()).into_server(sec);
            let stop = raft_stop.clone().cancelled_owned();
            Some(tokio::spawn(serve_raft(listener, svc, sec.clone(), cluster.clone(), stop)))
        }
        _ => None,
    };
    let (hup_tx, hup) = tokio::sync::watch::channel(0u64);
    let tls_peers = security.as_ref().is_some_and(|s| s.is_tls()).then(|| peers.clone());
    tasks.spawn(on_sighup(tls_peers, hup_tx, background.clone()));
    for shipper in crate::audit_ship::spawn(
        &storage.audit,
        &config.data_dir,
        &config.audit.sinks,
        config.audit.sink_max_lag,
        hup,
        background.clone(),
    )
    .await?
    {
        tasks.spawn(async move {
            let _ = shipper.await;
        });
    }

    if !raft.is_initialized().await.context("read raft state")? {
        if config.join {
            tracing::info!(node = config.node_id, "VAULT_JOIN: waiting to be added with `vaultctl cluster add`");
        } else if config.peers.len() <= 1 {
            tracing::info!(node = config.node_id, "initializing a new single-node cluster");
            raft.initialize(BTreeMap::from([(config.node_id, me.clone())])).await.context("initialize cluster")?;
        } else {
            let (cluster, peers, me, stop) = (cluster.clone(), config.peers.clone(), me.clone(), background.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = cluster.bootstrap_from_peers(&peers, &me) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    }

    let readiness = Arc::new(Health::default());
    let vault = Arc::new(Vault {
        node_id: config.node_id,
        cluster,
        transport_enabled: security.is_some(),
        reader: storage.reader,
        audit_log: storage.audit,
        kms,
        dek_cache: DekCache::new(config.dek_cache_ttl, DEK_CACHE_CAPACITY),
        max_value_bytes: config.max_value_bytes,
        restore_max_bytes: config.restore_max_bytes,
        refusals: RefusalLimiter::new(
            config.audit.refusals_per_sec,
            config.audit.refusals_burst,
            config.audit.refusals_global_per_sec,
        ),
        name_queue: Default::default(),
        scratch_dir: scratch_dir.clone(),
        health: readiness.clone(),
        rotation_wake: tokio::sync::Notify::new(),
    });
    tasks.spawn(audit_upkeep(vault.clone(), background.clone()));
    tasks.spawn(crate::disk::watch(
        config.data_dir.clone(),
        config.disk,
        vault.cluster.room.clone(),
        background.clone(),
    ));
    let rewrapper = Rewrapper::new(vault.clone(), std::mem::replace(&mut config.rewrap, RewrapConfig::disabled()));
    tasks.spawn(rewrapper.clone().run(background.clone()));
    let rotator = crate::rotation::Rotator::new(vault.clone(), config.rotation.clone());
    tasks.spawn(rotator.run(background.clone()));
    let backups = crate::backup::schedule::Backups::new(vault.clone(), config.backup.clone())
        .await
        .context("configure the backup destination")?;
    if let Some(b) = &backups {
        tasks.spawn(b.clone().run(background.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, false).await;
    {
        let (vault, health, stop) = (vault.clone(), health.clone(), background.clone());
        let bootstrap_token = config.bootstrap_token.take();
        tasks.spawn(async move {
            let settled = async {
                bootstrap(&vault, bootstrap_token).await;
                crate::master_key::settle(&vault).await
            };
            let settled = tokio::select! {
                r = settled => r,
                _ = stop.cancelled() => return,
            };
            if let Err(why) = settled {
                // Stays NOT_SERVING; writes (authenticated) are refused with the same words.
                // Callers without credentials are told only that the key check failed.
                tracing::error!("{why}");
                vault.health.set_ready(Err(NotReady::new("this node's master key does not match the cluster's", why)));
                return;
            }
            tracing::info!("ready");
            watch_health(&vault, &health, stop).await;
        });
    }

    // The metrics listener answers until the very end: /healthz and /readyz say 503 while
    // the node drains.
    let metrics_stop = CancellationToken::new();
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let handle = crate::observe::install_recorder()?;
            tracing::info!(metrics = %listener.local_addr()?, "metrics listener up (/metrics, /healthz, /readyz)");
            let serve = crate::observe::serve(
                listener,
                handle,
                vault.clone(),
                rewrapper.clone(),
                readiness.clone(),
                config.data_dir.clone(),
                metrics_stop.clone().cancelled_owned(),
            );
            Some(tokio::spawn(serve))
        }
        None => None,
    };

    let auth = AuthLayer::new(AuthPolicy {
        vault: vault.clone(),
        allowed_ips: config.allowed_ips.clone(),
        trust_proxy: config.trust_proxy,
        trusted_proxies: config.trusted_proxies.clone(),
        rate_per_addr: (config.api_limits.rate_per_addr > 0.0)
            .then(|| RateLimiter::new(config.api_limits.rate_per_addr, 2.0 * config.api_limits.rate_per_addr)),
        rate_per_token: (config.api_limits.rate_per_token > 0.0)
            .then(|| RateLimiter::new(config.api_limits.rate_per_token, 2.0 * config.api_limits.rate_per_token)),
        request_timeout: config.api_limits.request_timeout,
        max_header_bytes: config.api_limits.max_header_bytes as usize,
    });
    let tls = config
        .tls
        .as_ref()
        .map(|(cert, key)| api_conn::tls_acceptor(cert, key, config.tls_client_ca.as_deref()))
        .transpose()
        .context("configure API TLS")?;
    tracing::info!(
        node = config.node_id,
        api = %api_listener.local_addr()?,
        tls = config.tls.is_some(),
        kms = vault.kms.kind(),
        "vault-node listening"
    );
    // Shutdown, in order: say not ready (load balancers move away), stop taking API calls
    // and let those in flight finish (watches end at once), stop the background work, then
    // Raft, then metrics.
    let api_stop = CancellationToken::new();
    let watch = crate::api::watch::WatchHub::new(storage.watch, config.watch.clone(), api_stop.clone());
    {
        let (vault, health, api_stop) = (vault.clone(), health.clone(), api_stop.clone());
        tokio::spawn(async move {
            shutdown.await;
            vault.health.begin_shutdown();
            set_health(&health, false).await;
            api_stop.cancel();
        });
    }
    let api = ApiParts {
        tls,
        limits: config.api_limits.clone(),
        auth,
        health: health_service,
        secrets: SecretsServer::new(SecretsService::new(vault.clone(), config.rotation.hooks_dir.clone(), watch)),
        admin: AdminServer::new(AdminService::new(vault.clone(), rewrapper.clone(), backups.clone())),
    };
    let console = match (ui_listener, &config.ui) {
        (Some(listener), Some(ui)) => {
            let stack = crate::console::grpc::ApiStack::new(
                api.auth.clone(),
                api.secrets.clone(),
                api.admin.clone(),
                api_listener.local_addr().ok(),
            );
            let tls = config.tls.as_ref().map(|(cert, key)| api_conn::console_tls_acceptor(cert, key)).transpose()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(console = %format!("{scheme}://{}/", listener.local_addr()?), "console listener up");
            let console = crate::console::Console::new(stack, vault.clone(), ui, tls.is_some());
            Some(tokio::spawn(crate::console::serve(listener, tls, console, api_stop.clone())))
        }
        _ => None,
    };
    serve_api(api_listener, api, api_stop).await?;
    if let Some(h) = console {
        match tokio::time::timeout(SHUTDOWN_GRACE, h).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "console listener failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "console listener task failed"),
            _ => {}
        }
    }

    tracing::info!("shutting down");
    background.cancel();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::warn!(error = %e, "a background task failed");
        }
    }
    // Peers retry whatever is cut off: Raft gets a moment to finish replies, not the grace.
    raft_stop.cancel();
    if let Some(h) = raft_server {
        let abort = h.abort_handle();
        match tokio::time::timeout(RAFT_DRAIN, h).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "raft listener failed"),
            Ok(Err(e)) if !e.is_cancelled() => tracing::warn!(error = %e, "raft listener task failed"),
            Err(_) => abort.abort(),
            _ => {}
        }
    }
    vault.cluster.raft.shutdown().await.map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
    metrics_stop.cancel();
    if let Some(h) = metrics_server {
        let abort = h.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, h).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics listener failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics listener task failed"),
            Err(_) => abort.abort(),
            Ok(Ok(Ok(()))) => {}
        }
    }
    Ok(())
}

/// What the API listener serves.
struct ApiParts<H> {
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: crate::config::ApiLimits,
    auth: AuthLayer,
    health: tonic_health::pb::health_server::HealthServer<H>,
    secrets: SecretsServer<SecretsService>,
    admin: AdminServer<AdminService>,
}

/// Serves the API on `listener` until `stop`; calls in flight then get [`SHUTDOWN_GRACE`], and
/// idle client connections do not hold the exit.
async fn serve_api<H: tonic_health::pb::health_server::Health>(
    listener: TcpListener,
    api: ApiParts<H>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // grpcurl and the like list and call the API without the proto files (open, like health:
    // it describes the API, and every call still goes through the auth layer).
    // Both versions: v1, and v1alpha for the tools that still speak only that.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("build gRPC reflection")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("build gRPC reflection (v1alpha)")?;
    let limits = &api.limits;
    let (connections, _accept_task) = api_conn::connections(
        listener,
        api.tls,
        api_conn::ConnLimits {
            max_connections: limits.max_connections,
            max_per_addr: limits.max_per_addr,
            idle: limits.idle,
        },
    );
    let serve = Server::builder()
        .max_concurrent_streams(limits.max_streams)
        // The configured limit is the auth layer's, answered as a gRPC status; HTTP/2's own
        // (answered as HTTP 431, which clients see as UNKNOWN) sits far above it.
        .http2_max_header_list_size(crate::auth::header_limit::transport_limit(limits.max_header_bytes))
        // Clients that reset many streams (timeouts) are not cut off after a stall; streams per
        // connection stay bounded by max_concurrent_streams.
        .http2_max_pending_accept_reset_streams(Some(limits.max_streams as usize * 4))
        .layer(RpcMetricsLayer)
        .layer(api.auth)
        .add_service(api.health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api.secrets)
        .add_service(api.admin)
        .serve_with_incoming_shutdown(connections, stop.clone().cancelled_owned());
    tokio::select! {
        r = serve => r.context("serve API")?,
        _ = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("client connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
        }
    }
    Ok(())
}

/// Serves the Raft transport on `listener` until `stop`; `cluster` tells which peers are
/// members (the listener keeps slots for them).
async fn serve_raft(
    listener: TcpListener,
    svc: vault_raft::transport::RaftServiceServer,
    security: TransportSecurity,
    cluster: vault_raft::Cluster,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (conns, _accept_task) = vault_raft::transport::connections(listener, security, cluster);
    // After a stall (a pause, a partition), peers time out and reset many calls at once;
    // with h2's default limit (20 pending-accept resets) the server would answer with
    // GOAWAY ENHANCE_YOUR_CALM and cut replication off just as the cluster recovers.
    // Members are authenticated, so a higher bound costs little.
    Server::builder()
        .http2_max_pending_accept_reset_streams(Some(4096))
        .add_service(svc)
        .serve_with_incoming_shutdown(conns, stop)
        .await
}

/// How often health is re-checked, and how long a check may take.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The named services and the server as a whole (service `""`, what Kubernetes' gRPC probe
/// and most load balancers ask) follow readiness together.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    if serving {
        health.set_serving::<SecretsServer<SecretsService>>().await;
        health.set_serving::<AdminServer<AdminService>>().await;
        health.set_service_status("", ServingStatus::Serving).await;
    } else {
        health.set_not_serving::<SecretsServer<SecretsService>>().await;
        health.set_not_serving::<AdminServer<AdminService>>().await;
        health.set_service_status("", ServingStatus::NotServing).await;
    }
}

/// SERVING (and `/readyz` 200) only while a linearizable read would succeed here and data keys
/// can be had: the leader confirms its leadership with a quorum, this node has applied up to the
/// leader's commit, and the key manager answers or data keys are cached; checked every second.
/// A node cut off from its quorum, or lagging, says NOT_SERVING within a few seconds.
async fn watch_health(vault: &Vault, health: &tonic_health::server::HealthReporter, stop: CancellationToken) {
    let mut serving = None;
    let mut kms = KmsCheck::default();
    loop {
        let check = async {
            match vault.cluster.read_barrier(HEALTH_TIMEOUT).await {
                Ok(()) => kms.check(vault).await.and_then(|()| {
                    vault.cluster.room.check().map_err(|why| NotReady::new("disk nearly full: writes are refused", why))
                }),
                Err(e) => Err(NotReady::new(
                    "not caught up with a leader confirmed by a quorum",
                    format!("not caught up with a leader confirmed by a quorum: {e}"),
                )),
            }
        };
        let ready = tokio::select! {
            r = check => r,
            _ = stop.cancelled() => return,
        };
        // Once shutdown began, gRPC health stays NOT_SERVING whatever the check says.
        let ok = ready.is_ok() && vault.health.alive();
        vault.health.set_ready(ready);
        if serving != Some(ok) {
            if serving.is_some() {
                tracing::warn!(serving = ok, "health changed");
            }
            set_health(health, ok).await;
            serving = Some(ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Keys of the node's audit hash chain: `VAULT_AUDIT_KEY` if set; else derived from the local
/// keyring's keys (the first makes new records; the others still verify older ones); else (AWS
/// mode) a random key kept in the data directory, which guards against edits by anyone who
/// cannot read that directory, and a warning to set `VAULT_AUDIT_KEY`.
fn audit_keys(config: &Config, kms: &dyn KeyManager) -> anyhow::Result<AuditKeys> {
    if let Some(k) = &config.audit.key {
        let k = AuditMacKey::from_slice(k.expose())?;
        return Ok(AuditKeys::new(vec![(k.id(), k)])?);
    }
    let derived: Vec<(String, AuditMacKey)> = kms
        .key_ids()
        .iter()
        .filter_map(|id| kms.derive_subkey(id, "audit-chain").map(|k| (format!("derived-from:{id}"), k)))
        .filter_map(|(id, k)| AuditMacKey::from_slice(k.expose()).ok().map(|k| (id, k)))
        .collect();
    if !derived.is_empty() {
        return Ok(AuditKeys::new(derived)?);
    }
    let path = config.data_dir.join("audit.key");
    let key = match std::fs::read(&path) {
        Ok(bytes) => AuditMacKey::from_slice(&bytes).with_context(|| format!("read {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let k = AuditMacKey::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("create {}", path.display()))?;
            f.write_all(k.expose()).and_then(|()| f.sync_all()).with_context(|| format!("write {}", path.display()))?;
            k
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    tracing::warn!(
        "VAULT_AUDIT_KEY is not set: the audit hash chain is keyed with {}, which anyone who can read the data \
         directory can use to rewrite the chain. Set VAULT_AUDIT_KEY (base64 of 32 bytes) for tamper evidence \
         against them.",
        path.display()
    );
    Ok(AuditKeys::new(vec![(key.id(), key)])?)
}

/// Writes refusal summaries as their windows end, and applies the audit retention at start and
/// every minute, until `stop` flips; then writes the summaries still open.
async fn audit_upkeep(vault: Arc<Vault>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        vault.flush_refusal_summaries(false);
        n += 1;
        // At start (the first tick is at once), then every minute.
        if n % 12 == 1 {
            let log = vault.audit_log.clone();
            match tokio::task::spawn_blocking(move || log.prune(now_ms())).await {
                Ok(Ok(p)) if p.over_hard_cap > 0 => tracing::warn!(
                    removed = p.removed,
                    over_hard_cap = p.over_hard_cap,
                    "audit log past VAULT_AUDIT_HARD_MAX_MB: removed records younger than VAULT_AUDIT_MIN_RETAIN_DAYS \
                     (the chain still verifies from its anchor)"
                ),
                Ok(Ok(p)) if p.removed == 0 => {}
                Ok(Ok(p)) => tracing::info!(removed = p.removed, "audit retention removed old records"),
                Ok(Err(e)) => tracing::error!(error = %e, "audit retention failed"),
                Err(e) => tracing::error!(error = %e, "audit retention task failed"),
            }
        }
    }
    vault.flush_refusal_summaries(true);
}

/// On every SIGHUP: re-reads the Raft TLS files (`peers`, under mutual TLS), so renewed
/// certificates take effect for new connections without a restart, and tells the audit file
/// sink to reopen its path (`reopen` counts the signals), for logrotate.
async fn on_sighup(
    peers: Option<vault_raft::transport::PeerClients>,
    reopen: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; renewed Raft certificates and a rotated audit file need a restart");
        return;
    };
    loop {
        tokio::select! {
            got = hup.recv() => if got.is_none() { return },
            _ = stop.cancelled() => return,
        }
        reopen.send_modify(|n| *n += 1);
        let Some(peers) = &peers else { continue };
        match peers.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded the Raft TLS CA, certificate and key"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: Raft TLS reload failed; keeping the certificates in use"),
        }
    }
}

/// Once this node leads, makes sure the built-in admin role exists and, the first time ever,
/// creates the bootstrap token, all through Raft. Followers wait until they see the role.
async fn bootstrap(vault: &Vault, token: Option<vault_core::token::RawToken>) {
    let record = token.map(|raw| TokenRecord {
        name: BOOTSTRAP_TOKEN_NAME.into(),
        hash: raw.hash(),
        role: ADMIN_ROLE.into(),
        created_at_ms: now_ms(),
        expires_at_ms: None,
    });
    loop {
        let has_role = matches!(vault.reader.role(ADMIN_ROLE), Ok(Some(_)));
        let leader = vault.cluster.raft.metrics().borrow().current_leader;
        if leader == Some(vault.node_id) {
            let cmd = Command::Bootstrap { admin_role: Role::builtin_admin(), token: record.clone() };
            match vault.write_local(cmd).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "bootstrap write failed; retrying"),
            }
        } else if has_role && leader.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
