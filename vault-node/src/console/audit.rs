//! Audit: search this node's log by secret, actor, action, outcome and time; export the same
//! search as JSON lines; verify the chain.

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::cluster::urlencode;
use super::page::{time, Page};
use crate::pb;

/// Records shown on a page unless the search asks for more (the API's own bound applies).
const DEFAULT_LIMIT: u32 = 200;

#[derive(Deserialize, Default, Clone)]
pub struct AuditQuery {
    #[serde(default)]
    secret: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    limit: Option<u32>,
}

impl AuditQuery {
    fn request(&self) -> Result<pb::ListAuditRequest, String> {
        Ok(pb::ListAuditRequest {
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
            secret: self.secret.trim().to_string(),
            since_ms: parse_time("since", &self.since)?,
            actor: given(&self.actor),
            action: given(&self.action),
            outcome: given(&self.outcome),
            until_ms: Some(parse_time("until", &self.until)?).filter(|&t| t > 0),
        })
    }

    fn query_string(&self) -> String {
        let mut q = format!(
            "secret={}&actor={}&action={}&outcome={}&since={}&until={}",
            urlencode(&self.secret),
            urlencode(&self.actor),
            urlencode(&self.action),
            urlencode(&self.outcome),
            urlencode(&self.since),
            urlencode(&self.until)
        );
        if let Some(l) = self.limit {
            q.push_str(&format!("&limit={l}"));
        }
        q
    }
}

/// A search field: unset when left empty.
fn given(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A time bound: empty (none), milliseconds since the epoch, or a UTC date and time as a
/// browser's `datetime-local` input sends it (`2026-12-08T09:30`, seconds optional).
fn parse_time(what: &str, s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let full = if s.len() == 16 { format!("{s}:00") } else { s.to_string() };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| format!("{what} must be a UTC time such as 2026-12-08T09:30, or milliseconds since the epoch"))
}

async fn fetch(page: &Page, q: &AuditQuery) -> Result<Vec<pb::AuditEntry>, Response> {
    let req = match q.request() {
        Ok(r) => r,
        Err(msg) => {
            let msg = format!("INVALID_ARGUMENT: {msg}");
            return Err(page.render_status(StatusCode::BAD_REQUEST, "Audit", None, Some(&msg), html! {}));
        }
    };
    match page.call.admin().list_audit(page.call.req(req)).await {
        Ok(r) => Ok(r.into_inner().records),
        Err(s) => Err(page.failed("Audit", &s)),
    }
}

pub async fn search(page: Page, Query(q): Query<AuditQuery>) -> Response {
    let records = match fetch(&page, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let field = |id: &'static str, label: &'static str, value: &str| {
        html! { label for=(id) { (label) } input id=(id) name=(id) value=(value); }
    };
    let body = html! {
        form id="audit-form" method="get" action="/audit" {
            (field("secret", "Secret", &q.secret))
            (field("actor", "Actor", &q.actor))
            (field("action", "Action", &q.action))
            (field("outcome", "Outcome", &q.outcome))
            label for="since" { "Since (UTC)" } input id="since" name="since" type="datetime-local" value=(q.since);
            label for="until" { "Until (UTC)" } input id="until" name="until" type="datetime-local" value=(q.until);
            button type="submit" { "Search" }
        }
        p {
            a id="audit-export" href={ "/audit/export?" (q.query_string()) } { "Export as JSON lines" }
            " · " a id="audit-verify" href="/audit/verify" { "Verify the chain" }
        }
        p class="hint" { "This node's log, newest first; " (records.len()) " records." }
        table id="audit" {
            thead { tr { th { "seq" } th { "time" } th { "actor" } th { "action" } th { "secret" } th { "outcome" } th { "address" } } }
            tbody {
                @for r in &records {
                    tr class="audit" {
                        td { (r.seq) } td { (time(r.time_ms)) } td class="actor" { (r.actor) } td class="action" { (r.action) }
                        td class="subject" { (r.secret) } td class="outcome" { (r.outcome) } td { (r.client_ip) }
                    }
                }
            }
        }
    };
    page.render("Audit", None, body)
}

pub async fn export(page: Page, Query(q): Query<AuditQuery>) -> Response {
    let records = match fetch(&page, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut out = String::new();
    for r in &records {
        let line = serde_json::json!({
            "seq": r.seq, "time_ms": r.time_ms, "node_id": r.node_id, "actor": r.actor,
            "client_ip": r.client_ip, "action": r.action, "secret": r.secret, "outcome": r.outcome,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"vault-audit.jsonl\""),
        ],
        out,
    )
        .into_response()
}

pub async fn verify(page: Page) -> Response {
    let req = pb::VerifyAuditRequest { extends: String::new() };
    let r = match page.call.admin().verify_audit(page.call.req(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed("Audit chain", &s),
    };
    let body = html! {
        p id="verify" class=(if r.ok { "notice" } else { "error" }) {
            @if r.ok { "intact" } @else { "broken: " (r.problem) }
        }
        dl class="facts" {
            dt { "Records checked" } dd id="checked" { (r.checked) }
            dt { "Head (export it off the node)" } dd { code id="head" { (r.head) } }
        }
        p class="hint" { "Keep the head somewhere this node cannot write; "
            code { "vaultctl audit verify --extends HEAD" } " later proves the log still grows from it." }
    };
    page.render("Audit chain", None, body)
}
