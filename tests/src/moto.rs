//! A real KMS API for tests: moto's server on a free loopback port, started and stopped by
//! the test itself, plus an SDK client to create keys, aliases and rotations in it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use crate::{free_port, NodeSpec};

pub const REGION: &str = "us-east-1";

/// `moto_server` from the venv `make test` creates (override with `VAULT_MOTO_SERVER`).
fn moto_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VAULT_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/vault/venv/bin/moto_server")
}

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

fn answers_200(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && buf[..n].windows(3).any(|w| w == b"200"))
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_server_bin();
        assert!(bin.exists(), "{} not found: `make test` creates it (venv with moto[server])", bin.display());
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let mut moto = Moto { child: Some(child), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers_200(port) {
            assert!(Instant::now() < deadline, "moto_server did not answer in 30s");
            if let Some(Ok(Some(status))) = moto.child.as_mut().map(|c| c.try_wait()) {
                panic!("moto_server exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the emulator: an outage (it keeps keys in memory only).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One plain HTTP/1.1 request to the S3 API: status and body bytes. Moto checks no
    /// signature, but answers an anonymous GetObject of a private bucket with 403: the request
    /// names a (dummy) credential.
    pub fn s3_request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("moto answers");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).expect("send to moto");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read from moto");
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer") + 4;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status");
        assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "unexpected chunked answer");
        (code, raw[split..].to_vec())
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (code, body) = self.s3_request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(code, 200, "create bucket {bucket}: {}", String::from_utf8_lossy(&body));
    }

    /// The object keys in `bucket` under `prefix`, sorted.
    pub fn s3_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, body) = self.s3_request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), b"");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut keys: Vec<String> =
            text.split("<Key>").skip(1).filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string())).collect();
        keys.sort();
        keys
    }

    /// Points a node's scheduled backups at `bucket` here (`VAULT_BACKUP_S3_*`), with dummy
    /// credentials; the node's key manager stays as it is.
    pub fn configure_s3(&self, spec: &mut NodeSpec, bucket: &str, prefix: &str) {
        spec.set("VAULT_BACKUP_S3_BUCKET", bucket);
        spec.set("VAULT_BACKUP_S3_PREFIX", prefix);
        spec.set("AWS_REGION", REGION);
        spec.set("AWS_ACCESS_KEY_ID", "testing");
        spec.set("AWS_SECRET_ACCESS_KEY", "testing");
        spec.set("AWS_ENDPOINT_URL_S3", &self.url());
        spec.set("AWS_EC2_METADATA_DISABLED", "true");
    }

    /// Points a node at this emulator with dummy credentials, in aws mode with `key_id`.
    pub fn configure(&self, spec: &mut NodeSpec, key_id: &str) {
        spec.set("VAULT_KMS_MODE", "aws");
        spec.set("VAULT_KMS_KEY_ID", key_id);
        spec.env.remove("VAULT_LOCAL_MASTER_KEY");
        spec.set("AWS_REGION", REGION);
        spec.set("AWS_ACCESS_KEY_ID", "testing");
        spec.set("AWS_SECRET_ACCESS_KEY", "testing");
        spec.set("AWS_ENDPOINT_URL_KMS", &self.url());
        spec.set("AWS_EC2_METADATA_DISABLED", "true");
    }

    pub fn client(&self) -> aws_sdk_kms::Client {
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
            .http_client(http)
            .endpoint_url(self.url())
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    /// A new symmetric key with `alias`; returns (key id, ARN).
    pub async fn create_key(&self, alias: &str) -> (String, String) {
        let c = self.client();
        let meta = c.create_key().send().await.expect("CreateKey").key_metadata.expect("key metadata");
        c.create_alias().alias_name(alias).target_key_id(meta.key_id()).send().await.expect("CreateAlias");
        (meta.key_id().to_string(), meta.arn().unwrap_or_default().to_string())
    }

    /// Records an on-demand rotation; returns the newest rotation date (ms).
    pub async fn rotate(&self, key_id: &str) -> u64 {
        let c = self.client();
        c.rotate_key_on_demand().key_id(key_id).send().await.expect("RotateKeyOnDemand");
        let out = c.list_key_rotations().key_id(key_id).send().await.expect("ListKeyRotations");
        out.rotations()
            .iter()
            .filter_map(|r| r.rotation_date().and_then(|d| d.to_millis().ok()))
            .max()
            .map(|m| m as u64)
            .expect("a rotation date")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
