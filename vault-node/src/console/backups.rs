//! Backups: download a snapshot, streamed from the API as it is made. Restoring replaces
//! every member's state, so the console shows the command rather than offering a button.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Form;
use futures::StreamExt as _;
use maud::html;
use serde::Deserialize;
use vault_core::time::now_ms;

use super::page::Page;
use crate::pb;

pub async fn show(page: Page) -> Response {
    let body = html! {
        p { "A snapshot holds the replicated state as ciphertext (values, wrapped data keys, token "
            "hashes, roles, rules), authenticated by a MAC under a key derived from the cluster's master key." }
        form id="snapshot-form" method="post" action="/backups/snapshot" {
            (page.csrf_input())
            button id="download" type="submit" { "Download a snapshot" }
        }
        h2 { "Restore" }
        p { "A restore replaces secrets, tokens and roles on every member; run it from a shell with an admin token:" }
        pre id="restore-command" { "vaultctl snapshot restore --file vault-snapshot-<time>.bin" }
    };
    page.render("Backups", None, body)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn snapshot(page: Page, Form(f): Form<CsrfForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let mut stream = match page.call.admin().save_snapshot(page.call.req(pb::SaveSnapshotRequest {})).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed("Backups", &s),
    };
    // The first chunk decides between a page and a download: a refusal arrives before it.
    let first = match stream.message().await {
        Ok(first) => first,
        Err(s) => return page.failed("Backups", &s),
    };
    let rest = stream.map(|chunk| chunk.map(|c| bytes::Bytes::from(c.data)));
    let body = futures::stream::iter(first.map(|c| Ok(bytes::Bytes::from(c.data)))).chain(rest);
    let name = format!("vault-snapshot-{}.bin", now_ms() / 1000);
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
