//! `/admin/v1/webhooks`: create, edit, enable/disable, delete, rotate the
//! secret, send a test, preview the request; and `/admin/v1/preview` for a
//! definition not saved yet (the console's live preview while editing).
//!
//! Definitions are checked by [`catalog::validate`] (the rules of
//! `check-config`) and written through the [`crate::catalog::Registry`],
//! which every relay polls.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_body, parse_optional_body, ErrorResponse};
use crate::catalog::{self, Catalog, Change, Origin, StoredSecret, StoredWebhook};
use crate::config::WebhookSpec;
use crate::error::{Error, FieldError, Result};
use crate::signing::Secret;
use crate::storage::now_ms;
use crate::Relay;

/// A stored webhook as the admin API shows it: its definition plus state.
/// Secrets are never shown again after creation or rotation, only hints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    #[serde(flatten)]
    pub spec: WebhookSpec,
    /// `config` (the file) or `api`.
    pub origin: Origin,
    /// A file webhook changed through the API: the file no longer decides it.
    pub edited: bool,
    /// Why it is disabled, or `null`.
    pub disabled: Option<String>,
    pub secrets: Vec<SecretHint>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Why a stored definition is not in force (e.g. `https_only` set since), if it is not.
    pub problems: Vec<FieldError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretHint {
    /// The first characters, e.g. `whsec_Ab3d…`.
    pub hint: String,
    /// When a rotated-out secret stops signing; `null` for the current one.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

/// The body of a create: a definition, and optionally its secret.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWebhook {
    #[serde(flatten)]
    pub spec: WebhookSpec,
    /// `whsec_…`; generated when absent.
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub webhook: WebhookView,
    /// The signing secret, shown this once.
    pub secret: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old secret keeps signing, e.g. `"24h"` (the default).
    pub grace: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    /// The new signing secret, shown this once.
    pub secret: String,
    /// When the previous secret stops signing.
    pub previous_expires_at: Option<i64>,
}

/// Which event to render or send: given inline, a stored one, or (neither) a sample.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventChoice {
    pub event: Option<Value>,
    pub event_id: Option<String>,
    /// The `webhook-id` to render with (a delivery's `msg_id`); default `msg_preview`.
    pub msg_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewUnsaved {
    pub webhook: Value,
    pub event: Option<Value>,
    pub event_id: Option<String>,
}

/// A request as it would be sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// `null` for GET.
    pub body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Whether the event's name and the `when` condition select this webhook.
    pub matches: bool,
    /// A condition or template that failed for this event.
    pub error: Option<String>,
    pub request: Option<RequestView>,
    /// The event rendered (the one given, the stored one, or the sample chosen).
    pub event: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The receiver's HTTP status, `null` when it did not answer.
    pub status: Option<u16>,
    pub duration_ms: u64,
    pub response: Option<String>,
    pub error: Option<String>,
    pub request: Option<RequestView>,
}

/// The `webhook-id` of a preview that names no delivery.
const PREVIEW_MSG_ID: &str = "msg_preview";

/// The default grace period of a rotated-out secret.
const DEFAULT_GRACE_MS: i64 = 24 * 3600 * 1000;

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no webhook {id:?}"))
}

fn view(relay: &Relay, catalog: &Catalog, w: &StoredWebhook, disabled: Option<String>) -> WebhookView {
    let now = now_ms();
    WebhookView {
        spec: w.spec.clone(),
        origin: w.origin,
        edited: w.edited,
        disabled: disabled.or_else(|| relay.dispatcher.is_disabled(&w.spec.id).then(|| "disabled".to_string())),
        secrets: w
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| SecretHint { hint: catalog::hint(&s.secret), expires_at: s.expires_at })
            .collect(),
        created_at: w.created_at,
        updated_at: w.updated_at,
        problems: catalog.broken.get(&w.spec.id).cloned().unwrap_or_default(),
    }
}

fn new_secret() -> String {
    Secret::generate_text(rand::random())
}

/// A definition with the rules of `check-config`, as field errors.
fn checked(relay: &Relay, spec: &WebhookSpec) -> Result<()> {
    catalog::validate(spec, &relay.config.egress, relay.config.limits.lease).map(|_| ()).map_err(Error::Invalid)
}

