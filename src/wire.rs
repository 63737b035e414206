//! Wire contract v1: the batch a browser POSTs and the answers it understands.
//!
//! This module is the single definition shared by the SDK (which builds and
//! serialises these types) and the relay (which decodes and validates them).
//! Golden fixtures in `tests/fixtures/` pin the JSON; a change that breaks them
//! is a change of contract and bumps [`VERSION`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::events::{self, MAX_EVENT_BYTES};
use crate::json::{Json, ObjectWriter};

/// The wire version this build speaks.
pub const VERSION: u64 = 1;
/// Most events in one batch (a browser sends 20; server-side senders more).
pub const MAX_EVENTS_PER_BATCH: usize = 1000;

/// One POST body: a batch of events from one page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub v: u64,
    pub write_key: String,
    /// The same on every resend of this batch, so the relay can recognise it.
    pub batch_id: String,
    /// When this attempt left the browser; lets the relay correct clock skew.
    pub sent_at: String,
    /// 1 for the first send, incremented on every retry of the same batch.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub sdk: Library,
    pub events: Vec<Event>,
}

fn first_attempt() -> u32 {
    1
}

/// One tracked interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// UUIDv7, created once per event; resends keep it, so the relay dedupes on it.
    pub id: String,
    pub event: String,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub context: Context,
    #[serde(default)]
    pub traits: Map<String, Value>,
}

/// Where the event happened. Every field is optional on the wire so that
/// server-side senders can use the same endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<Screen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<Library>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub referrer: String,
    #[serde(default)]
    pub title: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Library {
    pub name: String,
    pub version: String,
}

impl Library {
    /// This SDK.
    pub fn cuecast() -> Self {
        Library { name: "cuecast".into(), version: env!("CARGO_PKG_VERSION").into() }
    }
}

/// This SDK's `sdk` and `context.library`, as JSON.
pub const LIBRARY_JSON: &str = concat!(r#"{"name":"cuecast","version":""#, env!("CARGO_PKG_VERSION"), r#""}"#);

/// An event as the SDK creates it, written as [`Event`]'s JSON by hand: the
/// browser build carries no serde serialiser (README, "Size"). The tests
/// pin it to serde's output of [`Event`] for every golden fixture.
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub timestamp: &'a str,
    pub anonymous_id: &'a str,
    pub user_id: Option<&'a str>,
    pub session_id: &'a str,
    /// An object.
    pub properties: &'a Json,
    pub context: &'a Context,
    /// An object.
    pub traits: &'a Json,
}

impl NewEvent<'_> {
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        let mut w = ObjectWriter::new(&mut out);
        w.str("id", self.id).str("event", self.event).str("timestamp", self.timestamp);
        w.str("anonymousId", self.anonymous_id);
        if let Some(user_id) = self.user_id {
            w.str("userId", user_id);
        }
        w.str("sessionId", self.session_id);
        self.properties.write(w.key("properties"));
        self.context.write_json(w.key("context"));
        self.traits.write(w.key("traits"));
        w.end();
        out
    }
}

impl Context {
    /// Appends the JSON serde writes for this context.
    pub fn write_json(&self, out: &mut String) {
        let mut w = ObjectWriter::new(out);
        if let Some(page) = &self.page {
            let mut p = ObjectWriter::new(w.key("page"));
            p.str("url", &page.url).str("path", &page.path).str("referrer", &page.referrer).str("title", &page.title);
            p.end();
        }
        for (key, value) in [("userAgent", &self.user_agent), ("locale", &self.locale), ("timezone", &self.timezone)] {
            if let Some(value) = value {
                w.str(key, value);
            }
        }
        if let Some(screen) = self.screen {
            let mut s = ObjectWriter::new(w.key("screen"));
            s.int("width", screen.width.into()).int("height", screen.height.into());
            s.end();
        }
        if let Some(library) = &self.library {
            let mut l = ObjectWriter::new(w.key("library"));
            l.str("name", &library.name).str("version", &library.version);
            l.end();
        }
        w.end();
    }
}

/// The relay's answer to an accepted batch (200 or 202).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub accepted: u64,
    pub duplicates: u64,
}

/// The body of every 4xx/5xx answer: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody { error: ErrorDetail { code: e.code().into(), message: e.to_string() } }
    }
}

