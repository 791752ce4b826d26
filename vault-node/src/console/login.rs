//! Login and logout.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use vault_core::addr_bucket::AddrBucket;
use vault_core::time::now_ms;
use vault_core::token::RawToken;

use super::page::{self, document, Page};
use super::session;
use super::Console;

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    expired: Option<String>,
    bye: Option<String>,
}

/// The login form; sets the double-submit cookie its CSRF value must match.
pub async fn form(State(c): State<Console>, Query(q): Query<LoginQuery>) -> Response {
    let notice = match (q.expired.is_some(), q.bye.is_some()) {
        (true, _) => Some("Your session ended; log in again."),
        (_, true) => Some("Logged out."),
        _ => None,
    };
    login_page(&c, StatusCode::OK, notice, None)
}

fn login_page(c: &Console, status: StatusCode, notice: Option<&str>, error: Option<&str>) -> Response {
    let csrf = RawToken::generate();
    let body = html! {
        form id="login-form" method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf.expose());
            label for="token" { "Token" }
            input id="token" name="token" type="password" autocomplete="off" required;
            button id="login" type="submit" { "Log in" }
        }
        p class="hint" { "A session lasts until you log out, after "
            (human(c.sessions.idle())) " without use, or at most a working day." }
    };
    let cookie = session::set_cookie(
        session::login_cookie_name(c.secure),
        csrf.expose(),
        c.secure,
        Some(Duration::from_secs(3600)),
    );
    (status, [(header::SET_COOKIE, cookie)], document("Log in", None, notice, error, body)).into_response()
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// Checks the token with a `WhoAmI` call through the API (audited there), then opens a
/// session.
pub async fn submit(State(c): State<Console>, parts: axum::http::request::Parts, Form(f): Form<LoginForm>) -> Response {
    let expected = session::cookie(&parts.headers, session::login_cookie_name(c.secure)).map(RawToken::presented);
    let csrf_ok = page::same_origin(&parts) && expected.is_some_and(|e| session::csrf_matches(&e, &f.csrf));
    if !csrf_ok {
        return page::forbidden_csrf();
    }
    let peer = page::peer(&parts);
    if !c.logins.take(&AddrBucket::of(peer.ip()), now_ms()) {
        let msg = format!("Too many login attempts; retry in {} s", c.logins.retry_after_secs());
        return login_page(&c, StatusCode::TOO_MANY_REQUESTS, None, Some(&msg));
    }
    let token = RawToken::presented(f.token.trim());
    let call = c.api.caller(peer, Some(&token), None);
    let who = call.admin().who_am_i(call.req(crate::pb::WhoAmIRequest {})).await;
    match who {
        Ok(info) => {
            let name = info.into_inner().name;
            // A login from a browser that still holds a session ends that session.
            if let Some(old) = session::cookie(&parts.headers, session::cookie_name(c.secure)) {
                c.sessions.end(old);
            }
            let Some(id) = c.sessions.open(token, name) else {
                return login_page(
                    &c,
                    StatusCode::SERVICE_UNAVAILABLE,
                    None,
                    Some("Too many open sessions on this node"),
                );
            };
            let set = session::set_cookie(session::cookie_name(c.secure), id.expose(), c.secure, None);
            let clear = session::set_cookie(session::login_cookie_name(c.secure), "", c.secure, Some(Duration::ZERO));
            let mut response = Redirect::to("/cluster").into_response();
            let headers = response.headers_mut();
            for v in [set, clear] {
                if let Ok(v) = v.parse() {
                    headers.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(s) if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
            login_page(&c, StatusCode::UNAUTHORIZED, None, Some("Login failed: the token was refused"))
        }
        Err(s) => {
            let msg = format!("Login failed: {}: {}", crate::observe::code_name(s.code()), s.message());
            login_page(&c, page::http_status(s.code()), None, Some(&msg))
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(page: Page, Form(f): Form<CsrfForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    page.console.sessions.end(&page.cookie);
    let secure = page.console.secure;
    let clear = session::set_cookie(session::cookie_name(secure), "", secure, Some(Duration::ZERO));
    ([(header::SET_COOKIE, clear)], Redirect::to("/login?bye=1")).into_response()
}
