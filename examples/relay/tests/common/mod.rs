//! Test harness: a real relay on a random loopback port with real storage
//! (a SQLite file in a temp dir, or a fresh PostgreSQL database on
//! 127.0.0.1:5432 that is dropped afterwards), and a real HTTP receiver that
//! records what arrives. [`both_backends!`] runs a test body once per backend.
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

/// Where a test's relay keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each `async fn name(b) { … }` twice, as `name::sqlite` and
/// `name::postgres`: the same test against both storage backends.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($(async fn $name:ident($b:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                run($crate::common::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                if $crate::common::pg_available() {
                    run($crate::common::Backend::Postgres).await
                }
            }
            async fn run($b: $crate::common::Backend) $body
        }
    )*};
}

/// The PostgreSQL server tests use (`CUECAST_TEST_PG` overrides), and its
/// maintenance database, where test databases are created and dropped.
pub fn pg_server() -> String {
    std::env::var("CUECAST_TEST_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// Runs `f` with a synchronous client on its own thread: the `postgres`
/// crate runs a runtime of its own, which may not nest inside a test's.
pub fn pg<T: Send + 'static>(
    url: String,
    f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        f(&mut client).map_err(|e| format!("{e:?}"))
    })
    .join()
    .unwrap()
}

/// Whether PostgreSQL answers. Under CI (`CI=true`) it must: a missing
/// database fails the run instead of skipping half the suite in silence.
pub fn pg_available() -> bool {
    static UP: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let up = UP.get_or_init(|| pg(format!("{}/test", pg_server()), |c| c.batch_execute("SELECT 1")));
    match up {
        Ok(()) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL at {} is unreachable under CI: {e}", pg_server())
        }
        Err(e) => {
            eprintln!("\n*** SKIPPING a PostgreSQL test: {} is unreachable ({e}) ***\n", pg_server());
            false
        }
    }
}

/// A test's storage: a SQLite file in a temp dir, or a PostgreSQL database
/// `cuecast_test_<random>` dropped when this is dropped (also when the test fails).
pub struct TestDb {
    pub backend: Backend,
    /// The `storage` URL.
    pub url: String,
    pub dir: Arc<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("relay.db").display());
                TestDb { backend, url, dir, pg_name: None }
            }
            Backend::Postgres => {
                let name = format!("cuecast_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
                let create = format!("CREATE DATABASE {name}");
                pg(format!("{}/test", pg_server()), move |c| c.batch_execute(&create)).unwrap();
                let url = format!("{}/{name}", pg_server());
                TestDb { backend, url, dir, pg_name: Some(name) }
            }
        }
    }

    pub fn storage(&self) -> cuecast_relay::config::Storage {
        match self.backend {
            Backend::Sqlite => cuecast_relay::config::Storage::Sqlite(self.dir.path().join("relay.db")),
            Backend::Postgres => cuecast_relay::config::Storage::Postgres(self.url.clone()),
        }
    }

    /// Runs SQL that both backends understand and returns the rows as text.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.dir.path().join("relay.db")).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                                v => Some(v.as_str().unwrap_or_default().to_string()),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
            }
            Backend::Postgres => {
                // Every column as text, in order, through `json_each_text` of the row.
                let sql = format!(
                    "SELECT ARRAY(SELECT value FROM json_each_text(row_to_json(q)) WITH ORDINALITY ORDER BY ordinality) FROM ({sql}) q"
                );
                let rows = pg(self.url.clone(), move |c| c.query(&sql, &[])).unwrap();
                rows.into_iter().map(|r| r.get::<_, Vec<Option<String>>>(0)).collect()
            }
        }
    }

    /// Runs one statement that returns nothing.
    pub fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.dir.path().join("relay.db")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Backend::Postgres => {
                let sql = sql.to_string();
                pg(self.url.clone(), move |c| c.batch_execute(&sql)).unwrap();
            }
        }
    }

    /// Deliveries as (id, webhook, status, attempts, last_error).
    pub fn deliveries(&self) -> Vec<DeliveryRow> {
        self.query("SELECT id, webhook_id, status, attempts, last_error FROM deliveries ORDER BY id")
            .into_iter()
            .map(|r| {
                let int = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
                (int(0), r[1].clone().unwrap(), r[2].clone().unwrap(), int(3), r[4].clone())
            })
            .collect()
    }

    pub fn attempts(&self, delivery: i64) -> Vec<AttemptRow> {
        self.query(&format!(
            "SELECT status, response, error, at FROM attempts WHERE delivery_id = {delivery} ORDER BY id"
        ))
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().map(|s| s.parse().unwrap()),
                r[1].clone(),
                r[2].clone(),
                r[3].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = pg(format!("{}/test", pg_server()), move |c| c.batch_execute(&drop)) {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

/// A relay running in this process.
pub struct TestRelay {
    pub url: String,
    pub db: Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<cuecast_relay::Result<()>>>,
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
    /// Starts a relay with `toml` (top-level keys first) and fresh storage of `backend`.
    pub async fn start(backend: Backend, toml: &str) -> TestRelay {
        TestRelay::start_in(Arc::new(TestDb::new(backend)), toml).await
    }

    /// Starts a relay on existing storage (to restart on the same data).
    pub async fn start_in(db: Arc<TestDb>, toml: &str) -> TestRelay {
        let text = format!("storage = \"{}\"\n{toml}", db.url);
        TestRelay::with_config(db, parse_config(&text)).await
    }

    /// Starts a relay with a resolved config whose storage is `db`'s.
    pub async fn with_config(db: Arc<TestDb>, mut config: Config) -> TestRelay {
        config.storage = db.storage();
        config.migrate_on_start = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(cuecast_relay::run(config, listener, async move {
            let _ = rx.await;
        }));
        let relay = TestRelay { url, db, shutdown: Some(tx), task: Some(task) };
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
        self.db.deliveries()
    }

    pub fn attempts(&self, delivery: i64) -> Vec<AttemptRow> {
        self.db.attempts(delivery)
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
