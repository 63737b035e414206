//! Property tests on hostile input (a bounded fuzz run inside `cargo test`):
//!
//! 1. Arbitrary bytes never panic the batch decoder the relay uses.
//! 2. Golden batches with arbitrary JSON put in, swapped in or taken out
//!    anywhere decode, or fail with a stable code and the field at fault.
//! 3. The same mutated batches posted to the relay's router (SQLite storage,
//!    webhooks with a `when` condition and a body template that read the
//!    event) get a 202 or a 4xx with the `{error: {code, message}}` body,
//!    never a 5xx or a panic.
//! 4. Arbitrary text, and TOML built from the configuration's own keys with
//!    arbitrary values, never panics the parser behind `check-config`; a
//!    refusal lists at least one problem, each with a message.
//!
//! Case counts are bounded so the file runs in seconds; `PROPTEST_CASES=100000
//! cargo test -p cuecast-relay --test fuzz` runs a longer campaign.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::fixtures;
use cuecast_relay::config::Config;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

/// Codes `decode_batch` may answer with (the wire contract's).
const WIRE_CODES: &[&str] = &["invalid_field", "too_large", "unsupported_version", "invalid_json"];

/// `n`, or `PROPTEST_CASES` when set (for a longer campaign).
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
}

fn golden() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("batch.json")).unwrap()).unwrap()
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        // Long strings, to reach the size limits.
        (0usize..70_000).prop_map(|n| Value::from("x".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in `v` (the root included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            m.iter().for_each(|(k, c)| pointers(c, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

#[derive(Debug, Clone)]
enum Mutation {
    /// The value at the n-th pointer becomes this one.
    Replace(usize, Value),
    /// The n-th pointer's value is removed from its parent.
    Remove(usize),
    /// A key is added to the n-th pointer's value (when it is an object).
    Insert(usize, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), ".{0,12}", json_value()).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
    ]
}

fn apply(batch: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    pointers(batch, String::new(), &mut all);
    let pick = |i: usize| all[i % all.len()].clone();
    match m {
        Mutation::Replace(i, v) => {
            if let Some(slot) = batch.pointer_mut(&pick(*i)) {
                *slot = v.clone();
            }
        }
        Mutation::Remove(i) => {
            let p = pick(*i);
            if let Some((parent, last)) = p.rsplit_once('/') {
                match batch.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = last.parse::<usize>() {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::Insert(i, k, v) => {
            if let Some(Value::Object(o)) = batch.pointer_mut(&pick(*i)) {
                o.insert(k.clone(), v.clone());
            }
        }
    }
}

fn mutated_batch() -> impl Strategy<Value = Value> {
    prop::collection::vec(mutation(), 1..4).prop_map(|ms| {
        let mut batch = golden();
        ms.iter().for_each(|m| apply(&mut batch, m));
        batch
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(e) = cuecast::wire::decode_batch(&bytes) {
            prop_assert!(WIRE_CODES.contains(&e.code()), "{e:?}");
        }
    }

    #[test]
    fn mutated_batches_decode_or_name_the_field(batch in mutated_batch()) {
        let body = serde_json::to_vec(&batch).unwrap();
        if let Err(e) = cuecast::wire::decode_batch(&body) {
            prop_assert!(WIRE_CODES.contains(&e.code()), "{e:?}");
            // When the body is an object, something in it is at fault: a
            // path, or (for a missing key) the key's name in the message.
            let message = e.to_string();
            prop_assert!(
                !batch.is_object()
                    || !e.field().is_empty()
                    || message.contains("missing field"),
                "no field named: {message}\n{batch}"
            );
        }
    }
}

/// Found by `mutated_batches_decode_or_name_the_field`: a struct sent as an
/// array with more elements than it has fields (`"library": ["a", "b", "c"]`)
/// makes serde_json report trailing characters, a syntax error, so
/// `decode_batch` used to answer "body is not valid JSON" for valid JSON and
/// name no field. `src/wire.rs` now tells syntax from shape by whether the
/// body parses as any JSON value, not by the error's category.
#[test]
fn a_struct_sent_as_a_longer_array_is_named() {
    let mut batch = golden();
    batch["events"][0]["context"]["library"] = serde_json::json!(["a", "b", "c"]);
    let e = cuecast::wire::decode_batch(&serde_json::to_vec(&batch).unwrap()).unwrap_err();
    assert_eq!(e.field(), "events[0].context.library", "{e}");
}

/// The relay's router on a fresh SQLite file, with webhooks whose condition
/// and body template read the (arbitrary) event.
async fn relay(dir: &std::path::Path) -> axum::Router {
    let toml = format!(
        r#"storage = "sqlite://{}"
[limits]
key_rate = "1000000/s"
ip_rate = "1000000/s"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[[source]]
write_key = "pk_live_demo"
origins = ["*"]
[[webhook]]
id = "nps"
events = ["survey.*", "shoutout.*"]
when = "properties.kind == 'nps' and properties.score <= 6 or context.page.path == '/reports'"
url = "http://127.0.0.1:9/{{{{ userId or anonymousId }}}}?t={{{{ properties.taskId }}}}"
body = '''{{"text": "{{{{ properties.score }}}} {{{{ properties.comment | tojson }}}} {{{{ context.page.title }}}}"}}'''
rate_limit = "1/h"
[[webhook]]
id = "all"
events = ["*"]
url = "http://127.0.0.1:9/all"
rate_limit = "1/h"
"#,
        dir.join("fuzz.db").display()
    );
    let mut config = Config::parse(&toml, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
    config.migrate_on_start = true;
    cuecast_relay::app(cuecast_relay::Relay::start(config).await.unwrap())
}

#[test]
fn mutated_batches_posted_to_the_relay_get_202_or_a_4xx_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = rt.block_on(relay(dir.path()));
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(256), ..ProptestConfig::default() });
    let app = Arc::new(app);
    let seen: std::sync::Mutex<std::collections::BTreeMap<String, usize>> = Default::default();
    runner
        .run(&mutated_batch(), |batch| {
            let body = serde_json::to_vec(&batch).unwrap();
            let request =
                Request::post("/v1/batch").header("content-type", "text/plain").body(Body::from(body)).unwrap();
            let (status, answer) = rt.block_on(async {
                let response = app.as_ref().clone().oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            });
            let code = answer["error"]["code"].as_str().unwrap_or("accepted");
            *seen.lock().unwrap().entry(format!("{} {code}", status.as_u16())).or_default() += 1;
            if status == 202 {
                prop_assert!(answer["accepted"].is_u64(), "{answer}");
            } else {
                prop_assert!(status.is_client_error(), "{status} {answer}\n{batch}");
                prop_assert!(answer["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{answer}");
                prop_assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
            }
            Ok(())
        })
        .unwrap();
    // The mutations reach both sides: accepted batches (which routing, the
    // condition and the templates then read) and refusals.
    let seen = seen.into_inner().unwrap();
    eprintln!("{seen:?}");
    assert!(seen.contains_key("202 accepted") && seen.contains_key("400 invalid_field"), "{seen:?}");
}

/// TOML lines from the configuration's own sections and keys (plus unknown
/// ones), with values that are often almost right.
fn config_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        ".{0,20}".prop_map(|s| toml::Value::from(s).to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        prop::sample::select(vec![
            "\"5s\"",
            "\"0s\"",
            "\"-1s\"",
            "\"99999999999999999999d\"",
            "\"1/h\"",
            "\"0/s\"",
            "\"1000000/s\"",
            "\"10/\"",
            "\"/s\"",
            "\"sqlite://\"",
            "\"sqlite:///tmp/x.db\"",
            "\"postgres://\"",
            "\"http://127.0.0.1:9/x\"",
            "\"https://[::1]/\"",
            "\"ftp://x\"",
            "\"${HOME}\"",
            "\"${X:-y}\"",
            "\"${\"",
            "\"$$\"",
            "\"127.0.0.0/8\"",
            "\"::/0\"",
            "\"300.1.1.1/40\"",
            "[\"*\"]",
            "[\"a.*\", \"*.b\", \"\"]",
            "[]",
            "[1, 2]",
            "{}",
            "{ a = 1 }",
            "\"{{ properties.x }}\"",
            "\"{{\"",
            "\"{% for %}\"",
            "\"properties.score <= 6 and\"",
            "\"properties.kind == 'nps'\"",
            "\"é€\"",
            "'''\n{{ x | tojson }}\n'''",
            "1024",
            "1025",
            "0",
            "-1",
        ])
        .prop_map(str::to_string),
    ];
    let key = prop::sample::select(vec![
        "listen",
        "storage",
        "token",
        "allow_cidrs",
        "https_only",
        "key_rate",
        "ip_rate",
        "backlog_high_water",
        "shutdown_grace",
        "dedupe_window",
        "sweep_interval",
        "lease",
        "retention",
        "storage_wait",
        "write_key",
        "origins",
        "id",
        "events",
        "when",
        "method",
        "url",
        "headers",
        "body",
        "secret",
        "timeout",
        "rate_limit",
        "concurrency",
        "retry",
        "unknown",
        "é",
    ]);
    let header = prop::sample::select(vec![
        "",
        "[admin]",
        "[egress]",
        "[limits]",
        "[[source]]",
        "[[webhook]]",
        "[webhook]",
        "[[limits]]",
        "[unknown]",
        "[webhook.headers]",
    ]);
    let line = prop_oneof![
        3 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => header.prop_map(str::to_string),
        1 => ".{0,30}",
    ];
    prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

fn check_config(src: &str) -> Result<(), TestCaseError> {
    let env = |name: &str| (name == "HOME").then(|| "/home/é".to_string());
    if let Err(errors) = Config::parse(src, &env) {
        prop_assert!(!errors.is_empty());
        for e in &errors {
            prop_assert!(!e.message.is_empty(), "{e:?}");
            if let Some(line) = e.line {
                prop_assert!(line >= 1 && line <= src.lines().count().max(1) + 1, "{e:?} in\n{src}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_config_parser(src in ".{0,400}") {
        check_config(&src)?;
    }

    #[test]
    fn config_shaped_toml_never_panics_the_config_parser(src in config_text()) {
        check_config(&src)?;
    }
}
