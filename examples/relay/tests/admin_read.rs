//! The admin API's reads and replays, through real HTTP to a real relay on
//! both backends: events go in through `/v1/batch`, deliveries succeed, fail
//! and die against a real loopback receiver, and then the lists, filters,
//! pages, details, stats and replays are checked against what happened.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "adm1n-t0ken";

/// A client of the relay's admin API.
struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    fn new(relay: &TestRelay) -> Admin {
        Admin { client: reqwest::Client::new(), base: format!("{}/admin/v1", relay.url) }
    }

    async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        Admin::answer(self.client.get(format!("{}{path}", self.base)).bearer_auth(TOKEN)).await
    }

    /// A 200 answer's body.
    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string());
        Admin::answer(req).await
    }

    /// Every item of a list, following `next` with pages of `limit`; checks
    /// that no item comes twice.
    async fn all(&self, path: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (mut items, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
                None => format!("{path}{sep}limit={limit}"),
            };
            let page = self.ok(&url).await;
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit);
            items.extend(got.iter().cloned());
            match page["next"].as_str() {
                Some(next) => {
                    assert_eq!(got.len(), limit, "only a full page has a next one");
                    cursor = Some(url::form_urlencoded::byte_serialize(next.as_bytes()).collect());
                }
                None => break,
            }
        }
        let ids: HashSet<String> = items.iter().map(|i| i["id"].to_string()).collect();
        assert_eq!(ids.len(), items.len(), "an item came twice across the pages of {path}");
        items
    }

    /// The `fields` of a 400 answer.
    async fn invalid(&self, answer: (u16, Value)) -> Vec<String> {
        let (status, body) = answer;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid")), "{body}");
        body["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap().to_string()).collect()
    }
}

fn ids(items: &[Value]) -> HashSet<String> {
    items.iter().map(|i| i["id"].as_str().map(str::to_string).unwrap_or_else(|| i["id"].to_string())).collect()
}

fn named(name: &str, user: &str) -> Value {
    let mut e = event(name, json!({"n": 1}));
    e["userId"] = json!(user);
    e
}

fn config(receiver: &Receiver) -> String {
    format!(
        r#"[admin]
token = "{TOKEN}"
[limits]
shutdown_grace = "200ms"
sweep_interval = "100ms"
{SOURCES}
[[webhook]]
id = "ok"
events = ["*"]
url = "{ok}"
[[webhook]]
id = "bad"
events = ["survey.submitted"]
url = "{bad}"
[[webhook]]
id = "down"
events = ["report.exported"]
url = "{down}"
retry = ["0s", "10ms"]
"#,
        ok = receiver.url("/ok"),
        bad = receiver.url("/bad"),
        down = receiver.url("/down"),
    )
}

