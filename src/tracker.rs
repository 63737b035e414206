//! The SDK's core: who the user is, which session this is, and how a call
//! such as `track()` becomes a queued [`Event`].
//!
//! Pure: the clock and randomness come from an [`Env`], page context is
//! passed in, and nothing here touches the browser. The browser layer wraps
//! one [`Tracker`] and adds IO.

use crate::config::Config;
use crate::error::Error;
use crate::events::{self, MAX_EVENT_BYTES};
use crate::json::{quote, Json, ObjectWriter};
use crate::outbox::{Outbox, Push};
use crate::time::format_millis;
use crate::wire::{Context, NewEvent};

/// The clock and the random source.
pub trait Env {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
    /// Fills `buf` with cryptographically strong random bytes.
    fn fill_random(&mut self, buf: &mut [u8]);

    /// A UUIDv7: time-ordered, so ids sort roughly by creation.
    fn uuid_v7(&mut self) -> String {
        let mut random = [0u8; 10];
        self.fill_random(&mut random);
        uuid_v7(self.now_ms(), random)
    }

    /// A uniform random number in `[0, 1)`, for retry jitter.
    fn unit(&mut self) -> f64 {
        let mut b = [0u8; 4];
        self.fill_random(&mut b);
        f64::from(u32::from_le_bytes(b)) / 4_294_967_296.0
    }
}

/// Who is using the page, kept across page loads by the browser layer.
/// `v1` in its storage key; fields only ever get added, as optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub anonymous_id: String,
    pub user_id: Option<String>,
    /// An object.
    pub traits: Json,
    pub session: Option<Session>,
    pub opted_out: bool,
    /// When the user (anonymous id, user id, traits) last changed, and when
    /// the consent did (Unix ms). Tabs merge their copies field by field, the
    /// later change winning: localStorage between tabs is only eventually
    /// consistent, so a tab can read, and write back, a stale copy.
    pub user_at: i64,
    pub consent_at: i64,
}

impl Identity {
    /// Reads a stored identity; `None` when there is none usable (absent,
    /// corrupt, edited by hand), which starts a fresh one.
    pub fn from_json(v: &Json) -> Option<Identity> {
        // Only ids the relay would accept: a corrupt one would fail every batch.
        let id = |v: Option<&Json>| events::check_id("", v).ok().and_then(|()| Some(v?.as_str()?.to_string()));
        let anonymous_id = id(v.get("anonymousId"))?;
        let user_id = match v.get("userId") {
            None | Some(Json::Null) => None,
            some => Some(id(some)?),
        };
        let session = v
            .get("session")
            .and_then(|s| Some(Session { id: id(s.get("id"))?, last_seen: s.get("lastSeen")?.as_i64()? }));
        Some(Identity {
            anonymous_id,
            user_id,
            traits: v.get("traits").filter(|t| matches!(t, Json::Object(_))).cloned().unwrap_or_else(Json::object),
            session,
            opted_out: v.get("optedOut").and_then(Json::as_bool).unwrap_or(false),
            user_at: v.get("userAt").and_then(Json::as_i64).unwrap_or(0),
            consent_at: v.get("consentAt").and_then(Json::as_i64).unwrap_or(0),
        })
    }

    /// The stored form, which [`Identity::from_json`] reads.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let mut w = ObjectWriter::new(&mut out);
        w.str("anonymousId", &self.anonymous_id);
        match &self.user_id {
            Some(user_id) => quote(user_id, w.key("userId")),
            None => w.key("userId").push_str("null"),
        }
        self.traits.write(w.key("traits"));
        match &self.session {
            Some(s) => {
                let mut session = ObjectWriter::new(w.key("session"));
                session.str("id", &s.id).int("lastSeen", s.last_seen);
                session.end();
            }
            None => w.key("session").push_str("null"),
        }
        w.bool("optedOut", self.opted_out).int("userAt", self.user_at).int("consentAt", self.consent_at);
        w.end();
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub last_seen: i64,
}

/// What became of a tracking call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// `dropped`: older events dropped to make room (the outbox was full).
    Queued { id: String, push: Push, dropped: usize },
    /// The user opted out; the event was not created.
    OptedOut,
}

pub struct Tracker {
    pub config: Config,
    pub outbox: Outbox,
    identity: Identity,
    /// The identity changed in a way worth persisting.
    dirty: bool,
    persisted_last_seen: i64,
}

/// How stale the stored session time may get before it is written again:
/// one write a minute at most, not one per event.
const SESSION_PERSIST_MS: i64 = 60_000;

