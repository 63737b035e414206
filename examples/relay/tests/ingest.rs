//! Every answer of `POST /v1/batch`, against a real relay and SQLite file.

#[macro_use]
mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LIMITS: &str = "[limits]\nshutdown_grace = \"200ms\"\n";

both_backends! {
    async fn golden_invalid_fixtures_are_400_with_code_and_message(b) {
        let relay = TestRelay::start(b, &format!("{LIMITS}{SOURCES}")).await;
        let expectations: Value = serde_json::from_slice(&std::fs::read(fixtures().join("invalid.json")).unwrap()).unwrap();
        let expectations = expectations.as_object().unwrap();
        assert!(expectations.len() >= 13);
        for (name, expected) in expectations {
            let body = std::fs::read(fixtures().join(format!("invalid/{name}.json"))).unwrap();
            let (status, _, answer) = post(&format!("{}/v1/batch", relay.url), body, &[]).await;
            assert_eq!(status, 400, "{name}: {answer}");
            assert_eq!(answer["error"]["code"], expected["code"], "{name}: {answer}");
            if let Some(message) = expected["message"].as_str() {
                assert_eq!(answer["error"]["message"], message, "{name}");
            } else {
                assert!(answer["error"]["message"].as_str().unwrap().len() > 5, "{name}: {answer}");
            }
        }
        assert!(relay.deliveries().is_empty());
        relay.stop().await;
    }
}

both_backends! {
    async fn golden_batch_is_accepted_and_a_resend_is_all_duplicates(b) {
        let receiver = Receiver::ok().await;
        let relay = TestRelay::start(b, &format!(
            "{LIMITS}{SOURCES}[[webhook]]\nid = \"all\"\nevents = [\"*\"]\nurl = \"{}\"\n",
            receiver.url("/all")
        ))
        .await;
        let body = std::fs::read(fixtures().join("batch.json")).unwrap();
        let (status, _, ack) =
            post(&format!("{}/v1/batch", relay.url), body.clone(), &[("content-type", "application/json")]).await;
        assert_eq!((status, ack), (202, json!({"accepted": 7, "duplicates": 0})));
        // Acknowledged means committed: the rows are there the moment the 202 is.
        assert_eq!(relay.deliveries().len(), 7);
        let (status, _, ack) = post(&format!("{}/v1/batch", relay.url), body, &[]).await;
        assert_eq!((status, ack), (202, json!({"accepted": 0, "duplicates": 7})));
        receiver.wait_for("/all", 7, Duration::from_secs(10)).await;
        relay.settle(7, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(receiver.on("/all").len(), 7, "duplicates create no deliveries");
        relay.stop().await;
    }
}

both_backends! {
    async fn unknown_write_key_is_401_and_origins_are_checked_per_key(b) {
        let relay = TestRelay::start(b, &format!("{LIMITS}{SOURCES}")).await;
        let url = format!("{}/v1/batch", relay.url);
        let (status, _, answer) = relay.post(&batch_with_key("pk_nope", vec![nps(3)])).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("unknown_write_key")));

        let body = || serde_json::to_vec(&batch(vec![nps(3)])).unwrap();
        let (status, headers, answer) = post(&url, body(), &[("origin", "https://evil.example.com")]).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("origin_not_allowed")));
        assert_eq!(
            headers["access-control-allow-origin"], "https://evil.example.com",
            "the page may read the refusal (and stop retrying), never a success"
        );

        let (status, headers, _) = post(&url, body(), &[("origin", "https://app.example.com")]).await;
        assert_eq!(status, 202);
        assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(headers["access-control-expose-headers"], "Retry-After");
        // Errors other than 403 are readable by the page too (the SDK needs their status).
        let unknown = serde_json::to_vec(&batch_with_key("pk_nope", vec![nps(3)])).unwrap();
        let (status, headers, _) = post(&url, unknown, &[("origin", "https://app.example.com")]).await;
        assert_eq!(status, 401);
        assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");

        // "*" admits any origin for that key only.
        let any = serde_json::to_vec(&batch_with_key("pk_any", vec![nps(3)])).unwrap();
        let (status, headers, _) = post(&url, any, &[("origin", "https://evil.example.com")]).await;
        assert_eq!(status, 202);
        assert_eq!(headers["access-control-allow-origin"], "https://evil.example.com");
        relay.stop().await;
    }
}

