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
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Document, Element, Event, HtmlFormElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};

use crate::events;

/// A captured interaction, ready for the tracker's typed path.
pub struct Captured {
    pub event: &'static str,
    pub properties: Value,
}

/// The installed listeners; dropping this removes them.
#[must_use]
pub struct Listeners {
    document: Document,
    click: Closure<dyn FnMut(Event)>,
    submit: Closure<dyn FnMut(Event)>,
}

impl Listeners {
    pub fn install(document: Document, mut on_capture: impl FnMut(Captured) + Clone + 'static) -> Listeners {
        let mut on_click = on_capture.clone();
        let click = Closure::<dyn FnMut(Event)>::new(move |e: Event| {
            if let Some(c) = from_click(&e) {
                on_click(c);
            }
        });
        let submit = Closure::<dyn FnMut(Event)>::new(move |e: Event| {
            if let Some(c) = from_submit(&e) {
                on_capture(c);
            }
        });
        let _ = document.add_event_listener_with_callback_and_bool("click", click.as_ref().unchecked_ref(), true);
        let _ = document.add_event_listener_with_callback_and_bool("submit", submit.as_ref().unchecked_ref(), true);
        Listeners { document, click, submit }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let d = &self.document;
        let _ = d.remove_event_listener_with_callback_and_bool("click", self.click.as_ref().unchecked_ref(), true);
        let _ = d.remove_event_listener_with_callback_and_bool("submit", self.submit.as_ref().unchecked_ref(), true);
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
        let Some((name, value)) = field_value(&el) else { continue };
        match name.as_str() {
            // A score is a number; a field that does not parse stays a string
            // so that validation names it instead of silently dropping it.
            "score" => {
                // JS parses the number: Rust's float parser costs ~10 KB of wasm.
                let n = js_sys::Number::parse_float(value.trim());
                let score = if n.is_finite()
                    && value.trim()
                        == js_sys::Number::from(n).to_string_with_radix(10).ok().map(String::from).unwrap_or_default()
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

/// The name and submitted value of a form control, or `None` when it is not
/// captured (no name, ignored, sensitive, unchecked, disabled, a button).
fn field_value(el: &Element) -> Option<(String, String)> {
    if el.closest("[data-cuecast-ignore]").ok()?.is_some() {
        return None;
    }
    if let Some(input) = el.dyn_ref::<HtmlInputElement>() {
        let kind = input.type_().to_ascii_lowercase();
        let skipped = ["password", "hidden", "file", "submit", "button", "reset", "image"];
        if input.disabled() || skipped.contains(&kind.as_str()) || input.name().is_empty() {
            return None;
        }
        if matches!(kind.as_str(), "checkbox" | "radio") && !input.checked() {
            return None;
        }
        return Some((input.name(), input.value()));
    }
    if let Some(select) = el.dyn_ref::<HtmlSelectElement>() {
        return (!select.disabled() && !select.name().is_empty()).then(|| (select.name(), select.value()));
    }
    if let Some(area) = el.dyn_ref::<HtmlTextAreaElement>() {
        return (!area.disabled() && !area.name().is_empty()).then(|| (area.name(), area.value()));
    }
    None
}
