//! The HTTP API: `POST /v1/batch` (with CORS and limits), health checks and
//! the admin endpoints.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cuecast::wire::{self, Ack};
use http_body_util::BodyExt;

use crate::error::{Error, Result};
use crate::policy::{Bucket, Rate};
use crate::storage::{NewDelivery, NewEvent, Status};
use crate::Relay;

/// How long a client is told to wait when the backlog is above its high-water mark.
pub const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Per-key and per-IP token buckets.
pub struct Limiter {
    start: Instant,
    keys: Mutex<HashMap<String, Bucket>>,
    ips: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { start: Instant::now(), keys: Mutex::default(), ips: Mutex::default() }
    }
}

impl Limiter {
    fn take<K: std::hash::Hash + Eq>(
        &self,
        map: &Mutex<HashMap<K, Bucket>>,
        key: K,
        rate: Rate,
    ) -> Result<(), Duration> {
        let now = self.start.elapsed();
        let mut map = map.lock().unwrap();
        if map.len() > 100_000 {
            // Forget clients that have been quiet long enough to be full again.
            map.retain(|_, b| !b.is_full(now));
        }
        map.entry(key).or_insert_with(|| Bucket::new(rate, now)).take(now)
    }
}

fn origin_allowed_anywhere(relay: &Relay, origin: &str) -> bool {
    relay.registry.current().sources.iter().any(|s| s.origins.allows(origin))
}

fn cors(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        // The SDK backs off by Retry-After (429, 503); a page can read only exposed headers.
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Retry-After"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `OPTIONS /v1/batch`: a preflight carries no body, so no write key; it is
/// answered for any origin that some source allows, and the POST itself is
/// checked against its key.
pub async fn preflight(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if origin.is_empty() || !origin_allowed_anywhere(&relay, origin) {
        return Error::OriginNotAllowed(if origin.is_empty() { "(none)".into() } else { origin.into() })
            .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    cors(h, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, content-encoding"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

/// `POST /v1/batch`: a batch from the SDK (the wire format of
/// `tests/fixtures`, plain or gzip); answered once it is stored durably.
#[utoipa::path(post, path = "/v1/batch", tag = "ingest",
    request_body(content = Object, description = "a batch: {v, writeKey, batchId, sentAt, attempt, sdk, events[]}", content_type = "application/json"),
    responses(
        (status = 202, description = "stored: {accepted, duplicates}"),
        (status = 400, description = "the batch breaks the wire contract; the message names the field", body = crate::admin::ErrorResponse),
        (status = 401, description = "unknown write key", body = crate::admin::ErrorResponse),
        (status = 403, description = "origin not allowed for this write key", body = crate::admin::ErrorResponse),
        (status = 413, description = "body or event too large", body = crate::admin::ErrorResponse),
        (status = 429, description = "rate limited; see Retry-After", body = crate::admin::ErrorResponse),
        (status = 503, description = "storage unavailable or backlog high; see Retry-After", body = crate::admin::ErrorResponse)))]
pub async fn batch(State(relay): State<Arc<Relay>>, req: Request) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let result = accept(&relay, req, origin.as_deref()).await;
    let mut response = match result {
        Ok(ack) => {
            relay.metrics.events_accepted.inc_by(ack.accepted);
            relay.metrics.events_duplicate.inc_by(ack.duplicates);
            (StatusCode::ACCEPTED, Json(ack)).into_response()
        }
        Err(e) => {
            let reason = crate::metrics::Reason { reason: e.code().to_string() };
            relay.metrics.batches_rejected.get_or_create(&reason).inc();
            e.into_response()
        }
    };
    // Let the page read the answer when its origin is one we serve, and read
    // an error whatever its origin: a page on an origin nobody configured
    // then sees 403 and drops the batch, instead of seeing a network error
    // and retrying it for a day. An error body tells it nothing secret.
    if let Some(origin) = origin {
        if response.status().is_client_error() || origin_allowed_anywhere(&relay, &origin) {
            cors(response.headers_mut(), &origin);
        }
    }
    response
}

/// Longest time a request body may take to arrive.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Reads a `POST /v1/batch` body of at most `limit` bytes. Behind
/// [`crate::decompression`] the limit counts decompressed bytes, so a
/// small gzip bomb is cut off at the limit too; a corrupt gzip stream is
/// [`Error::BadBody`]. Public for the `gzip` fuzz target, which drives the
/// same layer and this function.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes> {
    // A client trickling its body must not hold a connection (or shutdown) forever.
    let reading = http_body_util::Limited::new(body, limit).collect();
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, reading).await.map_err(|_| Error::BodyTimeout)?;
    let body = collected.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            Error::BodyTooLarge { limit }
        } else {
            Error::BadBody(e.to_string())
        }
    })?;
    Ok(body.to_bytes())
}

