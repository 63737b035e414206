//! The admin API's webhooks and sources (`/admin/v1/webhooks`, `/sources`,
//! `/preview`) and `/openapi.json`, through real HTTP to a real relay on
//! both storage backends, delivering to a real loopback receiver.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;
use cuecast_relay::signing::{sign, Secret};
use serde_json::{json, Value};

const TOKEN: &str = "adm-token-7f3a";

fn admin() -> String {
    format!("[admin]\ntoken = \"{TOKEN}\"\n{FAST_LIMITS}{SOURCES}")
}

/// Sends an admin request; answers (status, JSON body or Null).
async fn call(relay: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(relay, Some(TOKEN), method, path, body).await
}

async fn call_as(relay: &str, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), format!("{relay}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(serde_json::to_vec(&b).unwrap());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn fields(answer: &Value) -> Vec<String> {
    answer["error"]["fields"]
        .as_array()
        .map(|a| a.iter().map(|f| f["field"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Whether `received` carries a valid signature by `secret` (one of possibly several).
fn signed_by(received: &Received, secret: &str) -> bool {
    let secret = Secret::parse(secret).unwrap();
    let (id, ts) = (received.header("webhook-id"), received.header("webhook-timestamp").parse::<i64>().unwrap());
    let expected = sign(&[secret], id, ts, &received.body);
    received.header("webhook-signature").split(' ').any(|s| s == expected)
}

both_backends! {
    async fn a_webhook_made_through_the_api_is_validated_delivered_edited_rotated_and_deleted(b) {
        let receiver = Receiver::ok().await;
        let relay = TestRelay::start(b, &admin()).await;
        let url = relay.url.clone();

        // The token is required, and compared as a whole.
        assert_eq!(call_as(&url, None, "GET", "/admin/v1/webhooks", None).await.0, 401);
        assert_eq!(call_as(&url, Some("adm-token-7f3b"), "GET", "/admin/v1/webhooks", None).await.0, 401);

        // Every problem is reported, each with its field; nothing is stored.
        let (status, answer) = call(&url, "POST", "/admin/v1/webhooks", Some(json!({
            "id": "bad id", "events": [], "url": "ftp://x", "retry": ["0s", "soon"], "method": "PUT",
            "headers": {"webhook-id": "x"}, "when": "properties.score <"
        }))).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid");
        assert_eq!(fields(&answer), ["id", "events", "method", "url", "headers.webhook-id", "retry[1]"], "{answer}");
        let (status, answer) = call(&url, "POST", "/admin/v1/webhooks", Some(json!({"id": "x", "events": ["*"]}))).await;
        assert_eq!((status, fields(&answer)), (400, vec!["url".to_string()]), "a missing key is named: {answer}");
        let (status, answer) = call(&url, "POST", "/admin/v1/webhooks", Some(json!({"id": "x", "events": ["*"], "url": "https://x.example", "urll": 1}))).await;
        assert_eq!((status, fields(&answer)), (400, vec!["urll".to_string()]), "an unknown key is named: {answer}");
        let (status, answer) = call(&url, "POST", "/admin/v1/webhooks", Some(json!({"id": "x", "events": ["*"], "url": "https://x.example", "when": "properties.score <"}))).await;
        assert_eq!((status, fields(&answer)), (400, vec!["when".to_string()]), "templates are compiled: {answer}");
        assert_eq!(call(&url, "GET", "/admin/v1/webhooks", None).await.1["items"], json!([]));

        // Create: the secret is shown once, and signs what is delivered.
        let spec = json!({"id": "crm", "events": ["survey.*"], "url": receiver.url("/crm"),
            "body": "{\"score\": {{ properties.score }}}", "retry": ["0s"]});
        let (status, created) = call(&url, "POST", "/admin/v1/webhooks", Some(spec.clone())).await;
        assert_eq!(status, 201, "{created}");
        let secret = created["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(created["webhook"]["origin"], "api");
        assert_eq!(call(&url, "POST", "/admin/v1/webhooks", Some(spec)).await.0, 409);
        let (_, list) = call(&url, "GET", "/admin/v1/webhooks", None).await;
        assert!(!list.to_string().contains(&secret), "a listed webhook never shows its secret: {list}");
        assert_eq!(list["items"][0]["secrets"][0]["hint"].as_str().unwrap().len(), "whsec_Ab3d".len() + "…".len());

        relay.post(&batch(vec![nps(4)])).await;
        let got = receiver.wait_for("/crm", 1, Duration::from_secs(10)).await;
        assert_eq!(got[0].json(), json!({"score": 4}));
        assert!(signed_by(&got[0], &secret), "signed with the secret the API gave");

        // Edit: the next event goes where the new definition says.
        let (status, edited) = call(&url, "PUT", "/admin/v1/webhooks/crm", Some(json!({
            "events": ["survey.*"], "url": receiver.url("/crm2"), "retry": ["0s"]}))).await;
        assert_eq!(status, 200, "{edited}");
        assert_eq!(call(&url, "PUT", "/admin/v1/webhooks/crm", Some(json!({"id": "other", "events": ["*"], "url": receiver.url("/x")}))).await.0, 400);
        assert_eq!(call(&url, "PUT", "/admin/v1/webhooks/nope", Some(json!({"events": ["*"], "url": receiver.url("/x")}))).await.0, 404);

        // Rotate: old and new both sign during the grace period.
        let (status, rotated) = call(&url, "POST", "/admin/v1/webhooks/crm/rotate-secret", Some(json!({"grace": "1h"}))).await;
        assert_eq!(status, 200, "{rotated}");
        let new_secret = rotated["secret"].as_str().unwrap().to_string();
        assert!(rotated["previous_expires_at"].as_i64().unwrap() > cuecast_relay::storage::now_ms() + 3_500_000);
        assert_eq!(call(&url, "POST", "/admin/v1/webhooks/crm/rotate-secret", Some(json!({"grace": "soon"}))).await.1["error"]["fields"][0]["field"], "grace");
        relay.post(&batch(vec![nps(5)])).await;
        let got = receiver.wait_for("/crm2", 1, Duration::from_secs(10)).await;
        assert!(signed_by(&got[0], &secret) && signed_by(&got[0], &new_secret), "{:?}", got[0].header("webhook-signature"));

        // Preview renders without sending; the unsaved form previews too.
        let (status, preview) = call(&url, "POST", "/admin/v1/webhooks/crm/preview", Some(json!({"event": nps(9)}))).await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(preview["matches"], true);
        assert_eq!(preview["request"]["url"], receiver.url("/crm2"));
        assert_eq!(preview["request"]["method"], "POST");
        assert!(preview["request"]["headers"].as_array().unwrap().iter().any(|h| h[0] == "webhook-signature"));
        let (_, preview) = call(&url, "POST", "/admin/v1/preview", Some(json!({
            "webhook": {"id": "draft", "events": ["survey.submitted"], "when": "properties.score <= 6",
                        "url": receiver.url("/draft"), "body": "{\"s\": {{ properties.score }}}"},
            "event": nps(9)}))).await;
        assert_eq!((preview["matches"].clone(), preview["request"]["body"].clone()), (json!(false), json!("{\"s\": 9}")), "{preview}");
        let (status, answer) = call(&url, "POST", "/admin/v1/preview", Some(json!({
            "webhook": {"id": "draft", "events": ["*"], "url": receiver.url("/d"), "body": "{{ oops"}}))).await;
        assert_eq!((status, fields(&answer)), (400, vec!["body".to_string()]), "{answer}");
        let (status, answer) = call(&url, "POST", "/admin/v1/webhooks/crm/preview", Some(json!({"event_id": "no-such-event"}))).await;
        assert_eq!((status, fields(&answer)), (400, vec!["event_id".to_string()]), "{answer}");
        assert_eq!(receiver.on("/draft").len(), 0, "a preview sends nothing");

        // Test: one real request now, its answer returned.
        let (status, tested) = call(&url, "POST", "/admin/v1/webhooks/crm/test", None).await;
        assert_eq!((status, tested["status"].clone()), (200, json!(200)), "{tested}");
        receiver.wait_for("/crm2", 2, Duration::from_secs(10)).await;

        // Disable: new deliveries are dead letters; enable: delivered again.
        assert_eq!(call(&url, "POST", "/admin/v1/webhooks/crm/disable", Some(json!({"reason": "maintenance"}))).await.1["disabled"], "maintenance");
        relay.post(&batch(vec![nps(6)])).await;
        relay.settle(3, Duration::from_secs(10)).await;
        assert!(relay.deliveries().iter().any(|d| d.2 == "dead"), "{:?}", relay.deliveries());
        assert_eq!(call(&url, "POST", "/admin/v1/webhooks/crm/enable", None).await.1["disabled"], Value::Null);
        relay.post(&batch(vec![nps(7)])).await;
        receiver.wait_for("/crm2", 3, Duration::from_secs(10)).await;

        // It survives a restart (it lives in storage, not in the file).
        let db = relay.db.clone();
        relay.stop().await;
        let relay = TestRelay::start_in(db, &admin()).await;
        let url = relay.url.clone();
        assert_eq!(call(&url, "GET", "/admin/v1/webhooks/crm", None).await.1["url"], receiver.url("/crm2"));
        relay.post(&batch(vec![nps(8)])).await;
        receiver.wait_for("/crm2", 4, Duration::from_secs(10)).await;

        // Delete: no more deliveries, 404 after.
        assert_eq!(call(&url, "DELETE", "/admin/v1/webhooks/crm", None).await.0, 204);
        assert_eq!(call(&url, "DELETE", "/admin/v1/webhooks/crm", None).await.0, 404);
        assert_eq!(call(&url, "GET", "/admin/v1/webhooks/crm", None).await.0, 404);
        let before = relay.deliveries().len();
        relay.post(&batch(vec![nps(1)])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(relay.deliveries().len(), before, "a deleted webhook gets no deliveries");
        relay.stop().await;
    }
}

both_backends! {
    async fn a_file_webhook_changed_through_the_api_is_kept_and_check_config_tells(b) {
        let receiver = Receiver::ok().await;
        let toml = format!("{}{}", admin(), hook("file", &receiver.url("/from-file"), ""));
        let relay = TestRelay::start(b, &toml).await;
        let url = relay.url.clone();
        let (_, shown) = call(&url, "GET", "/admin/v1/webhooks/file", None).await;
        assert_eq!((shown["origin"].clone(), shown["edited"].clone()), (json!("config"), json!(false)), "{shown}");
        let (status, shown) = call(&url, "PUT", "/admin/v1/webhooks/file", Some(json!({"events": ["*"], "url": receiver.url("/from-api"), "timeout": "3s"}))).await;
        assert_eq!((status, shown["edited"].clone()), (200, json!(true)), "{shown}");
        let db = relay.db.clone();
        relay.stop().await;

        // Restarted with the same file: the API's definition stands.
        let relay = TestRelay::start_in(db.clone(), &toml).await;
        relay.post(&batch(vec![nps(3)])).await;
        receiver.wait_for("/from-api", 1, Duration::from_secs(10)).await;
        assert!(receiver.on("/from-file").is_empty());
        relay.stop().await;

        // check-config says what differs (SQLite here: the CLI reads the file's storage).
        if db.backend == Backend::Sqlite {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("relay.toml");
            std::fs::write(&path, format!("storage = \"{}\"\n{toml}", db.url)).unwrap();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
                .args(["check-config", "-c", path.to_str().unwrap()])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}");
            assert!(stdout.contains("webhook \"file\": changed through the admin API"), "{stdout}");
            assert!(stdout.contains("timeout: file (unset) ≠ stored \"3s\""), "{stdout}");
        }
    }
}

both_backends! {
    async fn sources_are_created_validated_and_revoked(b) {
        let relay = TestRelay::start(b, &admin()).await;
        let url = relay.url.clone();
        let (status, answer) = call(&url, "POST", "/admin/v1/sources", Some(json!({"origins": ["https://ok.example", "https://bad.example/path"]}))).await;
        assert_eq!((status, fields(&answer)), (400, vec!["origins[1]".to_string()]), "{answer}");
        let (status, source) = call(&url, "POST", "/admin/v1/sources", Some(json!({"origins": ["https://shop.example"]}))).await;
        assert_eq!(status, 201, "{source}");
        let key = source["write_key"].as_str().unwrap().to_string();
        assert!(key.starts_with("pk_"));
        assert_eq!(call(&url, "POST", "/admin/v1/sources", Some(json!({"write_key": key, "origins": ["*"]}))).await.0, 409);

        let send = |origin: &'static str| {
            let (url, key) = (relay.url.clone(), key.clone());
            async move {
                let body = serde_json::to_vec(&batch_with_key(&key, vec![nps(5)])).unwrap();
                post(&format!("{url}/v1/batch"), body, &[("origin", origin)]).await.0
            }
        };
        assert_eq!(send("https://shop.example").await, 202);
        assert_eq!(send("https://other.example").await, 403);
        let (status, _) = call(&url, "PUT", &format!("/admin/v1/sources/{key}"), Some(json!({"origins": ["https://other.example"]}))).await;
        assert_eq!(status, 200);
        assert_eq!(send("https://other.example").await, 202);
        assert_eq!(call(&url, "DELETE", &format!("/admin/v1/sources/{key}"), None).await.0, 204);
        assert_eq!(send("https://other.example").await, 401, "a revoked key is refused");
        let (_, list) = call(&url, "GET", "/admin/v1/sources", None).await;
        let revoked = list["items"].as_array().unwrap().iter().find(|s| s["write_key"] == key.as_str()).unwrap().clone();
        assert!(revoked["revoked_at"].is_i64(), "{revoked}");
        relay.stop().await;
    }
}

/// Issue 6: several relays on one PostgreSQL see a webhook created on any of them within seconds.
#[tokio::test]
async fn a_webhook_created_on_one_relay_is_used_by_the_others_within_seconds() {
    if !pg_available() {
        return;
    }
    let receiver = Receiver::ok().await;
    let db = std::sync::Arc::new(TestDb::new(Backend::Postgres));
    let a = TestRelay::start_in(db.clone(), &admin()).await;
    let b = TestRelay::start_in(db.clone(), &admin()).await;
    let spec = json!({"id": "shared", "events": ["*"], "url": receiver.url("/shared")});
    assert_eq!(call(&a.url, "POST", "/admin/v1/webhooks", Some(spec)).await.0, 201);
    let created = Instant::now();
    // Relay b picks it up at its next sweep (every 2 s by default).
    let mut seen = None;
    while created.elapsed() < Duration::from_secs(10) {
        let (status, _) = call(&b.url, "GET", "/admin/v1/webhooks/shared", None).await;
        if status == 200 {
            seen = Some(created.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.expect("relay b never saw the webhook");
    assert!(seen < Duration::from_secs(5), "took {seen:?}");
    b.post(&batch(vec![nps(2)])).await;
    receiver.wait_for("/shared", 1, Duration::from_secs(10)).await;
    eprintln!("# figure {{\"catalog_propagation_ms\": {}}}", seen.as_millis());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let relay = TestRelay::start(Backend::Sqlite, &format!("{FAST_LIMITS}{SOURCES}")).await;
    let (status, answer) = call_as(&relay.url, Some("anything"), "GET", "/admin/v1/webhooks", None).await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("admin API is off"));
    relay.stop().await;
}

/// `/openapi.json` is generated from the handlers; every path it lists is served.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let relay = TestRelay::start(Backend::Sqlite, &admin()).await;
    let (status, doc) = call(&relay.url, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/v1/batch",
        "/admin/v1/webhooks",
        "/admin/v1/webhooks/{id}/rotate-secret",
        "/admin/v1/preview",
        "/admin/v1/sources/{write_key}",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented: {:?}", paths.keys());
    }
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "nope").replace("{write_key}", "nope");
            let (status, body) = call(&relay.url, &method.to_uppercase(), &concrete, Some(json!({}))).await;
            // The router's own 404/405 have no JSON body; a handler's "not found" does.
            assert!(
                status != 405 && (status != 404 || body["error"]["code"] == "not_found"),
                "{method} {path}: {status} {body}"
            );
        }
    }
    relay.stop().await;
}
