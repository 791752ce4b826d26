//! What one client can hold of the console: a body too large is refused at once, a body that
//! dribbles in is cut off after 15 s, one address gets 32 connections, and lifetimes that no
//! calendar can show (a token or rotation period of a million days, which once broke pages)
//! are refused by the API.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vault_node::pb;
use vault_node::pb::admin_client::AdminClient;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// Sends `head` (and `body`) and reads the status code of the answer, if one comes in `wait`.
async fn status_of(addr: &str, head: &str, body: &[u8], wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(body).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, s.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn one_client_holds_a_bounded_share_of_the_console_and_lifetimes_stay_showable() {
    mt().block_on(async {
        let ui = format!("127.0.0.1:{}", free_port());
        let n = SingleNode::start(|s| {
            s.set("VAULT_UI_ADDR", &ui);
        })
        .await;

        // A login body over 4 KiB: refused at once.
        let big = vec![b'a'; 64 * 1024];
        let head = format!(
            "POST /login HTTP/1.1\r\nHost: {ui}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n",
            big.len()
        );
        assert_eq!(status_of(&ui, &head, &big, Duration::from_secs(5)).await, Some(413));

        // A body that never arrives whole: 408 after the body timeout, not a held connection.
        let head = format!(
            "POST /logout HTTP/1.1\r\nHost: {ui}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 100\r\n\r\n"
        );
        let started = Instant::now();
        let code = status_of(&ui, &head, b"csrf=", Duration::from_secs(25)).await;
        assert_eq!(code, Some(408), "a dribbled body is cut off");
        assert!(started.elapsed() < Duration::from_secs(20), "within the 15 s body timeout: {:?}", started.elapsed());

        // 32 connections from one address are served; the 33rd is closed at once.
        let mut held = Vec::new();
        for _ in 0..32 {
            held.push(TcpStream::connect(&ui).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let get = format!("GET /login HTTP/1.1\r\nHost: {ui}\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(&ui, &get, b"", Duration::from_secs(5)).await, None, "the 33rd connection is closed");
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(status_of(&ui, &get, b"", Duration::from_secs(5)).await, Some(200), "served again once they close");

        // The API refuses a token lifetime or rotation period past a hundred years.
        let mut admin = AdminClient::new(n.node.channel().await.expect("channel"));
        let req = pb::CreateTokenRequest { name: "forever".into(), role: "admin".into(), ttl_secs: 9_000_000 * 86_400 };
        let refused = admin.create_token(authed(req, &n.token)).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("100 years"), "{refused:?}");
        n.ctl(&["secret", "put", "app/long", "--value", "v1"]);
        let out = n.node.vaultctl(
            Some(&n.token),
            &["secret", "rotation", "set", "app/long", "--every", "9000000d", "--generator", "random:16"],
        );
        assert!(!out.status.success(), "a million-day period is refused");
        assert!(String::from_utf8_lossy(&out.stderr).contains("100 years"), "{}", String::from_utf8_lossy(&out.stderr));
    });
}
