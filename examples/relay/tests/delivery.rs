//! Delivery against real receivers on loopback: signatures, outcomes,
//! retries, dead letters, templates, the SSRF guard and isolation.

#[macro_use]
mod common;

use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";

/// A Standard Webhooks verifier written from the spec, independent of the
/// relay's signing code: decode each `v1,` signature and let HMAC compare.
fn verify(secret: &str, msg_id: &str, timestamp: &str, payload: &[u8], header: &str) -> bool {
    let key = BASE64.decode(secret.strip_prefix("whsec_").expect("whsec_ prefix")).expect("base64 key");
    let mut signed = Vec::new();
    signed.extend_from_slice(msg_id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(payload);
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|sig| {
        let Ok(raw) = BASE64.decode(sig) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(&signed);
        mac.verify_slice(&raw).is_ok()
    })
}

#[test]
fn the_test_verifier_accepts_the_published_vector_and_rejects_tampering() {
    let (id, ts, sig) =
        ("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert!(verify(SECRET, id, ts, br#"{"test": 2432232314}"#, sig));
    assert!(!verify(SECRET, id, ts, br#"{"test": 2432232315}"#, sig));
    assert!(!verify(SECRET, id, "1614265331", br#"{"test": 2432232314}"#, sig));
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

both_backends! {
    async fn post_and_get_are_signed_per_standard_webhooks_and_carry_the_standard_headers(b) {
        let receiver = Receiver::ok().await;
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}{}{}{}",
            hook(
                "post",
                &receiver.url("/post"),
                &format!("secret = \"{SECRET}\"\nheaders = {{ Authorization = \"Bearer t0k\" }}")
            ),
            hook("get", &receiver.url("/get?sheet=1"), &format!("method = \"GET\"\nsecret = \"{SECRET}\"")),
            hook("rotating", &receiver.url("/rotating"), &format!("secret = [\"{SECRET}\", \"{OLD_SECRET}\"]")),
            hook("typed", &receiver.url("/typed"), "headers = { Content-Type = \"application/cloudevents+json\" }"),
        ))
        .await;
        let (status, _, _) = relay.post(&batch(vec![nps(3)])).await;
        assert_eq!(status, 202);

        let post = receiver.wait_for("/post", 1, Duration::from_secs(10)).await.remove(0);
        assert_eq!(post.method, "POST");
        assert!(post.header("webhook-id").starts_with("msg_"));
        assert!((post.header("webhook-timestamp").parse::<i64>().unwrap() - now_secs()).abs() < 60);
        assert!(verify(
            SECRET,
            post.header("webhook-id"),
            post.header("webhook-timestamp"),
            &post.body,
            post.header("webhook-signature")
        ));
        assert!(!verify(
            OLD_SECRET,
            post.header("webhook-id"),
            post.header("webhook-timestamp"),
            &post.body,
            post.header("webhook-signature")
        ));
        assert_eq!(post.header("content-type"), "application/json");
        assert_eq!(post.header("user-agent"), format!("cuecast-relay/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(post.header("authorization"), "Bearer t0k");
        // The default body.
        let body = post.json();
        assert_eq!(body["type"], "survey.submitted");
        assert_eq!(body["timestamp"], "2026-12-04T15:16:52.001Z");
        assert_eq!(body["data"]["properties"]["score"], 3);

        // GET: the request target (path?query) is signed in place of the body.
        let get = receiver.wait_for("/get", 1, Duration::from_secs(10)).await.remove(0);
        assert_eq!(get.method, "GET");
        assert!(get.body.is_empty());
        assert!(get.target.starts_with("/get?sheet=1&"), "{}", get.target);
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(get.target.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        assert!(query.contains(&("properties.score".into(), "3".into())), "{query:?}");
        assert!(query.contains(&("event".into(), "survey.submitted".into())), "{query:?}");
        assert!(verify(
            SECRET,
            get.header("webhook-id"),
            get.header("webhook-timestamp"),
            get.target.as_bytes(),
            get.header("webhook-signature")
        ));

        // A configured header replaces a default one instead of doubling it.
        let typed = receiver.wait_for("/typed", 1, Duration::from_secs(10)).await.remove(0);
        let types: Vec<_> = typed.headers.get_all("content-type").iter().collect();
        assert_eq!(types, ["application/cloudevents+json"]);

        // While rotating, one signature per secret; either verifies.
        let rotating = receiver.wait_for("/rotating", 1, Duration::from_secs(10)).await.remove(0);
        let header = rotating.header("webhook-signature");
        assert_eq!(header.split(' ').count(), 2, "{header}");
        for secret in [SECRET, OLD_SECRET] {
            assert!(verify(
                secret,
                rotating.header("webhook-id"),
                rotating.header("webhook-timestamp"),
                &rotating.body,
                header
            ));
        }
        relay.stop().await;
    }
}

both_backends! {
    async fn outcomes_2xx_delivered_3xx_and_4xx_failed_410_disables(b) {
        let receiver = Receiver::start(|r, n| match r.path() {
            "/redirect" => Reply { headers: vec![("location", "/target".into())], ..Reply::status(302) },
            "/bad" => Reply::status(400),
            "/gone" if n == 0 => Reply::status(410),
            "/big" => Reply { body: "x".repeat(10_000), ..Reply::ok() },
            _ => Reply::status(204),
        })
        .await;
        let fast = "retry = [\"0s\", \"10ms\", \"10ms\"]";
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}{}{}{}{}",
            hook("ok", &receiver.url("/ok"), fast),
            hook("redirect", &receiver.url("/redirect"), fast),
            hook("bad", &receiver.url("/bad"), fast),
            hook("gone", &receiver.url("/gone"), fast),
            hook("big", &receiver.url("/big"), fast),
        ))
        .await;
        assert_eq!(relay.post(&batch(vec![nps(3)])).await.0, 202);
        let settled = relay.settle(5, Duration::from_secs(10)).await;
        let by_hook = |id: &str| settled.iter().find(|d| d.1 == id).unwrap().clone();
        assert_eq!(by_hook("ok").2, "delivered");
        assert_eq!((by_hook("redirect").2.as_str(), by_hook("redirect").3), ("failed", 1));
        assert_eq!((by_hook("bad").2.as_str(), by_hook("bad").3), ("failed", 1));
        assert_eq!(by_hook("gone").2, "failed");
        assert!(receiver.on("/target").is_empty(), "redirects are never followed");
        assert_eq!(receiver.on("/bad").len(), 1, "other 4xx are not retried");
        // Every attempt is stored, with at most 4 KB of the answer.
        let big = relay.attempts(by_hook("big").0);
        assert_eq!(big.len(), 1);
        assert_eq!((big[0].0, big[0].1.as_ref().unwrap().len()), (Some(200), 4096));
        assert_eq!(relay.attempts(by_hook("redirect").0)[0].0, Some(302));

        // After the 410 the webhook is disabled: new events are dead-lettered for it, not sent.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(relay.post(&batch(vec![nps(4)])).await.0, 202);
        let settled = relay.settle(10, Duration::from_secs(10)).await;
        let gone: Vec<_> = settled.iter().filter(|d| d.1 == "gone").collect();
        assert_eq!(gone[1].2, "dead", "{gone:?}");
        assert!(gone[1].4.as_deref().unwrap().contains("disabled"));
        assert_eq!(receiver.on("/gone").len(), 1);

        // `enable` and `replay` (CLI, another process) bring it back; the running relay notices.
        let config_path = relay.db.dir.path().join("relay.toml");
        std::fs::write(&config_path, format!("storage = \"{}\"\n", relay.db.url)).unwrap();
        let cli = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
                .args(args)
                .arg("--config")
                .arg(&config_path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(cli(&["enable", "--webhook", "gone"]).starts_with("gone enabled"));
        assert!(cli(&["replay", "--webhook", "gone"]).starts_with("1 dead letter(s) queued again"));
        receiver.wait_for("/gone", 2, Duration::from_secs(10)).await;
        eventually("the replayed delivery to succeed", Duration::from_secs(10), || {
            relay.deliveries().iter().any(|d| d.1 == "gone" && d.2 == "delivered")
        })
        .await;
        relay.stop().await;
    }
}

both_backends! {
    async fn retryable_failures_are_retried_with_the_same_webhook_id_then_dead_lettered_and_replayed(b) {
        let dead_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let receiver = Receiver::start(|r, n| match (r.path(), n) {
            ("/flaky", 0) => Reply::status(503),
            ("/flaky", 1) => Reply::status(408),
            ("/flaky", _) => Reply::ok(),
            ("/down", n) if n < 3 => Reply::status(500),
            ("/down", _) => Reply::ok(),
            ("/slow", _) => Reply { delay: Duration::from_secs(5), ..Reply::ok() },
            _ => Reply::ok(),
        })
        .await;
        let fast = "retry = [\"0s\", \"30ms\", \"30ms\"]";
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}{}{}{}",
            hook("flaky", &receiver.url("/flaky"), fast),
            hook("down", &receiver.url("/down"), fast),
            hook("slow", &receiver.url("/slow"), "retry = [\"0s\", \"10ms\"]\ntimeout = \"200ms\""),
            hook("refused", &format!("http://127.0.0.1:{dead_port}/x"), "retry = [\"0s\", \"10ms\"]"),
        ))
        .await;
        assert_eq!(relay.post(&batch(vec![nps(3)])).await.0, 202);
        let settled = relay.settle(4, Duration::from_secs(15)).await;
        let by_hook = |id: &str| settled.iter().find(|d| d.1 == id).unwrap().clone();

        let flaky = by_hook("flaky");
        assert_eq!((flaky.2.as_str(), flaky.3), ("delivered", 3));
        let statuses: Vec<_> = relay.attempts(flaky.0).iter().map(|a| a.0).collect();
        assert_eq!(statuses, [Some(503), Some(408), Some(200)]);
        let ids: Vec<String> = receiver.on("/flaky").iter().map(|r| r.header("webhook-id").to_string()).collect();
        assert!(ids.len() == 3 && ids.iter().all(|i| *i == ids[0]), "{ids:?}");

        let down = by_hook("down");
        assert_eq!((down.2.as_str(), down.3), ("dead", 3));
        assert_eq!(down.4.as_deref(), Some("HTTP 500; dead-lettered after 3 attempts"));
        let slow = by_hook("slow");
        assert_eq!((slow.2.as_str(), slow.3), ("dead", 2));
        assert!(
            relay.attempts(slow.0).iter().all(|a| a.2.as_deref().unwrap().contains("timed out")),
            "{:?}",
            relay.attempts(slow.0)
        );
        let refused = by_hook("refused");
        assert_eq!((refused.2.as_str(), refused.3), ("dead", 2));
        assert!(relay.attempts(refused.0)[0].2.is_some());

        // Replay the dead letters of one webhook through the CLI, against the running relay.
        let config_path = relay.db.dir.path().join("relay.toml");
        std::fs::write(
            &config_path,
            format!(
                "storage = \"{}\"\n{SOURCES}{}",
                relay.db.url,
                hook("down", &receiver.url("/down"), fast)
            ),
        )
        .unwrap();
        let listed = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["replay", "--list", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.contains("3 dead letter(s)"), "{listed}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["replay", "--webhook", "down", "--since", "2000-01-01T00:00:00Z", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 dead letter(s) queued again"));
        receiver.wait_for("/down", 4, Duration::from_secs(10)).await;
        eventually("the replayed delivery to succeed", Duration::from_secs(10), || {
            relay.deliveries().iter().any(|d| d.1 == "down" && d.2 == "delivered")
        })
        .await;
        // One dead letter by id: the refused one is tried again on a fresh schedule (and dies again).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-relay"))
            .args(["replay", "--id", &refused.0.to_string(), "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 dead letter(s) queued again"));
        eventually("the replayed delivery to be tried twice more", Duration::from_secs(10), || {
            relay.attempts(refused.0).len() == 4
        })
        .await;
        eventually("it to be dead again", Duration::from_secs(10), || {
            relay.deliveries().iter().any(|d| d.0 == refused.0 && d.2 == "dead" && d.3 == 2)
        })
        .await;
        relay.stop().await;
    }
}

