//! Delivery: per-webhook queues and workers.
//!
//! Each webhook has its own queue, worker, concurrency limit and rate limit,
//! so a slow, hanging or failing receiver only ever holds up its own queue.
//! New deliveries arrive straight from ingest (after their commit), and from
//! a sweep that claims stored work nobody holds: at start-up, after a
//! `replay` or `enable` by another process, or left by another relay whose
//! lease ran out. Retries wait in memory until due; their due time is stored
//! too, so a restart (or another relay) resumes them.
//!
//! Leases: this relay renews its hold on every delivery it owns each quarter
//! lease, and starts an attempt only while its last successful renewal
//! leaves at least the webhook's timeout (plus a tenth of the lease) to run,
//! the last renewal did not fail and results are being stored. So an attempt always ends before
//! another relay could take the delivery over, and when the database is
//! away, attempts pause by themselves.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::header::{CONTENT_TYPE, USER_AGENT as USER_AGENT_HEADER};
use axum::http::{HeaderName, HeaderValue};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, Registry};
use crate::config::{Config, Method, DEFAULT_CONCURRENCY};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::policy::{classify, next_delay, parse_retry_after, Outcome};
use crate::signing::sign;
use crate::ssrf::{check_url, GuardedResolver};
use crate::storage::{now_ms, AttemptRecord, PendingDelivery, Status, Storage};

/// Most deliveries one sweep takes on.
const CLAIM_BATCH: usize = 10_000;

/// The relay's user agent.
pub const USER_AGENT: &str = concat!("cuecast-relay/", env!("CARGO_PKG_VERSION"));
/// How much of a response body is kept in the attempt log.
pub const RESPONSE_KEEP_BYTES: usize = 4096;

/// What one attempt did, before classification.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub http_status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// The first 4 KB of the response body (lossy UTF-8).
    pub response: Option<String>,
    pub error: Option<String>,
    /// The request could never succeed as configured (render error, refused
    /// address): fail at once instead of retrying.
    pub permanent: bool,
    pub duration: Duration,
}

/// Renders, signs and sends requests for the configured webhooks.
#[derive(Clone)]
pub struct Sender {
    config: Arc<Config>,
    client: reqwest::Client,
}

/// Why a request could not be built (render error, refused address):
/// permanent, the attempt fails without retries.
pub type BuildError = String;

impl Sender {
    pub fn new(config: Arc<Config>) -> Result<Sender> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would dial for us and bypass the SSRF guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow: Arc::new(config.egress.allow_cidrs.clone()) }))
            .user_agent(USER_AGENT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| crate::Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Sender { config, client })
    }

    /// The request one attempt of webhook `hook` sends for `event`: rendered,
    /// checked against the SSRF guard and signed. Previews show exactly this.
    pub fn build(
        &self,
        catalog: &Catalog,
        hook: usize,
        msg_id: &str,
        event: &serde_json::Value,
        timestamp: i64,
    ) -> Result<reqwest::Request, BuildError> {
        let w = &catalog.webhooks[hook];
        let req = catalog.rules.render(hook, event)?;
        if let Err(e) = check_url(&req.url, &self.config.egress.allow_cidrs, self.config.egress.https_only) {
            return Err(format!("SSRF guard refused {}: {e}", req.url));
        }
        let builder = match req.method {
            Method::Post => self.client.post(req.url.clone()),
            Method::Get => self.client.get(req.url.clone()),
        };
        let mut built =
            builder.timeout(w.timeout).build().map_err(|e| format!("cannot build the request: {}", chain(&e)))?;
        let headers = built.headers_mut();
        headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
        if req.method == Method::Post {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // Configured headers replace the relay's defaults (content-type, user-agent);
        // names and values were checked when the webhook was defined.
        for (name, value) in &w.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.insert(name, value);
            }
        }
        let mut signature_headers =
            vec![("webhook-id", msg_id.to_string()), ("webhook-timestamp", timestamp.to_string())];
        if !w.secrets.is_empty() {
            let signed: &[u8] = match &req.body {
                Some(body) => body,
                // GET: the request target stands in for the body.
                None => req.url[url::Position::BeforePath..url::Position::AfterQuery].as_bytes(),
            };
            signature_headers.push(("webhook-signature", sign(&w.secrets, msg_id, timestamp, signed)));
        }
        for (name, value) in signature_headers {
            // Last, and insert rather than append: nothing configured can replace them.
            headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).expect("ASCII"));
        }
        if let Some(body) = req.body {
            *built.body_mut() = Some(body.into());
        }
        Ok(built)
    }

    /// One attempt of webhook `hook` for `event` with message id `msg_id`.
    pub async fn send(&self, catalog: &Catalog, hook: usize, msg_id: &str, event: &serde_json::Value) -> AttemptResult {
        let started = Instant::now();
        let w = &catalog.webhooks[hook];
        let timestamp =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let built = match self.build(catalog, hook, msg_id, event, timestamp) {
            Ok(b) => b,
            Err(error) => {
                return AttemptResult {
                    http_status: None,
                    retry_after: None,
                    response: None,
                    error: Some(error),
                    permanent: true,
                    duration: started.elapsed(),
                }
            }
        };
        match self.client.execute(built).await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let mut kept = Vec::new();
                let mut error = None;
                loop {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => {
                            let room = RESPONSE_KEEP_BYTES - kept.len();
                            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            if kept.len() >= RESPONSE_KEEP_BYTES {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("reading the response: {}", chain(&e)));
                            break;
                        }
                    }
                }
                AttemptResult {
                    http_status: Some(status),
                    retry_after,
                    response: Some(String::from_utf8_lossy(&kept).into_owned()),
                    error,
                    permanent: false,
                    duration: started.elapsed(),
                }
            }
            Err(e) => {
                let message = chain(&e);
                let refused = message.contains("SSRF guard refused");
                let error =
                    if e.is_timeout() { format!("timed out after {:?}: {message}", w.timeout) } else { message };
                AttemptResult {
                    http_status: None,
                    retry_after: None,
                    response: None,
                    error: Some(error),
                    permanent: refused,
                    duration: started.elapsed(),
                }
            }
        }
    }
}

