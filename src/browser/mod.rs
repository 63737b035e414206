//! The browser layer: the wasm-bindgen exports around one pure [`Tracker`].
//!
//! Everything here is IO: reading options and arguments from JavaScript,
//! the page context, `localStorage`, storage writes, requests and timers.
//! The calls themselves are JavaScript in `host.js` (see `host.rs`), whose
//! driver sequences the IO that takes turns and reports each outcome to one
//! of the client's hooks (the `_`-named exports below): no Rust futures.
//! The decisions (validation, batching, retries, what to adopt) are the
//! pure modules'.

mod convert;
mod host;
mod page;
mod persist;

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;

use crate::config::Config;
use crate::error::Error;
use crate::events;
use crate::json::Json;
use crate::outbox::{storage_scope, Answer, Change, Outgoing, Push};
use crate::retry::parse_retry_after;
use crate::tracker::{Env, Identity, Tracked, Tracker};
use host::Driver;
use page::{log, BrowserEnv, StaticContext};

/// Where the identity (anonymous id, user, session, opt-out) is kept.
const IDENTITY_KEY: &str = "cuecast:v1:identity";
/// How long one request may take before it counts as a network error.
const REQUEST_TIMEOUT_MS: u32 = 10_000;
/// Why `_wake` is called (`host.js` passes the same numbers).
const WAKE_TIMER: u8 = 0;
const WAKE_ONLINE: u8 = 1;
const WAKE_HIDDEN: u8 = 2;
const WAKE_SAVE: u8 = 3;
/// Bytes of keepalive request bodies in flight at once: browsers allow 64 KB
/// per page in all, and a request over it fails at once.
const KEEPALIVE_BUDGET: usize = 60 * 1024;

/// A started SDK instance: what `await init({...})` resolves to.
#[wasm_bindgen]
pub struct Client {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    tracker: Tracker,
    env: BrowserEnv,
    context: StaticContext,
    /// The IO of this client (`host.js`).
    driver: Driver,
    /// When the pending wake-up fires.
    timer_at: Option<i64>,
    /// When each `flush()` still waiting was made (the driver holds their promises).
    flushes: Vec<i64>,
    /// Auto-capture is this client's (the first client that asked for it).
    capture: bool,
    /// Body bytes of keepalive requests in flight (see [`KEEPALIVE_BUDGET`]).
    keepalive_bytes: usize,
    /// `cuecast:v1:<scope>:`: where this client's records are stored.
    prefix: String,
    /// This page's id: the owner of the events it stores.
    page: String,
    /// Storage is open and events left by earlier pages are adopted: sending may start.
    ready: bool,
    /// Storage writes gathered during this JS task, written together in one
    /// transaction right after it ([`Inner::save`]).
    unsaved: Vec<Change>,
    save_queued: bool,
}

/// Talc instead of Rust's default dlmalloc: 2 KB gzip smaller here, and
/// faster (README, "Size"). The SDK is single-threaded (no atomics).
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

thread_local! {
    /// Every started client lives as long as the page: a page that calls
    /// `init()` without keeping the result still gets auto-capture and its
    /// queued events sent, whatever the garbage collector does with the
    /// JS handle.
    static CLIENTS: RefCell<Vec<Rc<RefCell<Inner>>>> = const { RefCell::new(Vec::new()) };
}

