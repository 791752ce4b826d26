//! Rotation: every policy the token may list, with its schedule and failures; rotate now.

use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::cluster::urlencode;
use super::page::{time, Page};
use crate::pb;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    page_token: String,
    done: Option<String>,
}

pub async fn list(page: Page, Query(q): Query<ListQuery>) -> Response {
    let req = pb::ListRotationsRequest { prefix: q.prefix.clone(), page_size: 200, page_token: q.page_token.clone() };
    let listed = match page.call.secrets().list_rotations(page.call.req(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return page.failed("Rotation", &s),
    };
    let body = html! {
        form id="rotation-prefix-form" method="get" action="/rotation" {
            label for="prefix" { "Prefix" } input id="prefix" name="prefix" value=(q.prefix);
            button type="submit" { "Go" }
        }
        table id="rotations" {
            thead { tr { th { "secret" } th { "every" } th { "generator" } th { "next due" } th { "last rotated" } th { "failures" } th { "last error" } th {} } }
            tbody { @for r in &listed.rotations {
                tr class="rotation" {
                    td { a href={ "/secret?name=" (urlencode(&r.name)) } { (r.name) } }
                    td { (humantime::format_duration(std::time::Duration::from_secs(r.every_secs))) }
                    td { code { (r.generator) } } td { (time(r.next_due_ms)) } td { (time(r.last_rotated_ms)) }
                    td class=(if r.failures > 0 { "error-text" } else { "" }) { (r.failures) }
                    td { (r.last_error) }
                    td { form class="rotate-form" method="post" action="/rotation/rotate" {
                        (page.csrf_input()) input type="hidden" name="name" value=(r.name);
                        button type="submit" { "Rotate now" } } }
                }
            } }
        }
        @if listed.rotations.is_empty() { p class="empty" { "No rotation policy that this token may list." } }
        @if !listed.next_page_token.is_empty() {
            a id="next-page" href={ "/rotation?prefix=" (urlencode(&q.prefix)) "&page_token=" (urlencode(&listed.next_page_token)) } { "Next page" }
        }
    };
    page.render("Rotation", q.done.as_deref(), body)
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf: String,
}

pub async fn rotate(page: Page, Form(f): Form<RotateForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let req = pb::RotateSecretRequest { name: f.name.clone() };
    match page.call.secrets().rotate_secret(page.call.req(req)).await {
        Ok(r) => {
            let done = format!("Rotated {}: version {}", f.name, r.get_ref().version);
            Redirect::to(&format!("/rotation?done={}", urlencode(&done))).into_response()
        }
        Err(s) => page.failed("Rotation", &s),
    }
}
