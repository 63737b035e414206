//! `init()` options, resolved once into a fully filled [`Config`].
//!
//! Every default lives here, next to the field it fills. Unknown option
//! names are errors: a misspelt `writekey` should fail loudly at start-up,
//! not silently send nothing.

use crate::error::Error;
use crate::events::MAX_EVENT_BYTES;
use crate::json::Json;
use crate::retry::RetryPolicy;

/// Room for the batch envelope (`v`, `writeKey`, `batchId`, `sentAt`, `sdk`).
pub const ENVELOPE_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where batches are POSTed: any http(s) URL.
    pub endpoint: String,
    /// Identifies the source to the relay (`pk_…`).
    pub write_key: String,
    /// Send when this many events are queued (`flushAt`, default 20).
    pub flush_at: usize,
    /// Send this long after the first queued event (`flushInterval`, ms, default 5 s).
    pub flush_interval_ms: u64,
    /// Largest request body (`maxBatchBytes`, default 48 KB, under the 64 KB
    /// keepalive limit of browsers).
    pub max_batch_bytes: usize,
    /// Most events kept waiting; beyond it the oldest are dropped and counted
    /// (`maxQueueEvents`, default 1,000).
    pub max_queue_events: usize,
    /// Most bytes of event JSON kept waiting, in memory and in storage; beyond
    /// it the oldest are dropped and counted (`maxQueueBytes`, default 2 MB).
    pub max_queue_bytes: usize,
    /// A session ends after this long without events (`sessionTimeout`, ms, default 30 min).
    pub session_timeout_ms: u64,
    /// Capture `data-cuecast-*` elements automatically (`autoCapture`, default true).
    pub auto_capture: bool,
    /// Log what is queued, sent, retried and dropped to the console (`debug`, default false).
    pub debug: bool,
    /// `retry: {minDelay, maxDelay, jitter, maxRetryAfter, maxAge}` (ms).
    pub retry: RetryPolicy,
}

impl Config {
    /// Builds a config from the JSON form of the options object.
    ///
    /// ```
    /// let opts = cuecast::json::Json::parse(r#"{"endpoint": "ftp://relay", "writeKey": "pk"}"#).unwrap();
    /// let err = cuecast::config::Config::from_options(&opts).unwrap_err();
    /// assert_eq!(err.to_string(), "endpoint must be an http:// or https:// URL, got \"ftp://relay\"");
    /// ```
    pub fn from_options(opts: &Json) -> Result<Config, Error> {
        if !matches!(opts, Json::Object(_)) {
            return Err(Error::invalid(
                "options",
                format!("must be an object {{endpoint, writeKey}}, got {}", opts.describe()),
            ));
        }
        unknown(
            opts,
            "endpoint, writeKey, flushAt, flushInterval, maxBatchBytes, maxQueueEvents, maxQueueBytes, \
             sessionTimeout, autoCapture, debug, retry",
        )?;
        let endpoint = required_string(opts, "endpoint")?;
        check_endpoint(&endpoint)?;
        let write_key = required_string(opts, "writeKey")?;
        // The relay's rule for ids, checked here so a bad key fails at init, not at every send.
        crate::events::check_id_text("writeKey", &write_key)?;
        let retry = match opts.get("retry") {
            None | Some(Json::Null) => RetryPolicy::default(),
            Some(r @ Json::Object(_)) => retry_policy(r).map_err(|e| e.within("retry"))?,
            Some(v) => return Err(Error::invalid("retry", format!("must be an object, got {}", v.describe()))),
        };
        Ok(Config {
            endpoint,
            write_key,
            flush_at: number(opts, "flushAt", 1, 1000)?.unwrap_or(20) as usize,
            flush_interval_ms: number(opts, "flushInterval", 0, 3_600_000)?.unwrap_or(5_000),
            max_batch_bytes: number(opts, "maxBatchBytes", (MAX_EVENT_BYTES + ENVELOPE_BYTES) as u64, 512 * 1024)?
                .unwrap_or(48 * 1024) as usize,
            max_queue_events: number(opts, "maxQueueEvents", 1, 100_000)?.unwrap_or(1000) as usize,
            // At least one largest event. Above ~4 MB only IndexedDB holds it all
            // (localStorage, the fallback and the page-hide copy, holds 5 MB per origin).
            max_queue_bytes: number(opts, "maxQueueBytes", MAX_EVENT_BYTES as u64, 64 * 1024 * 1024)?
                .unwrap_or(2 * 1024 * 1024) as usize,
            session_timeout_ms: number(opts, "sessionTimeout", 1000, 7 * 86_400_000)?.unwrap_or(30 * 60_000),
            auto_capture: boolean(opts, "autoCapture")?.unwrap_or(true),
            debug: boolean(opts, "debug")?.unwrap_or(false),
            retry,
        })
    }
}

/// An option name not in `known` (a list as the error message shows it) is
/// an error: a misspelt option is never ignored.
fn unknown(opts: &Json, known: &str) -> Result<(), Error> {
    let Json::Object(members) = opts else { return Ok(()) };
    match members.iter().find(|(k, _)| !known.split(',').any(|name| name.trim_start() == k)) {
        Some((name, _)) => Err(Error::invalid(name.as_str(), format!("is not an option (known: {known})"))),
        None => Ok(()),
    }
}

