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

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbKeyRange, IdbObjectStore, IdbRequest, IdbTransactionMode, Storage, Window};

use crate::outbox::{Change, Record};

const DB_NAME: &str = "cuecast";
const STORE: &str = "events";

enum Read {
    Keys,
    Values,
}

enum Backend {
    Idb(IdbDatabase),
    Local(Storage),
    Memory,
}

pub struct Shelf {
    backend: Backend,
    /// `cuecast:v1:<scope>:`
    prefix: String,
    /// `localStorage` beside IndexedDB, for the copy made when the page is hidden.
    rescue: Option<Storage>,
}

impl Shelf {
    /// A shelf that keeps nothing (until [`Shelf::open`] finds storage).
    pub fn memory(scope: &str) -> Shelf {
        Shelf { backend: Backend::Memory, prefix: format!("cuecast:v1:{scope}:"), rescue: None }
    }

    /// Opens IndexedDB, else `localStorage` (if a test write succeeds), else memory.
    pub async fn open(window: &Window, scope: &str) -> Shelf {
        let prefix = format!("cuecast:v1:{scope}:");
        let local = window.local_storage().ok().flatten().filter(|s| {
            let probe = "cuecast:v1:probe";
            s.set_item(probe, "1").is_ok() && s.remove_item(probe).is_ok()
        });
        if let Some(db) = open_idb(window).await {
            return Shelf { backend: Backend::Idb(db), prefix, rescue: local };
        }
        match local {
            Some(storage) => Shelf { backend: Backend::Local(storage), prefix, rescue: None },
            None => Shelf { backend: Backend::Memory, prefix, rescue: None },
        }
    }

