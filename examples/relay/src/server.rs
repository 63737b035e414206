//! Wiring: [`run`] starts storage, delivery and the HTTP server and stops
//! them in order; `main.rs` and the tests call it alike.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::catalog::Registry;
use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::error::Result;
use crate::ingest::{self, Limiter};
use crate::metrics::Metrics;
use crate::storage::{self, now_ms, Storage, PRUNE_BATCH};

/// The running relay's shared state.
pub struct Relay {
    pub config: Arc<Config>,
    pub storage: Storage,
    /// The webhooks and sources in force (the file's and the admin API's).
    pub registry: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub limiter: Limiter,
    pub metrics: Arc<Metrics>,
}

impl Relay {
    /// Opens storage and starts delivery (no HTTP server).
    pub async fn start(config: Config) -> Result<Arc<Relay>> {
        let config = Arc::new(config);
        let limits = &config.limits;
        let options =
            storage::Options { migrate: config.migrate_on_start, lease: limits.lease, wait: limits.storage_wait };
        let storage = Storage::open(&config.storage, options).await?;
        let registry = Arc::new(Registry::open(storage.clone(), &config).await?);
        let metrics = Arc::new(Metrics::default());
        let dispatcher = Dispatcher::start(config.clone(), storage.clone(), registry.clone(), metrics.clone()).await?;
        Ok(Arc::new(Relay { config, storage, registry, dispatcher, limiter: Limiter::default(), metrics }))
    }
}

/// The HTTP routes, and the OpenAPI document that describes them.
pub fn app(relay: Arc<Relay>) -> Router {
    let (admin, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/admin/v1", crate::admin::router(relay.clone()))
        .split_for_parts();
    // Rendered once: the routes do not change while the relay runs.
    let api: Arc<str> = api.to_pretty_json().expect("the OpenAPI document serialises").into();
    Router::new()
        .merge(admin)
        .merge(crate::console::router())
        .route(
            "/openapi.json",
            get(move || {
                let api = api.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], api.to_string()) }
            }),
        )
        .route("/v1/batch", post(ingest::batch).options(ingest::preflight).layer(decompression()))
        .route("/healthz", get(ingest::healthz))
        .route("/readyz", get(ingest::readyz))
        .route("/metrics", get(metrics))
        .with_state(relay)
        // Every request gets an id (or keeps the caller's `x-request-id`),
        // returned in the answer and carried by every log line it causes.
        // Only method and path are logged: never headers (tokens) or query strings.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<axum::body::Body>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The OpenAPI document's frame: the ingest and health routes (routed by
/// hand below, for their layers) and the admin API's bearer scheme; the
/// admin paths are added by `OpenApiRouter` from the same macros that route them.
#[derive(OpenApi)]
#[openapi(
    info(title = "cuecast relay", description = "Ingest of SDK batches, and the admin API (see docs/ADMIN_API.md)."),
    paths(ingest::batch, ingest::healthz, ingest::readyz),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
)]
struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("the [admin] token")).build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// `GET /metrics`: Prometheus text; stored-state gauges are read now.
async fn metrics(axum::extract::State(relay): axum::extract::State<Arc<Relay>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let m = &relay.metrics;
    m.backlog.set(relay.dispatcher.backlog() as i64);
    // Stored figures are best effort: without storage the counters still answer.
    if let Ok(counts) = relay.storage.counts().await {
        for (status, n) in counts {
            m.deliveries.get_or_create(&crate::metrics::StatusLabel { status }).set(n);
        }
    }
    if let Ok(oldest) = relay.storage.oldest_pending().await {
        m.oldest_pending_seconds.set(oldest.map_or(0, |at| (now_ms() - at).max(0) / 1000));
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(axum::http::header::CONTENT_TYPE, content_type)], m.render()).into_response()
}

/// The gzip layer in front of `POST /v1/batch`: other encodings pass through
/// untouched and [`ingest`] refuses them with a JSON error; the body limit is
/// applied after it, by [`ingest::read_body`]. Public for the `gzip` fuzz target.
pub fn decompression() -> RequestDecompressionLayer {
    RequestDecompressionLayer::new().gzip(true).pass_through_unaccepted(true)
}

/// How often old, finished events are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes everything past the retention period, one small batch at a time
/// with a pause between, so ingest never waits behind a long delete.
async fn prune(relay: &Relay) {
    let before = now_ms() - relay.config.limits.retention.as_millis() as i64;
    let mut total = 0;
    loop {
        match relay.storage.prune(before, PRUNE_BATCH).await {
            Ok(n) => {
                total += n;
                if n < PRUNE_BATCH {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "prune failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(events = total, "pruned finished events past the retention period");
    }
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests and deliveries finish (up to
/// `limits.shutdown_grace`) and flushes storage.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let relay = Relay::start(config).await?;
    let webhooks = relay.registry.current().webhooks.len();
    tracing::info!(addr = %listener.local_addr()?, webhooks, "cuecast-relay listening");
    if relay.config.admin_token.is_none() {
        tracing::info!("the admin API and console are off: set [admin] token (or CUECAST_ADMIN_TOKEN) to turn them on");
    }
    let pruner = {
        let relay = relay.clone();
        tokio::spawn(async move {
            loop {
                prune(&relay).await;
                tokio::time::sleep(PRUNE_INTERVAL).await;
            }
        })
    };
    let service = app(relay.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // Graceful, but bounded: connections still open `shutdown_grace` after
    // the signal (a slow or stuck client) are dropped.
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled.send(());
    });
    let grace = relay.config.limits.shutdown_grace;
    tokio::select! {
        served = server.into_future() => served?,
        _ = async { if on_signal.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending().await } } => {
            tracing::warn!(?grace, "shutdown: closed connections still open after the grace period");
        }
    }
    pruner.abort();
    tracing::info!("stopped accepting; finishing deliveries in flight");
    relay.dispatcher.shutdown(relay.config.limits.shutdown_grace).await;
    relay.storage.flush().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
