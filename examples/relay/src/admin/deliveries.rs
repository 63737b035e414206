//! `GET /deliveries` and `/deliveries/{id}`: deliveries newest first,
//! filtered by webhook, status and event; one delivery with its attempts.
//! `POST /deliveries/{id}/replay` and `/deliveries/replay`: queue dead or
//! failed deliveries again, as `cuecast-relay replay` does; the dispatcher's
//! sweep picks them up within `sweep_interval`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{cursor, filters, page_of, page_query, time_range};
use super::{parse_body, ErrorResponse, Page, PageQuery};
use crate::error::{Error, FieldError, Result};
use crate::storage::admin::{Delivery, DeliveryFilter, Requeue};
use crate::storage::{Attempt, Status};
use crate::Relay;

/// Filters of `GET /deliveries`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this webhook's deliveries.
    pub webhook: Option<String>,
    /// `pending`, `delivered`, `failed` or `dead`.
    pub status: Option<String>,
    /// Only the deliveries of this event.
    pub event_id: Option<String>,
}

const STATUSES: &str = "pending, delivered, failed or dead";

#[utoipa::path(
    get,
    path = "/deliveries",
    tag = "deliveries",
    params(DeliveriesQuery, PageQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Page<Delivery>),
        (status = 400, description = "A filter or the cursor is invalid; `fields` names it", body = ErrorResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorResponse),
    )
)]
pub async fn list_deliveries(
    State(relay): State<Arc<Relay>>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<Delivery>>> {
    let mut errors = Vec::new();
    let query = filters(query, &mut errors);
    let page = page_query(page, &mut errors);
    let status = query.status.as_deref().and_then(|s| {
        let status = Status::parse(s);
        if status.is_none() {
            errors.push(FieldError::new("status", format!("{s:?} is not {STATUSES}")));
        }
        status
    });
    // The cursor is the last id of the previous page.
    let before = cursor(&page, &mut errors, |c| c.parse::<i64>().ok());
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let filter = DeliveryFilter { webhook: query.webhook, status, event_id: query.event_id, updated: None };
    let limit = page.limit();
    let items = relay.storage.list_deliveries(filter, before, limit + 1).await?;
    Ok(Json(page_of(items, limit, |last| last.id.to_string())))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    pub delivery: Delivery,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

/// A delivery id from the path; anything else names no delivery.
fn delivery_id(id: &str) -> Result<i64> {
    id.parse().map_err(|_| Error::NotFound(format!("no delivery {id}")))
}

#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryDetail),
        (status = 404, description = "No delivery has this id", body = ErrorResponse),
    )
)]
pub async fn get_delivery(State(relay): State<Arc<Relay>>, Path(id): Path<String>) -> Result<Json<DeliveryDetail>> {
    let id = delivery_id(&id)?;
    let delivery = relay.storage.delivery(id).await?.ok_or_else(|| Error::NotFound(format!("no delivery {id}")))?;
    let attempts = relay.storage.attempts(id).await?;
    Ok(Json(DeliveryDetail { delivery, attempts }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// How many deliveries are pending again.
    pub replayed: usize,
}

#[utoipa::path(
    post,
    path = "/deliveries/{id}/replay",
    tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "Queued again with a fresh retry schedule", body = Replayed),
        (status = 404, description = "No delivery has this id", body = ErrorResponse),
        (status = 409, description = "The delivery is pending or delivered", body = ErrorResponse),
    )
)]
pub async fn replay_one(State(relay): State<Arc<Relay>>, Path(id): Path<String>) -> Result<Json<Replayed>> {
    let replayed = relay.storage.requeue_one(delivery_id(&id)?).await?;
    Ok(Json(Replayed { replayed }))
}

/// Which finished deliveries to queue again.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    /// Only this webhook's deliveries.
    pub webhook: Option<String>,
    /// `dead` or `failed`.
    #[schema(required = true, value_type = String)]
    pub status: Option<String>,
    /// Only deliveries that finished at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only deliveries that finished at or before this time (Unix ms).
    pub until: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/deliveries/replay",
    tag = "deliveries",
    request_body = ReplayFilter,
    responses(
        (status = 200, description = "How many were queued again", body = Replayed),
        (status = 400, description = "The filter is invalid; `fields` names it", body = ErrorResponse),
    )
)]
pub async fn replay_many(State(relay): State<Arc<Relay>>, body: Bytes) -> Result<Json<Replayed>> {
    let body: ReplayFilter = parse_body(&body)?;
    let mut errors = Vec::new();
    let status = match body.status.as_deref() {
        None => {
            errors.push(FieldError::new("status", "is required: dead or failed"));
            None
        }
        Some(s) => match Status::parse(s) {
            Some(st @ (Status::Dead | Status::Failed)) => Some(st),
            _ => {
                errors.push(FieldError::new("status", format!("{s:?} is not dead or failed")));
                None
            }
        },
    };
    let (since, until) = (body.since.map(|s| s.to_string()), body.until.map(|u| u.to_string()));
    let (since, until) = time_range(since.as_deref(), until.as_deref(), &mut errors);
    let Some(status) = status.filter(|_| errors.is_empty()) else { return Err(Error::Invalid(errors)) };
    let replayed = relay.storage.requeue(Requeue { webhook: body.webhook, status, since, until }).await?;
    Ok(Json(Replayed { replayed }))
}
