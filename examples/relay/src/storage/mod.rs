//! Durable state: events (deduped by id), deliveries (event × webhook) and
//! every attempt, in one of two backends chosen once at start-up from the
//! `storage` URL:
//!
//! - [`sqlite`]: an embedded file in WAL mode, one writer thread, group
//!   commit. One relay process owns it.
//! - [`postgres`]: a shared PostgreSQL database that any number of relays
//!   use at once; each delivery is *leased* by one relay (`lease_owner`,
//!   `lease_until`), claimed with `FOR UPDATE SKIP LOCKED`, and taken over
//!   by another relay when its lease runs out.
//!
//! [`admin`] holds what the admin API reads (lists keyset-paginated on
//! indexes) and its replays, for both backends.
//!
//! [`Storage`] is the one type the rest of the relay sees. Its methods speak
//! in relay terms (events, deliveries, attempts, leases), never SQL, and both
//! backends keep the same logical schema, versioned by forward-only
//! migrations.
//!
//! It is an enum rather than a trait object: there are exactly two backends,
//! every method is async (a `dyn` trait would box each future), and a `match`
//! per method keeps the dispatch in one readable place.

pub mod admin;
mod catalog;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Storage as StorageUrl;
use crate::error::Result;
use crate::policy::{Bucket, Rate};

/// Status of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    /// Failed for good (3xx, 4xx, render or condition error); not retried.
    Failed,
    /// Retries exhausted, or its webhook was disabled: can be replayed.
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Dead => "dead",
        }
    }
}

/// An event to store with the deliveries it creates.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub name: String,
    pub write_key: String,
    /// The event's `userId`, kept in a column of its own for the admin API's filter.
    pub user_id: Option<String>,
    pub body: String,
    pub deliveries: Vec<NewDelivery>,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub webhook_id: String,
    /// `Pending` normally; `Failed` when its condition could not be
    /// evaluated (with `error`); `Dead` when the webhook is disabled.
    pub status: Status,
    pub error: Option<String>,
}

/// What happened to one [`NewEvent`].
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The id was stored before: nothing new was written.
    pub duplicate: bool,
    /// The pending deliveries created (leased to this relay), to hand to the dispatcher.
    pub pending: Vec<PendingDelivery>,
}

/// A delivery still to attempt.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub id: i64,
    pub msg_id: String,
    pub webhook_id: String,
    pub event_body: Arc<str>,
    pub attempts: u32,
    pub next_attempt_at: i64,
    /// When the delivery was created (its event accepted): the start of the
    /// event-to-webhook latency.
    pub created_at: i64,
}

/// One finished attempt and the delivery's state after it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub at: i64,
    pub http_status: Option<u16>,
    pub duration_ms: i64,
    pub response: Option<String>,
    pub error: Option<String>,
    pub new_status: Status,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
}

/// A stored attempt, for the admin API and tests.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: i64,
    pub status: Option<u16>,
    pub duration_ms: i64,
    pub response: Option<String>,
    pub error: Option<String>,
}

/// Migration 4 on both backends, the admin API (see `admin.rs`): every list
/// is newest first and keyset-paginated, so each filter gets an index ending
/// in the sort key; the (status, id) index replaces (status,
/// next_attempt_at), which no query sorted by. `user_id` is the event's
/// `userId`, for the filter.
const ADMIN_MIGRATION: &str = r#"
    ALTER TABLE events ADD COLUMN user_id TEXT;
    DROP INDEX events_received_at;
    CREATE INDEX events_received ON events(received_at, id);
    CREATE INDEX events_name ON events(name, received_at, id);
    CREATE INDEX events_user ON events(user_id, received_at, id) WHERE user_id IS NOT NULL;
    DROP INDEX deliveries_status;
    CREATE INDEX deliveries_status_id ON deliveries(status, id);
    CREATE INDEX deliveries_webhook_id ON deliveries(webhook_id, id);
    CREATE INDEX deliveries_webhook_status_id ON deliveries(webhook_id, status, id);
    CREATE INDEX attempts_at ON attempts(at);
    "#;

/// Which dead letters to replay.
#[derive(Debug, Clone)]
pub enum Replay {
    One(i64),
    Webhook { webhook_id: String, since: i64, until: i64 },
}

/// What a sweep hands the dispatcher: the disabled webhooks, and deliveries
/// this relay has just taken on (leased to it).
#[derive(Debug, Clone, Default)]
pub struct Work {
    pub disabled: Vec<String>,
    pub pending: Vec<PendingDelivery>,
}

