//! Test harness: a real relay on a random loopback port with a real SQLite
//! file in a temp dir, and a real HTTP receiver that records what arrives.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cuecast_relay::config::Config;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

/// (id, webhook, status, attempts, last_error) of a stored delivery.
pub type DeliveryRow = (i64, String, String, i64, Option<String>);
/// (HTTP status, response, error, at) of a stored attempt.
pub type AttemptRow = (Option<i64>, Option<String>, Option<String>, i64);

/// What a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// Arrival on tokio's clock, which tests can pause.
    pub at_tokio: tokio::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// How a receiver answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: vec![], body: String::new(), delay: Duration::ZERO }
    }
    pub fn ok() -> Reply {
        Reply::status(200)
    }
}

type Responder = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// An HTTP server on 127.0.0.1:random that records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// `respond(request, n)` decides the answer; `n` counts earlier requests to the same path.
    pub async fn start(respond: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let respond: Arc<Responder> = Arc::new(respond);
        let (log2, notify2) = (log.clone(), notify.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (log, notify, respond) = (log2.clone(), notify2.clone(), respond.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                let received = Received {
                    method: parts.method.to_string(),
                    target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    headers: parts.headers,
                    body,
                    at: Instant::now(),
                    at_tokio: tokio::time::Instant::now(),
                };
                let reply = {
                    let mut log = log.lock().unwrap();
                    let n = log.iter().filter(|r| r.path() == received.path()).count();
                    let reply = respond(&received, n);
                    log.push(received);
                    reply
                };
                notify.notify_waiters();
                if !reply.delay.is_zero() {
                    tokio::time::sleep(reply.delay).await;
                }
                let mut response: Response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
                for (name, value) in reply.headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, log, notify, task }
    }

    pub async fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::ok()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received on `path` so far.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.log.lock().unwrap().iter().filter(|r| r.path() == path).cloned().collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits, without polling, until `path` has received `n` requests (for paused time,
    /// where a polling timer would make the clock crawl).
    pub async fn wait_quietly(&self, path: &str, n: usize) -> Vec<Received> {
        loop {
            let notified = self.notify.notified();
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            notified.await;
        }
    }

    /// Waits until `path` has received at least `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                panic!("{path}: got {} of {n} requests within {timeout:?}", got.len());
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// A relay running in this process.
pub struct TestRelay {
    pub url: String,
    pub db: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<cuecast_relay::Result<()>>>,
    pub dir: Arc<tempfile::TempDir>,
}

/// Sources every test config has: the fixtures' key and a key open to any origin.
pub const SOURCES: &str = r#"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[[source]]
write_key = "pk_live_demo"
origins = ["https://app.example.com"]
[[source]]
write_key = "pk_any"
origins = ["*"]
"#;

pub fn parse_config(toml: &str) -> Config {
    Config::parse(toml, &|_| None).unwrap_or_else(|e| panic!("config: {e:#?}\n{toml}"))
}

impl TestRelay {
    /// Starts a relay with `toml` (top-level keys first) and a fresh database.
    pub async fn start(toml: &str) -> TestRelay {
        TestRelay::start_in(Arc::new(tempfile::tempdir().unwrap()), toml).await
    }

    /// Starts a relay on the database in `dir` (to restart on the same file).
    pub async fn start_in(dir: Arc<tempfile::TempDir>, toml: &str) -> TestRelay {
        let db = dir.path().join("relay.db");
        let text = format!("storage = \"sqlite://{}\"\n{toml}", db.display());
        TestRelay::with_config(dir, parse_config(&text)).await
    }

    /// Starts a relay with a resolved config whose storage is inside `dir`.
    pub async fn with_config(dir: Arc<tempfile::TempDir>, config: Config) -> TestRelay {
        let cuecast_relay::config::Storage::Sqlite(db) = config.storage.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cuecast_relay::run(config, listener, async move {
            let _ = rx.await;
        }));
        let relay = TestRelay { url, db, shutdown: Some(tx), task: Some(task), dir };
        // Ready once /readyz answers.
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get(format!("{}/readyz", relay.url)).send().await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(Instant::now() < deadline, "relay did not become ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub async fn post(&self, body: &Value) -> (u16, HeaderMap, Value) {
        post(&format!("{}/v1/batch", self.url), serde_json::to_vec(body).unwrap(), &[]).await
    }

    /// Deliveries as (id, webhook, status, attempts, last_error).
    pub fn deliveries(&self) -> Vec<DeliveryRow> {
        deliveries(&self.db)
    }

    pub fn attempts(&self, delivery: i64) -> Vec<AttemptRow> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = conn
            .prepare("SELECT status, response, error, at FROM attempts WHERE delivery_id = ?1 ORDER BY id")
            .unwrap();
        stmt.query_map([delivery], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Waits until every delivery has left `pending` (their results are written asynchronously).
    pub async fn settle(&self, expected: usize, timeout: Duration) -> Vec<DeliveryRow> {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.deliveries();
            if d.len() >= expected && d.iter().all(|d| d.2 != "pending") {
                return d;
            }
            assert!(Instant::now() < deadline, "deliveries did not settle: {d:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn deliveries(db: &Path) -> Vec<DeliveryRow> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt =
        conn.prepare("SELECT id, webhook_id, status, attempts, last_error FROM deliveries ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let mut req = reqwest::Client::new().post(url).header("content-type", "text/plain").body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

/// A valid event with a fresh id.
pub fn event(name: &str, properties: Value) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "event": name,
        "timestamp": "2026-12-04T15:16:52.001Z",
        "anonymousId": "anon-1",
        "userId": "user-42",
        "properties": properties,
    })
}

pub fn batch_with_key(key: &str, events: Vec<Value>) -> Value {
    json!({
        "v": 1,
        "writeKey": key,
        "batchId": uuid::Uuid::new_v4().to_string(),
        "sentAt": "2026-12-04T15:16:59.500Z",
        "attempt": 1,
        "sdk": {"name": "cuecast", "version": "0.1.0"},
        "events": events,
    })
}

pub fn batch(events: Vec<Value>) -> Value {
    batch_with_key("pk_live_demo", events)
}

pub fn nps(score: u8) -> Value {
    event("survey.submitted", json!({"surveyId": "nps-q3", "kind": "nps", "score": score, "comment": "ok"}))
}

/// The repository's golden fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Polls `f` until it is true.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `[[webhook]]` for every event; `extra` adds lines.
pub fn hook(id: &str, url: &str, extra: &str) -> String {
    format!("[[webhook]]\nid = \"{id}\"\nevents = [\"*\"]\nurl = \"{url}\"\n{extra}\n")
}

/// Test limits: a short shutdown grace so hanging receivers do not slow the suite.
pub const FAST_LIMITS: &str = "[limits]\nshutdown_grace = \"200ms\"\n";
