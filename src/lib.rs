//! # cuecast
//!
//! Captures in-app guidance events (ShoutOut clicks, survey submissions,
//! onboarding tasks, walk-through goals and custom events) in the browser,
//! batches them and delivers them to any relay URL.
//!
//! ## Layout
//!
//! Pure logic, built and tested on the host with plain `cargo test`:
//! - [`wire`]: the batch/event JSON shared with the relay (contract v1).
//! - [`events`]: built-in event names and the rules their properties obey.
//! - [`error`]: the one error type; every error names its field.
//! - [`json`]: the small JSON value the SDK reads and writes (no serde_json in the browser).
//! - [`time`]: RFC 3339 formatting and parsing.
//! - [`config`]: `init()` options resolved into one [`config::Config`] (every default).
//! - [`retry`]: answer classification, backoff with jitter, `Retry-After`.
//! - [`outbox`]: queue → batches → answers; one batch in flight; page-hide drain.
//! - [`tracker`]: identity, sessions, and a call becoming a queued event.
//!
//! Browser IO sits in `browser/` (`mod.rs` the exported client, its hooks
//! and `pump`, `convert.rs` JS values → [`json::Json`], `page.rs` clock/
//! storage/context, `persist.rs` the durable queue's records), compiled only
//! for `wasm32` with the `browser` feature. The browser calls themselves,
//! and the driver that sequences them and calls the client's hooks, are
//! plain JavaScript in `browser/host.js`, declared in `browser/host.rs`. The relay links
//! this crate with default features off and gets the pure part only.

pub mod config;
pub mod error;
pub mod events;
pub mod json;
pub mod outbox;
pub mod retry;
pub mod time;
pub mod tracker;
pub mod wire;

#[cfg(all(target_arch = "wasm32", feature = "browser"))]
mod browser;

pub use error::Error;