/// List every webhook, newest definitions included.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 401, body = ErrorResponse)))]
pub async fn list(State(relay): State<Arc<Relay>>) -> Result<Json<WebhookList>> {
    let catalog = relay.registry.current();
    let disabled: std::collections::HashMap<String, String> =
        relay.storage.disabled_webhooks().await?.into_iter().collect();
    let items =
        catalog.stored_webhooks.iter().map(|w| view(&relay, &catalog, w, disabled.get(&w.spec.id).cloned())).collect();
    Ok(Json(WebhookList { items }))
}

/// Create a webhook; its secret is generated unless given, and shown this once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = Created), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
pub async fn create(State(relay): State<Arc<Relay>>, body: Bytes) -> Result<impl IntoResponse> {
    let mut object = parse_body::<serde_json::Map<String, Value>>(&body)?;
    let secret = match object.remove("secret") {
        None | Some(Value::Null) => new_secret(),
        Some(Value::String(s)) => {
            Secret::parse(&s).map_err(|m| Error::Invalid(vec![FieldError::new("secret", m)]))?;
            s
        }
        Some(_) => return Err(Error::Invalid(vec![FieldError::new("secret", "must be a string \"whsec_…\"")])),
    };
    let spec: WebhookSpec = parse_body(&serde_json::to_vec(&object).expect("a map serialises"))?;
    checked(&relay, &spec)?;
    let now = now_ms();
    let stored = StoredWebhook {
        spec,
        secrets: vec![StoredSecret { secret: secret.clone(), expires_at: None }],
        origin: Origin::Api,
        edited: false,
        created_at: now,
        updated_at: now,
    };
    let id = stored.spec.id.clone();
    if !relay.registry.change(Change::CreateWebhook(stored)).await? {
        return Err(Error::Conflict(format!("webhook {id:?} exists already")));
    }
    relay.dispatcher.catalog_changed();
    tracing::info!(webhook = %id, "webhook created through the admin API");
    let catalog = relay.registry.current();
    let w = catalog.stored_webhook(&id).ok_or_else(|| not_found(&id))?;
    Ok((StatusCode::CREATED, Json(Created { webhook: view(&relay, &catalog, w, None), secret })))
}

/// One webhook.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorResponse)))]
pub async fn show(State(relay): State<Arc<Relay>>, Path(id): Path<String>) -> Result<Json<WebhookView>> {
    let catalog = relay.registry.current();
    let w = catalog.stored_webhook(&id).ok_or_else(|| not_found(&id))?;
    let disabled: std::collections::HashMap<String, String> =
        relay.storage.disabled_webhooks().await?.into_iter().collect();
    Ok(Json(view(&relay, &catalog, w, disabled.get(&id).cloned())))
}

/// Replace a webhook's definition (its secrets are kept: see rotate-secret).
#[utoipa::path(put, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = WebhookSpec,
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn update(State(relay): State<Arc<Relay>>, Path(id): Path<String>, body: Bytes) -> Result<Json<WebhookView>> {
    let mut object = parse_body::<serde_json::Map<String, Value>>(&body)?;
    if object.contains_key("secret") {
        return Err(Error::Invalid(vec![FieldError::new(
            "secret",
            "cannot be changed here; use POST /admin/v1/webhooks/{id}/rotate-secret",
        )]));
    }
    match object.get("id") {
        None => {
            object.insert("id".into(), Value::String(id.clone()));
        }
        Some(Value::String(given)) if *given == id => {}
        Some(_) => {
            return Err(Error::Invalid(vec![FieldError::new("id", format!("must be {id:?}, the id in the path"))]))
        }
    }
    let spec: WebhookSpec = parse_body(&serde_json::to_vec(&object).expect("a map serialises"))?;
    checked(&relay, &spec)?;
    let current = relay.registry.current();
    let old = current.stored_webhook(&id).ok_or_else(|| not_found(&id))?;
    let stored = StoredWebhook {
        spec,
        secrets: old.secrets.clone(),
        origin: old.origin,
        edited: old.origin == Origin::Config,
        created_at: old.created_at,
        updated_at: now_ms(),
    };
    if !relay.registry.change(Change::UpdateWebhook(stored)).await? {
        return Err(not_found(&id));
    }
    relay.dispatcher.catalog_changed();
    tracing::info!(webhook = %id, "webhook changed through the admin API");
    show(State(relay), Path(id)).await
}

