//! The Raft gRPC service.

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::client::MAX_MESSAGE;
use super::forward::{ForwardError, ForwardRequest, ForwardResponse};
use super::pb;
use super::pb::raft_server::{Raft as RaftRpc, RaftServer};
use super::security::{ServerGuard, TransportSecurity};
use crate::cluster::Cluster;
use crate::codec::{decode, encode};
use crate::node::NodeInfo;
use crate::synced_log::SyncWait;
use crate::typ::TypeConfig;

/// How long forwarded work may take on this node.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub type RaftServiceServer = InterceptedService<RaftServer<RaftService>, ServerGuard>;

pub struct RaftService {
    cluster: Cluster,
    me: NodeInfo,
}

impl RaftService {
    pub fn new(cluster: Cluster, me: NodeInfo) -> Self {
        RaftService { cluster, me }
    }

    /// The service behind the membership check of `security`.
    pub fn into_server(self, security: &TransportSecurity) -> RaftServiceServer {
        let server =
            RaftServer::new(self).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        InterceptedService::new(server, security.server_guard())
    }
}

fn parse<T: DeserializeOwned>(req: Request<pb::Blob>) -> Result<T, Status> {
    decode(&req.into_inner().data).map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<pb::Blob>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(pb::Blob { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = parse(req)?;
        let claimed = req.entries.last().map(|e| e.log_id).or(req.prev_log_id);
        let r = self.cluster.raft.append_entries(req).await;
        // openraft was told the entries were written before they were synced (`synced_log`):
        // acknowledge only once they are on disk here, since the leader counts this reply
        // toward a commit.
        let matched = match &r {
            Ok(AppendEntriesResponse::Success) => claimed,
            Ok(AppendEntriesResponse::PartialSuccess(m)) => *m,
            _ => None,
        };
        if let Some(m) = matched {
            self.cluster.synced.wait_synced(m.index).await.map_err(|e| match e {
                SyncWait::Truncated => Status::aborted("the raft log was truncated before these entries were synced"),
                SyncWait::Closed => Status::unavailable("this node is shutting down"),
            })?;
        }
        reply(&r)
    }

    async fn vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let r = self.cluster.raft.vote(parse(req)?).await;
        reply(&r)
    }

    async fn install_snapshot(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let r = self.cluster.raft.install_snapshot(parse(req)?).await;
        reply(&r)
    }

    async fn forward(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let request: ForwardRequest = parse(req)?;
        let r: Result<ForwardResponse, ForwardError> = self.cluster.handle_local(request, FORWARD_TIMEOUT).await;
        reply(&r)
    }

    async fn node_state(&self, _req: Request<pb::NodeStateRequest>) -> Result<Response<pb::NodeStateReply>, Status> {
        let initialized = self.cluster.raft.is_initialized().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::NodeStateReply {
            node_id: self.cluster.node_id,
            initialized,
            raft_addr: self.me.raft_addr.clone(),
            api_addr: self.me.api_addr.clone(),
        }))
    }
}