/// Starts the SDK with `options` (see `index.d.ts`). Throws a `CuecastError`
/// naming the field when an option is missing or wrong.
#[wasm_bindgen]
pub fn init(options: JsValue) -> Result<Client, JsValue> {
    let fail = |e: Error| js_error("init", &e);
    if !host::has_window() {
        return Err(fail(Error::invalid("", "needs a browser window")));
    }
    let mut options = convert::to_json(&options, "").map_err(fail)?;
    // A path ("/v1/batch", "./batch") means the page's own origin. Anything
    // else is validated as given, so "relay.example.com/v1" is an error, not
    // a path on this site.
    if let Some(endpoint) = options.get("endpoint").and_then(Json::as_str) {
        let relative = endpoint.starts_with('/') || endpoint.starts_with("./") || endpoint.starts_with("../");
        if relative && !endpoint.starts_with("//") {
            if let Some(url) = host::resolve_url(endpoint.trim()) {
                options.insert("endpoint", url.as_str().into());
            }
        }
    }
    let config = Config::from_options(&options).map_err(fail)?;
    // init() twice for the same relay and key (React StrictMode, hot reload)
    // returns the running client instead of capturing every click twice.
    let running = CLIENTS.with_borrow(|clients| {
        clients
            .iter()
            .find(|c| {
                c.borrow().tracker.config.endpoint == config.endpoint
                    && c.borrow().tracker.config.write_key == config.write_key
            })
            .cloned()
    });
    if let Some(inner) = running {
        log(config.debug, || {
            "init() called again for the same endpoint and write key: using the running client".into()
        });
        return Ok(Client { inner });
    }
    let mut env = BrowserEnv::default();
    let stored = page::load(IDENTITY_KEY).and_then(|v| Identity::from_json(&v));
    let prefix = format!("cuecast:v1:{}:", storage_scope(&config.write_key, &config.endpoint));
    let page = env.uuid_v7();
    let tracker = Tracker::new(config, stored, &mut env);
    let debug = tracker.config.debug;
    let capture = tracker.config.auto_capture && !CLIENTS.with_borrow(|c| c.iter().any(|c| c.borrow().capture));
    log(debug, || {
        format!("ready: sending to {} (auto-capture {})", tracker.config.endpoint, if capture { "on" } else { "off" })
    });
    let driver = host::driver(&prefix, &page, IDENTITY_KEY, capture, debug);
    let inner = Rc::new(RefCell::new(Inner {
        context: StaticContext::read(),
        tracker,
        env,
        driver,
        timer_at: None,
        flushes: Vec::new(),
        capture,
        keepalive_bytes: 0,
        prefix,
        page,
        ready: false,
        unsaved: Vec::new(),
        save_queued: false,
    }));
    inner.borrow_mut().persist_identity();
    CLIENTS.with_borrow_mut(|clients| clients.push(inner.clone()));
    inner.borrow().driver.start(Client { inner: inner.clone() });
    Ok(Client { inner })
}

#[wasm_bindgen]
impl Client {
    /// `track(name, properties?)`: returns the new event's id, or `undefined`
    /// when the user opted out.
    pub fn track(&self, name: JsValue, properties: JsValue) -> Result<Option<String>, JsValue> {
        let fail = |e: Error| js_error("track", &e);
        let name = match name.as_string() {
            Some(name) => name,
            None => return Err(fail(Error::invalid("event", "must be a non-empty string"))),
        };
        let properties = convert::to_json(&properties, "properties").map_err(fail)?;
        self.record("track", |t, ctx, env| t.track(&name, properties, ctx, env))
    }

    #[wasm_bindgen(js_name = shoutoutClicked)]
    pub fn shoutout_clicked(&self, input: JsValue) -> Result<Option<String>, JsValue> {
        self.built_in("shoutoutClicked", events::SHOUTOUT_CLICKED, input)
    }

    #[wasm_bindgen(js_name = surveySubmitted)]
    pub fn survey_submitted(&self, input: JsValue) -> Result<Option<String>, JsValue> {
        self.built_in("surveySubmitted", events::SURVEY_SUBMITTED, input)
    }

    #[wasm_bindgen(js_name = onboardingTaskCompleted)]
    pub fn onboarding_task_completed(&self, input: JsValue) -> Result<Option<String>, JsValue> {
        self.built_in("onboardingTaskCompleted", events::ONBOARDING_TASK_COMPLETED, input)
    }

    #[wasm_bindgen(js_name = walkthruGoalReached)]
    pub fn walkthru_goal_reached(&self, input: JsValue) -> Result<Option<String>, JsValue> {
        self.built_in("walkthruGoalReached", events::WALKTHRU_GOAL_REACHED, input)
    }

    /// `identify(userId, traits?)`: later events carry `userId`; sends `user.identified`.
    pub fn identify(&self, user_id: JsValue, traits: JsValue) -> Result<Option<String>, JsValue> {
        let fail = |e: Error| js_error("identify", &e);
        let user_id = convert::to_json(&user_id, "userId").map_err(fail)?;
        let traits = convert::to_json(&traits, "traits").map_err(fail)?;
        self.record("identify", |t, ctx, env| t.identify(user_id, traits, ctx, env))
    }