/// How [`Storage::open`] behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Apply missing migrations (otherwise an old schema is an error).
    pub migrate: bool,
    /// How long a relay owns a delivery it has taken on without renewing.
    pub lease: Duration,
    /// How long to keep trying to reach the database at start-up.
    pub wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { migrate: true, lease: Duration::from_secs(30), wait: Duration::ZERO }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub enum Storage {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The number of the newest schema migration of both backends (they move together).
pub const SCHEMA_VERSION: usize = 4;

/// Rows deleted per retention batch: small enough that ingest never waits long.
pub const PRUNE_BATCH: usize = 1000;

/// Applies migrations up to `to` (default: all) without opening the relay's
/// storage (for `cuecast-relay migrate` and upgrade tests). Returns (before, after).
pub async fn migrate(url: &StorageUrl, to: Option<usize>) -> Result<(usize, usize)> {
    let to = to.unwrap_or(SCHEMA_VERSION);
    match url {
        StorageUrl::Sqlite(path) => sqlite::migrate_file(path, to),
        StorageUrl::Postgres(url) => postgres::migrate_url(url, to).await,
    }
}

/// The storage URL for messages, without a password.
pub fn describe(url: &StorageUrl) -> String {
    match url {
        StorageUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        StorageUrl::Postgres(url) => match url::Url::parse(url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "postgres://(unparsable)".into(),
        },
    }
}

impl Storage {
    /// Opens (and, if asked, migrates) the storage `url` names.
    pub async fn open(url: &StorageUrl, options: Options) -> Result<Storage> {
        Ok(match url {
            StorageUrl::Sqlite(path) => Storage::Sqlite(sqlite::Sqlite::open(path, options.migrate)?),
            StorageUrl::Postgres(url) => Storage::Postgres(postgres::Postgres::open(url, options).await?),
        })
    }

    /// Waits until everything submitted before is committed (or, for
    /// PostgreSQL, given up on after a few seconds of the database being away).
    pub async fn flush(&self) -> Result<()> {
        match self {
            Storage::Sqlite(s) => s.flush().await,
            Storage::Postgres(p) => p.flush().await,
        }
    }

    /// Stores events and their deliveries in one transaction; duplicates (by
    /// id) store nothing. Pending deliveries come back leased to this relay.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>> {
        match self {
            Storage::Sqlite(s) => s.ingest(events).await,
            Storage::Postgres(p) => p.ingest(events).await,
        }
    }

    /// Stores an attempt and the delivery's new state (nobody waits); `then`
    /// runs after the commit.
    pub fn record(&self, r: AttemptRecord, then: impl FnOnce() + Send + 'static) {
        match self {
            Storage::Sqlite(s) => s.record(r, then),
            Storage::Postgres(p) => p.record(r, then),
        }
    }

    /// Dead-letters a pending delivery that was not attempted (its webhook
    /// is disabled); `then` runs after the commit.
    pub fn dead_letter(&self, delivery_id: i64, reason: String, then: impl FnOnce() + Send + 'static) {
        match self {
            Storage::Sqlite(s) => s.dead_letter(delivery_id, reason, then),
            Storage::Postgres(p) => p.dead_letter(delivery_id, reason, then),
        }
    }

    /// Work to take on now: the disabled webhooks, and pending deliveries of
    /// `webhooks` that nobody holds (new after a `replay`, or left by a relay
    /// whose lease ran out), at most `limit`, leased to this relay.
    pub async fn claim(&self, webhooks: &[String], limit: usize) -> Result<Work> {
        match self {
            Storage::Sqlite(s) => s.claim().await,
            Storage::Postgres(p) => p.claim(webhooks, limit).await,
        }
    }

    /// Extends this relay's lease on `ids`; returns those it still holds
    /// (another relay may have taken over one whose lease ran out).
    pub async fn renew(&self, ids: Vec<i64>) -> Result<Vec<i64>> {
        match self {
            // One process owns the file: its leases never run out.
            Storage::Sqlite(_) => Ok(ids),
            Storage::Postgres(p) => p.renew(ids).await,
        }
    }

    /// Whether results of attempts are being stored. While they are not, new
    /// attempts wait: their results would only be held in memory, and a relay
    /// that took the deliveries over after the outage would send them again.
    pub fn storing(&self) -> bool {
        match self {
            // The writer thread's failures are disk errors, not outages to wait out.
            Storage::Sqlite(_) => true,
            Storage::Postgres(p) => p.storing(),
        }
    }

    /// Gives up the lease on `ids` (at shutdown) so another relay can take them at once.
    pub async fn release(&self, ids: Vec<i64>) -> Result<()> {
        match self {
            Storage::Sqlite(_) => Ok(()),
            Storage::Postgres(p) => p.release(ids).await,
        }
    }

    /// The limiter for one webhook's `rate_limit`: in this process for the
    /// embedded file, shared by every relay for PostgreSQL.
    pub fn rate_limiter(&self, webhook_id: &str, rate: Rate) -> RateLimiter {
        match self {
            Storage::Sqlite(_) => {
                let start = tokio::time::Instant::now();
                RateLimiter::Local { bucket: Bucket::new(rate, Duration::ZERO), start }
            }
            Storage::Postgres(p) => RateLimiter::Shared { db: p.clone(), webhook_id: webhook_id.into(), rate },
        }
    }

    /// Marks a webhook disabled (after a 410) and dead-letters its pending deliveries.
    pub async fn disable_webhook(&self, webhook_id: String, reason: String) -> Result<()> {
        match self {
            Storage::Sqlite(s) => s.disable_webhook(webhook_id, reason).await,
            Storage::Postgres(p) => p.disable_webhook(webhook_id, reason).await,
        }
    }

    /// Re-enables a webhook disabled by a 410.
    pub async fn enable_webhook(&self, webhook_id: String) -> Result<bool> {
        match self {
            Storage::Sqlite(s) => s.enable_webhook(webhook_id).await,
            Storage::Postgres(p) => p.enable_webhook(webhook_id).await,
        }
    }

    /// Disabled webhooks and why.
    pub async fn disabled_webhooks(&self) -> Result<Vec<(String, String)>> {
        match self {
            Storage::Sqlite(s) => s.disabled_webhooks().await,
            Storage::Postgres(p) => p.disabled_webhooks().await,
        }
    }

    /// Puts dead letters back in the queue with a fresh retry schedule (their
    /// attempt history stays). Returns how many; running relays pick them up
    /// within their sweep interval.
    pub async fn replay(&self, which: Replay) -> Result<usize> {
        match self {
            Storage::Sqlite(s) => s.replay(which).await,
            Storage::Postgres(p) => p.replay(which).await,
        }
    }

    /// The attempts of one delivery, oldest first.
    pub async fn attempts(&self, delivery_id: i64) -> Result<Vec<Attempt>> {
        match self {
            Storage::Sqlite(s) => s.attempts(delivery_id).await,
            Storage::Postgres(p) => p.attempts(delivery_id).await,
        }
    }

    /// Deliveries per status.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>> {
        match self {
            Storage::Sqlite(s) => s.counts().await,
            Storage::Postgres(p) => p.counts().await,
        }
    }

    /// When the oldest pending delivery was created (for `/metrics`).
    pub async fn oldest_pending(&self) -> Result<Option<i64>> {
        const SQL: &str = "SELECT MIN(created_at) FROM deliveries WHERE status = 'pending'";
        match self {
            Storage::Sqlite(s) => s.call(|c| Ok(c.query_row(SQL, [], |r| r.get(0))?)).await,
            Storage::Postgres(p) => Ok(p.client().await?.query_one(SQL, &[]).await?.get(0)),
        }
    }

    /// Storage reachable and the schema current (for `/readyz`).
    pub async fn ready(&self) -> Result<()> {
        match self {
            Storage::Sqlite(s) => s.ready().await,
            Storage::Postgres(p) => p.ready().await,
        }
    }

    /// Forgets up to `batch` events received before `before` (Unix ms) whose
    /// deliveries are all finished (delivered or failed), with their
    /// deliveries and attempts; dead letters and pending work stay. Returns
    /// how many events went; call again while it returns `batch`.
    pub async fn prune(&self, before: i64, batch: usize) -> Result<usize> {
        match self {
            Storage::Sqlite(s) => s.prune(before, batch).await,
            Storage::Postgres(p) => p.prune(before, batch).await,
        }
    }
}

/// A webhook's `rate_limit`, see [`Storage::rate_limiter`].
pub enum RateLimiter {
    /// A token bucket in this process.
    Local { bucket: Bucket, start: tokio::time::Instant },
    /// The same token bucket, kept in one PostgreSQL row that every relay
    /// takes from: the limit holds across relays exactly as in one process.
    Shared { db: postgres::Postgres, webhook_id: String, rate: Rate },
}

impl RateLimiter {
    /// Takes one attempt's token, or says how long to wait before asking again.
    pub async fn take(&mut self) -> Result<(), Duration> {
        match self {
            RateLimiter::Local { bucket, start } => bucket.take(start.elapsed()),
            RateLimiter::Shared { db, webhook_id, rate } => match db.take_token(webhook_id, *rate).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, webhook = %webhook_id, "rate limit counter unreachable; waiting");
                    Err(Duration::from_secs(1))
                }
            },
        }
    }
}
