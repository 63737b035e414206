//! Admin API benchmark: fills a relay's database with realistic history,
//! then times the admin API's list queries against a running relay.
//!
//! ```text
//! cuecast-adminbench fill --storage URL [--events 100000] [--attempts-per-delivery 3] [--days 3]
//! cuecast-adminbench measure --url http://127.0.0.1:PORT --token T [--requests 200]
//! ```
//!
//! `fill` (a stable interface: the console's page-paint measurement uses it
//! too) applies the relay's migrations to `--storage` (`sqlite://PATH` or
//! `postgres://…`, as in the relay's `storage` key) and appends, straight
//! through SQL in large transactions:
//! - `--events` events received over the last `--days` days, oldest first,
//!   ~700-byte bodies like the SDK's (8 names, 5 built-in; 5,000 users);
//! - one delivery per event, to the webhooks `slack`, `crm`, `sheet` and
//!   `zendesk` in turn: 90 % delivered, 4 % failed, 6 % dead, none pending
//!   (so a relay serving the file sends nothing);
//! - `--attempts-per-delivery` attempts each (500s and timeouts, then the
//!   final answer), with durations from 20 ms to a few seconds.
//!
//! It prints one JSON line: what it wrote, how long it took, and a config to
//! serve the result with (the four webhooks point at a closed loopback port).
//!
//! `measure` sends `--requests` sequential requests (after 5 to warm up) of
//! each query below and prints one JSON line of p50/p99 in ms per query:
//! `deliveries_first` (page 1), `deliveries_deep` (a page ~`--deep-rows`
//! rows down, reached by following `next`), `deliveries_webhook_status`
//! (`?webhook=slack&status=dead`), `events_first`, `events_by_name`
//! (`?name=report.exported`), `events_by_user`, `event_names`,
//! `delivery_detail` and `stats` (a quarter as many requests).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Fills a cuecast-relay database and measures the admin API's list queries")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append realistic events, deliveries and attempts to a database.
    Fill {
        /// `sqlite://PATH` or `postgres://…`.
        #[arg(long)]
        storage: String,
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        attempts_per_delivery: usize,
        /// The events are spread over this many days up to now.
        #[arg(long, default_value_t = 3)]
        days: u32,
    },
    /// Time the admin API's queries against a running relay.
    Measure {
        /// The relay, e.g. `http://127.0.0.1:8686`.
        #[arg(long)]
        url: String,
        /// Its `[admin] token`.
        #[arg(long, env = "CUECAST_ADMIN_TOKEN")]
        token: String,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// How far down the deep page is.
        #[arg(long, default_value_t = 50_000)]
        deep_rows: usize,
    },
}

const WEBHOOKS: [&str; 4] = ["slack", "crm", "sheet", "zendesk"];
const NAMES: [&str; 8] = [
    "survey.submitted",
    "shoutout.clicked",
    "onboarding.task_completed",
    "walkthru.goal_reached",
    "user.identified",
    "report.exported",
    "page.viewed",
    "invoice.paid",
];
const USERS: usize = 5000;
/// Rows per transaction (PostgreSQL: per statement).
const CHUNK: usize = 5000;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Fill { storage, events, attempts_per_delivery, days } => {
                fill(&storage, events, attempts_per_delivery.max(1), days).await
            }
            Command::Measure { url, token, requests, deep_rows } => measure(&url, &token, requests, deep_rows).await,
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One generated event with its delivery and attempts.
struct Row {
    event_id: String,
    name: &'static str,
    user_id: String,
    received_at: i64,
    body: String,
    delivery_id: i64,
    webhook: &'static str,
    msg_id: String,
    status: &'static str,
    updated_at: i64,
    last_error: Option<String>,
    attempts: Vec<AttemptRow>,
}

/// (id, at, HTTP status, duration ms, error)
type AttemptRow = (i64, i64, Option<i32>, i64, Option<String>);

