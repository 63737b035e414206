//! Declarative auto-capture: `data-cuecast-*` attributes become events.
//!
//! The DOM walk is `capture()` in `host.js` (one delegated listener per
//! event type on `document`; the attribute rules are documented there): in
//! JavaScript it is a few hundred bytes, through web-sys it was 4 KB gzip.
//! What it finds comes back here as a built-in event name and a properties
//! object, and goes through the same validation as the typed helpers.

use wasm_bindgen::prelude::*;

use crate::events;
use crate::json::Json;

/// A captured interaction, ready for the tracker's typed path.
pub struct Captured {
    pub event: &'static str,
    pub properties: Json,
}

/// The installed listeners' callback. The listeners live as long as the
/// page, like the client that installed them (see `CLIENTS`).
#[must_use]
pub struct Listeners {
    _found: Closure<dyn FnMut(String, JsValue)>,
}

impl Listeners {
    pub fn install(mut on_capture: impl FnMut(Captured) + 'static) -> Listeners {
        let found = Closure::new(move |event: String, properties: JsValue| {
            let kinds = [events::SHOUTOUT_CLICKED, events::ONBOARDING_TASK_COMPLETED, events::SURVEY_SUBMITTED];
            let event = kinds.into_iter().find(|kind| *kind == event);
            // Built from strings and numbers only: conversion cannot fail.
            if let (Some(event), Ok(properties)) = (event, super::convert::to_json(&properties, "")) {
                on_capture(Captured { event, properties });
            }
        });
        super::host::capture(&found);
        Listeners { _found: found }
    }
}
