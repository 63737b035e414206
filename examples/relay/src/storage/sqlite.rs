//! The embedded backend: one SQLite file in WAL mode.
//!
//! One writer thread owns the connection. Requests queue on a channel; the
//! thread takes everything queued, runs it in one transaction (each request
//! inside its own savepoint, so one failure does not undo the others) and
//! answers after the commit. Concurrent ingest requests therefore share one
//! fsync, and an answer always means "committed".
//!
//! One relay process owns the file, so leases never run out here: the lease
//! columns exist for the shared logical schema and stay at their defaults.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::{
    now_ms, Attempt, AttemptRecord, NewEvent, PendingDelivery, Replay, Status, StoredEvent, Work, SCHEMA_VERSION,
};
use crate::error::{Error, Result};

/// Forward-only schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: events, deliveries, attempts.
    r#"
    CREATE TABLE events (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        write_key   TEXT NOT NULL,
        received_at INTEGER NOT NULL,   -- Unix ms
        body        TEXT NOT NULL       -- the event's JSON as validated
    );
    CREATE INDEX events_received_at ON events(received_at);
    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        event_id        TEXT NOT NULL REFERENCES events(id),
        webhook_id      TEXT NOT NULL,
        msg_id          TEXT NOT NULL,  -- the webhook-id header, the same on every retry
        status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,        -- Unix ms, for pending
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        last_error      TEXT
    );
    CREATE INDEX deliveries_status ON deliveries(status, next_attempt_at);
    CREATE INDEX deliveries_webhook ON deliveries(webhook_id, status, updated_at);
    CREATE INDEX deliveries_event ON deliveries(event_id);
    CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
        at          INTEGER NOT NULL,   -- Unix ms
        status      INTEGER,            -- HTTP status, NULL when none came back
        duration_ms INTEGER NOT NULL,
        response    TEXT,               -- first 4 KB of the response body
        error       TEXT
    );
    CREATE INDEX attempts_delivery ON attempts(delivery_id);
    CREATE TABLE webhook_state (
        webhook_id  TEXT PRIMARY KEY,
        disabled_at INTEGER,
        reason      TEXT
    );
    -- Counters other processes bump to wake the server (e.g. `replay`).
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    "#,
    // 2: leases (used by PostgreSQL, where many relays share the tables).
    r#"
    ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
    ALTER TABLE deliveries ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: webhooks and sources, from the file and the admin API (see `catalog`).
    r#"
    CREATE TABLE webhooks (
        id         TEXT PRIMARY KEY,
        spec       TEXT NOT NULL,    -- the definition as JSON (config::WebhookSpec)
        secrets    TEXT NOT NULL,    -- [{"secret","expires_at"}]
        origin     TEXT NOT NULL,    -- 'config' or 'api'
        edited     INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE sources (
        write_key  TEXT PRIMARY KEY,
        origins    TEXT NOT NULL,    -- JSON list, or ["*"]
        origin     TEXT NOT NULL,
        edited     INTEGER NOT NULL DEFAULT 0,
        revoked_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    "#,
    // 4: the admin API's columns and indexes, the same on both backends.
    super::ADMIN_MIGRATION,
];
const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION);

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

/// Handle to the file's writer thread; cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    /// The `meta` counters' sum at the last [`claim`](Sqlite::claim), -1 before the first.
    claimed_seq: Arc<AtomicI64>,
}

fn open_connection(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path).map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
    // WAL lets readers (the CLI, a second process) work beside the writer;
    // synchronous=FULL makes every commit durable, not only crash-consistent.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// Applies the migrations not yet applied, up to `to`. Returns (before, after) versions.
