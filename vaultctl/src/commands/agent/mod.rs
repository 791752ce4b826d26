//! `vaultctl agent`: keeps files rendered from secrets current, for hosts and sidecars.
//!
//! The loop: start a watch of every secret the templates name (from "now"), wait for its first
//! message, then render every template; from then on each watch message re-renders the
//! templates that use a secret it names (a RESET, all of them). Reads are linearizable and come
//! after the watch's first message, so no change between the first read and the first event is
//! missed; a change already rendered renders to the same bytes, which writes nothing. A file is
//! written only when its bytes or mode changed, and only then do its actions run.
//!
//! When the cluster cannot be reached, files stay as last rendered and the client resumes the
//! watch on another node with backoff; how long the agent has not heard from the cluster is in
//! its log and in `vault_agent_stale_seconds`. The server sends progress on an idle watch every
//! few seconds, so silence means a cluster the agent cannot reach.

mod action;
mod config;
mod endpoint;
mod files;
mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures::StreamExt;
use vault_client::{ChangeKind, Client, Error, WatchBatch, WatchRequest};
use zeroize::Zeroizing;

use action::Supervised;
use config::{Config, Template, TemplateSource};

// No doc comment: the help text is the doc comment of the `Agent` variant.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The agent's TOML configuration (see docs/agent.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Render every template once and exit (no watch, no actions, no [exec]).
    #[arg(long)]
    pub once: bool,
}

/// One template and what it was last rendered from.
struct Slot {
    template: Template,
    source: String,
    owner: Option<nix::unistd::Uid>,
    group: Option<nix::unistd::Gid>,
}

