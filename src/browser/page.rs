//! What the page can tell us: the clock, randomness, storage and context.

use super::host;
use crate::json::Json;
use crate::tracker::Env;
use crate::wire::{Context, Library, Page, Screen};

/// The browser's clock and `crypto.getRandomValues`.
#[derive(Default)]
pub struct BrowserEnv {
    /// While a call made before loading is replayed: the time it was made,
    /// and the id it was given then (for the event it creates).
    pub replay: Option<(i64, Option<String>)>,
}

impl Env for BrowserEnv {
    fn now_ms(&self) -> i64 {
        match &self.replay {
            Some((at, _)) => *at,
            None => host::now() as i64,
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
        host::random(buf);
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

/// The JSON stored in `localStorage` under `key` (`None` where there is
/// none, or no storage: some private modes and sandboxed frames).
pub fn load(key: &str) -> Option<Json> {
    Json::parse(&host::load(key)?)
}

/// Logs to the console when `debug` is on; the message is only built then.
pub fn log(debug: bool, message: impl FnOnce() -> String) {
    if debug {
        host::log(&message());
    }
}