    /// Forgets the user (call on logout).
    pub fn reset(&self) {
        let mut inner = self.inner.borrow_mut();
        let Inner { tracker, env, .. } = &mut *inner;
        tracker.reset(env);
        inner.persist_identity();
        log(inner.tracker.config.debug, || "reset: new anonymous id, user forgotten".into());
    }

    /// Stops tracking and drops waiting events; remembered across page loads.
    #[wasm_bindgen(js_name = optOut)]
    pub fn opt_out(&self) {
        let mut inner = self.inner.borrow_mut();
        let now = inner.env.now_ms();
        let dropped = inner.tracker.opt_out(now);
        inner.persist_identity();
        inner.save();
        log(inner.tracker.config.debug, || format!("opted out: {dropped} waiting events dropped"));
    }

    #[wasm_bindgen(js_name = optIn)]
    pub fn opt_in(&self) {
        let mut inner = self.inner.borrow_mut();
        let now = inner.env.now_ms();
        inner.tracker.opt_in(now);
        inner.persist_identity();
    }

    /// Sends everything queued now. Resolves with `{sent, failed, pending, dropped}`
    /// counted since the previous `flush()`.
    pub fn flush(&self) -> Promise {
        let mut inner = self.inner.borrow_mut();
        let settled = inner.driver.flush();
        let since = inner.env.now_ms();
        inner.flushes.push(since);
        inner.pump();
        settled
    }
}

#[wasm_bindgen]
impl Client {
    /// Pins the clock at `at` and the next event's id at `id` while a call
    /// made before the module loaded (`load()` and the plain script loader)
    /// is replayed, so that a call replayed twice (the page closed
    /// mid-replay) is one event at the relay; `at` < 0 unpins them.
    #[wasm_bindgen(js_name = _replayAt)]
    pub fn replay_at(&self, at: f64, id: String) {
        let id = events::check_id_text("id", &id).ok().map(|()| id);
        self.inner.borrow_mut().env.replay = (at >= 0.0).then_some((at as i64, id));
    }
}

impl Client {
    /// A typed helper: the input object is the properties, and errors name
    /// its fields directly.
    fn built_in(&self, method: &str, name: &str, input: JsValue) -> Result<Option<String>, JsValue> {
        let input = convert::to_json(&input, "").map_err(|e| js_error(method, &e))?;
        self.record(method, |t, ctx, env| t.track_built_in(name, input, ctx, env))
    }

    fn record(
        &self,
        method: &str,
        call: impl FnOnce(&mut Tracker, crate::wire::Context, &mut BrowserEnv) -> Result<Tracked, Error>,
    ) -> Result<Option<String>, JsValue> {
        let mut inner = self.inner.borrow_mut();
        let Inner { tracker, env, context, .. } = &mut *inner;
        let tracked = call(tracker, context.context(), env).map_err(|e| js_error(method, &e))?;
        Ok(inner.after_track(tracked))
    }
}

/// The driver's hooks (`host.js`): each reports one outcome of the IO and
/// returns false, without doing anything, when the client is inside another
/// call (the driver then calls again on the next microtask).
#[wasm_bindgen]
impl Client {
    fn with(&self, f: impl FnOnce(&mut Inner)) -> bool {
        let Ok(mut inner) = self.inner.try_borrow_mut() else { return false };
        f(&mut inner);
        true
    }

    /// Storage opened: `kind` names it, `None` is memory only. From now on
    /// the outbox's changes are written, as this page's.
    #[wasm_bindgen(js_name = _attach)]
    pub fn attach(&self, kind: Option<String>) -> bool {
        self.with(|inner| {
            log(inner.tracker.config.debug, || {
                format!("events are stored in {}", kind.as_deref().unwrap_or("memory only"))
            });
            if kind.is_some() {
                let page = inner.page.clone();
                inner.tracker.outbox.persist_as(page);
                inner.save();
            }
        })
    }

