//! Crash safety: SIGKILL the relay binary in the middle of a load, start it
//! again on the same file, and every acknowledged event is delivered.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the relay if the test fails half-way, so no orphan keeps the port, the file or the output pipe.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &std::path::Path, port: u16) -> Relay {
    Relay(
        Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CUECAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "relay on {port} did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_event() {
    // The receiver counts deliveries per event id.
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let seen2 = seen.clone();
    let receiver = Receiver::start(move |r, _| {
        let id = r.json()["data"]["id"].as_str().unwrap().to_string();
        *seen2.lock().unwrap().entry(id).or_default() += 1;
        Reply::ok()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\nstorage = \"sqlite://{}\"\n[limits]\nkey_rate = \"100000/s\"\nip_rate = \"100000/s\"\n{SOURCES}{}",
            dir.path().join("relay.db").display(),
            hook("all", &receiver.url("/all"), ""),
        ),
    )
    .unwrap();

    let port = free_port();
    let mut child = spawn(&config, port);
    wait_ready(port).await;

    // Four clients post batches of 20 until the relay dies under them.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(0usize));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (acked, failed, killed) = (acked.clone(), failed.clone(), killed.clone());
        let url = format!("http://127.0.0.1:{port}/v1/batch");
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                let events: Vec<_> = (0..20).map(|i| nps(i % 11)).collect();
                let ids: Vec<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
                let body = serde_json::to_vec(&batch(events)).unwrap();
                match http.post(&url).body(body).send().await {
                    Ok(r) if r.status() == 202 => acked.lock().unwrap().extend(ids),
                    Ok(r) => panic!("unexpected {}: {:?}", r.status(), r.text().await),
                    Err(e) => {
                        assert!(
                            killed.load(std::sync::atomic::Ordering::SeqCst),
                            "request failed before the kill: {e}"
                        );
                        *failed.lock().unwrap() += 1;
                        return;
                    }
                }
            }
        }));
    }
    // Kill once a fair number of events is acknowledged and deliveries are under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 3000 || seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "load did not build up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    let delivered_before = seen.lock().unwrap().len();
    assert!(*failed.lock().unwrap() > 0, "the clients should have seen the relay die mid-load");

    // Restart on the same database (another port: the old one may linger).
    let port = free_port();
    let mut child = spawn(&config, port);
    wait_ready(port).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} of {} acknowledged events never delivered", acked.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} acknowledged, {} delivered before the kill, {} delivered in all, {} duplicate deliveries",
        acked.len(),
        delivered_before,
        seen.len(),
        duplicates
    );
    // Graceful stop on SIGTERM exits cleanly.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
