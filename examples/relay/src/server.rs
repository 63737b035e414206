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
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::error::Result;
use crate::ingest::{self, Limiter};
use crate::storage::{self, now_ms, Storage, PRUNE_BATCH};

/// The running relay's shared state.
pub struct Relay {
    pub config: Arc<Config>,
    pub storage: Storage,
    pub dispatcher: Dispatcher,
    pub limiter: Limiter,
}

impl Relay {
    /// Opens storage and starts delivery (no HTTP server).
    pub async fn start(config: Config) -> Result<Arc<Relay>> {
        let config = Arc::new(config);
        let limits = &config.limits;
        let options =
            storage::Options { migrate: config.migrate_on_start, lease: limits.lease, wait: limits.storage_wait };
        let storage = Storage::open(&config.storage, options).await?;
        let dispatcher = Dispatcher::start(config.clone(), storage.clone()).await?;
        Ok(Arc::new(Relay { config, storage, dispatcher, limiter: Limiter::default() }))
    }
}

/// The HTTP routes, and the OpenAPI document that describes them.
pub fn app(relay: Arc<Relay>) -> Router {
    let (admin, api) = OpenApiRouter::new().nest("/admin/v1", crate::admin::router(relay.clone())).split_for_parts();
    // Rendered once: the routes do not change while the relay runs.
    let api: Arc<str> = api.to_pretty_json().expect("the OpenAPI document serialises").into();
    Router::new()
        .merge(admin)
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
        .route("/admin/webhooks", get(ingest::admin_webhooks))
        .route("/admin/deliveries", get(ingest::admin_deliveries))
        .route("/admin/deliveries/{id}/attempts", get(ingest::admin_attempts))
        .with_state(relay)
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
    tracing::info!(addr = %listener.local_addr()?, webhooks = relay.config.webhooks.len(), "cuecast-relay listening");
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
