//! The shared backend: one PostgreSQL database that any number of relays
//! use at once.
//!
//! - A connection pool (deadpool) with cached prepared statements; ingest
//!   writes a whole batch in one statement of three multi-row
//!   `INSERT … SELECT FROM UNNEST` (data-modifying CTEs), so one round-trip
//!   and one commit whatever the batch size. PostgreSQL itself commits concurrent transactions with one
//!   WAL flush, so no group commit of our own is needed.
//! - Leases: each pending delivery has an owner and a `lease_until` (Unix ms
//!   on the database's clock). The relay that ingests an event leases its
//!   deliveries to itself; it renews the leases of everything it holds every
//!   quarter lease, and takes on unheld work (replayed, or left by a relay
//!   that died) with `FOR UPDATE SKIP LOCKED`, so relays never wait for each
//!   other. Every write about a delivery is fenced by `lease_owner = me`.
//! - Results of attempts queue on a channel; one writer task stores
//!   everything queued in one statement (group commit again, and in order,
//!   so a delivery's final result never lands before its retry), and retries
//!   until the database takes it: an attempt made while the database is away
//!   is not forgotten.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_util::task::TaskTracker;

use super::{
    now_ms, Attempt, AttemptRecord, NewEvent, PendingDelivery, Replay, Status, StoredEvent, Work, SCHEMA_VERSION,
};
use crate::error::{Error, Result};
use crate::policy::Rate;

