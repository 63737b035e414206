//! One POST of a batch body to the relay, through `host.js` (a `fetch` call
//! there is a few hundred bytes; through gloo-net and web-sys it was 5 KB gzip).

use wasm_bindgen::prelude::*;

use super::host;
pub use super::host::{beacon, keepalive_supported};

/// The relay's answer as the outbox needs it: the status (`None` when there
/// was no answer: network error, CORS refusal, timeout) and `Retry-After`.
pub struct Reply {
    pub status: Option<u16>,
    pub retry_after: Option<String>,
}

/// Sends `body` as `text/plain`: a CORS-simple request, so a relay on another
/// origin needs no preflight. The relay must expose `Retry-After`
/// (`Access-Control-Expose-Headers`) for a cross-origin page to read it.
/// `keepalive` lets the request outlive the page (the browser allows 64 KB
/// of such bodies in flight per page; the caller keeps count). A request
/// that takes longer than `timeout_ms` counts as a network error.
pub async fn post(endpoint: &str, body: &str, timeout_ms: u32, keepalive: bool) -> Reply {
    let answer = wasm_bindgen_futures::JsFuture::from(host::post(endpoint, body, timeout_ms, keepalive)).await;
    let answer = js_sys::Array::from(&answer.unwrap_or(JsValue::UNDEFINED));
    let status = answer.get(0).as_f64().map(|s| s as u16).filter(|s| *s != 0);
    Reply { status, retry_after: answer.get(1).as_string() }
}
