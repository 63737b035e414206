//! The webhooks and sources in force: what the file defines and what the
//! admin API has added or changed, kept in storage so every relay sharing
//! the database sees the same set.
//!
//! - Start-up copies the file into storage ([`plan_sync`]): the file decides
//!   its webhooks and sources until one is changed through the admin API
//!   (`edited`); from then on storage decides, and `check-config` says what
//!   differs ([`differences`]). Definitions the file dropped are removed,
//!   unless edited.
//! - A [`Catalog`] is one immutable snapshot, resolved and compiled; ingest
//!   and delivery read the current one from the [`Registry`] without locks
//!   held across awaits.
//! - Every change bumps a version in storage; each relay polls it every
//!   `sweep_interval` and reloads when it moves ([`Registry::refresh`]), so
//!   a webhook created on one relay works on all within seconds.
//!
//! [`Catalog::build`], [`plan_sync`] and [`differences`] are pure; the
//! [`Registry`] is the IO around them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Egress, Origins, Source, Webhook, WebhookSpec};
use crate::error::{FieldError, Result};
use crate::rules::Rules;
use crate::signing::Secret;
use crate::storage::{now_ms, Storage};

/// Where a definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The configuration file.
    Config,
    /// The admin API.
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Origin {
        if s == "config" {
            Origin::Config
        } else {
            Origin::Api
        }
    }
}

/// A signing secret and, once rotated out, when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A webhook as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    pub spec: WebhookSpec,
    pub secrets: Vec<StoredSecret>,
    pub origin: Origin,
    /// A file webhook changed through the admin API: the file no longer decides it.
    pub edited: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A source (write key) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredSource {
    pub write_key: String,
    /// Allowed `Origin` values, or `["*"]`.
    pub origins: Vec<String>,
    pub origin: Origin,
    pub edited: bool,
    /// Revoked keys are kept (so the key is not handed out again) but refused.
    pub revoked_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A change to the stored catalog; each bumps the version.
#[derive(Debug, Clone)]
pub enum Change {
    /// Fails (returns false) if the id exists.
    CreateWebhook(StoredWebhook),
    /// Fails if the id does not exist.
    UpdateWebhook(StoredWebhook),
    /// Also dead-letters the webhook's pending deliveries.
    DeleteWebhook(String),
    CreateSource(StoredSource),
    UpdateSource(StoredSource),
    /// Start-up: insert or replace these, delete those.
    Sync(SyncPlan),
}

/// What start-up writes so that storage matches the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    pub put_webhooks: Vec<StoredWebhook>,
    pub delete_webhooks: Vec<String>,
    pub put_sources: Vec<StoredSource>,
    pub delete_sources: Vec<String>,
    /// What an operator should know (file definitions overridden through the API).
    pub notes: Vec<String>,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        self.put_webhooks.is_empty()
            && self.delete_webhooks.is_empty()
            && self.put_sources.is_empty()
            && self.delete_sources.is_empty()
    }
}

/// The file's webhooks and sources as they would be stored.
pub fn from_file(config: &Config, now: i64) -> (Vec<StoredWebhook>, Vec<StoredSource>) {
    let webhooks = config
        .webhook_specs
        .iter()
        .map(|(spec, secrets)| StoredWebhook {
            spec: spec.clone(),
            secrets: secrets.iter().map(|s| StoredSecret { secret: s.clone(), expires_at: None }).collect(),
            origin: Origin::Config,
            edited: false,
            created_at: now,
            updated_at: now,
        })
        .collect();
    let sources = config
        .sources
        .iter()
        .map(|s| StoredSource {
            write_key: s.write_key.clone(),
            origins: match &s.origins {
                Origins::Any => vec!["*".into()],
                Origins::List(list) => list.clone(),
            },
            origin: Origin::Config,
            edited: false,
            revoked_at: None,
            created_at: now,
            updated_at: now,
        })
        .collect();
    (webhooks, sources)
}

