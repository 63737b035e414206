//! The browser layer: the wasm-bindgen exports around one pure [`Tracker`].
//!
//! Everything here is IO: reading options and arguments from JavaScript,
//! the page context, `localStorage`, timers, `fetch` and DOM listeners (the
//! calls themselves are JavaScript in `host.js`, see `host.rs`). The
//! decisions (validation, batching, retries) are the pure modules'.

mod capture;
mod convert;
mod host;
mod page;
mod persist;
mod transport;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};
use web_sys::Window;

use crate::config::Config;
use crate::error::Error;
use crate::events;
use crate::json::Json;
use crate::outbox::{storage_scope, Answer, Change, Outgoing, Push};
use crate::retry::parse_retry_after;
use crate::tracker::{Env, Identity, Tracked, Tracker};
use capture::{Captured, Listeners};
use page::{log, BrowserEnv, StaticContext, Store, Timer};
use persist::{Locks, Shelf};

/// Where the identity (anonymous id, user, session, opt-out) is kept.
const IDENTITY_KEY: &str = "cuecast:v1:identity";
/// How often a page looks again for events left by pages that are gone: a
/// backstop for the lock waits, which only cover the pages seen at the last look.
const ADOPT_EVERY_MS: u32 = 10_000;
/// How long one request may take before it counts as a network error.
const REQUEST_TIMEOUT_MS: u32 = 10_000;
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
    window: Window,
    context: StaticContext,
    store: Store,
    /// The pending wake-up and when it fires.
    timer: Option<(i64, Timer)>,
    /// A background send loop is running.
    sending: bool,
    /// Bumped on every answer; flushes wait on it while another loop's request is in flight.
    answers: u64,
    waiters: Vec<Waker>,
    /// Auto-capture, on the first client that asked for it only.
    capture: Option<Listeners>,
    /// The page's lifecycle (`lifecycle` in `host.js`): sends what is queued
    /// when the page is hidden or left, lets go of and takes back this
    /// page's lock around the back/forward cache, resumes sending when back
    /// online, and adopts opt-out, login and logout from other tabs.
    _lifecycle: Option<Lifecycle>,
    /// Body bytes of keepalive requests in flight (see [`KEEPALIVE_BUDGET`]).
    keepalive_bytes: usize,
    /// Where queued events are kept (memory until storage has opened).
    shelf: Rc<Shelf>,
    /// This page's id: the owner of the events it stores.
    page: String,
    /// Storage is open and events left by earlier pages are adopted: sending may start.
    ready: bool,
    /// Web Locks, where the page has them (see `persist`).
    locks: Option<Locks>,
    /// Lets go of this page's lock (before entering the back/forward cache).
    release: Option<Function>,
    /// Other pages whose end we wait for, to adopt what they leave.
    watched: Vec<String>,
    /// Looks for left events every [`ADOPT_EVERY_MS`].
    _adopt_timer: Option<Timer>,
    /// Storage writes gathered during this JS task, written together in one
    /// transaction right after it ([`Inner::save`]).
    unsaved: Vec<Change>,
    save_queued: bool,
    /// This client, for the deferred write.
    me: Weak<RefCell<Inner>>,
}

