//! Which webhooks an event goes to, and what is sent: `when` conditions and
//! body/url templates, evaluated by minijinja in a sandbox (no file or
//! network access, a fuel limit against runaway loops). Pure: no IO.
//!
//! Template output escaping is chosen for where it lands:
//! - in `body`, a string value is escaped as the inside of a JSON string, so
//!   `"{{ properties.comment }}"` stays valid JSON whatever the user typed;
//!   numbers and booleans print as JSON does; `{{ x | tojson }}` inserts a
//!   whole JSON value;
//! - in a templated `url`, string values are percent-encoded.

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value as Json;

use crate::config::{Method, Webhook};
use crate::policy::{matches_any, Pattern};

/// The compiled conditions and templates of all webhooks.
pub struct Rules {
    env: Environment<'static>,
    hooks: Vec<HookRules>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("hooks", &self.hooks.len()).finish()
    }
}

struct HookRules {
    events: Vec<Pattern>,
    has_when: bool,
    has_body: bool,
    url_template: bool,
    method: Method,
    url: String,
}

/// A condition or template that does not compile.
#[derive(Debug)]
pub struct TemplateProblem {
    /// Index into the webhook list.
    pub webhook: usize,
    /// `when`, `url` or `body`.
    pub field: &'static str,
    /// Line inside the template, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// What to send for one delivery attempt (before signing).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub url: url::Url,
    /// `None` for GET.
    pub body: Option<Vec<u8>>,
}

/// Steps a template may run before it is stopped (loops, recursion).
const FUEL: u64 = 50_000;

const JSON_STRING: &str = "json-string";
const URL_PART: &str = "url";

impl Rules {
    pub fn new(webhooks: &[Webhook]) -> Result<Rules, Vec<TemplateProblem>> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|name| match name.split(':').next() {
            Some("body") => AutoEscape::Custom(JSON_STRING),
            Some("url") => AutoEscape::Custom(URL_PART),
            _ => AutoEscape::None,
        });
        env.set_formatter(format_value);
        let mut problems = Vec::new();
        let mut hooks = Vec::new();
        for (i, w) in webhooks.iter().enumerate() {
            let url_template = w.url.contains("{{") || w.url.contains("{%");
            let mut add = |field: &'static str, source: String| {
                if let Err(e) = env.add_template_owned(format!("{field}:{i}"), source) {
                    problems.push(TemplateProblem { webhook: i, field, line: e.line(), message: describe(&e) });
                }
            };
            if let Some(when) = &w.when {
                // A condition is an expression; as a template it can be stored
                // compiled in the environment and evaluated like the others.
                add("when", format!("{{% if {when} %}}1{{% endif %}}"));
            }
            if let Some(body) = &w.body {
                add("body", body.clone());
            }
            if url_template {
                add("url", w.url.clone());
            }
            hooks.push(HookRules {
                events: w.events.clone(),
                has_when: w.when.is_some(),
                has_body: w.body.is_some(),
                url_template,
                method: w.method,
                url: w.url.clone(),
            });
        }
        if problems.is_empty() {
            Ok(Rules { env, hooks })
        } else {
            Err(problems)
        }
    }

    /// The webhooks whose `events` match `name`, and for each whether its
    /// `when` holds (`Ok(true)`), does not (`Ok(false)`), or failed to
    /// evaluate (`Err(message)`, which fails that delivery).
    pub fn route(&self, name: &str, event: &Json) -> Vec<(usize, Result<bool, String>)> {
        let mut out = Vec::new();
        let mut ctx = None;
        for (i, hook) in self.hooks.iter().enumerate() {
            if !matches_any(&hook.events, name) {
                continue;
            }
            if !hook.has_when {
                out.push((i, Ok(true)));
                continue;
            }
            let ctx = ctx.get_or_insert_with(|| Value::from_serialize(event));
            let verdict = self
                .env
                .get_template(&format!("when:{i}"))
                .and_then(|t| t.render(&*ctx))
                .map(|s| s == "1")
                .map_err(|e| format!("condition failed: {}", describe(&e)));
            out.push((i, verdict));
        }
        out
    }

    /// Renders the request for webhook `hook` and `event`. An error is the
    /// message stored in the attempt log.
    pub fn render(&self, hook: usize, event: &Json) -> Result<Request, String> {
        let h = &self.hooks[hook];
        let ctx = Value::from_serialize(event);
        let url_text = if h.url_template {
            self.env
                .get_template(&format!("url:{hook}"))
                .and_then(|t| t.render(&ctx))
                .map_err(|e| format!("url template failed: {}", describe(&e)))?
        } else {
            h.url.clone()
        };
        let mut url = url::Url::parse(url_text.trim()).map_err(|e| format!("url {url_text:?} is not a URL: {e}"))?;
        match h.method {
            Method::Get => {
                if !h.url_template {
                    let mut pairs = Vec::new();
                    flatten("", event, &mut pairs);
                    url.query_pairs_mut().extend_pairs(pairs);
                }
                Ok(Request { method: Method::Get, url, body: None })
            }
            Method::Post => {
                let body = if h.has_body {
                    self.env
                        .get_template(&format!("body:{hook}"))
                        .and_then(|t| t.render(&ctx))
                        .map_err(|e| format!("body template failed: {}", describe(&e)))?
                        .into_bytes()
                } else {
                    default_body(event)
                };
                Ok(Request { method: Method::Post, url, body: Some(body) })
            }
        }
    }
}

