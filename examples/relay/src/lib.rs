//! # cuecast-relay
//!
//! Accepts event batches from browsers, stores them durably (an embedded
//! SQLite file, or a PostgreSQL database that several relays share) and
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
//! - [`catalog`]: the webhooks and sources in force, from the file and the
//!   admin API, as immutable snapshots (its [`catalog::Registry`] does the IO).
//! - [`config`]: the TOML file → the resolved [`config::Config`], with line numbers.
//! - [`samples`]: sample events for `send-test` (the SDK's golden fixtures).
//!
//! IO:
//! - [`storage`]: events, deliveries, attempts and leases behind one
//!   `Storage` enum with two backends: [`storage::sqlite`] (one writer
//!   thread, group commit) and [`storage::postgres`] (pool, multi-row
//!   inserts, leases claimed with `SKIP LOCKED`); migrations for both.
//! - [`ingest`]: `POST /v1/batch`, CORS, limits, `/healthz`, `/readyz`, `/admin/*`.
//! - [`delivery`]: per-webhook queues and workers that send, sign, classify
//!   and schedule retries; the sweep that claims unheld work and the
//!   heartbeat that renews this relay's leases.
//! - [`admin`]: the admin API, `/admin/v1/*` (see `docs/ADMIN_API.md`).
//! - [`console`]: the web console at `/console` (static files in `console/`,
//!   compiled in), a client of the admin API.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.
//! - [`run`]: wires them together; `main.rs` (the CLI) and the tests call it alike.
//!
//! [`error`] holds the crate's one error type.

pub mod admin;
pub mod catalog;
pub mod config;
pub mod console;
pub mod delivery;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod rules;
pub mod samples;
pub mod signing;
pub mod ssrf;
pub mod storage;

mod server;
pub use error::{Error, Result};
pub use server::{app, decompression, run, shutdown_signal, Relay};
