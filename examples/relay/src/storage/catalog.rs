//! The stored webhooks and sources (see [`crate::catalog`]) on both
//! backends: load them with their version, and apply one [`Change`] in one
//! transaction that also bumps the version (`meta.catalog_version`), which
//! every relay polls.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, postgres::Postgres, sqlite::Sqlite, Storage};
use crate::catalog::{Change, Origin, StoredSecret, StoredSource, StoredWebhook};
use crate::config::WebhookSpec;
use crate::error::{Error, Result};

const VERSION_KEY: &str = "catalog_version";
const DELETED: &str = "webhook deleted";

/// The columns of `webhooks` as stored: spec and secrets are JSON text.
struct HookRow {
    id: String,
    spec: String,
    secrets: String,
    origin: &'static str,
    edited: bool,
    created_at: i64,
    updated_at: i64,
}

impl HookRow {
    fn from(w: &StoredWebhook) -> HookRow {
        HookRow {
            id: w.spec.id.clone(),
            spec: serde_json::to_string(&w.spec).expect("a spec serialises"),
            secrets: serde_json::to_string(&w.secrets).expect("secrets serialise"),
            origin: w.origin.as_str(),
            edited: w.edited,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

fn hook(
    spec: &str,
    secrets: &str,
    origin: &str,
    edited: bool,
    created_at: i64,
    updated_at: i64,
) -> Result<StoredWebhook> {
    let corrupt = |e: serde_json::Error| Error::Storage(format!("a stored webhook is not valid JSON: {e}"));
    Ok(StoredWebhook {
        spec: serde_json::from_str::<WebhookSpec>(spec).map_err(corrupt)?,
        secrets: serde_json::from_str::<Vec<StoredSecret>>(secrets).map_err(corrupt)?,
        origin: Origin::parse(origin),
        edited,
        created_at,
        updated_at,
    })
}

fn origins_json(s: &StoredSource) -> String {
    serde_json::to_string(&s.origins).expect("strings serialise")
}

fn origins(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| Error::Storage(format!("stored origins are not valid JSON: {e}")))
}

impl Storage {
    /// The catalog's version and every stored webhook and source.
    pub async fn load_catalog(&self) -> Result<(i64, Vec<StoredWebhook>, Vec<StoredSource>)> {
        match self {
            Storage::Sqlite(s) => s.load_catalog().await,
            Storage::Postgres(p) => p.load_catalog().await,
        }
    }

    /// The catalog's version (polled by every relay).
    pub async fn catalog_version(&self) -> Result<i64> {
        match self {
            Storage::Sqlite(s) => s.catalog_version().await,
            Storage::Postgres(p) => p.catalog_version().await,
        }
    }

    /// Applies a change and bumps the version; false if it did not apply
    /// (create of an existing id, update or delete of a missing one).
    pub async fn change_catalog(&self, change: Change) -> Result<bool> {
        match self {
            Storage::Sqlite(s) => s.change_catalog(change).await,
            Storage::Postgres(p) => p.change_catalog(change).await,
        }
    }

    /// One stored event's JSON, for previews.
    pub async fn event_json(&self, id: String) -> Result<Option<String>> {
        match self {
            Storage::Sqlite(s) => {
                s.call(move |c| {
                    Ok(c.query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0)).optional()?)
                })
                .await
            }
            Storage::Postgres(p) => Ok(p
                .client()
                .await?
                .query_opt("SELECT body FROM events WHERE id = $1", &[&id])
                .await?
                .map(|r| r.get(0))),
        }
    }
}

