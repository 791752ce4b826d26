//! [`Client`]: the node set and how a call picks its node.
//!
//! - **Reads** ([`Route::Read`]) start at the node that last answered one and move on to the
//!   next node when one cannot serve (unreachable, timed out, `UNAVAILABLE`).
//! - **Writes and management calls** ([`Route::Write`]) start at the node last seen as leader,
//!   follow the leader a follower names in `x-vault-leader`, else try the next node. A hinted
//!   node is reached with the scheme and TLS settings of the node that named it (a scheme in
//!   the hint is ignored); one that is not configured is used for that call only and never
//!   remembered as leader. Reads never follow a hint. A write
//!   moves to another node only when it certainly was not carried out: the connection could
//!   not be opened, or the node said no leader could take it ([`Error::is_not_leader`]).
//!   Any other failure (a connection that breaks after the request left, a timeout, another
//!   `UNAVAILABLE` such as a failed rotation hook) is returned to the caller, who knows
//!   whether a repeat is safe. (Nodes forward writes to the leader and wait out an election
//!   themselves, so this is rare.)
//! - **Node-local views** ([`Route::Node`]: status, audit log of one node) go to that node only.
//!
//! While some node says no leader is known (an election outlasted its own wait), the client
//! goes round the nodes again with a short backoff until the call's budget
//! ([`Builder::timeout`]) is spent; otherwise it gives up after one round. Nodes that failed recently
//! are tried last. Each node has one cached channel, opened on first use.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::auth::Auth;
use crate::config::{authority, Builder, Settings};
use crate::error::{Error, Result};
use crate::pb::admin_client::AdminClient;
use crate::pb::secrets_client::SecretsClient;

/// How long a node that failed is tried after the others.
const DOWN_FOR: Duration = Duration::from_secs(10);
/// Pause between rounds over the nodes while an election runs; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A channel to one node with the client's token attached.
pub type Authed = InterceptedService<Channel, Auth>;

/// Where a call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Any healthy node; another one when it fails.
    Read,
    /// The leader (as last seen, or as a follower names it).
    Write,
    /// This node only (`http(s)://host:port`, or `host:port`: a configured node, else one
    /// reached with the first configured node's scheme).
    Node(String),
}

/// The connection to one node, handed to the closure of [`Client::call`].
#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    auth: Auth,
    addr: Arc<str>,
}

impl Conn {
    /// The `Secrets` service stub on this node.
    pub fn secrets(&self) -> SecretsClient<Authed> {
        SecretsClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// The `Admin` service stub on this node.
    pub fn admin(&self) -> AdminClient<Authed> {
        AdminClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// The node's URL.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

pub(crate) struct Node {
    pub url: Arc<str>,
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    failed_at: Mutex<Option<Instant>>,
}

impl Node {
    pub fn conn(&self, auth: &Auth) -> Conn {
        let channel = self.channel.get_or_init(|| self.endpoint.connect_lazy()).clone();
        Conn { channel, auth: auth.clone(), addr: self.url.clone() }
    }

    pub fn failed(&self) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn answered(&self) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn recently_failed(&self) -> bool {
        self.failed_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < DOWN_FOR)
    }
}

pub(crate) struct Inner {
    pub settings: Settings,
    nodes: RwLock<Vec<Arc<Node>>>,
    leader: Mutex<Option<Arc<str>>>,
    last_read: Mutex<Option<Arc<str>>>,
}

impl Inner {
    /// Nodes in the order a call tries them.
    pub fn order(&self, route: &Route) -> Vec<Arc<Node>> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let first = match route {
            Route::Write => self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            _ => self.last_read.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        let start = first.and_then(|f| nodes.iter().position(|n| n.url == f)).unwrap_or(0);
        let mut order: Vec<Arc<Node>> = nodes[start..].iter().chain(&nodes[..start]).cloned().collect();
        // Stable: healthy nodes first, each group in the order above.
        order.sort_by_key(|n| n.recently_failed());
        order
    }

    /// The configured node at `addr`'s `host:port`, if any.
    fn configured(&self, addr: &str) -> Option<Arc<Node>> {
        let want = authority(addr);
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).iter().find(|n| authority(&n.url) == want).cloned()
    }

    /// The node at `addr` (a URL, or `host:port`) for [`Route::Node`]: the configured one, else
    /// a node for this call only, with `addr`'s scheme or that of `like`.
    pub fn node(&self, addr: &str, like: Option<&str>) -> Result<Arc<Node>> {
        if let Some(n) = self.configured(addr) {
            return Ok(n);
        }
        let scheme = match (addr.split_once("://"), like.and_then(|l| l.split_once("://"))) {
            (Some((s, _)), _) | (None, Some((s, _))) => s,
            (None, None) => "http",
        };
        self.transient(scheme, authority(addr))
    }

    /// The node a leader hint names, as `from` (the node that sent it) gave it: the configured
    /// node with that `host:port`, else a node for this call only. Any scheme in the hint is
    /// ignored: the hinted node is reached with `from`'s scheme (and so its TLS settings), so a
    /// hint cannot downgrade https to http.
    pub fn hinted(&self, hint: &str, from: &Node) -> Result<Arc<Node>> {
        let want = authority(hint);
        if let Some(n) = self.configured(want) {
            return Ok(n);
        }
        let scheme = from.url.split_once("://").map_or("http", |(s, _)| s);
        self.transient(scheme, want)
    }

    /// A node that is not kept in the node set (its channel lives as long as the call).
    fn transient(&self, scheme: &str, authority: &str) -> Result<Arc<Node>> {
        let url = crate::config::parse_addrs(&[format!("{scheme}://{authority}")], scheme)?.remove(0);
        Ok(Arc::new(Node {
            endpoint: self.settings.endpoint(&url)?,
            url: url.into(),
            channel: OnceLock::new(),
            failed_at: Mutex::new(None),
        }))
    }

    fn is_configured(&self, node: &Node) -> bool {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).iter().any(|n| n.url == node.url)
    }