/// Forward-only migrations; `cuecast_schema` lists the versions applied.
/// The same logical schema as the SQLite file (`BIGINT` Unix ms for times),
/// plus the shared rate-limit buckets.
const MIGRATIONS: &[&str] = &[
    // 1: events, deliveries, attempts.
    r#"
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        write_key   TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE INDEX events_received_at ON events(received_at);
    CREATE TABLE deliveries (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id        TEXT NOT NULL REFERENCES events(id),
        webhook_id      TEXT NOT NULL,
        msg_id          TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        created_at      BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL,
        last_error      TEXT
    );
    CREATE INDEX deliveries_status ON deliveries(status, next_attempt_at);
    CREATE INDEX deliveries_webhook ON deliveries(webhook_id, status, updated_at);
    CREATE INDEX deliveries_event ON deliveries(event_id);
    CREATE TABLE attempts (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id BIGINT NOT NULL REFERENCES deliveries(id),
        at          BIGINT NOT NULL,
        status      INTEGER,
        duration_ms BIGINT NOT NULL,
        response    TEXT,
        error       TEXT
    );
    CREATE INDEX attempts_delivery ON attempts(delivery_id);
    CREATE TABLE webhook_state (
        webhook_id  TEXT PRIMARY KEY,
        disabled_at BIGINT,
        reason      TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    "#,
    // 2: leases, so many relays can share the work; one token bucket per rate-limited webhook.
    r#"
    ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
    ALTER TABLE deliveries ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX deliveries_lease ON deliveries(lease_until) WHERE status = 'pending';
    CREATE TABLE rate_buckets (
        webhook_id TEXT PRIMARY KEY,
        tokens     DOUBLE PRECISION NOT NULL,
        at         BIGINT NOT NULL
    );
    "#,
    // 3: webhooks and sources, from the file and the admin API (see `catalog`).
    r#"
    CREATE TABLE webhooks (
        id         TEXT PRIMARY KEY,
        spec       TEXT NOT NULL,
        secrets    TEXT NOT NULL,
        origin     TEXT NOT NULL,
        edited     BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE sources (
        write_key  TEXT PRIMARY KEY,
        origins    TEXT NOT NULL,
        origin     TEXT NOT NULL,
        edited     BOOLEAN NOT NULL DEFAULT FALSE,
        revoked_at BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    "#,
    // 4: the admin API's columns and indexes, the same on both backends.
    super::ADMIN_MIGRATION,
];
const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION);

/// The database's clock in Unix ms: leases compare times written by
/// different relays, so they all use this one clock.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Serialises migrations of relays starting together (any constant will do).
const MIGRATION_LOCK: i64 = 0x0063_7565_6361_7374;

/// How long a request waits for a pooled connection, or for a new one.
const POOL_TIMEOUT: Duration = Duration::from_secs(3);

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    /// This relay's name in `lease_owner`: unique per process start.
    me: std::sync::Arc<str>,
    lease_ms: i64,
    /// Dead letters still being written (retried while the database is away).
    writes: TaskTracker,
    /// Attempt results for the writer task.
    results: tokio::sync::mpsc::UnboundedSender<Recorded>,
    /// Results submitted and not yet stored.
    unstored: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Whether the last batch of results was stored.
    storing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// An attempt result and what to run once it is stored.
struct Recorded {
    record: AttemptRecord,
    then: Box<dyn FnOnce() + Send>,
}

/// Most results stored in one statement.
const RESULT_BATCH: usize = 1000;

fn pg_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| Error::Storage(format!("storage URL is not a PostgreSQL URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("cuecast-relay");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_TIMEOUT);
    }
    Ok(config)
}

/// Applies migrations up to `to` with one connection (for `cuecast-relay migrate`).
pub async fn migrate_url(url: &str, to: usize) -> Result<(usize, usize)> {
    let (mut client, connection) = pg_config(url)?.connect(NoTls).await.map_err(|e| unreachable(url, e))?;
    tokio::spawn(connection);
    migrate(&mut client, to).await
}

fn unreachable(url: &str, e: tokio_postgres::Error) -> Error {
    let url = super::describe(&crate::config::Storage::Postgres(url.into()));
    Error::Storage(format!("cannot reach PostgreSQL at {url}: {}", pg_message(&e)))
}

/// The useful part of a driver error (its `Display` alone often says only "db error").
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn migrate(client: &mut tokio_postgres::Client, to: usize) -> Result<(usize, usize)> {
    let tx = client.transaction().await?;
    // Relays that start together migrate one after the other.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cuecast_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let current = schema_version(&tx).await?;
    if current > MIGRATIONS.len() {
        return Err(newer(current));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(to).skip(current) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO cuecast_schema (version) VALUES ($1)", &[&((i + 1) as i32)]).await?;
    }
    tx.commit().await?;
    Ok((current, current.max(to.min(MIGRATIONS.len()))))
}

fn newer(v: usize) -> Error {
    Error::Storage(format!(
        "the database has schema version {v}, newer than this relay's {}; upgrade the relay",
        MIGRATIONS.len()
    ))
}

async fn schema_version(client: &impl tokio_postgres::GenericClient) -> Result<usize> {
    let exists: bool = client.query_one("SELECT to_regclass('cuecast_schema') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client.query_one("SELECT max(version) FROM cuecast_schema", &[]).await?.get(0);
    Ok(v.unwrap_or(0) as usize)
}

fn check_version(v: usize) -> Result<()> {
    match v.cmp(&MIGRATIONS.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(newer(v)),
        std::cmp::Ordering::Less => Err(Error::Storage(format!(
            "schema version {v}, expected {}: run `cuecast-relay migrate` (or serve with --migrate)",
            MIGRATIONS.len()
        ))),
    }
}

impl Postgres {
    /// Connects (retrying for up to `options.wait`), migrates if asked, and
    /// checks the schema version.
    pub async fn open(url: &str, options: super::Options) -> Result<Postgres> {
        let config = pg_config(url)?;
        let started = std::time::Instant::now();
        let (mut client, connection) = loop {
            match config.connect(NoTls).await {
                Ok(c) => break c,
                Err(e) if started.elapsed() < options.wait => {
                    tracing::warn!(error = %pg_message(&e), "PostgreSQL unreachable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(unreachable(url, e)),
            }
        };
        tokio::spawn(connection);
        if options.migrate {
            migrate(&mut client, MIGRATIONS.len()).await?;
        } else {
            check_version(schema_version(&client).await?)?;
        }
        drop(client);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| Error::Storage(format!("cannot build the connection pool: {e}")))?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relay".into());
        let me = format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>());
        tracing::info!(owner = %me, "PostgreSQL storage ready");
        let (results, queued) = tokio::sync::mpsc::unbounded_channel();
        let unstored: std::sync::Arc<std::sync::atomic::AtomicUsize> = std::sync::Arc::default();
        let me: std::sync::Arc<str> = me.into();
        let lease_ms = options.lease.as_millis() as i64;
        // The writer holds no sender: it ends when the last handle is dropped.
        let storing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        tokio::spawn(store_results(pool.clone(), me.clone(), lease_ms, queued, unstored.clone(), storing.clone()));
        Ok(Postgres { pool, me, lease_ms, writes: TaskTracker::new(), results, unstored, storing })
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| Error::Storage(format!("PostgreSQL: {e}")))
    }

    pub async fn flush(&self) -> Result<()> {
        self.writes.close();
        let finished = tokio::time::timeout(Duration::from_secs(5), async {
            self.writes.wait().await;
            while self.unstored.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        self.writes.reopen();
        finished.map_err(|_| {
            Error::Storage(
                "results of some attempts are not stored; their leases will run out and another relay retries them"
                    .into(),
            )
        })
    }

    /// One statement, so one round-trip and one commit: the events (`ON
    /// CONFLICT DO NOTHING` is the dedupe), the deliveries of those that were
    /// new, and the attempt rows of deliveries that failed their condition.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>> {
        let now = now_ms();
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        let keys: Vec<&str> = events.iter().map(|e| e.write_key.as_str()).collect();
        let bodies: Vec<&str> = events.iter().map(|e| e.body.as_str()).collect();
        let users: Vec<Option<&str>> = events.iter().map(|e| e.user_id.as_deref()).collect();
        // Deliveries of the first copy of each id in the batch; the statement
        // keeps those whose event it stored.
        let mut seen = std::collections::HashSet::new();
        let first_copy: Vec<bool> = events.iter().map(|e| seen.insert(e.id.as_str())).collect();
        let (mut d_event, mut d_hook, mut d_msg, mut d_status, mut d_error) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (e, _) in events.iter().zip(&first_copy).filter(|(_, first)| **first) {
            for d in &e.deliveries {
                d_event.push(e.id.as_str());
                d_hook.push(d.webhook_id.as_str());
                d_msg.push(format!("msg_{}", uuid::Uuid::new_v4().simple()));
                d_status.push(d.status.as_str());
                d_error.push(d.error.as_deref());
            }
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "WITH ev AS (
                     INSERT INTO events (id, name, write_key, received_at, body, user_id)
                     SELECT id, name, write_key, $5::bigint, body, user_id
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $13::text[]) AS t(id, name, write_key, body, user_id)
                     ON CONFLICT (id) DO NOTHING RETURNING id),
                 dl AS (
                     INSERT INTO deliveries (event_id, webhook_id, msg_id, status, attempts, next_attempt_at, created_at, updated_at, last_error, lease_owner, lease_until)
                     SELECT e, w, m, s, 0, $5::bigint, $5::bigint, $5::bigint, err,
                            CASE WHEN s = 'pending' THEN $11::text END,
                            CASE WHEN s = 'pending' THEN {NOW_MS} + $12::bigint ELSE 0 END
                     FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) AS t(e, w, m, s, err)
                     WHERE e IN (SELECT id FROM ev)
                     RETURNING id, msg_id, last_error),
                 at AS (
                     INSERT INTO attempts (delivery_id, at, status, duration_ms, error)
                     SELECT id, $5::bigint, NULL, 0, last_error FROM dl WHERE last_error IS NOT NULL)
                 SELECT id, NULL::bigint FROM ev UNION ALL SELECT msg_id, id FROM dl"
            ))
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &ids,
                    &names,
                    &keys,
                    &bodies,
                    &now,
                    &d_event,
                    &d_hook,
                    &d_msg,
                    &d_status,
                    &d_error,
                    &&*self.me,
                    &self.lease_ms,
                    &users,
                ],
            )
            .await?;
        let mut new = std::collections::HashSet::new();
        let mut delivery_ids = std::collections::HashMap::new();
        for r in rows {
            match r.get::<_, Option<i64>>(1) {
                None => new.insert(r.get::<_, String>(0)),
                Some(id) => delivery_ids.insert(r.get::<_, String>(0), id).is_none(),
            };
        }
        let mut msgs = d_msg.into_iter();
        Ok(events
            .into_iter()
            .zip(first_copy)
            .map(|(e, first)| {
                if !new.remove(&e.id) {
                    if first {
                        // Its message ids were sent but not stored.
                        msgs.by_ref().take(e.deliveries.len()).for_each(drop);
                    }
                    return StoredEvent { duplicate: true, pending: Vec::new() };
                }
                let body: std::sync::Arc<str> = e.body.into();
                let pending = e
                    .deliveries
                    .into_iter()
                    .filter_map(|d| {
                        let msg_id = msgs.next().expect("one message id per delivery");
                        (d.status == Status::Pending).then(|| PendingDelivery {
                            id: delivery_ids[&msg_id],
                            msg_id,
                            webhook_id: d.webhook_id,
                            event_body: body.clone(),
                            attempts: 0,
                            next_attempt_at: now,
                            created_at: now,
                        })
                    })
                    .collect();
                StoredEvent { duplicate: false, pending }
            })
            .collect())
    }

    /// Runs `write` until the database takes it, then `then` (a result must
    /// not be forgotten because the database was away for a moment).
    fn write_until_stored<F, Fut>(&self, what: &'static str, write: F, then: impl FnOnce() + Send + 'static)
    where
        F: Fn(Postgres) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        let db = self.clone();
        self.writes.spawn(async move {
            let mut wait = Duration::from_millis(100);
            let mut warned = false;
            loop {
                match write(db.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "storage: {what} failed; retrying until PostgreSQL is back");
                            warned = true;
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            }
            then();
        });
    }

    /// False while results of attempts cannot be stored (the database is away).
    pub fn storing(&self) -> bool {
        self.storing.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn record(&self, r: AttemptRecord, then: impl FnOnce() + Send + 'static) {
        self.unstored.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.results.send(Recorded { record: r, then: Box::new(then) }).is_err() {
            self.unstored.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            tracing::error!("storage: an attempt result was dropped, the writer has stopped");
        }
    }

    pub fn dead_letter(&self, delivery_id: i64, reason: String, then: impl FnOnce() + Send + 'static) {
        self.write_until_stored(
            "dead-lettering a delivery",
            move |db| {
                let reason = reason.clone();
                async move {
                    let client = db.client().await?;
                    client
                        .execute(
                            "UPDATE deliveries SET status = 'dead', updated_at = $2, last_error = $3, lease_until = 0
                             WHERE id = $1 AND status = 'pending' AND lease_owner = $4",
                            &[&delivery_id, &now_ms(), &reason, &&*db.me],
                        )
                        .await?;
                    Ok(())
                }
            },
            then,
        );
    }

    pub async fn claim(&self, webhooks: &[String], limit: usize) -> Result<Work> {
        let client = self.client().await?;
        let disabled = disabled_rows(&client).await?.into_iter().map(|(id, _)| id).collect();
        if limit == 0 || webhooks.is_empty() {
            return Ok(Work { disabled, pending: Vec::new() });
        }
        let stmt = client
            .prepare_cached(&format!(
                "WITH c AS (
                     UPDATE deliveries d SET lease_owner = $1, lease_until = {NOW_MS} + $2
                     WHERE d.id IN (
                         SELECT id FROM deliveries
                         WHERE status = 'pending' AND lease_until < {NOW_MS} AND webhook_id = ANY($3)
                         ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING d.id, d.msg_id, d.webhook_id, d.attempts, COALESCE(d.next_attempt_at, d.created_at) AS due, d.event_id, d.created_at)
                 SELECT c.id, c.msg_id, c.webhook_id, c.attempts, c.due, e.body, c.created_at FROM c JOIN events e ON e.id = c.event_id ORDER BY c.id"
            ))
            .await?;
        let rows = client.query(&stmt, &[&&*self.me, &self.lease_ms, &webhooks, &(limit as i64)]).await?;
        let pending = rows
            .into_iter()
            .map(|r| PendingDelivery {
                id: r.get(0),
                msg_id: r.get(1),
                webhook_id: r.get(2),
                attempts: r.get::<_, i32>(3) as u32,
                next_attempt_at: r.get(4),
                event_body: r.get::<_, String>(5).into(),
                created_at: r.get(6),
            })
            .collect();
        Ok(Work { disabled, pending })
    }

    pub async fn renew(&self, ids: Vec<i64>) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(ids);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_in_order(&tx, &ids).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "UPDATE deliveries SET lease_until = GREATEST(lease_until, {NOW_MS} + $2)
                 WHERE id = ANY($3) AND lease_owner = $1 AND status = 'pending' RETURNING id"
            ))
            .await?;
        let rows = tx.query(&stmt, &[&&*self.me, &self.lease_ms, &ids]).await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    pub async fn release(&self, ids: Vec<i64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client()
            .await?
            .execute(
                "UPDATE deliveries SET lease_until = 0 WHERE id = ANY($2) AND lease_owner = $1 AND status = 'pending'",
                &[&&*self.me, &ids],
            )
            .await?;
        Ok(())
    }

    /// Takes one token from `webhook_id`'s bucket, which every relay
    /// shares: the same token bucket as in one process (burst `rate.count`,
    /// refilled at `rate`), kept in one row on the database's clock.
    /// `Err(wait)` when it is empty.
    pub async fn take_token(&self, webhook_id: &str, rate: Rate) -> Result<Result<(), Duration>> {
        let per_ms = rate.per.as_millis().max(1) as f64;
        let capacity = rate.count as f64;
        let client = self.client().await?;
        // The row lock serialises relays taking from the same bucket; the
        // update happens only when a whole token is there.
        let stmt = client
            .prepare_cached(&format!(
                "INSERT INTO rate_buckets AS r (webhook_id, tokens, at) VALUES ($1, $2::float8 - 1, {NOW_MS})
                 ON CONFLICT (webhook_id) DO UPDATE
                 SET tokens = LEAST($2::float8, r.tokens + ({NOW_MS} - r.at) * $3::float8) - 1, at = {NOW_MS}
                 WHERE LEAST($2::float8, r.tokens + ({NOW_MS} - r.at) * $3::float8) >= 1
                 RETURNING tokens"
            ))
            .await?;
        let taken = client.query_opt(&stmt, &[&webhook_id, &capacity, &(capacity / per_ms)]).await?;
        Ok(match taken {
            Some(_) => Ok(()),
            // About the time one token takes to come back.
            None => Err(Duration::from_millis((per_ms / capacity).ceil().max(1.0) as u64)),
        })
    }

    pub async fn disable_webhook(&self, webhook_id: String, reason: String) -> Result<()> {
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO webhook_state (webhook_id, disabled_at, reason) VALUES ($1, $2, $3)
             ON CONFLICT (webhook_id) DO UPDATE SET disabled_at = $2, reason = $3",
            &[&webhook_id, &now, &reason],
        )
        .await?;
        // In id order, like the result writer and the renewals (see `lock_in_order`).
        tx.execute(
            "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = 'pending' ORDER BY id FOR UPDATE",
            &[&webhook_id],
        )
        .await?;
        tx.execute(
            "UPDATE deliveries SET status = 'dead', updated_at = $2, last_error = $3, lease_until = 0 WHERE webhook_id = $1 AND status = 'pending'",
            &[&webhook_id, &now, &format!("webhook disabled: {reason}")],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn enable_webhook(&self, webhook_id: String) -> Result<bool> {
        let n = self.client().await?.execute("DELETE FROM webhook_state WHERE webhook_id = $1", &[&webhook_id]).await?;
        Ok(n > 0)
    }

    pub async fn disabled_webhooks(&self) -> Result<Vec<(String, String)>> {
        disabled_rows(&self.client().await?).await
    }

    pub async fn replay(&self, which: Replay) -> Result<usize> {
        let now = now_ms();
        let client = self.client().await?;
        // `lease_until = 0`: unheld, so the next sweep of any relay takes it on.
        let n = match which {
            Replay::One(id) => {
                client
                    .execute(
                        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2, lease_owner = NULL, lease_until = 0
                         WHERE id = $1 AND status = 'dead'",
                        &[&id, &now],
                    )
                    .await?
            }
            Replay::Webhook { webhook_id, since, until } => {
                client
                    .execute(
                        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $4, updated_at = $4, lease_owner = NULL, lease_until = 0
                         WHERE webhook_id = $1 AND status = 'dead' AND updated_at BETWEEN $2 AND $3",
                        &[&webhook_id, &since, &until, &now],
                    )
                    .await?
            }
        };
        Ok(n as usize)
    }

    pub async fn attempts(&self, delivery_id: i64) -> Result<Vec<Attempt>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT at, status, duration_ms, response, error FROM attempts WHERE delivery_id = $1 ORDER BY id",
                &[&delivery_id],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Attempt {
                at: r.get(0),
                status: r.get::<_, Option<i32>>(1).map(|s| s as u16),
                duration_ms: r.get(2),
                response: r.get(3),
                error: r.get(4),
            })
            .collect())
    }

    pub async fn counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status", &[])
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn ready(&self) -> Result<()> {
        let client = self.client().await?;
        check_version(schema_version(&**client).await?)
    }

    /// One retention batch in one statement; the foreign keys are checked at
    /// its end, after all three deletes.
    pub async fn prune(&self, before: i64, batch: usize) -> Result<usize> {
        let n = self
            .client()
            .await?
            .execute(
                "WITH ev AS (
                     SELECT e.id FROM events e WHERE e.received_at < $1 AND NOT EXISTS
                     (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'dead')) LIMIT $2),
                 dl AS (SELECT d.id FROM deliveries d WHERE d.event_id IN (SELECT id FROM ev)),
                 da AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM dl)),
                 dd AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM dl))
                 DELETE FROM events WHERE id IN (SELECT id FROM ev)",
                &[&before, &(batch as i64)],
            )
            .await?;
        Ok(n as usize)
    }
}

