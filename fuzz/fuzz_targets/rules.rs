//! `rules`: webhook `when` conditions and body/url templates (minijinja, in
//! `cuecast_relay::rules`) compiled from hostile text and rendered against
//! hostile events. The input is split at NUL bytes into a flags byte, a
//! `when`, a body template, a url template and an event (JSON, or else a
//! string put where users type: `properties.comment`).
//! Invariants: nothing panics; every render ends (the fuel limit stops
//! runaway loops; libFuzzer's `-timeout` reports one that does not) within
//! libFuzzer's memory limit; and for the escaping the relay promises, on any
//! event: a string dropped into a quoted body position keeps the body valid
//! JSON with the string intact, and a value in a templated url cannot change
//! the url's host.
#![no_main]

use std::time::Duration;

use cuecast_relay::config::{Method, Webhook};
use cuecast_relay::policy::Pattern;
use cuecast_relay::rules::Rules;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn hook(id: &str, when: Option<&str>, method: Method, url: &str, body: Option<&str>) -> Webhook {
    Webhook {
        id: id.into(),
        events: vec![Pattern::All],
        when: when.map(str::to_string),
        method,
        url: url.into(),
        headers: Vec::new(),
        body: body.map(str::to_string),
        secrets: Vec::new(),
        timeout: Duration::from_secs(10),
        rate_limit: None,
        concurrency: 1,
        retry: vec![Duration::ZERO],
    }
}

/// Two fixed hooks whose templates use the event the way the README shows.
const QUOTED: usize = 0;
const URL_PART: usize = 1;

fn fixed() -> Vec<Webhook> {
    vec![
        hook(
            "quoted",
            None,
            Method::Post,
            "https://hooks.example.com/q",
            Some(r#"{"text": "{{ properties.comment }}", "who": "{{ userId }}"}"#),
        ),
        hook(
            "url",
            None,
            Method::Get,
            "https://sheet.example.com/exec?c={{ properties.comment }}&u={{ userId }}",
            None,
        ),
    ]
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let flags = parts.next().and_then(|f| f.first().copied()).unwrap_or(0);
    let mut text = || parts.next().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let (when, body, url, event) = (text(), text(), text(), text());

    let event: Value = match serde_json::from_str::<Value>(&event) {
        Ok(v) if v.is_object() => v,
        _ => json!({"id": "e1", "event": "survey.submitted", "userId": event.clone(),
                    "properties": {"comment": event, "score": 3}}),
    };
    let name = event.get("event").and_then(Value::as_str).unwrap_or("survey.submitted").to_string();

    let method = if flags & 1 == 1 { Method::Get } else { Method::Post };
    let url = if flags & 2 == 2 { url } else { format!("https://h.example.com/{url}") };
    let hostile = hook(
        "hostile",
        (flags & 4 == 4).then_some(when.as_str()),
        method,
        &url,
        (flags & 8 == 8).then_some(body.as_str()),
    );
    let mut hooks = fixed();
    hooks.push(hostile);
    let Ok(rules) = Rules::new(&hooks) else {
        // A template that does not compile is a config error; the fixed hooks alone must compile.
        Rules::new(&fixed()).expect("the fixed hooks compile");
        return;
    };

    let routed = rules.route(&name, &event);
    assert_eq!(routed.len(), hooks.len(), "every hook matches `*`");
    for (hook, verdict) in routed {
        if hook < 2 {
            assert_eq!(verdict, Ok(true), "a hook without `when` always goes");
        }
        let Ok(request) = rules.render(hook, &event) else { continue };
        assert_eq!(request.method, hooks[hook].method);
        assert_eq!(request.body.is_none(), request.method == Method::Get);
        if request.method == Method::Post && hooks[hook].body.is_none() {
            serde_json::from_slice::<Value>(request.body.as_deref().unwrap()).expect("the default body is JSON");
        }
    }

    let quoted = rules.render(QUOTED, &event).expect("the quoted hook renders");
    let comment = event.pointer("/properties/comment");
    let user = event.get("userId");
    if let (Some(Value::String(c)), Some(Value::String(u))) = (comment, user) {
        let body: Value = serde_json::from_slice(quoted.body.as_deref().unwrap())
            .unwrap_or_else(|e| panic!("strings in quoted positions broke the JSON body: {e}"));
        assert_eq!(body["text"].as_str(), Some(c.as_str()));
        assert_eq!(body["who"].as_str(), Some(u.as_str()));
    }
    if let Ok(request) = rules.render(URL_PART, &event) {
        assert_eq!(
            request.url.host_str(),
            Some("sheet.example.com"),
            "a value changed the url's host: {}",
            request.url
        );
        assert_eq!(request.url.path(), "/exec", "a value changed the url's path: {}", request.url);
    }
});
