//! Operating the relay binary: `/metrics` counts what happened, JSON logs
//! carry request ids, and no secret or token ever reaches the logs, even at
//! debug level with the admin API, signing, rotation and custom headers in use.

#[macro_use]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "adm-tok-9d1e77c3";
const HEADER_TOKEN: &str = "hdr-cred-51f0aa2b";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn admin(base: &str, method: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{method} {path}: {}", resp.status());
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// The value of one sample line of the text exposition.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name_and_labels} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_logs_are_json_with_request_ids_and_no_secrets() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let file_secret = cuecast_relay::signing::Secret::generate_text([7; 24]);
    let port = free_port();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstorage = \"sqlite://{}\"\n[admin]\ntoken = \"{TOKEN}\"\n{FAST_LIMITS}{SOURCES}{}",
            dir.path().join("relay.db").display(),
            hook(
                "file",
                &receiver.url("/file"),
                &format!("secret = \"{file_secret}\"\nheaders = {{ Authorization = \"Bearer {HEADER_TOKEN}\" }}")
            ),
        ),
    )
    .unwrap();
    let log = dir.path().join("relay.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually_async(&client, &format!("{base}/readyz")).await;

    // Secrets in play: the file's, one given to the API, one the API generates by rotation.
    let api_secret = cuecast_relay::signing::Secret::generate_text([9; 24]);
    admin(
        &base,
        "POST",
        "/admin/v1/webhooks",
        json!({
        "id": "api", "events": ["survey.*"], "url": receiver.url("/api"), "secret": api_secret,
        "headers": {"X-Api-Key": HEADER_TOKEN}}),
    )
    .await;
    let rotated = admin(&base, "POST", "/admin/v1/webhooks/api/rotate-secret", json!({})).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    admin(&base, "POST", "/admin/v1/webhooks/api/preview", json!({})).await;

    let sent = client
        .post(format!("{base}/v1/batch"))
        .header("x-request-id", "req-from-the-test")
        .body(serde_json::to_vec(&batch(vec![nps(3), nps(9)])).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    assert_eq!(sent.headers()["x-request-id"], "req-from-the-test", "the caller's request id is kept");
    let bad = client.post(format!("{base}/v1/batch")).body("not json").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(!bad.headers()["x-request-id"].is_empty(), "an id is made when none is given");
    receiver.wait_for("/file", 2, Duration::from_secs(10)).await;
    receiver.wait_for("/api", 2, Duration::from_secs(10)).await;

    // Results are stored (and counted) just after the receiver answers.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.contains("cuecast_deliveries{status=\"delivered\"} 4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&metrics, "cuecast_events_accepted_total"), 2.0);
    assert_eq!(sample(&metrics, "cuecast_batches_rejected_total{reason=\"invalid_json\"}"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "cuecast_attempts_total{webhook=\"file\",outcome=\"delivered\"}"), 2.0);
    assert_eq!(sample(&metrics, "cuecast_event_to_webhook_seconds_count{webhook=\"api\"}"), 2.0);
    assert_eq!(sample(&metrics, "cuecast_deliveries{status=\"delivered\"}"), 4.0);
    assert_eq!(sample(&metrics, "cuecast_oldest_pending_seconds"), 0.0);
    assert!(sample(&metrics, "cuecast_ingest_bytes_total") > 300.0);

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.lines().count() > 20, "debug logs were written:\n{logs}");
    for line in logs.lines() {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed["level"].is_string() && parsed["timestamp"].is_string(), "{line}");
    }
    assert!(
        logs.lines().any(|l| l.contains("\"request_id\":\"req-from-the-test\"")),
        "the request id is on the request's log lines"
    );
    for (what, secret) in [
        ("admin token", TOKEN),
        ("file secret", file_secret.as_str()),
        ("API secret", api_secret.as_str()),
        ("rotated secret", rotated.as_str()),
        ("configured header credential", HEADER_TOKEN),
    ] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!logs.contains(key), "the {what} is in the logs");
    }
}

async fn eventually_async(client: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if client.get(url).send().await.map(|r| r.status() == 200).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never answered 200");
}
