//! Golden fixtures of wire contract v1: what the SDK emits and the relay
//! accepts, and what each invalid body must be rejected with. The relay's
//! tests read the same files.

use std::path::{Path, PathBuf};

use cuecast::json::Json;
use cuecast::wire::{self, Batch, Event};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn full_batch_round_trips_exactly() {
    let raw = read(&fixtures().join("batch.json"));
    let batch = wire::decode_batch(&raw).expect("the golden batch is valid");
    assert_eq!(batch.events.len(), 7);
    let golden: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(serde_json::to_value(&batch).unwrap(), golden, "re-serialising changes nothing");
}

#[test]
fn every_built_in_event_kind_has_a_valid_fixture() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(fixtures().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let raw = read(&path);
        let event: Event = serde_json::from_slice(&raw).unwrap();
        event.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(serde_json::to_value(&event).unwrap(), serde_json::from_slice::<Value>(&raw).unwrap());
        names.push(event.event);
    }
    for built_in in cuecast::events::BUILT_IN {
        assert!(names.iter().any(|n| n == built_in), "no fixture for {built_in}");
    }
}

/// The SDK writes events by hand (no serde in the browser build): byte for
/// byte what serde writes for the same event.
#[test]
fn the_sdk_writes_every_golden_event_as_serde_does() {
    for entry in std::fs::read_dir(fixtures().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let event: Event = serde_json::from_slice(&read(&path)).unwrap();
        let (properties, traits) = (Json::from(&event.properties), Json::from(&event.traits));
        let written = wire::NewEvent {
            id: &event.id,
            event: &event.event,
            timestamp: &event.timestamp,
            anonymous_id: event.anonymous_id.as_deref().unwrap(),
            user_id: event.user_id.as_deref(),
            session_id: event.session_id.as_deref().unwrap(),
            properties: &properties,
            context: &event.context,
            traits: &traits,
        }
        .to_json();
        assert_eq!(written, serde_json::to_string(&event).unwrap(), "{}", path.display());
    }
    let library = serde_json::to_string(&wire::Library::cuecast()).unwrap();
    assert_eq!(wire::LIBRARY_JSON, library);
}

#[test]
fn the_golden_events_are_the_golden_batch() {
    let batch: Batch = serde_json::from_slice(&read(&fixtures().join("batch.json"))).unwrap();
    for event in &batch.events {
        let found = std::fs::read_dir(fixtures().join("events"))
            .unwrap()
            .any(|entry| serde_json::from_slice::<Event>(&read(&entry.unwrap().path())).unwrap() == *event);
        assert!(found, "event {} of batch.json has no fixture under events/", event.id);
    }
}

#[test]
fn invalid_bodies_get_their_documented_error() {
    let expected: serde_json::Map<String, Value> =
        serde_json::from_slice(&read(&fixtures().join("invalid.json"))).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures().join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let want = expected.get(&name).unwrap_or_else(|| panic!("{name} has no entry in invalid.json"));
        let err = wire::decode_batch(&read(&path)).expect_err(&name);
        assert_eq!(err.code(), want["code"], "{name}: {err}");
        assert_eq!(err.field(), want["field"], "{name}: {err}");
        if let Some(message) = want["message"].as_str() {
            assert_eq!(err.to_string(), message, "{name}");
        }
        let body = wire::ErrorBody::from(&err);
        assert_eq!(body.error.message, err.to_string());
        seen += 1;
    }
    assert_eq!(seen, expected.len(), "every expectation has a body");
}

#[test]
fn decoding_fills_the_contracts_defaults() {
    let mut batch: serde_json::Value = serde_json::from_slice(&read(&fixtures().join("batch.json"))).unwrap();
    batch["events"][0]["properties"].as_object_mut().unwrap().remove("action");
    let decoded = wire::decode_batch(batch.to_string().as_bytes()).unwrap();
    assert_eq!(decoded.events[0].event, "shoutout.clicked");
    assert_eq!(decoded.events[0].properties["action"], "cta", "webhooks see the default the SDK would have sent");
}
