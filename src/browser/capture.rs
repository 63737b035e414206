//! Declarative auto-capture: `data-cuecast-*` attributes become events.
//!
//! One delegated listener per event type on `document`, in the capture phase
//! (so a page calling `stopPropagation()` does not hide interactions), and
//! nothing per element: elements added later work too.
//!
//! - click inside `[data-cuecast-shoutout="ID"]` → `shoutout.clicked`
//!   (`action` from `data-cuecast-action`, else `link` inside an `a[href]`, else `cta`);
//! - click inside `[data-cuecast-task="ID"]` → `onboarding.task_completed`
//!   (`checklistId` from the nearest `data-cuecast-checklist`);
//! - submit of `form[data-cuecast-survey="ID"]` → `survey.submitted` with the
//!   form's named fields as `answers` (a field named `score` becomes the score,
//!   `comment` the comment; `data-cuecast-kind` on the form sets `kind`).
//!   Password, hidden and file inputs, and fields inside
//!   `[data-cuecast-ignore]`, are never captured.

use serde_json::{json, Map, Value};
use wasm_bindgen::JsCast;
use web_sys::{Document, Element, Event, HtmlFormElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};

use super::page::Listener;
use crate::events;

/// A captured interaction, ready for the tracker's typed path.
pub struct Captured {
    pub event: &'static str,
    pub properties: Value,
}

/// The installed listeners; dropping this removes them.
#[must_use]
pub struct Listeners {
    _click: Listener,
    _submit: Listener,
}

impl Listeners {
    pub fn install(document: &Document, mut on_capture: impl FnMut(Captured) + Clone + 'static) -> Listeners {
        let mut on_click = on_capture.clone();
        Listeners {
            _click: Listener::new(document, "click", true, move |e| {
                if let Some(c) = from_click(&e) {
                    on_click(c);
                }
            }),
            _submit: Listener::new(document, "submit", true, move |e| {
                if let Some(c) = from_submit(&e) {
                    on_capture(c);
                }
            }),
        }
    }
}

fn target(e: &Event) -> Option<Element> {
    let node = e.target()?.dyn_into::<web_sys::Node>().ok()?;
    // A click on text lands on the text node; its element is the parent.
    match node.dyn_into::<Element>() {
        Ok(el) => Some(el),
        Err(node) => node.parent_element(),
    }
}

fn from_click(e: &Event) -> Option<Captured> {
    let target = target(e)?;
    if let Some(el) = target.closest("[data-cuecast-shoutout]").ok()? {
        // The nearest marker between the clicked element and the ShoutOut wins.
        let inside = |found: Option<Element>| found.filter(|f| el.contains(Some(f)));
        let action = match inside(target.closest("[data-cuecast-action]").ok().flatten()) {
            Some(marked) => marked.get_attribute("data-cuecast-action").unwrap_or_default(),
            None if inside(target.closest("a[href]").ok().flatten()).is_some() => "link".into(),
            None => "cta".into(),
        };
        let id = el.get_attribute("data-cuecast-shoutout")?;
        return Some(Captured {
            event: events::SHOUTOUT_CLICKED,
            properties: json!({"shoutoutId": id, "action": action}),
        });
    }
    let el = target.closest("[data-cuecast-task]").ok()??;
    let mut props = Map::new();
    props.insert("taskId".into(), el.get_attribute("data-cuecast-task")?.into());
    if let Some(list) =
        el.closest("[data-cuecast-checklist]").ok().flatten().and_then(|l| l.get_attribute("data-cuecast-checklist"))
    {
        props.insert("checklistId".into(), list.into());
    }
    Some(Captured { event: events::ONBOARDING_TASK_COMPLETED, properties: Value::Object(props) })
}

fn from_submit(e: &Event) -> Option<Captured> {
    let form = e.target()?.dyn_into::<HtmlFormElement>().ok()?;
    let survey_id = form.get_attribute("data-cuecast-survey")?;
    let mut props = Map::new();
    props.insert("surveyId".into(), survey_id.into());
    if let Some(kind) = form.get_attribute("data-cuecast-kind") {
        props.insert("kind".into(), kind.into());
    }
    let mut answers: Vec<(String, Vec<String>)> = Vec::new();
    let elements = form.elements();
    for i in 0..elements.length() {
        let Some(el) = elements.item(i) else { continue };
        for (name, value) in field_values(&el) {
            match name.as_str() {
                // A score is a number; a field that does not parse stays a string
                // so that validation names it instead of silently dropping it.
                "score" => {
                    // JS parses the number: Rust's float parser costs ~10 KB of wasm.
                    let n = js_sys::Number::parse_float(value.trim());
                    let score = if n.is_finite()
                        && value.trim()
                            == js_sys::Number::from(n)
                                .to_string_with_radix(10)
                                .ok()
                                .map(String::from)
                                .unwrap_or_default()
                    {
                        serde_json::Number::from_f64(n).map(Value::Number)
                    } else {
                        None
                    };
                    let score = score.map(|v| match v.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
                        _ => v,
                    });
                    props.insert("score".into(), score.unwrap_or(Value::String(value)));
                }
                "comment" => {
                    props.insert("comment".into(), value.into());
                }
                _ => match answers.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => values.push(value),
                    None => answers.push((name, vec![value])),
                },
            }
        }
    }
    let answers: Vec<Value> = answers
        .into_iter()
        .map(|(q, mut values)| {
            let answer = if values.len() == 1 { Value::String(values.remove(0)) } else { json!(values) };
            json!({"questionId": q, "answer": answer})
        })
        .collect();
    if !answers.is_empty() || !props.contains_key("score") {
        props.insert("answers".into(), Value::Array(answers));
    }
    Some(Captured { event: events::SURVEY_SUBMITTED, properties: Value::Object(props) })
}

/// The name and submitted values of a form control: none when it is not
/// captured (no name, ignored, sensitive, unchecked, disabled, a button),
/// several for a `<select multiple>`.
fn field_values(el: &Element) -> Vec<(String, String)> {
    let ignored = el.closest("[data-cuecast-ignore]").ok().flatten().is_some();
    if ignored {
        return Vec::new();
    }
    if let Some(input) = el.dyn_ref::<HtmlInputElement>() {
        let kind = input.type_().to_ascii_lowercase();
        let skipped = ["password", "hidden", "file", "submit", "button", "reset", "image"];
        let unchecked = matches!(kind.as_str(), "checkbox" | "radio") && !input.checked();
        if input.disabled() || skipped.contains(&kind.as_str()) || input.name().is_empty() || unchecked {
            return Vec::new();
        }
        return vec![(input.name(), input.value())];
    }
    if let Some(select) = el.dyn_ref::<HtmlSelectElement>() {
        if select.disabled() || select.name().is_empty() {
            return Vec::new();
        }
        let options = select.selected_options();
        return (0..options.length())
            .filter_map(|i| options.item(i))
            .filter_map(|o| o.dyn_into::<web_sys::HtmlOptionElement>().ok())
            .map(|o| (select.name(), o.value()))
            .collect();
    }
    if let Some(area) = el.dyn_ref::<HtmlTextAreaElement>() {
        if !area.disabled() && !area.name().is_empty() {
            return vec![(area.name(), area.value())];
        }
    }
    Vec::new()
}
