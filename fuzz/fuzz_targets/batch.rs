//! `batch`: a request body through the wire decoder and validator, then what
//! ingest does with each accepted event (turn it into the JSON that is stored
//! and that rules see, the default webhook body and GET query pairs).
//! Invariants: nothing panics (ingest `expect`s that accepted events
//! serialise), and a batch that was accepted, written back out, is accepted
//! again with the same event ids (what the relay stores is what it took).
#![no_main]

use cuecast::wire;
use cuecast_relay::rules::{default_body, flatten};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(batch) = wire::decode_batch(body) else { return };
    for event in &batch.events {
        let value = serde_json::to_value(event).expect("wire types serialise");
        serde_json::from_slice::<serde_json::Value>(&default_body(&value)).expect("the default body is JSON");
        let mut pairs = Vec::new();
        flatten("", &value, &mut pairs);
    }
    let again = serde_json::to_vec(&batch).expect("a batch serialises");
    let reread =
        wire::decode_batch(&again).unwrap_or_else(|e| panic!("an accepted batch, re-encoded, is refused: {e}"));
    let ids = |b: &wire::Batch| b.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&batch), ids(&reread));
});