fn migrate(conn: &mut Connection, to: usize) -> Result<(usize, usize)> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(Error::Storage(format!(
            "the database has schema version {current}, newer than this relay's {}; upgrade the relay",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(to).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok((current, current.max(to.min(MIGRATIONS.len()))))
}

/// Opens the file and applies migrations up to `to`, without starting a writer.
pub fn migrate_file(path: &Path, to: usize) -> Result<(usize, usize)> {
    let mut conn = open_connection(path)?;
    migrate(&mut conn, to)
}

impl Sqlite {
    /// Opens (creating if needed) the file, migrates it if `migrate` (else
    /// refuses an old schema), and starts the writer thread.
    pub fn open(path: &Path, migrate_now: bool) -> Result<Sqlite> {
        let mut conn = open_connection(path)?;
        if migrate_now {
            migrate(&mut conn, MIGRATIONS.len())?;
        } else {
            check_version(&conn)?;
        }
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("cuecast-sqlite".into()).spawn(move || writer(conn, rx))?;
        Ok(Sqlite { jobs, path: path.to_path_buf(), claimed_seq: Arc::new(AtomicI64::new(-1)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer thread inside the shared transaction and
    /// answers once that transaction has committed.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit| {
                let _ = tx.send(commit.map_err(Error::Storage).and(result));
            })
        });
        self.jobs.send(job).map_err(|_| Error::Storage("the writer thread has stopped".into()))?;
        rx.await.map_err(|_| Error::Storage("the writer thread has stopped".into()))?
    }

    /// Like [`call`](Self::call) but nobody waits; failures are logged and
    /// `then` runs on the writer thread once the transaction has ended.
    fn submit(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> Result<()> + Send + 'static,
        then: impl FnOnce() + Send + 'static,
    ) {
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit| {
                if let Err(e) = commit.map_err(Error::Storage).and(result) {
                    tracing::error!(error = %e, "storage: {what} failed");
                }
                then();
            })
        });
        if self.jobs.send(job).is_err() {
            tracing::error!("storage: {what} dropped, the writer thread has stopped");
        }
    }

    /// Waits until everything submitted before is committed.
    pub async fn flush(&self) -> Result<()> {
        self.call(|_| Ok(())).await
    }

    /// Stores events and their deliveries; duplicates (by id) store nothing.
    pub async fn ingest(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>> {
        self.call(move |conn| {
            let now = now_ms();
            let mut insert_event = conn.prepare_cached(
                "INSERT INTO events (id, name, write_key, received_at, body, user_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
            )?;
            let mut insert_delivery = conn.prepare_cached(
                "INSERT INTO deliveries (event_id, webhook_id, msg_id, status, attempts, next_attempt_at, created_at, updated_at, last_error)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?5, ?6)",
            )?;
            let mut insert_attempt =
                conn.prepare_cached("INSERT INTO attempts (delivery_id, at, status, duration_ms, error) VALUES (?1, ?2, NULL, 0, ?3)")?;
            let mut out = Vec::with_capacity(events.len());
            for e in events {
                if insert_event.execute(params![e.id, e.name, e.write_key, now, e.body, e.user_id])? == 0 {
                    out.push(StoredEvent { duplicate: true, pending: Vec::new() });
                    continue;
                }
                let body: std::sync::Arc<str> = e.body.into();
                let mut pending = Vec::new();
                for d in e.deliveries {
                    let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
                    insert_delivery.execute(params![e.id, d.webhook_id, msg_id, d.status.as_str(), now, d.error])?;
                    let id = conn.last_insert_rowid();
                    if let Some(error) = &d.error {
                        insert_attempt.execute(params![id, now, error])?;
                    }
                    if d.status == Status::Pending {
                        pending.push(PendingDelivery {
                            id,
                            msg_id,
                            webhook_id: d.webhook_id,
                            event_body: body.clone(),
                            attempts: 0,
                            next_attempt_at: now,
                            created_at: now,
                        });
                    }
                }
                out.push(StoredEvent { duplicate: false, pending });
            }
            Ok(out)
        })
        .await
    }

    /// Stores an attempt and the delivery's new state (nobody waits); `then`
    /// runs after the commit.
    pub fn record(&self, r: AttemptRecord, then: impl FnOnce() + Send + 'static) {
        self.submit(
            "recording an attempt",
            move |conn| {
                conn.prepare_cached(
                    "INSERT INTO attempts (delivery_id, at, status, duration_ms, response, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![r.delivery_id, r.at, r.http_status, r.duration_ms, r.response, r.error])?;
                conn.prepare_cached(
                    "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, updated_at = ?5, last_error = ?6 WHERE id = ?1",
                )?
                .execute(params![r.delivery_id, r.new_status.as_str(), r.attempts, r.next_attempt_at, r.at, r.error])?;
                Ok(())
            },
            then,
        );
    }

    /// Dead-letters a pending delivery that was not attempted (its webhook
    /// is disabled); `then` runs after the commit.
    pub fn dead_letter(&self, delivery_id: i64, reason: String, then: impl FnOnce() + Send + 'static) {
        self.submit(
            "dead-lettering a delivery",
            move |conn| {
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'dead', updated_at = ?2, last_error = ?3 WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![delivery_id, now_ms(), reason])?;
                Ok(())
            },
            then,
        );
    }

    /// The disabled webhooks, and every pending delivery on the first call
    /// and after another process (`replay`, `enable`) bumped a `meta`
    /// counter; read together so an `enable` and a `replay` are never seen
    /// half. The dispatcher ignores deliveries it already holds.
    pub async fn claim(&self) -> Result<Work> {
        let claimed = self.claimed_seq.clone();
        self.call(move |conn| {
            let disabled = disabled_rows(conn)?.into_iter().map(|(id, _)| id).collect();
            let seq: i64 = conn.query_row("SELECT COALESCE(SUM(value), 0) FROM meta", [], |r| r.get(0))?;
            let pending = if claimed.swap(seq, Ordering::Relaxed) != seq { pending_rows(conn)? } else { Vec::new() };
            Ok(Work { disabled, pending })
        })
        .await
    }

    /// Marks a webhook disabled (after a 410) and dead-letters its pending deliveries.
    pub async fn disable_webhook(&self, webhook_id: String, reason: String) -> Result<()> {
        self.call(move |conn| {
            let now = now_ms();
            conn.execute(
                "INSERT INTO webhook_state (webhook_id, disabled_at, reason) VALUES (?1, ?2, ?3)
                 ON CONFLICT (webhook_id) DO UPDATE SET disabled_at = ?2, reason = ?3",
                params![webhook_id, now, reason],
            )?;
            conn.execute(
                "UPDATE deliveries SET status = 'dead', updated_at = ?2, last_error = ?3 WHERE webhook_id = ?1 AND status = 'pending'",
                params![webhook_id, now, format!("webhook disabled: {reason}")],
            )?;
            Ok(())
        })
        .await
    }

    /// Re-enables a webhook disabled by a 410.
    pub async fn enable_webhook(&self, webhook_id: String) -> Result<bool> {
        self.call(move |conn| {
            let n = conn.execute("DELETE FROM webhook_state WHERE webhook_id = ?1", params![webhook_id])?;
            bump(conn, "state_seq")?;
            Ok(n > 0)
        })
        .await
    }

    /// Disabled webhooks and why.
    pub async fn disabled_webhooks(&self) -> Result<Vec<(String, String)>> {
        self.call(disabled_rows).await
    }

    /// Puts dead letters back in the queue with a fresh retry schedule (their
    /// attempt history stays). Returns how many; a running server picks
    /// them up within its sweep interval.
    pub async fn replay(&self, which: Replay) -> Result<usize> {
        self.call(move |conn| {
            let now = now_ms();
            let n = match which {
                Replay::One(id) => conn.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1 AND status = 'dead'",
                    params![id, now],
                )?,
                Replay::Webhook { webhook_id, since, until } => conn.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?4, updated_at = ?4
                     WHERE webhook_id = ?1 AND status = 'dead' AND updated_at BETWEEN ?2 AND ?3",
                    params![webhook_id, since, until, now],
                )?,
            };
            bump(conn, "replay_seq")?;
            Ok(n)
        })
        .await
    }

    /// The attempts of one delivery, oldest first.
    pub async fn attempts(&self, delivery_id: i64) -> Result<Vec<Attempt>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT at, status, duration_ms, response, error FROM attempts WHERE delivery_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![delivery_id], |r| {
                Ok(Attempt {
                    at: r.get(0)?,
                    status: r.get(1)?,
                    duration_ms: r.get(2)?,
                    response: r.get(3)?,
                    error: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Deliveries per status.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>> {
        self.call(|conn| {
            let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Storage reachable and the schema current (for `/readyz`).
    pub async fn ready(&self) -> Result<()> {
        self.call(check_version).await
    }

    /// One retention batch: a job of its own in the writer queue, so ingest
    /// requests queued meanwhile commit between two batches.
    pub async fn prune(&self, before: i64, batch: usize) -> Result<usize> {
        self.call(move |conn| {
            conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS prune_ids (id TEXT PRIMARY KEY); DELETE FROM prune_ids;")?;
            conn.execute(
                "INSERT INTO prune_ids SELECT e.id FROM events e WHERE e.received_at < ?1 AND NOT EXISTS
                 (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'dead')) LIMIT ?2",
                params![before, batch as i64],
            )?;
            conn.execute_batch(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT d.id FROM deliveries d JOIN prune_ids p ON p.id = d.event_id);
                 DELETE FROM deliveries WHERE event_id IN (SELECT id FROM prune_ids);",
            )?;
            let n = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM prune_ids)", [])?;
            Ok(n)
        })
        .await
    }
}

fn pending_rows(conn: &Connection) -> Result<Vec<PendingDelivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.msg_id, d.webhook_id, e.body, d.attempts, COALESCE(d.next_attempt_at, d.created_at), d.created_at
         FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.status = 'pending' ORDER BY d.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(PendingDelivery {
            id: r.get(0)?,
            msg_id: r.get(1)?,
            webhook_id: r.get(2)?,
            event_body: r.get::<_, String>(3)?.into(),
            attempts: r.get(4)?,
            next_attempt_at: r.get(5)?,
            created_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn disabled_rows(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare_cached("SELECT webhook_id, COALESCE(reason, '') FROM webhook_state WHERE disabled_at IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn check_version(conn: &Connection) -> Result<()> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    match (v as usize).cmp(&MIGRATIONS.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(Error::Storage(format!(
            "the database has schema version {v}, newer than this relay's {}; upgrade the relay",
            MIGRATIONS.len()
        ))),
        std::cmp::Ordering::Less => Err(Error::Storage(format!(
            "schema version {v}, expected {}: run `cuecast-relay migrate`",
            MIGRATIONS.len()
        ))),
    }
}

pub(super) fn bump(conn: &Connection, key: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, 1) ON CONFLICT (key) DO UPDATE SET value = value + 1",
        params![key],
    )?;
    Ok(())
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

/// The writer loop: everything queued goes into one transaction.
fn writer(conn: Connection, rx: mpsc::Receiver<Job>) {
    const MAX_JOBS: usize = 2000;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let begun = conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string());
        if let Err(e) = begun {
            for job in jobs {
                // Run nothing; tell every waiter why.
                drop(job);
                tracing::error!(error = %e, "storage: cannot begin a transaction");
            }
            continue;
        }
        let replies: Vec<Reply> = jobs.into_iter().map(|job| job(&conn)).collect();
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}