/// The writer task: takes everything queued (up to [`RESULT_BATCH`], and
/// each delivery once per batch so the order of its results holds), stores
/// it in one statement, and only then runs the callbacks.
async fn store_results(
    pool: Pool,
    me: std::sync::Arc<str>,
    lease_ms: i64,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<Recorded>,
    unstored: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    storing: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let mut carried: Option<Recorded> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match queued.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut ids = std::collections::HashSet::from([first.record.delivery_id]);
        let mut batch = vec![first];
        while batch.len() < RESULT_BATCH {
            match queued.try_recv() {
                Ok(r) if ids.insert(r.record.delivery_id) => batch.push(r),
                Ok(r) => {
                    carried = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let (records, thens): (Vec<AttemptRecord>, Vec<_>) = batch.into_iter().map(|r| (r.record, r.then)).unzip();
        let mut wait = Duration::from_millis(100);
        let mut warned = false;
        while let Err(e) = store_batch(&pool, &me, lease_ms, &records).await {
            storing.store(false, std::sync::atomic::Ordering::Relaxed);
            if !warned {
                tracing::warn!(error = %e, results = records.len(), "storage: recording attempts failed; retrying until PostgreSQL is back");
                warned = true;
            }
            tokio::time::sleep(wait).await;
            // Soon after the database is back: until then other relays may
            // take these deliveries over and send them again.
            wait = (wait * 2).min(Duration::from_millis(500));
        }
        storing.store(true, std::sync::atomic::Ordering::Relaxed);
        let n = thens.len();
        for then in thens {
            then();
        }
        unstored.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The attempts, and each delivery's new state where this relay still holds it.
async fn store_batch(pool: &Pool, me: &str, lease_ms: i64, batch: &[AttemptRecord]) -> Result<()> {
    let mut client = pool.get().await.map_err(|e| Error::Storage(format!("PostgreSQL: {e}")))?;
    let tx = client.transaction().await?;
    let ids: Vec<i64> = batch.iter().map(|r| r.delivery_id).collect();
    lock_in_order(&tx, &ids).await?;
    let stmt = tx
        .prepare_cached(
            "WITH r AS (
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bigint[])
                 AS t(id, at, http, duration, response, error, status, attempts, next_at)),
             a AS (INSERT INTO attempts (delivery_id, at, status, duration_ms, response, error)
                   SELECT id, at, http, duration, response, error FROM r)
             UPDATE deliveries d SET status = r.status, attempts = r.attempts, next_attempt_at = r.next_at,
                 updated_at = r.at, last_error = r.error,
                 lease_until = CASE WHEN r.status = 'pending' THEN GREATEST(d.lease_until, r.next_at + $11::bigint) ELSE 0 END
             FROM r WHERE d.id = r.id AND d.lease_owner = $10",
        )
        .await?;
    let records = || batch.iter();
    let at: Vec<i64> = records().map(|r| r.at).collect();
    let http: Vec<Option<i32>> = records().map(|r| r.http_status.map(i32::from)).collect();
    let duration: Vec<i64> = records().map(|r| r.duration_ms).collect();
    let response: Vec<Option<&str>> = records().map(|r| r.response.as_deref()).collect();
    let error: Vec<Option<&str>> = records().map(|r| r.error.as_deref()).collect();
    let status: Vec<&str> = records().map(|r| r.new_status.as_str()).collect();
    let attempts: Vec<i32> = records().map(|r| r.attempts as i32).collect();
    let next_at: Vec<Option<i64>> = records().map(|r| r.next_attempt_at).collect();
    tx.execute(&stmt, &[&ids, &at, &http, &duration, &response, &error, &status, &attempts, &next_at, &me, &lease_ms])
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Locks the rows of `ids` in id order. The relay's result writer and its
/// lease renewal update overlapping sets of rows; taking the locks in one
/// order keeps them from deadlocking each other.
async fn lock_in_order(tx: &deadpool_postgres::Transaction<'_>, ids: &[i64]) -> Result<()> {
    let stmt = tx.prepare_cached("SELECT id FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE").await?;
    tx.query(&stmt, &[&ids]).await?;
    Ok(())
}

async fn disabled_rows(client: &deadpool_postgres::Client) -> Result<Vec<(String, String)>> {
    let rows = client
        .query("SELECT webhook_id, COALESCE(reason, '') FROM webhook_state WHERE disabled_at IS NOT NULL", &[])
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}
