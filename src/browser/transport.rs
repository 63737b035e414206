//! One POST of a batch body to the relay.

use gloo_net::http::Request;
use web_sys::AbortController;

/// The relay's answer as the outbox needs it: the status (`None` when there
/// was no answer: network error, CORS refusal, timeout) and `Retry-After`.
pub struct Reply {
    pub status: Option<u16>,
    pub retry_after: Option<String>,
}

/// Sends `body` as `text/plain`: a CORS-simple request, so a relay on another
/// origin needs no preflight. The relay must expose `Retry-After`
/// (`Access-Control-Expose-Headers`) for a cross-origin page to read it.
pub async fn post(endpoint: &str, body: String, timeout_ms: u32) -> Reply {
    let controller = AbortController::new().ok();
    let signal = controller.as_ref().map(|c| c.signal());
    // Without a deadline a relay that accepts and never answers would hold
    // the one in-flight batch forever.
    let _deadline = controller.map(|c| gloo_timers::callback::Timeout::new(timeout_ms, move || c.abort()));
    let request = Request::post(endpoint)
        .header("Content-Type", "text/plain;charset=UTF-8")
        .abort_signal(signal.as_ref())
        .body(body);
    let response = match request {
        Ok(request) => request.send().await,
        Err(e) => Err(e),
    };
    match response {
        Ok(r) => Reply { status: Some(r.status()), retry_after: r.headers().get("retry-after") },
        Err(_) => Reply { status: None, retry_after: None },
    }
}
