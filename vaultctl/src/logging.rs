//! Logging of the long-running commands (`agent`): text lines on stderr, filtered by
//! `VAULT_LOG` (or `RUST_LOG`), `info` by default. One-shot commands print their own output.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = ["VAULT_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}