impl Tracker {
    /// Starts from the stored identity, or a new anonymous one.
    pub fn new(config: Config, stored: Option<Identity>, env: &mut dyn Env) -> Tracker {
        let dirty = stored.is_none();
        let identity = stored.unwrap_or_else(|| Identity {
            anonymous_id: new_anonymous_id(env),
            user_id: None,
            traits: Json::object(),
            session: None,
            opted_out: false,
            user_at: 0,
            consent_at: 0,
        });
        let outbox = Outbox::new((&config).into(), config.write_key.clone());
        let persisted_last_seen = identity.session.as_ref().map_or(0, |s| s.last_seen);
        Tracker { config, outbox, identity, dirty, persisted_last_seen }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether the identity should be written to storage now.
    pub fn needs_write(&self) -> bool {
        let last_seen = self.identity.session.as_ref().map_or(0, |s| s.last_seen);
        self.dirty || last_seen - self.persisted_last_seen >= SESSION_PERSIST_MS
    }

    /// Merges a copy stored by another tab into ours, field by field: the
    /// later change wins. Returns true when ours holds a later change than
    /// the stored copy (which must then be written back, so that a tab that
    /// overwrote it with a stale copy does not have the last word).
    fn merge(&mut self, stored: Identity) -> bool {
        let mine = &mut self.identity;
        if stored.consent_at > mine.consent_at {
            if stored.opted_out && !mine.opted_out {
                self.outbox.stop();
            } else if !stored.opted_out && mine.opted_out {
                self.outbox.resume();
            }
            mine.opted_out = stored.opted_out;
            mine.consent_at = stored.consent_at;
        }
        if stored.user_at > mine.user_at {
            mine.anonymous_id = stored.anonymous_id;
            mine.user_id = stored.user_id;
            mine.traits = stored.traits;
            mine.user_at = stored.user_at;
            // Their session belongs to their user; it is what storage holds.
            self.persisted_last_seen = stored.session.as_ref().map_or(0, |s| s.last_seen);
            mine.session = stored.session;
        }
        mine.consent_at > stored.consent_at || mine.user_at > stored.user_at
    }

    /// Before writing: takes in what another tab stored since, so a write
    /// here never undoes a later opt-out or logout made there.
    pub fn reconcile(&mut self, stored: Option<Identity>) {
        if let Some(stored) = stored {
            self.merge(stored);
        }
    }

    /// The identity if it should be written to storage now (and marks it written).
    pub fn take_dirty_identity(&mut self) -> Option<&Identity> {
        if !self.needs_write() {
            return None;
        }
        self.dirty = false;
        self.persisted_last_seen = self.identity.session.as_ref().map_or(0, |s| s.last_seen);
        Some(&self.identity)
    }

    /// `track(name, properties)`: a custom event or a built-in one by name.
    pub fn track(
        &mut self,
        name: &str,
        properties: Json,
        context: Context,
        env: &mut dyn Env,
    ) -> Result<Tracked, Error> {
        events::check_name("event", name)?;
        let mut props = properties_object(properties).map_err(|e| e.within("properties"))?;
        let default = events::check_properties(name, &props).map_err(|e| e.within("properties"))?;
        complete(&mut props, default);
        self.enqueue(name, &props, &Json::object(), context, env)
    }

    /// A typed helper (`shoutoutClicked(…)` and friends): the input object is
    /// the properties, and errors name its fields directly.
    pub fn track_built_in(
        &mut self,
        name: &str,
        mut input: Json,
        context: Context,
        env: &mut dyn Env,
    ) -> Result<Tracked, Error> {
        if !matches!(input, Json::Object(_)) {
            return Err(Error::invalid("", format!("expects an object, got {}", input.describe())));
        }
        let default = events::check_properties(name, &input)?;
        complete(&mut input, default);
        self.enqueue(name, &input, &Json::object(), context, env)
    }

    /// `identify(userId, traits)`: remembers the user and sends `user.identified`.
    pub fn identify(
        &mut self,
        user_id: Json,
        traits: Json,
        context: Context,
        env: &mut dyn Env,
    ) -> Result<Tracked, Error> {
        let user_id = match user_id {
            ref n if n.as_i64().is_some() => n.text(),
            other => {
                events::check_id("userId", Some(&other))?;
                other.as_str().unwrap_or_default().to_string()
            }
        };
        let traits = properties_object(traits).map_err(|e| e.within("traits"))?;
        if self.identity.opted_out {
            return Ok(Tracked::OptedOut);
        }
        // Applied only if the event is queued: a rejected identify changes nothing.
        let before = self.identity.clone();
        if self.identity.user_id.as_deref() != Some(&user_id) {
            // A different user: their traits are not the previous user's.
            self.identity.traits = Json::object();
        }
        self.identity.user_id = Some(user_id);
        if let Json::Object(members) = traits {
            for (key, value) in members {
                self.identity.traits.insert(&key, value);
            }
        }
        let traits = self.identity.traits.clone();
        match self.enqueue(events::USER_IDENTIFIED, &Json::object(), &traits, context, env) {
            Ok(tracked) => {
                self.dirty = true;
                self.identity.user_at = env.now_ms();
                Ok(tracked)
            }
            Err(e) => {
                self.identity = before;
                Err(match e {
                    Error::TooLarge { size, limit, .. } => Error::TooLarge { field: "traits".into(), size, limit },
                    other => other,
                })
            }
        }
    }

    /// `reset()`: forgets the user (logout): new anonymous id, new session.
    pub fn reset(&mut self, env: &mut dyn Env) {
        self.identity.anonymous_id = new_anonymous_id(env);
        self.identity.user_id = None;
        self.identity.traits = Json::object();
        self.identity.session = None;
        self.identity.user_at = env.now_ms();
        self.dirty = true;
    }

    /// Another tab of the same origin stored its identity (the `storage`
    /// event): an opt-out, opt-in, login or logout made there holds here too.
    /// When ours holds a later change, it is marked for writing back.
    pub fn adopt(&mut self, stored: Identity) {
        if self.merge(stored) {
            self.dirty = true;
        }
    }

    /// `optOut()`: stops tracking and drops what waits (counted as dropped).
    pub fn opt_out(&mut self, now: i64) -> usize {
        self.identity.opted_out = true;
        self.identity.consent_at = now;
        self.dirty = true;
        self.outbox.stop()
    }

    pub fn opt_in(&mut self, now: i64) {
        self.identity.opted_out = false;
        self.identity.consent_at = now;
        self.dirty = true;
        self.outbox.resume();
    }

    fn enqueue(
        &mut self,
        name: &str,
        properties: &Json,
        traits: &Json,
        context: Context,
        env: &mut dyn Env,
    ) -> Result<Tracked, Error> {
        if self.identity.opted_out {
            return Ok(Tracked::OptedOut);
        }
        let now = env.now_ms();
        let id = env.uuid_v7();
        let session_id = self.touch_session(now, env);
        let json = NewEvent {
            id: &id,
            event: name,
            timestamp: &format_millis(now),
            anonymous_id: &self.identity.anonymous_id,
            user_id: self.identity.user_id.as_deref(),
            session_id: &session_id,
            properties,
            context: &context,
            traits,
        }
        .to_json();
        if json.len() > MAX_EVENT_BYTES {
            return Err(Error::TooLarge { field: "properties".into(), size: json.len(), limit: MAX_EVENT_BYTES });
        }
        let (push, dropped) = self.outbox.push(id.clone(), json, now);
        Ok(Tracked::Queued { id, push, dropped })
    }

    /// The current session id, rotated after `session_timeout_ms` without events.
    fn touch_session(&mut self, now: i64, env: &mut dyn Env) -> String {
        let timeout = self.config.session_timeout_ms as i64;
        match &mut self.identity.session {
            Some(s) if now - s.last_seen <= timeout && now >= s.last_seen - timeout => {
                s.last_seen = s.last_seen.max(now)
            }
            slot => {
                *slot = Some(Session { id: env.uuid_v7(), last_seen: now });
                self.dirty = true;
            }
        }
        self.identity.session.as_ref().expect("just set").id.clone()
    }
}

fn new_anonymous_id(env: &mut dyn Env) -> String {
    let mut random = [0u8; 16];
    env.fill_random(&mut random);
    uuid_text(random, 4)
}

/// A UUIDv7 (RFC 9562): the Unix time in milliseconds (48 bits), then
/// random bits.
pub fn uuid_v7(now_ms: i64, random: [u8; 10]) -> String {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&(now_ms.max(0) as u64).to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&random);
    uuid_text(bytes, 7)
}

