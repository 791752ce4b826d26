//! The agent's Prometheus endpoint (`metrics_addr`): `GET /metrics`.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;

/// Installs the recorder and serves it on `addr` in the background.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new().install_recorder().context("install the metrics recorder")?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listen for metrics on {addr}"))?;
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || std::future::ready(handle.render())));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}
