use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::forward::{ForwardError, ForwardRequest, ForwardResponse};
use super::pb;
use super::pb::raft_client::RaftClient;
use super::security::{ClientStamp, TransportSecurity};
use crate::codec::{decode, encode};
use crate::typ::NodeId;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest message accepted from a peer (a snapshot chunk plus framing, or a batch of entries).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// Whether the call failed while connecting, i.e. before the request left this node.
fn is_connect_failure(s: &Status) -> bool {
    if s.code() != Code::Unavailable {
        return false;
    }
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    let text = text.to_ascii_lowercase();
    text.contains("tcp connect error") || text.contains("connection refused") || text.contains("no route to host")
}

/// Clients for peers' Raft listeners: one cached, lazily connected channel per node and
/// address. Each channel verifies that the peer's certificate names the node it dials.
#[derive(Clone)]
pub struct PeerClients {
    /// This node: forwarded requests say who sends them.
    me: NodeId,
    security: TransportSecurity,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

pub(crate) type Client = RaftClient<InterceptedService<Channel, ClientStamp>>;

impl PeerClients {
    pub fn new(me: NodeId, security: TransportSecurity) -> Self {
        PeerClients { me, security, channels: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Re-reads the TLS material and forgets cached channels, so the next call to each peer
    /// connects with the new certificate. Calls in flight finish on their old connections.
    pub fn reload(&self) -> std::io::Result<()> {
        self.security.reload()?;
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    fn channel(&self, id: NodeId, addr: &str) -> Result<Channel, Status> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let key = (id, addr.to_string());
        if let Some(ch) = map.get(&key) {
            return Ok(ch.clone());
        }
        let scheme = if self.security.is_tls() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|_| Status::invalid_argument(format!("peer address {addr:?} is not host:port")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            // Also between calls: a peer's listener closes a connection that carries nothing
            // for a minute (`listener::IDLE_TIMEOUT`), and one closed under a call being sent
            // would fail that call.
            .keep_alive_while_idle(true);
        if let Some(tls) = self.security.client_tls(id) {
            ep = ep.tls_config(tls).map_err(|e| Status::internal(format!("raft client TLS: {e}")))?;
        }
        let ch = ep.connect_lazy();
        map.insert(key, ch.clone());
        Ok(ch)
    }

    /// A client for node `id` at `addr`.
    pub(crate) fn client(&self, id: NodeId, addr: &str) -> Result<Client, Status> {
        Ok(RaftClient::with_interceptor(self.channel(id, addr)?, self.security.client_stamp())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    pub async fn node_state(&self, id: NodeId, addr: &str, timeout: Duration) -> Result<pb::NodeStateReply, Status> {
        self.announce_join(id, addr, &[], timeout).await
    }

    /// [`node_state`](Self::node_state), telling a node about to be added which voters it
    /// joins (none: only asking).
    pub async fn announce_join(
        &self,
        id: NodeId,
        addr: &str,
        voters: &[NodeId],
        timeout: Duration,
    ) -> Result<pb::NodeStateReply, Status> {
        let mut c = self.client(id, addr)?;
        let mut req = tonic::Request::new(pb::NodeStateRequest { joining_voters: voters.to_vec() });
        req.set_timeout(timeout);
        // The header tells the peer; this bounds the wait here too (a stopped peer never answers).
        match tokio::time::timeout(timeout, c.node_state(req)).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(Status::deadline_exceeded(format!("peer {addr} did not answer in {timeout:?}"))),
        }
    }

    /// Sends `req` to node `id`, whose Raft listener is `addr`, saying it comes from this node.
    pub async fn forward(
        &self,
        id: NodeId,
        addr: &str,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let data = encode(&(self.me, req)).map_err(|e| ForwardError::Unavailable(format!("encode forward: {e}")))?;
        let mut c = self.client(id, addr).map_err(|s| ForwardError::Unavailable(s.message().to_string()))?;
        let mut r = tonic::Request::new(pb::Blob { data: data.into() });
        r.set_timeout(timeout);
        let reply = tokio::time::timeout(timeout, c.forward(r))
            .await
            .map_err(|_| ForwardError::Unavailable(format!("peer {addr} did not answer in {timeout:?}")))?
            .map_err(|s| match s.code() {
                Code::Unauthenticated | Code::PermissionDenied => {
                    ForwardError::Unavailable(format!("peer {addr} refused this node: {}", s.message()))
                }
                _ if is_connect_failure(&s) => {
                    ForwardError::Unreachable(format!("peer {addr} unreachable: {}", s.message()))
                }
                _ => ForwardError::Unavailable(format!("peer {addr}: {}", s.message())),
            })?;
        let out: Result<ForwardResponse, ForwardError> = decode(&reply.into_inner().data)
            .map_err(|e| ForwardError::Unavailable(format!("decode forward reply: {e}")))?;
        out
    }
}
