//! One module per command noun.

pub mod agent;
pub mod audit;
pub mod audit_file;
pub mod cluster;
pub mod hook;
pub mod kms;
pub mod reader;
pub mod role;
pub mod run;
pub mod secret;
pub mod snapshot;
pub mod status;
pub mod token;
pub mod watch;

use vault_client::{Client, Route};

/// One RPC through the client: `rpc!(client, route, service.method, request)`, e.g.
/// `rpc!(c, Route::Read, secrets.get_secret, req)`; evaluates to the client's future.
macro_rules! rpc {
    ($client:expr, $route:expr, $svc:ident . $method:ident, $req:expr) => {
        $client.call($route, $req, |c, r| async move { c.$svc().$method(r).await })
    };
}

pub(crate) use rpc;

/// The node addressed first: where node-local views (status, audit log, cluster status) come
/// from.
pub fn addressed(c: &Client) -> Route {
    Route::Node(c.nodes().into_iter().next().unwrap_or_default())
}