/// Decodes and validates a batch body: JSON of the v1 shape whose every event
/// passes [`Event::validate`]. The error names the first bad field, e.g.
/// `events[3].properties.score`.
pub fn decode_batch(body: &[u8]) -> Result<Batch, Error> {
    let mut batch: Batch = match serde_json::from_slice(body) {
        Ok(batch) => batch,
        Err(e) => {
            // A future version may change the shape: say "unsupported version"
            // rather than a confusing shape error when `v` is readable.
            #[derive(Deserialize)]
            struct Probe {
                v: u64,
            }
            if let Ok(Probe { v }) = serde_json::from_slice(body) {
                if v != VERSION {
                    return Err(Error::UnsupportedVersion(v));
                }
            }
            // Decided by parsing, not by the error's category: serde_json calls
            // a struct sent as a too-long array "trailing characters", a syntax
            // error, though the body is valid JSON with a field to name.
            if !e.is_data() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                return Err(Error::Malformed { field: String::new(), reason: format!("body is not valid JSON: {e}") });
            }
            // Re-decode only on this (rare) path to learn where the shape broke.
            let path = serde_path_to_error::deserialize::<_, Batch>(&mut serde_json::Deserializer::from_slice(body))
                .err()
                .map(|pe| pe.path().to_string())
                .filter(|p| p != ".")
                .unwrap_or_default();
            let subject = if path.is_empty() { "body has" } else { "has" };
            return Err(Error::Malformed { field: path, reason: format!("{subject} the wrong shape: {e}") });
        }
    };
    batch.complete()?;
    Ok(batch)
}

impl Batch {
    /// Checks everything the type system does not: version, required strings,
    /// event count and each event.
    pub fn validate(&self) -> Result<(), Error> {
        self.clone().complete()
    }

    /// [`Batch::validate`], filling in the contract's defaults on the way
    /// (a `shoutout.clicked` without `action` gets `"cta"`), so that what is
    /// stored and matched against webhooks is what the contract says it means.
    pub fn complete(&mut self) -> Result<(), Error> {
        if self.v != VERSION {
            return Err(Error::UnsupportedVersion(self.v));
        }
        events::check_id_text("writeKey", &self.write_key)?;
        events::check_id_text("batchId", &self.batch_id)?;
        check_timestamp("sentAt", &self.sent_at)?;
        if self.attempt == 0 {
            return Err(Error::invalid("attempt", "must be at least 1"));
        }
        if self.events.is_empty() {
            return Err(Error::invalid("events", "must hold at least one event"));
        }
        if self.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(Error::invalid(
                "events",
                format!("must hold at most {MAX_EVENTS_PER_BATCH} events, got {}", self.events.len()),
            ));
        }
        for (i, event) in self.events.iter_mut().enumerate() {
            event.complete().map_err(|e| e.within(&format!("events[{i}]")))?;
        }
        Ok(())
    }
}

impl Event {
    /// Checks one event: ids, name, timestamp, the built-in event's properties
    /// and the 32 KB size limit.
    pub fn validate(&self) -> Result<(), Error> {
        self.clone().complete()
    }

    /// [`Event::validate`], filling in the built-in event's defaults.
    pub fn complete(&mut self) -> Result<(), Error> {
        events::check_id_text("id", &self.id)?;
        events::check_name("event", &self.event)?;
        check_timestamp("timestamp", &self.timestamp)?;
        if self.anonymous_id.is_none() && self.user_id.is_none() {
            return Err(Error::invalid("anonymousId", "is required when there is no userId"));
        }
        for (field, id) in
            [("anonymousId", &self.anonymous_id), ("userId", &self.user_id), ("sessionId", &self.session_id)]
        {
            if let Some(id) = id {
                events::check_id_text(field, id)?;
            }
        }
        // Only the built-in events have property rules.
        if events::BUILT_IN.contains(&self.event.as_str()) {
            let default = events::check_properties(&self.event, &Json::from(&self.properties))
                .map_err(|e| e.within("properties"))?;
            if let Some((key, value)) = default {
                self.properties.insert(key.into(), value.into());
            }
        }
        let size = events::json_size(self);
        if size > MAX_EVENT_BYTES {
            return Err(Error::TooLarge { field: String::new(), size, limit: MAX_EVENT_BYTES });
        }
        Ok(())
    }
}

fn check_timestamp(field: &str, value: &str) -> Result<(), Error> {
    match crate::time::parse_millis(value) {
        Some(_) => Ok(()),
        None => Err(Error::invalid(field, format!("must be an RFC 3339 timestamp, got {value:?}"))),
    }
}
