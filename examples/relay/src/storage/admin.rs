//! What the admin API reads (events, deliveries, attempts, stats) and
//! replays, on both backends.
//!
//! Every list is newest first and keyset-paginated: a page is "the next
//! `limit` rows after the cursor in the index order", so a page costs the
//! same at the start and a million rows deep, and rows arriving meanwhile
//! never shift a page. Each filter has an index that ends in the sort key
//! (migration 3 of both backends); the queries name only the filters given,
//! so each backend's planner sees exactly one index that fits.
//!
//! On SQLite, reads run on a read-only connection of their own (WAL lets it
//! read beside the writer), not on the writer thread: a slow console query
//! must never hold up the commit of a batch. Replays are writes and go
//! through the writer like every other write.

use std::collections::HashMap;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{now_ms, postgres::Postgres, sqlite::Sqlite, Status, Storage};
use crate::error::{Error, Result};

impl Status {
    /// The status named `s` (`pending`, `delivered`, `failed`, `dead`).
    pub fn parse(s: &str) -> Option<Status> {
        [Status::Pending, Status::Delivered, Status::Failed, Status::Dead].into_iter().find(|st| st.as_str() == s)
    }
}

/// Which events to list; `since` and `until` bound `received_at` (Unix ms, inclusive).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub name: Option<String>,
    pub user_id: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// Where a page of events starts: after this (received_at, id), in
/// descending order. Ids alone do not order events (the client makes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    pub received_at: i64,
    pub id: String,
}

/// An event in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventSummary {
    pub id: String,
    pub name: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// When the relay stored it (Unix ms).
    pub received_at: i64,
    /// When it happened, as the client said (RFC 3339).
    pub timestamp: Option<String>,
    #[schema(value_type = Object)]
    pub properties: Value,
}

/// One stored event and the deliveries it created.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventDetail {
    /// The event as stored (wire contract v1).
    #[schema(value_type = Object)]
    pub event: Value,
    pub received_at: i64,
    pub deliveries: Vec<Delivery>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub webhook: Option<String>,
    pub status: Option<Status>,
    pub event_id: Option<String>,
    /// Last updated within [since, until] (Unix ms): `replay --list`'s window.
    pub updated: Option<(i64, i64)>,
}

/// A delivery: one event to one webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    /// The event's name.
    pub event: String,
    pub webhook_id: String,
    /// The `webhook-id` header, the same on every attempt.
    pub msg_id: String,
    /// `pending`, `delivered`, `failed` or `dead`.
    pub status: String,
    pub attempts: u32,
    pub updated_at: i64,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Finished deliveries to queue again: `status` is `Dead` or `Failed`;
/// `since`/`until` bound `updated_at` (when they finished), Unix ms.
#[derive(Debug, Clone)]
pub struct Requeue {
    pub webhook: Option<String>,
    pub status: Status,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// Outcomes and attempt latency of one webhook over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Window {
    /// Deliveries that finished in the window, by outcome.
    pub delivered: u64,
    pub failed: u64,
    pub dead: u64,
    /// Attempt duration percentiles (ms); `null` without attempts.
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookStats {
    pub id: String,
    pub hour: Window,
    pub day: Window,
}

/// Most attempts a stats request reads: the newest ones of the day. Past
/// this, the percentiles describe the window's most recent attempts (20,000
/// still put 200 above the p99), and the request stays about as fast however
/// busy the relay is: reading 100,000 took ~0.3 s on PostgreSQL.
pub const STATS_MAX_ATTEMPTS: i64 = 20_000;

/// Most distinct event names listed.
pub const MAX_NAMES: i64 = 1000;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Storage {
    /// Up to `limit` events matching `filter`, newest first, after `after`.
    pub async fn list_events(
        &self,
        filter: EventFilter,
        after: Option<EventCursor>,
        limit: usize,
    ) -> Result<Vec<EventSummary>> {
        match self {
            Storage::Sqlite(s) => {
                let q = events_query(&filter, after.as_ref(), limit, Placeholder::Sqlite);
                s.read(move |c| q.sqlite_rows(c, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))).await
            }
            Storage::Postgres(p) => {
                let q = events_query(&filter, after.as_ref(), limit, Placeholder::Postgres);
                p.rows(&q, |r| (r.get(0), r.get(1), r.get(2), r.get(3))).await
            }
        }
        .map(|rows| rows.into_iter().map(summary).collect())
    }

