//! openraft's network over [`PeerClients`].

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::client::PeerClients;
use super::pb;
use super::peer_failures::PeerFailures;
use crate::codec::{decode, encode};
use crate::node::NodeInfo;
use crate::synced_log::SyncedLog;
use crate::typ::{NodeId, TypeConfig};

/// Creates a client per target; channels are shared through [`PeerClients`].
#[derive(Clone)]
pub struct GrpcNetwork {
    peers: PeerClients,
    synced: SyncedLog,
    failures: PeerFailures,
}

impl GrpcNetwork {
    /// `synced` is this node's log: the commit index it sends never passes it.
    pub fn new(peers: PeerClients, synced: SyncedLog) -> Self {
        GrpcNetwork { peers, synced, failures: PeerFailures::default() }
    }
}

pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    peers: PeerClients,
    synced: SyncedLog,
    failures: PeerFailures,
    /// `AppendEntries` sent through this client so far.
    appends: u64,
    /// The replication stream to `target`, once this client has sent more than one append.
    stream: Option<AppendStream>,
    /// `target` does not serve `AppendStream` (a node of an older version, during a rolling
    /// upgrade): this client sends unary calls only.
    unary_only: bool,
}

/// One open `AppendStream` call: requests go out on `tx`, answers come back in order on `rx`.
struct AppendStream {
    tx: mpsc::Sender<pb::Blob>,
    rx: Streaming<pb::Blob>,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
            synced: self.synced.clone(),
            failures: self.failures.clone(),
            appends: 0,
            stream: None,
            unary_only: false,
        }
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

fn transport_error<E: std::error::Error>(s: Status) -> RPCError<NodeId, NodeInfo, E> {
    match s.code() {
        // Connection refused, reset, DNS: back off before trying again.
        Code::Unavailable | Code::Unknown => RPCError::Unreachable(Unreachable::new(&s)),
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl PeerNetwork {
    /// Notes the outcome of a call for the per-peer summary in the log: a call the peer did
    /// not answer is a failure, and so is one it answered with an error of its own (a fatal
    /// storage error, say), which openraft's own lines (dropped from the log as retry noise)
    /// would otherwise be the only word of.
    fn observe<T, E: std::error::Error>(&self, result: &Result<T, RPCError<NodeId, NodeInfo, E>>) {
        match result {
            Err(
                e @ (RPCError::Unreachable(_) | RPCError::Network(_) | RPCError::Timeout(_) | RPCError::RemoteError(_)),
            ) => self.failures.record(self.target, Some(e)),
            Err(RPCError::PayloadTooLarge(_)) => {}
            Ok(_) => self.failures.record(self.target, None),
        }
    }

    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self.peers.client(self.target, &self.addr).map_err(transport_error)?;
        let mut request = tonic::Request::new(pb::Blob { data: data.into() });
        request.set_timeout(timeout);
        let fut = async {
            match rpc {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
            }
        };
        let reply = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| RPCError::Network(NetworkError::new(&Status::deadline_exceeded("raft rpc timed out"))))?
            .map_err(transport_error)?;
        self.answer(&reply.into_inner().data)
    }

    // openraft's error type, as `call` returns it.
    #[allow(clippy::result_large_err)]
    fn answer<Resp, E>(&self, data: &[u8]) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, E> = decode(data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Sends `rpc` on this client's replication stream (opened first if need be) and waits for
    /// its answer. Any failure closes the stream; the next append opens a new one.
    async fn streamed(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let data = encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let exchange = async {
            if self.stream.is_none() {
                let mut client = self.peers.client(self.target, &self.addr)?;
                let (tx, rx) = mpsc::channel(1);
                let rx = client.append_stream(ReceiverStream::new(rx)).await?.into_inner();
                self.stream = Some(AppendStream { tx, rx });
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(Status::unavailable("append stream not open"));
            };
            stream
                .tx
                .send(pb::Blob { data: data.into() })
                .await
                .map_err(|_| Status::unavailable("append stream closed"))?;
            match stream.rx.message().await? {
                Some(reply) => Ok(reply),
                None => Err(Status::unavailable("append stream ended")),
            }
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                tracing::info!(peer = self.target, "peer has no replication stream (older version): unary appends");
                self.stream = None;
                self.unary_only = true;
                return self.call(Rpc::Append, rpc, timeout).await;
            }
            Ok(Err(status)) => {
                self.stream = None;
                return Err(transport_error(status));
            }
            Err(_) => {
                // The answer may still come: a new stream keeps it from being taken for the next.
                self.stream = None;
                return Err(RPCError::Network(NetworkError::new(&Status::deadline_exceeded("raft rpc timed out"))));
            }
        };
        self.answer(&reply.data)
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.synced.clamp_commit(&mut rpc);
        self.appends += 1;
        // openraft makes a client per replication session (many appends, one at a time) and
        // one per read-index round (a single append): only the first kind gets a stream.
        let result = if self.appends == 1 || self.unary_only {
            self.call(Rpc::Append, &rpc, option.hard_ttl()).await
        } else {
            self.streamed(&rpc, option.hard_ttl()).await
        };
        self.observe(&result);
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        let result = self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await;
        self.observe(&result);
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let result = self.call(Rpc::Vote, &rpc, option.hard_ttl()).await;
        self.observe(&result);
        result
    }

    /// Unreachable peers are retried with growing pauses, up to 4 s.
    fn backoff(&self) -> Backoff {
        Backoff::new((0..).map(|i: u32| Duration::from_millis(250u64.saturating_mul(1 << i.min(4)))))
    }
}
