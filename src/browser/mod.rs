//! The browser layer: the wasm-bindgen exports around one pure [`Tracker`].
//!
//! Everything here is IO: reading options and arguments from JavaScript,
//! the page context, `localStorage`, timers, `fetch` and DOM listeners. The
//! decisions (validation, batching, retries) are the pure modules'.

mod capture;
mod convert;
mod page;
mod transport;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};

use gloo_timers::callback::Timeout;
use js_sys::{Promise, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, spawn_local};
use web_sys::Window;

use crate::config::Config;
use crate::error::Error;
use crate::events;
use crate::outbox::{Answer, Outgoing, Push};
use crate::retry::parse_retry_after;
use crate::tracker::{Env, Identity, Tracked, Tracker};
use capture::{Captured, Listeners};
use page::{log, BrowserEnv, Listener, StaticContext, Store};

/// Where the identity (anonymous id, user, session, opt-out) is kept.
const IDENTITY_KEY: &str = "cuecast:v1:identity";
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
    timer: Option<(i64, Timeout)>,
    /// A background send loop is running.
    sending: bool,
    /// Bumped on every answer; flushes wait on it while another loop's request is in flight.
    answers: u64,
    waiters: Vec<Waker>,
    /// Auto-capture, on the first client that asked for it only.
    capture: Option<Listeners>,
    /// Adopts opt-out, login and logout from other tabs of this origin.
    _storage: Option<Listener>,
    /// Resumes sending when the browser is back online.
    _online: Option<Listener>,
    /// Sends what is queued when the page is hidden or left.
    _hide: Vec<Listener>,
    /// Body bytes of keepalive requests in flight (see [`KEEPALIVE_BUDGET`]).
    keepalive_bytes: usize,
}

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
    if let Some(Value::String(endpoint)) = options.get_mut("endpoint") {
        let relative = endpoint.starts_with('/') || endpoint.starts_with("./") || endpoint.starts_with("../");
        if relative && !endpoint.starts_with("//") {
            let base = window.location().href().unwrap_or_default();
            if let Ok(url) = web_sys::Url::new_with_base(endpoint.trim(), &base) {
                *endpoint = url.href();
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
        context: StaticContext::read(&window),
        tracker,
        env,
        window: window.clone(),
        store,
        timer: None,
        sending: false,
        answers: 0,
        waiters: Vec::new(),
        capture: None,
        _storage: None,
        _online: None,
        _hide: Vec::new(),
        keepalive_bytes: 0,
    }));
    inner.borrow_mut().persist_identity();
    let weak = Rc::downgrade(&inner);
    let storage = Listener::new(&window, "storage", false, move |e| on_storage(&weak, &e));
    inner.borrow_mut()._storage = Some(storage);
    let weak = Rc::downgrade(&inner);
    let online = Listener::new(&window, "online", false, move |_| on_online(&weak));
    inner.borrow_mut()._online = Some(online);
    // `visibilitychange` to hidden is the last event a mobile browser
    // reliably fires; `pagehide` covers navigation. Never `unload`: it
    // disables the back/forward cache.
    let mut hide = Vec::new();
    if let Some(document) = window.document() {
        let weak = Rc::downgrade(&inner);
        let doc = document.clone();
        hide.push(Listener::new(&document, "visibilitychange", false, move |_| {
            if doc.visibility_state() == web_sys::VisibilityState::Hidden {
                on_hide(&weak);
            }
        }));
    }
    let weak = Rc::downgrade(&inner);
    hide.push(Listener::new(&window, "pagehide", false, move |_| on_hide(&weak)));
    inner.borrow_mut()._hide = hide;
    if let (true, Some(document)) = (auto_capture, window.document()) {
        let weak = Rc::downgrade(&inner);
        let listeners = Listeners::install(&document, move |c| on_captured(&weak, c));
        inner.borrow_mut().capture = Some(listeners);
    }
    CLIENTS.with_borrow_mut(|clients| clients.push(inner.clone()));
    Ok(Client { inner })
}

/// Another tab stored a new identity (opt-out, login, logout): adopt it.
fn on_storage(weak: &Weak<RefCell<Inner>>, event: &web_sys::Event) {
    let Some(event) = event.dyn_ref::<web_sys::StorageEvent>() else { return };
    if event.key().as_deref() != Some(IDENTITY_KEY) {
        return;
    }
    let parsed = event.new_value().and_then(|raw| js_sys::JSON::parse(&raw).ok());
    let stored = parsed.and_then(|v| convert::to_json(&v, "").ok()).and_then(|v| Identity::from_json(&v));
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
            serde_wasm_bindgen::to_value(&report).map_err(JsValue::from)
        })
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
            let Inner { tracker, env, window, context, .. } = &mut *inner;
            let tracked = call(tracker, context.context(window), env).map_err(|e| js_error(method, &e))?;
            inner.persist_identity();
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
    let Inner { tracker, env, window, context, .. } = &mut *inner;
    match tracker.track_built_in(captured.event, captured.properties, context.context(window), env) {
        Ok(tracked) => {
            inner.persist_identity();
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
            let Inner { tracker, env, .. } = &mut *inner;
            let now = env.now_ms();
            let out = tracker.outbox.next_send(now, flush_since, &mut || env.uuid_v7());
            out.map(|o| (o, tracker.config.endpoint.clone(), tracker.config.debug))
        };
        let Some((out, endpoint, debug)) = next else {
            let waiting = flush_since.is_some() && rc.borrow().tracker.outbox.in_flight();
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
    let reply = transport::post(&endpoint, out.body.clone(), REQUEST_TIMEOUT_MS, keepalive).await;
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
        return;
    }
    let budget = KEEPALIVE_BUDGET.saturating_sub(inner.keepalive_bytes);
    let Inner { tracker, env, .. } = &mut *inner;
    let now = env.now_ms();
    let batches = tracker.outbox.drain_for_hide(now, budget, &mut || env.uuid_v7());
    let (endpoint, debug) = (tracker.config.endpoint.clone(), tracker.config.debug);
    let bytes: usize = batches.iter().map(|b| b.body.len()).sum();
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
    inner.answered();
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
    let timeout = Timeout::new(delay, move || {
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
            if !self.store.save(IDENTITY_KEY, identity) {
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