both_backends! {
    async fn retry_after_is_honoured_within_the_schedule_bounds(b) {
        let receiver = Receiver::start(|_, n| match n {
            0 => Reply { headers: vec![("retry-after", "1".into())], ..Reply::status(429) },
            _ => Reply::ok(),
        })
        .await;
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}",
            hook("busy", &receiver.url("/busy"), "retry = [\"0s\", \"50ms\", \"3s\"]")
        ))
        .await;
        relay.post(&batch(vec![nps(3)])).await;
        let got = receiver.wait_for("/busy", 2, Duration::from_secs(10)).await;
        let gap = got[1].at - got[0].at;
        assert!(gap >= Duration::from_millis(950) && gap < Duration::from_millis(2500), "{gap:?}");
        relay.stop().await;
    }
}

both_backends! {
    async fn a_duplicate_event_id_is_delivered_once(b) {
        let receiver = Receiver::ok().await;
        let relay = TestRelay::start(b, &format!("{FAST_LIMITS}{SOURCES}{}", hook("all", &receiver.url("/all"), ""))).await;
        let e = nps(5);
        let (_, _, ack) = relay.post(&batch(vec![e.clone(), e.clone()])).await;
        assert_eq!(ack, json!({"accepted": 1, "duplicates": 1}));
        let (_, _, ack) = relay.post(&batch(vec![e.clone()])).await;
        assert_eq!(ack, json!({"accepted": 0, "duplicates": 1}));
        receiver.wait_for("/all", 1, Duration::from_secs(10)).await;
        relay.settle(1, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.on("/all").len(), 1);
        assert_eq!(relay.deliveries().len(), 1);
        relay.stop().await;
    }
}

