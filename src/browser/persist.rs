//! Where queued events live between page loads, and which page sends them.
//!
//! The [`Shelf`] holds one record per event ([`Record`]) under
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
//! The IndexedDB, `localStorage` and Web Locks calls themselves are in
//! `host.js` (there a few hundred bytes; through web-sys and futures glue
//! they were 5 KB gzip). Keys, record parsing and merging, and every
//! decision stay here.

use js_sys::{Array, Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::host::{self, HostShelf};
use crate::json::Json;
use crate::outbox::{Change, Record};

pub struct Shelf {
    /// IndexedDB (with the rescue copy) or `localStorage`; `None`: memory only.
    host: Option<HostShelf>,
    /// `cuecast:v1:<scope>:`
    prefix: String,
}

impl Shelf {
    /// A shelf that keeps nothing (until [`Shelf::open`] finds storage).
    pub fn memory(scope: &str) -> Shelf {
        Shelf { host: None, prefix: format!("cuecast:v1:{scope}:") }
    }

    /// Opens IndexedDB, else `localStorage` (if a test write succeeds), else memory.
    pub async fn open(scope: &str) -> Shelf {
        let host = JsFuture::from(host::open_shelf()).await.ok().filter(|h| !h.is_null()).map(JsCast::unchecked_into);
        Shelf { host, ..Shelf::memory(scope) }
    }

    /// `cuecast:v1:<scope>:`, also the start of the lock names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn kind(&self) -> String {
        self.host.as_ref().map_or_else(|| "memory only".into(), HostShelf::kind)
    }

    /// Whether other pages (and later loads) see what is written here.
    pub fn shared(&self) -> bool {
        self.host.is_some()
    }

    fn key(&self, owner: &str, id: &str) -> String {
        format!("{}{owner}:{id}", self.prefix)
    }

    /// Writes `changes` in order. The writes are issued before this returns
    /// (so they are on their way even if the page is closed next); the
    /// future says whether they were committed. Never throws.
    pub fn write(&self, changes: Vec<Change>) -> Option<JsFuture> {
        let host = self.host.as_ref().filter(|_| !changes.is_empty())?;
        let entries: Array = changes
            .into_iter()
            .map(|change| match change {
                Change::Put(r) => self.entry(&r),
                Change::Delete { owner, id } => Array::of2(&self.key(&owner, &id).into(), &JsValue::NULL),
            })
            .collect();
        Some(JsFuture::from(host.write(entries)))
    }

    fn entry(&self, r: &Record) -> Array {
        Array::of2(&self.key(&r.owner, &r.id).into(), &r.to_json().into())
    }

    /// Copies `records` to `localStorage` at once (the page may be closing
    /// with IndexedDB writes uncommitted). A full quota only skips the copy.
    pub fn rescue(&self, records: Vec<Record>) {
        if let Some(host) = &self.host {
            host.rescue(records.iter().map(|r| self.entry(r)).collect());
        }
    }

    /// The owners that have records here, without reading the records.
    pub async fn owners(&self) -> Vec<String> {
        let mut owners: Vec<String> = Vec::new();
        for key in strings(self.host.as_ref().map(|h| h.keys(&self.prefix))).await {
            let owner = key.strip_prefix(&self.prefix).and_then(|k| k.split_once(':')).map(|(owner, _)| owner);
            if let Some(owner) = owner.filter(|o| !owners.iter().any(|known| known == o)) {
                owners.push(owner.to_string());
            }
        }
        owners
    }

    /// The records `owner` left here. Where an event has both an IndexedDB
    /// record and a rescue copy, the one further along (attempt, last send) wins.
    pub async fn records_of(&self, owner: &str) -> Vec<Record> {
        let raw = strings(self.host.as_ref().map(|h| h.values(&self.key(owner, "")))).await;
        let parsed = raw
            .iter()
            .filter_map(|text| Json::parse(text))
            .filter_map(|v| Record::from_json(&v))
            .filter(|r| r.owner == owner);
        let progress = |r: &Record| r.batch.as_ref().map_or((0, i64::MIN), |m| (m.attempt, m.last));
        let mut records: Vec<Record> = Vec::new();
        for r in parsed {
            match records.iter_mut().find(|known| known.id == r.id) {
                Some(known) if progress(&r) > progress(known) => *known = r,
                Some(_) => {}
                None => records.push(r),
            }
        }
        records
    }
}

/// The strings a host promise resolves with (none when it fails).
async fn strings(promise: Option<Promise>) -> Vec<String> {
    let Some(promise) = promise else { return Vec::new() };
    let found = JsFuture::from(promise).await.unwrap_or(JsValue::UNDEFINED);
    Array::from(&found).iter().filter_map(|v| v.as_string()).collect()
}

/// The Web Locks API (`navigator.locks`), where the page has it (secure
/// contexts in current browsers).
#[derive(Clone)]
pub struct Locks;

impl Locks {
    pub fn get() -> Option<Locks> {
        host::has_locks().then_some(Locks)
    }

    /// Takes lock `name` and keeps it until the returned function is called
    /// (or the page goes away). Resolves once the lock is granted, with
    /// `None` where the request was refused (the page goes on without it).
    pub async fn hold(&self, name: &str) -> Option<Function> {
        JsFuture::from(host::hold_lock(name)).await.ok()?.dyn_into().ok()
    }

    /// Runs `f` while holding lock `name`; resolves after it is released.
    pub async fn with<F>(&self, name: &str, f: F) -> bool
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        let task = Closure::once_into_js(move || {
            wasm_bindgen_futures::future_to_promise(async move {
                f.await;
                Ok(JsValue::UNDEFINED)
            })
        });
        JsFuture::from(host::with_lock(name, task)).await.is_ok_and(|done| done.is_truthy())
    }

    /// Calls `f` once lock `name` (another page's) is free: that page is gone
    /// or frozen. The lock is released again at once.
    pub fn when_free(&self, name: &str, f: impl FnOnce() + 'static) {
        host::when_free(name, Closure::once_into_js(f));
    }

    /// The names of the locks held now, by any page of this origin.
    pub async fn held(&self) -> Vec<String> {
        strings(Some(host::held_locks())).await
    }
}