both_backends! {
    async fn cors_preflight(b) {
        let relay = TestRelay::start(b, &format!(
            "{LIMITS}[[source]]\nwrite_key = \"pk_live_demo\"\norigins = [\"https://app.example.com\"]\n"
        ))
        .await;
        let client = reqwest::Client::new();
        let preflight = |origin: &'static str| {
            client
                .request(reqwest::Method::OPTIONS, format!("{}/v1/batch", relay.url))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
        };
        let ok = preflight("https://app.example.com").await.unwrap();
        assert_eq!(ok.status(), 204);
        assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
        assert!(ok.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
        assert!(ok.headers()["access-control-allow-headers"].to_str().unwrap().contains("content-type"));
        let refused = preflight("https://evil.example.com").await.unwrap();
        assert_eq!(refused.status(), 403);
        assert!(refused.headers().get("access-control-allow-origin").is_none());
        relay.stop().await;
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

both_backends! {
    async fn gzip_bodies_and_the_512_kb_limit_before_and_after_decompression(b) {
        let relay = TestRelay::start(b, &format!("{LIMITS}{SOURCES}")).await;
        let url = format!("{}/v1/batch", relay.url);
        let body = serde_json::to_vec(&batch(vec![nps(3), nps(4)])).unwrap();
        let (status, _, ack) = post(&url, gzip(&body), &[("content-encoding", "gzip")]).await;
        assert_eq!((status, ack), (202, json!({"accepted": 2, "duplicates": 0})));

        let mut big = batch(vec![nps(3)]);
        big["padding"] = Value::String("x".repeat(600 * 1024));
        let big = serde_json::to_vec(&big).unwrap();
        let (status, _, answer) = post(&url, big.clone(), &[]).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("too_large")), "{answer}");
        // 600 KB of JSON gzips to a few KB; the limit applies to what it expands to.
        let small = gzip(&big);
        assert!(small.len() < 10 * 1024);
        let (status, _, answer) = post(&url, small, &[("content-encoding", "gzip")]).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("too_large")), "{answer}");

        let (status, _, answer) = post(&url, b"\x1f\x8b not gzip".to_vec(), &[("content-encoding", "gzip")]).await;
        assert_eq!(status, 400, "{answer}");
        relay.stop().await;
    }
}

both_backends! {
    async fn rate_limits_per_ip_and_per_key_answer_429_with_retry_after(b) {
        for (limits, per) in [("ip_rate = \"3/m\"", "address"), ("key_rate = \"3/m\"", "write key")] {
            let relay = TestRelay::start(b, &format!("[limits]\nshutdown_grace = \"200ms\"\n{limits}\n{SOURCES}")).await;
            let mut statuses = Vec::new();
            let mut limited = None;
            for _ in 0..6 {
                let (status, headers, answer) = relay.post(&batch(vec![nps(1)])).await;
                statuses.push(status);
                if status == 429 {
                    limited = Some((headers, answer));
                }
            }
            assert_eq!(&statuses[..3], [202, 202, 202], "{per}");
            let (headers, answer) = limited.unwrap_or_else(|| panic!("{per}: no 429 in {statuses:?}"));
            assert_eq!(answer["error"]["code"], "rate_limited");
            assert!(answer["error"]["message"].as_str().unwrap().contains(per), "{answer}");
            assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            relay.stop().await;
        }
    }
}