/// Event `i` of `n`, deterministic but for its random ids.
fn row(i: usize, n: usize, per: usize, start: i64, span: i64, delivery_id: i64, attempt_id: i64) -> Row {
    let h = |salt: u64| {
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9)
    };
    let name = NAMES[(h(1) % NAMES.len() as u64) as usize];
    let user_id = format!("user-{}", h(2) % USERS as u64);
    let received_at = start + (span as i128 * i as i128 / n.max(1) as i128) as i64;
    let event_id = uuid::Uuid::new_v4().to_string();
    let ts = cuecast::time::format_millis(received_at - 800);
    let body = json!({
        "id": event_id, "event": name, "timestamp": ts,
        "anonymousId": format!("anon-{}", h(3) % 20_000), "userId": user_id,
        "sessionId": format!("sess-{}", h(4) % 50_000),
        "properties": {"surveyId": "nps-q3", "kind": "nps", "score": h(5) % 11, "comment": "Useful, but the export is slow", "plan": "team"},
        "context": {
            "page": {"url": "https://app.example.com/reports?tab=nps", "path": "/reports", "referrer": "https://app.example.com/", "title": "Reports"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
            "locale": "en-US", "timezone": "Europe/Berlin", "screen": {"width": 1440, "height": 900},
            "library": {"name": "cuecast", "version": "0.1.0"}
        },
        "traits": {}
    })
    .to_string();
    let roll = h(6) % 100;
    let status = match roll {
        0..=89 => "delivered",
        90..=93 => "failed",
        _ => "dead",
    };
    let mut at = received_at + 5;
    let mut attempts = Vec::with_capacity(per);
    for k in 0..per {
        let last = k + 1 == per;
        // Mostly quick answers, a tail of slow ones, and timeouts among the retries.
        let duration = match h(10 + k as u64) % 100 {
            0..=79 => 20 + (h(20 + k as u64) % 180) as i64,
            80..=97 => 200 + (h(30 + k as u64) % 1800) as i64,
            _ => 10_000,
        };
        let (http, error) = match (status, last) {
            ("delivered", true) => (Some(200), None),
            ("failed", true) => (Some(400), Some("HTTP 400: not retried".to_string())),
            _ if duration == 10_000 => (None, Some("timed out after 10s".to_string())),
            _ => (Some(500), Some("HTTP 500: will retry".to_string())),
        };
        attempts.push((attempt_id + k as i64, at, http, duration, error));
        at += duration + 5_000 * (k as i64 + 1);
    }
    let updated_at = attempts.last().map(|a| a.1 + a.3).unwrap_or(received_at);
    let last_error = match status {
        "delivered" => None,
        "failed" => Some("HTTP 400: not retried".to_string()),
        _ => Some(format!("HTTP 500; dead-lettered after {per} attempts")),
    };
    Row {
        event_id,
        name,
        user_id,
        received_at,
        body,
        delivery_id,
        webhook: WEBHOOKS[i % WEBHOOKS.len()],
        msg_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
        status,
        updated_at,
        last_error,
        attempts,
    }
}

async fn fill(storage: &str, n: usize, per: usize, days: u32) -> Result<String> {
    let url = if storage.starts_with("postgres://") || storage.starts_with("postgresql://") {
        cuecast_relay::config::Storage::Postgres(storage.to_string())
    } else {
        cuecast_relay::config::Storage::Sqlite(PathBuf::from(storage.strip_prefix("sqlite://").unwrap_or(storage)))
    };
    cuecast_relay::storage::migrate(&url, None).await?;
    let started = Instant::now();
    let span = days as i64 * 86_400_000;
    let start = cuecast_relay::storage::now_ms() - span;
    match &url {
        cuecast_relay::config::Storage::Sqlite(path) => fill_sqlite(path, n, per, start, span)?,
        cuecast_relay::config::Storage::Postgres(url) => fill_postgres(url, n, per, start, span).await?,
    }
    let config = format!(
        "storage = \"{storage}\"\nlisten = \"127.0.0.1:8686\"\n[admin]\ntoken = \"bench\"\n[egress]\nallow_cidrs = [\"127.0.0.0/8\"]\n[[source]]\nwrite_key = \"pk_bench\"\norigins = [\"*\"]\n{}",
        WEBHOOKS
            .iter()
            .map(|w| format!("[[webhook]]\nid = \"{w}\"\nevents = [\"*\"]\nurl = \"http://127.0.0.1:9/{w}\"\n"))
            .collect::<String>()
    );
    Ok(json!({
        "events": n, "deliveries": n, "attempts": n * per,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "config": config,
    })
    .to_string())
}

