//! Where queued events live between page loads, and which page sends them.
//!
//! The shelf holds one record per event ([`Record`]) under
//! `cuecast:v1:<scope>:<owner page>:<event id>`, in IndexedDB, else in
//! `localStorage` (IndexedDB refused: some private modes, blocked storage),
//! else nowhere (the events live as long as the page). IndexedDB writes are
//! asynchronous, and a page closed a few milliseconds after `track()` can
//! take uncommitted ones with it, so when the page is hidden the pending
//! events are also copied, synchronously, to `localStorage` (the rescue
//! copy, deleted with the events); reads take both. The outbox decides
//! what to write; this module only writes it, and never throws into the page:
//! a full quota is logged and the events stay in memory.
//!
//! Several tabs share the shelf. Each event is sent by the page that owns its
//! record, and a page owns a Web Lock named after itself for as long as it
//! lives. The browser releases that lock when the page closes or crashes, so
//! "the owner's lock is not held" is exactly "the owner is gone": another
//! page then adopts the records under an exclusive adoption lock (so two
//! pages never adopt the same record) and rewrites them as its own before
//! letting go. Without Web Locks (plain-http pages, old browsers) a page
//! adopts every other owner's records at start: an event may then be sent by
//! two live tabs, and the relay drops the duplicate by its id.
//!
//! The IndexedDB, `localStorage` and Web Locks calls, and their sequence
//! (open, take the page lock, adopt under the adoption lock, watch the pages
//! still alive), run in `host.js`'s driver (there a few hundred bytes;
//! through web-sys and Rust futures they were kilobytes). What to store, the
//! keys, record parsing and merging, and what to adopt stay here and in the
//! outbox.

use js_sys::Array;
use wasm_bindgen::JsValue;

use crate::json::Json;
use crate::outbox::{Change, Record};

/// `[key, value or null]` entries for the driver's `write` and `rescue`:
/// records under `<prefix><owner>:<id>`, deletions as null.
pub fn entries(prefix: &str, changes: impl IntoIterator<Item = Change>) -> Array {
    changes
        .into_iter()
        .map(|change| {
            let (owner, id, value) = match change {
                Change::Put(r) => {
                    let json = r.to_json();
                    (r.owner, r.id, JsValue::from_str(&json))
                }
                Change::Delete { owner, id } => (owner, id, JsValue::NULL),
            };
            Array::of2(&format!("{prefix}{owner}:{id}").into(), &value)
        })
        .collect()
}

/// The records among stored `texts` owned by pages other than `page` (a
/// corrupt or foreign entry is skipped, never sent).
/// Where an event has both an IndexedDB record and a rescue copy, the one
/// further along (attempt, last send) wins.
pub fn records(texts: &Array, page: &str) -> Vec<Record> {
    let progress = |r: &Record| r.batch.as_ref().map_or((0, i64::MIN), |m| (m.attempt, m.last));
    let mut records: Vec<Record> = Vec::new();
    let parsed =
        texts.iter().filter_map(|t| Record::from_json(&Json::parse(&t.as_string()?)?)).filter(|r| r.owner != page);
    for r in parsed {
        match records.iter_mut().find(|known| known.id == r.id && known.owner == r.owner) {
            Some(known) if progress(&r) > progress(known) => *known = r,
            Some(_) => {}
            None => records.push(r),
        }
    }
    records
}
