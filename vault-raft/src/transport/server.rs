//! The Raft gRPC service.

use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use super::admission::{admit_forward, admit_peer, admit_voter, announce_join};
use super::client::MAX_MESSAGE;
use super::forward::{ForwardError, ForwardRequest, ForwardResponse};
use super::listener::PeerIdentity;
use super::pb;
use super::pb::raft_server::{Raft as RaftRpc, RaftServer};
use super::peer_audit::PeerAudit;
use super::security::{ServerGuard, TransportSecurity};
use crate::audit_log::AuditLog;
use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::node::NodeInfo;
use crate::synced_log::SyncWait;
use crate::typ::{NodeId, TypeConfig};

/// How long forwarded work may take on this node when the forwarding node set no deadline
/// (every node of this version sets one: its caller's).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest deadline a forwarding node may ask for.
const FORWARD_TIMEOUT_MAX: Duration = Duration::from_secs(300);

pub type RaftServiceServer = InterceptedService<RaftServer<RaftService>, ServerGuard>;

pub struct RaftService {
    cluster: Cluster,
    me: NodeInfo,
    /// Where members' refused requests and forwarded cluster changes are recorded (none in
    /// tests without an audit log).
    audit: Option<PeerAudit>,
}

impl RaftService {
    pub fn new(cluster: Cluster, me: NodeInfo) -> Self {
        RaftService { cluster, me, audit: None }
    }

    /// Records members' refused requests and forwarded cluster changes in `log` (see
    /// `peer_audit`).
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(PeerAudit::new(log));
        self
    }

    /// The service behind the membership check of `security`.
    pub fn into_server(self, security: &TransportSecurity) -> RaftServiceServer {
        let server =
            RaftServer::new(self).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        InterceptedService::new(server, security.server_guard())
    }
}

fn parse<T: DeserializeOwned>(req: Request<pb::Blob>) -> Result<T, Status> {
    decode(&req.into_inner().data).map_err(undecodable)
}

/// A message this node cannot decode: from a member on a newer build, it carries a command or
/// format above what this build understands. Refused (so nothing past it is applied here), and
/// said loudly, at most once a minute.
fn undecodable(e: crate::StoreError) -> Status {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SAID_MS: AtomicU64 = AtomicU64::new(0);
    let now = vault_core::time::now_ms();
    let last = LAST_SAID_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST_SAID_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::error!(
            error = %e,
            understands = crate::features::FEATURE_LEVEL,
            "a Raft message from a peer cannot be decoded: it may carry a command or format newer than this build \
             understands; this node applies nothing past it until it runs the cluster's build"
        );
    }
    Status::invalid_argument(format!(
        "malformed raft message (this node understands feature level {}): {e}",
        crate::features::FEATURE_LEVEL
    ))
}

/// The node id the caller's certificate names (`None` in dev mode, where peers carry none).
fn peer_of<T>(req: &Request<T>) -> Option<NodeId> {
    req.extensions().get::<PeerIdentity>().and_then(|p| p.node_id)
}

impl RaftService {
    /// Admits a member (see `admission`) and parses its message.
    fn admit<T: DeserializeOwned>(&self, req: Request<pb::Blob>) -> Result<(Option<NodeId>, T), Status> {
        let peer = peer_of(&req);
        admit_peer(&self.cluster, peer)?;
        Ok((peer, parse(req)?))
    }
}

/// The deadline a gRPC client sent in its `grpc-timeout` header: 1 to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
fn deadline_of<T>(req: &Request<T>) -> Option<Duration> {
    let header = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = header.split_at(header.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn reply<T: Serialize>(value: &T) -> Result<Response<pb::Blob>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(pb::Blob { data: data.into() }))
}