/// Compares the file with storage and says what start-up must write.
pub fn plan_sync(file: (&[StoredWebhook], &[StoredSource]), stored: (&[StoredWebhook], &[StoredSource])) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let stored_hooks: HashMap<&str, &StoredWebhook> = stored.0.iter().map(|w| (w.spec.id.as_str(), w)).collect();
    for w in file.0 {
        match stored_hooks.get(w.spec.id.as_str()) {
            None => plan.put_webhooks.push(w.clone()),
            Some(s) if s.origin == Origin::Config && !s.edited => {
                if s.spec != w.spec || s.secrets != w.secrets {
                    plan.put_webhooks.push(StoredWebhook { created_at: s.created_at, ..w.clone() });
                }
            }
            Some(s) => {
                let how = if s.origin == Origin::Api { "was created" } else { "was changed" };
                plan.notes.push(format!(
                    "webhook {:?} {how} through the admin API; the stored definition is used, not the file's (see `check-config`)",
                    w.spec.id
                ));
            }
        }
    }
    let in_file: std::collections::HashSet<&str> = file.0.iter().map(|w| w.spec.id.as_str()).collect();
    for s in stored.0 {
        if s.origin == Origin::Config && !s.edited && !in_file.contains(s.spec.id.as_str()) {
            plan.delete_webhooks.push(s.spec.id.clone());
        }
    }
    let stored_sources: HashMap<&str, &StoredSource> = stored.1.iter().map(|s| (s.write_key.as_str(), s)).collect();
    for f in file.1 {
        match stored_sources.get(f.write_key.as_str()) {
            None => plan.put_sources.push(f.clone()),
            Some(s) if s.origin == Origin::Config && !s.edited => {
                if s.origins != f.origins || s.revoked_at.is_some() {
                    plan.put_sources.push(StoredSource { created_at: s.created_at, ..f.clone() });
                }
            }
            Some(_) => plan.notes.push(format!(
                "source {:?} was changed through the admin API; the stored definition is used, not the file's",
                hint(&f.write_key)
            )),
        }
    }
    let keys_in_file: std::collections::HashSet<&str> = file.1.iter().map(|s| s.write_key.as_str()).collect();
    for s in stored.1 {
        if s.origin == Origin::Config && !s.edited && !keys_in_file.contains(s.write_key.as_str()) {
            plan.delete_sources.push(s.write_key.clone());
        }
    }
    plan
}

/// For `check-config`: how the stored catalog differs from the file, one line each.
pub fn differences(file: &[StoredWebhook], stored: &[StoredWebhook]) -> Vec<String> {
    let mut out = Vec::new();
    let by_id: HashMap<&str, &StoredWebhook> = stored.iter().map(|w| (w.spec.id.as_str(), w)).collect();
    for f in file {
        let Some(s) = by_id.get(f.spec.id.as_str()) else {
            out.push(format!("webhook {:?}: not stored yet (added when a relay starts with this file)", f.spec.id));
            continue;
        };
        if !(s.edited || s.origin == Origin::Api) {
            continue;
        }
        let (a, b) =
            (serde_json::to_value(&f.spec).unwrap_or_default(), serde_json::to_value(&s.spec).unwrap_or_default());
        let mut keys: Vec<&String> = a.as_object().into_iter().chain(b.as_object()).flat_map(|o| o.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut changed: Vec<String> = keys
            .into_iter()
            .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
            .map(|k| {
                let show = |v: Option<&serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(unset)".into());
                format!("{k}: file {} ≠ stored {}", show(a.get(k.as_str())), show(b.get(k.as_str())))
            })
            .collect();
        if f.secrets.iter().map(|s| &s.secret).ne(s.secrets.iter().map(|s| &s.secret)) {
            changed.push("secret: rotated through the admin API".into());
        }
        if changed.is_empty() {
            out.push(format!("webhook {:?}: changed through the admin API, now the same as the file", f.spec.id));
        } else {
            out.push(format!("webhook {:?}: changed through the admin API: {}", f.spec.id, changed.join("; ")));
        }
    }
    let in_file: std::collections::HashSet<&str> = file.iter().map(|w| w.spec.id.as_str()).collect();
    for s in stored {
        if s.origin == Origin::Api && !in_file.contains(s.spec.id.as_str()) {
            out.push(format!("webhook {:?}: created through the admin API (not in the file)", s.spec.id));
        }
    }
    out
}

/// The first characters of a secret or key, enough to tell them apart.
pub fn hint(secret: &str) -> String {
    let shown: String = secret.chars().take(10).collect();
    format!("{shown}…")
}

/// One immutable snapshot of the webhooks and sources in force.
pub struct Catalog {
    pub version: i64,
    /// Resolved, in id order; `rules` compiles them in the same order.
    pub webhooks: Vec<Webhook>,
    pub rules: Rules,
    /// Sources not revoked.
    pub sources: Vec<Source>,
    /// Everything stored (including definitions that no longer resolve), for the admin API.
    pub stored_webhooks: Vec<StoredWebhook>,
    pub stored_sources: Vec<StoredSource>,
    /// When the next rotated-out secret stops signing: rebuild then.
    pub expires_at: Option<i64>,
    /// Stored definitions that did not resolve (e.g. `https_only` set since): id → problems.
    pub broken: HashMap<String, Vec<FieldError>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("version", &self.version).field("webhooks", &self.webhooks.len()).finish()
    }
}