both_backends! {
    async fn lists_filter_page_and_show_what_was_delivered_and_replay_redelivers(b) {
        // "/ok" answers 200 after 30 ms, "/bad" 400 (failed for good), "/down"
        // 500 (dead after two attempts) until it is switched back up.
        let up = Arc::new(AtomicBool::new(false));
        let up2 = up.clone();
        let receiver = Receiver::start(move |r, _| match r.path() {
            "/ok" => Reply { delay: Duration::from_millis(30), ..Reply::ok() },
            "/down" if up2.load(Ordering::SeqCst) => Reply::ok(),
            "/down" => Reply::status(500),
            _ => Reply::status(400),
        })
        .await;
        let relay = TestRelay::start(b, &config(&receiver)).await;
        let admin = Admin::new(&relay);

        // 12 surveys (ok + bad), 10 reports (ok + down), 8 page views (ok);
        // several per batch, so some share a received_at and pages must break ties.
        let mut sent = Vec::new();
        for i in 0..6 {
            let user = if i % 2 == 0 { "user-1" } else { "user-2" };
            let events = vec![nps(i as u8), nps(9), named("report.exported", user), named("page.viewed", "user-3")];
            sent.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
            assert_eq!(relay.post(&batch(events)).await.0, 202);
        }
        let events = (0..4).map(|_| named("report.exported", "user-1")).chain((0..2).map(|_| named("page.viewed", "user-3")));
        let events: Vec<Value> = events.collect();
        sent.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        assert_eq!(relay.post(&batch(events)).await.0, 202);
        relay.settle(30 + 12 + 10, Duration::from_secs(20)).await;

        // The token guards every route.
        let client = reqwest::Client::new();
        for path in ["/events", "/deliveries", "/stats", "/event-names"] {
            let url = format!("{}{path}", admin.base);
            assert_eq!(client.get(&url).send().await.unwrap().status(), 401, "{path}");
            assert_eq!(client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401, "{path}");
        }
        let (status, body) = Admin::answer(client.post(format!("{}/deliveries/1/replay", admin.base))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));

        // Events: every one exactly once across pages of 7, newest first.
        let events = admin.all("/events", 7).await;
        assert_eq!(ids(&events), sent.iter().cloned().collect::<HashSet<_>>());
        let keys: Vec<(i64, String)> =
            events.iter().map(|e| (e["received_at"].as_i64().unwrap(), e["id"].as_str().unwrap().into())).collect();
        assert!(keys.windows(2).all(|w| w[0] > w[1]), "not newest first: {keys:?}");
        let one = &events.iter().find(|e| e["name"] == "survey.submitted").unwrap();
        assert_eq!((one["user_id"].as_str(), one["anonymous_id"].as_str()), (Some("user-42"), Some("anon-1")));
        assert_eq!(one["timestamp"], "2026-12-04T15:16:52.001Z");
        assert_eq!(one["properties"]["surveyId"], "nps-q3");
        // Filters, also across pages.
        let reports = admin.all("/events?name=report.exported", 3).await;
        assert_eq!(reports.len(), 10);
        assert!(reports.iter().all(|e| e["name"] == "report.exported"));
        let user1 = admin.all("/events?user_id=user-1", 2).await;
        assert_eq!(user1.len(), 3 + 4);
        assert!(user1.iter().all(|e| e["user_id"] == "user-1"));
        assert_eq!(admin.all("/events?name=page.viewed&user_id=user-3", 50).await.len(), 8);
        let (newest, oldest) = (keys[0].0, keys[keys.len() - 1].0);
        assert_eq!(admin.all(&format!("/events?since={oldest}&until={newest}"), 4).await.len(), 30);
        assert!(admin.all(&format!("/events?since={}", newest + 1), 4).await.is_empty());
        assert!(admin.all(&format!("/events?until={}", oldest - 1), 4).await.is_empty());
        // Bad filters name their field.
        assert_eq!(admin.invalid(admin.get("/events?since=5&until=4").await).await, ["since"]);
        assert_eq!(admin.invalid(admin.get("/events?until=yesterday").await).await, ["until"]);
        assert_eq!(admin.invalid(admin.get("/events?cursor=bm9wZQ").await).await, ["cursor"]);
        assert_eq!(admin.invalid(admin.get("/events?limit=many").await).await, ["limit"]);

        // One event, with the deliveries it created.
        let report = &reports[0];
        let id = report["id"].as_str().unwrap();
        let detail = admin.ok(&format!("/events/{id}")).await;
        assert_eq!((detail["event"]["id"].as_str(), detail["event"]["event"].as_str()), (Some(id), Some("report.exported")));
        assert_eq!(detail["received_at"], report["received_at"]);
        let mut hooks: Vec<_> = detail["deliveries"].as_array().unwrap().iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
        hooks.sort();
        assert_eq!(hooks, ["down", "ok"]);
        let (status, body) = admin.get("/events/no-such-event").await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

        // Names: the built-in kinds first, then the others seen, each once.
        let names = admin.ok("/event-names").await["names"].clone();
        let names: Vec<&str> = names.as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(&names[..5], cuecast::events::BUILT_IN);
        assert_eq!(&names[5..], ["page.viewed", "report.exported"]);

        // Deliveries: all 52 once across pages, newest first.
        let all = admin.all("/deliveries", 5).await;
        assert_eq!(all.len(), 52);
        let numbers: Vec<i64> = all.iter().map(|d| d["id"].as_i64().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[0] > w[1]));
        let dead = admin.all("/deliveries?webhook=down&status=dead", 4).await;
        assert_eq!(dead.len(), 10);
        for d in &dead {
            assert_eq!((d["event"].as_str(), d["attempts"].as_i64()), (Some("report.exported"), Some(2)), "{d}");
            assert_eq!(d["last_error"], "HTTP 500; dead-lettered after 2 attempts");
            assert!(d["next_attempt_at"].is_null() && d["msg_id"].as_str().unwrap().starts_with("msg_"));
        }
        let failed = admin.all("/deliveries?status=failed", 50).await;
        assert_eq!(failed.len(), 12);
        assert!(failed.iter().all(|d| d["webhook_id"] == "bad" && d["last_error"] == "HTTP 400: not retried"));
        assert_eq!(admin.all("/deliveries?webhook=ok", 9).await.len(), 30);
        assert!(admin.all("/deliveries?status=pending", 9).await.is_empty());
        let of_event = admin.all(&format!("/deliveries?event_id={id}"), 50).await;
        assert_eq!(ids(&of_event), ids(detail["deliveries"].as_array().unwrap()));
        assert_eq!(admin.invalid(admin.get("/deliveries?status=lost").await).await, ["status"]);
        assert_eq!(admin.invalid(admin.get("/deliveries?cursor=abc&status=x").await).await, ["status", "cursor"]);

        // One delivery with its attempts.
        let dead_id = dead[0]["id"].as_i64().unwrap();
        let one = admin.ok(&format!("/deliveries/{dead_id}")).await;
        assert_eq!(one["delivery"]["status"], "dead");
        let attempts = one["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2);
        assert!(attempts.iter().all(|a| a["status"] == 500 && a["duration_ms"].as_i64().unwrap() >= 0));
        assert!(attempts[0]["at"].as_i64() <= attempts[1]["at"].as_i64());
        for path in ["/deliveries/987654321", "/deliveries/nope"] {
            assert_eq!(admin.get(path).await.0, 404, "{path}");
        }

        // Stats: what happened, in both windows (everything is recent).
        let stats = admin.ok("/stats").await;
        let hook = |id: &str| stats["webhooks"].as_array().unwrap().iter().find(|w| w["id"] == id).unwrap().clone();
        for window in ["hour", "day"] {
            let (ok, bad, down) = (&hook("ok")[window], &hook("bad")[window], &hook("down")[window]);
            assert_eq!((ok["delivered"].as_i64(), ok["failed"].as_i64(), ok["dead"].as_i64()), (Some(30), Some(0), Some(0)));
            assert_eq!((bad["failed"].as_i64(), down["dead"].as_i64(), down["delivered"].as_i64()), (Some(12), Some(10), Some(0)));
            // "/ok" takes 30 ms to answer; loopback adds little.
            let (p50, p99) = (ok["p50_ms"].as_i64().unwrap(), ok["p99_ms"].as_i64().unwrap());
            assert!((30..2000).contains(&p50) && p50 <= p99, "{ok}");
            assert!(down["p50_ms"].as_i64().unwrap() < 30, "{down}");
        }

        // Replay one dead letter: the receiver is up now and gets it again.
        up.store(true, Ordering::SeqCst);
        assert_eq!(admin.post(&format!("/deliveries/{dead_id}/replay"), json!({})).await, (200, json!({"replayed": 1})));
        receiver.wait_for("/down", 21, Duration::from_secs(10)).await;
        eventually("the replayed delivery to be delivered", Duration::from_secs(10), || {
            relay.deliveries().iter().any(|d| d.0 == dead_id && d.2 == "delivered" && d.3 == 1)
        })
        .await;
        assert_eq!(admin.ok(&format!("/deliveries/{dead_id}")).await["attempts"].as_array().unwrap().len(), 3);
        let (status, body) = admin.post(&format!("/deliveries/{dead_id}/replay"), json!({})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "delivered: {body}");
        assert_eq!(admin.post("/deliveries/987654321/replay", json!({})).await.0, 404);

        // Replay by filter: the nine other dead letters, then the failed ones
        // (which fail again, since "/bad" still answers 400).
        for (body, field) in [
            (json!({"webhook": "down"}), "status"),
            (json!({"status": "pending"}), "status"),
            (json!({"status": "dead", "since": 9, "until": 1}), "since"),
            (json!({"status": 1}), "status"),
            (json!({"status": "dead", "webhok": "down"}), "webhok"),
        ] {
            assert_eq!(admin.invalid(admin.post("/deliveries/replay", body).await).await, [field]);
        }
        assert_eq!(admin.post("/deliveries/replay", json!({"status": "dead", "webhook": "ok"})).await.1, json!({"replayed": 0}));
        assert_eq!(admin.post("/deliveries/replay", json!({"status": "dead", "webhook": "down"})).await.1, json!({"replayed": 9}));
        receiver.wait_for("/down", 30, Duration::from_secs(10)).await;
        assert_eq!(admin.post("/deliveries/replay", json!({"status": "failed"})).await.1, json!({"replayed": 12}));
        receiver.wait_for("/bad", 24, Duration::from_secs(10)).await;
        relay.settle(52, Duration::from_secs(10)).await;
        assert_eq!(admin.all("/deliveries?webhook=down&status=delivered", 50).await.len(), 10);
        assert!(admin.all("/deliveries?status=dead", 50).await.is_empty());
        assert_eq!(admin.all("/deliveries?status=failed", 50).await.len(), 12);
        assert_eq!(receiver.on("/down").len(), 30, "each replayed delivery was sent once");
        let stats = admin.ok("/stats").await;
        let down = stats["webhooks"].as_array().unwrap().iter().find(|w| w["id"] == "down").unwrap().clone();
        assert_eq!((down["day"]["delivered"].as_i64(), down["day"]["dead"].as_i64()), (Some(10), Some(0)));

        // The OpenAPI document describes these routes.
        let api = client.get(format!("{}/openapi.json", relay.url)).send().await.unwrap().bytes().await.unwrap();
        let api: Value = serde_json::from_slice(&api).unwrap();
        for path in ["/events", "/events/{id}", "/event-names", "/deliveries", "/deliveries/{id}",
                     "/deliveries/{id}/replay", "/deliveries/replay", "/stats"] {
            assert!(api["paths"][format!("/admin/v1{path}")].is_object(), "{path} missing from /openapi.json");
        }
        relay.stop().await;
    }
}
