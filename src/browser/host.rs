//! The Rust side of `host.js`: every browser call the wasm layer makes
//! through plain JavaScript (fetch, sendBeacon, the auto-capture DOM walk,
//! IndexedDB, localStorage, Web Locks, the page context, timers), declared
//! in one block so that the glue imports the snippet once. Each is a few
//! lines of JS; through web-sys, gloo and futures glue they cost kilobytes
//! of wasm (README, "Size"). What the calls mean and when to make them is
//! decided by the modules that use them.

use js_sys::{Array, Function, Promise};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/browser/host.js")]
extern "C" {
    // transport.rs
    /// Resolves with `[status, Retry-After]`, status 0 without an answer.
    pub fn post(url: &str, body: &str, timeout_ms: u32, keepalive: bool) -> Promise;
    /// Whether `fetch` supports `keepalive` here (`Request.prototype.keepalive`).
    #[wasm_bindgen(js_name = keepaliveSupported)]
    pub fn keepalive_supported() -> bool;
    /// Queues `body` with `navigator.sendBeacon` as a `text/plain` Blob (no
    /// preflight, no headers); false when the browser refused it (over its quota).
    pub fn beacon(url: &str, body: &str) -> bool;

    // capture.rs
    /// Installs the delegated listeners; `found(event, properties)` per interaction.
    pub fn capture(found: &Closure<dyn FnMut(String, JsValue)>);

    // persist.rs
    /// The JS side of a shelf: `kind`, `write`, `rescue`, `keys`, `values`.
    pub type HostShelf;
    /// Resolves with IndexedDB's or localStorage's shelf, or null.
    #[wasm_bindgen(js_name = openShelf)]
    pub fn open_shelf() -> Promise;
    #[wasm_bindgen(method, getter)]
    pub fn kind(this: &HostShelf) -> String;
    /// `[key, value or null]` pairs; resolves when committed, rejects when not.
    #[wasm_bindgen(method)]
    pub fn write(this: &HostShelf, changes: Array) -> Promise;
    #[wasm_bindgen(method)]
    pub fn rescue(this: &HostShelf, entries: Array);
    #[wasm_bindgen(method)]
    pub fn keys(this: &HostShelf, low: &str) -> Promise;
    #[wasm_bindgen(method)]
    pub fn values(this: &HostShelf, low: &str) -> Promise;
    #[wasm_bindgen(js_name = hasLocks)]
    pub fn has_locks() -> bool;
    #[wasm_bindgen(js_name = holdLock)]
    pub fn hold_lock(name: &str) -> Promise;
    #[wasm_bindgen(js_name = withLock)]
    pub fn with_lock(name: &str, task: JsValue) -> Promise;
    #[wasm_bindgen(js_name = whenFree)]
    pub fn when_free(name: &str, free: JsValue);
    #[wasm_bindgen(js_name = heldLocks)]
    pub fn held_locks() -> Promise;

    // convert.rs
    /// The JSON text of `value`, or `[path, why]` when it cannot be sent as
    /// the developer meant it (a function, a cycle, an unsafe integer…).
    pub fn encode(value: &JsValue, field: &str) -> JsValue;

    // mod.rs
    /// Calls `on(what, value)` on "hide", "freeze", "thaw", "online", and
    /// "identity" (with the new value) when another tab stores `identity_key`.
    pub fn lifecycle(identity_key: &str, on: &Closure<dyn FnMut(String, Option<String>)>);

    // page.rs
    /// `[url, path, referrer, title]`.
    #[wasm_bindgen(js_name = pageContext)]
    pub fn page_context() -> Array;
    /// `[userAgent, locale, timezone, screen width, screen height]`.
    #[wasm_bindgen(js_name = staticContext)]
    pub fn static_context() -> Array;
    /// Returns the function that cancels it.
    pub fn timer(ms: u32, every: bool, tick: &Closure<dyn FnMut()>) -> Function;
}