/// Hands `req` from `peer` to openraft and encodes its answer. openraft was told entries were
/// written before they were synced (`synced_log`): a success is sent only once the entries it
/// claims are on disk here, since the leader counts it toward a commit.
async fn append(
    cluster: &Cluster,
    peer: Option<NodeId>,
    req: AppendEntriesRequest<TypeConfig>,
) -> Result<Vec<u8>, Status> {
    admit_voter(cluster, peer, req.vote.leader_id().voted_for(), "append")?;
    let claimed = req.entries.last().map(|e| e.log_id).or(req.prev_log_id);
    let r = cluster.raft.append_entries(req).await;
    let matched = match &r {
        Ok(AppendEntriesResponse::Success) => claimed,
        Ok(AppendEntriesResponse::PartialSuccess(m)) => *m,
        _ => None,
    };
    if let Some(m) = matched {
        cluster.synced.wait_synced(m.index).await.map_err(|e| match e {
            SyncWait::Truncated => Status::aborted("the raft log was truncated before these entries were synced"),
            SyncWait::Closed => Status::unavailable("this node is shutting down"),
        })?;
    }
    encode(&r).map_err(|e| Status::internal(format!("encode raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let (peer, req): (_, AppendEntriesRequest<TypeConfig>) = self.admit(req)?;
        Ok(Response::new(pb::Blob { data: append(&self.cluster, peer, req).await?.into() }))
    }

    type AppendStreamStream = ReceiverStream<Result<pb::Blob, Status>>;

    async fn append_stream(
        &self,
        req: Request<Streaming<pb::Blob>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let peer = peer_of(&req);
        admit_peer(&self.cluster, peer)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let cluster = self.cluster.clone();
        // One message at a time, in order: each is answered before the next is read. The task
        // ends when the leader closes or drops the stream, or at the first refusal (sent as the
        // stream's status).
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let reply = async {
                    // A member removed since the stream opened is refused from then on.
                    admit_peer(&cluster, peer)?;
                    let req: AppendEntriesRequest<TypeConfig> = decode(&msg.data).map_err(undecodable)?;
                    append(&cluster, peer, req).await
                }
                .await;
                let refused = reply.is_err();
                if tx.send(reply.map(|data| pb::Blob { data: data.into() })).await.is_err() || refused {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let (peer, req): (_, VoteRequest<NodeId>) = self.admit(req)?;
        admit_voter(&self.cluster, peer, req.vote.leader_id().voted_for(), "vote")?;
        let r = self.cluster.raft.vote(req).await;
        reply(&r)
    }

    async fn install_snapshot(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let (peer, req): (_, InstallSnapshotRequest<TypeConfig>) = self.admit(req)?;
        admit_voter(&self.cluster, peer, req.vote.leader_id().voted_for(), "snapshot")?;
        let r = self.cluster.raft.install_snapshot(req).await;
        reply(&r)
    }

    async fn forward(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        // The forwarding node's deadline is its caller's. The work here ends a little before
        // it (tonic and the forwarding node both enforce it from the moment the call was sent),
        // so that a cluster change out of time still gets its answer back ("added as a learner
        // but still catching up") instead of a bare timeout.
        let timeout = deadline_of(&req).map_or(FORWARD_TIMEOUT, |t| {
            let t = t.min(FORWARD_TIMEOUT_MAX);
            t.saturating_sub((t / 20).max(Duration::from_secs(1)))
        });
        let addr = req.extensions().get::<PeerIdentity>().and_then(|p| p.addr);
        let (peer, (from, request)): (_, (NodeId, ForwardRequest)) = self.admit(req)?;
        let admitted = admit_forward(&self.cluster, peer, from, &request).and_then(|()| match &request {
            ForwardRequest::CallerWrite(w) => self.cluster.check_caller_token(&w.token),
            _ => Ok(()),
        });
        if let Err(refused) = admitted {
            if let Some(audit) = &self.audit {
                audit.refused(peer.unwrap_or(from), addr, &request.describe(), &refused);
            }
            return Err(refused);
        }
        let change = match (&request, &self.audit) {
            (ForwardRequest::CallerAdmin { token, op }, Some(audit)) => {
                let actor = match self.cluster.reader.token_by_hash(&token.hash()) {
                    Ok(Some(t)) => t.name,
                    _ => crate::caller_write::UNKNOWN_TOKEN_ACTOR.to_string(),
                };
                audit.change(&actor, from, addr, op.action(), &op.subject(), "requested".into());
                Some((audit, actor, op.action(), op.subject()))
            }
            _ => None,
        };
        let r: Result<ForwardResponse, ForwardError> = self.cluster.handle_from(from, request, timeout).await;
        if let Some((audit, actor, action, subject)) = change {
            let outcome = match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            audit.change(&actor, from, addr, action, &subject, outcome);
        }
        reply(&r)
    }

    async fn node_state(&self, req: Request<pb::NodeStateRequest>) -> Result<Response<pb::NodeStateReply>, Status> {
        let peer = peer_of(&req);
        admit_peer(&self.cluster, peer)?;
        let initialized = self.cluster.raft.is_initialized().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let voters = &req.get_ref().joining_voters;
        if !voters.is_empty() {
            announce_join(&self.cluster, peer, voters)?;
        }
        Ok(Response::new(pb::NodeStateReply {
            node_id: self.cluster.node_id,
            initialized,
            raft_addr: self.me.raft_addr.clone(),
            api_addr: self.me.api_addr.clone(),
            key_ids: self.cluster.key_ids.to_vec(),
            feature_level: self.cluster.feature_level,
            snapshot_format: u32::from(crate::snapshot_file::SNAPSHOT_FORMAT),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request<()> {
        let mut req = Request::new(());
        req.metadata_mut().insert("grpc-timeout", value.parse().expect("ascii"));
        req
    }

    #[test]
    fn a_forwarding_nodes_deadline_is_read_as_tonic_writes_it() {
        for d in [Duration::from_secs(120), Duration::from_millis(2_500), Duration::from_secs(3 * 3600)] {
            let mut req = Request::new(());
            req.set_timeout(d);
            assert_eq!(deadline_of(&req), Some(d), "{:?}", req.metadata().get("grpc-timeout"));
        }
        assert_eq!(deadline_of(&with_header("2M")), Some(Duration::from_secs(120)));
        assert_eq!(deadline_of(&with_header("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(deadline_of(&with_header("750u")), Some(Duration::from_micros(750)));
        assert_eq!(deadline_of(&Request::new(())), None);
        for bad in ["", "S", "12", "123456789S", "-1S", "1.5S", "10s", "10 S"] {
            assert_eq!(deadline_of(&with_header(bad)), None, "{bad:?}");
        }
    }
}