fn retry_policy(r: &Json) -> Result<RetryPolicy, Error> {
    unknown(r, "minDelay, maxDelay, jitter, maxRetryAfter, maxAge")?;
    let defaults = RetryPolicy::default();
    let policy = RetryPolicy {
        // At least 100 ms: retrying faster only hammers a relay that is struggling.
        min_delay_ms: number(r, "minDelay", 100, 3_600_000)?.unwrap_or(defaults.min_delay_ms),
        max_delay_ms: number(r, "maxDelay", 100, 86_400_000)?.unwrap_or(defaults.max_delay_ms),
        jitter: match r.get("jitter") {
            None => defaults.jitter,
            Some(v) => match v.as_f64() {
                Some(j) if (0.0..=1.0).contains(&j) => j,
                _ => {
                    return Err(Error::invalid("jitter", format!("must be a number from 0 to 1, got {}", v.describe())))
                }
            },
        },
        max_retry_after_ms: number(r, "maxRetryAfter", 0, 86_400_000)?.unwrap_or(defaults.max_retry_after_ms),
        max_age_ms: number(r, "maxAge", 0, 30 * 86_400_000)?.unwrap_or(defaults.max_age_ms),
    };
    if policy.min_delay_ms > policy.max_delay_ms {
        return Err(Error::invalid("minDelay", "must not exceed retry.maxDelay"));
    }
    Ok(policy)
}

/// Checks that an (already absolute) endpoint is an http(s) URL with a host.
pub fn check_endpoint(endpoint: &str) -> Result<(), Error> {
    let lower = endpoint.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !h.starts_with(':') && !endpoint.contains(char::is_whitespace) => Ok(()),
        _ => Err(Error::invalid(
            "endpoint",
            format!("must be an http:// or https:// URL, got {}", Json::from(endpoint).describe()),
        )),
    }
}

fn required_string(opts: &Json, field: &str) -> Result<String, Error> {
    match opts.get(field) {
        Some(Json::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        None | Some(Json::Null) => Err(Error::invalid(field, "is required")),
        Some(v) => Err(Error::invalid(field, format!("must be a non-empty string, got {}", v.describe()))),
    }
}

fn number(opts: &Json, field: &str, min: u64, max: u64) -> Result<Option<u64>, Error> {
    match opts.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Error::invalid(field, format!("must be an integer from {min} to {max}, got {}", v.describe()))),
        },
    }
}

fn boolean(opts: &Json, field: &str) -> Result<Option<bool>, Error> {
    match opts.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::invalid(field, format!("must be true or false, got {}", v.describe()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn options(v: Value) -> Result<Config, Error> {
        Config::from_options(&Json::from(&v))
    }

    fn err(v: Value) -> String {
        options(v).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_everything() {
        let c = options(json!({"endpoint": "https://relay.example.com/v1/batch", "writeKey": "pk_live_x"})).unwrap();
        assert_eq!((c.flush_at, c.flush_interval_ms, c.max_batch_bytes), (20, 5000, 48 * 1024));
        assert_eq!((c.max_queue_events, c.max_queue_bytes, c.session_timeout_ms), (1000, 2 << 20, 1_800_000));
        assert!(c.auto_capture && !c.debug);
        assert_eq!(c.retry, RetryPolicy::default());
    }

    #[test]
    fn options_override_defaults() {
        let c = options(json!({
            "endpoint": "http://127.0.0.1:9/b", "writeKey": "k", "flushAt": 1, "flushInterval": 0,
            "autoCapture": false, "debug": true, "retry": {"minDelay": 100, "maxDelay": 200, "jitter": 0}
        }))
        .unwrap();
        assert_eq!((c.flush_at, c.flush_interval_ms, c.auto_capture, c.debug), (1, 0, false, true));
        assert_eq!((c.retry.min_delay_ms, c.retry.max_delay_ms, c.retry.jitter), (100, 200, 0.0));
    }

    #[test]
    fn bad_options_name_the_field() {
        assert_eq!(err(json!({"writeKey": "k"})), "endpoint is required");
        assert_eq!(err(json!({"endpoint": "https://r.example"})), "writeKey is required");
        assert_eq!(
            err(json!({"endpoint": "https://r.example", "writeKey": ""})),
            "writeKey must be a non-empty string, got \"\""
        );
        assert_eq!(err(json!({"endpoint": 5, "writeKey": "k"})), "endpoint must be a non-empty string, got 5");
        for bad in ["javascript:alert(1)", "https://", "http:///path", "https://exa mple.com", "wss://relay"] {
            assert!(
                err(json!({"endpoint": bad, "writeKey": "k"}))
                    .starts_with("endpoint must be an http:// or https:// URL"),
                "{bad}"
            );
        }
        assert!(err(json!({"endpoint": "https://r.example", "writekey": "k"})).starts_with("writekey is not an option"));
        assert_eq!(
            err(json!({"endpoint": "https://r.example", "writeKey": "k", "flushAt": 0})),
            "flushAt must be an integer from 1 to 1000, got 0"
        );
        assert_eq!(
            err(json!({"endpoint": "https://r.example", "writeKey": "k", "retry": {"minDelay": 0}})),
            "retry.minDelay must be an integer from 100 to 3600000, got 0"
        );
        assert_eq!(
            err(json!({"endpoint": "https://r.example", "writeKey": "k".repeat(201)})),
            "writeKey must be at most 200 characters, got 201"
        );
        assert_eq!(
            err(json!({"endpoint": "https://r.example", "writeKey": "k", "retry": {"jitter": 2}})),
            "retry.jitter must be a number from 0 to 1, got 2"
        );
        assert_eq!(
            err(json!("https://r.example")),
            "options must be an object {endpoint, writeKey}, got \"https://r.example\""
        );
        assert!(err(json!({"endpoint": "https://r.example", "writeKey": "k", "maxBatchBytes": 1000}))
            .starts_with("maxBatchBytes must be"));
    }
}
