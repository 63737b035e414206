//! The TOML configuration: parsing with line numbers, `${VAR}` expansion,
//! `CUECAST_*` overrides, and the resolved [`Config`] that the rest of the
//! relay reads. Every default and limit lives in this file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{ConfigError, Error, FieldError, Result};
use crate::policy::{Pattern, Rate, DEFAULT_SCHEDULE};
use crate::rules::Rules;
use crate::signing::Secret;

/// The resolved configuration: every optional setting filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// `listen`: the address the HTTP server binds (default `127.0.0.1:8686`).
    pub listen: SocketAddr,
    /// `storage`: where events and deliveries are kept: `sqlite://PATH`
    /// (relative to the working directory; the default is
    /// `sqlite://data/cuecast.db`) or `postgres://user@host/db`, which many
    /// relays can share.
    pub storage: Storage,
    /// Apply schema migrations at start-up (`CUECAST_MIGRATE=true|false`,
    /// or `serve --migrate`). Default: yes for the embedded file, which one
    /// relay owns; no for PostgreSQL, where `cuecast-relay migrate` upgrades
    /// the shared schema once, before the relays of the new version start.
    pub migrate_on_start: bool,
    /// `[admin] token`: bearer token for `/admin/*`; without it the admin API is off.
    pub admin_token: Option<String>,
    /// `[egress]`: the SSRF guard's exceptions.
    pub egress: Egress,
    /// `[limits]`: ingest limits and timings.
    pub limits: Limits,
    /// `[[source]]`: write keys and the browser origins each accepts.
    pub sources: Vec<Source>,
    /// `[[webhook]]`: where events go.
    pub webhooks: Vec<Webhook>,
    /// The same webhooks as written (after `${VAR}` expansion), with their
    /// secrets' text: what start-up copies into storage, where the relay
    /// reads its webhooks from (see [`crate::catalog`]).
    pub webhook_specs: Vec<(WebhookSpec, Vec<String>)>,
    /// The compiled conditions and templates of `webhooks`, in the same order.
    pub rules: std::sync::Arc<Rules>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Sqlite(PathBuf),
    /// The URL as given (`postgres://` or `postgresql://`), passed to the driver.
    Postgres(String),
}

#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Destinations inside these ranges are dialled despite the SSRF guard.
    pub allow_cidrs: Vec<IpNet>,
    /// Refuse plain-http webhook URLs.
    pub https_only: bool,
}

/// Ingest limits and timings (`[limits]`, all optional).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest batch body, before and after gzip decompression (512 KB).
    pub max_body_bytes: usize,
    /// Batches per second and write key (`key_rate`, default `2000/s`).
    pub key_rate: Rate,
    /// Batches per second and client IP (`ip_rate`, default `200/s`): a
    /// browser sends about one batch per few seconds.
    pub ip_rate: Rate,
    /// Pending deliveries above which ingest answers 503 (`backlog_high_water`, default 200,000).
    pub backlog_high_water: usize,
    /// How long shutdown waits for in-flight deliveries (`shutdown_grace`, default `10s`).
    pub shutdown_grace: Duration,
    /// How long an event id is remembered for dedupe (`dedupe_window`, default `7d`, at least 7 days).
    pub dedupe_window: Duration,
    /// How often the server looks for work queued by another process
    /// (`replay`, `enable`, a relay whose lease ran out) and re-reads which
    /// webhooks are disabled (`sweep_interval`, default `2s`).
    pub sweep_interval: Duration,
    /// PostgreSQL: how long a relay holds a delivery it took on without
    /// renewing (`lease`, default 30 s or three times the longest webhook
    /// `timeout`, whichever is longer; at least twice the longest timeout).
    /// A relay that dies is replaced after about this long.
    pub lease: Duration,
    /// How long delivered and failed events, their deliveries and attempts
    /// are kept (`retention`, default `30d`, at least `dedupe_window`).
    /// Dead letters stay until replayed.
    pub retention: Duration,
    /// How long start-up waits for the database to become reachable
    /// (`storage_wait`, default `0s`: fail at once).
    pub storage_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 512 * 1024,
            key_rate: Rate { count: 2000, per: Duration::from_secs(1) },
            ip_rate: Rate { count: 200, per: Duration::from_secs(1) },
            backlog_high_water: 200_000,
            shutdown_grace: Duration::from_secs(10),
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(2),
            lease: DEFAULT_LEASE,
            retention: Duration::from_secs(30 * 24 * 3600),
            storage_wait: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    pub write_key: String,
    /// Allowed `Origin` values; `Any` for `"*"`.
    pub origins: Origins,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Any,
    List(Vec<String>),
}