/// What the command line (and its environment: `VAULT_ADDR`, `VAULT_CACERT`, ...) gives, for
/// whatever the configuration leaves out.
pub struct Defaults {
    pub addr: String,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

pub async fn run(args: AgentArgs, defaults: Defaults) -> anyhow::Result<ExitCode> {
    crate::logging::init();
    let config = Config::load(&args.config)?;
    let client = client_for(&config, defaults)?;
    if let Some(addr) = config.metrics_addr {
        endpoint::serve(addr).await?;
    }
    let mut slots = Vec::with_capacity(config.templates.len());
    for t in &config.templates {
        let source = match &t.source {
            TemplateSource::Inline(text) => text.clone(),
            TemplateSource::File(path) => {
                std::fs::read_to_string(path).with_context(|| format!("read template {}", path.display()))?
            }
        };
        let owner = t.owner.as_deref().map(files::resolve_user).transpose()?;
        let group = t.group.as_deref().map(files::resolve_group).transpose()?;
        slots.push(Slot { template: t.clone(), source, owner, group });
    }
    let agent = Agent {
        client,
        slots,
        names: config.secret_names(),
        retry: (config.retry_min, config.retry_max),
        stale_after: config.stale_after,
    };
    if args.once {
        let all: Vec<usize> = (0..agent.slots.len()).collect();
        agent.render(&all).await?;
        return Ok(ExitCode::SUCCESS);
    }
    agent.serve(config.exec).await
}

/// The client: the configuration's addresses, CA, certificate and token file, then the
/// command line and environment for what it leaves out. A certificate's key may come from
/// `VAULT_CLIENT_KEY` alone (a systemd credential, say).
fn client_for(config: &Config, d: Defaults) -> anyhow::Result<Client> {
    let mut b = if config.addrs.is_empty() {
        Client::builder().addrs([d.addr])
    } else {
        Client::builder().addrs(&config.addrs)
    };
    if let Some(ca) = config.ca_file.clone().or(d.ca_cert) {
        b = b.ca_cert_file(ca);
    }
    match (config.client_cert.clone().or(d.client_cert), config.client_key.clone().or(d.client_key)) {
        (Some(c), Some(k)) => b = b.client_cert_files(c, k),
        (None, None) => {}
        _ => return Err(anyhow!("a client certificate needs its key, and a key its certificate")),
    }
    match (config.token_file.clone(), d.token.filter(|t| !t.trim().is_empty())) {
        (Some(f), _) => b = b.token_file(f),
        (None, Some(t)) => b = b.token(t),
        (None, None) => {
            if let Some(f) = d.token_file {
                b = b.token_file(f);
            }
        }
    }
    Ok(b.build()?)
}

struct Agent {
    client: Client,
    slots: Vec<Slot>,
    names: Vec<String>,
    retry: (Duration, Duration),
    stale_after: Duration,
}

/// A file the last render wrote: which template, and whether the file existed before.
#[derive(Clone, Copy)]
struct Written {
    slot: usize,
    replaced: bool,
}

impl Agent {
    /// Renders the templates at `which` from one linearizable read; returns the files it
    /// wrote. A template that fails to render keeps its file and is logged.
    async fn render(&self, which: &[usize]) -> Result<Vec<Written>, Error> {
        let mut wanted: Vec<&String> = which.iter().flat_map(|&i| &self.slots[i].template.secrets).collect();
        wanted.sort();
        wanted.dedup();
        let pairs: Vec<(&str, u64)> = wanted.iter().map(|n| (n.as_str(), 0)).collect();
        let answers = self.client.batch_get(&pairs).await?;
        let mut values = render::Values::new();
        let mut missing: BTreeMap<&str, String> = BTreeMap::new();
        for (name, answer) in wanted.iter().zip(answers) {
            match answer {
                Ok(s) => {
                    values.insert(name.to_string(), (s.version, Arc::new(s.value)));
                }
                Err(e) => {
                    missing.insert(name.as_str(), e.to_string());
                }
            }
        }
        let values = Arc::new(values);
        let mut changed = Vec::new();
        for &i in which {
            let slot = &self.slots[i];
            let dest = slot.template.destination.display().to_string();
            if let Some((name, why)) = slot.template.secrets.iter().find_map(|n| missing.get_key_value(n.as_str())) {
                metrics::counter!("vault_agent_renders_total", "outcome" => "unreadable").increment(1);
                tracing::warn!(destination = %dest, secret = *name, error = %why, "cannot read a secret; the file stays as it is");
                continue;
            }
            let mine: render::Values =
                slot.template.secrets.iter().filter_map(|n| values.get(n).map(|v| (n.clone(), v.clone()))).collect();
            let text = match render::render(&dest, &slot.source, Arc::new(mine)) {
                Ok(t) => t,
                Err(e) => {
                    metrics::counter!("vault_agent_renders_total", "outcome" => "failed").increment(1);
                    tracing::warn!(error = %e, "template failed; the file stays as it is");
                    continue;
                }
            };
            metrics::counter!("vault_agent_renders_total", "outcome" => "ok").increment(1);
            let bytes = Zeroizing::new(text.as_bytes().to_vec());
            let path = slot.template.destination.clone();
            let (mode, owner, group) = (slot.template.mode, slot.owner, slot.group);
            let wrote = tokio::task::spawn_blocking(move || {
                if files::unchanged(&path, &bytes, mode) {
                    return Ok(None);
                }
                let replaced = path.exists();
                files::write_atomic(&path, &bytes, mode, owner, group).map(|()| Some(replaced))
            })
            .await;
            match wrote {
                Ok(Ok(Some(replaced))) => {
                    metrics::counter!("vault_agent_writes_total").increment(1);
                    tracing::info!(destination = %dest, replaced, "rendered");
                    changed.push(Written { slot: i, replaced });
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(destination = %dest, error = %e, "cannot write the file"),
                Err(e) => tracing::error!(destination = %dest, error = %e, "the write task failed"),
            }
        }
        metrics::gauge!("vault_agent_last_render_timestamp_seconds").set(vault_now_secs());
        Ok(changed)
    }

    /// The templates a watch message touches.
    fn touched(&self, batch: &WatchBatch) -> Vec<usize> {
        if batch.events.iter().any(|e| e.kind == ChangeKind::Reset) {
            return (0..self.slots.len()).collect();
        }
        (0..self.slots.len())
            .filter(|&i| batch.events.iter().any(|e| self.slots[i].template.secrets.contains(&e.name)))
            .collect()
    }

    /// Runs the actions of the templates whose files changed, then restarts or signals the
    /// supervised program once.
    async fn act(&self, changed: &[Written], child: &mut Option<Supervised>) {
        for &Written { slot: i, .. } in changed {
            for action in &self.slots[i].template.on_change {
                let outcome = match action::perform(action).await {
                    Ok(()) => "ok",
                    Err(e) => {
                        tracing::warn!(destination = %self.slots[i].template.destination.display(), error = %e, "on-change action failed");
                        "failed"
                    }
                };
                metrics::counter!("vault_agent_actions_total", "outcome" => outcome).increment(1);
            }
        }
        if let (false, Some(child)) = (changed.is_empty(), child.as_mut()) {
            if let Err(e) = child.on_change().await {
                tracing::error!(error = %e, "cannot restart or signal the supervised process");
            }
        }
    }

    /// Watches and renders until SIGTERM/SIGINT, or the supervised process exits.
    async fn serve(&self, exec: Option<config::Exec>) -> anyhow::Result<ExitCode> {
        let mut child = exec.map(Supervised::new);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut backoff = self.retry.0;
        // Whether every template has rendered once (the child starts after that).
        let mut complete = false;
        let mut heard = Instant::now();
        let mut warned_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        'watch: loop {
            let request = WatchRequest { names: self.names.clone(), ..WatchRequest::default() };
            let mut watch = self.client.watch(request);
            let mut rendered_since_start = false;
            loop {
                let batch = tokio::select! {
                    b = watch.next() => b,
                    _ = tick.tick() => {
                        let silent = heard.elapsed();
                        metrics::gauge!("vault_agent_stale_seconds").set(silent.as_secs_f64());
                        if silent >= self.stale_after && warned_at.is_none_or(|w| w.elapsed() >= silent / 2) {
                            tracing::warn!(stale_secs = silent.as_secs(), "no word from the cluster; files may be stale");
                            warned_at = Some(Instant::now());
                        }
                        continue;
                    }
                    _ = term.recv() => break 'watch,
                    _ = tokio::signal::ctrl_c() => break 'watch,
                    status = exited(&mut child) => {
                        tracing::warn!(status = ?status, "the supervised process exited; the agent stops");
                        return Ok(exit_code(status));
                    }
                };
                let batch = match batch {
                    Some(Ok(b)) => b,
                    Some(Err(Error::Compacted { message, .. })) => {
                        tracing::warn!(%message, "watch compacted; rendering everything again");
                        continue 'watch;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "watch refused; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.retry.1);
                        continue 'watch;
                    }
                    None => continue 'watch,
                };
                heard = Instant::now();
                if warned_at.take().is_some() {
                    tracing::info!("the cluster answers again");
                }
                let which = if rendered_since_start { self.touched(&batch) } else { (0..self.slots.len()).collect() };
                if which.is_empty() {
                    continue;
                }
                match self.render(&which).await {
                    Ok(changed) => {
                        backoff = self.retry.0;
                        rendered_since_start = true;
                        if complete {
                            self.act(&changed, &mut child).await;
                        } else {
                            // At start, a file the agent creates has no reader to tell yet; one
                            // it replaces (changed while the agent was down) has. The program
                            // it supervises starts now, with every file in place.
                            complete = true;
                            let replaced: Vec<Written> = changed.into_iter().filter(|w| w.replaced).collect();
                            self.act(&replaced, &mut None).await;
                            if let Some(c) = child.as_mut() {
                                c.start().map_err(|e| anyhow!(e))?;
                            }
                        }
                    }
                    Err(e) => {
                        // Render everything again from a fresh watch once the cluster answers.
                        tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "cannot read secrets; files stay as they are");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(self.retry.1);
                        continue 'watch;
                    }
                }
            }
        }
        if let Some(c) = child.as_mut() {
            c.stop().await;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Resolves when the supervised process exits by itself (never without one).
async fn exited(child: &mut Option<Supervised>) -> std::io::Result<std::process::ExitStatus> {
    match child.as_mut() {
        Some(c) => c.exited().await,
        None => std::future::pending().await,
    }
}

/// The agent leaves with its child's exit code (1 if a signal ended it).
fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> ExitCode {
    match status.map(|s| s.code()) {
        Ok(Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    }
}

fn vault_now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