/// An error and its sources on one line (reqwest hides the useful part in the chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Owns the queues and workers of every webhook.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    storage: Storage,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    sender: Sender,
    /// One queue and worker per webhook in force, by id; kept in line with
    /// the catalog by [`Dispatcher::catalog_changed`].
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<PendingDelivery>>>,
    disabled: Mutex<HashSet<String>>,
    /// Deliveries this process has in a queue, in flight or waiting for a
    /// retry; its size is the backlog that ingest compares with the high-water mark.
    owned: Mutex<HashSet<i64>>,
    /// Of those, how many wait for a retry time: not work to do now, so not
    /// backlog (a webhook failing for hours must not make ingest refuse events
    /// for every other webhook).
    parked: AtomicUsize,
    /// Until when every delivery in `owned` is surely still leased to this relay.
    lease_ok_until: Mutex<tokio::time::Instant>,
    cancel: CancellationToken,
    in_flight: TaskTracker,
}

impl Inner {
    /// Whether an attempt with `timeout` may start now: it must end well
    /// before the lease could run out.
    fn lease_covers(&self, timeout: Duration) -> bool {
        let margin = self.config.limits.lease / 10;
        *self.lease_ok_until.lock().unwrap() > tokio::time::Instant::now() + timeout + margin
    }

    /// Room for more work below the high-water mark.
    fn claim_room(&self) -> usize {
        let owned = self.owned.lock().unwrap().len();
        self.config.limits.backlog_high_water.saturating_sub(owned).min(CLAIM_BATCH)
    }
}

