//! The web console at `/console`: three static files (`examples/relay/console/`)
//! compiled into the binary, so a relay needs nothing beside it to show it.
//! The page talks to the admin API (`/admin/v1`, `docs/ADMIN_API.md`) with
//! the token the person types in; this module only serves the files.
//!
//! - `/console` and `/console/`: the page (`index.html`), never cached, so an
//!   upgraded relay is picked up on the next load.
//! - `/console/console.css`, `/console/console.js`: the page asks for them with
//!   `?v=<hash of their contents>`, so they can be cached for good.
//!
//! Every answer carries a Content-Security-Policy that allows scripts, styles
//! and requests from the relay itself only: event properties shown on the page
//! come from any browser that sends events, and must never run as code.
//! Without `[admin] token` the console is off: 404 and a short page saying so.

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::Relay;

const INDEX: &str = include_str!("../console/index.html");
const CSS: &str = include_str!("../console/console.css");
const JS: &str = include_str!("../console/console.js");

/// `default-src 'none'` first, then only what the page uses: its own script,
/// style sheet and the admin API on the same origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const OFF: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>cuecast console: off</title>\
<h1>The console is off</h1>\
<p>This relay has no admin token. Set <code>[admin] token</code> in its configuration \
(or <code>CUECAST_ADMIN_TOKEN</code>) and restart it to use the console and the admin API.</p></html>";

/// One of the files the console is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Index,
    Css,
    Js,
}

/// The assets' version: the start of the SHA-256 of their contents.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::new().chain_update(CSS).chain_update(JS).finalize();
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
});

/// The page, its asset links stamped with [`VERSION`].
static PAGE: LazyLock<String> = LazyLock::new(|| INDEX.replace("{{version}}", &VERSION));

/// The console's routes, to merge into the relay's router.
pub fn router() -> Router<Arc<Relay>> {
    let serve = |asset| {
        move |State(relay): State<Arc<Relay>>| async move { respond(relay.config.admin_token.is_some(), asset) }
    };
    Router::new()
        .route("/console", get(serve(Asset::Index)))
        .route("/console/", get(serve(Asset::Index)))
        .route("/console/console.css", get(serve(Asset::Css)))
        .route("/console/console.js", get(serve(Asset::Js)))
}

/// The answer for `asset`, or the "console is off" page when the admin API is off.
pub fn respond(admin_on: bool, asset: Asset) -> Response {
    let (status, content_type, cache, body): (_, _, _, &str) = match (admin_on, asset) {
        (false, _) => (StatusCode::NOT_FOUND, "text/html; charset=utf-8", "no-store", OFF),
        (true, Asset::Index) => (StatusCode::OK, "text/html; charset=utf-8", "no-cache", PAGE.as_str()),
        // Versioned by the page's `?v=`: a new relay build changes the URL.
        (true, Asset::Css) => (StatusCode::OK, "text/css; charset=utf-8", "public, max-age=31536000, immutable", CSS),
        (true, Asset::Js) => {
            (StatusCode::OK, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable", JS)
        }
    };
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, cache),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[test]
    fn assets_have_their_content_type_cache_policy_and_csp() {
        for (asset, ty, cache) in [
            (Asset::Index, "text/html; charset=utf-8", "no-cache"),
            (Asset::Css, "text/css; charset=utf-8", "public, max-age=31536000, immutable"),
            (Asset::Js, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"),
        ] {
            let r = respond(true, asset);
            assert_eq!(r.status(), StatusCode::OK, "{asset:?}");
            assert_eq!(header(&r, header::CONTENT_TYPE), ty);
            assert_eq!(header(&r, header::CACHE_CONTROL), cache);
            assert!(header(&r, header::CONTENT_SECURITY_POLICY).contains("script-src 'self';"));
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
    }

    #[test]
    fn the_page_links_the_assets_of_this_build() {
        assert_eq!(VERSION.len(), 12);
        assert!(PAGE.contains(&format!("/console/console.js?v={}", *VERSION)));
        assert!(PAGE.contains(&format!("/console/console.css?v={}", *VERSION)));
        assert!(!PAGE.contains("{{"), "every placeholder is filled");
        // Nothing inline: the CSP would block it.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style=") && !PAGE.contains("<style"));
    }

    #[test]
    fn without_an_admin_token_every_console_path_says_it_is_off() {
        for asset in [Asset::Index, Asset::Css, Asset::Js] {
            let r = respond(false, asset);
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-store");
        }
    }
}