impl Origins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One `[[webhook]]`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Stable name; deliveries refer to it, so renaming orphans pending ones.
    pub id: String,
    /// `events`: exact names, `prefix.*` or `*`.
    pub events: Vec<Pattern>,
    /// `when`: a minijinja expression over the event, e.g. `properties.score <= 6`.
    pub when: Option<String>,
    /// `method`: POST (default) or GET.
    pub method: Method,
    /// `url`: a plain URL, or a minijinja template when it contains `{{`.
    pub url: String,
    /// `headers`: sent as given, after the relay's own (cannot replace `webhook-*`).
    pub headers: Vec<(String, String)>,
    /// `body`: a minijinja template producing the POST body; default
    /// `{"type","timestamp","data"}`.
    pub body: Option<String>,
    /// `secret`: one `whsec_…` or a list while rotating; none means unsigned.
    pub secrets: Vec<Secret>,
    /// `timeout`: per attempt, default 10 s.
    pub timeout: Duration,
    /// `rate_limit`: attempts per time unit, default unlimited.
    pub rate_limit: Option<Rate>,
    /// `concurrency`: attempts in flight at once, default 64.
    pub concurrency: usize,
    /// `retry`: delay before each attempt, the first usually `"0s"`; its
    /// length is the number of attempts. Default: [`DEFAULT_SCHEDULE`].
    pub retry: Vec<Duration>,
}

/// A webhook as written: the keys of a `[[webhook]]` table, or the JSON of
/// the admin API's create and update. [`WebhookSpec::resolve`] holds the
/// rules both apply, so a definition the file refuses the API refuses too,
/// with the same words. (Secrets are kept apart: they rotate on their own.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Letters, digits, `-`, `_` and `.`.
    pub id: String,
    /// Exact names, `prefix.*` or `*`.
    pub events: Vec<String>,
    /// A condition over the event, e.g. `properties.score <= 6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// `POST` (default) or `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A URL, or a template when it contains `{{`.
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The POST body template; default `{"type","timestamp","data"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Per attempt, e.g. `"10s"` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// e.g. `"10/s"`; unlimited by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Attempts in flight at once, 1 to 1024 (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    /// The delay before each attempt, e.g. `["0s", "5s", "5m"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Vec<String>>,
}

