//! `/admin/v1/sources`: write keys and the browser origins each accepts.
//! A revoked key is kept (so it is never handed out again) but refused with
//! 401 from the next batch on, on every relay once it reloads the catalog.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{parse_body, ErrorResponse};
use crate::catalog::{Change, Origin, StoredSource};
use crate::config::check_origin;
use crate::error::{Error, FieldError, Result};
use crate::storage::now_ms;
use crate::Relay;

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceList {
    pub items: Vec<StoredSource>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    /// Generated (`pk_…`) when absent.
    pub write_key: Option<String>,
    /// `["*"]`, or origins like `"https://app.example.com"`.
    pub origins: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSource {
    pub origins: Vec<String>,
}

fn not_found(key: &str) -> Error {
    Error::NotFound(format!("no source with write key {:?}", crate::catalog::hint(key)))
}

fn check_origins(origins: &[String]) -> Result<()> {
    let mut errors: Vec<FieldError> = origins
        .iter()
        .enumerate()
        .filter_map(|(i, o)| check_origin(o).err().map(|m| FieldError::new(format!("origins[{i}]"), m)))
        .collect();
    if origins.is_empty() {
        errors.push(FieldError::new("origins", "must list at least one origin, or \"*\" for any"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

/// Every source, revoked ones included.
#[utoipa::path(get, path = "/sources", tag = "sources", responses((status = 200, body = SourceList)))]
pub async fn list(State(relay): State<Arc<Relay>>) -> Json<SourceList> {
    Json(SourceList { items: relay.registry.current().stored_sources.clone() })
}

/// Create a source; its write key is generated unless given.
#[utoipa::path(post, path = "/sources", tag = "sources", request_body = CreateSource,
    responses((status = 201, body = StoredSource), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn create(State(relay): State<Arc<Relay>>, body: Bytes) -> Result<impl IntoResponse> {
    let body: CreateSource = parse_body(&body)?;
    let write_key = match body.write_key {
        Some(k) if k.is_empty() || k.len() > 128 || !k.chars().all(|c| c.is_ascii_graphic()) => {
            return Err(Error::Invalid(vec![FieldError::new(
                "write_key",
                "must be 1 to 128 visible ASCII characters (no spaces)",
            )]))
        }
        Some(k) => k,
        None => format!("pk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())),
    };
    check_origins(&body.origins)?;
    let now = now_ms();
    let source = StoredSource {
        write_key: write_key.clone(),
        origins: body.origins,
        origin: Origin::Api,
        edited: false,
        revoked_at: None,
        created_at: now,
        updated_at: now,
    };
    if !relay.registry.change(Change::CreateSource(source.clone())).await? {
        return Err(Error::Conflict("a source with this write key exists already".into()));
    }
    tracing::info!(write_key = %crate::catalog::hint(&write_key), "source created through the admin API");
    Ok((StatusCode::CREATED, Json(source)))
}

/// Change the origins a write key accepts.
#[utoipa::path(put, path = "/sources/{write_key}", tag = "sources", params(("write_key" = String, Path)), request_body = UpdateSource,
    responses((status = 200, body = StoredSource), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn update(
    State(relay): State<Arc<Relay>>,
    Path(write_key): Path<String>,
    body: Bytes,
) -> Result<Json<StoredSource>> {
    let body: UpdateSource = parse_body(&body)?;
    check_origins(&body.origins)?;
    let current = relay.registry.current();
    let old = current.stored_source(&write_key).ok_or_else(|| not_found(&write_key))?;
    let source = StoredSource {
        origins: body.origins,
        edited: old.origin == Origin::Config,
        updated_at: now_ms(),
        ..old.clone()
    };
    if !relay.registry.change(Change::UpdateSource(source.clone())).await? {
        return Err(not_found(&write_key));
    }
    Ok(Json(source))
}

/// Revoke a write key: its batches are refused (401) from now on.
#[utoipa::path(delete, path = "/sources/{write_key}", tag = "sources", params(("write_key" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)))]
pub async fn revoke(State(relay): State<Arc<Relay>>, Path(write_key): Path<String>) -> Result<StatusCode> {
    let current = relay.registry.current();
    let old = current.stored_source(&write_key).ok_or_else(|| not_found(&write_key))?;
    if old.revoked_at.is_none() {
        let now = now_ms();
        let source = StoredSource {
            revoked_at: Some(now),
            edited: old.origin == Origin::Config,
            updated_at: now,
            ..old.clone()
        };
        relay.registry.change(Change::UpdateSource(source)).await?;
        tracing::info!(write_key = %crate::catalog::hint(&write_key), "source revoked through the admin API");
    }
    Ok(StatusCode::NO_CONTENT)
}
