//! The console's way into the API: the very tower stack the gRPC listener serves (request
//! metrics, the auth layer with its RPC table, allowlist, reader rules, rate limits and audit,
//! then the services), called in process through tonic's generated clients.
//!
//! Nothing here decides what a caller may do. A page asks with the session's bearer token and
//! the browser's address, exactly as a gRPC client at that address would, so the console can do
//! nothing the API would refuse that caller, and every call is audited as an API call (actor:
//! the token's name; address: the browser's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use vault_core::token::RawToken;

use crate::api::admin::AdminService;
use crate::api::secrets::SecretsService;
use crate::api_conn::ApiConnectInfo;
use crate::auth::layer::{AuthLayer, AuthService};
use crate::observe::{RpcMetrics, RpcMetricsLayer};
use crate::pb::admin_client::AdminClient;
use crate::pb::admin_server::AdminServer;
use crate::pb::secrets_client::SecretsClient;
use crate::pb::secrets_server::SecretsServer;

type Stack = RpcMetrics<AuthService<tonic::service::Routes>>;

/// The API's services behind its own layers, to be called in process.
#[derive(Clone)]
pub struct ApiStack {
    stack: Stack,
    /// The API listener's address, reported as the local end of every console call.
    local: Option<SocketAddr>,
}

impl ApiStack {
    pub fn new(
        auth: AuthLayer,
        secrets: SecretsServer<SecretsService>,
        admin: AdminServer<AdminService>,
        local: Option<SocketAddr>,
    ) -> Self {
        let routes = tonic::service::Routes::new(secrets).add_service(admin);
        ApiStack { stack: RpcMetricsLayer.layer(auth.layer(routes)), local }
    }

    /// Calls made for the browser at `peer`, with `token` (none before login) whose name is
    /// `user` (the actor of the reads it makes).
    pub fn caller(&self, peer: SocketAddr, token: Option<&RawToken>, user: Option<&str>) -> Call {
        let info = ApiConnectInfo {
            tcp: TcpConnectInfo { local_addr: self.local, remote_addr: Some(peer) },
            client_cn: None,
            console_user: user.map(Arc::from),
        };
        let bearer = token.and_then(|t| {
            let mut v: MetadataValue<Ascii> = format!("Bearer {}", t.expose()).parse().ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        Call { channel: InProc { stack: self.stack.clone(), info }, bearer }
    }
}

/// One browser's calls: its address goes with every request, and its token with those that
/// need one.
pub struct Call {
    channel: InProc,
    bearer: Option<MetadataValue<Ascii>>,
}

impl Call {
    pub fn secrets(&self) -> SecretsClient<InProc> {
        SecretsClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminClient<InProc> {
        AdminClient::new(self.channel.clone())
    }

    /// `msg` as a request carrying the session's token.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(bearer) = &self.bearer {
            req.metadata_mut().insert("authorization", bearer.clone());
        }
        req
    }
}

/// A channel to the in-process stack that stamps each request with the browser's connection.
#[derive(Clone)]
pub struct InProc {
    stack: Stack,
    info: ApiConnectInfo,
}

impl Service<http::Request<tonic::body::Body>> for InProc {
    type Response = <Stack as Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Stack as Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Stack as Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.stack, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        req.extensions_mut().insert(self.info.clone());
        self.stack.call(req)
    }
}
