//! The admin API under `/admin/v1` (the contract for people is
//! `docs/ADMIN_API.md`; for machines, `GET /openapi.json`, generated from the
//! `#[utoipa::path]` annotations on the handlers below, which also register
//! the routes, so the document cannot drift from what is served).
//!
//! - [`webhooks`]: create, edit, enable/disable, delete, rotate secrets, test, preview.
//! - [`sources`]: write keys and their origins.
//!
//! Every route sits behind [`require_token`]. Handlers are thin: they check
//! input with the same rules as `check-config`, call [`crate::storage`],
//! and answer JSON; errors are the crate's [`Error`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::error::{Error, Result};
use crate::Relay;

/// The admin routes, to nest under `/admin/v1`.
pub fn router(relay: Arc<Relay>) -> OpenApiRouter<Arc<Relay>> {
    OpenApiRouter::new().layer(middleware::from_fn_with_state(relay, require_token))
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