/// Talc instead of Rust's default dlmalloc: 2 KB gzip smaller here, and
/// faster (README, "Size"). The SDK is single-threaded (no atomics).
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// The lifecycle callback: what happened, and the new identity for "identity".
type Lifecycle = Closure<dyn FnMut(String, Option<String>)>;

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
    let window = web_sys::window().ok_or_else(|| fail(Error::invalid("", "needs a browser window")))?;
    let mut options = convert::to_json(&options, "").map_err(fail)?;
    // A path ("/v1/batch", "./batch") means the page's own origin. Anything
    // else is validated as given, so "relay.example.com/v1" is an error, not
    // a path on this site.
    if let Some(endpoint) = options.get("endpoint").and_then(Json::as_str) {
        let relative = endpoint.starts_with('/') || endpoint.starts_with("./") || endpoint.starts_with("../");
        if relative && !endpoint.starts_with("//") {
            let base = window.location().href().unwrap_or_default();
            if let Ok(url) = web_sys::Url::new_with_base(endpoint.trim(), &base) {
                options.insert("endpoint", url.href().as_str().into());
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
    let mut env = BrowserEnv::new(&window);
    let store = Store::open(&window);
    let stored = store.load(IDENTITY_KEY).and_then(|v| Identity::from_json(&v));
    let scope = storage_scope(&config.write_key, &config.endpoint);
    let page_id = env.uuid_v7();
    let tracker = Tracker::new(config, stored, &mut env);
    let debug = tracker.config.debug;
    let auto_capture =
        tracker.config.auto_capture && !CLIENTS.with_borrow(|c| c.iter().any(|c| c.borrow().capture.is_some()));
    log(debug, || {
        format!(
            "ready: sending to {} (auto-capture {})",
            tracker.config.endpoint,
            if auto_capture { "on" } else { "off" }
        )
    });
    let inner = Rc::new(RefCell::new(Inner {
        context: StaticContext::read(),
        tracker,
        env,
        window: window.clone(),
        store,
        timer: None,
        sending: false,
        answers: 0,
        waiters: Vec::new(),
        capture: None,
        _lifecycle: None,
        keepalive_bytes: 0,
        shelf: Rc::new(Shelf::memory(&scope)),
        page: page_id,
        ready: false,
        locks: Locks::get(),
        release: None,
        watched: Vec::new(),
        _adopt_timer: None,
        unsaved: Vec::new(),
        save_queued: false,
        me: Weak::new(),
    }));
    inner.borrow_mut().me = Rc::downgrade(&inner);
    inner.borrow_mut().persist_identity();
    let weak = Rc::downgrade(&inner);
    let lifecycle = Closure::new(move |what: String, value: Option<String>| match what.as_str() {
        "hide" => on_hide(&weak),
        "freeze" => on_freeze(&weak),
        "thaw" => {
            if let Some(rc) = weak.upgrade() {
                spawn_local(on_thaw(rc));
            }
        }
        "online" => on_online(&weak),
        "identity" => on_identity(&weak, value.unwrap_or_default()),
        _ => {}
    });
    host::lifecycle(IDENTITY_KEY, &lifecycle);
    inner.borrow_mut()._lifecycle = Some(lifecycle);
    if auto_capture {
        let weak = Rc::downgrade(&inner);
        let listeners = Listeners::install(move |c| on_captured(&weak, c));
        inner.borrow_mut().capture = Some(listeners);
    }
    CLIENTS.with_borrow_mut(|clients| clients.push(inner.clone()));
    spawn_local(open_storage(inner.clone(), scope));
    Ok(Client { inner })
}

/// Opens storage, takes this page's lock, adopts what pages that are gone
/// left behind, then starts sending (oldest first).
async fn open_storage(rc: Rc<RefCell<Inner>>, scope: String) {
    let shelf = Shelf::open(&scope).await;
    let shared = shelf.shared();
    {
        let mut inner = rc.borrow_mut();
        log(inner.tracker.config.debug, || format!("events are stored in {}", shelf.kind()));
        inner.shelf = Rc::new(shelf);
        if shared {
            let page = inner.page.clone();
            inner.tracker.outbox.persist_as(page);
            inner.save();
        }
    }
    if shared {
        hold_page_lock(&rc).await;
        adopt_orphans(&rc).await;
        let weak = Rc::downgrade(&rc);
        let timer = Timer::every(ADOPT_EVERY_MS, move || {
            let Some(rc) = weak.upgrade() else { return };
            if rc.borrow().ready {
                spawn_local(async move {
                    adopt_orphans(&rc).await;
                    start_sending(rc);
                });
            }
        });
        rc.borrow_mut()._adopt_timer = Some(timer);
    }
    become_ready(rc);
}

/// Sending may start (or resume): wakes a flush() that waited for it.
fn become_ready(rc: Rc<RefCell<Inner>>) {
    let mut inner = rc.borrow_mut();
    inner.ready = true;
    inner.answered();
    drop(inner);
    start_sending(rc);
}

fn page_lock(scope_prefix: &str, page: &str) -> String {
    format!("{scope_prefix}page:{page}")
}

async fn hold_page_lock(rc: &Rc<RefCell<Inner>>) {
    let (locks, name) = {
        let inner = rc.borrow();
        (inner.locks.clone(), page_lock(inner.shelf.prefix(), &inner.page))
    };
    if let Some(locks) = locks {
        let release = locks.hold(&name).await;
        rc.borrow_mut().release = release;
    }
}

/// Takes over the stored events of pages that are gone (see `persist`).
async fn adopt_orphans(rc: &Rc<RefCell<Inner>>) {
    let (locks, prefix) = {
        let inner = rc.borrow();
        (inner.locks.clone(), inner.shelf.prefix().to_string())
    };
    match locks {
        // Under one lock for the origin: two pages never adopt the same record.
        Some(locks) => {
            let adopting = adopt_under_lock(rc.clone(), Some(locks.clone()));
            locks.with(&format!("{prefix}adopt"), adopting).await;
        }
        None => adopt_under_lock(rc.clone(), None).await,
    }
}

async fn adopt_under_lock(rc: Rc<RefCell<Inner>>, locks: Option<Locks>) {
    let (shelf, me) = {
        let inner = rc.borrow();
        (inner.shelf.clone(), inner.page.clone())
    };
    let held = match &locks {
        Some(locks) => locks.held().await,
        None => Vec::new(),
    };
    let mut records = Vec::new();
    for owner in shelf.owners().await {
        if owner == me {
            continue;
        }
        if let (Some(locks), true) = (&locks, held.contains(&page_lock(shelf.prefix(), &owner))) {
            watch(&rc, locks, owner);
            continue;
        }
        records.extend(shelf.records_of(&owner).await);
    }
    if records.is_empty() {
        return;
    }
    let written = {
        let mut inner = rc.borrow_mut();
        let adopted = inner.tracker.outbox.adopt(records);
        let debug = inner.tracker.config.debug;
        log(debug, || format!("took over {adopted} stored event(s) left by earlier or closed pages"));
        let changes = inner.take_unsaved();
        inner.shelf.write(changes)
    };
    // Rewritten as ours before the adoption lock is let go.
    if let Some(written) = written {
        let _ = written.await;
    }
}

/// Adopts what page `owner` leaves once it is gone (closed, crashed, frozen).
fn watch(rc: &Rc<RefCell<Inner>>, locks: &Locks, owner: String) {
    let mut inner = rc.borrow_mut();
    if inner.watched.contains(&owner) {
        return;
    }
    inner.watched.push(owner.clone());
    let name = page_lock(inner.shelf.prefix(), &owner);
    let weak = Rc::downgrade(rc);
    locks.when_free(&name, move || {
        let Some(rc) = weak.upgrade() else { return };
        rc.borrow_mut().watched.retain(|w| *w != owner);
        spawn_local(async move {
            adopt_orphans(&rc).await;
            start_sending(rc);
        });
    });
}

/// Entering the back/forward cache: let go of this page's lock (a held lock
/// keeps a page out of the cache); other pages may adopt its events meanwhile.
fn on_freeze(weak: &Weak<RefCell<Inner>>) {
    let Some(rc) = weak.upgrade() else { return };
    // Nothing is sent until the page is back and knows which events are still its own.
    rc.borrow_mut().ready = false;
    let release = rc.borrow_mut().release.take();
    if let Some(release) = release {
        let _ = release.call0(&JsValue::UNDEFINED);
    }
}

/// Back from the back/forward cache: take the lock again and let go of the
/// events another page took over while this one was frozen.
async fn on_thaw(rc: Rc<RefCell<Inner>>) {
    let shared = rc.borrow().locks.is_some() && rc.borrow().shelf.shared();
    if shared {
        hold_page_lock(&rc).await;
        let (shelf, me) = {
            let inner = rc.borrow();
            (inner.shelf.clone(), inner.page.clone())
        };
        let ours: Vec<String> = shelf.records_of(&me).await.into_iter().map(|r| r.id).collect();
        rc.borrow_mut().tracker.outbox.keep_only(&ours);
        adopt_orphans(&rc).await;
    }
    become_ready(rc);
}

/// Another tab stored a new identity (opt-out, login, logout): adopt it.
fn on_identity(weak: &Weak<RefCell<Inner>>, raw: String) {
    let stored = Json::parse(&raw).and_then(|v| Identity::from_json(&v));
    let (Some(stored), Some(rc)) = (stored, weak.upgrade()) else { return };
    // Adopted once the current JS task is done: the event may arrive while
    // this tab is inside one of our calls (its state borrowed), and dropping
    // it would lose another tab's opt-out or opt-in for good.
    spawn_local(async move {
        let mut inner = rc.borrow_mut();
        log(inner.tracker.config.debug, || "identity changed in another tab: merged".into());
        inner.tracker.adopt(stored);
        // Ours held a later change than that tab's (stale) copy: write it back.
        inner.persist_identity();
    });
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
        let inner = self.inner.clone();
        future_to_promise(async move {
            let since = inner.borrow().env.now_ms();
            send_loop(inner.clone(), Some(since)).await;
            let mut state = inner.borrow_mut();
            let report = state.tracker.outbox.take_report();
            log(state.tracker.config.debug, || {
                format!(
                    "flush: sent {}, failed {}, pending {}, dropped {}",
                    report.sent, report.failed, report.pending, report.dropped
                )
            });
            // Through JSON: a few bytes of writer, where building the
            // object through Reflect costs glue for every field.
            js_sys::JSON::parse(&report.to_json())
        })
    }
}

#[wasm_bindgen]
impl Client {
    /// Replays a call made before the module loaded (`load()` and the plain
    /// script loader), at the time `at` it was made and, for the event it
    /// creates, with the `id` it was given then: a call replayed twice (the
    /// page closed mid-replay) is one event at the relay.
    #[wasm_bindgen(js_name = _replay)]
    pub fn replay(&self, method: &str, args: js_sys::Array, at: f64, id: String) -> Result<Option<String>, JsValue> {
        let id = events::check_id_text("id", &id).ok().map(|()| id);
        self.inner.borrow_mut().env.replay = Some((at as i64, id));
        let arg = |i| args.get(i);
        let result = match method {
            "track" => self.track(arg(0), arg(1)),
            "shoutoutClicked" => self.shoutout_clicked(arg(0)),
            "surveySubmitted" => self.survey_submitted(arg(0)),
            "onboardingTaskCompleted" => self.onboarding_task_completed(arg(0)),
            "walkthruGoalReached" => self.walkthru_goal_reached(arg(0)),
            "identify" => self.identify(arg(0), arg(1)),
            "reset" => {
                self.reset();
                Ok(None)
            }
            "optOut" => {
                self.opt_out();
                Ok(None)
            }
            "optIn" => {
                self.opt_in();
                Ok(None)
            }
            _ => Err(js_error("replay", &Error::invalid("method", "is not a client method"))),
        };
        self.inner.borrow_mut().env.replay = None;
        result
    }
}

impl Client {
    fn built_in(&self, method: &str, name: &str, input: JsValue) -> Result<Option<String>, JsValue> {
        let input = convert::to_json(&input, "").map_err(|e| js_error(method, &e))?;
        self.record(method, |t, ctx, env| t.track_built_in(name, input, ctx, env))
    }

    fn record(
        &self,
        method: &str,
        call: impl FnOnce(&mut Tracker, crate::wire::Context, &mut BrowserEnv) -> Result<Tracked, Error>,
    ) -> Result<Option<String>, JsValue> {
        let tracked = {
            let mut inner = self.inner.borrow_mut();
            let Inner { tracker, env, context, .. } = &mut *inner;
            let tracked = call(tracker, context.context(), env).map_err(|e| js_error(method, &e))?;
            inner.persist_identity();
            inner.save();
            tracked
        };
        Ok(after_track(&self.inner, tracked))
    }
}

/// Schedules sending after an event was queued; returns its id.
fn after_track(rc: &Rc<RefCell<Inner>>, tracked: Tracked) -> Option<String> {
    let Tracked::Queued { id, push, dropped } = tracked else {
        log(rc.borrow().tracker.config.debug, || "opted out: event not tracked".into());
        return None;
    };
    let inner = rc.borrow();
    let debug = inner.tracker.config.debug;
    log(debug, || format!("queued {id} ({} waiting)", inner.tracker.outbox.pending()));
    if dropped > 0 {
        log(debug, || format!("the queue is full: dropped the {dropped} oldest waiting event(s)"));
    }
    match push {
        Push::SendNow if !inner.tracker.outbox.in_flight() => {
            drop(inner);
            start_sending(rc.clone());
        }
        Push::SendNow => {}
        // The outbox knows the earliest due time (a retry may come before
        // this event's flush interval ends).
        Push::SendAt(_) => {
            drop(inner);
            reschedule(rc);
        }
    }
    Some(id)
}

fn on_captured(weak: &Weak<RefCell<Inner>>, captured: Captured) {
    let Some(rc) = weak.upgrade() else { return };
    let Ok(mut inner) = rc.try_borrow_mut() else { return };
    let Inner { tracker, env, context, .. } = &mut *inner;
    match tracker.track_built_in(captured.event, captured.properties, context.context(), env) {
        Ok(tracked) => {
            inner.persist_identity();
            inner.save();
            drop(inner);
            after_track(&rc, tracked);
        }
        // Auto-capture must never throw into the page; a misconfigured
        // element is worth a warning even without debug.
        Err(e) => web_sys::console::warn_1(&format!("[cuecast] auto-capture skipped {}: {e}", captured.event).into()),
    }
}

/// Sends batches until nothing is due. `flush_since` marks an explicit flush,
/// which also waits for a request another loop has in flight.
async fn send_loop(rc: Rc<RefCell<Inner>>, flush_since: Option<i64>) {
    loop {
        // Offline, every send would fail at once and burn a retry: wait for
        // the `online` event instead (it restarts this loop).
        if !rc.borrow().online() {
            break;
        }
        let next = {
            let mut inner = rc.borrow_mut();
            let Inner { tracker, env, ready, .. } = &mut *inner;
            let now = env.now_ms();
            // Events left by earlier pages go first: wait until they are adopted.
            let out = if *ready { tracker.outbox.next_send(now, flush_since, &mut || env.uuid_v7()) } else { None };
            let next = out.map(|o| (o, tracker.config.endpoint.clone(), tracker.config.debug));
            inner.save();
            next
        };
        let Some((out, endpoint, debug)) = next else {
            let waiting = {
                let inner = rc.borrow();
                flush_since.is_some() && (inner.tracker.outbox.in_flight() || !inner.ready)
            };
            if waiting {
                let seen = rc.borrow().answers;
                NextAnswer { rc: rc.clone(), seen }.await;
                continue;
            }
            break;
        };
        log(debug, || format!("sending batch {} ({} events, attempt {})", out.batch_id, out.events, out.attempt));
        post_and_record(&rc, out, endpoint).await;
    }
    if flush_since.is_none() {
        rc.borrow_mut().sending = false;
    }
    reschedule(&rc);
}

/// Sends one batch, as a keepalive request when it fits in the budget (so
/// that it survives the page being closed meanwhile), and records the answer.
async fn post_and_record(rc: &Rc<RefCell<Inner>>, out: Outgoing, endpoint: String) {
    let size = out.body.len();
    let keepalive = {
        let mut inner = rc.borrow_mut();
        let fits = inner.keepalive_bytes + size <= KEEPALIVE_BUDGET;
        if fits {
            inner.keepalive_bytes += size;
        }
        fits
    };
    let reply = transport::post(&endpoint, &out.body, REQUEST_TIMEOUT_MS, keepalive).await;
    if keepalive {
        rc.borrow_mut().keepalive_bytes -= size;
    }
    on_reply(rc, &out, reply);
}

/// The page is hidden or being left: send everything queued at once, as
/// keepalive requests within the budget. What does not fit waits.
fn on_hide(weak: &Weak<RefCell<Inner>>) {
    let Some(rc) = weak.upgrade() else { return };
    let Ok(mut inner) = rc.try_borrow_mut() else { return };
    if !inner.online() {
        inner.save_and_copy();
        return;
    }
    let budget = KEEPALIVE_BUDGET.saturating_sub(inner.keepalive_bytes);
    let Inner { tracker, env, .. } = &mut *inner;
    let now = env.now_ms();
    let batches = tracker.outbox.drain_for_hide(now, budget, &mut || env.uuid_v7());
    let (endpoint, debug) = (tracker.config.endpoint.clone(), tracker.config.debug);
    // Stored as in flight first: the next page waits out the lease instead of
    // racing these. The synchronous copy covers IndexedDB writes the closing
    // page may not live to commit.
    inner.save_and_copy();
    let bytes: usize = batches.iter().map(|b| b.body.len()).sum();
    if !transport::keepalive_supported() {
        // No keepalive fetch (older Firefox): sendBeacon survives the page
        // too, but its answer is never seen, so each batch stays stored as in
        // flight and is sent again after the lease (the relay drops the
        // duplicates by event id) unless this page lives to resend it sooner.
        let queued = batches.iter().filter(|b| transport::beacon(&endpoint, &b.body)).count();
        log(debug, || {
            format!("page hidden: {queued} of {} batch(es), {bytes} bytes, queued with sendBeacon", batches.len())
        });
        return;
    }
    log(debug, || format!("page hidden: sending {} batch(es), {bytes} bytes, as keepalive requests", batches.len()));
    drop(inner);
    for out in batches {
        let (rc, endpoint) = (rc.clone(), endpoint.clone());
        spawn_local(async move {
            post_and_record(&rc, out, endpoint).await;
            reschedule(&rc);
        });
    }
}

fn on_reply(rc: &Rc<RefCell<Inner>>, out: &Outgoing, reply: transport::Reply) {
    let mut inner = rc.borrow_mut();
    let Inner { tracker, env, window, .. } = &mut *inner;
    let now = env.now_ms();
    if reply.status.is_none() && !window_online(window) && tracker.outbox.on_offline(&out.batch_id) {
        log(tracker.config.debug, || format!("offline: batch {} waits for the network (no retry spent)", out.batch_id));
        inner.save();
        inner.answered();
        return;
    }
    let retry_after = reply.retry_after.as_deref().and_then(|v| parse_retry_after(v, now));
    let unit = env.unit();
    let answer = tracker.outbox.on_answer(&out.batch_id, reply.status, retry_after, now, unit, &mut || env.uuid_v7());
    let debug = tracker.config.debug;
    let status = || reply.status.map_or("network error".to_string(), |s| s.to_string());
    match answer {
        Answer::Delivered { events } => log(debug, || format!("delivered batch {} ({events} events)", out.batch_id)),
        Answer::RetryAt { at, attempt } => {
            log(debug, || format!("batch {} got {}; retry {} in {} ms", out.batch_id, status(), attempt + 1, at - now))
        }
        Answer::Split => log(debug, || format!("batch {} too large (413): split in halves", out.batch_id)),
        Answer::Failed { events, why } => {
            log(debug, || format!("dropped batch {} ({events} events): {why}", out.batch_id))
        }
        Answer::Dropped { events } => {
            log(debug, || format!("dropped batch {} ({events} events): opted out", out.batch_id))
        }
        Answer::Unknown => {}
    }
    inner.save();
    inner.answered();
}

/// Writes the gathered changes on the next turn of the microtask queue. If
/// the client happens to be borrowed then, it tries again on the next one:
/// giving up would leave `save_queued` set and stop every later write.
fn save_soon(me: Weak<RefCell<Inner>>) {
    spawn_local(async move {
        let Some(rc) = me.upgrade() else { return };
        let saved = rc.try_borrow_mut().map(|mut inner| inner.save_now()).is_ok();
        if !saved {
            save_soon(me);
        }
    });
}

/// Makes sure a wake-up is set for the outbox's next due time.
fn reschedule(rc: &Rc<RefCell<Inner>>) {
    let wake = if rc.borrow().online() { rc.borrow().tracker.outbox.next_wakeup() } else { None };
    match wake {
        Some(at) => schedule(rc, at),
        None => rc.borrow_mut().timer = None,
    }
}

fn schedule(rc: &Rc<RefCell<Inner>>, at: i64) {
    let mut inner = rc.borrow_mut();
    if inner.timer.as_ref().is_some_and(|(t, _)| *t == at) {
        return;
    }
    let delay = (at.saturating_sub(inner.env.now_ms())).clamp(0, i64::from(i32::MAX)) as u32;
    let weak = Rc::downgrade(rc);
    let timeout = Timer::once(delay, move || {
        let Some(rc) = weak.upgrade() else { return };
        rc.borrow_mut().timer = None;
        start_sending(rc);
    });
    inner.timer = Some((at, timeout));
}

/// Resolves when the next answer (from any send loop) has been recorded.
struct NextAnswer {
    rc: Rc<RefCell<Inner>>,
    seen: u64,
}

impl Future for NextAnswer {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut inner = self.rc.borrow_mut();
        if inner.answers != self.seen {
            return Poll::Ready(());
        }
        inner.waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

fn window_online(window: &Window) -> bool {
    window.navigator().on_line()
}

/// Back online: send what waited.
fn on_online(weak: &Weak<RefCell<Inner>>) {
    let Some(rc) = weak.upgrade() else { return };
    log(rc.borrow().tracker.config.debug, || "online again: sending what waited".into());
    start_sending(rc);
}

/// Starts the background send loop unless one is running already.
fn start_sending(rc: Rc<RefCell<Inner>>) {
    let mut inner = rc.borrow_mut();
    if inner.sending {
        return;
    }
    inner.sending = true;
    drop(inner);
    spawn_local(send_loop(rc, None));
}

impl Inner {
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
        save_soon(self.me.clone());
    }

    /// The page may be closing: writes what is gathered now and copies every
    /// pending event synchronously to `localStorage` (see `persist`).
    fn save_and_copy(&mut self) {
        self.save_now();
        let records = self.tracker.outbox.snapshot();
        self.shelf.rescue(records);
    }

    /// Every change not yet written, oldest first.
    fn take_unsaved(&mut self) -> Vec<Change> {
        self.save_queued = false;
        let mut changes = std::mem::take(&mut self.unsaved);
        changes.extend(self.tracker.outbox.take_changes());
        changes
    }

    /// Writes what is gathered now. A failure (quota, storage gone) leaves
    /// the events in memory and, with `debug`, says so.
    fn save_now(&mut self) {
        let changes = self.take_unsaved();
        let Some(written) = self.shelf.write(changes) else { return };
        if self.tracker.config.debug {
            spawn_local(async move {
                if written.await.is_err() {
                    log(true, || {
                        "could not store queued events (quota or storage error); they are kept in memory".into()
                    });
                }
            });
        }
    }

    /// Records that an answer arrived and wakes the flushes waiting for one.
    fn answered(&mut self) {
        self.answers += 1;
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    fn online(&self) -> bool {
        window_online(&self.window)
    }

    fn persist_identity(&mut self) {
        if !self.tracker.needs_write() {
            return;
        }
        let stored = self.store.load(IDENTITY_KEY).and_then(|v| Identity::from_json(&v));
        self.tracker.reconcile(stored);
        if let Some(identity) = self.tracker.take_dirty_identity() {
            if !self.store.save(IDENTITY_KEY, &identity.to_json()) {
                log(self.tracker.config.debug, || {
                    "could not store the identity (storage unavailable); it lasts for this page only".into()
                });
            }
        }
    }
}

/// A JS `Error` named `CuecastError` with `code` and `field` properties.
fn js_error(method: &str, e: &Error) -> JsValue {
    let err = js_sys::Error::new(&format!("cuecast.{method}: {e}"));
    err.set_name("CuecastError");
    let _ = Reflect::set(&err, &"code".into(), &e.code().into());
    let _ = Reflect::set(&err, &"field".into(), &e.field().into());
    err.into()
}
