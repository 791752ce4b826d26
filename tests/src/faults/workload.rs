//! Concurrent clients that record every operation, as Jepsen records a history: when it was
//! invoked, on which node, with what input, when it completed and how (ok, definite failure,
//! or unknown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use vault_node::pb::secrets_client::SecretsClient;
use vault_node::pb::{DeleteSecretRequest, GetSecretRequest, PutSecretRequest};

use super::checker::{Event, Op, Outcome, Ret};
use super::scenario::Dice;
use crate::authed;

/// Versions kept per key: high, so that lost writes stay visible to the final reads.
pub const MAX_VERSIONS: u64 = 1000;
/// How long one operation may take before its outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared history of one run.
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    next_id: AtomicU64,
    next_value: AtomicU64,
}

impl Recorder {
    pub fn new(start: Instant) -> Arc<Recorder> {
        Arc::new(Recorder {
            start,
            events: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            next_value: AtomicU64::new(1),
        })
    }

    pub fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }

    pub fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    fn record(&self, process: u32, node: u64, key: &str, op: Op, outcome: Outcome, invoked: Instant) {
        let complete_ns = match outcome {
            Outcome::Unknown => None,
            _ => Some(self.ns(Instant::now())),
        };
        let event = Event {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            process,
            node: node as u32,
            key: key.to_string(),
            op,
            outcome,
            invoke_ns: self.ns(invoked),
            complete_ns,
        };
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A value no other operation of the run writes.
    fn fresh_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }
}

/// A lazily connected client of one node's API.
pub fn connect(url: &str) -> anyhow::Result<SecretsClient<Channel>> {
    let ch = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(300))
        .timeout(OP_TIMEOUT)
        .connect_lazy();
    Ok(SecretsClient::new(ch))
}

/// Whether an error means the request never reached a server (so it had no effect).
fn never_sent(s: &tonic::Status) -> bool {
    let m = s.message();
    s.code() == Code::Unavailable && (m.contains("tcp connect") || m.contains("onnection refused"))
}

fn parse_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

/// One client: operations on random keys against `node` until `stop`.
pub struct Client {
    pub process: u32,
    pub node: u64,
    pub url: String,
    pub token: String,
    pub keys: Arc<Vec<String>>,
    pub rec: Arc<Recorder>,
}

impl Client {
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        let Ok(mut api) = connect(&self.url) else { return };
        let mut rng = Dice(0x9E37_79B9_7F4A_7C15 ^ (u64::from(self.process) + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        // Last version this client saw per key: check-and-set and version reads aim near it.
        let mut seen = vec![0u64; self.keys.len()];
        while !*stop.borrow() {
            let k = rng.below(self.keys.len() as u64) as usize;
            let key = &self.keys[k];
            let ok = match rng.below(100) {
                0..=34 => self.put(&mut api, key, None).await,
                35..=49 => self.put(&mut api, key, Some(seen[k])).await,
                50..=79 => self.get(&mut api, key, None).await,
                80..=94 => {
                    let v = seen[k].saturating_sub(rng.below(3)).max(1);
                    self.get(&mut api, key, Some(v)).await
                }
                _ => self.delete(&mut api, key).await,
            };
            match ok {
                Some(v) => seen[k] = seen[k].max(v),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Returns the version learned, if the call succeeded; `Some(0)` for a success without one.
    async fn put(&self, api: &mut SecretsClient<Channel>, key: &str, expected: Option<u64>) -> Option<u64> {
        let value = self.rec.fresh_value();
        let op = Op::Put { value, expected };
        let req = PutSecretRequest {
            name: key.to_string(),
            value: value.to_string().into_bytes(),
            expected_version: expected,
            max_versions: Some(MAX_VERSIONS as u32),
        };
        let invoked = Instant::now();
        let r = api.put_secret(authed(req, &self.token)).await;
        let (outcome, learned) = match r {
            Ok(resp) => {
                let version = resp.into_inner().version;
                (Outcome::Ok(Ret::Written { version }), Some(version))
            }
            Err(s) if s.code() == Code::FailedPrecondition && expected.is_some() => {
                (Outcome::Ok(Ret::CasMismatch), None)
            }
            Err(s) if never_sent(&s) => (Outcome::Fail, None),
            Err(_) => (Outcome::Unknown, None),
        };
        self.rec.record(self.process, self.node, key, op, outcome, invoked);
        learned
    }

    async fn get(&self, api: &mut SecretsClient<Channel>, key: &str, version: Option<u64>) -> Option<u64> {
        let req = GetSecretRequest { name: key.to_string(), version: version.unwrap_or(0) };
        let invoked = Instant::now();
        let r = api.get_secret(tonic::Request::new(req)).await;
        let (outcome, learned) = match r {
            Ok(resp) => {
                let g = resp.into_inner();
                (Outcome::Ok(Ret::Found { version: g.version, value: parse_value(&g.value) }), Some(g.version))
            }
            Err(s) if s.code() == Code::NotFound => (Outcome::Ok(Ret::NotFound), Some(0)),
            // A failed read has no effect.
            Err(_) => (Outcome::Fail, None),
        };
        self.rec.record(self.process, self.node, key, Op::Get { version }, outcome, invoked);
        learned
    }

    async fn delete(&self, api: &mut SecretsClient<Channel>, key: &str) -> Option<u64> {
        let req = DeleteSecretRequest { name: key.to_string(), destroy: false };
        let invoked = Instant::now();
        let r = api.delete_secret(authed(req, &self.token)).await;
        let outcome = match r {
            Ok(_) => Outcome::Ok(Ret::Deleted),
            Err(s) if s.code() == Code::NotFound => Outcome::Ok(Ret::NotFound),
            Err(s) if never_sent(&s) => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        };
        let ok = matches!(outcome, Outcome::Ok(_));
        self.rec.record(self.process, self.node, key, Op::Delete, outcome, invoked);
        ok.then_some(0)
    }

    /// After the run: the latest version and every version up to `highest`, from `self.node`,
    /// recorded like any other read. Retries until reads succeed (or `deadline`).
    pub async fn final_reads(&self, highest: &[u64], deadline: Instant) -> anyhow::Result<()> {
        let mut api = connect(&self.url)?;
        for (k, key) in self.keys.iter().enumerate() {
            let versions = std::iter::once(None).chain((1..=highest[k] + 1).map(Some));
            for v in versions {
                loop {
                    let req = GetSecretRequest { name: key.clone(), version: v.unwrap_or(0) };
                    let invoked = Instant::now();
                    let (outcome, done) = match api.get_secret(tonic::Request::new(req)).await {
                        Ok(r) => {
                            let g = r.into_inner();
                            (Outcome::Ok(Ret::Found { version: g.version, value: parse_value(&g.value) }), true)
                        }
                        Err(s) if s.code() == Code::NotFound => (Outcome::Ok(Ret::NotFound), true),
                        Err(s) => {
                            anyhow::ensure!(Instant::now() < deadline, "final reads failed: {s}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            (Outcome::Fail, false)
                        }
                    };
                    if done {
                        self.rec.record(self.process, self.node, key, Op::Get { version: v }, outcome, invoked);
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