    /// `cuecast:v1:<scope>:`, also the start of the lock names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Idb(_) => "IndexedDB",
            Backend::Local(_) => "localStorage",
            Backend::Memory => "memory only",
        }
    }

    /// Whether other pages (and later loads) see what is written here.
    pub fn shared(&self) -> bool {
        !matches!(self.backend, Backend::Memory)
    }

    fn key(&self, owner: &str, id: &str) -> String {
        format!("{}{owner}:{id}", self.prefix)
    }

    /// Writes `changes` in order. The writes are issued before this returns
    /// (so they are on their way even if the page is closed next); the
    /// future says whether they were committed. Never throws.
    pub fn write(&self, changes: Vec<Change>) -> Option<JsFuture> {
        if changes.is_empty() {
            return None;
        }
        let value = |r: &Record| serde_json::to_string(r).unwrap_or_default();
        match &self.backend {
            Backend::Memory => None,
            Backend::Local(storage) => {
                let mut ok = true;
                for change in changes {
                    ok &= match change {
                        Change::Put(r) => storage.set_item(&self.key(&r.owner, &r.id), &value(&r)).is_ok(),
                        Change::Delete { owner, id } => storage.remove_item(&self.key(&owner, &id)).is_ok(),
                    };
                }
                Some(JsFuture::from(if ok {
                    Promise::resolve(&JsValue::TRUE)
                } else {
                    Promise::reject(&JsValue::FALSE)
                }))
            }
            Backend::Idb(db) => {
                let tx = db.transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite).ok()?;
                let store = tx.object_store(STORE).ok()?;
                for change in changes {
                    let _ = match change {
                        Change::Put(r) => store.put_with_key(&value(&r).into(), &self.key(&r.owner, &r.id).into()),
                        Change::Delete { owner, id } => {
                            let key = self.key(&owner, &id);
                            if let Some(rescue) = &self.rescue {
                                let _ = rescue.remove_item(&key);
                            }
                            store.delete(&key.into())
                        }
                    };
                }
                // A quota error aborts the transaction: reported, not thrown.
                Some(JsFuture::from(Promise::new(&mut |resolve, reject| {
                    tx.set_oncomplete(Some(&resolve));
                    tx.set_onabort(Some(&reject));
                    tx.set_onerror(Some(&reject));
                })))
            }
        }
    }

    /// Copies `records` to `localStorage` at once (the page may be closing
    /// with IndexedDB writes uncommitted). A full quota only skips the copy.
    pub fn rescue(&self, records: Vec<Record>) {
        let Some(storage) = &self.rescue else { return };
        for r in records {
            if storage.set_item(&self.key(&r.owner, &r.id), &serde_json::to_string(&r).unwrap_or_default()).is_err() {
                return;
            }
        }
    }

    fn local(&self) -> Option<&Storage> {
        match &self.backend {
            Backend::Local(storage) => Some(storage),
            _ => self.rescue.as_ref(),
        }
    }

    /// The owners that have records here, without reading the records.
    pub async fn owners(&self) -> Vec<String> {
        let mut keys: Vec<String> = match self.local() {
            Some(storage) => local_keys(storage, &self.prefix),
            None => Vec::new(),
        };
        keys.extend(self.idb_strings("", Read::Keys).await);
        let mut owners: Vec<String> = Vec::new();
        for key in &keys {
            let owner = key[self.prefix.len()..].split_once(':').map(|(owner, _)| owner);
            if let Some(owner) = owner.filter(|o| !owners.iter().any(|known| known == o)) {
                owners.push(owner.to_string());
            }
        }
        owners
    }

    /// The records `owner` left here. Where an event has both an IndexedDB
    /// record and a rescue copy, the one further along (attempt, last send) wins.
    pub async fn records_of(&self, owner: &str) -> Vec<Record> {
        let mine = self.key(owner, "");
        let mut raw: Vec<String> = match self.local() {
            Some(storage) => {
                local_keys(storage, &mine).iter().filter_map(|k| storage.get_item(k).ok().flatten()).collect()
            }
            None => Vec::new(),
        };
        raw.extend(self.idb_strings(owner, Read::Values).await);
        // The browser's JSON.parse: a Rust parser would cost bundle bytes.
        let parsed = raw
            .iter()
            .filter_map(|text| js_sys::JSON::parse(text).ok())
            .filter_map(|v| super::convert::to_json(&v, "").ok())
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

    /// The keys or the values (stored as JSON strings) under `owner` (every
    /// owner when empty) in IndexedDB; nothing for the other backends.
    async fn idb_strings(&self, owner: &str, read: Read) -> Vec<String> {
        let Backend::Idb(db) = &self.backend else { return Vec::new() };
        let request = match (self.store(db), self.range(owner)) {
            (Some(store), Some(range)) => match read {
                Read::Keys => store.get_all_keys_with_key(&range).ok(),
                Read::Values => store.get_all_with_key(&range).ok(),
            },
            _ => None,
        };
        let found = match request {
            Some(request) => done(&request).await.unwrap_or(JsValue::UNDEFINED),
            None => JsValue::UNDEFINED,
        };
        Array::from(&found).iter().filter_map(|v| v.as_string()).collect()
    }

    fn store(&self, db: &IdbDatabase) -> Option<IdbObjectStore> {
        db.transaction_with_str(STORE).ok()?.object_store(STORE).ok()
    }

    /// Keys under `prefix` + `owner` (every owner when empty).
    fn range(&self, owner: &str) -> Option<IdbKeyRange> {
        let low = if owner.is_empty() { self.prefix.clone() } else { self.key(owner, "") };
        let high = format!("{low}\u{ffff}");
        IdbKeyRange::bound(&low.into(), &high.into()).ok()
    }
}

fn local_keys(storage: &Storage, prefix: &str) -> Vec<String> {
    (0..storage.length().unwrap_or(0))
        .filter_map(|i| storage.key(i).ok().flatten())
        .filter(|k| k.starts_with(prefix))
        .collect()
}

