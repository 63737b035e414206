//! What the page can tell us: the clock, randomness, storage and context.

use wasm_bindgen::prelude::*;
use web_sys::{Storage, Window};

use super::host;
use crate::json::Json;
use crate::tracker::Env;
use crate::wire::{Context, Library, Page, Screen};

/// The browser's clock and `crypto.getRandomValues`.
pub struct BrowserEnv {
    crypto: Option<web_sys::Crypto>,
    /// While a call made before loading is replayed: the time it was made,
    /// and the id it was given then (for the event it creates).
    pub replay: Option<(i64, Option<String>)>,
}

impl BrowserEnv {
    pub fn new(window: &Window) -> Self {
        BrowserEnv { crypto: window.crypto().ok(), replay: None }
    }
}

impl Env for BrowserEnv {
    fn now_ms(&self) -> i64 {
        match &self.replay {
            Some((at, _)) => *at,
            None => js_sys::Date::now() as i64,
        }
    }

    fn uuid_v7(&mut self) -> String {
        // The first id a replayed call asks for is its event's.
        if let Some(id) = self.replay.as_mut().and_then(|(_, id)| id.take()) {
            return id;
        }
        let mut random = [0u8; 10];
        self.fill_random(&mut random);
        crate::tracker::uuid_v7(self.now_ms(), random)
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        let filled = self.crypto.as_ref().is_some_and(|c| c.get_random_values_with_u8_array(buf).is_ok());
        if !filled {
            // No Web Crypto (very old browsers, some sandboxed frames): ids stay
            // unique, just less unpredictable.
            for b in buf.iter_mut() {
                *b = (js_sys::Math::random() * 256.0) as u8;
            }
        }
    }
}

/// The parts of the context that do not change while the page lives (read
/// by `host.js`: through web-sys these reads cost a kilobyte of glue).
pub struct StaticContext {
    user_agent: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    screen: Option<Screen>,
}

impl StaticContext {
    pub fn read() -> Self {
        let read = host::static_context();
        let size = |i| read.get(i).as_f64().map(|n| n.max(0.0) as u32);
        let screen = size(3).zip(size(4)).map(|(width, height)| Screen { width, height });
        StaticContext {
            user_agent: read.get(0).as_string(),
            locale: read.get(1).as_string(),
            timezone: read.get(2).as_string(),
            screen,
        }
    }

    /// The full context of an event tracked now: the page may have changed
    /// (single-page apps), so it is read every time.
    pub fn context(&self) -> Context {
        let page = host::page_context();
        let text = |i| page.get(i).as_string().unwrap_or_default();
        Context {
            page: Some(Page { url: text(0), path: text(1), referrer: text(2), title: text(3) }),
            user_agent: self.user_agent.clone(),
            locale: self.locale.clone(),
            timezone: self.timezone.clone(),
            screen: self.screen,
            library: Some(Library::cuecast()),
        }
    }
}

/// `localStorage`, or nothing: it throws in some private modes and sandboxed
/// frames, and a full quota must never throw into the host page.
pub struct Store {
    storage: Option<Storage>,
}

impl Store {
    pub fn open(window: &Window) -> Self {
        Store { storage: window.local_storage().ok().flatten() }
    }

    /// The JSON stored under `key`.
    pub fn load(&self, key: &str) -> Option<Json> {
        Json::parse(&self.storage.as_ref()?.get_item(key).ok()??)
    }

    /// Stores JSON text; false when it could not be stored (quota, disabled).
    pub fn save(&self, key: &str, json: &str) -> bool {
        self.storage.as_ref().is_some_and(|storage| storage.set_item(key, json).is_ok())
    }
}

/// Logs to the console when `debug` is on; the message is only built then.
pub fn log(debug: bool, message: impl FnOnce() -> String) {
    if debug {
        web_sys::console::log_2(&JsValue::from_str("[cuecast]"), &JsValue::from_str(&message()));
    }
}
