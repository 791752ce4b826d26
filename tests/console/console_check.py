#!/usr/bin/env python3
"""The operator console (`VAULT_UI_ADDR`) in a real browser: Debian's headless Chromium driven
by Playwright for Python. Nothing downloads a browser: it launches /usr/bin/chromium (or
VAULT_CHROMIUM) through `executable_path`.

Checks, one line each (`ok NAME` or `FAIL NAME: why`); exits 1 naming the failures:
log in; browse a prefix and open a secret; reveal a value and find its audit record; a stale
check-and-set refused with nothing written; a write with the right one; POSTs with a wrong,
missing or foreign-origin csrf refused with 403; a token without grants refused (403, no data);
session expiry after the idle time; logout (the old cookie no longer works); the login rate
limit (429); and over every page visited: no value or token in the HTML before a reveal, no
script and nothing from another origin, and the security headers on every HTML response.

`--screenshots DIR` instead visits each page and saves DIR/<page>.png.

Secrets come from the environment, never the command line (`ps` shows arguments):
  VAULT_CONSOLE_ADMIN_TOKEN    a token of the admin role
  VAULT_CONSOLE_LIMITED_TOKEN  a token with no grant on the secret (checks mode)
  VAULT_CONSOLE_VALUE          the secret's current value
Example:
  VAULT_CONSOLE_ADMIN_TOKEN=... VAULT_CONSOLE_LIMITED_TOKEN=... VAULT_CONSOLE_VALUE=... \\
    python tests/console/console_check.py --url http://127.0.0.1:8300 --secret app/db
"""

import argparse
import json
import os
import re
import secrets
import sys
import time
from urllib.parse import parse_qs, quote, urlparse

from playwright.sync_api import sync_playwright

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# Header -> the exact value required (None: present with any value).
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": None,
}
# The session cookie; under TLS it carries the __Host- prefix (only this origin, over HTTPS,
# may set it). main() picks the name from the console's URL.
COOKIE = "vault_session"


class CheckFailed(Exception):
    pass


def need(cond, why):
    if not cond:
        raise CheckFailed(why)


class Console:
    """One browser, the console's base URL, and what every page visited must satisfy."""

    def __init__(self, browser, base):
        self.browser = browser
        self.base = base.rstrip("/")
        self.origin = "{0.scheme}://{0.netloc}".format(urlparse(self.base))
        self.responses = []      # responses not yet looked at (`drain`)
        self.header_faults = []  # what `drain` found wrong in a response's headers
        self.html_seen = 0
        self.foreign = []        # requests to anything but the console
        self.leaks = []          # "what in which page"
        self.scripts = []        # pages with a <script>
        self.forbidden = {}      # label -> text that must not appear in a page's HTML
        self.pages_seen = 0

    def context(self):
        ctx = self.browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
        ctx.set_default_timeout(10_000)
        ctx.on("response", lambda r: self.responses.append(r))
        ctx.on("request", lambda r: None if r.url.startswith(self.origin) or r.url.startswith("data:")
               else self.foreign.append(r.url))
        return ctx

    def drain(self):
        """Checks the headers of every response seen since the last call (before its context
        closes): the security headers on HTML, the flags of a session cookie being set."""
        pending, self.responses = self.responses, []
        for r in pending:
            if not r.url.startswith(self.origin):
                continue
            try:
                h = r.all_headers()
                cookies = [c["value"] for c in r.headers_array() if c["name"].lower() == "set-cookie"]
            except Exception as e:
                self.header_faults.append(f"{r.url}: headers unreadable ({type(e).__name__})")
                continue
            where = f"{r.request.method} {urlparse(r.url).path} ({r.status})"
            for sc in cookies:
                name, _, rest = sc.partition("=")
                if name.strip() != COOKIE or rest.startswith(";") or "max-age=0" in sc.lower():
                    continue
                flags = [f.strip().lower() for f in sc.split(";")[1:]]
                if "httponly" not in flags or "samesite=strict" not in flags:
                    self.header_faults.append(f"{where}: Set-Cookie {COOKIE} without HttpOnly and SameSite=Strict")
                if self.base.startswith("https:") and "secure" not in flags:
                    self.header_faults.append(f"{where}: Set-Cookie {COOKIE} without Secure under TLS")
            if "text/html" not in h.get("content-type", ""):
                continue
            self.html_seen += 1
            try:
                check_headers(self, h, where)
            except CheckFailed as e:
                self.header_faults.append(str(e))

    def close(self, ctx):
        self.drain()
        ctx.close()

    def url(self, path):
        return self.base + path

    def goto(self, page, path):
        resp = page.goto(self.url(path))
        self.look(page)
        return resp

    def submit(self, page, button, allow_value=False):
        """Clicks a form's submit button; returns the final response of the navigation."""
        with page.expect_navigation() as nav:
            page.click(button)
        resp = nav.value
        self.look(page, allow_value=allow_value)
        return resp

    def look(self, page, allow_value=False):
        """What every page must satisfy: no value or token in its HTML (except the value on
        the reveal page itself), no script."""
        html = page.content()
        self.pages_seen += 1
        self.drain()
        where = urlparse(page.url).path + ("?" + urlparse(page.url).query if urlparse(page.url).query else "")
        for label, text in self.forbidden.items():
            if text and text in html and not (allow_value and label == "value"):
                self.leaks.append(f"{label} in {where}")
        if re.search(r"<script\b", html, re.I):
            self.scripts.append(where)

    def csrf_of(self, page):
        """The session's csrf value, from the logout form (on every page after login)."""
        loc = page.locator("form#logout-form input[name=csrf]")
        need(loc.count() == 1, f"no form#logout-form csrf input on {page.url}")
        return loc.get_attribute("value")

    def login(self, ctx_or_page, token):
        page = ctx_or_page if hasattr(ctx_or_page, "goto") else ctx_or_page.new_page()
        self.goto(page, "/login")
        page.fill("input#token", token)
        resp = self.submit(page, "button#login")
        return page, resp