both_backends! {
    async fn template_and_condition_errors_fail_that_delivery_only(b) {
        let receiver = Receiver::ok().await;
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}{}{}{}",
            hook("bad-body", &receiver.url("/bad-body"), "body = '''{{ properties.comment + 1 }}'''"),
            hook("bad-when", &receiver.url("/bad-when"), "when = \"properties.comment + 1 > 0\""),
            hook("bad-url", &receiver.url("/x"), "").replace(&receiver.url("/x"), "{{ properties.comment }}"),
            hook(
                "good",
                &receiver.url("/good"),
                "when = \"properties.kind == 'nps' and properties.score <= 6\"\nbody = '''{\"text\": \"NPS {{ properties.score }} from {{ userId }}: {{ properties.comment }}\"}'''"
            ),
        ))
        .await;
        assert_eq!(relay.post(&batch(vec![nps(3), nps(9)])).await.0, 202);
        let good = receiver.wait_for("/good", 1, Duration::from_secs(10)).await;
        assert_eq!(good[0].json(), json!({"text": "NPS 3 from user-42: ok"}));
        // nps(9) fails the condition of "good": no delivery. Each bad hook: one failed delivery per event.
        let settled = relay.settle(7, Duration::from_secs(10)).await;
        assert_eq!(settled.iter().filter(|d| d.1 == "good").count(), 1);
        for (id, message) in
            [("bad-body", "body template failed"), ("bad-when", "condition failed"), ("bad-url", "is not a URL")]
        {
            let mine: Vec<_> = settled.iter().filter(|d| d.1 == id).collect();
            assert_eq!(mine.len(), 2, "{id}: {settled:?}");
            for d in mine {
                assert_eq!(d.2, "failed", "{id}");
                let attempts = relay.attempts(d.0);
                assert!(attempts[0].2.as_deref().unwrap().contains(message), "{id}: {attempts:?}");
            }
        }
        assert!(receiver.on("/bad-body").is_empty() && receiver.on("/bad-when").is_empty());
        // The process is fine.
        assert_eq!(relay.post(&batch(vec![nps(2)])).await.0, 202);
        receiver.wait_for("/good", 2, Duration::from_secs(10)).await;
        relay.stop().await;
    }
}

