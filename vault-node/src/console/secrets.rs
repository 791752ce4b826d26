//! Secrets: browse by prefix, a secret's versions and rotation policy, reveal (a `GetSecret`,
//! audited as one, in a page that is never cached), a new version with check-and-set, and
//! delete, undelete or destroy behind a confirmation.

use std::collections::BTreeSet;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::Engine as _;
use maud::html;
use serde::Deserialize;

use super::cluster::urlencode;
use super::page::{time, Page};
use crate::pb;

/// Names per page.
const PAGE: u32 = 100;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    page_token: String,
}

pub async fn list(page: Page, Query(q): Query<ListQuery>) -> Response {
    let req = pb::ListSecretsRequest { prefix: q.prefix.clone(), page_size: PAGE, page_token: q.page_token.clone() };
    let listed = match page.call.secrets().list_secrets(page.call.req(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed("Secrets", &s),
    };
    // The next level of "folders" under the prefix, from the names on this page.
    let folders: BTreeSet<String> = listed
        .secrets
        .iter()
        .filter_map(|s| {
            let rest = s.name.strip_prefix(&q.prefix)?;
            rest.find('/').map(|i| format!("{}{}", q.prefix, &rest[..=i]))
        })
        .collect();
    let parent = q.prefix.trim_end_matches('/').rfind('/').map(|i| &q.prefix[..=i]).unwrap_or("");
    let body = html! {
        form id="prefix-form" method="get" action="/secrets" {
            label for="prefix" { "Prefix" }
            input id="prefix-input" name="prefix" value=(q.prefix);
            button type="submit" { "Go" }
        }
        p { "Under " code id="prefix" { @if q.prefix.is_empty() { "(all)" } @else { (q.prefix) } }
            @if !q.prefix.is_empty() { " · " a href={ "/secrets?prefix=" (urlencode(parent)) } { "up" } } }
        @if !folders.is_empty() {
            ul class="folders" {
                @for f in &folders { li { a class="prefix-link" href={ "/secrets?prefix=" (urlencode(f)) } { (f) } } }
            }
        }
        table id="secrets" {
            thead { tr { th { "name" } th { "current version" } th { "updated" } } }
            tbody {
                @for s in &listed.secrets {
                    tr class="secret" {
                        td { a class="secret-link" href={ "/secret?name=" (urlencode(&s.name)) } { (s.name) } }
                        td { (s.current_version) } td { (time(s.updated_at_ms)) }
                    }
                }
            }
        }
        @if listed.secrets.is_empty() { p class="empty" { "No secret here that this token may list." } }
        @if !listed.next_page_token.is_empty() {
            a id="next-page" href={ "/secrets?prefix=" (urlencode(&q.prefix)) "&page_token=" (urlencode(&listed.next_page_token)) } { "Next page" }
        }
    };
    page.render("Secrets", None, body)
}

#[derive(Deserialize)]
pub struct ShowQuery {
    name: String,
    written: Option<u64>,
    done: Option<String>,
}

pub async fn show(page: Page, Query(q): Query<ShowQuery>) -> Response {
    let req = pb::ListVersionsRequest { name: q.name.clone() };
    let v = match page.call.secrets().list_versions(page.call.req(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed(&q.name, &s),
    };
    let notice = q.written.map(|w| format!("Wrote version {w}")).or(q.done);
    let body = html! {
        p { "Current version " strong id="current" { (v.current_version) } ", keeps " (v.max_versions) " versions." }
        table id="versions" {
            thead { tr { th { "version" } th { "state" } th { "created" } th { "key" } th {} } }
            tbody {
                @for ver in v.versions.iter().rev() {
                    tr class="version" data-version=(ver.version) {
                        td { (ver.version) } td class="state" { (ver.state) } td { (time(ver.created_at_ms)) } td { (ver.key_id) }
                        td {
                            @if ver.state == "live" {
                                form class="reveal-form" method="post" action="/secret/reveal" {
                                    (page.csrf_input())
                                    input type="hidden" name="name" value=(v.name);
                                    input type="hidden" name="version" value=(ver.version);
                                    button class="reveal" type="submit" { "Reveal" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Rotation" }
        div id="rotation" {
            @match &v.rotation {
                None => { "none" }
                Some(r) => {
                    "every " (humantime::format_duration(std::time::Duration::from_secs(r.every_secs)))
                    " with " code { (r.generator) } "; next due " (time(r.next_due_ms))
                    "; last rotated " (time(r.last_rotated_ms))
                    @if r.failures > 0 { "; " span class="error-text" { (r.failures) " failures, last: " (r.last_error) } }
                }
            }
        }
        h2 { "New version" }
        form id="put-form" method="post" action="/secret/put" {
            (page.csrf_input())
            input type="hidden" name="name" value=(v.name);
            label for="value" { "Value" }
            textarea id="value" name="value" rows="4" autocomplete="off" {}
            label for="expected_version" { "Only if the current version is still" }
            input id="expected_version" name="expected_version" value=(v.current_version);
            button id="put" type="submit" { "Write version" }
        }
        h2 { "Delete, undelete or destroy versions" }
        form id="versions-form" method="get" action="/secret/confirm" {
            input type="hidden" name="name" value=(v.name);
            label for="versions" { "Versions (e.g. 1,2)" }
            input id="versions" name="versions";
            select name="action" {
                option value="delete" { "delete" } option value="undelete" { "undelete" } option value="destroy" { "destroy" }
            }
            button type="submit" { "Continue" }
        }
    };
    page.render(&q.name, notice.as_deref(), body)
}

#[derive(Deserialize)]
pub struct RevealForm {
    name: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    csrf: String,
}

pub async fn reveal(page: Page, Form(f): Form<RevealForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let req = pb::GetSecretRequest { name: f.name.clone(), version: f.version };
    let got = match page.call.secrets().get_secret(page.call.req(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed(&f.name, &s),
    };
    let (text, note) = match std::str::from_utf8(&got.value) {
        Ok(t) => (t.to_string(), None),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&got.value), Some("binary value, shown as base64")),
    };
    let body = html! {
        p { "Version " span id="revealed-version" { (got.version) } ", written " (time(got.created_at_ms)) "." }
        @if let Some(n) = note { p class="hint" { (n) } }
        pre id="value" { (text) }
        p { a href={ "/secret?name=" (urlencode(&got.name)) } { "Back to " (got.name) } }
    };
    page.render(&got.name, None, body)
}

#[derive(Deserialize)]
pub struct PutForm {
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    expected_version: String,
    #[serde(default)]
    csrf: String,
}

pub async fn put(page: Page, Form(f): Form<PutForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let expected_version = match f.expected_version.trim() {
        "" => None,
        v => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return bad(&page, &f.name, "check-and-set version must be a whole number"),
        },
    };
    let req = pb::PutSecretRequest {
        name: f.name.clone(),
        value: f.value.into_bytes(),
        expected_version,
        max_versions: None,
    };
    match page.call.secrets().put_secret(page.call.req(req)).await {
        Ok(r) => Redirect::to(&format!("/secret?name={}&written={}", urlencode(&f.name), r.get_ref().version))
            .into_response(),
        Err(s) => page.failed(&f.name, &s),
    }
}

fn bad(page: &Page, title: &str, msg: &str) -> Response {
    page.render_status(StatusCode::BAD_REQUEST, title, None, Some(&format!("INVALID_ARGUMENT: {msg}")), html! {})
}

#[derive(Deserialize)]
pub struct VersionsQuery {
    name: String,
    #[serde(default)]
    versions: String,
    action: String,
}

fn parse_versions(s: &str) -> Option<Vec<u64>> {
    let v: Option<Vec<u64>> = s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(|t| t.parse().ok()).collect();
    v.filter(|v| !v.is_empty())
}

fn known(action: &str) -> bool {
    matches!(action, "delete" | "undelete" | "destroy")
}

pub async fn confirm(page: Page, Query(q): Query<VersionsQuery>) -> Response {
    let Some(versions) = parse_versions(&q.versions).filter(|_| known(&q.action)) else {
        return bad(&page, &q.name, "give versions as numbers separated by commas, and delete, undelete or destroy");
    };
    let list = versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let body = html! {
        p class="confirm" { (q.action) " version(s) " (list) " of " code { (q.name) } "?"
            @if q.action == "destroy" { " Destroyed versions cannot be brought back." } }
        form id="confirm-form" method="post" action="/secret/versions" {
            (page.csrf_input())
            input type="hidden" name="name" value=(q.name);
            input type="hidden" name="versions" value=(q.versions);
            input type="hidden" name="action" value=(q.action);
            button id="confirm" type="submit" class="danger" { "Yes, " (q.action) }
            " " a href={ "/secret?name=" (urlencode(&q.name)) } { "Cancel" }
        }
    };
    page.render("Confirm", None, body)
}

#[derive(Deserialize)]
pub struct VersionsForm {
    name: String,
    #[serde(default)]
    versions: String,
    action: String,
    #[serde(default)]
    csrf: String,
}

pub async fn versions(page: Page, Form(f): Form<VersionsForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let Some(versions) = parse_versions(&f.versions) else {
        return bad(&page, &f.name, "give versions as numbers separated by commas");
    };
    let req = page.call.req(pb::VersionsRequest { name: f.name.clone(), versions });
    let mut secrets = page.call.secrets();
    let result = match f.action.as_str() {
        "delete" => secrets.delete_versions(req).await,
        "undelete" => secrets.undelete_versions(req).await,
        "destroy" => secrets.destroy_versions(req).await,
        _ => return bad(&page, &f.name, "unknown action"),
    };
    match result {
        Ok(r) => {
            let changed = r.get_ref().changed.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            let done =
                format!("{}: changed version(s) {}", f.action, if changed.is_empty() { "none" } else { &changed });
            Redirect::to(&format!("/secret?name={}&done={}", urlencode(&f.name), urlencode(&done))).into_response()
        }
        Err(s) => page.failed(&f.name, &s),
    }
}