fn fill_sqlite(path: &std::path::Path, n: usize, per: usize, start: i64, span: i64) -> Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let next = |table: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"), [], |r| r.get(0))
    };
    let (mut delivery_id, mut attempt_id) = (next("deliveries")?, next("attempts")?);
    for chunk in (0..n).collect::<Vec<_>>().chunks(CHUNK) {
        conn.execute_batch("BEGIN")?;
        {
            let mut event = conn.prepare_cached(
                "INSERT INTO events (id, name, write_key, received_at, body, user_id) VALUES (?1, ?2, 'pk_bench', ?3, ?4, ?5)",
            )?;
            let mut delivery = conn.prepare_cached(
                "INSERT INTO deliveries (id, event_id, webhook_id, msg_id, status, attempts, next_attempt_at, created_at, updated_at, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9)",
            )?;
            let mut attempt = conn.prepare_cached(
                "INSERT INTO attempts (id, delivery_id, at, status, duration_ms, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for &i in chunk {
                let r = row(i, n, per, start, span, delivery_id, attempt_id);
                delivery_id += 1;
                attempt_id += per as i64;
                event.execute(rusqlite::params![r.event_id, r.name, r.received_at, r.body, r.user_id])?;
                delivery.execute(rusqlite::params![
                    r.delivery_id,
                    r.event_id,
                    r.webhook,
                    r.msg_id,
                    r.status,
                    per as i64,
                    r.received_at,
                    r.updated_at,
                    r.last_error
                ])?;
                for (id, at, http, duration, error) in &r.attempts {
                    attempt.execute(rusqlite::params![id, r.delivery_id, at, http, duration, error])?;
                }
            }
        }
        conn.execute_batch("COMMIT")?;
    }
    // Fresh statistics, as a relay that has run a while would have.
    conn.execute_batch("ANALYZE")?;
    Ok(())
}

async fn fill_postgres(url: &str, n: usize, per: usize, start: i64, span: i64) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let next = |table: &'static str| {
        let client = &client;
        async move {
            let r = client.query_one(&format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"), &[]).await?;
            Ok::<i64, tokio_postgres::Error>(r.get(0))
        }
    };
    let (mut delivery_id, mut attempt_id) = (next("deliveries").await?, next("attempts").await?);
    for chunk in (0..n).collect::<Vec<_>>().chunks(CHUNK) {
        let rows: Vec<Row> = chunk
            .iter()
            .map(|&i| {
                let r = row(i, n, per, start, span, delivery_id, attempt_id);
                delivery_id += 1;
                attempt_id += per as i64;
                r
            })
            .collect();
        let col = |f: fn(&Row) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let (ids, names, users, bodies) =
            (col(|r| &r.event_id), col(|r| r.name), col(|r| &r.user_id), col(|r| &r.body));
        let (hooks, msgs, statuses) = (col(|r| r.webhook), col(|r| &r.msg_id), col(|r| r.status));
        let received: Vec<i64> = rows.iter().map(|r| r.received_at).collect();
        let updated: Vec<i64> = rows.iter().map(|r| r.updated_at).collect();
        let d_ids: Vec<i64> = rows.iter().map(|r| r.delivery_id).collect();
        let errors: Vec<Option<&str>> = rows.iter().map(|r| r.last_error.as_deref()).collect();
        let a = || rows.iter().flat_map(|r| r.attempts.iter().map(move |a| (r.delivery_id, a)));
        let a_ids: Vec<i64> = a().map(|(_, a)| a.0).collect();
        let a_delivery: Vec<i64> = a().map(|(d, _)| d).collect();
        let a_at: Vec<i64> = a().map(|(_, a)| a.1).collect();
        let a_status: Vec<Option<i32>> = a().map(|(_, a)| a.2).collect();
        let a_duration: Vec<i64> = a().map(|(_, a)| a.3).collect();
        let a_error: Vec<Option<&str>> = a().map(|(_, a)| a.4.as_deref()).collect();
        client
            .execute(
                "WITH ev AS (
                     INSERT INTO events (id, name, write_key, received_at, body, user_id)
                     SELECT id, name, 'pk_bench', at, body, u FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) AS t(id, name, at, body, u)),
                 dl AS (
                     INSERT INTO deliveries (id, event_id, webhook_id, msg_id, status, attempts, next_attempt_at, created_at, updated_at, last_error)
                     OVERRIDING SYSTEM VALUE
                     SELECT did, e, w, m, s, $17::int, NULL, at, up, err
                     FROM UNNEST($6::bigint[], $1::text[], $7::text[], $8::text[], $9::text[], $3::bigint[], $10::bigint[], $11::text[]) AS t(did, e, w, m, s, at, up, err))
                 INSERT INTO attempts (id, delivery_id, at, status, duration_ms, error) OVERRIDING SYSTEM VALUE
                 SELECT * FROM UNNEST($12::bigint[], $13::bigint[], $14::bigint[], $15::int[], $16::bigint[], $18::text[])",
                &[
                    &ids, &names, &received, &bodies, &users, &d_ids, &hooks, &msgs, &statuses, &updated, &errors,
                    &a_ids, &a_delivery, &a_at, &a_status, &a_duration, &(per as i32), &a_error,
                ],
            )
            .await?;
    }
    // Ids were given explicitly: move the identities past them.
    client
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('deliveries', 'id'), (SELECT MAX(id) FROM deliveries));
             SELECT setval(pg_get_serial_sequence('attempts', 'id'), (SELECT MAX(id) FROM attempts));",
        )
        .await?;
    // What autovacuum has done on a relay that ran a while: statistics, and
    // the visibility map that lets counts read the index alone.
    for table in ["events", "deliveries", "attempts"] {
        client.batch_execute(&format!("VACUUM ANALYZE {table}")).await?;
    }
    Ok(())
}

