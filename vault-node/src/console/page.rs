//! What every console page shares: the layout, the request context (session, browser address,
//! CSRF check), how an API refusal is shown, and the response headers.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};

use super::grpc::Call;
use super::session::{self, Lookup, Session};
use super::Console;
use crate::observe::code_name;

/// The outcome a redirect after a POST carries to the page it lands on.
#[derive(serde::Deserialize, Default)]
pub struct Done {
    pub done: Option<String>,
}

/// A request from a logged-in browser.
pub struct Page {
    pub console: Console,
    pub session: Session,
    pub call: Call,
    /// The session cookie's value, to end it on logout.
    pub cookie: String,
}

impl FromRequestParts<Console> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let peer = peer(parts);
        if parts.method != Method::GET && parts.method != Method::HEAD && !same_origin(parts) {
            return Err(forbidden_csrf());
        }
        let cookie = session::cookie(&parts.headers, session::cookie_name(console.secure));
        match console.sessions.get(cookie).and_then(|s| console.still_valid(s, cookie)) {
            Ok(session) => {
                let call = console.api.caller(peer, Some(&session.token), Some(&session.name));
                Ok(Page { console: console.clone(), session, call, cookie: cookie.unwrap_or_default().to_string() })
            }
            Err(Lookup::None) => Err(Redirect::to("/login").into_response()),
            Err(Lookup::Ended) => {
                let clear =
                    session::set_cookie(session::cookie_name(console.secure), "", console.secure, Some(Duration::ZERO));
                Err(([(header::SET_COOKIE, clear)], Redirect::to("/login?expired=1")).into_response())
            }
        }
    }
}

impl Page {
    /// The refusal to answer with unless a form's CSRF value is the session's.
    pub fn csrf_refusal(&self, csrf: &str) -> Option<Response> {
        (!session::csrf_matches(&self.session.csrf, csrf)).then(forbidden_csrf)
    }

    /// The hidden CSRF input every form carries.
    pub fn csrf_input(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.session.csrf.expose()); }
    }

    /// A full page with the navigation.
    pub fn render(&self, title: &str, notice: Option<&str>, body: Markup) -> Response {
        self.render_status(StatusCode::OK, title, notice, None, body)
    }

    pub fn render_status(
        &self,
        status: StatusCode,
        title: &str,
        notice: Option<&str>,
        error: Option<&str>,
        body: Markup,
    ) -> Response {
        let nav = html! {
            nav id="nav" {
                a id="nav-cluster" href="/cluster" { "Cluster" }
                a id="nav-secrets" href="/secrets" { "Secrets" }
                a id="nav-audit" href="/audit" { "Audit" }
                a id="nav-access" href="/access" { "Access" }
                a id="nav-rotation" href="/rotation" { "Rotation" }
                a id="nav-backups" href="/backups" { "Backups" }
                span class="spacer" {}
                span id="whoami" { (self.session.name) }
                form id="logout-form" method="post" action="/logout" {
                    (self.csrf_input())
                    button id="logout" type="submit" { "Log out" }
                }
            }
        };
        (status, document(title, Some(nav), notice, error, body)).into_response()
    }

    /// The page for an API refusal: the gRPC code and message, with the matching HTTP status.
    pub fn failed(&self, title: &str, status: &tonic::Status) -> Response {
        let text = format!("{}: {}", code_name(status.code()), status.message());
        self.render_status(http_status(status.code()), title, None, Some(&text), html! {})
    }
}

/// A whole HTML document.
pub fn document(title: &str, nav: Option<Markup>, notice: Option<&str>, error: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · vault" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                @if let Some(nav) = nav { (nav) }
                main {
                    h1 { (title) }
                    @if let Some(n) = notice { p id="notice" class="notice" { (n) } }
                    @if let Some(e) = error { p id="error" class="error" { (e) } }
                    (body)
                }
            }
        }
    }
}

/// The browser's address as the listener saw it.
pub fn peer(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// A state-changing request must not come from another site: an `Origin` header, when the
/// browser sends one, must name this host. (The CSRF value is the main defence; this and the
/// SameSite=Strict cookie are the others.)
pub fn same_origin(parts: &Parts) -> bool {
    let Some(origin) = parts.headers.get(header::ORIGIN) else { return true };
    let Some(host) = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let Ok(origin) = origin.to_str() else { return false };
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

pub fn forbidden_csrf() -> Response {
    let body = html! { p { a href="/cluster" { "Back to the console" } } };
    (StatusCode::FORBIDDEN, document("Refused", None, None, Some("CSRF check failed"), body)).into_response()
}

/// How a gRPC code reads as an HTTP status on a page.
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        InvalidArgument | FailedPrecondition | AlreadyExists | OutOfRange | Aborted => StatusCode::BAD_REQUEST,
        PermissionDenied | Unauthenticated => StatusCode::FORBIDDEN,
        NotFound => StatusCode::NOT_FOUND,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unavailable | Cancelled | DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Milliseconds since the epoch as UTC text; 0 as a dash.
pub fn time(ms: u64) -> String {
    /// 9999-12-31T23:59:59.999Z: past it the calendar form has no four-digit year.
    const LAST_DATED_MS: u64 = 253_402_300_799_999;
    match ms {
        0 => "—".into(),
        ms if ms > LAST_DATED_MS => format!("{ms} ms after 1970"),
        ms => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
    }
}

/// The headers every console response carries.
pub fn security_headers(response: &mut Response, tls: bool) {
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    // `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends `Origin: null` with
    // a form POST, which the origin check must refuse.
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(h, "permissions-policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    if tls {
        set(h, "strict-transport-security", "max-age=31536000");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_time_has_a_text_even_past_year_9999() {
        assert_eq!(time(0), "—");
        assert_eq!(time(1_796_691_369_000), "2026-12-08T00:56:09Z");
        assert_eq!(time(253_402_300_800_000), "253402300800000 ms after 1970");
        assert!(!time(u64::MAX).is_empty());
    }
}