both_backends! {
    async fn the_ssrf_guard_refuses_loopback_by_name_and_odd_spellings_unless_allowed(b) {
        let receiver = Receiver::ok().await;
        let port = receiver.addr.port();
        let targets = [
            ("literal", format!("http://127.0.0.1:{port}/literal")),
            ("localhost", format!("http://localhost:{port}/localhost")),
            ("integer", format!("http://2130706433:{port}/integer")),
            ("hex", format!("http://0x7f.0.0.1:{port}/hex")),
            ("octal", format!("http://0177.0.0.1:{port}/octal")),
            ("short", format!("http://127.1:{port}/short")),
            ("mapped", format!("http://[::ffff:127.0.0.1]:{port}/mapped")),
            ("ipv6-loopback", format!("http://[::1]:{port}/ipv6-loopback")),
        ];
        let hooks: String = targets.iter().map(|(id, url)| hook(id, url, "retry = [\"0s\", \"10ms\"]")).collect();
        let sources = "[[source]]\nwrite_key = \"pk_live_demo\"\norigins = [\"*\"]\n";
        let relay = TestRelay::start(b, &format!("{FAST_LIMITS}{sources}{hooks}")).await;
        assert_eq!(relay.post(&batch(vec![nps(3)])).await.0, 202);
        let settled = relay.settle(targets.len(), Duration::from_secs(10)).await;
        for d in &settled {
            assert_eq!((d.2.as_str(), d.3), ("failed", 1), "{d:?}: refusals are final, not retried");
            assert!(d.4.as_deref().unwrap().contains("SSRF guard refused"), "{d:?}");
        }
        assert!(receiver.all().is_empty(), "nothing may reach the receiver: {:?}", receiver.all());
        relay.stop().await;

        // egress.allow_cidrs opens the range, for literals and names alike.
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}[egress]\nallow_cidrs = [\"127.0.0.0/8\"]\n{sources}{}{}{}",
            hook("literal", &targets[0].1, ""),
            hook("localhost", &targets[1].1, ""),
            hook("integer", &targets[2].1, ""),
        ))
        .await;
        assert_eq!(relay.post(&batch(vec![nps(3)])).await.0, 202);
        let settled = relay.settle(3, Duration::from_secs(10)).await;
        assert!(settled.iter().all(|d| d.2 == "delivered"), "{settled:?}");
        relay.stop().await;
    }
}

