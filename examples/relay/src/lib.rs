//! # cuecast-relay
//!
//! Accepts event batches from browsers, stores them durably in SQLite and
//! delivers each event to the webhooks whose rules it matches.
//!
//! # Layout
//!
//! Pure logic (no IO, unit-tested in place):
//! - [`policy`]: event-name patterns, outcome classification, retry
//!   schedule with jitter, token buckets.
//! - [`signing`]: Standard Webhooks signatures.
//! - [`ssrf`]: which addresses a delivery may dial (plus the DNS resolver
//!   that applies it to every connection).
//! - [`rules`]: `when` conditions and body/url templates (minijinja).
//! - [`config`]: the TOML file → the resolved [`config::Config`], with line numbers.
//! - [`samples`]: sample events for `send-test` (the SDK's golden fixtures).
//!
//! IO:
//! - [`storage`]: the SQLite file (events, deliveries, attempts), one writer
//!   thread that commits concurrent requests together; migrations.
//! - [`ingest`]: `POST /v1/batch`, CORS, limits, `/healthz`, `/readyz`, `/admin/*`.
//! - [`delivery`]: per-webhook queues and workers that send, sign, classify
//!   and schedule retries.
//! - [`run`]: wires them together; `main.rs` (the CLI) and the tests call it alike.
//!
//! [`error`] holds the crate's one error type.

pub mod config;
pub mod delivery;
pub mod error;
pub mod ingest;
pub mod policy;
pub mod rules;
pub mod samples;
pub mod signing;
pub mod ssrf;
pub mod storage;

mod server;
pub use error::{Error, Result};
pub use server::{app, run, shutdown_signal, Relay};