impl Dispatcher {
    /// Starts one worker per webhook, loads the stored backlog and starts the sweep.
    pub async fn start(
        config: Arc<Config>,
        storage: Storage,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher> {
        let sender = Sender::new(config.clone())?;
        let lease = config.limits.lease;
        let inner = Arc::new(Inner {
            config,
            storage,
            registry,
            metrics,
            sender,
            queues: Mutex::new(HashMap::new()),
            disabled: Mutex::new(HashSet::new()),
            owned: Mutex::new(HashSet::new()),
            parked: AtomicUsize::new(0),
            lease_ok_until: Mutex::new(tokio::time::Instant::now() + lease),
            cancel: CancellationToken::new(),
            in_flight: TaskTracker::new(),
        });
        let d = Dispatcher { inner };
        d.catalog_changed();
        let work = d.inner.storage.claim(&d.hook_ids(), d.inner.claim_room()).await?;
        if !work.pending.is_empty() {
            tracing::info!(count = work.pending.len(), "resuming stored deliveries");
        }
        *d.inner.disabled.lock().unwrap() = work.disabled.into_iter().collect();
        d.enqueue(work.pending);
        tokio::spawn(d.clone().sweep());
        tokio::spawn(d.clone().heartbeat());
        Ok(d)
    }

    /// The webhooks in force.
    fn hook_ids(&self) -> Vec<String> {
        self.inner.registry.current().webhooks.iter().map(|w| w.id.clone()).collect()
    }

    /// Starts a worker for each webhook that has none, and closes the queues
    /// of webhooks no longer in force (their workers end once the queue is
    /// drained; what was queued stays stored). Call after the catalog changed.
    pub fn catalog_changed(&self) {
        let catalog = self.inner.registry.current();
        let mut queues = self.inner.queues.lock().unwrap();
        queues.retain(|id, _| catalog.webhook(id).is_some());
        for w in &catalog.webhooks {
            if !queues.contains_key(&w.id) {
                let (tx, rx) = mpsc::unbounded_channel();
                queues.insert(w.id.clone(), tx);
                tokio::spawn(worker(self.inner.clone(), w.id.clone(), rx));
            }
        }
    }

    /// Every `sweep_interval`: picks up catalog changes (from the admin API
    /// of any relay), re-reads the disabled webhooks and takes on stored
    /// work that nobody holds.
    async fn sweep(self) {
        let inner = &self.inner;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = tokio::time::sleep(inner.config.limits.sweep_interval) => {}
            }
            match inner.registry.refresh().await {
                Ok(true) => self.catalog_changed(),
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "sweep: cannot read the catalog version"),
            }
            match inner.storage.claim(&self.hook_ids(), inner.claim_room()).await {
                Ok(work) => {
                    if failing {
                        tracing::info!("sweep: storage reachable again");
                        failing = false;
                    }
                    if !work.pending.is_empty() {
                        tracing::debug!(count = work.pending.len(), "took on stored deliveries");
                    }
                    *inner.disabled.lock().unwrap() = work.disabled.into_iter().collect();
                    self.enqueue(work.pending);
                }
                Err(e) if !failing => {
                    tracing::error!(error = %e, "sweep failed");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Every quarter lease: renews the leases of everything this relay holds
    /// and forgets what another relay has taken over meanwhile.
    async fn heartbeat(self) {
        let inner = &self.inner;
        let lease = inner.config.limits.lease;
        let mut failing = false;
        loop {
            // After a failure, try again soon: attempts are paused meanwhile.
            let pause = if failing { (lease / 4).min(Duration::from_millis(250)) } else { lease / 4 };
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let sent = tokio::time::Instant::now();
            let held: Vec<i64> = inner.owned.lock().unwrap().iter().copied().collect();
            match inner.storage.renew(held.clone()).await {
                Ok(kept) => {
                    let kept: HashSet<i64> = kept.into_iter().collect();
                    let lost: HashSet<i64> = held.into_iter().filter(|id| !kept.contains(id)).collect();
                    if !lost.is_empty() {
                        tracing::debug!(
                            count = lost.len(),
                            "leases lost to another relay (or finished meanwhile); dropping them"
                        );
                        inner.owned.lock().unwrap().retain(|id| !lost.contains(id));
                    }
                    // After the clean-up: whatever `owned` holds now is leased until at least this.
                    let mut until = inner.lease_ok_until.lock().unwrap();
                    *until = (*until).max(sent + lease);
                    if failing {
                        tracing::info!("leases renewed: storage reachable again");
                        failing = false;
                    }
                }
                Err(e) => {
                    // Stop starting attempts now rather than when the lease
                    // runs out: their results could not be stored, and another
                    // relay would send them again after taking over.
                    *inner.lease_ok_until.lock().unwrap() = sent;
                    if !failing {
                        tracing::error!(error = %e, "cannot renew leases; deliveries pause until storage is back");
                        failing = true;
                    }
                }
            }
        }
    }

    /// Deliveries this process holds that are due: queued or in flight,
    /// not those parked until a retry time.
    pub fn backlog(&self) -> usize {
        let owned = self.inner.owned.lock().unwrap().len();
        owned.saturating_sub(self.inner.parked.load(Ordering::Relaxed))
    }

    /// Records at once what the admin API changed (the sweep would see it
    /// within `sweep_interval` anyway, from storage).
    pub fn set_disabled(&self, webhook_id: &str, disabled: bool) {
        let mut set = self.inner.disabled.lock().unwrap();
        if disabled {
            set.insert(webhook_id.to_string());
        } else {
            set.remove(webhook_id);
        }
    }

    /// The sender attempts go through (the admin API's test sends use it too).
    pub fn sender(&self) -> &Sender {
        &self.inner.sender
    }

    pub fn is_disabled(&self, webhook_id: &str) -> bool {
        self.inner.disabled.lock().unwrap().contains(webhook_id)
    }

    /// Hands stored pending deliveries to their webhooks' queues (each at most once).
    pub fn enqueue(&self, deliveries: Vec<PendingDelivery>) {
        let now = now_ms();
        let queues = self.inner.queues.lock().unwrap();
        let mut owned = self.inner.owned.lock().unwrap();
        for d in deliveries {
            let Some(tx) = queues.get(&d.webhook_id) else {
                tracing::warn!(webhook = %d.webhook_id, delivery = d.id, "pending delivery for a webhook that is no longer configured; left stored");
                continue;
            };
            if !owned.insert(d.id) {
                continue;
            }
            let wait = d.next_attempt_at - now;
            if wait > 0 {
                self.later(Duration::from_millis(wait as u64), d);
            } else {
                let _ = tx.send(d);
            }
        }
    }

    /// Re-queues `d` after `wait`, unless shutting down (it stays stored).
    fn later(&self, wait: Duration, d: PendingDelivery) {
        let inner = self.inner.clone();
        inner.parked.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _unpark = Unpark(&inner.parked);
            tokio::select! {
                _ = inner.cancel.cancelled() => {}
                _ = tokio::time::sleep(wait) => {
                    let queue = inner.queues.lock().unwrap().get(&d.webhook_id).cloned();
                    match queue {
                        Some(tx) => { let _ = tx.send(d); }
                        // Deleted meanwhile: it stays stored.
                        None => { inner.owned.lock().unwrap().remove(&d.id); }
                    }
                }
            }
        });
    }