/// The hyphenated text of a UUID with `version` and the RFC variant set in
/// `bytes`. Written here: the uuid crate's builder and formatting cost the
/// browser bundle a kilobyte; the tests check both against it.
fn uuid_text(mut bytes: [u8; 16], version: u8) -> String {
    bytes[6] = (bytes[6] & 0x0f) | (version << 4);
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        crate::json::push_hex(*b, &mut out);
    }
    out
}

fn properties_object(v: Json) -> Result<Json, Error> {
    match v {
        Json::Object(_) => Ok(v),
        Json::Null => Ok(Json::object()),
        other => Err(Error::invalid("", format!("must be an object, got {}", other.describe()))),
    }
}

/// Fills in the default a built-in event's rules asked for.
fn complete(props: &mut Json, default: events::Default) {
    if let Some((key, value)) = default {
        props.insert(key, value.into());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{Event, Library, Page, Screen};

    /// serde_json's `json!`, as the SDK's [`Json`].
    macro_rules! json {
        ($($t:tt)+) => {
            Json::from(&serde_json::json!($($t)+))
        };
    }

    /// A frozen clock and a counting "random" source.
    pub struct FakeEnv {
        pub now: i64,
        pub seed: u8,
    }

    impl Env for FakeEnv {
        fn now_ms(&self) -> i64 {
            self.now
        }
        fn fill_random(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.seed = self.seed.wrapping_add(1);
                *b = self.seed;
            }
        }
    }

    fn tracker(env: &mut FakeEnv) -> Tracker {
        let config = Config::from_options(
            &json!({"endpoint": "https://relay.example.com/v1/batch", "writeKey": "pk_live_demo"}),
        )
        .unwrap();
        Tracker::new(config, None, env)
    }

    fn context() -> Context {
        Context {
            page: Some(Page {
                url: "https://app.example.com/".into(),
                path: "/".into(),
                referrer: String::new(),
                title: "App".into(),
            }),
            user_agent: Some("test".into()),
            locale: Some("de-DE".into()),
            timezone: Some("Europe/Berlin".into()),
            screen: Some(Screen { width: 1440, height: 900 }),
            library: Some(Library::cuecast()),
        }
    }

    fn sent_events(t: &mut Tracker, env: &mut FakeEnv) -> Vec<Event> {
        let out = t.outbox.next_send(env.now, Some(env.now), &mut || "batch".into()).expect("something queued");
        serde_json::from_str::<crate::wire::Batch>(&out.body).unwrap().events
    }

    #[test]
    fn an_event_carries_ids_time_identity_and_context() {
        let env = &mut FakeEnv { now: 1_796_397_410_001, seed: 0 };
        let mut t = tracker(env);
        t.identify(json!("user-42"), json!({"plan": "pro"}), context(), env).unwrap();
        t.track("report.exported", json!({"format": "csv"}), context(), env).unwrap();
        let events = sent_events(&mut t, env);
        assert_eq!(events.len(), 2);
        let (ident, e) = (&events[0], &events[1]);
        assert_eq!((ident.event.as_str(), ident.traits["plan"].as_str()), ("user.identified", Some("pro")));
        assert_eq!(e.event, "report.exported");
        assert_eq!(e.timestamp, "2026-12-04T15:16:50.001Z");
        assert_eq!(e.user_id.as_deref(), Some("user-42"));
        assert_eq!(e.anonymous_id, ident.anonymous_id);
        assert_eq!(e.session_id, ident.session_id);
        assert_eq!(Json::from(&e.properties), json!({"format": "csv"}));
        assert_eq!(e.context, context());
        let id = uuid::Uuid::parse_str(&e.id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_ne!(e.id, ident.id);
        for event in &events {
            event.validate().unwrap();
        }
    }

    #[test]
    fn built_in_helpers_match_the_golden_fixture_properties() {
        let env = &mut FakeEnv { now: 1_796_397_410_001, seed: 0 };
        let mut t = tracker(env);
        let golden: Event =
            serde_json::from_str(include_str!("../tests/fixtures/events/survey_submitted_nps.json")).unwrap();
        t.track_built_in(
            "survey.submitted",
            json!({"surveyId": "nps-q3", "kind": "nps", "score": 9, "comment": "Love the new reports", "needsHelp": false}),
            golden.context.clone(),
            env,
        )
        .unwrap();
        let e = sent_events(&mut t, env).remove(0);
        assert_eq!(
            (e.event.as_str(), &e.properties, &e.context),
            (golden.event.as_str(), &golden.properties, &golden.context)
        );
    }

    #[test]
    fn bad_input_queues_nothing_and_names_the_field() {
        let env = &mut FakeEnv { now: 0, seed: 0 };
        let mut t = tracker(env);
        let cases: Vec<(Result<Tracked, Error>, &str)> = vec![
            (t.track("", json!({}), context(), env), "event must be a non-empty string"),
            (t.track("ok", json!([1]), context(), env), "properties must be an object, got an array"),
            (t.track("ok", json!({"blob": "x".repeat(33_000)}), context(), env), "properties is too large"),
            (
                t.track("survey.submitted", json!({"surveyId": "s", "kind": "nps", "score": 12}), context(), env),
                "properties.score must be",
            ),
            (t.track_built_in("shoutout.clicked", json!({"action": "cta"}), context(), env), "shoutoutId is required"),
            (
                t.track_built_in("shoutout.clicked", json!("spring"), context(), env),
                "expects an object, got \"spring\"",
            ),
            (t.identify(json!(""), json!({}), context(), env), "userId must be a non-empty string"),
            (
                t.identify(json!({"id": 1}), json!({}), context(), env),
                "userId must be a non-empty string, got an object",
            ),
            (t.identify(json!("u"), json!("pro"), context(), env), "traits must be an object"),
            (t.identify(json!("bob"), json!({"blob": "x".repeat(33_000)}), context(), env), "traits is too large"),
        ];
        for (result, want) in cases {
            let msg = result.unwrap_err().to_string();
            assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
        }
        assert_eq!(t.outbox.pending(), 0);
        assert_eq!(t.identity().user_id, None, "a rejected identify changes nothing");
        assert_eq!(t.identity().traits, Json::object());
        assert!(t.take_dirty_identity().is_some_and(|i| i.user_id.is_none()));
    }

    #[test]
    fn ids_are_the_uuids_the_uuid_crate_makes() {
        let random: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
        let tail: [u8; 10] = random[..10].try_into().unwrap();
        let ms = 1_796_397_410_001;
        assert_eq!(
            uuid_v7(ms, tail),
            uuid::Builder::from_unix_timestamp_millis(ms as u64, &tail).into_uuid().to_string()
        );
        assert_eq!(uuid_text(random, 4), uuid::Builder::from_random_bytes(random).into_uuid().to_string());
        assert_eq!(uuid_v7(-5, [0xff; 10]), "00000000-0000-7fff-bfff-ffffffffffff", "time before 1970 is 0");
    }

    #[test]
    fn numeric_user_ids_become_strings() {
        let env = &mut FakeEnv { now: 0, seed: 0 };
        let mut t = tracker(env);
        t.identify(json!(42), Json::Null, context(), env).unwrap();
        assert_eq!(t.identity().user_id.as_deref(), Some("42"));
    }

    #[test]
    fn sessions_rotate_after_thirty_idle_minutes() {
        let env = &mut FakeEnv { now: 1_000_000, seed: 0 };
        let mut t = tracker(env);
        let session_at = |t: &mut Tracker, env: &mut FakeEnv, now: i64| {
            env.now = now;
            t.track("tick", Json::Null, Context::default(), env).unwrap();
            t.identity().session.clone().unwrap().id
        };
        let s1 = session_at(&mut t, env, 1_000_000);
        assert_eq!(session_at(&mut t, env, 1_000_000 + 29 * 60_000), s1);
        assert_eq!(session_at(&mut t, env, 1_000_000 + 58 * 60_000), s1, "activity extends the session");
        let s2 = session_at(&mut t, env, 1_000_000 + 88 * 60_000 + 1);
        assert_ne!(s2, s1, "30 minutes idle starts a new session");
        let s3 = session_at(&mut t, env, 0);
        assert_ne!(s3, s2, "a clock jumping back far starts a new session");
    }

    #[test]
    fn identity_survives_a_reload_and_reset_forgets_it() {
        let env = &mut FakeEnv { now: 5_000, seed: 0 };
        let mut t = tracker(env);
        t.identify(json!("user-42"), json!({"plan": "pro"}), context(), env).unwrap();
        let stored = t.take_dirty_identity().cloned().unwrap();
        assert!(t.take_dirty_identity().is_none(), "written once");
        let stored = Identity::from_json(&Json::parse(&stored.to_json()).unwrap()).expect("reads what it wrote");
        assert_eq!(stored.user_id.as_deref(), Some("user-42"));
        assert!(stored.session.is_some());
        let long = "x".repeat(201);
        for junk in [
            json!(null),
            json!({}),
            json!({"anonymousId": ""}),
            json!([1]),
            json!({"anonymousId": long}),
            json!({"anonymousId": "a", "userId": long}),
            json!({"anonymousId": "a", "userId": 5}),
        ] {
            assert_eq!(Identity::from_json(&junk), None, "{junk:?}");
        }
        let reloaded = Tracker::new(t.config.clone(), Some(stored.clone()), env);
        assert_eq!(reloaded.identity(), &stored);
        t.reset(env);
        let after = t.identity().clone();
        assert_eq!((after.user_id, after.traits, after.session), (None, Json::object(), None));
        assert_ne!(after.anonymous_id, stored.anonymous_id);
        assert!(t.take_dirty_identity().is_some());
    }

    #[test]
    fn another_tabs_opt_out_and_logout_are_adopted() {
        let env = &mut FakeEnv { now: 1_000_000, seed: 0 };
        let mut a = tracker(env);
        a.identify(json!("user-1"), Json::Null, context(), env).unwrap();
        let mut b = Tracker::new(a.config.clone(), a.take_dirty_identity().cloned(), env);
        b.track("queued-in-b", Json::Null, Context::default(), env).unwrap();
        env.now += 10;
        a.opt_out(env.now);
        b.adopt(a.take_dirty_identity().cloned().unwrap());
        assert_eq!(b.track("x", Json::Null, Context::default(), env).unwrap(), Tracked::OptedOut);
        assert_eq!(b.outbox.take_report().dropped, 1, "what b had queued is dropped too");
        assert!(b.take_dirty_identity().is_none(), "an adopted identity is not written back");
        env.now += 10;
        a.opt_in(env.now);
        a.reset(env);
        b.adopt(a.take_dirty_identity().cloned().unwrap());
        assert!(matches!(b.track("y", Json::Null, Context::default(), env).unwrap(), Tracked::Queued { .. }));
        assert_eq!(b.identity().user_id, None);
        assert_eq!(b.identity().anonymous_id, a.identity().anonymous_id);
    }

    #[test]
    fn a_tab_writing_its_session_keeps_another_tabs_opt_out_and_logout() {
        let env = &mut FakeEnv { now: 1_000_000, seed: 0 };
        let mut a = tracker(env);
        a.identify(json!("user-1"), Json::Null, context(), env).unwrap();
        let shared = a.take_dirty_identity().cloned();
        let mut b = Tracker::new(a.config.clone(), shared.clone(), env);
        // A opts out and logs out and stores it; B has not seen it yet and
        // its session time is due to be written.
        env.now += 10;
        a.opt_out(env.now);
        a.reset(env);
        let stored_by_a = a.take_dirty_identity().cloned();
        env.now += 61_000;
        b.track("x", Json::Null, Context::default(), env).unwrap();
        assert!(b.needs_write());
        b.reconcile(stored_by_a.clone());
        assert!(b.identity().opted_out, "B takes A's opt-out before writing");
        assert_eq!(b.identity().user_id, None, "and A's logout");
        assert_eq!(b.identity().anonymous_id, stored_by_a.clone().unwrap().anonymous_id);
        assert!(b.take_dirty_identity().is_none_or(|w| w.opted_out), "so nothing B writes undoes them");
        assert_eq!(b.track("y", Json::Null, Context::default(), env).unwrap(), Tracked::OptedOut);
        // A stale copy written by a third tab (it read storage before A's
        // change landed) does not undo A's opt-out: A merges it, keeps its
        // later change and writes it back.
        let mut stale = shared.unwrap();
        stale.session = None;
        a.adopt(stale);
        assert!(a.identity().opted_out);
        let rewritten = a.take_dirty_identity().cloned().expect("A writes its later change back");
        assert!(rewritten.opted_out && rewritten.user_id.is_none());
        // A change made later anywhere wins over what is stored.
        env.now += 10;
        b.opt_in(env.now);
        b.reconcile(Some(rewritten));
        assert!(!b.take_dirty_identity().unwrap().opted_out);
    }

    #[test]
    fn opt_out_drops_waiting_events_and_tracks_nothing() {
        let env = &mut FakeEnv { now: 0, seed: 0 };
        let mut t = tracker(env);
        t.track("a", Json::Null, Context::default(), env).unwrap();
        t.track("b", Json::Null, Context::default(), env).unwrap();
        assert_eq!(t.opt_out(env.now), 2);
        assert_eq!(t.track("c", Json::Null, Context::default(), env).unwrap(), Tracked::OptedOut);
        assert!(t.identity().opted_out);
        assert_eq!(t.outbox.take_report().dropped, 2);
        t.opt_in(env.now);
        assert!(matches!(t.track("d", Json::Null, Context::default(), env).unwrap(), Tracked::Queued { .. }));
    }
}
