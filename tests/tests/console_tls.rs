//! The console over TLS: with `VAULT_TLS_CERT` the console listener speaks only HTTPS (the
//! API's certificate), sends HSTS, and marks its cookies `Secure`; a plaintext request gets no
//! page. (The browser tests, in console.rs, run the console over plain HTTP on loopback.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{crypto, ClientConfig, RootCertStore};
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// One HTTPS/1.1 request; the response's head (status line and headers) and body.
async fn https(addr: &str, ca: &Path, request: String) -> (String, String) {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the console");
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The value a `Set-Cookie` gives cookie `name`, with its whole line.
fn cookie<'a>(head: &'a str, name: &str) -> (&'a str, &'a str) {
    let line = header(head, "set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name} in:\n{head}"));
    let value = line[name.len() + 1..].split(';').next().unwrap_or_default();
    (value, line)
}

#[test]
fn over_tls_the_console_is_https_only_with_hsts_and_secure_cookies() {
    mt().block_on(async {
        let work = test_dir();
        let certs = work.path().join("certs");
        mint_certs(&certs, &[1]);
        let ui = format!("127.0.0.1:{}", free_port());
        let ca = certs.join("ca.pem");
        let n = SingleNode::start(|s| {
            let cert = certs.join("node-1.pem").display().to_string();
            let key = certs.join("node-1.key").display().to_string();
            s.set("VAULT_TLS_CERT", &cert).set("VAULT_TLS_KEY", &key).set("VAULT_UI_ADDR", &ui);
            s.api_ca = Some(ca.clone());
        })
        .await;
        assert!(
            n.node.log().contains(&format!("https://{ui}/")),
            "the node names its console's https address:\n{}",
            n.node.log()
        );

        // The login page: HSTS, the CSP, and a Secure double-submit cookie.
        let get = |path: &str, cookie: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: {ui}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
        };
        let (head, body) = https(&ui, &ca, get("/login", "")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header(&head, "strict-transport-security"), ["max-age=31536000"], "{head}");
        assert!(header(&head, "content-security-policy")[0].starts_with("default-src 'none'"), "{head}");
        let (login_csrf, line) = cookie(&head, "vault_login_csrf");
        assert!(line.contains("; Secure") && line.contains("HttpOnly") && line.contains("SameSite=Strict"), "{line}");
        assert!(body.contains(login_csrf), "the form carries the cookie's value");

        // Log in: the session cookie is Secure too, and it opens the cluster page.
        let form = format!("token={}&csrf={login_csrf}", n.token);
        let post = format!(
            "POST /login HTTP/1.1\r\nHost: {ui}\r\nCookie: vault_login_csrf={login_csrf}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        let (head, _) = https(&ui, &ca, post).await;
        assert!(head.starts_with("HTTP/1.1 303"), "{head}");
        let (session, line) = cookie(&head, "vault_session");
        assert!(line.contains("; Secure") && line.contains("HttpOnly") && line.contains("SameSite=Strict"), "{line}");
        let (head, body) = https(&ui, &ca, get("/cluster", &format!("vault_session={session}"))).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("id=\"members\""), "{body}");

        // Plain HTTP to the same port gets no page.
        let plain = http_get(&ui, "/login").await;
        assert!(plain.as_ref().is_none_or(|(code, _)| *code != 200), "plaintext HTTP was served: {plain:?}");
    });
}