    /// One event with its deliveries; `None` if there is no such id.
    pub async fn event(&self, id: String) -> Result<Option<EventDetail>> {
        let found: Option<(i64, String)> = match self {
            Storage::Sqlite(s) => {
                let id = id.clone();
                s.read(move |c| {
                    let mut stmt = c.prepare("SELECT received_at, body FROM events WHERE id = ?1")?;
                    let mut rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    Ok(rows.next().transpose()?)
                })
                .await?
            }
            Storage::Postgres(p) => p
                .client()
                .await?
                .query_opt("SELECT received_at, body FROM events WHERE id = $1", &[&id])
                .await?
                .map(|r| (r.get(0), r.get(1))),
        };
        let Some((received_at, body)) = found else { return Ok(None) };
        let filter = DeliveryFilter { event_id: Some(id), ..DeliveryFilter::default() };
        // Oldest first, as they were created: one per matching webhook, a handful.
        let mut deliveries = self.list_deliveries(filter, None, super::PRUNE_BATCH).await?;
        deliveries.reverse();
        Ok(Some(EventDetail { event: serde_json::from_str(&body).unwrap_or(Value::Null), received_at, deliveries }))
    }

    /// Distinct event names of stored events, in name order (at most [`MAX_NAMES`]).
    ///
    /// A loose index scan: one probe of the `events_name` index per distinct
    /// name ("the first name after the last one found"), so the cost grows
    /// with the number of names, not of events. Chosen over a table of names
    /// filled at ingest because that adds a write to every batch and would
    /// keep names whose events retention has pruned; the index exists anyway
    /// for the `name` filter.
    pub async fn event_names(&self) -> Result<Vec<String>> {
        let sql = |p: Placeholder| {
            format!(
                "WITH RECURSIVE n(name, k) AS (
                     SELECT (SELECT name FROM events ORDER BY name LIMIT 1), 1
                     UNION ALL
                     SELECT (SELECT e.name FROM events e WHERE e.name > n.name ORDER BY e.name LIMIT 1), k + 1
                     FROM n WHERE n.name IS NOT NULL AND k < {})
                 SELECT name FROM n WHERE name IS NOT NULL",
                p.nth(1)
            )
        };
        match self {
            Storage::Sqlite(s) => {
                let sql = sql(Placeholder::Sqlite);
                s.read(move |c| {
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map([MAX_NAMES], |r| r.get(0))?;
                    Ok(rows.collect::<Result<Vec<String>, _>>()?)
                })
                .await
            }
            Storage::Postgres(p) => {
                let rows = p.client().await?.query(&sql(Placeholder::Postgres), &[&(MAX_NAMES as i32)]).await?;
                Ok(rows.into_iter().map(|r| r.get(0)).collect())
            }
        }
    }

    /// Up to `limit` deliveries matching `filter`, newest first, with ids below `before`.
    pub async fn list_deliveries(
        &self,
        filter: DeliveryFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        match self {
            Storage::Sqlite(s) => {
                let q = deliveries_query(&filter, before, limit, Placeholder::Sqlite);
                s.read(move |c| q.sqlite_rows(c, sqlite_delivery)).await
            }
            Storage::Postgres(p) => {
                let q = deliveries_query(&filter, before, limit, Placeholder::Postgres);
                p.rows(&q, pg_delivery).await
            }
        }
    }

    /// One delivery; `None` if there is no such id.
    pub async fn delivery(&self, id: i64) -> Result<Option<Delivery>> {
        let q = |p: Placeholder| Query {
            sql: format!("{DELIVERY_COLUMNS} WHERE d.id = {}", p.nth(1)),
            args: vec![Arg::Int(id)],
        };
        let rows = match self {
            Storage::Sqlite(s) => {
                let q = q(Placeholder::Sqlite);
                s.read(move |c| q.sqlite_rows(c, sqlite_delivery)).await?
            }
            Storage::Postgres(p) => p.rows(&q(Placeholder::Postgres), pg_delivery).await?,
        };
        Ok(rows.into_iter().next())
    }

    /// Queues delivery `id` again if it is dead or failed, exactly as
    /// `replay` does for dead letters: pending, a fresh retry schedule, its
    /// attempts kept, and unheld so the next sweep hands it to a worker.
    /// `NotFound` for an unknown id, `Conflict` for one that is pending or delivered.
    pub async fn requeue_one(&self, id: i64) -> Result<usize> {
        let status = match self {
            Storage::Sqlite(s) => {
                s.call(move |c| {
                    let status: Option<String> = c
                        .query_row("SELECT status FROM deliveries WHERE id = ?1", [id], |r| r.get(0))
                        .map(Some)
                        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
                    if matches!(status.as_deref(), Some("dead" | "failed")) {
                        c.execute(
                            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1",
                            rusqlite::params![id, now_ms()],
                        )?;
                        super::sqlite::bump(c, "replay_seq")?;
                    }
                    Ok(status)
                })
                .await?
            }
            Storage::Postgres(p) => {
                // One statement: the old status of the row, and the update if it was finished.
                let row = p
                    .client()
                    .await?
                    .query_opt(
                        "WITH old AS (SELECT id, status FROM deliveries WHERE id = $1 FOR UPDATE),
                         up AS (UPDATE deliveries d SET status = 'pending', attempts = 0, next_attempt_at = $2, updated_at = $2,
                                    lease_owner = NULL, lease_until = 0
                                FROM old WHERE d.id = old.id AND old.status IN ('dead', 'failed'))
                         SELECT status FROM old",
                        &[&id, &now_ms()],
                    )
                    .await?;
                row.map(|r| r.get::<_, String>(0))
            }
        };
        match status.as_deref() {
            None => Err(Error::NotFound(format!("no delivery {id}"))),
            Some("dead" | "failed") => Ok(1),
            Some(other) => {
                Err(Error::Conflict(format!("delivery {id} is {other}; only dead or failed deliveries are replayed")))
            }
        }
    }

    /// Queues again every delivery `which` selects (see [`Storage::requeue_one`]). Returns how many.
    pub async fn requeue(&self, which: Requeue) -> Result<usize> {
        let (since, until) = (which.since.unwrap_or(0), which.until.unwrap_or(i64::MAX));
        let status = which.status.as_str();
        match self {
            Storage::Sqlite(s) => {
                s.call(move |c| {
                    // Only the filters given, so that SQLite picks `deliveries_webhook`
                    // (webhook, status, updated_at) for a webhook and `deliveries_status_id` without.
                    let set =
                        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?4, updated_at = ?4
                               WHERE status = ?1 AND updated_at BETWEEN ?2 AND ?3";
                    let n = match which.webhook {
                        Some(w) => c.execute(
                            &format!("{set} AND webhook_id = ?5"),
                            rusqlite::params![status, since, until, now_ms(), w],
                        )?,
                        None => c.execute(set, rusqlite::params![status, since, until, now_ms()])?,
                    };
                    super::sqlite::bump(c, "replay_seq")?;
                    Ok(n)
                })
                .await
            }
            Storage::Postgres(p) => {
                let n = p
                    .client()
                    .await?
                    .execute(
                        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $5, updated_at = $5,
                             lease_owner = NULL, lease_until = 0
                         WHERE status = $1 AND ($2::text IS NULL OR webhook_id = $2) AND updated_at BETWEEN $3 AND $4",
                        &[&status, &which.webhook, &since, &until, &now_ms()],
                    )
                    .await?;
                Ok(n as usize)
            }
        }
    }

    /// Per webhook of `webhooks`: outcomes and attempt latency over the last
    /// hour and the last day before `now` (Unix ms).
    pub async fn webhook_stats(&self, webhooks: Vec<String>, now: i64) -> Result<Vec<WebhookStats>> {
        let (hour, day) = (now - HOUR_MS, now - DAY_MS);
        // Counts: the `deliveries_webhook` index (webhook, status, updated_at)
        // answers each webhook alone, without reading a row.
        let counts_sql = |p: Placeholder| {
            format!(
                "SELECT status, COUNT(*), SUM(CASE WHEN updated_at >= {hour} THEN 1 ELSE 0 END) FROM deliveries
                 WHERE webhook_id = {w} AND status IN ('delivered', 'failed', 'dead') AND updated_at >= {day}
                 GROUP BY status",
                w = p.nth(1),
                day = p.nth(2),
                hour = p.nth(3)
            )
        };
        // Latency comes from the attempts of the day, read newest first through
        // `attempts_at`. Rows without a status and without a duration are not
        // requests: ingest writes them for a condition that could not be evaluated.
        let latency_sql = |p: Placeholder| {
            format!(
                "SELECT (SELECT d.webhook_id FROM deliveries d WHERE d.id = a.delivery_id), a.at, a.duration_ms
                 FROM attempts a WHERE a.at >= {} AND NOT (a.status IS NULL AND a.duration_ms = 0)
                 ORDER BY a.at DESC LIMIT {}",
                p.nth(1),
                p.nth(2)
            )
        };
        let (counts, latencies): (Vec<CountRow>, Vec<LatencyRow>) = match self {
            Storage::Sqlite(s) => {
                let webhooks = webhooks.clone();
                s.read(move |c| {
                    let mut counts = Vec::new();
                    let mut stmt = c.prepare(&counts_sql(Placeholder::Sqlite))?;
                    for w in webhooks {
                        let rows = stmt.query_map(rusqlite::params![w, day, hour], |r| {
                            Ok((w.clone(), r.get(0)?, r.get(1)?, r.get(2)?))
                        })?;
                        counts.extend(rows.collect::<Result<Vec<_>, _>>()?);
                    }
                    let mut stmt = c.prepare(&latency_sql(Placeholder::Sqlite))?;
                    let rows = stmt.query_map(rusqlite::params![day, STATS_MAX_ATTEMPTS], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
                    Ok((counts, rows.collect::<Result<Vec<_>, _>>()?))
                })
                .await?
            }
            Storage::Postgres(p) => {
                let client = p.client().await?;
                let stmt = client.prepare_cached(&counts_sql(Placeholder::Postgres)).await?;
                let mut counts = Vec::new();
                for w in &webhooks {
                    for r in client.query(&stmt, &[w, &day, &hour]).await? {
                        counts.push((w.clone(), r.get(0), r.get(1), r.get(2)));
                    }
                }
                let rows = client.query(&latency_sql(Placeholder::Postgres), &[&day, &STATS_MAX_ATTEMPTS]).await?;
                (counts, rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
            }
        };
        Ok(assemble_stats(webhooks, counts, latencies, hour))
    }
}

/// (webhook, status, finished in the day, of which in the hour).
type CountRow = (String, String, i64, i64);
/// (webhook, attempt time, duration ms); no webhook if the delivery is gone.
type LatencyRow = (Option<String>, i64, i64);

/// Puts the rows of [`Storage::webhook_stats`] together (pure, so both backends answer alike).
fn assemble_stats(
    webhooks: Vec<String>,
    counts: Vec<CountRow>,
    latencies: Vec<LatencyRow>,
    hour: i64,
) -> Vec<WebhookStats> {
    let mut durations: HashMap<String, (Vec<i64>, Vec<i64>)> = HashMap::new();
    for (webhook, at, duration) in latencies {
        let Some(webhook) = webhook else { continue };
        let (in_hour, in_day) = durations.entry(webhook).or_default();
        in_day.push(duration);
        if at >= hour {
            in_hour.push(duration);
        }
    }
    webhooks
        .into_iter()
        .map(|id| {
            let (mut hour_ms, mut day_ms) = durations.remove(&id).unwrap_or_default();
            let mut hour = Window {
                p50_ms: percentile(&mut hour_ms, 50),
                p99_ms: percentile(&mut hour_ms, 99),
                ..Window::default()
            };
            let mut day = Window {
                p50_ms: percentile(&mut day_ms, 50),
                p99_ms: percentile(&mut day_ms, 99),
                ..Window::default()
            };
            for (_, status, in_day, in_hour) in counts.iter().filter(|c| c.0 == id) {
                for (window, n) in [(&mut day, *in_day), (&mut hour, *in_hour)] {
                    match status.as_str() {
                        "delivered" => window.delivered = n as u64,
                        "failed" => window.failed = n as u64,
                        _ => window.dead = n as u64,
                    }
                }
            }
            WebhookStats { id, hour, day }
        })
        .collect()
}

/// The `p`th percentile by nearest rank (a duration that was measured, never an interpolation).
pub fn percentile(values: &mut [i64], p: u32) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * p as usize).div_ceil(100).max(1);
    Some(values[rank - 1])
}

