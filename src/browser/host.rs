//! The Rust side of `host.js`: every browser call the wasm layer makes
//! through plain JavaScript, declared in one block so that the glue imports
//! the snippet once. The IO that takes turns (opening storage, Web Locks,
//! requests, timers, the page lifecycle) is sequenced there by one
//! [`Driver`] per client, which reports each outcome to one of the client's
//! hooks (`_attach`, `_adopt`, `_reply`, `_wake`, … in `mod.rs`): no Rust
//! futures, whose runtime and state machines cost kilobytes of wasm
//! (README, "Size"). What the calls mean and what to do next is decided in
//! Rust.

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;

use super::Client;

#[wasm_bindgen(module = "/src/browser/host.js")]
extern "C" {
    /// The IO of one client (see `driver` in `host.js`).
    pub type Driver;
    /// `prefix`: `cuecast:v1:<scope>:`, the client's storage and lock namespace.
    pub fn driver(prefix: &str, page: &str, identity_key: &str, capture: bool, debug: bool) -> Driver;
    /// Installs the listeners and opens storage, then calls the hooks.
    #[wasm_bindgen(method)]
    pub fn start(this: &Driver, client: Client);
    /// POSTs `body`; `_reply` gets the answer. `keepalive_bytes` > 0: a keepalive request.
    #[wasm_bindgen(method)]
    pub fn send(this: &Driver, batch_id: &str, url: &str, body: &str, timeout_ms: u32, keepalive_bytes: u32);
    /// `_wake` in `ms` (replacing the previous one); negative cancels.
    #[wasm_bindgen(method)]
    pub fn wake(this: &Driver, ms: f64);
    /// `_save` on the next microtask.
    #[wasm_bindgen(method)]
    pub fn soon(this: &Driver);
    /// A promise for the next `settle`: what `flush()` returns.
    #[wasm_bindgen(method)]
    pub fn flush(this: &Driver) -> Promise;
    /// Resolves every waiting `flush()` with this report.
    #[wasm_bindgen(method)]
    pub fn settle(this: &Driver, sent: f64, failed: f64, pending: f64, dropped: f64, dropped_why: Option<&str>);
    /// `[key, value or null]` entries, written in order.
    #[wasm_bindgen(method)]
    pub fn write(this: &Driver, entries: Array);
    /// The entries, copied synchronously to `localStorage`.
    #[wasm_bindgen(method)]
    pub fn rescue(this: &Driver, entries: Array);

    /// Whether `fetch` supports `keepalive` here (`Request.prototype.keepalive`).
    #[wasm_bindgen(js_name = keepaliveSupported)]
    pub fn keepalive_supported() -> bool;
    /// Queues `body` with `navigator.sendBeacon` as a `text/plain` Blob (no
    /// preflight, no headers); false when the browser refused it (over its quota).
    pub fn beacon(url: &str, body: &str) -> bool;
    /// The JSON text of `value`, or `[path, why]` when it cannot be sent as
    /// the developer meant it (a function, a cycle, an unsafe integer…).
    pub fn encode(value: &JsValue, field: &str) -> JsValue;
    #[wasm_bindgen(js_name = hasWindow)]
    pub fn has_window() -> bool;
    /// `Date.now()`.
    pub fn now() -> f64;
    /// `navigator.onLine`.
    pub fn online() -> bool;
    /// `url` resolved against the page's address; `None` when it cannot be.
    #[wasm_bindgen(js_name = resolveUrl)]
    pub fn resolve_url(url: &str) -> Option<String>;
    /// Fills `bytes` from `crypto.getRandomValues` (else `Math.random`).
    pub fn random(bytes: &mut [u8]);
    /// `localStorage.getItem`, `None` where storage is unavailable.
    pub fn load(key: &str) -> Option<String>;
    /// `localStorage.setItem`; false where it failed (quota, disabled).
    pub fn store(key: &str, value: &str) -> bool;
    /// `console.log("[cuecast]", message)`.
    pub fn log(message: &str);
    /// `console.warn(message)`.
    pub fn warn(message: &str);
    /// A JS `Error` named `CuecastError` with `code` and `field` properties.
    pub fn error(message: &str, code: &str, field: &str) -> JsValue;
    /// `[url, path, referrer, title]`.
    #[wasm_bindgen(js_name = pageContext)]
    pub fn page_context() -> Array;
    /// `[userAgent, locale, timezone, screen width, screen height]`.
    #[wasm_bindgen(js_name = staticContext)]
    pub fn static_context() -> Array;
}
