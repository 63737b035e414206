//! `GET /stats`: per webhook, over the last hour and the last day, how many
//! deliveries were delivered, failed or dead-lettered, and the p50/p99 of
//! attempt durations (see [`Storage::webhook_stats`](crate::storage::Storage::webhook_stats)
//! for what bounds the work).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ErrorResponse;
use crate::error::Result;
use crate::storage::admin::WebhookStats;
use crate::storage::now_ms;
use crate::Relay;

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Every stored webhook (the file's and the API's), in id order.
    pub webhooks: Vec<WebhookStats>,
}

#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    responses(
        (status = 200, description = "Outcomes and latency per webhook", body = Stats),
        (status = 401, description = "Missing or wrong admin token", body = ErrorResponse),
    )
)]
pub async fn stats(State(relay): State<Arc<Relay>>) -> Result<Json<Stats>> {
    let ids = relay.registry.current().stored_webhooks.iter().map(|w| w.spec.id.clone()).collect();
    Ok(Json(Stats { webhooks: relay.storage.webhook_stats(ids, now_ms()).await? }))
}
