//! JavaScript values → [`Json`], with errors that name the offending field.
//!
//! `JSON.stringify` silently drops functions and `undefined`, turns `NaN`
//! into `null` and throws an unhelpful message on cycles. Events must be sent
//! as the developer meant them or rejected with a clear reason, so
//! `encode()` in `host.js` walks the value first (the rules are listed
//! there) and only then stringifies it; the text is read back here.

use js_sys::Array;
use wasm_bindgen::{JsCast, JsValue};

use super::host;
use crate::error::Error;
use crate::json::Json;

/// Converts `value`; `field` names it in errors (`properties`, `traits`, or
/// empty for a typed helper's input object).
pub fn to_json(value: &JsValue, field: &str) -> Result<Json, Error> {
    let encoded = host::encode(value, field);
    if let Some(text) = encoded.as_string() {
        // JSON.stringify's output always parses.
        return Json::parse(&text).ok_or_else(|| Error::invalid(field, "could not be encoded as JSON"));
    }
    let refused: Array = encoded.unchecked_into();
    let (path, why) = (refused.get(0).as_string(), refused.get(1).as_string());
    Err(Error::invalid(path.unwrap_or_default(), why.unwrap_or_default()))
}