impl Catalog {
    /// Resolves and compiles what storage holds. A stored definition that no
    /// longer resolves is left out (and reported in `broken`) rather than
    /// stopping the others.
    pub fn build(
        version: i64,
        mut stored_webhooks: Vec<StoredWebhook>,
        stored_sources: Vec<StoredSource>,
        egress: &Egress,
        now: i64,
    ) -> Catalog {
        stored_webhooks.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        let mut broken = HashMap::new();
        let mut webhooks = Vec::new();
        let mut expires_at: Option<i64> = None;
        for w in &stored_webhooks {
            let mut secrets = Vec::new();
            for s in &w.secrets {
                match s.expires_at {
                    Some(at) if at <= now => continue,
                    Some(at) => expires_at = Some(expires_at.map_or(at, |e| e.min(at))),
                    None => {}
                }
                if let Ok(secret) = Secret::parse(&s.secret) {
                    secrets.push(secret);
                }
            }
            match w.spec.resolve(secrets, egress) {
                Ok(hook) => webhooks.push(hook),
                Err(problems) => {
                    broken.insert(w.spec.id.clone(), problems);
                }
            }
        }
        let rules = match Rules::new(&webhooks) {
            Ok(rules) => rules,
            Err(problems) => {
                let bad: std::collections::HashSet<usize> = problems.iter().map(|p| p.webhook).collect();
                for p in problems {
                    broken
                        .entry(webhooks[p.webhook].id.clone())
                        .or_insert_with(Vec::new)
                        .push(FieldError::new(p.field, p.message));
                }
                let mut i = 0;
                webhooks.retain(|_| {
                    i += 1;
                    !bad.contains(&(i - 1))
                });
                Rules::new(&webhooks).unwrap_or_else(|_| Rules::new(&[]).expect("no templates, no errors"))
            }
        };
        let sources = stored_sources
            .iter()
            .filter(|s| s.revoked_at.is_none())
            .map(|s| Source {
                write_key: s.write_key.clone(),
                origins: if s.origins.iter().any(|o| o == "*") {
                    Origins::Any
                } else {
                    Origins::List(s.origins.clone())
                },
            })
            .collect();
        for (id, problems) in &broken {
            tracing::error!(webhook = %id, ?problems, "a stored webhook does not resolve; it receives nothing until fixed");
        }
        Catalog { version, webhooks, rules, sources, stored_webhooks, stored_sources, expires_at, broken }
    }

    /// The file's webhooks and sources alone (for `send-test`, which works without storage).
    pub fn of_file(config: &Config) -> Catalog {
        let now = now_ms();
        let (hooks, sources) = from_file(config, now);
        Catalog::build(0, hooks, sources, &config.egress, now)
    }

