//! The example configs under `configs/` and `demo.toml`: each one parses,
//! renders and delivers to a local receiver standing in for the real API.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use cuecast_relay::config::Config;
use serde_json::{json, Value};

/// Loads an example with its `*_URL` variables pointing at `receiver`,
/// loopback allowed, and storage in `dir`.
fn load(file: &str, receiver: &Receiver, dir: &Path) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("allow_cidrs = []", "allow_cidrs = [\"127.0.0.0/8\"]")
        .replace("127.0.0.1:8687", &receiver.addr.to_string());
    let storage = format!("sqlite://{}", dir.join("relay.db").display());
    let base = receiver.url("");
    let env = move |name: &str| -> Option<String> {
        match name {
            "CUECAST_STORAGE" => Some(storage.clone()),
            "SLACK_WEBHOOK_URL" => Some(format!("{base}/slack")),
            "MARKETING_API_URL" | "ZENDESK_URL" | "MAIL_API_URL" => Some(base.clone()),
            "SHEET_URL" => Some(format!("{base}/sheet")),
            "ANALYTICS_URL" => Some(format!("{base}/collect")),
            "SHEET_WEBHOOK_SECRET" | "ANALYTICS_WEBHOOK_SECRET" => {
                Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())
            }
            n if n.ends_with("_KEY") || n.ends_with("_AUTH") => Some("test-credential".into()),
            _ => None,
        }
    };
    Config::parse(&text, &env).unwrap_or_else(|e| panic!("{file}: {e:#?}"))
}

/// The golden batch plus two surveys: one asking for help, one NPS detractor.
fn traffic() -> Vec<Value> {
    let golden: Value = serde_json::from_slice(&std::fs::read(fixtures().join("batch.json")).unwrap()).unwrap();
    let help = event(
        "survey.submitted",
        json!({"surveyId": "billing", "answers": [{"questionId": "q1", "answer": "No"}], "needsHelp": true, "comment": "Can't \"export\""}),
    );
    vec![golden, batch(vec![help, nps(4)])]
}

async fn deliver(file: &str, path: &str, expected: usize) -> Vec<Received> {
    let receiver = Receiver::ok().await;
    let db = Arc::new(TestDb::new(Backend::Sqlite));
    let relay = TestRelay::with_config(db.clone(), load(file, &receiver, db.dir.path())).await;
    for body in traffic() {
        let (status, _, ack) = relay.post(&body).await;
        assert_eq!(status, 202, "{file}: {ack}");
    }
    let got = receiver.wait_for(path, expected, Duration::from_secs(10)).await;
    let settled = relay.settle(expected, Duration::from_secs(10)).await;
    assert!(settled.iter().all(|d| d.2 == "delivered"), "{file}: {settled:?}");
    assert_eq!(receiver.all().len(), expected, "{file}: {:#?}", receiver.all());
    relay.stop().await;
    got
}

#[tokio::test]
async fn slack_message_on_walkthrough_goal() {
    let got = deliver("configs/slack-walkthru-goal.toml", "/slack", 1).await;
    assert_eq!(
        got[0].json(),
        json!({"text": ":tada: user-42 reached the goal *invoice-sent* of walk-through `create-invoice` on /reports"})
    );
}

#[tokio::test]
async fn marketing_list_on_shoutout_click() {
    let got = deliver("configs/marketing-list-shoutout.toml", "/lists/abc123/members", 1).await;
    assert_eq!(got[0].header("authorization"), "Bearer test-credential");
    let body = got[0].json();
    assert_eq!(body["email_address"], "user-42");
    assert_eq!(body["tags"], json!(["shoutout-spring-promo"]));
}

#[tokio::test]
async fn zendesk_ticket_when_a_survey_asks_for_help() {
    let got = deliver("configs/zendesk-survey-help.toml", "/api/v2/tickets.json", 1).await;
    let ticket = &got[0].json()["ticket"];
    assert_eq!(ticket["subject"], "Help requested in survey billing");
    assert_eq!(ticket["comment"]["body"], "User user-42 asked for help: Can't \"export\" (page unknown)");
    assert_eq!(got[0].header("authorization"), "Basic test-credential");
}