both_backends! {
    async fn a_hanging_webhook_does_not_delay_a_healthy_one(b) {
        let receiver = Receiver::start(|r, _| match r.path() {
            "/hang" => Reply { delay: Duration::from_secs(30), ..Reply::ok() },
            _ => Reply::ok(),
        })
        .await;
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}{}",
            hook("hang", &receiver.url("/hang"), "timeout = \"60s\"\nconcurrency = 2"),
            hook("fast", &receiver.url("/fast"), ""),
        ))
        .await;
        let started = Instant::now();
        for _ in 0..10 {
            let events = (0..5).map(nps).collect();
            assert_eq!(relay.post(&batch(events)).await.0, 202);
        }
        let fast = receiver.wait_for("/fast", 50, Duration::from_secs(5)).await;
        let slowest = fast.iter().map(|r| r.at - started).max().unwrap();
        assert!(slowest < Duration::from_secs(2), "the healthy webhook waited {slowest:?}");
        receiver.wait_for("/hang", 2, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(receiver.on("/hang").len(), 2, "the hanging webhook holds only its own 2 slots");
        relay.stop().await;
    }
}

both_backends! {
    async fn shutdown_lets_deliveries_in_flight_finish(b) {
        let receiver = Receiver::start(|_, _| Reply { delay: Duration::from_millis(500), ..Reply::ok() }).await;
        let relay = TestRelay::start(b, &format!(
            "[limits]\nshutdown_grace = \"5s\"\n{SOURCES}{}",
            hook("slowish", &receiver.url("/slowish"), "")
        ))
        .await;
        assert_eq!(relay.post(&batch(vec![nps(1)])).await.0, 202);
        receiver.wait_for("/slowish", 1, Duration::from_secs(5)).await;
        let db = relay.db.clone();
        relay.stop().await;
        let stored = db.deliveries();
        assert_eq!(stored[0].2, "delivered", "{stored:?}");
    }
}

both_backends! {
    async fn the_per_webhook_rate_limit_spaces_attempts(b) {
        let receiver = Receiver::ok().await;
        let relay = TestRelay::start(b, &format!(
            "{FAST_LIMITS}{SOURCES}{}{}",
            hook("limited", &receiver.url("/limited"), "rate_limit = \"5/s\""),
            hook("free", &receiver.url("/free"), ""),
        ))
        .await;
        let started = Instant::now();
        assert_eq!(relay.post(&batch((0..10).map(nps).collect())).await.0, 202);
        let free = receiver.wait_for("/free", 10, Duration::from_secs(5)).await;
        let limited = receiver.wait_for("/limited", 10, Duration::from_secs(5)).await;
        // A burst of 5 passes at once, the other 5 follow at 5 per second.
        let span = limited[9].at - limited[0].at;
        assert!(span >= Duration::from_millis(900), "10 attempts at 5/s took only {span:?}");
        assert!(span < Duration::from_secs(3), "{span:?}");
        // The other webhook is not held back: it is done well before the limited one.
        let free_done = free.iter().map(|r| r.at).max().unwrap();
        assert!(
            free_done + Duration::from_millis(500) < limited[9].at,
            "{:?} vs {:?}",
            free_done - started,
            limited[9].at - started
        );
        relay.stop().await;
    }
}