/// An event row (id, name, received_at, body) as listed.
fn summary((id, name, received_at, body): (String, String, i64, String)) -> EventSummary {
    let mut event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().map(str::to_string);
    EventSummary {
        user_id: text(&event["userId"]),
        anonymous_id: text(&event["anonymousId"]),
        timestamp: text(&event["timestamp"]),
        properties: match event.get_mut("properties").map(Value::take) {
            Some(p @ Value::Object(_)) => p,
            _ => Value::Object(Default::default()),
        },
        id,
        name,
        received_at,
    }
}

/// The delivery columns, in the order [`sqlite_delivery`] and [`pg_delivery`] read them.
/// The name comes from a subquery, so the deliveries index drives and each
/// row costs one primary-key probe of `events`.
const DELIVERY_COLUMNS: &str =
    "SELECT d.id, d.event_id, (SELECT e.name FROM events e WHERE e.id = d.event_id), d.webhook_id,
     d.msg_id, d.status, d.attempts, d.updated_at, d.next_attempt_at, d.last_error FROM deliveries d";

fn delivery(mut d: Delivery) -> Delivery {
    // The column keeps its last value once a delivery is finished.
    if d.status != "pending" {
        d.next_attempt_at = None;
    }
    d
}

fn sqlite_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(delivery(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        event: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        webhook_id: r.get(3)?,
        msg_id: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get(6)?,
        updated_at: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_error: r.get(9)?,
    }))
}