    /// Stops taking work, waits up to `grace` for attempts in flight, and
    /// flushes their results. Whatever is left stays stored as pending.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        self.inner.in_flight.close();
        if tokio::time::timeout(grace, self.inner.in_flight.wait()).await.is_err() {
            tracing::warn!(?grace, "shutdown: attempts still in flight were abandoned; they stay pending");
        }
        let _ = self.inner.storage.flush().await;
        // Hand what is left to the other relays at once rather than after the lease.
        let held: Vec<i64> = self.inner.owned.lock().unwrap().drain().collect();
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), self.inner.storage.release(held)).await {
            tracing::warn!(error = %e, "shutdown: could not release leases; they run out by themselves");
        }
    }
}

/// Decrements the parked count when a retry timer ends, however it ends.
struct Unpark<'a>(&'a AtomicUsize);

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a webhook's deliveries one by one, within its rate limit and
/// concurrency, and starts an attempt for each. Limits follow the webhook's
/// current definition.
async fn worker(inner: Arc<Inner>, id: String, mut rx: mpsc::UnboundedReceiver<PendingDelivery>) {
    let mut limit = Arc::new(Semaphore::new(DEFAULT_CONCURRENCY));
    let mut limiter = None;
    let mut shape = None;
    loop {
        let d = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        let catalog = inner.registry.current();
        let Some((_, w)) = catalog.webhook(&id) else {
            // Deleted: leave the delivery as stored.
            inner.owned.lock().unwrap().remove(&d.id);
            continue;
        };
        // Rebuilt only when an edit changed them (in-flight permits stay with the old semaphore).
        if shape != Some((w.concurrency, w.rate_limit)) {
            shape = Some((w.concurrency, w.rate_limit));
            limit = Arc::new(Semaphore::new(w.concurrency));
            limiter = w.rate_limit.map(|r| inner.storage.rate_limiter(&w.id, r));
        }
        if let Some(limiter) = limiter.as_mut() {
            while let Err(wait) = limiter.take().await {
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        let permit = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => p.expect("never closed"),
        };
        let inner2 = inner.clone();
        inner.in_flight.spawn(async move {
            attempt(&inner2, d).await;
            drop(permit);
        });
    }
}

async fn attempt(inner: &Arc<Inner>, mut d: PendingDelivery) {
    let catalog = inner.registry.current();
    let Some((hook, w)) = catalog.webhook(&d.webhook_id) else {
        inner.owned.lock().unwrap().remove(&d.id);
        return;
    };
    // Wait while the lease cannot be vouched for (the database is away); give
    // up if another relay has taken the delivery over meanwhile.
    loop {
        if !inner.owned.lock().unwrap().contains(&d.id) {
            return;
        }
        if inner.lease_covers(w.timeout) && inner.storage.storing() {
            break;
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    if inner.disabled.lock().unwrap().contains(&w.id) {
        // Deliveries already queued when it was disabled (or replayed since).
        let owner = inner.clone();
        inner.storage.dead_letter(d.id, "webhook disabled".into(), move || {
            owner.owned.lock().unwrap().remove(&d.id);
        });
        return;
    }
    let at = now_ms();
    let result = match serde_json::from_str::<serde_json::Value>(&d.event_body) {
        Ok(event) => inner.sender.send(&catalog, hook, &d.msg_id, &event).await,
        Err(e) => AttemptResult {
            http_status: None,
            retry_after: None,
            response: None,
            error: Some(format!("stored event is not JSON: {e}")),
            permanent: true,
            duration: Duration::ZERO,
        },
    };
    d.attempts += 1;
    let outcome = if result.permanent { Outcome::Failed } else { classify(result.http_status, result.retry_after) };
    let mut error = result.error.clone();
    let (status, next) = match outcome {
        Outcome::Delivered => (Status::Delivered, None),
        Outcome::Failed => {
            if error.is_none() {
                error = result.http_status.map(|s| format!("HTTP {s}: not retried"));
            }
            (Status::Failed, None)
        }
        Outcome::Gone => {
            error = Some("HTTP 410 Gone: the webhook is disabled".into());
            (Status::Failed, None)
        }
        Outcome::Retry { retry_after } => {
            if error.is_none() {
                error = result.http_status.map(|s| format!("HTTP {s}: will retry"));
            }
            match next_delay(&w.retry, d.attempts, retry_after, rand::random::<f64>()) {
                Some(wait) => (Status::Pending, Some(wait)),
                None => {
                    let why = error.take().unwrap_or_default().replace(": will retry", "");
                    error = Some(format!("{why}; dead-lettered after {} attempts", d.attempts));
                    (Status::Dead, None)
                }
            }
        }
    };
    let next_at = next.map(|wait| at + result.duration.as_millis() as i64 + wait.as_millis() as i64);
    tracing::debug!(webhook = %w.id, delivery = d.id, attempt = d.attempts, status = ?result.http_status, outcome = ?status, "attempt");
    let finished = status != Status::Pending;
    let outcome_label = match status {
        Status::Delivered => "delivered",
        Status::Pending => "retry",
        Status::Failed => "failed",
        Status::Dead => "dead",
    };
    inner.metrics.attempt(&w.id, outcome_label, result.duration.as_secs_f64());
    if status == Status::Delivered {
        let waited = (now_ms() - d.created_at).max(0) as f64 / 1000.0;
        inner
            .metrics
            .event_to_webhook_seconds
            .get_or_create(&crate::metrics::Hook { webhook: w.id.clone() })
            .observe(waited);
    }
    let owner = inner.clone();
    let id = d.id;
    inner.storage.record(
        AttemptRecord {
            delivery_id: d.id,
            at,
            http_status: result.http_status,
            duration_ms: result.duration.as_millis() as i64,
            response: result.response,
            error,
            new_status: status,
            attempts: d.attempts,
            next_attempt_at: next_at,
        },
        // Released only once the final state is committed, so a sweep that
        // reads the table meanwhile cannot pick the delivery up again.
        move || {
            if finished {
                owner.owned.lock().unwrap().remove(&id);
            }
        },
    );
    if outcome == Outcome::Gone {
        tracing::warn!(webhook = %w.id, "receiver answered 410 Gone: webhook disabled; its pending deliveries are dead-lettered");
        inner.disabled.lock().unwrap().insert(w.id.clone());
        if let Err(e) = inner.storage.disable_webhook(w.id.clone(), "the receiver answered 410 Gone".into()).await {
            tracing::error!(error = %e, "cannot store that the webhook is disabled");
        }
    }
    if let (Status::Pending, Some(wait)) = (status, next) {
        d.next_attempt_at = next_at.unwrap_or(at);
        Dispatcher { inner: inner.clone() }.later(wait, d);
    }
}
