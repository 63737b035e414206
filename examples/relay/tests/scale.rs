//! Scale-out: three relay processes (the real binary) on one PostgreSQL
//! database under load, with a receiver that notices when two requests for
//! the same delivery (`webhook-id`) are in flight at once.
//!
//! 1. Plain load: every acknowledged event delivered, no overlap.
//! 2. SIGKILL one relay mid-load: the others finish its deliveries once its
//!    leases run out; nothing acknowledged is lost.
//! 3. Cut the relays off PostgreSQL mid-load: 503 with Retry-After and the
//!    error body while it is away, `/readyz` fails, and everything resumes
//!    by itself when it is back.
//!
//! The tests run one at a time (nine relays at once would only measure the
//! machine) with a short lease so a takeover happens within seconds.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::*;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LEASE: &str = "3s";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A relay process, killed if the test ends early.
struct Relay {
    child: Child,
    port: u16,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    fn spawn(config: &std::path::Path, log: &std::path::Path) -> Relay {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CUECAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Relay { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) -> bool {
        matches!(reqwest::get(format!("{}/readyz", self.url())).await, Ok(r) if r.status() == 200)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready().await {
            assert!(Instant::now() < deadline, "relay on {} did not become ready", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Requests per event id.
    per_event: HashMap<String, usize>,
    /// Requests answered 200 per event id: more than one is a duplicate delivery.
    ok_per_event: HashMap<String, usize>,
    /// When each event id was first answered 200 (or hung up on: that counts as its end).
    ok_at: HashMap<String, Instant>,
    /// `webhook-id`s with a request in flight now.
    in_flight: HashSet<String>,
    /// Requests that arrived while another for the same `webhook-id` was in flight.
    overlaps: usize,
    requests: usize,
}

/// A receiver that takes 20 ms per request and fails about one first
/// attempt in twenty with a 503 (so retries cross relays too).
async fn receiver() -> (String, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let seen = s.clone();
        async move {
            let msg = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = event["data"]["id"].as_str().unwrap_or_default().to_string();
            let fail = {
                let mut seen = seen.lock().unwrap();
                seen.requests += 1;
                if !seen.in_flight.insert(msg.clone()) {
                    seen.overlaps += 1;
                }
                let n = seen.per_event.entry(id.clone()).or_default();
                *n += 1;
                let first = *n == 1;
                let fail = first && rand::random::<u8>() < 13;
                if !fail {
                    *seen.ok_per_event.entry(id.clone()).or_default() += 1;
                }
                fail
            };
            // Out of flight when the answer is sent, or when the sender hangs
            // up first (a killed relay, a timeout): hyper then drops this future.
            struct Landed(Arc<Mutex<Seen>>, String);
            impl Drop for Landed {
                fn drop(&mut self) {
                    self.0.lock().unwrap().in_flight.remove(&self.1);
                }
            }
            let landed = Landed(seen.clone(), msg);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !fail {
                seen.lock().unwrap().ok_at.entry(id).or_insert_with(Instant::now);
            }
            drop(landed);
            if fail {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen, task)
}

/// A database with the schema applied by `cuecast-relay migrate`, and a config file for the relays.
fn setup(hook_url: &str) -> (TestDb, std::path::PathBuf) {
    let db = TestDb::new(Backend::Postgres);
    let config = db.dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "storage = \"{}\"\n[limits]\nkey_rate = \"100000/s\"\nip_rate = \"100000/s\"\nlease = \"{LEASE}\"\nsweep_interval = \"300ms\"\nshutdown_grace = \"1s\"\n{SOURCES}{}",
            db.url,
            hook("all", hook_url, "timeout = \"1s\"\nconcurrency = 32\nretry = [\"0s\", \"100ms\", \"300ms\", \"1s\", \"1s\", \"2s\", \"2s\", \"5s\"]"),
        ),
    )
    .unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_cuecast-relay")).args(["migrate", "--config"]).arg(&config).output().unwrap();
    let v = cuecast_relay::storage::SCHEMA_VERSION;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("schema version 0 -> {v}")), "{out:?}");
    (db, config)
}

/// What the load clients saw.
#[derive(Default)]
struct Load {
    /// Event id → index of the relay that acknowledged it.
    acked: Mutex<HashMap<String, usize>>,
    /// 503 answers, each checked for Retry-After and the error body.
    unavailable: AtomicUsize,
    /// Requests that got no answer at all (a relay that was killed).
    no_answer: AtomicUsize,
    batches: AtomicUsize,
}

/// `clients` tasks post `batches` batches of 20 in all, spread over the
/// relays' ports. A batch that is not acknowledged is sent again (same
/// events) after 200 ms to the next relay, as the SDK would.
fn load(ports: Vec<u16>, clients: usize, batches: usize) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let state: Arc<Load> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks = (0..clients)
        .map(|c| {
            let (state, next, ports) = (state.clone(), next.clone(), ports.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut target = c;
                while next.fetch_add(1, Ordering::Relaxed) < batches {
                    let events: Vec<_> = (0..20).map(|i| nps(i % 11)).collect();
                    let ids: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
                    let body = serde_json::to_vec(&batch(events)).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        assert!(Instant::now() < deadline, "a batch was not acknowledged within 60 s");
                        let relay = target % ports.len();
                        target += 1;
                        let url = format!("http://127.0.0.1:{}/v1/batch", ports[relay]);
                        match http.post(&url).body(body.clone()).send().await {
                            Ok(r) if r.status() == 202 => {
                                let mut acked = state.acked.lock().unwrap();
                                for id in &ids {
                                    acked.entry(id.clone()).or_insert(relay);
                                }
                                state.batches.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(r) if r.status() == 503 => {
                                let retry_after =
                                    r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                                let answer: serde_json::Value =
                                    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                                assert!(
                                    retry_after.is_some_and(|v| v.parse::<u64>().unwrap() >= 1),
                                    "503 without Retry-After"
                                );
                                assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
                                assert!(answer["error"]["message"].is_string(), "{answer}");
                                state.unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => panic!("unexpected {}: {:?}", r.status(), r.text().await),
                            Err(_) => {
                                state.no_answer.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    (state, tasks)
}

/// Waits until every acknowledged event has reached the receiver.
async fn all_delivered(load: &Load, seen: &Mutex<Seen>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            load.acked.lock().unwrap().keys().filter(|id| !seen.per_event.contains_key(*id)).count()
        };
        if missing == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{missing} acknowledged events never delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no delivery is pending in the database, and returns the stored counts per status.
fn settled(db: &TestDb, within: Duration) -> HashMap<String, i64> {
    let deadline = Instant::now() + within;
    loop {
        let counts: HashMap<String, i64> = db
            .query("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].as_deref().unwrap().parse().unwrap()))
            .collect();
        if !counts.contains_key("pending") {
            return counts;
        }
        assert!(Instant::now() < deadline, "deliveries still pending: {counts:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(what: &str, load: &Load, seen: &Mutex<Seen>) -> usize {
    let seen = seen.lock().unwrap();
    let duplicates: usize = seen.ok_per_event.values().map(|n| n - 1).sum();
    eprintln!(
        "{what}: {} events acknowledged in {} batches, {} requests at the receiver, {} duplicate deliveries (a second 200 for one event), {} overlapping attempts, {} answers 503, {} requests without answer",
        load.acked.lock().unwrap().len(),
        load.batches.load(Ordering::Relaxed),
        seen.requests,
        duplicates,
        seen.overlaps,
        load.unavailable.load(Ordering::Relaxed),
        load.no_answer.load(Ordering::Relaxed),
    );
    assert_eq!(seen.overlaps, 0, "two relays attempted the same delivery at once");
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_deliver_every_acknowledged_event_once_at_a_time() {
    if !pg_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (hook_url, seen, _rx) = receiver().await;
    let (db, config) = setup(&hook_url);
    let relays: Vec<Relay> =
        (0..3).map(|i| Relay::spawn(&config, &db.dir.path().join(format!("relay{i}.log")))).collect();
    for r in &relays {
        r.wait_ready().await;
    }
    let (state, clients) = load(relays.iter().map(|r| r.port).collect(), 6, 300);
    for c in clients {
        c.await.unwrap();
    }
    all_delivered(&state, &seen, Duration::from_secs(60)).await;
    let counts = settled(&db, Duration::from_secs(30));
    report("three relays", &state, &seen);
    assert_eq!(counts.get("delivered"), Some(&6000), "{counts:?}");
    // Every relay took part in ingest and in delivery.
    let owners = db.query("SELECT COUNT(DISTINCT lease_owner) FROM deliveries");
    assert_eq!(owners[0][0].as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_of_three_and_the_others_finish_its_deliveries_after_the_lease() {
    if !pg_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (hook_url, seen, _rx) = receiver().await;
    let (db, config) = setup(&hook_url);
    let mut relays: Vec<Relay> =
        (0..3).map(|i| Relay::spawn(&config, &db.dir.path().join(format!("relay{i}.log")))).collect();
    for r in &relays {
        r.wait_ready().await;
    }
    let victim_pid = relays[0].child.id();
    let (state, clients) = load(relays.iter().map(|r| r.port).collect(), 6, 400);
    // Kill relay 0 once it has acknowledged a fair share and deliveries are under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.acked.lock().unwrap().values().filter(|r| **r == 0).count() < 1500
        || seen.lock().unwrap().requests < 500
    {
        assert!(Instant::now() < deadline, "load did not build up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relays[0].child.kill().unwrap(); // SIGKILL
    relays[0].child.wait().unwrap();
    let killed_at = Instant::now();
    for c in clients {
        c.await.unwrap();
    }
    all_delivered(&state, &seen, Duration::from_secs(90)).await;
    settled(&db, Duration::from_secs(30));
    let duplicates = report("SIGKILL one of three", &state, &seen);
    // What relay 0 acknowledged but had not delivered when it died (queued,
    // or in flight and cut off) was delivered by the others, after its lease ran out.
    let (late, earliest) = {
        let seen = seen.lock().unwrap();
        let late: Vec<Instant> = state
            .acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| **r == 0)
            .filter_map(|(id, _)| seen.ok_at.get(id).copied().filter(|t| *t > killed_at))
            .collect();
        (late.len(), late.iter().min().copied())
    };
    eprintln!(
        "SIGKILL one of three: {late} of the victim's events delivered only after the kill, the first {:?} after it, {duplicates} duplicates",
        earliest.map(|t| t - killed_at)
    );
    let victim_left = db.query(&format!(
        "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND lease_owner LIKE '%-{victim_pid}-%'"
    ));
    assert_eq!(victim_left[0][0].as_deref(), Some("0"));
    assert!(late > 0, "the victim had nothing left in flight: the test did not test a takeover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_postgres_relays_answer_503_then_resume_by_themselves() {
    if !pg_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (hook_url, seen, _rx) = receiver().await;
    let (db, config) = setup(&hook_url);
    let relays: Vec<Relay> =
        (0..3).map(|i| Relay::spawn(&config, &db.dir.path().join(format!("relay{i}.log")))).collect();
    for r in &relays {
        r.wait_ready().await;
    }
    let (state, clients) = load(relays.iter().map(|r| r.port).collect(), 6, 400);
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.batches.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "load did not build up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Cut: no new connections to this test's database, and the relays' open ones terminated.
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let admin = format!("{}/test", pg_server());
    let cut = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false");
    pg(admin.clone(), move |c| c.batch_execute(&cut)).unwrap();
    let cut_at = Instant::now();
    // Terminate until none is left: a connection that was being set up when
    // connections were disallowed can still appear after the first round.
    let terminate = format!(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    let mut quiet_rounds = 0;
    while quiet_rounds < 3 {
        let sql = terminate.clone();
        let n: i64 = pg(admin.clone(), move |c| c.query_one(&sql, &[]).map(|r| r.get(0))).unwrap();
        quiet_rounds = if n == 0 { quiet_rounds + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restored = Arc::new(AtomicBool::new(false));
    // Restore even if an assertion below fails, so the database can be dropped.
    struct Restore(String, String, Arc<AtomicBool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if !self.2.load(Ordering::SeqCst) {
                let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.1);
                let _ = pg(self.0.clone(), move |c| c.batch_execute(&sql));
            }
        }
    }
    let _restore = Restore(admin.clone(), name.clone(), restored.clone());
    // While it is away: /readyz fails on every relay and ingest answers 503.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut down = 0;
        for r in &relays {
            down += usize::from(!r.ready().await);
        }
        if down == 3 && state.unavailable.load(Ordering::Relaxed) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "relays did not notice the database was gone ({down} of 3 not ready)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Attempts may start while the last renewed lease still covers them
    // (until 3 s lease - 1 s timeout - 0.3 s margin after the cut) and last up
    // to the 1 s timeout; after that nothing may reach the receiver.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(cut_at.elapsed())).await;
    let before = seen.lock().unwrap().requests;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = seen.lock().unwrap().requests;
    assert_eq!(after - before, 0, "deliveries did not pause while the leases could not be renewed");
    // Back: everything resumes without a restart.
    let sql = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
    pg(admin, move |c| c.batch_execute(&sql)).unwrap();
    restored.store(true, Ordering::SeqCst);
    let down_for = cut_at.elapsed();
    for c in clients {
        c.await.unwrap();
    }
    for r in &relays {
        r.wait_ready().await;
    }
    all_delivered(&state, &seen, Duration::from_secs(90)).await;
    settled(&db, Duration::from_secs(30));
    report(&format!("cut off for {down_for:?}"), &state, &seen);
    assert!(state.unavailable.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn unreachable_or_unmigrated_postgres_at_start_up_is_a_clear_error_and_a_failing_exit() {
    if !pg_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let config = db.dir.path().join("relay.toml");
    let serve = |storage: &str, wait: &str| {
        std::fs::write(&config, format!("storage = \"{storage}\"\n[limits]\nstorage_wait = \"{wait}\"\n")).unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("CUECAST_LISTEN", format!("127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
    };
    let closed = format!("postgres://root:hunter2@127.0.0.1:{}/nowhere", free_port());
    let (ok, stderr, took) = serve(&closed, "0s");
    assert!(!ok);
    assert!(stderr.contains("cannot reach PostgreSQL at postgres://root:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password never reaches the log: {stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Asked to wait, it keeps trying for that long before giving up.
    let (ok, _, took) = serve(&closed, "2s");
    assert!(!ok && took >= Duration::from_secs(2), "{took:?}");
    // Reachable but never migrated: the error says what to run.
    let (ok, stderr, _) = serve(&db.url, "0s");
    assert!(!ok && stderr.contains("cuecast-relay migrate"), "{stderr}");
}

/// A webhook disabled by a 410 at one relay is disabled at the others
/// within a sweep: their new events for it are dead-lettered, not sent.
#[tokio::test]
async fn a_webhook_disabled_at_one_relay_is_disabled_at_all_within_a_sweep() {
    if !pg_available() {
        return;
    }
    let receiver = Receiver::start(|_, n| if n == 0 { Reply::status(410) } else { Reply::ok() }).await;
    let toml = format!(
        "[limits]\nsweep_interval = \"200ms\"\nshutdown_grace = \"200ms\"\n{SOURCES}{}",
        hook("gone", &receiver.url("/gone"), "")
    );
    let db = Arc::new(TestDb::new(Backend::Postgres));
    let a = TestRelay::start_in(db.clone(), &toml).await;
    let b = TestRelay::start_in(db.clone(), &toml).await;
    assert_eq!(a.post(&batch(vec![nps(1)])).await.0, 202);
    receiver.wait_for("/gone", 1, Duration::from_secs(10)).await;
    eventually("the 410 to be stored", Duration::from_secs(10), || {
        !db.query("SELECT webhook_id FROM webhook_state").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.post(&batch(vec![nps(2)])).await.0, 202);
    eventually("b's delivery to be dead-lettered", Duration::from_secs(10), || {
        db.deliveries().iter().filter(|d| d.2 == "dead").count() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.on("/gone").len(), 1, "nothing more was sent to the disabled webhook");
    a.stop().await;
    b.stop().await;
}