    /// Takes over the records `texts` that pages that are gone left;
    /// returns the entries to write (them rewritten as ours) before the
    /// adoption lock is let go, or false when busy.
    #[wasm_bindgen(js_name = _adopt)]
    pub fn adopt(&self, texts: Array) -> JsValue {
        let mut entries = JsValue::FALSE;
        self.with(|inner| {
            let records = persist::records(&texts, &inner.page);
            let adopted = inner.tracker.outbox.adopt(records);
            log(inner.tracker.config.debug, || {
                format!("took over {adopted} stored event(s) left by earlier or closed pages")
            });
            let changes = inner.take_unsaved();
            entries = persist::entries(&inner.prefix, changes).into();
        });
        entries
    }

    /// Back from the back/forward cache with the `ids` of the events
    /// stored as this page's: lets go of those another page took over
    /// meanwhile.
    #[wasm_bindgen(js_name = _keepOnly)]
    pub fn keep_only(&self, ids: Array) -> bool {
        self.with(|inner| {
            let ours: Vec<String> = ids.iter().filter_map(|id| id.as_string()).collect();
            inner.tracker.outbox.keep_only(&ours);
        })
    }

    /// `true`: events left by earlier pages are adopted, sending may start
    /// (or resume). `false`: into the back/forward cache, nothing is sent
    /// until the page is back and knows which events are still its own.
    #[wasm_bindgen(js_name = _ready)]
    pub fn ready(&self, ready: bool) -> bool {
        self.with(|inner| {
            inner.ready = ready;
            inner.pump();
        })
    }

    /// Time to act, and why (`WAKE_*`): the wake-up timer or events
    /// adopted, back online, the page hidden or being left, or the writes
    /// gathered during the last JS task are due. One hook for the four:
    /// each export costs bundle bytes (README, "Size").
    #[wasm_bindgen(js_name = _wake)]
    pub fn wake(&self, why: u8) -> bool {
        self.with(|inner| match why {
            WAKE_TIMER => {
                inner.timer_at = None;
                inner.pump();
            }
            WAKE_ONLINE => {
                log(inner.tracker.config.debug, || "online again: sending what waited".into());
                inner.pump();
            }
            WAKE_HIDDEN => inner.on_hide(),
            WAKE_SAVE => inner.save_now(),
            _ => {}
        })
    }

    /// The answer to batch `batch_id`: `status` 0 when there was none
    /// (network error, CORS refusal, timeout).
    #[wasm_bindgen(js_name = _reply)]
    pub fn reply(
        &self,
        batch_id: String,
        status: u16,
        retry_after: Option<String>,
        keepalive_bytes: u32,
        online: bool,
    ) -> bool {
        self.with(|inner| {
            inner.keepalive_bytes = inner.keepalive_bytes.saturating_sub(keepalive_bytes as usize);
            inner.on_reply(&batch_id, Some(status).filter(|s| *s != 0), retry_after, online);
            inner.pump();
        })
    }

    /// Another tab stored a new identity (opt-out, login, logout): adopt it.
    #[wasm_bindgen(js_name = _identity)]
    pub fn identity(&self, raw: String) -> bool {
        let Some(stored) = Json::parse(&raw).and_then(|v| Identity::from_json(&v)) else { return true };
        self.with(|inner| {
            log(inner.tracker.config.debug, || "identity changed in another tab: merged".into());
            inner.tracker.adopt(stored);
            // Ours held a later change than that tab's (stale) copy: write it back.
            inner.persist_identity();
        })
    }
}

impl Inner {
    /// After an event was queued (or not): writes what changed, schedules
    /// sending, and returns the event's id.
    fn after_track(&mut self, tracked: Tracked) -> Option<String> {
        self.persist_identity();
        self.save();
        let debug = self.tracker.config.debug;
        let Tracked::Queued { id, push, dropped } = tracked else {
            log(debug, || "opted out: event not tracked".into());
            return None;
        };
        log(debug, || format!("queued {id} ({} waiting)", self.tracker.outbox.pending()));
        if dropped > 0 {
            log(debug, || format!("the queue is full: dropped the {dropped} oldest waiting event(s)"));
        }
        match push {
            Push::SendNow => self.pump(),
            // The outbox knows the earliest due time (a retry may come before
            // this event's flush interval ends).
            Push::SendAt(_) => self.reschedule(),
        }
        Some(id)
    }