    /// Remembers `node` as the leader (writes) or the node to read from first (reads); only a
    /// configured node is remembered.
    fn served(&self, route: &Route, node: &Node) {
        node.answered();
        if !self.is_configured(node) {
            return;
        }
        let slot = if *route == Route::Write { &self.leader } else { &self.last_read };
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.url.clone());
    }

    fn set_leader(&self, node: &Node) {
        if !self.is_configured(node) {
            return;
        }
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.url.clone());
    }
}

/// A client of a vault cluster: several node addresses, failover, TLS, token. Cheap to clone
/// (clones share the connections).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.nodes())
            .field("leader", &self.leader())
            .field("token", &self.inner.settings.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// Starts a [`Builder`].
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A client configured from the environment only (see [`Builder::with_env`]).
    pub fn from_env() -> Result<Client> {
        Builder::default().with_env().build()
    }

    pub(crate) fn new(addrs: Vec<String>, settings: Settings) -> Result<Client> {
        let nodes = addrs
            .into_iter()
            .map(|url| {
                Ok(Arc::new(Node {
                    endpoint: settings.endpoint(&url)?,
                    url: url.into(),
                    channel: OnceLock::new(),
                    failed_at: Mutex::new(None),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let timeout = settings.timeout;
        let inner =
            Inner { settings, nodes: RwLock::new(nodes), leader: Mutex::new(None), last_read: Mutex::new(None) };
        Ok(Client { inner: Arc::new(inner), timeout })
    }

    /// The same client (same connections) with another budget per call.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { inner: self.inner.clone(), timeout }
    }

    /// The configured node URLs (nodes named only by a leader hint are used for that call and
    /// not kept).
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes.read().unwrap_or_else(|p| p.into_inner()).iter().map(|n| n.url.to_string()).collect()
    }

    /// The node last seen as leader (or that last took a write), if any.
    pub fn leader(&self) -> Option<String> {
        self.inner.leader.lock().unwrap_or_else(|p| p.into_inner()).as_deref().map(str::to_string)
    }

    /// Whether calls carry a token.
    pub fn has_token(&self) -> bool {
        self.inner.settings.auth.is_set()
    }

    /// Runs `f` on a node chosen by `route`, again on another node when the route allows it
    /// (module doc), and turns its status into an [`Error`]. `req` is cloned for each try.
    ///
    /// ```no_run
    /// # async fn demo(client: vault_client::Client) -> vault_client::Result<()> {
    /// use vault_client::{pb, Route};
    /// let roles = client
    ///     .call(Route::Write, pb::ListRolesRequest {}, |c, r| async move { c.admin().list_roles(r).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn call<Req, T, F, Fut>(&self, route: Route, req: Req, mut f: F) -> Result<T>
    where
        Req: Clone,
        F: FnMut(Conn, Req) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        if let Route::Node(addr) = &route {
            let like = self.inner.nodes.read().unwrap_or_else(|p| p.into_inner()).first().map(|n| n.url.clone());
            let node = self.inner.node(addr, like.as_deref())?;
            return self.attempt(&node, req, &mut f, deadline).await;
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut queue: std::collections::VecDeque<Arc<Node>> = self.inner.order(&route).into();
            let mut tried: Vec<Arc<str>> = Vec::new();
            let mut last = None;
            let mut no_leader = false;
            while let Some(node) = queue.pop_front() {
                if tried.contains(&node.url) {
                    continue;
                }
                tried.push(node.url.clone());
                let e = match self.attempt(&node, req.clone(), &mut f, deadline).await {
                    Ok(v) => {
                        self.inner.served(&route, &node);
                        return Ok(v);
                    }
                    Err(e) if retryable(&route, &e) => e,
                    Err(e) => return Err(e),
                };
                if let Error::NodeUnavailable { leader, .. } = &e {
                    // No leader known: an election is under way; another round may find one.
                    no_leader |= leader.is_none() && e.is_not_leader();
                    // Only a write follows a hint; a read goes on with the next configured node.
                    if let (Some(hint), Route::Write) = (leader, &route) {
                        let hinted = self.inner.hinted(hint, &node)?;
                        if !tried.contains(&hinted.url) {
                            self.inner.set_leader(&hinted);
                            queue.push_front(hinted);
                        }
                    }
                } else {
                    node.failed();
                }
                last = Some(e);
                if Instant::now() >= deadline {
                    break;
                }
            }
            let last = last.unwrap_or_else(|| Error::Config("no node to call".into()));
            if !no_leader || Instant::now() + backoff >= deadline {
                return Err(Error::Unavailable { tried: tried.len(), last: Box::new(last) });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt<Req, T, F, Fut>(&self, node: &Node, req: Req, f: &mut F, deadline: Instant) -> Result<T>
    where
        F: FnMut(Conn, Req) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let timeout = Error::Timeout { addr: node.url.to_string() };
        if Instant::now() >= deadline {
            return Err(timeout);
        }
        match tokio::time::timeout_at(deadline, f(node.conn(&self.inner.settings.auth), req)).await {
            Err(_) => Err(timeout),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(Error::from_status(&node.url, s)),
        }
    }
}

/// Whether `e` lets the call move to another node.
fn retryable(route: &Route, e: &Error) -> bool {
    match route {
        Route::Write => e.is_not_leader() || matches!(e, Error::Transport { connected: false, .. }),
        _ => e.is_node_failure(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LEADER_HEADER;

    /// A follower's refusal naming `hint` as leader, as the server sends it.
    fn not_leader(hint: &str) -> Status {
        let mut s = Status::unavailable(format!("no leader could take this request (leader: {hint})"));
        s.metadata_mut().insert(LEADER_HEADER, hint.parse().expect("ascii"));
        s
    }

    /// Calls `route` on `client`; the first node tried refuses with a hint to `hint`, every
    /// other node answers. Returns the nodes tried, in order.
    async fn tried(client: &Client, route: Route, hint: &str) -> (Result<()>, Vec<String>) {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = client
            .call(route, (), |c, ()| {
                let seen = seen.clone();
                let hint = hint.to_string();
                async move {
                    let mut seen = seen.lock().expect("lock");
                    seen.push(c.addr().to_string());
                    if seen.len() == 1 {
                        Err(not_leader(&hint))
                    } else {
                        Ok(tonic::Response::new(()))
                    }
                }
            })
            .await;
        let seen = seen.lock().expect("lock").clone();
        (r, seen)
    }

    fn client(addrs: &[&str]) -> Client {
        Client::builder().addrs(addrs).build().expect("client")
    }

    #[tokio::test]
    async fn a_hint_cannot_downgrade_https_or_stay_in_the_node_set() {
        let c = client(&["https://n1:8200", "https://n2:8200"]);
        let (r, seen) = tried(&c, Route::Write, "http://evil:80").await;
        r.expect("the hinted node answered");
        assert_eq!(seen, ["https://n1:8200", "https://evil:80"], "the hint's scheme is ignored");
        assert_eq!(c.nodes(), ["https://n1:8200", "https://n2:8200"], "an unconfigured hinted node is not kept");
        assert_eq!(c.leader(), None, "nor remembered as leader");
        // A hint naming a configured node moves the write there and remembers it.
        let (r, seen) = tried(&c, Route::Write, "n2:8200").await;
        r.expect("n2 answered");
        assert_eq!(seen, ["https://n1:8200", "https://n2:8200"]);
        assert_eq!(c.leader().as_deref(), Some("https://n2:8200"));
    }

    #[tokio::test]
    async fn a_read_never_follows_a_hint() {
        let c = client(&["http://n1:8200", "http://n2:8200"]);
        let (r, seen) = tried(&c, Route::Read, "evil:80").await;
        r.expect("n2 answered");
        assert_eq!(seen, ["http://n1:8200", "http://n2:8200"], "the read went on to the next configured node");
        assert_eq!(c.nodes(), ["http://n1:8200", "http://n2:8200"]);
        // Nor does a hint naming a configured node make it the leader or jump the queue.
        let c = client(&["http://n1:8200", "http://n2:8200", "http://n3:8200"]);
        let (r, seen) = tried(&c, Route::Read, "n3:8200").await;
        r.expect("n2 answered");
        assert_eq!(seen, ["http://n1:8200", "http://n2:8200"]);
        assert_eq!(c.leader(), None);
    }
}