def submit_form(con, page, form):
    """Submits `form` as a person would: its submit button, else Enter in its first input."""
    button = page.locator(f"{form} button, {form} input[type=submit]")
    with page.expect_navigation() as nav:
        if button.count():
            button.first.click()
        else:
            page.locator(f"{form} input:not([type=hidden])").first.press("Enter")
    con.look(page)
    return nav.value


def text(page, sel):
    loc = page.locator(sel)
    return loc.first.inner_text().strip() if loc.count() else None


def path_of(page):
    return urlparse(page.url).path


def query_of(page):
    return parse_qs(urlparse(page.url).query)


def versions_on(page):
    """{version: state} from table#versions."""
    out = {}
    rows = page.locator("table#versions tr.version")
    for i in range(rows.count()):
        row = rows.nth(i)
        v = row.get_attribute("data-version")
        cells = row.locator("td")
        state = cells.nth(1).inner_text().strip() if cells.count() > 1 else ""
        if v is not None and v.isdigit():
            out[int(v)] = state
    return out


def audit_rows(page):
    """Rows of table#audit as lists of cell texts (seq, time, actor, action, secret, outcome, address)."""
    rows = page.locator("table#audit tr.audit")
    return [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]


def is_read_record(row, secret, actor):
    return (len(row) >= 6 and row[2] == actor and row[3] in ("secret.get", "GetSecret")
            and row[4] == secret and row[5].lower().startswith("ok"))