    pub fn source(&self, write_key: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.write_key == write_key)
    }

    /// A webhook in force, and its index into `webhooks` and `rules`.
    pub fn webhook(&self, id: &str) -> Option<(usize, &Webhook)> {
        self.webhooks.binary_search_by(|w| w.id.as_str().cmp(id)).ok().map(|i| (i, &self.webhooks[i]))
    }

    pub fn stored_webhook(&self, id: &str) -> Option<&StoredWebhook> {
        self.stored_webhooks.iter().find(|w| w.spec.id == id)
    }

    pub fn stored_source(&self, write_key: &str) -> Option<&StoredSource> {
        self.stored_sources.iter().find(|s| s.write_key == write_key)
    }
}

/// Checks a definition the admin API received, with the rules of
/// `check-config` plus what the running relay implies: templates compile,
/// and the timeout fits in the lease.
pub fn validate(spec: &WebhookSpec, egress: &Egress, lease: Duration) -> Result<Webhook, Vec<FieldError>> {
    let hook = spec.resolve(Vec::new(), egress)?;
    let mut errors = Vec::new();
    if let Err(problems) = Rules::new(std::slice::from_ref(&hook)) {
        for p in problems {
            let at = p.line.map(|l| format!("line {l}: ")).unwrap_or_default();
            errors.push(FieldError::new(p.field, format!("{at}{}", p.message)));
        }
    }
    if hook.timeout * 2 > lease {
        errors.push(FieldError::new(
            "timeout",
            format!(
                "{:?} must be at most half the relay's lease ({lease:?}); raise [limits] lease first",
                hook.timeout
            ),
        ));
    }
    if errors.is_empty() {
        Ok(hook)
    } else {
        Err(errors)
    }
}

/// The current [`Catalog`], shared by ingest, delivery and the admin API.
pub struct Registry {
    storage: Storage,
    egress: Egress,
    current: RwLock<Arc<Catalog>>,
}

impl Registry {
    /// Brings storage in line with the file, then loads the catalog.
    pub async fn open(storage: Storage, config: &Config) -> Result<Registry> {
        let now = now_ms();
        let (file_hooks, file_sources) = from_file(config, now);
        let (_, stored_hooks, stored_sources) = storage.load_catalog().await?;
        let plan = plan_sync((&file_hooks, &file_sources), (&stored_hooks, &stored_sources));
        for note in &plan.notes {
            tracing::warn!("{note}");
        }
        if !plan.is_empty() {
            storage.change_catalog(Change::Sync(plan)).await?;
        }
        let registry = Registry {
            storage,
            egress: config.egress.clone(),
            current: RwLock::new(Arc::new(Catalog::build(0, vec![], vec![], &config.egress, now))),
        };
        registry.reload().await?;
        Ok(registry)
    }

    pub fn current(&self) -> Arc<Catalog> {
        self.current.read().unwrap().clone()
    }

    /// Reads the catalog from storage and makes it current.
    pub async fn reload(&self) -> Result<Arc<Catalog>> {
        let (version, hooks, sources) = self.storage.load_catalog().await?;
        let catalog = Arc::new(Catalog::build(version, hooks, sources, &self.egress, now_ms()));
        *self.current.write().unwrap() = catalog.clone();
        Ok(catalog)
    }