    /// Sends the next due batch, if any (one is in flight at a time: its
    /// answer pumps again), settles the `flush()` calls once nothing more is
    /// to be sent, and sets the wake-up for the next due time.
    fn pump(&mut self) {
        let online = self.online();
        // The latest flush decides what "tried in this flush" means.
        let since = self.flushes.iter().copied().max();
        let Inner { tracker, env, ready, .. } = self;
        let now = env.now_ms();
        // Events left by earlier pages go first: nothing is sent before they are adopted.
        let out = if online && *ready { tracker.outbox.next_send(now, since, &mut || env.uuid_v7()) } else { None };
        self.save();
        if let Some(out) = out {
            log(self.tracker.config.debug, || {
                format!("sending batch {} ({} events, attempt {})", out.batch_id, out.events, out.attempt)
            });
            return self.send(out);
        }
        // A flush waits for the answer in flight, and for the adoption,
        // unless the page is offline (every send would fail at once: the
        // `online` event resumes sending).
        let waiting = online && (self.tracker.outbox.in_flight() || !self.ready);
        if !self.flushes.is_empty() && !waiting {
            self.settle_flushes();
        }
        self.reschedule();
    }

    fn settle_flushes(&mut self) {
        let report = self.tracker.outbox.take_report();
        log(self.tracker.config.debug, || {
            format!(
                "flush: sent {}, failed {}, pending {}, dropped {}",
                report.sent, report.failed, report.pending, report.dropped
            )
        });
        self.flushes.clear();
        let count = |n: u64| n as f64;
        let (sent, failed, pending, dropped) =
            (count(report.sent), count(report.failed), count(report.pending), count(report.dropped));
        self.driver.settle(sent, failed, pending, dropped, report.dropped_why);
    }

    /// Sends one batch, as a keepalive request when it fits in the budget (so
    /// that it survives the page being closed meanwhile).
    fn send(&mut self, out: Outgoing) {
        let size = out.body.len();
        let keepalive = self.keepalive_bytes + size <= KEEPALIVE_BUDGET;
        if keepalive {
            self.keepalive_bytes += size;
        }
        let endpoint = &self.tracker.config.endpoint;
        self.driver.send(
            &out.batch_id,
            endpoint,
            &out.body,
            REQUEST_TIMEOUT_MS,
            if keepalive { size as u32 } else { 0 },
        );
    }

    /// The page is hidden or being left: send everything queued at once, as
    /// keepalive requests within the budget. What does not fit waits.
    fn on_hide(&mut self) {
        if !self.online() {
            return self.save_and_copy();
        }
        let budget = KEEPALIVE_BUDGET.saturating_sub(self.keepalive_bytes);
        let Inner { tracker, env, .. } = self;
        let now = env.now_ms();
        let batches = tracker.outbox.drain_for_hide(now, budget, &mut || env.uuid_v7());
        let debug = tracker.config.debug;
        // Stored as in flight first: the next page waits out the lease instead of
        // racing these. The synchronous copy covers IndexedDB writes the closing
        // page may not live to commit.
        self.save_and_copy();
        let bytes: usize = batches.iter().map(|b| b.body.len()).sum();
        if !host::keepalive_supported() {
            // No keepalive fetch (older Firefox): sendBeacon survives the page
            // too, but its answer is never seen, so each batch stays stored as in
            // flight and is sent again after the lease (the relay drops the
            // duplicates by event id) unless this page lives to resend it sooner.
            let endpoint = &self.tracker.config.endpoint;
            let queued = batches.iter().filter(|b| host::beacon(endpoint, &b.body)).count();
            log(debug, || {
                format!("page hidden: {queued} of {} batch(es), {bytes} bytes, queued with sendBeacon", batches.len())
            });
            return;
        }
        log(debug, || {
            format!("page hidden: sending {} batch(es), {bytes} bytes, as keepalive requests", batches.len())
        });
        for out in batches {
            self.send(out);
        }
    }