impl WebhookSpec {
    /// Checks every field and resolves the definition, or lists every
    /// problem, each naming its field (`url`, `events[1]`, `headers.X-Team`).
    /// Conditions and templates are compiled later, with all webhooks
    /// ([`Rules::new`]); ids are checked for clashes by the caller.
    pub fn resolve(&self, secrets: Vec<Secret>, egress: &Egress) -> Result<Webhook, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| errors.push(FieldError::new(field, message));
        let id = self.id.clone();
        if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            error("id", format!("{id:?} must be 1 to 128 letters, digits, '-', '_' or '.'"));
        }
        let mut events = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            match Pattern::parse(e) {
                Ok(p) => events.push(p),
                Err(m) => error(&format!("events[{i}]"), m),
            }
        }
        if self.events.is_empty() {
            error("events", "must list at least one name, \"prefix.*\" or \"*\"".into());
        }
        let method = match self.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("POST") => Method::Post,
            Some("GET") => Method::Get,
            Some(other) => {
                error("method", format!("{other:?} must be \"POST\" or \"GET\""));
                Method::Post
            }
        };
        let url = self.url.clone();
        if !url.contains("{{") {
            match url::Url::parse(&url) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    error("url", format!("{url:?} must be http or https"))
                }
                Ok(u) if egress.https_only && u.scheme() != "https" => {
                    error("url", format!("{url:?} is http, but egress.https_only is set"))
                }
                Ok(_) => {}
                Err(e) => error("url", format!("{url:?} is not a URL: {e}")),
            }
        }
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            if name.to_ascii_lowercase().starts_with("webhook-") {
                error(&field, "is set by the relay for signatures and cannot be configured".into());
            } else if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                error(&field, format!("{name:?} is not a valid header name"));
            }
            if axum::http::HeaderValue::from_str(value).is_err() {
                error(&field, "has a value that is not valid in HTTP".into());
            }
            headers.push((name.clone(), value.clone()));
        }
        if method == Method::Get && self.body.is_some() {
            error("body", "a GET has no body; put fields in a url template instead".into());
        }
        let timeout = match &self.timeout {
            Some(t) => parse_duration(t).unwrap_or_else(|m| {
                error("timeout", m);
                DEFAULT_TIMEOUT
            }),
            None => DEFAULT_TIMEOUT,
        };
        let rate_limit = self.rate_limit.as_ref().and_then(|r| Rate::parse(r).map_err(|m| error("rate_limit", m)).ok());
        let concurrency = match self.concurrency {
            Some(c) if c == 0 || c > 1024 => {
                error("concurrency", format!("{c} must be from 1 to 1024"));
                DEFAULT_CONCURRENCY
            }
            Some(c) => c as usize,
            None => DEFAULT_CONCURRENCY,
        };
        let retry = match &self.retry {
            Some(list) if list.is_empty() => {
                error("retry", "must list at least one delay (the first attempt, usually \"0s\")".into());
                DEFAULT_SCHEDULE.to_vec()
            }
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, d)| parse_duration(d).map_err(|m| error(&format!("retry[{i}]"), m)).ok())
                .collect(),
            None => DEFAULT_SCHEDULE.to_vec(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Webhook {
            id,
            events,
            when: self.when.clone(),
            method,
            url,
            headers,
            body: self.body.clone(),
            secrets,
            timeout,
            rate_limit,
            concurrency,
            retry,
        })
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8686";
pub const DEFAULT_STORAGE: &str = "sqlite://data/cuecast.db";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CONCURRENCY: usize = 64;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

// ---- raw TOML, with spans for line numbers ----
//
// Unknown keys are found by `unknown_keys` (all of them, with lines) rather
// than serde's `deny_unknown_fields`, which stops at the first. Its lists
// must name every field of these structs.

const TOP_KEYS: &[&str] = &["listen", "storage", "admin", "egress", "limits", "source", "webhook"];
const TABLE_KEYS: &[(&str, &[&str])] = &[
    ("admin", &["token"]),
    ("egress", &["allow_cidrs", "https_only"]),
    (
        "limits",
        &[
            "key_rate",
            "ip_rate",
            "backlog_high_water",
            "shutdown_grace",
            "dedupe_window",
            "sweep_interval",
            "lease",
            "retention",
            "storage_wait",
        ],
    ),
];
const ARRAY_KEYS: &[(&str, &[&str])] = &[
    ("source", &["write_key", "origins"]),
    (
        "webhook",
        &[
            "id",
            "events",
            "when",
            "method",
            "url",
            "headers",
            "body",
            "secret",
            "timeout",
            "rate_limit",
            "concurrency",
            "retry",
        ],
    ),
];