/// `{"type": <event name>, "timestamp": <event timestamp>, "data": <event>}`.
pub fn default_body(event: &Json) -> Vec<u8> {
    let body = serde_json::json!({
        "type": event.get("event"),
        "timestamp": event.get("timestamp"),
        "data": event,
    });
    serde_json::to_vec(&body).expect("JSON values serialise")
}

/// Flattens nested objects into `a.b.c=value` query pairs; array items get
/// their index as a key (`properties.answers.0.questionId`). Strings go as
/// they are, other scalars as JSON; null values are left out.
pub fn flatten(prefix: &str, value: &Json, out: &mut Vec<(String, String)>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match value {
        Json::Object(map) => map.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Json::Array(items) => items.iter().enumerate().for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
        Json::Null => {}
        Json::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn format_value(out: &mut minijinja::Output, state: &minijinja::State, value: &Value) -> Result<(), minijinja::Error> {
    let err = |e: std::fmt::Error| minijinja::Error::from(e);
    if value.is_safe() {
        return out.write_str(value.as_str().unwrap_or_default()).map_err(err);
    }
    match state.auto_escape() {
        AutoEscape::Custom(JSON_STRING) => match value.as_str() {
            Some(s) => {
                let quoted = serde_json::to_string(s).expect("strings serialise");
                out.write_str(&quoted[1..quoted.len() - 1]).map_err(err)
            }
            None if value.is_undefined() => Ok(()),
            None if value.is_none() => out.write_str("null").map_err(err),
            None => match serde_json::to_string(value) {
                Ok(json) => out.write_str(&json).map_err(err),
                Err(_) => write!(out, "{value}").map_err(err),
            },
        },
        AutoEscape::Custom(URL_PART) => {
            let text = value.to_string();
            let encoded: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
            out.write_str(&encoded).map_err(err)
        }
        _ => write!(out, "{value}").map_err(err),
    }
}

/// One line: the kind and detail, without minijinja's multi-line debug dump.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn rules(hooks: &str) -> Rules {
        let src = format!("[egress]\nallow_cidrs=[]\n{hooks}");
        let cfg = Config::parse(&src, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
        std::sync::Arc::try_unwrap(cfg.rules).unwrap()
    }

    fn nps(score: i64, comment: &str) -> Json {
        json!({"id": "e1", "event": "survey.submitted", "timestamp": "2026-12-04T15:16:52.001Z",
               "userId": "user-42", "anonymousId": "anon",
               "properties": {"surveyId": "nps-q3", "kind": "nps", "score": score, "comment": comment}})
    }

    #[test]
    fn conditions_select_deliveries() {
        let r = rules(
            r#"[[webhook]]
id = "detractors"
events = ["survey.submitted"]
when = "properties.kind == 'nps' and properties.score <= 6"
url = "https://example.com/a"
[[webhook]]
id = "all"
events = ["*"]
url = "https://example.com/b"
[[webhook]]
id = "onboarding"
events = ["onboarding.*"]
url = "https://example.com/c"
"#,
        );
        assert_eq!(r.route("survey.submitted", &nps(3, "")), vec![(0, Ok(true)), (1, Ok(true))]);
        assert_eq!(r.route("survey.submitted", &nps(9, "")), vec![(0, Ok(false)), (1, Ok(true))]);
        assert_eq!(r.route("onboarding.task_completed", &json!({})), vec![(1, Ok(true)), (2, Ok(true))]);
    }

    #[test]
    fn a_failing_condition_is_an_error_value_not_a_panic() {
        let r = rules(
            r#"[[webhook]]
id = "bad"
events = ["*"]
when = "properties.comment + 1 > 2"
url = "https://example.com/a"
"#,
        );
        let verdict = &r.route("survey.submitted", &nps(3, "text"))[0].1;
        assert!(verdict.as_ref().unwrap_err().starts_with("condition failed: "), "{verdict:?}");
    }

    #[test]
    fn body_templates_escape_strings_for_json() {
        let r = rules(
            r#"[[webhook]]
id = "slack"
events = ["*"]
url = "https://hooks.example.com/x"
body = '''{"text": "NPS {{ properties.score }} from {{ userId or anonymousId }}: {{ properties.comment }}", "props": {{ properties | tojson }}, "missing": "{{ properties.nothing.deeper }}"}'''
"#,
        );
        let req = r.render(0, &nps(3, "says \"meh\"\nok")).unwrap();
        let body: Json = serde_json::from_slice(req.body.as_ref().unwrap()).expect("valid JSON");
        assert_eq!(body["text"], "NPS 3 from user-42: says \"meh\"\nok");
        assert_eq!(body["props"]["surveyId"], "nps-q3");
        assert_eq!(body["missing"], "");
    }

    #[test]
    fn render_errors_are_messages() {
        let r = rules(
            r#"[[webhook]]
id = "loop"
events = ["*"]
url = "https://example.com/"
body = '''{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}'''
[[webhook]]
id = "type"
events = ["*"]
url = "https://example.com/"
body = '''{{ properties.comment + 1 }}'''
"#,
        );
        let err = r.render(0, &nps(1, "")).unwrap_err();
        assert!(err.starts_with("body template failed: "), "{err}");
        assert!(err.contains("fuel"), "{err}");
        assert!(r.render(1, &nps(1, "x")).unwrap_err().contains("body template failed"));
    }

    #[test]
    fn get_flattens_the_event_into_the_query() {
        let r = rules(
            r#"[[webhook]]
id = "sheet"
events = ["*"]
method = "GET"
url = "https://script.example.com/exec?sheet=1"
[[webhook]]
id = "templated"
events = ["*"]
method = "GET"
url = "https://script.example.com/exec?user={{ userId }}&c={{ properties.comment }}"
"#,
        );
        let req = r.render(0, &nps(9, "a&b")).unwrap();
        assert!(req.body.is_none());
        let pairs: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("sheet".into(), "1".into())));
        assert!(pairs.contains(&("properties.score".into(), "9".into())));
        assert!(pairs.contains(&("properties.comment".into(), "a&b".into())));
        assert!(pairs.contains(&("event".into(), "survey.submitted".into())));
        let req = r.render(1, &nps(9, "a&b c")).unwrap();
        assert_eq!(req.url.query(), Some("user=user-42&c=a%26b+c"));
    }

    #[test]
    fn default_post_body() {
        let body: Json = serde_json::from_slice(&default_body(&nps(9, ""))).unwrap();
        assert_eq!(body["type"], "survey.submitted");
        assert_eq!(body["timestamp"], "2026-12-04T15:16:52.001Z");
        assert_eq!(body["data"]["properties"]["score"], 9);
    }
}