async fn accept(relay: &Relay, req: Request, origin: Option<&str>) -> Result<Ack> {
    let limits = &relay.config.limits;
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    relay
        .limiter
        .take(&relay.limiter.ips, ip, limits.ip_rate)
        .map_err(|retry_after| Error::RateLimited { per: "from this address", retry_after })?;
    if relay.dispatcher.backlog() >= limits.backlog_high_water {
        return Err(Error::Overloaded { retry_after: OVERLOAD_RETRY_AFTER });
    }
    // The decompression layer runs first, so this limit applies to the
    // decompressed bytes: a small gzip bomb is cut off at the limit too.
    // Only gzip is decoded (by the layer); anything else is refused here with
    // the usual JSON error body rather than a bare 415 from the layer.
    if let Some(encoding) = req.headers().get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if encoding != "identity" && encoding != "gzip" {
            return Err(Error::UnsupportedEncoding(encoding));
        }
    }
    let body = read_body(req.into_body(), limits.max_body_bytes).await?;
    relay.metrics.ingest_bytes.inc_by(body.len() as u64);
    let batch = wire::decode_batch(&body)?;
    let catalog = relay.registry.current();
    let source = catalog.source(&batch.write_key).ok_or(Error::UnknownWriteKey)?;
    if let Some(origin) = origin {
        if !source.origins.allows(origin) {
            return Err(Error::OriginNotAllowed(origin.to_string()));
        }
    }
    relay
        .limiter
        .take(&relay.limiter.keys, batch.write_key.clone(), limits.key_rate)
        .map_err(|retry_after| Error::RateLimited { per: "for this write key", retry_after })?;

    let rules = &catalog.rules;
    let mut events = Vec::with_capacity(batch.events.len());
    for event in &batch.events {
        let value = serde_json::to_value(event).expect("wire types serialise");
        let deliveries = rules
            .route(&event.event, &value)
            .into_iter()
            .filter_map(|(hook, verdict)| {
                let webhook_id = catalog.webhooks[hook].id.clone();
                match verdict {
                    Ok(false) => None,
                    Ok(true) if relay.dispatcher.is_disabled(&webhook_id) => {
                        Some(NewDelivery { webhook_id, status: Status::Dead, error: Some("webhook disabled".into()) })
                    }
                    Ok(true) => Some(NewDelivery { webhook_id, status: Status::Pending, error: None }),
                    Err(message) => Some(NewDelivery { webhook_id, status: Status::Failed, error: Some(message) }),
                }
            })
            .collect();
        events.push(NewEvent {
            id: event.id.clone(),
            name: event.event.clone(),
            write_key: batch.write_key.clone(),
            // PostgreSQL text cannot hold NUL, which an id may contain; such a user is found by the body alone.
            user_id: event.user_id.clone().filter(|u| !u.contains('\0')),
            body: value.to_string(),
            deliveries,
        });
    }
    // Commit and hand-over run in a task of their own: a client that goes
    // away mid-request cancels this handler, and a commit without its
    // hand-over would leave deliveries that nothing sends until a restart.
    let (storage, dispatcher) = (relay.storage.clone(), relay.dispatcher.clone());
    let committed = tokio::spawn(async move {
        let stored = storage.ingest(events).await?;
        let duplicates = stored.iter().filter(|s| s.duplicate).count() as u64;
        let accepted = stored.len() as u64 - duplicates;
        dispatcher.enqueue(stored.into_iter().flat_map(|s| s.pending).collect());
        Ok::<_, Error>(Ack { accepted, duplicates })
    });
    committed.await.map_err(|e| Error::Storage(format!("ingest task failed: {e}")))?
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "the process is up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: storage reachable and migrations applied.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "storage reachable, schema current"),
    (status = 503, description = "storage unreachable", body = crate::admin::ErrorResponse)))]
pub async fn readyz(State(relay): State<Arc<Relay>>) -> Response {
    match relay.storage.ready().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "backlog": relay.dispatcher.backlog()})).into_response(),
        Err(e) => e.into_response(),
    }
}
