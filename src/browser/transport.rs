//! One POST of a batch body to the relay.

use gloo_net::http::Request;
use wasm_bindgen::JsValue;
use web_sys::{AbortController, Blob, BlobPropertyBag, Headers, RequestInit};

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
/// of such bodies in flight per page; the caller keeps count).
pub async fn post(endpoint: &str, body: String, timeout_ms: u32, keepalive: bool) -> Reply {
    let controller = AbortController::new().ok();
    // Without a deadline a relay that accepts and never answers would hold
    // the one in-flight batch forever.
    let signal = controller.as_ref().map(|c| c.signal());
    let _deadline = controller.map(|c| gloo_timers::callback::Timeout::new(timeout_ms, move || c.abort()));
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(&body));
    // web-sys has no setter for `keepalive`; the dictionary is a plain object.
    let _ = js_sys::Reflect::set(&init, &JsValue::from_str("keepalive"), &JsValue::from_bool(keepalive));
    init.set_signal(signal.as_ref());
    if let Ok(headers) = Headers::new() {
        let _ = headers.set("Content-Type", "text/plain;charset=UTF-8");
        init.set_headers(&headers);
    }
    let response = match web_sys::Request::new_with_str_and_init(endpoint, &init) {
        Ok(request) => Request::from(request).send().await,
        Err(_) => return Reply { status: None, retry_after: None },
    };
    match response {
        Ok(r) => {
            let reply = Reply { status: Some(r.status()), retry_after: r.headers().get("retry-after") };
            // Read the (small) body: until it is consumed the browser counts a
            // keepalive request against the page's 64 KB, and later ones fail.
            let _ = r.text().await;
            reply
        }
        Err(_) => Reply { status: None, retry_after: None },
    }
}

/// Whether `fetch` supports `keepalive` here (`Request.prototype.keepalive`).
pub fn keepalive_supported() -> bool {
    let prototype = js_sys::Reflect::get(&js_sys::global(), &"Request".into())
        .and_then(|request| js_sys::Reflect::get(&request, &"prototype".into()));
    prototype.is_ok_and(|p| js_sys::Reflect::has(&p, &"keepalive".into()).unwrap_or(false))
}

/// Queues `body` with `navigator.sendBeacon` as a `text/plain` Blob (no
/// preflight, no headers); false when the browser refused it (over its quota).
pub fn beacon(endpoint: &str, body: &str) -> bool {
    let Some(window) = web_sys::window() else { return false };
    let options = BlobPropertyBag::new();
    options.set_type("text/plain;charset=UTF-8");
    let parts = js_sys::Array::of1(&JsValue::from_str(body));
    let Ok(blob) = Blob::new_with_str_sequence_and_options(&parts, &options) else { return false };
    window.navigator().send_beacon_with_opt_blob(endpoint, Some(&blob)).unwrap_or(false)
}