class Run:
    def __init__(self, con, args):
        self.con = con
        self.args = args
        self.failed = []

    def check(self, name, fn, *a):
        try:
            detail = fn(*a)
            print(f"ok   {name}" + (f" ({detail})" if detail else ""), flush=True)
            return True
        except CheckFailed as e:
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # a timeout or a missing element is this check's failure too
            print(f"FAIL {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
        self.failed.append(name)
        return False


# --- the checks ---------------------------------------------------------------------------------

def check_login_page(con, page):
    resp = con.goto(page, "/")
    need(path_of(page) == "/login", f"GET / without a session ended at {page.url}, not /login")
    need(resp.status == 200, f"/login answered {resp.status}")
    need(page.locator("form#login-form[method=post], form#login-form[method=POST]").count() == 1,
         "no form#login-form with method POST")
    need(page.locator("form#login-form input#token[name=token][type=password]").count() == 1,
         "no input#token[name=token][type=password] in the login form")
    need(page.locator("form#login-form input[type=hidden][name=csrf]").count() == 1,
         "no hidden csrf input in the login form")
    return None


def check_login_refused(con, page):
    page.fill("input#token", "not-a-token-" + secrets.token_urlsafe(8))
    resp = con.submit(page, "button#login")
    need(resp.status == 401, f"a refused token answered {resp.status}, not 401: {text(page, '#error')!r}")
    err = text(page, "#error") or ""
    need("Login failed" in err, f"#error says {err!r}, not 'Login failed: ...'")
    need(page.context.cookies() == [] or all(c["name"] != COOKIE for c in page.context.cookies()),
         "a refused login set a session cookie")


def check_login(con, page, token):
    page.fill("input#token", token)
    resp = con.submit(page, "button#login")
    need(path_of(page) == "/cluster",
         f"login ended at {page.url} (HTTP {resp.status}: {text(page, '#error')!r}), not /cluster")
    need(resp.status == 200, f"/cluster answered {resp.status} after login")
    for sel in ("nav#nav", "a#nav-cluster", "a#nav-secrets", "a#nav-audit", "a#nav-access",
                "a#nav-rotation", "a#nav-backups", "span#whoami", "form#logout-form", "#logout"):
        need(page.locator(sel).count() >= 1, f"{sel} missing on /cluster")
    cookies = [c for c in page.context.cookies() if c["name"] == COOKIE]
    need(len(cookies) == 1, "no vault_session cookie after login")
    c = cookies[0]
    need(c["httpOnly"], "the session cookie is not HttpOnly")
    need(c["sameSite"] == "Strict", f"the session cookie is SameSite={c['sameSite']}, not Strict")
    need(c["path"] == "/", f"the session cookie's path is {c['path']}, not /")
    if con.base.startswith("https:"):
        need(c["secure"], "the session cookie is not Secure under TLS")
    return f"whoami {text(page, 'span#whoami')!r}"


def check_cluster(con, page):
    con.goto(page, "/cluster")
    need(text(page, "h1") == "Cluster", f"h1 is {text(page, 'h1')!r}")
    members = page.locator("table#members tr.member").count()
    need(members >= 1, "table#members has no tr.member")
    for sel in ("#leader", "#term", "#feature-level", "#readiness", "#kms"):
        need(page.locator(sel).count() == 1, f"{sel} missing")
    need(text(page, "#leader"), "#leader is empty")
    return f"{members} members, leader {text(page, '#leader')}, term {text(page, '#term')}"


def check_browse(con, page, secret, prefix):
    con.goto(page, "/secrets")
    need(text(page, "h1") == "Secrets", f"h1 is {text(page, 'h1')!r}")
    page.fill("form#prefix-form input[name=prefix]", prefix)
    submit_form(con, page, "form#prefix-form")
    need(path_of(page) == "/secrets" and query_of(page).get("prefix") == [prefix],
         f"the prefix form led to {page.url}")
    need(prefix in (text(page, "#prefix") or ""), f"#prefix shows {text(page, '#prefix')!r}, not {prefix!r}")
    link = page.locator(f"table#secrets tr.secret a.secret-link[href='/secret?name={quote(secret, safe='')}'], "
                        f"table#secrets tr.secret a.secret-link[href='/secret?name={secret}']")
    if link.count() == 0:
        # Nested deeper: follow the sub-prefix link that leads to it.
        sub = page.locator("a.prefix-link")
        hrefs = [sub.nth(i).get_attribute("href") for i in range(sub.count())]
        need(False, f"no a.secret-link to {secret} under {prefix!r} (prefix links: {hrefs})")
    with page.expect_navigation() as nav:
        link.first.click()
    resp = nav.value
    con.look(page)
    need(resp.status == 200, f"/secret answered {resp.status}")
    need(text(page, "h1") == secret, f"h1 is {text(page, 'h1')!r}, not {secret!r}")
    vs = versions_on(page)
    need(vs, "table#versions has no tr.version[data-version]")
    return f"versions {vs}"


def current_version(page):
    v = page.locator("form#put-form input[name=expected_version]").get_attribute("value") or ""
    need(v.isdigit(), f"expected_version is prefilled with {v!r}, not a version")
    return int(v)


def read_records(con, page, secret, actor):
    """Fills the audit form with the secret and actor; returns the matching read records."""
    con.goto(page, "/audit")
    need(page.locator("form#audit-form").count() == 1, "no form#audit-form")
    page.fill("form#audit-form input[name=secret]", secret)
    page.fill("form#audit-form input[name=actor]", actor)
    submit_form(con, page, "form#audit-form")
    need(query_of(page).get("secret") == [secret], f"the audit form led to {page.url}")
    need(page.locator("table#audit").count() == 1, "no table#audit")
    return [r for r in audit_rows(page) if is_read_record(r, secret, actor)]


def check_reveal_audited(con, page, secret, value, actor):
    before = read_records(con, page, secret, actor)
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    k = current_version(page)
    form = page.locator("form.reveal-form").filter(has=page.locator(f"input[name=version][value='{k}']"))
    need(form.count() == 1, f"no form.reveal-form for version {k}")
    need(form.locator("input[type=hidden][name=csrf]").count() == 1, "the reveal form has no csrf input")
    resp = con.submit(page, f"form.reveal-form:has(input[name=version][value='{k}']) button.reveal",
                      allow_value=True)
    need(resp.status == 200, f"reveal answered {resp.status}: {text(page, '#error')!r}")
    need("no-store" in (resp.headers.get("cache-control") or ""), "the reveal page is not Cache-Control: no-store")
    shown = page.locator("pre#value")
    need(shown.count() == 1, "no pre#value on the reveal page")
    need(shown.inner_text() == value, "pre#value does not show the secret's value")
    # Not cached in the page: the secret page again shows no value (checked by `look`).
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    after = read_records(con, page, secret, actor)
    need(len(after) > len(before),
         f"no new read record (secret.get) for {secret} by {actor!r} on /audit "
         f"({len(before)} before the reveal, {len(after)} after; rows: {audit_rows(page)[:5]})")
    # The export link carries the same search: a JSON-lines attachment with those records.
    href = page.locator("a#audit-export").get_attribute("href") or ""
    need(href.startswith("/audit/export"), f"a#audit-export links to {href!r}")
    r = page.request.get(con.url(href))
    need(r.status == 200, f"{href} answered {r.status}")
    need("attachment" in r.headers.get("content-disposition", ""), f"{href} is not an attachment")
    lines = [json.loads(line) for line in r.text().splitlines() if line.strip()]
    reads = [x for x in lines if x.get("secret") == secret and x.get("actor") == actor
             and x.get("action") in ("secret.get", "GetSecret")]
    need(len(reads) == len(after), f"the export has {len(reads)} of the {len(after)} read records shown")
    need(value not in r.text(), "the audit export holds the value")
    return f"version {k}, audit seq {after[0][0] if after else '?'}, exported"


def check_stale_cas(con, page, secret):
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    k = current_version(page)
    stale = k - 1 if k > 1 else k + 1
    canary = "stale-" + secrets.token_urlsafe(12)
    con.forbidden["refused value"] = canary
    page.fill("form#put-form textarea[name=value]", canary)
    page.fill("form#put-form input[name=expected_version]", str(stale))
    need(page.locator("form#put-form input[type=hidden][name=csrf]").count() == 1, "the put form has no csrf input")
    resp = con.submit(page, "button#put")
    need(resp.status == 400, f"a stale check-and-set answered {resp.status}, not 400")
    err = text(page, "#error") or ""
    need(err.startswith("FAILED_PRECONDITION"), f"#error says {err!r}, not FAILED_PRECONDITION: ...")
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    need(current_version(page) == k and max(versions_on(page)) == k,
         f"something was written: the current version is {current_version(page)}, was {k}")
    return f"expected {stale}, current {k}: {err}"


def check_csrf(con, page, secret):
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    k = current_version(page)
    good = con.csrf_of(page)
    canary = "csrf-" + secrets.token_urlsafe(12)
    con.forbidden["forged value"] = canary
    base = {"name": secret, "value": canary, "expected_version": str(k)}
    tries = {
        "a wrong csrf": (dict(base, csrf="x" + good[1:] if good else "wrong"), {}),
        "no csrf": (dict(base), {}),
        "a foreign Origin": (dict(base, csrf=good), {"Origin": "https://evil.example"}),
    }
    for what, (form, headers) in tries.items():
        r = page.request.post(con.url("/secret/put"), form=form, headers=headers, max_redirects=0)
        need(r.status == 403, f"a POST with {what} answered {r.status}, not 403")
        body = r.text()
        need("CSRF check failed" in body, f"the 403 for {what} does not say 'CSRF check failed'")
        need(re.search(r'id="?error', body), f"the 403 for {what} has no #error")
        check_headers(con, r.headers, f"POST /secret/put with {what}")
    # Logout needs it too: the session survives a forged logout.
    r = page.request.post(con.url("/logout"), form={"csrf": "wrong"}, max_redirects=0)
    need(r.status == 403, f"a logout with a wrong csrf answered {r.status}, not 403")
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    need(path_of(page) == "/secret", f"the session ended after a forged logout ({page.url})")
    need(current_version(page) == k, f"a refused POST wrote version {current_version(page)}")
    return None


def check_put(con, page, secret):
    con.goto(page, f"/secret?name={quote(secret, safe='')}")
    k = current_version(page)
    canary = "put-" + secrets.token_urlsafe(12)
    con.forbidden["written value"] = canary
    page.fill("form#put-form textarea[name=value]", canary)
    resp = con.submit(page, "button#put")
    need(resp.status == 200, f"the put ended with {resp.status}: {text(page, '#error')!r}")
    need(path_of(page) == "/secret" and query_of(page).get("written") == [str(k + 1)],
         f"the put ended at {page.url}, not /secret?name=...&written={k + 1}")
    notice = text(page, "#notice") or ""
    need(f"Wrote version {k + 1}" in notice, f"#notice says {notice!r}")
    need(current_version(page) == k + 1, f"the current version is {current_version(page)}, not {k + 1}")
    return f"version {k + 1}"


def check_pages(con, page):
    """Access, rotation, backups: each renders its tables and forms (and passes `look`)."""
    want = {
        "/access": ["table#roles", "table#tokens", "table#readers", "form#token-form", "form#role-form",
                    "form#reader-form"],
        "/rotation": ["table#rotations"],
        "/backups": ["form#snapshot-form", "pre#restore-command"],
        "/audit": ["form#audit-form", "table#audit", "a#audit-export", "a#audit-verify"],
    }
    for path, sels in want.items():
        resp = con.goto(page, path)
        need(resp.status == 200, f"{path} answered {resp.status}: {text(page, '#error')!r}")
        for sel in sels:
            need(page.locator(sel).count() >= 1, f"{sel} missing on {path}")
        if path == "/backups":
            cmd = text(page, "pre#restore-command") or ""
            need("vaultctl snapshot restore" in cmd, f"pre#restore-command shows {cmd!r}")
    resp = con.goto(page, "/audit/verify")
    need(resp.status == 200 and "intact" in (text(page, "#verify") or ""),
         f"/audit/verify: {resp.status} {text(page, '#verify')!r}")
    r = page.request.get(con.url("/static/console.css"))
    need(r.status == 200 and "css" in r.headers.get("content-type", ""),
         f"/static/console.css: {r.status} {r.headers.get('content-type')}")
    return None


def check_limited(con, token, secret, prefix):
    """A token without grants on the secret: refused, and shown no data: no listing, no
    versions, and no reveal (the console reveals only names the token may list, on top of the
    address and reader rules every read needs: `read-refused` checks those)."""
    ctx = con.context()
    try:
        page, _ = con.login(ctx, token)
        need(path_of(page) == "/cluster", f"the limited token's login ended at {page.url}")
        resp = con.goto(page, f"/secret?name={quote(secret, safe='')}")
        need(resp.status == 403, f"opening {secret} answered {resp.status}, not 403")
        err = text(page, "#error") or ""
        need(err.startswith("PERMISSION_DENIED"), f"opening {secret}: #error says {err!r}, not PERMISSION_DENIED: ...")
        need(page.locator("table#versions tr.version, pre#value, form#put-form").count() == 0,
             f"the refused page for {secret} shows its versions or forms")
        resp = con.goto(page, f"/secrets?prefix={quote(prefix, safe='')}")
        need(page.locator("a.secret-link").filter(has_text=secret).count() == 0,
             f"the limited token's /secrets?prefix={prefix} lists {secret} (HTTP {resp.status})")
        # The console reveals only what the token may list, even from an address that may read.
        r = page.request.post(con.url("/secret/reveal"),
                              form={"name": secret, "version": "1", "csrf": con.csrf_of(page)}, max_redirects=0)
        body = r.text()
        need(r.status == 403 and "PERMISSION_DENIED" in body,
             f"the limited token's reveal of {secret} answered {r.status}, not 403 PERMISSION_DENIED")
        need(con.forbidden["value"] not in body, f"the limited token's reveal of {secret} shows its value")
        return f"{err[:70]!r}"
    finally:
        con.close(ctx)


def check_read_refused(con, admin_page, admin, limited, name):
    """A reveal of a name no reader rule grants to this address is refused (403, #error, no
    value), for any token, as `GetSecret` is."""
    ctx = con.context()
    try:
        page, _ = con.login(ctx, limited)
        for who, p in (("the limited token", page), ("the admin token", admin_page)):
            if path_of(p) == "/login":
                con.login(p, admin)
            r = p.request.post(con.url("/secret/reveal"), form={"name": name, "version": "1", "csrf": con.csrf_of(p)},
                               max_redirects=0)
            body = r.text()
            leaked = con.forbidden.get("ungranted value")
            need(not leaked or leaked not in body, f"{who}'s reveal of {name} shows its value (HTTP {r.status})")
            need(r.status == 403, f"{who}'s reveal of {name} answered {r.status}, not 403")
            need(re.search(r'<[^>]*id="?error', body) and "PERMISSION_DENIED" in body,
                 f"{who}'s refused reveal has no #error PERMISSION_DENIED")
            need("id=\"value\"" not in body and "id=value" not in body, f"{who}'s refused reveal has a #value")
            check_headers(con, r.headers, f"POST /secret/reveal of {name} (refused)")
        return None
    finally:
        con.close(ctx)


def check_revoked(con, admin_page, admin, limited, limited_name):
    """Revoking a token (on /access) ends its console sessions at their next request."""
    ctx = con.context()
    try:
        page, _ = con.login(ctx, limited)
        need(path_of(page) == "/cluster", f"the limited token's login ended at {page.url}")
        con.goto(admin_page, "/access")
        if path_of(admin_page) == "/login":
            con.login(admin_page, admin)
            con.goto(admin_page, "/access")
        form = admin_page.locator("form.revoke-form").filter(
            has=admin_page.locator(f"input[name=name][value='{limited_name}']"))
        need(form.count() == 1, f"no form.revoke-form for token {limited_name!r} on /access")
        with admin_page.expect_navigation() as nav:
            form.locator("button, input[type=submit]").first.click()
        con.look(admin_page)
        need(nav.value.status == 200 and admin_page.locator("#error").count() == 0,
             f"the revoke answered {nav.value.status}: {text(admin_page, '#error')!r}")
        con.goto(page, "/secrets")
        need(path_of(page) == "/login" and query_of(page).get("expired") == ["1"],
             f"the revoked token's session still opens pages ({page.url})")
        return None
    finally:
        con.close(ctx)


def check_expiry(con, page, token, idle_wait):
    if path_of(page) != "/cluster":
        con.login(page, token)
    con.goto(page, "/cluster")
    need(path_of(page) == "/cluster", f"not logged in before the wait ({page.url})")
    time.sleep(idle_wait)
    resp = con.goto(page, "/secrets")
    need(path_of(page) == "/login" and query_of(page).get("expired") == ["1"],
         f"after {idle_wait} s idle, /secrets ended at {page.url}, not /login?expired=1")
    first = resp.request.redirected_from
    need(first is not None and first.response() is not None and first.response().status == 303,
         "the ended session's /secrets was not answered 303")
    notice = text(page, "#notice") or ""
    need("Your session ended" in notice, f"#notice says {notice!r}")
    return None


def check_logout(con, page, token):
    con.login(page, token)
    need(path_of(page) == "/cluster", f"login before logout ended at {page.url}")
    old = [c for c in page.context.cookies() if c["name"] == COOKIE]
    need(old, "no session cookie before logout")
    con.submit(page, "#logout")
    need(path_of(page) == "/login" and query_of(page).get("bye") == ["1"],
         f"logout ended at {page.url}, not /login?bye=1")
    need("Logged out" in (text(page, "#notice") or ""), f"#notice says {text(page, '#notice')!r}")
    need(not [c for c in page.context.cookies() if c["name"] == COOKIE and c["value"]],
         "the session cookie is still set after logout")
    # The old cookie, presented again from another browser context, opens nothing.
    ctx = con.context()
    try:
        ctx.add_cookies([{k: old[0][k] for k in ("name", "value", "domain", "path", "httpOnly", "secure",
                                                  "sameSite")}])
        p2 = ctx.new_page()
        con.goto(p2, "/cluster")
        need(path_of(p2) == "/login", f"the old cookie still opens /cluster ({p2.url})")
        need(p2.locator("table#members").count() == 0, "the old cookie shows cluster data")
    finally:
        con.close(ctx)
    return None


def check_login_rate(con, attempts):
    ctx = con.context()
    try:
        page = ctx.new_page()
        for i in range(1, attempts + 1):
            con.goto(page, "/login")
            page.fill("input#token", "rate-" + secrets.token_urlsafe(8))
            resp = con.submit(page, "button#login")
            if resp.status == 429:
                err = text(page, "#error") or ""
                need(re.search(r"Too many login attempts; retry in \d+ s", err),
                     f"#error says {err!r}, not 'Too many login attempts; retry in N s'")
                return f"429 at attempt {i}"
            need(resp.status == 401, f"login attempt {i} answered {resp.status}, not 401 or 429")
        need(False, f"{attempts} refused logins from one address, none answered 429")
    finally:
        con.close(ctx)


def check_headers(con, headers, where):
    for name, want in HEADERS.items():
        got = headers.get(name)
        need(got is not None, f"{where}: no {name}")
        need(want is None or got.strip() == want, f"{where}: {name} is {got!r}, not {want!r}")
    if con.base.startswith("https:"):
        need(headers.get("strict-transport-security"), f"{where}: no strict-transport-security under TLS")


def check_all_headers(con):
    con.drain()
    need(con.html_seen > 0, "no HTML response seen")
    need(not con.header_faults, "; ".join(dict.fromkeys(con.header_faults)))
    return f"{con.html_seen} HTML responses"


def check_no_leaks(con):
    need(not con.leaks, "; ".join(sorted(set(con.leaks))))
    need(not con.scripts, f"<script> in {sorted(set(con.scripts))}")
    need(not con.foreign, f"requests outside the console: {sorted(set(con.foreign))[:5]}")
    return f"{con.pages_seen} pages"


# --- screenshots --------------------------------------------------------------------------------

def screenshots(con, args, token, out):
    os.makedirs(out, exist_ok=True)
    ctx = con.context()
    page = ctx.new_page()
    failed = []

    def shot(name, path=None):
        try:
            if path is not None:
                resp = con.goto(page, path)
                need(resp is not None and resp.status < 400,
                     f"{path} answered {resp.status if resp else 'nothing'}: {text(page, '#error')!r}")
            page.screenshot(path=os.path.join(out, f"{name}.png"), full_page=True)
            print(f"ok   screenshot {name}", flush=True)
        except Exception as e:
            print(f"FAIL screenshot {name}: {e}", flush=True)
            failed.append(name)

    shot("login", "/login")
    con.login(page, token)
    shot("cluster", "/cluster")
    shot("secrets", f"/secrets?prefix={quote(args.prefix, safe='')}")
    shot("secret", f"/secret?name={quote(args.secret, safe='')}")
    try:
        k = current_version(page)
        with page.expect_navigation():
            page.click(f"form.reveal-form:has(input[name=version][value='{k}']) button.reveal")
        shot("reveal")
    except Exception as e:
        print(f"FAIL screenshot reveal: {e}", flush=True)
        failed.append("reveal")
    shot("audit", f"/audit?secret={quote(args.secret, safe='')}")
    shot("access", "/access")
    shot("rotation", "/rotation")
    shot("backups", "/backups")
    con.close(ctx)
    return failed


# --- main ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=os.environ.get("VAULT_CONSOLE_URL"), help="the console, e.g. http://127.0.0.1:8300")
    ap.add_argument("--secret", default=os.environ.get("VAULT_CONSOLE_SECRET"), help="a secret with a live version")
    ap.add_argument("--prefix", help="a prefix to browse that lists the secret (default: the secret's folder)")
    ap.add_argument("--actor", help="the actor of the admin's reads in audit records (default: console:<what #whoami shows>)")
    ap.add_argument("--ungranted-secret", help="a secret no reader rule grants to this address: its reveal must be "
                    "refused (its value, if known, in VAULT_CONSOLE_UNGRANTED_VALUE)")
    ap.add_argument("--limited-name", help="the limited token's name: revoke it on /access (after the other "
                    "checks) and see its session end")
    ap.add_argument("--idle-wait", type=float, default=float(os.environ.get("VAULT_CONSOLE_IDLE_WAIT", "4")),
                    help="seconds to leave a session idle: more than VAULT_UI_SESSION_IDLE (default 4)")
    ap.add_argument("--login-attempts", type=int, default=60,
                    help="refused logins to try before expecting 429 (more than VAULT_UI_LOGIN_RATE)")
    ap.add_argument("--quick", action="store_true", help="only login, cluster, browse, reveal and its audit record, "
                    "csrf, logout, headers and the HTML scan")
    ap.add_argument("--screenshots", metavar="DIR", help="save a PNG of each page into DIR instead of checking")
    ap.add_argument("--chromium", default=os.environ.get("VAULT_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    if not args.url or not args.secret:
        ap.error("--url and --secret (or VAULT_CONSOLE_URL, VAULT_CONSOLE_SECRET) are required")
    admin = os.environ.get("VAULT_CONSOLE_ADMIN_TOKEN")
    if not admin:
        ap.error("VAULT_CONSOLE_ADMIN_TOKEN is required")
    if args.prefix is None:
        args.prefix = args.secret.rsplit("/", 1)[0] + "/" if "/" in args.secret else ""
    if args.url.startswith("https:"):
        global COOKIE
        COOKIE = "__Host-vault_session"
    if not os.access(args.chromium, os.X_OK):
        sys.exit(f"FAIL set-up: {args.chromium} is not there: `make console` (part of `make test`) installs chromium")

    launch = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=launch)
        con = Console(browser, args.url)
        con.forbidden["admin token"] = admin
        try:
            if args.screenshots:
                failed = screenshots(con, args, admin, args.screenshots)
                if failed:
                    sys.exit(f"FAILED: screenshots of {', '.join(failed)}")
                print(f"screenshots in {args.screenshots}")
                return
            failed = run_checks(con, args, admin)
        finally:
            browser.close()
    if failed:
        sys.exit(f"FAILED: {', '.join(failed)}")
    print("all console checks passed")


def run_checks(con, args, admin):
    """Every check; with --quick only those that say a session, a reveal and the headers work
    (for a second set-up such as TLS: no limited token needed)."""
    value = os.environ.get("VAULT_CONSOLE_VALUE")
    limited = os.environ.get("VAULT_CONSOLE_LIMITED_TOKEN")
    if not value or not (limited or args.quick):
        sys.exit("VAULT_CONSOLE_VALUE and VAULT_CONSOLE_LIMITED_TOKEN are required for the checks")
    full = not args.quick
    con.forbidden["value"] = value
    con.forbidden["limited token"] = limited
    con.forbidden["ungranted value"] = os.environ.get("VAULT_CONSOLE_UNGRANTED_VALUE")
    run = Run(con, args)
    ctx = con.context()
    page = ctx.new_page()
    run.check("login-page", check_login_page, con, page)
    if full:
        run.check("login-refused", check_login_refused, con, page)
    if not run.check("login", check_login, con, page, admin):
        con.close(ctx)
        return run.failed + ["(stopped: no session)"]
    # The console's reads are audited as `console:<token name>` (a read's actor is otherwise
    # the client address).
    actor = args.actor or (f"console:{text(page, 'span#whoami')}" if text(page, "span#whoami") else None)
    run.check("cluster", check_cluster, con, page)
    run.check("browse", check_browse, con, page, args.secret, args.prefix)
    if actor:
        run.check("reveal-audited", check_reveal_audited, con, page, args.secret, value, actor)
    else:
        print("FAIL reveal-audited: span#whoami is empty and no --actor given", flush=True)
        run.failed.append("reveal-audited")
    if full:
        run.check("stale-cas", check_stale_cas, con, page, args.secret)
    run.check("csrf", check_csrf, con, page, args.secret)
    if full:
        run.check("pages", check_pages, con, page)
        run.check("put", check_put, con, page, args.secret)
        run.check("limited-refused", check_limited, con, limited, args.secret, args.prefix)
        if args.ungranted_secret:
            run.check("read-refused", check_read_refused, con, page, admin, limited, args.ungranted_secret)
        if args.limited_name:
            run.check("revoked-token", check_revoked, con, page, admin, limited, args.limited_name)
        run.check("session-expiry", check_expiry, con, page, admin, args.idle_wait)
    run.check("logout", check_logout, con, page, admin)
    con.close(ctx)
    if full:
        run.check("login-rate", check_login_rate, con, args.login_attempts)
    run.check("headers", check_all_headers, con)
    run.check("no-value-in-html", check_no_leaks, con)
    return run.failed


if __name__ == "__main__":
    main()