#[tokio::test]
async fn spreadsheet_row_on_onboarding_task() {
    let got = deliver("configs/sheet-onboarding-task.toml", "/sheet", 1).await;
    assert_eq!(got[0].method, "GET");
    assert_eq!(
        got[0].target,
        "/sheet?user=user-42&task=connect-crm&checklist=getting-started&done=3&total=5&at=2026-12-04T15%3A16%3A54.001Z"
    );
    assert!(got[0].header("webhook-signature").starts_with("v1,"));
}

#[tokio::test]
async fn email_on_nps() {
    let got = deliver("configs/email-nps.toml", "/v3/mail/send", 2).await;
    let subjects: Vec<String> = got.iter().map(|r| r.json()["subject"].as_str().unwrap().to_string()).collect();
    assert!(subjects.contains(&"NPS 9 (promoter) from user-42".to_string()), "{subjects:?}");
    assert!(subjects.contains(&"NPS 4 (detractor) from user-42".to_string()), "{subjects:?}");
    assert_eq!(got[0].json()["personalizations"][0]["to"][0]["email"], "cx-team@example.com");
}

#[tokio::test]
async fn forward_every_event_to_analytics() {
    let got = deliver("configs/forward-all.toml", "/collect", 9).await;
    let mut types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), 6, "{types:?}");
    assert!(got.iter().all(|r| r.header("webhook-signature").starts_with("v1,")));
}

#[tokio::test]
async fn the_demo_config_delivers_to_the_local_receiver() {
    let receiver = Receiver::ok().await;
    let db = Arc::new(TestDb::new(Backend::Sqlite));
    let relay = TestRelay::with_config(db.clone(), load("demo.toml", &receiver, db.dir.path())).await;
    for body in traffic() {
        assert_eq!(relay.post(&body).await.0, 202);
    }
    receiver.wait_for("/all", 9, Duration::from_secs(10)).await;
    let slack = receiver.wait_for("/slack", 1, Duration::from_secs(10)).await;
    assert_eq!(slack[0].json()["text"], "NPS 4 from user-42: ok");
    let sheet = receiver.wait_for("/sheet", 1, Duration::from_secs(10)).await;
    assert_eq!(sheet[0].target, "/sheet?user=user-42&task=connect-crm");
    relay.stop().await;
}

#[test]
fn check_config_cli_reports_problems_with_lines_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"x\"\n[[webhook]]\nid = \"a\"\nevents = [\"*\"]\nurl = \"https://example.com\"\nrate_limit = \"fast\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("bad.toml:line 1: listen"), "{stdout}");
    assert!(stdout.contains("bad.toml:line 6: webhook \"a\": rate_limit"), "{stdout}");
    assert!(stdout.contains("2 problem(s)"), "{stdout}");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
        .args(["check-config", "--config"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // migrate creates the schema, and a second run has nothing to do.
    let migrating = dir.path().join("m.toml");
    std::fs::write(&migrating, format!("storage = \"sqlite://{}\"\n", dir.path().join("m/relay.db").display()))
        .unwrap();
    let v = cuecast_relay::storage::SCHEMA_VERSION;
    for expected in [format!("schema version 0 -> {v}"), format!("schema version {v} -> {v}")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["migrate", "--config"])
            .arg(&migrating)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(&expected), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay")).arg("gen-secret").output().unwrap();
    let secret = String::from_utf8(out.stdout).unwrap();
    assert!(cuecast_relay::signing::Secret::parse(secret.trim()).is_ok(), "{secret}");
    assert_eq!(secret.trim().len(), "whsec_".len() + 32, "24 bytes of base64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_cli_renders_delivers_and_prints_the_answer() {
    let receiver = Receiver::start(|_, _| Reply { body: "thanks".into(), ..Reply::ok() }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "storage = \"sqlite://{}\"\n{SOURCES}{}",
            dir.path().join("relay.db").display(),
            hook(
                "nps",
                &receiver.url("/nps"),
                "events = [\"survey.submitted\"]\nwhen = \"properties.kind == 'nps'\"\nbody = '''{\"score\": {{ properties.score }}}'''"
            )
            .replace("events = [\"*\"]\n", "")
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
        .args(["send-test", "--webhook", "nps", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("HTTP 200"), "{stdout}");
    assert!(stdout.contains("thanks"), "{stdout}");
    let got = receiver.on("/nps");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json(), json!({"score": 9}), "the NPS fixture was chosen because it passes `when`");
}