fn pg_delivery(r: &tokio_postgres::Row) -> Delivery {
    delivery(Delivery {
        id: r.get(0),
        event_id: r.get(1),
        event: r.get::<_, Option<String>>(2).unwrap_or_default(),
        webhook_id: r.get(3),
        msg_id: r.get(4),
        status: r.get(5),
        attempts: r.get::<_, i32>(6) as u32,
        updated_at: r.get(7),
        next_attempt_at: r.get(8),
        last_error: r.get(9),
    })
}

/// How a backend numbers its parameters.
#[derive(Debug, Clone, Copy)]
enum Placeholder {
    Sqlite,
    Postgres,
}

impl Placeholder {
    fn nth(self, n: usize) -> String {
        match self {
            Placeholder::Sqlite => format!("?{n}"),
            Placeholder::Postgres => format!("${n}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Arg {
    Int(i64),
    Text(String),
}

/// A statement built from the filters given, and its arguments.
#[derive(Debug, Clone)]
struct Query {
    sql: String,
    args: Vec<Arg>,
}

impl Query {
    /// Adds an argument and returns its placeholder.
    fn arg(&mut self, p: Placeholder, arg: Arg) -> String {
        self.args.push(arg);
        p.nth(self.args.len())
    }

    fn sqlite_rows<T>(
        &self,
        c: &Connection,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = c.prepare_cached(&self.sql)?;
        let args = self.args.iter().map(|a| match a {
            Arg::Int(i) => rusqlite::types::Value::Integer(*i),
            Arg::Text(s) => rusqlite::types::Value::Text(s.clone()),
        });
        let rows = stmt.query_map(rusqlite::params_from_iter(args), f)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

fn events_query(f: &EventFilter, after: Option<&EventCursor>, limit: usize, p: Placeholder) -> Query {
    let mut q = Query { sql: String::new(), args: Vec::new() };
    let mut conditions = Vec::new();
    if let Some(name) = &f.name {
        conditions.push(format!("name = {}", q.arg(p, Arg::Text(name.clone()))));
    }
    if let Some(user) = &f.user_id {
        conditions.push(format!("user_id = {}", q.arg(p, Arg::Text(user.clone()))));
    }
    if let Some(since) = f.since {
        conditions.push(format!("received_at >= {}", q.arg(p, Arg::Int(since))));
    }
    if let Some(until) = f.until {
        conditions.push(format!("received_at <= {}", q.arg(p, Arg::Int(until))));
    }
    if let Some(c) = after {
        // (received_at, id) < cursor, written so that both planners use the
        // first term as the index range.
        let at = q.arg(p, Arg::Int(c.received_at));
        let id = q.arg(p, Arg::Text(c.id.clone()));
        conditions.push(format!("received_at <= {at} AND (received_at < {at} OR id < {id})"));
    }
    let limit = q.arg(p, Arg::Int(limit as i64));
    q.sql = format!(
        "SELECT id, name, received_at, body FROM events {} ORDER BY received_at DESC, id DESC LIMIT {limit}",
        where_clause(&conditions)
    );
    q
}

fn deliveries_query(f: &DeliveryFilter, before: Option<i64>, limit: usize, p: Placeholder) -> Query {
    let mut q = Query { sql: String::new(), args: Vec::new() };
    let mut conditions = Vec::new();
    if let Some(webhook) = &f.webhook {
        conditions.push(format!("d.webhook_id = {}", q.arg(p, Arg::Text(webhook.clone()))));
    }
    if let Some(status) = f.status {
        conditions.push(format!("d.status = {}", q.arg(p, Arg::Text(status.as_str().into()))));
    }
    if let Some(event) = &f.event_id {
        conditions.push(format!("d.event_id = {}", q.arg(p, Arg::Text(event.clone()))));
    }
    if let Some((since, until)) = f.updated {
        let (since, until) = (q.arg(p, Arg::Int(since)), q.arg(p, Arg::Int(until)));
        conditions.push(format!("d.updated_at BETWEEN {since} AND {until}"));
    }
    if let Some(before) = before {
        conditions.push(format!("d.id < {}", q.arg(p, Arg::Int(before))));
    }
    let limit = q.arg(p, Arg::Int(limit as i64));
    q.sql = format!("{DELIVERY_COLUMNS} {} ORDER BY d.id DESC LIMIT {limit}", where_clause(&conditions));
    q
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

impl Sqlite {
    /// Runs `f` on a fresh read-only connection, off the async threads.
    /// Opening one costs tens of microseconds, far less than the queries it
    /// serves, and needs no pool to keep in step with the writer.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let path = self.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&path, flags)
                .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            f(&conn)
        })
        .await
        .map_err(|e| Error::Storage(format!("a read failed: {e}")))?
    }
}

impl Postgres {
    async fn rows<T>(&self, q: &Query, f: impl Fn(&tokio_postgres::Row) -> T) -> Result<Vec<T>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&q.sql).await?;
        let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = q
            .args
            .iter()
            .map(|a| match a {
                Arg::Int(i) => i as &(dyn tokio_postgres::types::ToSql + Sync),
                Arg::Text(s) => s as &(dyn tokio_postgres::types::ToSql + Sync),
            })
            .collect();
        Ok(client.query(&stmt, &args).await?.iter().map(f).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_measured_values_by_nearest_rank() {
        assert_eq!(percentile(&mut [], 50), None);
        assert_eq!(percentile(&mut [7], 99), Some(7));
        let mut v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!((percentile(&mut v, 50), percentile(&mut v, 99)), (Some(50), Some(99)));
        let mut v = vec![10, 1000, 20];
        assert_eq!((percentile(&mut v, 50), percentile(&mut v, 99)), (Some(20), Some(1000)));
    }

    #[test]
    fn stats_split_the_day_and_the_hour_and_skip_unknown_webhooks() {
        let counts = vec![("a".into(), "delivered".into(), 5, 2), ("a".into(), "dead".into(), 1, 0)];
        let lat =
            vec![(Some("a".into()), 100, 10), (Some("a".into()), 50, 30), (None, 100, 5), (Some("z".into()), 100, 1)];
        let stats = assemble_stats(vec!["a".into(), "b".into()], counts, lat, 60);
        assert_eq!(
            stats[0],
            WebhookStats {
                id: "a".into(),
                hour: Window { delivered: 2, failed: 0, dead: 0, p50_ms: Some(10), p99_ms: Some(10) },
                day: Window { delivered: 5, failed: 0, dead: 1, p50_ms: Some(10), p99_ms: Some(30) },
            }
        );
        assert_eq!(stats[1], WebhookStats { id: "b".into(), hour: Window::default(), day: Window::default() });
    }
}