async fn open_idb(window: &Window) -> Option<IdbDatabase> {
    // `indexedDB` itself throws in some sandboxed frames; `open` fails in
    // some private modes: both fall back.
    let factory = window.indexed_db().ok()??;
    let request = factory.open_with_u32(DB_NAME, 1).ok()?;
    let upgrade = Closure::<dyn FnMut(web_sys::Event)>::new({
        let request = request.clone();
        move |_| {
            if let Some(db) = request.result().ok().and_then(|r| r.dyn_into::<IdbDatabase>().ok()) {
                let _ = db.create_object_store(STORE);
            }
        }
    });
    request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let opened = done(&request).await;
    request.set_onupgradeneeded(None);
    opened.ok()?.dyn_into::<IdbDatabase>().ok()
}

/// Waits for an IndexedDB request and returns its result.
async fn done(request: &IdbRequest) -> Result<JsValue, JsValue> {
    let finished = Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(finished).await?;
    request.result()
}

/// The Web Locks API (`navigator.locks`), where the page has it (secure
/// contexts in current browsers). Called through `Reflect`: web-sys keeps
/// its bindings behind an unstable flag.
#[derive(Clone)]
pub struct Locks(JsValue);

impl Locks {
    pub fn get(window: &Window) -> Option<Locks> {
        let locks = Reflect::get(&window.navigator(), &"locks".into()).ok()?;
        (!locks.is_undefined() && !locks.is_null()).then_some(Locks(locks))
    }

    fn call(&self, method: &str, args: &Array) -> Option<Promise> {
        let f: Function = Reflect::get(&self.0, &method.into()).ok()?.dyn_into().ok()?;
        f.apply(&self.0, args).ok()?.dyn_into().ok()
    }

    /// Takes lock `name` and keeps it until the returned function is called
    /// (or the page goes away). Resolves once the lock is granted.
    pub async fn hold(&self, name: &str) -> Option<Function> {
        let mut release = None;
        let held = Promise::new(&mut |resolve, _| release = Some(resolve));
        let mut granted_resolve = None;
        let granted = Promise::new(&mut |resolve, _| granted_resolve = Some(resolve));
        let granted_resolve = granted_resolve?;
        let callback = Closure::once_into_js(move |_lock: JsValue| {
            let _ = granted_resolve.call0(&JsValue::UNDEFINED);
            held
        });
        let _ = self.call("request", &Array::of2(&name.into(), &callback))?;
        JsFuture::from(granted).await.ok()?;
        release
    }

    /// Runs `f` while holding lock `name`; resolves after it is released.
    pub async fn with<F>(&self, name: &str, f: F) -> bool
    where
        F: std::future::Future<Output = ()> + 'static,
    {
        let callback = Closure::once_into_js(move |_lock: JsValue| {
            wasm_bindgen_futures::future_to_promise(async move {
                f.await;
                Ok(JsValue::UNDEFINED)
            })
        });
        match self.call("request", &Array::of2(&name.into(), &callback)) {
            Some(p) => JsFuture::from(p).await.is_ok(),
            None => false,
        }
    }

    /// Calls `f` once lock `name` (another page's) is free: that page is gone
    /// or frozen. The lock is released again at once.
    pub fn when_free(&self, name: &str, f: impl FnOnce() + 'static) {
        let callback = Closure::once_into_js(move |_lock: JsValue| f());
        let _ = self.call("request", &Array::of2(&name.into(), &callback));
    }

    /// The names of the locks held now, by any page of this origin.
    pub async fn held(&self) -> Vec<String> {
        let Some(p) = self.call("query", &Array::new()) else { return Vec::new() };
        let Ok(snapshot) = JsFuture::from(p).await else { return Vec::new() };
        let held = Reflect::get(&snapshot, &"held".into()).unwrap_or(JsValue::UNDEFINED);
        Array::from(&held).iter().filter_map(|l| Reflect::get(&l, &"name".into()).ok()?.as_string()).collect()
    }
}