impl Sqlite {
    async fn load_catalog(&self) -> Result<(i64, Vec<StoredWebhook>, Vec<StoredSource>)> {
        self.call(|c| {
            let version = version_sqlite(c)?;
            let mut stmt =
                c.prepare("SELECT spec, secrets, origin, edited, created_at, updated_at FROM webhooks ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            let mut hooks = Vec::new();
            for row in rows {
                let (spec, secrets, origin, edited, created, updated) = row?;
                hooks.push(hook(&spec, &secrets, &origin, edited, created, updated)?);
            }
            let mut stmt = c.prepare(
                "SELECT write_key, origins, origin, edited, revoked_at, created_at, updated_at FROM sources ORDER BY write_key",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?;
            let mut sources = Vec::new();
            for row in rows {
                let (write_key, list, origin, edited, revoked_at, created_at, updated_at) = row?;
                sources.push(StoredSource {
                    write_key,
                    origins: origins(&list)?,
                    origin: Origin::parse(&origin),
                    edited,
                    revoked_at,
                    created_at,
                    updated_at,
                });
            }
            Ok((version, hooks, sources))
        })
        .await
    }

    async fn catalog_version(&self) -> Result<i64> {
        self.call(version_sqlite).await
    }

    async fn change_catalog(&self, change: Change) -> Result<bool> {
        self.call(move |c| {
            let put_hook = |w: &StoredWebhook, sql: &str| -> Result<usize> {
                let h = HookRow::from(w);
                Ok(c.execute(&sqlite_sql(sql), params![h.id, h.spec, h.secrets, h.origin, h.edited, h.created_at, h.updated_at])?)
            };
            let put_source = |s: &StoredSource, sql: &str| -> Result<usize> {
                Ok(c.execute(
                    &sqlite_sql(sql),
                    params![s.write_key, origins_json(s), s.origin.as_str(), s.edited, s.revoked_at, s.created_at, s.updated_at],
                )?)
            };
            let delete_hook = |id: &str| -> Result<usize> {
                let n = c.execute("DELETE FROM webhooks WHERE id = ?1", [id])?;
                c.execute("DELETE FROM webhook_state WHERE webhook_id = ?1", [id])?;
                c.execute(
                    "UPDATE deliveries SET status = 'dead', updated_at = ?2, last_error = ?3 WHERE webhook_id = ?1 AND status = 'pending'",
                    params![id, now_ms(), DELETED],
                )?;
                Ok(n)
            };
            let applied = match &change {
                Change::CreateWebhook(w) => put_hook(w, SQL_INSERT_HOOK)? > 0,
                Change::UpdateWebhook(w) => put_hook(w, SQL_UPDATE_HOOK)? > 0,
                Change::DeleteWebhook(id) => delete_hook(id)? > 0,
                Change::CreateSource(s) => put_source(s, SQL_INSERT_SOURCE)? > 0,
                Change::UpdateSource(s) => put_source(s, SQL_UPDATE_SOURCE)? > 0,
                Change::Sync(plan) => {
                    for w in &plan.put_webhooks {
                        put_hook(w, SQL_UPSERT_HOOK)?;
                    }
                    for id in &plan.delete_webhooks {
                        delete_hook(id)?;
                    }
                    for s in &plan.put_sources {
                        put_source(s, SQL_UPSERT_SOURCE)?;
                    }
                    for key in &plan.delete_sources {
                        c.execute("DELETE FROM sources WHERE write_key = ?1", [key])?;
                    }
                    true
                }
            };
            if applied {
                super::sqlite::bump(c, VERSION_KEY)?;
            }
            Ok(applied)
        })
        .await
    }
}

fn version_sqlite(c: &rusqlite::Connection) -> Result<i64> {
    Ok(c.query_row("SELECT value FROM meta WHERE key = ?1", [VERSION_KEY], |r| r.get(0)).optional()?.unwrap_or(0))
}

/// The statements below are written for PostgreSQL; in SQLite `$1` is a
/// *named* parameter (numbered by first appearance), `?1` the positional one.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

const SQL_INSERT_HOOK: &str = "INSERT INTO webhooks (id, spec, secrets, origin, edited, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
const SQL_UPDATE_HOOK: &str =
    "UPDATE webhooks SET spec = $2, secrets = $3, origin = $4, edited = $5, created_at = $6, updated_at = $7 WHERE id = $1";
const SQL_UPSERT_HOOK: &str = "INSERT INTO webhooks (id, spec, secrets, origin, edited, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET spec = $2, secrets = $3, origin = $4, edited = $5, created_at = $6, updated_at = $7";
const SQL_INSERT_SOURCE: &str =
    "INSERT INTO sources (write_key, origins, origin, edited, revoked_at, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (write_key) DO NOTHING";
const SQL_UPDATE_SOURCE: &str = "UPDATE sources SET origins = $2, origin = $3, edited = $4, revoked_at = $5, created_at = $6, updated_at = $7 WHERE write_key = $1";
const SQL_UPSERT_SOURCE: &str =
    "INSERT INTO sources (write_key, origins, origin, edited, revoked_at, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (write_key) DO UPDATE SET origins = $2, origin = $3, edited = $4, revoked_at = $5, created_at = $6, updated_at = $7";

impl Postgres {
    async fn load_catalog(&self) -> Result<(i64, Vec<StoredWebhook>, Vec<StoredSource>)> {
        let mut client = self.client().await?;
        // One snapshot: the version read matches the rows read.
        let tx = client
            .build_transaction()
            .read_only(true)
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await?;
        let version = version_pg(&tx).await?;
        let mut hooks = Vec::new();
        for r in tx
            .query("SELECT spec, secrets, origin, edited, created_at, updated_at FROM webhooks ORDER BY id", &[])
            .await?
        {
            hooks.push(hook(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))?);
        }
        let mut sources = Vec::new();
        for r in tx
            .query(
                "SELECT write_key, origins, origin, edited, revoked_at, created_at, updated_at FROM sources ORDER BY write_key",
                &[],
            )
            .await?
        {
            sources.push(StoredSource {
                write_key: r.get(0),
                origins: origins(r.get(1))?,
                origin: Origin::parse(r.get(2)),
                edited: r.get(3),
                revoked_at: r.get(4),
                created_at: r.get(5),
                updated_at: r.get(6),
            });
        }
        tx.commit().await?;
        Ok((version, hooks, sources))
    }

    async fn catalog_version(&self) -> Result<i64> {
        version_pg(&self.client().await?).await
    }

    async fn change_catalog(&self, change: Change) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let put_hook = async |w: &StoredWebhook, sql: &str| -> Result<u64> {
            let h = HookRow::from(w);
            Ok(tx
                .execute(sql, &[&h.id, &h.spec, &h.secrets, &h.origin, &h.edited, &h.created_at, &h.updated_at])
                .await?)
        };
        let put_source = async |s: &StoredSource, sql: &str| -> Result<u64> {
            let list = origins_json(s);
            Ok(tx
                .execute(
                    sql,
                    &[&s.write_key, &list, &s.origin.as_str(), &s.edited, &s.revoked_at, &s.created_at, &s.updated_at],
                )
                .await?)
        };
        let delete_hook = async |id: &str| -> Result<u64> {
            let n = tx.execute("DELETE FROM webhooks WHERE id = $1", &[&id]).await?;
            tx.execute("DELETE FROM webhook_state WHERE webhook_id = $1", &[&id]).await?;
            // In id order, like every other writer of deliveries (no deadlocks).
            tx.execute(
                "SELECT id FROM deliveries WHERE webhook_id = $1 AND status = 'pending' ORDER BY id FOR UPDATE",
                &[&id],
            )
            .await?;
            tx.execute(
                "UPDATE deliveries SET status = 'dead', updated_at = $2, last_error = $3, lease_until = 0 WHERE webhook_id = $1 AND status = 'pending'",
                &[&id, &now_ms(), &DELETED],
            )
            .await?;
            Ok(n)
        };
        let applied = match &change {
            Change::CreateWebhook(w) => put_hook(w, SQL_INSERT_HOOK).await? > 0,
            Change::UpdateWebhook(w) => put_hook(w, SQL_UPDATE_HOOK).await? > 0,
            Change::DeleteWebhook(id) => delete_hook(id).await? > 0,
            Change::CreateSource(s) => put_source(s, SQL_INSERT_SOURCE).await? > 0,
            Change::UpdateSource(s) => put_source(s, SQL_UPDATE_SOURCE).await? > 0,
            Change::Sync(plan) => {
                for w in &plan.put_webhooks {
                    put_hook(w, SQL_UPSERT_HOOK).await?;
                }
                for id in &plan.delete_webhooks {
                    delete_hook(id).await?;
                }
                for s in &plan.put_sources {
                    put_source(s, SQL_UPSERT_SOURCE).await?;
                }
                for key in &plan.delete_sources {
                    tx.execute("DELETE FROM sources WHERE write_key = $1", &[key]).await?;
                }
                true
            }
        };
        if applied {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET value = meta.value + 1",
                &[&VERSION_KEY],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }
}

async fn version_pg(c: &impl deadpool_postgres::GenericClient) -> Result<i64> {
    Ok(c.query_opt("SELECT value FROM meta WHERE key = $1", &[&VERSION_KEY]).await?.map(|r| r.get(0)).unwrap_or(0))
}
