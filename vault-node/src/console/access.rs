//! Access: roles, tokens (a new token is shown once) and reader rules, with the API's own
//! validation messages.

use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::cluster::urlencode;
use super::page::{time, Done, Page};
use crate::pb;

pub async fn show(page: Page, axum::extract::Query(q): axum::extract::Query<Done>) -> Response {
    let mut admin = page.call.admin();
    let roles = match admin.list_roles(page.call.req(pb::ListRolesRequest {})).await {
        Ok(r) => r.into_inner().roles,
        Err(s) => return page.failed("Access", &s),
    };
    let tokens = match admin.list_tokens(page.call.req(pb::ListTokensRequest {})).await {
        Ok(r) => r.into_inner().tokens,
        Err(s) => return page.failed("Access", &s),
    };
    let readers = match admin.list_readers(page.call.req(pb::ListReadersRequest {})).await {
        Ok(r) => r.into_inner().readers,
        Err(s) => return page.failed("Access", &s),
    };
    let body = html! {
        h2 { "Tokens" }
        table id="tokens" {
            thead { tr { th { "name" } th { "role" } th { "created" } th { "expires" } th {} } }
            tbody { @for t in &tokens {
                tr class="token" {
                    td { (t.name) } td { (t.role) } td { (time(t.created_at_ms)) } td { (t.expires_at_ms.map_or("never".into(), time)) }
                    td { form class="revoke-form" method="post" action="/access/revoke" {
                        (page.csrf_input()) input type="hidden" name="name" value=(t.name);
                        button type="submit" class="danger" { "Revoke" } } }
                }
            } }
        }
        form id="token-form" method="post" action="/access/token" {
            (page.csrf_input())
            label for="token-name" { "Name" } input id="token-name" name="name" required;
            label for="token-role" { "Role" } input id="token-role" name="role" required;
            label for="token-ttl" { "Lifetime (e.g. 24h; empty: none)" } input id="token-ttl" name="ttl";
            button type="submit" { "Create token" }
        }
        h2 { "Roles" }
        table id="roles" {
            thead { tr { th { "name" } th { "grants" } th {} } }
            tbody { @for r in &roles {
                tr class="role" {
                    td { (r.name) } td { (r.grants.join(" ")) }
                    td { @if !r.builtin { form class="delete-role-form" method="post" action="/access/role/delete" {
                        (page.csrf_input()) input type="hidden" name="name" value=(r.name);
                        button type="submit" class="danger" { "Delete" } } } }
                }
            } }
        }
        form id="role-form" method="post" action="/access/role" {
            (page.csrf_input())
            label for="role-name" { "Name" } input id="role-name" name="name" required;
            label for="role-grants" { "Grants, one per line (e.g. create,update:app/*)" }
            textarea id="role-grants" name="grants" rows="3" {}
            button type="submit" { "Create role" }
        }
        h2 { "Reader rules" }
        table id="readers" {
            thead { tr { th { "name" } th { "addresses" } th { "certificates" } th { "grants" } th {} } }
            tbody { @for r in &readers {
                tr class="reader" {
                    td { (r.name) } td { (r.cidrs.join(", ")) } td { (r.cert_cns.join(", ")) } td { (r.grants.join(", ")) }
                    td { form class="delete-reader-form" method="post" action="/access/reader/delete" {
                        (page.csrf_input()) input type="hidden" name="name" value=(r.name);
                        button type="submit" class="danger" { "Delete" } } }
                }
            } }
        }
        form id="reader-form" method="post" action="/access/reader" {
            (page.csrf_input())
            label for="reader-name" { "Name" } input id="reader-name" name="name" required;
            label for="reader-cidrs" { "Addresses (comma separated)" } input id="reader-cidrs" name="cidrs";
            label for="reader-cns" { "Certificate names (comma separated)" } input id="reader-cns" name="cert_cns";
            label for="reader-grants" { "Secret patterns (comma separated)" } input id="reader-grants" name="grants";
            button type="submit" { "Create reader rule" }
        }
    };
    page.render("Access", q.done.as_deref(), body)
}

fn back(done: &str) -> Response {
    Redirect::to(&format!("/access?done={}", urlencode(done))).into_response()
}

fn list(s: &str, sep: char) -> Vec<String> {
    s.split(sep).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    ttl: String,
    #[serde(default)]
    csrf: String,
}

pub async fn create_token(page: Page, Form(f): Form<TokenForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let ttl_secs = match f.ttl.trim() {
        "" => 0,
        t => match humantime::parse_duration(t) {
            Ok(d) if d.as_secs() > 0 => d.as_secs(),
            _ => {
                let status = tonic::Status::invalid_argument("lifetime must be a duration such as 30m, 24h or 90d");
                return page.failed("Access", &status);
            }
        },
    };
    let req = pb::CreateTokenRequest { name: f.name.trim().into(), role: f.role.trim().into(), ttl_secs };
    let created = match page.call.admin().create_token(page.call.req(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed("Access", &s),
    };
    let body = html! {
        p { "Token " strong { (created.name) } " was created"
            @if let Some(e) = created.expires_at_ms { "; it expires " (time(e)) } "." }
        p { "Copy it now: it is not shown again and the vault keeps only its hash." }
        pre { code id="new-token" { (created.token) } }
        p { a href="/access" { "Back to access" } }
    };
    page.render("New token", None, body)
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf: String,
}

pub async fn revoke_token(page: Page, Form(f): Form<NameForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    match page.call.admin().revoke_token(page.call.req(pb::RevokeTokenRequest { name: f.name.clone() })).await {
        Ok(_) => back(&format!("Revoked token {}", f.name)),
        Err(s) => page.failed("Access", &s),
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    grants: String,
    #[serde(default)]
    csrf: String,
}

pub async fn create_role(page: Page, Form(f): Form<RoleForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let req = pb::CreateRoleRequest { name: f.name.trim().into(), grants: list(&f.grants, '\n'), replace: false };
    match page.call.admin().create_role(page.call.req(req)).await {
        Ok(_) => back(&format!("Created role {}", f.name.trim())),
        Err(s) => page.failed("Access", &s),
    }
}

pub async fn delete_role(page: Page, Form(f): Form<NameForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    match page.call.admin().delete_role(page.call.req(pb::DeleteRoleRequest { name: f.name.clone() })).await {
        Ok(_) => back(&format!("Deleted role {}", f.name)),
        Err(s) => page.failed("Access", &s),
    }
}

#[derive(Deserialize)]
pub struct ReaderForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    cidrs: String,
    #[serde(default)]
    cert_cns: String,
    #[serde(default)]
    grants: String,
    #[serde(default)]
    csrf: String,
}

pub async fn create_reader(page: Page, Form(f): Form<ReaderForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let req = pb::CreateReaderRequest {
        name: f.name.trim().into(),
        cidrs: list(&f.cidrs, ','),
        cert_cns: list(&f.cert_cns, ','),
        grants: list(&f.grants, ','),
        ..Default::default()
    };
    match page.call.admin().create_reader(page.call.req(req)).await {
        Ok(_) => back(&format!("Created reader rule {}", f.name.trim())),
        Err(s) => page.failed("Access", &s),
    }
}

pub async fn delete_reader(page: Page, Form(f): Form<NameForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    match page.call.admin().delete_reader(page.call.req(pb::DeleteReaderRequest { name: f.name.clone() })).await {
        Ok(_) => back(&format!("Deleted reader rule {}", f.name)),
        Err(s) => page.failed("Access", &s),
    }
}