async fn measure(base: &str, token: &str, requests: usize, deep_rows: usize) -> Result<String> {
    let client = reqwest::Client::new();
    let api = format!("{}/admin/v1", base.trim_end_matches('/'));
    let get = |path: String| {
        let req = client.get(format!("{api}{path}")).bearer_auth(token);
        async move {
            let resp = req.send().await?;
            let status = resp.status();
            let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
            if !status.is_success() {
                return Err(format!("GET {path}: {status} {body}").into());
            }
            Ok::<Value, Box<dyn std::error::Error + Send + Sync>>(body)
        }
    };
    // A cursor ~deep_rows down, reached as a client would: following `next`.
    let mut deep = None;
    let mut seen = 0;
    while seen < deep_rows {
        let path = match &deep {
            Some(c) => format!("/deliveries?limit=500&cursor={c}"),
            None => "/deliveries?limit=500".into(),
        };
        let page = get(path).await?;
        seen += page["items"].as_array().map_or(0, |i| i.len());
        match page["next"].as_str() {
            Some(next) => deep = Some(next.to_string()),
            None => break,
        }
    }
    let first = get("/deliveries?limit=1".into()).await?;
    let some_delivery = first["items"][0]["id"].as_i64().ok_or("the relay has no deliveries: run `fill` first")?;
    let queries: Vec<(&str, String, usize)> = vec![
        ("deliveries_first", "/deliveries?limit=50".into(), requests),
        ("deliveries_deep", format!("/deliveries?limit=50&cursor={}", deep.clone().unwrap_or_default()), requests),
        ("deliveries_webhook_status", "/deliveries?webhook=slack&status=dead&limit=50".into(), requests),
        ("events_first", "/events?limit=50".into(), requests),
        ("events_by_name", "/events?name=report.exported&limit=50".into(), requests),
        ("events_by_user", "/events?user_id=user-17&limit=50".into(), requests),
        ("event_names", "/event-names".into(), requests),
        ("delivery_detail", format!("/deliveries/{}", some_delivery / 2), requests),
        ("stats", "/stats".into(), (requests / 4).max(1)),
    ];
    let mut out = serde_json::Map::new();
    for (name, path, n) in queries {
        for _ in 0..5 {
            get(path.clone()).await?;
        }
        let mut ms = Vec::with_capacity(n);
        let mut items = 0;
        for _ in 0..n {
            let t = Instant::now();
            let body = get(path.clone()).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            items = body["items"]
                .as_array()
                .or(body["names"].as_array())
                .or(body["webhooks"].as_array())
                .map_or(1, |i| i.len());
        }
        ms.sort_by(f64::total_cmp);
        let pick = |p: usize| (ms[(ms.len() * p).div_ceil(100).max(1) - 1] * 100.0).round() / 100.0;
        out.insert(name.into(), json!({"p50_ms": pick(50), "p99_ms": pick(99), "items": items}));
    }
    Ok(json!({"requests": requests, "deep_rows": seen, "queries": out}).to_string())
}