/// Reports every key the file sets that the configuration does not know.
fn unknown_keys(check: &mut Check, root: &toml::de::DeTable) {
    use toml::de::DeValue;
    let mut report = |table: &toml::de::DeTable, path: &str, known: &[&str]| {
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                check.error(
                    Some(key.span().start),
                    format!("unknown key `{path}{}` (known here: {})", key.get_ref(), known.join(", ")),
                );
            }
        }
    };
    report(root, "", TOP_KEYS);
    for (name, known) in TABLE_KEYS {
        if let Some(DeValue::Table(t)) = root.get(*name).map(|v| v.get_ref()) {
            report(t, &format!("{name}."), known);
        }
    }
    for (name, known) in ARRAY_KEYS {
        if let Some(DeValue::Array(items)) = root.get(*name).map(|v| v.get_ref()) {
            for item in items {
                if let DeValue::Table(t) = item.get_ref() {
                    report(t, &format!("{name}."), known);
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    storage: Option<Spanned<String>>,
    admin: Option<RawAdmin>,
    egress: Option<RawEgress>,
    limits: Option<RawLimits>,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
}

#[derive(Deserialize)]
struct RawAdmin {
    token: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawEgress {
    #[serde(default)]
    allow_cidrs: Vec<Spanned<String>>,
    https_only: Option<bool>,
}

#[derive(Deserialize)]
struct RawLimits {
    key_rate: Option<Spanned<String>>,
    ip_rate: Option<Spanned<String>>,
    backlog_high_water: Option<Spanned<u64>>,
    shutdown_grace: Option<Spanned<String>>,
    dedupe_window: Option<Spanned<String>>,
    sweep_interval: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    storage_wait: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawSource {
    write_key: Spanned<String>,
    #[serde(default)]
    origins: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawWebhook {
    id: Spanned<String>,
    events: Spanned<Vec<Spanned<String>>>,
    when: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    body: Option<Spanned<String>>,
    secret: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<String>>,
    rate_limit: Option<Spanned<String>>,
    concurrency: Option<Spanned<u64>>,
    retry: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Collects problems instead of stopping at the first, so `check-config`
/// can list them all.
struct Check<'a> {
    src: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Check<'_> {
    fn line(&self, offset: usize) -> usize {
        self.src[..offset.min(self.src.len())].matches('\n').count() + 1
    }

    fn error(&mut self, at: Option<usize>, message: impl Into<String>) {
        let line = at.map(|o| self.line(o));
        self.errors.push(ConfigError { line, message: message.into() });
    }

    /// `${VAR}` (or `${VAR:-default}`) replaced from the environment; `$$` is a literal `$`.
    fn expand(&mut self, value: &Spanned<String>) -> String {
        match expand_env(value.get_ref(), self.env) {
            Ok(s) => s,
            Err(e) => {
                self.error(Some(value.span().start), e);
                String::new()
            }
        }
    }

    fn parse<T>(&mut self, value: &Spanned<String>, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let text = self.expand(value);
        match f(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(Some(value.span().start), e);
                None
            }
        }
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$$` stands for `$`.
pub fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let (name, default) = match inner[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&inner[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{name}}} is not a valid environment variable name"));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// An allowed browser origin: `*`, or scheme, host and optional port, no path.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || url::Url::parse(origin).map(|u| u.origin().ascii_serialization() == origin).unwrap_or(false) {
        Ok(())
    } else {
        Err(format!(
            "{origin:?} must be \"*\" or like \"https://app.example.com\" (scheme, host, optional port, no path)"
        ))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like \"10s\" or \"5m\": {e}"))
}

impl Config {
    /// Reads and resolves a file, with the process environment for `${VAR}`
    /// and `CUECAST_*` overrides.
    pub fn load(path: &Path) -> Result<Config> {
        let src = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.display().to_string(),
            errors: vec![ConfigError { line: None, message: e.to_string() }],
        })?;
        let env = |name: &str| std::env::var(name).ok();
        Config::parse(&src, &env).map_err(|errors| Error::Config { path: path.display().to_string(), errors })
    }

    /// Parses TOML text; `env` answers `${VAR}` and `CUECAST_*` look-ups.
    pub fn parse(src: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
        let mut check = Check { src, env, errors: Vec::new() };
        if let Ok(doc) = toml::de::DeTable::parse(src) {
            unknown_keys(&mut check, doc.get_ref());
        }
        let raw: RawConfig = match toml::from_str(src) {
            Ok(raw) => raw,
            Err(e) => {
                check.error(e.span().map(|s| s.start), e.message().trim().to_string());
                return Err(check.errors);
            }
        };

        let listen_text = match (env("CUECAST_LISTEN"), &raw.listen) {
            (Some(v), _) => Some(v),
            (None, Some(l)) => Some(check.expand(l)),
            (None, None) => None,
        };
        let listen = match listen_text.as_deref().unwrap_or(DEFAULT_LISTEN).parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let at = raw.listen.as_ref().map(|l| l.span().start);
                check.error(
                    at,
                    format!("listen {:?} must be an address like \"127.0.0.1:8686\"", listen_text.unwrap_or_default()),
                );
                DEFAULT_LISTEN.parse().expect("valid default")
            }
        };

        let storage_text = match (env("CUECAST_STORAGE"), &raw.storage) {
            (Some(v), _) => v,
            (None, Some(s)) => check.expand(s),
            (None, None) => DEFAULT_STORAGE.into(),
        };
        let storage = match storage_text.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Storage::Sqlite(PathBuf::from(path)),
            _ if storage_text.starts_with("postgres://") || storage_text.starts_with("postgresql://") => {
                Storage::Postgres(storage_text.clone())
            }
            _ => {
                let at = raw.storage.as_ref().map(|s| s.span().start);
                check.error(
                    at,
                    format!("storage {storage_text:?} must be \"sqlite://PATH\" or \"postgres://user@host/database\""),
                );
                Storage::Sqlite(PathBuf::from("data/cuecast.db"))
            }
        };
        let migrate_on_start = match env("CUECAST_MIGRATE").as_deref() {
            Some("1" | "true" | "yes") => true,
            Some("0" | "false" | "no") => false,
            Some(other) => {
                check.error(None, format!("CUECAST_MIGRATE={other:?} must be true or false"));
                false
            }
            None => matches!(storage, Storage::Sqlite(_)),
        };

        let admin_token = match (env("CUECAST_ADMIN_TOKEN"), raw.admin.as_ref().and_then(|a| a.token.as_ref())) {
            (Some(v), _) => Some(v),
            (None, Some(t)) => Some(check.expand(t)),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());

        let mut egress = Egress::default();
        if let Some(raw_egress) = &raw.egress {
            for cidr in &raw_egress.allow_cidrs {
                if let Some(net) = check.parse(cidr, |s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("allow_cidrs entry {s:?} is not a CIDR like \"10.0.0.0/8\""))
                }) {
                    egress.allow_cidrs.push(net);
                }
            }
            egress.https_only = raw_egress.https_only.unwrap_or(false);
        }

        let mut limits = Limits::default();
        if let Some(l) = &raw.limits {
            if let Some(r) = &l.key_rate {
                limits.key_rate = check.parse(r, Rate::parse).unwrap_or(limits.key_rate);
            }
            if let Some(r) = &l.ip_rate {
                limits.ip_rate = check.parse(r, Rate::parse).unwrap_or(limits.ip_rate);
            }
            if let Some(n) = &l.backlog_high_water {
                limits.backlog_high_water = *n.get_ref() as usize;
            }
            if let Some(d) = &l.shutdown_grace {
                limits.shutdown_grace = check.parse(d, parse_duration).unwrap_or(limits.shutdown_grace);
            }
            if let Some(d) = &l.sweep_interval {
                limits.sweep_interval = check.parse(d, parse_duration).unwrap_or(limits.sweep_interval);
            }
            if let Some(d) = &l.storage_wait {
                limits.storage_wait = check.parse(d, parse_duration).unwrap_or(limits.storage_wait);
            }
            if let Some(d) = &l.dedupe_window {
                if let Some(window) = check.parse(d, parse_duration) {
                    if window < Duration::from_secs(7 * 24 * 3600) {
                        check.error(Some(d.span().start), "dedupe_window must be at least 7 days");
                    } else {
                        limits.dedupe_window = window;
                    }
                }
            }
        }

        let mut sources = Vec::new();
        let mut specs = Vec::new();
        let mut keys = HashSet::new();
        for s in &raw.source {
            let write_key = check.expand(&s.write_key);
            if write_key.trim().is_empty() {
                check.error(Some(s.write_key.span().start), "write_key must not be empty");
            } else if !keys.insert(write_key.clone()) {
                check.error(Some(s.write_key.span().start), format!("write_key {write_key:?} is configured twice"));
            }
            let mut list = Vec::new();
            let mut any = false;
            for o in &s.origins {
                let origin = check.expand(o);
                if origin == "*" {
                    any = true;
                } else {
                    match check_origin(&origin) {
                        Ok(()) => list.push(origin),
                        Err(m) => check.error(Some(o.span().start), format!("origin {m}")),
                    }
                }
            }
            sources.push(Source { write_key, origins: if any { Origins::Any } else { Origins::List(list) } });
        }

        let mut webhooks = Vec::new();
        let mut ids = HashSet::new();
        let mut template_spans = Vec::new();
        for w in &raw.webhook {
            // Where each field sits in the file, for the shared rules' field errors.
            let mut at: HashMap<String, usize> = HashMap::new();
            let mut field = |name: String, value: &Spanned<String>, check: &mut Check| {
                at.insert(name, value.span().start);
                check.expand(value)
            };
            let spec = WebhookSpec {
                id: field("id".into(), &w.id, &mut check),
                events: w
                    .events
                    .get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, e)| field(format!("events[{i}]"), e, &mut check))
                    .collect(),
                when: w.when.as_ref().map(|v| field("when".into(), v, &mut check)),
                method: w.method.as_ref().map(|v| field("method".into(), v, &mut check)),
                url: field("url".into(), &w.url, &mut check),
                headers: w
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), field(format!("headers.{k}"), v, &mut check)))
                    .collect(),
                body: w.body.as_ref().map(|v| field("body".into(), v, &mut check)),
                timeout: w.timeout.as_ref().map(|v| field("timeout".into(), v, &mut check)),
                rate_limit: w.rate_limit.as_ref().map(|v| field("rate_limit".into(), v, &mut check)),
                concurrency: w.concurrency.as_ref().map(|c| *c.get_ref()),
                retry: w.retry.as_ref().map(|list| {
                    list.get_ref()
                        .iter()
                        .enumerate()
                        .map(|(i, d)| field(format!("retry[{i}]"), d, &mut check))
                        .collect()
                }),
            };
            at.insert("events".into(), w.events.span().start);
            if let Some(c) = &w.concurrency {
                at.insert("concurrency".into(), c.span().start);
            }
            if let Some(list) = &w.retry {
                at.insert("retry".into(), list.span().start);
            }
            if !spec.id.is_empty() && !ids.insert(spec.id.clone()) {
                check.error(Some(w.id.span().start), format!("webhook id {:?} is used twice", spec.id));
            }
            let mut secrets = Vec::new();
            if let Some(secret) = &w.secret {
                let at = Some(secret.span().start);
                let texts: Vec<String> = match secret.get_ref() {
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(items) if !items.is_empty() && items.iter().all(|i| i.is_str()) => {
                        items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
                    }
                    _ => {
                        check.error(at, "secret must be \"whsec_…\" or a list of them (while rotating)");
                        vec![]
                    }
                };
                for t in texts {
                    match expand_env(&t, env).and_then(|t| Secret::parse(&t).map(|s| (s, t))) {
                        Ok(pair) => secrets.push(pair),
                        Err(e) => check.error(at, e),
                    }
                }
            }
            match spec.resolve(secrets.iter().map(|(s, _)| s.clone()).collect(), &egress) {
                Ok(hook) => {
                    template_spans.push((
                        w.when.as_ref().map(|s| s.span().start),
                        w.url.span().start,
                        w.body.as_ref().map(|s| s.span().start),
                    ));
                    webhooks.push(hook);
                    specs.push((spec, secrets.into_iter().map(|(_, text)| text).collect()));
                }
                Err(problems) => {
                    for p in problems {
                        let base = p.field.split(['[', '.']).next().unwrap_or_default();
                        let offset = at.get(&p.field).or_else(|| at.get(base)).copied().unwrap_or(w.id.span().start);
                        check.error(Some(offset), format!("webhook {:?}: {} {}", spec.id, p.field, p.message));
                    }
                }
            }
        }

        // Leases and retention depend on other settings: resolved last.
        let longest_timeout = webhooks.iter().map(|w| w.timeout).max().unwrap_or(DEFAULT_TIMEOUT);
        limits.lease = DEFAULT_LEASE.max(longest_timeout * 3);
        if let Some(d) = raw.limits.as_ref().and_then(|l| l.lease.as_ref()) {
            if let Some(lease) = check.parse(d, parse_duration) {
                // An attempt starts only while the lease has a timeout's worth
                // left, and renewals come every quarter lease.
                if lease < longest_timeout * 2 {
                    check.error(
                        Some(d.span().start),
                        format!("lease must be at least twice the longest webhook timeout ({longest_timeout:?})"),
                    );
                } else {
                    limits.lease = lease;
                }
            }
        }
        if let Some(d) = raw.limits.as_ref().and_then(|l| l.retention.as_ref()) {
            if let Some(retention) = check.parse(d, parse_duration) {
                limits.retention = retention;
            }
        }
        if limits.retention < limits.dedupe_window {
            let at = raw.limits.as_ref().and_then(|l| l.retention.as_ref()).map(|d| d.span().start);
            check.error(
                at,
                "retention must be at least the dedupe_window (an event id is remembered while its event is kept)",
            );
        }

        let rules = match Rules::new(&webhooks) {
            Ok(rules) => rules,
            Err(problems) => {
                for p in problems {
                    let (when_at, url_at, body_at) = template_spans[p.webhook];
                    let at = match p.field {
                        "when" => when_at,
                        "url" => Some(url_at),
                        _ => body_at,
                    };
                    let base = at.map(|o| check.line(o)).unwrap_or(1);
                    // A '''…''' string starting with a newline begins on the next line.
                    let starts_next =
                        at.map(|o| src[o..].starts_with("'''\n") || src[o..].starts_with("\"\"\"\n")).unwrap_or(false);
                    let line = base + p.line.unwrap_or(1) - 1 + usize::from(starts_next && p.line.is_some());
                    check.errors.push(ConfigError {
                        line: Some(line),
                        message: format!("webhook {:?}: {} {}", webhooks[p.webhook].id, p.field, p.message),
                    });
                }
                Rules::new(&[]).expect("no templates, no errors")
            }
        };

        if check.errors.is_empty() {
            Ok(Config {
                listen,
                storage,
                migrate_on_start,
                admin_token,
                egress,
                limits,
                sources,
                webhooks,
                webhook_specs: specs,
                rules: std::sync::Arc::new(rules),
            })
        } else {
            check.errors.sort_by_key(|e| e.line);
            Err(check.errors)
        }
    }

    pub fn source(&self, write_key: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.write_key == write_key)
    }

    pub fn webhook(&self, id: &str) -> Option<(usize, &Webhook)> {
        self.webhooks.iter().enumerate().find(|(_, w)| w.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_issue_example_parses() {
        let src = r#"
listen  = "127.0.0.1:8686"
storage = "sqlite://data/cuecast.db"
[admin]
token = "${CUECAST_ADMIN_TOKEN}"
[egress]
allow_cidrs = []
https_only  = false
[[source]]
write_key = "pk_live_demo"
origins   = ["https://app.example.com"]
[[webhook]]
id      = "slack-nps-detractors"
events  = ["survey.submitted"]
when    = "properties.kind == 'nps' and properties.score <= 6"
method  = "POST"
url     = "https://hooks.slack.com/services/T000/B000/XXXX"
headers = { Authorization = "Bearer ${SLACK_TOKEN}" }
body    = '''{"text": "NPS {{ properties.score }} from {{ userId or anonymousId }}: {{ properties.comment }}"}'''
secret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
timeout = "10s"
rate_limit = "20/s"
"#;
        let env = |n: &str| match n {
            "CUECAST_ADMIN_TOKEN" => Some("adm".to_string()),
            "SLACK_TOKEN" => Some("xoxb".to_string()),
            _ => None,
        };
        let c = Config::parse(src, &env).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("adm"));
        assert_eq!(c.webhooks[0].headers, [("Authorization".to_string(), "Bearer xoxb".to_string())]);
        assert_eq!(c.webhooks[0].rate_limit, Some(Rate { count: 20, per: Duration::from_secs(1) }));
        assert_eq!(c.webhooks[0].retry, DEFAULT_SCHEDULE.to_vec());
        assert_eq!(c.sources[0].origins, Origins::List(vec!["https://app.example.com".into()]));
        // CUECAST_* overrides win over the file.
        let env2 = |n: &str| match n {
            "CUECAST_LISTEN" => Some("0.0.0.0:9000".to_string()),
            "CUECAST_STORAGE" => Some("sqlite:///tmp/x.db".to_string()),
            other => env(other),
        };
        let c = Config::parse(src, &env2).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.storage, Storage::Sqlite("/tmp/x.db".into()));
    }

    #[test]
    fn postgres_storage_leases_and_retention() {
        let env = |n: &str| (n == "CUECAST_STORAGE").then(|| "postgres://relay@db.internal/cuecast".to_string());
        let c = Config::parse(
            "[[webhook]]\nid = \"a\"\nevents = [\"*\"]\nurl = \"https://x.example\"\ntimeout = \"20s\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.storage, Storage::Postgres("postgres://relay@db.internal/cuecast".into()));
        assert!(!c.migrate_on_start, "a shared schema is migrated on purpose, not by whichever relay starts first");
        assert_eq!(c.limits.lease, Duration::from_secs(60), "three times the longest timeout");
        assert_eq!(c.limits.retention, Duration::from_secs(30 * 24 * 3600));
        let errors = Config::parse(
            "[limits]\nlease = \"5s\"\nretention = \"1d\"\n[[webhook]]\nid = \"a\"\nevents = [\"*\"]\nurl = \"https://x.example\"\n",
            &env,
        )
        .unwrap_err();
        let text = format!("{errors:?}");
        assert!(text.contains("lease must be at least twice") && text.contains("retention must be at least"), "{text}");
        assert!(Config::parse("", &no_env).unwrap().migrate_on_start, "the embedded file migrates itself");
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let src = r#"listen = "nowhere"
storage = "mysql://db"
[[source]]
write_key = "${MISSING_KEY}"
origins = ["https://a.example.com/path"]
[[webhook]]
id = "a"
events = ["survey*"]
method = "PUT"
url = "ftp://x"
timeout = "soon"
rate_limit = "fast"
headers = { webhook-signature = "x" }
[[webhook]]
id = "a"
events = ["*"]
when = "properties.score <"
url = "https://example.com"
body = '''
{"a": {{ properties.x | }}}
'''
"#;
        let errors = Config::parse(src, &no_env).unwrap_err();
        let lines: Vec<usize> = errors.iter().filter_map(|e| e.line).collect();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for expected in [1, 2, 4, 5, 8, 9, 10, 11, 12, 13, 15, 17, 20] {
            assert!(lines.contains(&expected), "no error on line {expected}: {text:#?}");
        }
        assert!(text.iter().any(|t| t.contains("MISSING_KEY is not set")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("line 20: webhook \"a\": body syntax error")), "{text:#?}");
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line_alongside_other_problems() {
        let src = "listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n[limits]\nkey_rat = \"5/s\"\n[[source]]\nwrite_key = \"pk\"\norigin = [\"*\"]\n[[webhook]]\nid = \"a\"\nevents = [\"*\"]\nurl = \"ftp://x\"\ntimeout_s = 3\n";
        let errors = Config::parse(src, &no_env).unwrap_err();
        let lines: Vec<Option<usize>> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(2), Some(4), Some(7), Some(11), Some(12)], "{errors:#?}");
        assert!(errors[0].message.starts_with("unknown key `listen_addr`"), "{errors:#?}");
        assert!(errors[1].message.starts_with("unknown key `limits.key_rat`"), "{errors:#?}");
        assert!(errors[3].message.contains("ftp"), "the other problems are reported too: {errors:#?}");
    }

    #[test]
    fn syntax_and_unknown_fields_have_lines() {
        let errors =
            Config::parse("listen = \"127.0.0.1:1\"\n[[webhook]]\nid = \"x\"\nevent = [\"*\"]\n", &no_env).unwrap_err();
        assert_eq!(errors[0].line, Some(4), "{errors:?}");
        let errors = Config::parse("listen = \n", &no_env).unwrap_err();
        assert_eq!(errors[0].line, Some(1), "{errors:?}");
    }

    #[test]
    fn env_expansion() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand_env("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_env("$$A $5", &env).unwrap(), "$A $5");
        assert!(expand_env("${B}", &env).unwrap_err().contains("B is not set"));
        assert!(expand_env("${A", &env).is_err());
    }
}