both_backends! {
    async fn backlog_above_the_high_water_mark_is_503_with_retry_after(b) {
        let hanging = Receiver::start(|_, _| Reply { delay: Duration::from_secs(30), ..Reply::ok() }).await;
        let relay = TestRelay::start(b, &format!(
            "[limits]\nshutdown_grace = \"100ms\"\nbacklog_high_water = 2\n{SOURCES}[[webhook]]\nid = \"slow\"\nevents = [\"*\"]\nurl = \"{}\"\ntimeout = \"60s\"\n",
            hanging.url("/slow")
        ))
        .await;
        let (status, _, _) = relay.post(&batch(vec![nps(1), nps(2), nps(3)])).await;
        assert_eq!(status, 202);
        let (status, headers, answer) = relay.post(&batch(vec![nps(4)])).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("overloaded")));
        assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        let db = relay.db.clone();
        relay.stop().await;
        // The hanging attempts were abandoned at shutdown: still stored as pending for the next start.
        let stored = db.deliveries();
        assert_eq!(stored.len(), 3);
        assert!(stored.iter().all(|d| d.2 == "pending"), "{stored:?}");
    }
}

both_backends! {
    async fn health_and_readiness(b) {
        let relay = TestRelay::start(b, &format!("{LIMITS}{SOURCES}")).await;
        let client = reqwest::Client::new();
        let health = client.get(format!("{}/healthz", relay.url)).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let ready: Value = serde_json::from_slice(
            &client.get(format!("{}/readyz", relay.url)).send().await.unwrap().bytes().await.unwrap(),
        )
        .unwrap();
        assert_eq!(ready["status"], "ready");
        relay.stop().await;
    }
}

both_backends! {
    async fn a_webhook_waiting_to_retry_does_not_count_as_backlog(b) {
        // A failing webhook parks its deliveries until their retry time. Those are
        // not work to do now: ingest keeps accepting events for every other webhook.
        let failing = Receiver::start(|_, _| Reply::status(500)).await;
        let relay = TestRelay::start(b, &format!(
            "[limits]\nshutdown_grace = \"100ms\"\nbacklog_high_water = 2\n{SOURCES}[[webhook]]\nid = \"failing\"\nevents = [\"*\"]\nurl = \"{}\"\nretry = [\"0s\", \"1h\"]\n",
            failing.url("/fail")
        ))
        .await;
        let (status, _, _) = relay.post(&batch(vec![nps(1), nps(2), nps(3)])).await;
        assert_eq!(status, 202);
        eventually("three first attempts failed", Duration::from_secs(10), || {
            relay.deliveries().iter().filter(|d| d.3 == 1).count() == 3
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, _, answer) = relay.post(&batch(vec![nps(4)])).await;
        assert_eq!(status, 202, "{answer}");
        relay.stop().await;
    }
}

both_backends! {
    async fn an_unsupported_content_encoding_is_415_with_the_error_body(b) {
        let relay = TestRelay::start(b, &format!("{LIMITS}{SOURCES}")).await;
        let body = serde_json::to_vec(&batch(vec![nps(5)])).unwrap();
        let (status, _, answer) =
            post(&format!("{}/v1/batch", relay.url), body, &[("content-encoding", "br"), ("content-type", "text/plain")])
                .await;
        assert_eq!((status, answer["error"]["code"].as_str()), (415, Some("unsupported_encoding")), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("\"br\""));
        relay.stop().await;
    }
}

both_backends! {
    async fn shutdown_does_not_wait_forever_for_a_client_trickling_its_body(b) {
        use tokio::io::AsyncWriteExt;
        let relay = TestRelay::start(b, &format!("[limits]\nshutdown_grace = \"300ms\"\n{SOURCES}")).await;
        let addr = relay.url.trim_start_matches("http://").to_string();
        let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stuck
            .write_all(
                b"POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n{\"v\":",
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), relay.stop()).await.expect("shutdown finished");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        drop(stuck);
    }
}