/// Delete a webhook; its pending deliveries become dead letters.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)))]
pub async fn delete(State(relay): State<Arc<Relay>>, Path(id): Path<String>) -> Result<StatusCode> {
    if !relay.registry.change(Change::DeleteWebhook(id.clone())).await? {
        return Err(not_found(&id));
    }
    relay.dispatcher.catalog_changed();
    relay.dispatcher.set_disabled(&id, false);
    tracing::info!(webhook = %id, "webhook deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

/// Disable a webhook: its pending and new deliveries become dead letters until it is enabled.
#[utoipa::path(post, path = "/webhooks/{id}/disable", tag = "webhooks", params(("id" = String, Path)), request_body = DisableBody,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorResponse)))]
pub async fn disable(
    State(relay): State<Arc<Relay>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WebhookView>> {
    let body: DisableBody = parse_optional_body(&body)?;
    relay.registry.current().stored_webhook(&id).ok_or_else(|| not_found(&id))?;
    let reason =
        body.reason.filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "disabled through the admin API".into());
    relay.storage.disable_webhook(id.clone(), reason).await?;
    relay.dispatcher.set_disabled(&id, true);
    show(State(relay), Path(id)).await
}

/// Enable a disabled webhook (dead letters stay dead: replay them).
#[utoipa::path(post, path = "/webhooks/{id}/enable", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorResponse)))]
pub async fn enable(State(relay): State<Arc<Relay>>, Path(id): Path<String>) -> Result<Json<WebhookView>> {
    relay.registry.current().stored_webhook(&id).ok_or_else(|| not_found(&id))?;
    relay.storage.enable_webhook(id.clone()).await?;
    relay.dispatcher.set_disabled(&id, false);
    show(State(relay), Path(id)).await
}

/// Start signing with a new secret; the old one keeps signing alongside for the grace period.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)), request_body = RotateBody,
    responses((status = 200, body = Rotated), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn rotate(State(relay): State<Arc<Relay>>, Path(id): Path<String>, body: Bytes) -> Result<Json<Rotated>> {
    let body: RotateBody = parse_optional_body(&body)?;
    let grace = match &body.grace {
        None => DEFAULT_GRACE_MS,
        Some(g) => humantime::parse_duration(g).map(|d| d.as_millis() as i64).map_err(|e| {
            Error::Invalid(vec![FieldError::new("grace", format!("{g:?} is not a duration like \"24h\": {e}"))])
        })?,
    };
    let current = relay.registry.current();
    let old = current.stored_webhook(&id).ok_or_else(|| not_found(&id))?;
    let now = now_ms();
    let until = now + grace;
    let secret = new_secret();
    let mut secrets = vec![StoredSecret { secret: secret.clone(), expires_at: None }];
    // Secrets still signing keep signing until the grace ends (or sooner, if they were ending anyway).
    secrets.extend(old.secrets.iter().filter(|s| s.expires_at.is_none_or(|at| at > now)).map(|s| StoredSecret {
        secret: s.secret.clone(),
        expires_at: Some(s.expires_at.map_or(until, |at| at.min(until))),
    }));
    let previous_expires_at = secrets.get(1).and_then(|s| s.expires_at);
    let stored = StoredWebhook { secrets, edited: old.origin == Origin::Config, updated_at: now, ..old.clone() };
    if !relay.registry.change(Change::UpdateWebhook(stored)).await? {
        return Err(not_found(&id));
    }
    tracing::info!(webhook = %id, grace_ms = grace, "webhook secret rotated through the admin API");
    Ok(Json(Rotated { secret, previous_expires_at }))
}

/// The event a preview or test uses: given, stored, or a sample that suits the webhook.
async fn choose_event(relay: &Relay, catalog: &Catalog, hook: usize, choice: EventChoice) -> Result<Value> {
    match (choice.event, choice.event_id) {
        (Some(_), Some(_)) => {
            Err(Error::Invalid(vec![FieldError::new("event_id", "give either event or event_id, not both")]))
        }
        (Some(event), None) => {
            if !event.get("event").is_some_and(Value::is_string) {
                return Err(Error::Invalid(vec![FieldError::new(
                    "event",
                    "must be an event object with at least a string \"event\" (its name)",
                )]));
            }
            Ok(event)
        }
        (None, Some(id)) => {
            let body =
                relay.storage.event_json(id.clone()).await?.ok_or_else(|| {
                    Error::Invalid(vec![FieldError::new("event_id", format!("no stored event {id:?}"))])
                })?;
            serde_json::from_str(&body).map_err(|e| Error::Storage(format!("stored event {id} is not JSON: {e}")))
        }
        (None, None) => Ok(crate::samples::for_webhook(catalog, hook)),
    }
}

fn request_view(req: &reqwest::Request) -> RequestView {
    RequestView {
        method: req.method().to_string(),
        url: req.url().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: req.body().and_then(|b| b.as_bytes()).map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

fn render(relay: &Relay, catalog: &Catalog, hook: usize, event: Value, msg_id: &str) -> Preview {
    let name = event.get("event").and_then(Value::as_str).unwrap_or_default().to_string();
    let verdict = catalog.rules.route(&name, &event).into_iter().find(|(h, _)| *h == hook).map(|(_, v)| v);
    let (matches, mut error) = match verdict {
        None => (false, None),
        Some(Ok(m)) => (m, None),
        Some(Err(e)) => (false, Some(e)),
    };
    let timestamp = now_ms() / 1000;
    let request = match relay.dispatcher.sender().build(catalog, hook, msg_id, &event, timestamp) {
        Ok(req) => Some(request_view(&req)),
        Err(e) => {
            error.get_or_insert(e);
            None
        }
    };
    Preview { matches, error, request, event }
}

/// Render a webhook's request for an event, without sending it.
#[utoipa::path(post, path = "/webhooks/{id}/preview", tag = "webhooks", params(("id" = String, Path)), request_body = EventChoice,
    responses((status = 200, body = Preview), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn preview(State(relay): State<Arc<Relay>>, Path(id): Path<String>, body: Bytes) -> Result<Json<Preview>> {
    let choice: EventChoice = parse_optional_body(&body)?;
    let catalog = relay.registry.current();
    let (hook, _) = catalog.webhook(&id).ok_or_else(|| not_found(&id))?;
    let msg_id = choice.msg_id.clone().unwrap_or_else(|| PREVIEW_MSG_ID.into());
    if axum::http::HeaderValue::from_str(&msg_id).is_err() {
        return Err(Error::Invalid(vec![FieldError::new("msg_id", "must be valid in an HTTP header")]));
    }
    let event = choose_event(&relay, &catalog, hook, choice).await?;
    Ok(Json(render(&relay, &catalog, hook, event, &msg_id)))
}

/// Render the request of a definition not saved yet (validated like a create).
#[utoipa::path(post, path = "/preview", tag = "webhooks", request_body = PreviewUnsaved,
    responses((status = 200, body = Preview), (status = 400, body = ErrorResponse)))]
pub async fn preview_unsaved(State(relay): State<Arc<Relay>>, body: Bytes) -> Result<Json<Preview>> {
    let body: PreviewUnsaved = parse_body(&body)?;
    let mut object = match body.webhook {
        Value::Object(o) => o,
        _ => return Err(Error::Invalid(vec![FieldError::new("webhook", "must be a webhook definition object")])),
    };
    object.remove("secret");
    let spec: WebhookSpec = parse_body(&serde_json::to_vec(&object).expect("a map serialises"))?;
    checked(&relay, &spec)?;
    let now = now_ms();
    let stored =
        StoredWebhook { spec, secrets: vec![], origin: Origin::Api, edited: false, created_at: now, updated_at: now };
    let catalog = Catalog::build(0, vec![stored], vec![], &relay.config.egress, now);
    let choice = EventChoice { event: body.event, event_id: body.event_id, msg_id: None };
    let event = choose_event(&relay, &catalog, 0, choice).await?;
    Ok(Json(render(&relay, &catalog, 0, event, PREVIEW_MSG_ID)))
}

/// Send one event to a webhook now (not stored, not retried) and answer what happened.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)), request_body = EventChoice,
    responses((status = 200, body = TestResult), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn test(State(relay): State<Arc<Relay>>, Path(id): Path<String>, body: Bytes) -> Result<Json<TestResult>> {
    let choice: EventChoice = parse_optional_body(&body)?;
    let catalog = relay.registry.current();
    let (hook, _) = catalog.webhook(&id).ok_or_else(|| not_found(&id))?;
    let mut event = choose_event(&relay, &catalog, hook, choice).await?;
    if event.get("id").is_none() {
        event["id"] = Value::String(uuid::Uuid::new_v4().to_string());
    }
    let msg_id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
    let request = render(&relay, &catalog, hook, event.clone(), &msg_id).request;
    let result = relay.dispatcher.sender().send(&catalog, hook, &msg_id, &event).await;
    Ok(Json(TestResult {
        status: result.http_status,
        duration_ms: result.duration.as_millis() as u64,
        response: result.response,
        error: result.error,
        request,
    }))
}