    fn on_reply(&mut self, batch_id: &str, status: Option<u16>, retry_after: Option<String>, online: bool) {
        let Inner { tracker, env, .. } = self;
        let now = env.now_ms();
        let debug = tracker.config.debug;
        if status.is_none() && !online && tracker.outbox.on_offline(batch_id) {
            log(debug, || format!("offline: batch {batch_id} waits for the network (no retry spent)"));
            return self.save();
        }
        let retry_after = retry_after.as_deref().and_then(|v| parse_retry_after(v, now));
        let unit = env.unit();
        let answer = tracker.outbox.on_answer(batch_id, status, retry_after, now, unit, &mut || env.uuid_v7());
        // As u32: one integer formatter fewer in the bundle.
        let status = || status.map_or("network error".to_string(), |s| u32::from(s).to_string());
        match answer {
            Answer::Delivered { events } => log(debug, || format!("delivered batch {batch_id} ({events} events)")),
            Answer::RetryAt { at, attempt } => {
                log(debug, || format!("batch {batch_id} got {}; retry {} in {} ms", status(), attempt + 1, at - now))
            }
            Answer::Split => log(debug, || format!("batch {batch_id} too large (413): split in halves")),
            Answer::Failed { events, why } => {
                log(debug, || format!("dropped batch {batch_id} ({events} events): {why}"))
            }
            Answer::Dropped { events } => {
                log(debug, || format!("dropped batch {batch_id} ({events} events): opted out"))
            }
            Answer::Unknown => {}
        }
        self.save();
    }

    /// Makes sure a wake-up is set for the outbox's next due time.
    fn reschedule(&mut self) {
        let wake = if self.online() { self.tracker.outbox.next_wakeup() } else { None };
        if wake == self.timer_at {
            return;
        }
        self.timer_at = wake;
        let delay = wake.map_or(-1, |at| at.saturating_sub(self.env.now_ms()).clamp(0, i64::from(i32::MAX)));
        self.driver.wake(delay as f64);
    }

    /// Gathers the outbox's changes and writes them right after the current
    /// JS task, in one transaction with the rest of the task's (a burst of
    /// `track()` calls costs one IndexedDB transaction, not one each). A page
    /// being hidden writes at once, and copies everything synchronously too.
    fn save(&mut self) {
        self.unsaved.extend(self.tracker.outbox.take_changes());
        if self.unsaved.is_empty() || self.save_queued {
            return;
        }
        self.save_queued = true;
        self.driver.soon();
    }

    /// The page may be closing: writes what is gathered now and copies every
    /// pending event synchronously to `localStorage` (see `persist`). Also
    /// before storage has opened (a page closed in its first moments): the
    /// events become this page's records then, and the copy is all there is
    /// of them for the next page to take over.
    fn save_and_copy(&mut self) {
        if !self.tracker.outbox.persisting() {
            let page = self.page.clone();
            self.tracker.outbox.persist_as(page);
        }
        self.save_now();
        let records = self.tracker.outbox.snapshot();
        self.driver.rescue(persist::entries(&self.prefix, records.into_iter().map(Change::Put)));
    }

    /// Every change not yet written, oldest first.
    fn take_unsaved(&mut self) -> Vec<Change> {
        self.save_queued = false;
        let mut changes = std::mem::take(&mut self.unsaved);
        changes.extend(self.tracker.outbox.take_changes());
        changes
    }

    /// Writes what is gathered now. A failure (quota, storage gone) leaves
    /// the events in memory and, with `debug`, says so (`host.js`).
    fn save_now(&mut self) {
        let changes = self.take_unsaved();
        if !changes.is_empty() {
            self.driver.write(persist::entries(&self.prefix, changes));
        }
    }

    fn online(&self) -> bool {
        host::online()
    }

    fn persist_identity(&mut self) {
        if !self.tracker.needs_write() {
            return;
        }
        let stored = page::load(IDENTITY_KEY).and_then(|v| Identity::from_json(&v));
        self.tracker.reconcile(stored);
        if let Some(identity) = self.tracker.take_dirty_identity() {
            if !host::store(IDENTITY_KEY, &identity.to_json()) {
                log(self.tracker.config.debug, || {
                    "could not store the identity (storage unavailable); it lasts for this page only".into()
                });
            }
        }
    }
}

/// A JS `Error` named `CuecastError` with `code` and `field` properties.
fn js_error(method: &str, e: &Error) -> JsValue {
    host::error(&format!("cuecast.{method}: {e}"), e.code(), e.field())
}
