//! A full disk: a node whose data directory sits on a 48 MiB tmpfs, written with 4 KiB secrets
//! until the free-space limit, refuses writes with RESOURCE_EXHAUSTED "disk nearly full", keeps
//! serving reads, says so in `/readyz` and `vaultctl status`, takes writes again by itself once
//! space is freed, and after a restart every acknowledged write reads back.
//!
//! Before the disk watcher, the same run ended in RocksDB's assertion
//! `sync_without_flush_called_` (SIGABRT) and reads went down with the node.
//!
//! Mounting the tmpfs needs root: without it the test says SKIP. It unmounts what it mounted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// A tmpfs mounted for this test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("SKIP a_full_disk_refuses_writes_keeps_reads_and_recovers_by_itself: mounting a tmpfs needs root");
        return;
    }
    mt().block_on(async {
        let work = test_dir();
        let mnt = work.path().join("disk");
        let _fs = Tmpfs::mount(&mnt, "48m");
        // Room to give back later.
        let filler = mnt.join("filler");
        std::fs::write(&filler, vec![0u8; 8 << 20]).expect("filler");

        let token = random_token();
        let mut spec = NodeSpec::single(&mnt, &token, &random_master_key());
        spec.set("VAULT_DISK_MIN_FREE_MB", "12").set("VAULT_DISK_MIN_FREE_PERCENT", "0");
        let metrics = with_metrics(&mut spec);
        let mut node = spec.start();
        node.wait_ready().await;

        let mut client = SecretsClient::new(node.channel().await.expect("channel"));
        let value = |i: usize| format!("{i:08}-{}", "v".repeat(4087)).into_bytes();
        let mut acked = Vec::new();
        let refusal = loop {
            let i = acked.len();
            assert!(i < 20_000, "no refusal after {i} writes of 4 KiB on a 48 MiB disk");
            let req = pb::PutSecretRequest { name: format!("fill/{i:05}"), value: value(i), ..Default::default() };
            match client.put_secret(authed(req, &token)).await {
                Ok(_) => acked.push(i),
                Err(s) => break s,
            }
        };
        assert_eq!(refusal.code(), tonic::Code::ResourceExhausted, "{refusal:?}\nlog:\n{}", node.log());
        assert!(refusal.message().starts_with("disk nearly full: "), "{refusal:?}");
        assert!(acked.len() > 100, "only {} writes before the refusal", acked.len());
        assert!(node.is_running(), "the node is still up");

        // Reads go on; readiness and status say why writes do not.
        for i in [0, acked.len() / 2, acked.len() - 1] {
            let got = client
                .get_secret(pb::GetSecretRequest { name: format!("fill/{i:05}"), version: 0 })
                .await
                .expect("a read while the disk is full");
            assert_eq!(got.into_inner().value, value(i));
        }
        // Readiness is re-checked every second.
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = loop {
            let (code, body) = http_get(&metrics, "/readyz").await.expect("/readyz answers");
            if code == 503 {
                break body;
            }
            assert!(Instant::now() < deadline, "/readyz still says {code} {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(body.contains("disk nearly full"), "{body}");
        assert!(scrape(&metrics).await.contains("vault_disk_writes_refused 1"), "the metric says so");
        // `vaultctl status` exits as "unavailable" for a node that is not ready, naming why.
        let out = vaultctl(&node.url(), None, &["status"]);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success() && said.contains("disk nearly full"), "{said}");

        // Space comes back: writes resume by themselves.
        std::fs::remove_file(&filler).expect("free the filler");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let i = acked.len();
            let req = pb::PutSecretRequest { name: format!("fill/{i:05}"), value: value(i), ..Default::default() };
            match client.put_secret(authed(req, &token)).await {
                Ok(_) => {
                    acked.push(i);
                    break;
                }
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    assert!(Instant::now() < deadline, "writes did not resume in 10 s: {s:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("unexpected {s:?}"),
            }
        }

        // Every acknowledged write survives a restart.
        node.stop();
        let mut node = spec.start();
        node.wait_ready().await;
        let mut client = SecretsClient::new(node.channel().await.expect("channel"));
        for &i in &acked {
            let got = client
                .get_secret(pb::GetSecretRequest { name: format!("fill/{i:05}"), version: 0 })
                .await
                .unwrap_or_else(|s| panic!("fill/{i:05} after the restart: {s:?}"));
            assert_eq!(got.into_inner().value, value(i), "fill/{i:05}");
        }
        node.stop();
    });
}