    /// Reloads if another relay (or the admin API) changed the catalog, or
    /// a rotated-out secret expired. True if it did.
    pub async fn refresh(&self) -> Result<bool> {
        let current = self.current();
        let expired = current.expires_at.is_some_and(|at| at <= now_ms());
        if expired || self.storage.catalog_version().await? != current.version {
            self.reload().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes a change and reloads. False if it did not apply (see [`Change`]).
    pub async fn change(&self, change: Change) -> Result<bool> {
        let applied = self.storage.change_catalog(change).await?;
        self.reload().await?;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str, url: &str, origin: Origin, edited: bool) -> StoredWebhook {
        StoredWebhook {
            spec: WebhookSpec { id: id.into(), events: vec!["*".into()], url: url.into(), ..Default::default() },
            secrets: vec![],
            origin,
            edited,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn the_file_decides_its_webhooks_until_one_is_edited_through_the_api() {
        let file = [
            hook("a", "https://a.example/new", Origin::Config, false),
            hook("b", "https://b.example/file", Origin::Config, false),
            hook("n", "https://n.example", Origin::Config, false),
        ];
        let stored = [
            hook("a", "https://a.example/old", Origin::Config, false),
            hook("b", "https://b.example/api", Origin::Config, true),
            hook("gone", "https://g.example", Origin::Config, false),
            hook("kept", "https://k.example", Origin::Config, true),
            hook("api", "https://api.example", Origin::Api, false),
        ];
        let plan = plan_sync((&file, &[]), (&stored, &[]));
        let put: Vec<(&str, &str)> =
            plan.put_webhooks.iter().map(|w| (w.spec.id.as_str(), w.spec.url.as_str())).collect();
        assert_eq!(put, [("a", "https://a.example/new"), ("n", "https://n.example")]);
        assert_eq!(plan.put_webhooks[0].created_at, 1, "an update keeps the creation time");
        assert_eq!(plan.delete_webhooks, ["gone"], "edited and API webhooks are not the file's to delete");
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.notes[0].contains("\"b\" was changed through the admin API"), "{:?}", plan.notes);
        assert!(plan_sync((&file, &[]), (&file, &[])).is_empty(), "nothing to do when storage matches");
    }

    #[test]
    fn check_config_tells_what_the_api_changed() {
        let file = [hook("b", "https://b.example/file", Origin::Config, false)];
        let mut edited = hook("b", "https://b.example/api", Origin::Config, true);
        edited.spec.timeout = Some("3s".into());
        let stored = [edited, hook("api", "https://api.example", Origin::Api, false)];
        let lines = differences(&file, &stored);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("timeout: file (unset) ≠ stored \"3s\""), "{lines:#?}");
        assert!(
            lines[0].contains("url: file \"https://b.example/file\" ≠ stored \"https://b.example/api\""),
            "{lines:#?}"
        );
        assert!(lines[1].contains("\"api\": created through the admin API"), "{lines:#?}");
    }

    #[test]
    fn a_catalog_leaves_out_what_does_not_resolve_and_expired_secrets() {
        let secret = |s: u8, expires_at| StoredSecret { secret: Secret::generate_text([s; 24]), expires_at };
        let mut good = hook("good", "https://g.example", Origin::Api, false);
        good.secrets = vec![secret(1, None), secret(2, Some(50)), secret(3, Some(500))];
        let mut bad_template = hook("bad", "https://b.example", Origin::Api, false);
        bad_template.spec.body = Some("{{ oops".into());
        let egress = Egress { https_only: true, ..Default::default() };
        let plain_http = hook("http", "http://h.example", Origin::Api, false);
        let c = Catalog::build(7, vec![good, bad_template, plain_http], vec![], &egress, 100);
        assert_eq!(c.webhooks.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(c.webhooks[0].secrets.len(), 2, "the secret that expired at 50 no longer signs");
        assert_eq!(c.expires_at, Some(500), "rebuilt when the next one expires");
        assert!(c.broken["bad"][0].field == "body" && c.broken["http"][0].field == "url", "{:?}", c.broken);
        assert_eq!(c.webhook("good").map(|(i, _)| i), Some(0));
        assert_eq!(c.rules.route("x", &serde_json::json!({})), vec![(0, Ok(true))], "rules follow the same order");
    }

    #[test]
    fn api_definitions_get_field_errors_for_templates_and_timeouts() {
        let spec = WebhookSpec {
            id: "x".into(),
            events: vec!["*".into()],
            url: "https://x.example".into(),
            when: Some("properties.score <".into()),
            timeout: Some("20s".into()),
            ..Default::default()
        };
        let errors = validate(&spec, &Egress::default(), Duration::from_secs(30)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["when", "timeout"], "{errors:?}");
        let spec = WebhookSpec { id: "bad id".into(), events: vec![], url: "ftp://x".into(), ..Default::default() };
        let errors = validate(&spec, &Egress::default(), Duration::from_secs(30)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["id", "events", "url"], "{errors:?}");
    }
}
