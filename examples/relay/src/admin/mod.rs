//! The admin API under `/admin/v1` (the contract for people is
//! `docs/ADMIN_API.md`; for machines, `GET /openapi.json`, generated from the
//! `#[utoipa::path]` annotations on the handlers below, which also register
//! the routes, so the document cannot drift from what is served).
//!
//! - [`webhooks`]: create, edit, enable/disable, delete, rotate secrets, test, preview.
//! - [`sources`]: write keys and their origins.
//! - [`events`]: stored events, one with its deliveries, the names seen.
//! - [`deliveries`]: deliveries and their attempts; replay.
//! - [`stats`]: outcomes and latency per webhook over the last hour and day.
//!
//! Every route sits behind [`require_token`]. Handlers are thin: they check
//! input with the same rules as `check-config`, call [`crate::storage`],
//! and answer JSON; errors are the crate's [`Error`].

pub mod deliveries;
pub mod events;
pub mod sources;
pub mod stats;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, FieldError, Result};
use crate::Relay;

/// The admin routes, to nest under `/admin/v1`.
pub fn router(relay: Arc<Relay>) -> OpenApiRouter<Arc<Relay>> {
    OpenApiRouter::new()
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::show, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::disable))
        .routes(routes!(webhooks::enable))
        .routes(routes!(webhooks::rotate))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::preview))
        .routes(routes!(webhooks::preview_unsaved))
        .routes(routes!(sources::list, sources::create))
        .routes(routes!(sources::update, sources::revoke))
        .routes(routes!(events::list_events))
        .routes(routes!(events::get_event))
        .routes(routes!(events::event_names))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::get_delivery))
        .routes(routes!(deliveries::replay_one))
        .routes(routes!(deliveries::replay_many))
        .routes(routes!(stats::stats))
        .layer(middleware::from_fn_with_state(relay, require_token))
}

/// The error body, for the OpenAPI document (the type itself is the wire
/// crate's `ErrorBody`; `fields` comes with code `invalid` only).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// Stable, e.g. `invalid`, `not_found`, `conflict`, `unauthorized`.
    pub code: String,
    pub message: String,
    /// With `invalid`: every problem, each naming its field.
    pub fields: Option<Vec<FieldError>>,
}

/// Like [`parse_body`], for bodies that may be left out (every field optional).
pub fn parse_optional_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

/// A JSON body, or a 400 naming the field that is wrong (`url`,
/// `retry[1]`, or the missing or unknown key), not just a line and column.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        // serde names a missing key in backticks, at the parent's path (an
        // unknown key's path is the key itself).
        let missing = text.strip_prefix("missing field `").and_then(|t| t.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), "." | "") => name.to_string(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, "." | "") => "body".to_string(),
            (None, path) => path.to_string(),
        };
        // Drop serde_json's position suffix: the field says where.
        let message = text.split(" at line ").next().unwrap_or(&text).to_string();
        let message =
            if inner.is_syntax() || inner.is_eof() { format!("is not valid JSON: {message}") } else { message };
        Error::Invalid(vec![FieldError::new(field, message)])
    })
}

/// Lets a request through only with `Authorization: Bearer <[admin] token>`.
/// Without a configured token the admin API does not exist (404).
pub async fn require_token(State(relay): State<Arc<Relay>>, req: Request, next: Next) -> Result<Response> {
    check_token(relay.config.admin_token.as_deref(), req.headers())?;
    Ok(next.run(req).await)
}

pub fn check_token(expected: Option<&str>, headers: &HeaderMap) -> Result<()> {
    let expected = expected.ok_or_else(|| Error::NotFound("the admin API is off: set [admin] token".into()))?;
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Constant time, so the token cannot be guessed byte by byte from timings.
    match given {
        Some(g)
            if g.len() == expected.len()
                && g.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 =>
        {
            Ok(())
        }
        _ => Err(Error::Unauthorized),
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page: default 50, at most 500.
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub const DEFAULT: usize = 50;
    pub const MAX: usize = 500;

    pub fn limit(&self) -> usize {
        self.limit.map(|l| l as usize).unwrap_or(Self::DEFAULT).clamp(1, Self::MAX)
    }
}

/// One page of a list, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `null` on the last one.
    pub next: Option<String>,
}
