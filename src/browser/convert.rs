//! JavaScript values → JSON, with errors that name the offending field.
//!
//! `JSON.stringify` silently drops functions and `undefined`, turns `NaN`
//! into `null` and throws an unhelpful message on cycles. Events must be sent
//! as the developer meant them or rejected with a clear reason, so we walk
//! the value ourselves.

use js_sys::{Array, Date, Object, Reflect};
use serde_json::{Map, Number, Value};
use wasm_bindgen::{JsCast, JsValue};

use crate::error::{join_path, Error};

/// Deepest nesting accepted; deeper is almost always a mistake (a DOM node,
/// a framework object) and would be expensive to send.
const MAX_DEPTH: usize = 32;
/// 2^53 - 1: larger integers lose precision in JSON parsers.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Converts `value`; `field` names it in errors (`properties`, `traits`, or
/// empty for a typed helper's input object).
pub fn to_json(value: &JsValue, field: &str) -> Result<Value, Error> {
    let mut ancestors = Vec::new();
    convert(value, field, &mut ancestors)
}

fn convert(v: &JsValue, path: &str, ancestors: &mut Vec<JsValue>) -> Result<Value, Error> {
    if v.is_null() || v.is_undefined() {
        return Ok(Value::Null);
    }
    if let Some(b) = v.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = v.as_f64() {
        return number(n).ok_or_else(|| {
            let why = if n.is_finite() {
                "is an integer beyond 2^53 - 1, which JSON cannot carry exactly; send it as a string"
            } else {
                "must be a finite number, got NaN or Infinity"
            };
            Error::invalid(path, why)
        });
    }
    if let Some(s) = v.as_string() {
        return Ok(Value::String(s));
    }
    if v.is_function() {
        return Err(Error::invalid(path, "is a function, which cannot be sent"));
    }
    if v.is_symbol() {
        return Err(Error::invalid(path, "is a Symbol, which cannot be sent"));
    }
    if v.is_bigint() {
        return Err(Error::invalid(path, "is a BigInt; send it as a string or a number"));
    }
    if let Some(date) = v.dyn_ref::<Date>() {
        if date.get_time().is_nan() {
            return Err(Error::invalid(path, "is an invalid Date"));
        }
        return Ok(Value::String(date.to_iso_string().into()));
    }
    if ancestors.iter().any(|a| Object::is(a, v)) {
        return Err(Error::invalid(path, "refers back to itself (a cycle), which cannot be sent"));
    }
    if ancestors.len() >= MAX_DEPTH {
        return Err(Error::invalid(path, format!("is nested more than {MAX_DEPTH} levels deep")));
    }
    if v.is_instance_of::<js_sys::Map>() || v.is_instance_of::<js_sys::Set>() {
        return Err(Error::invalid(path, "is a Map or Set; convert it to a plain object or array"));
    }
    ancestors.push(v.clone());
    let result = if Array::is_array(v) {
        let array: &Array = v.unchecked_ref();
        let mut out = Vec::with_capacity(array.length() as usize);
        for (i, item) in array.iter().enumerate() {
            out.push(convert(&item, &format!("{path}[{i}]"), ancestors)?);
        }
        Value::Array(out)
    } else {
        let object: &Object = v.unchecked_ref();
        let mut out = Map::new();
        for key in Object::keys(object).iter() {
            let name = key.as_string().unwrap_or_default();
            let item = Reflect::get(object, &key).unwrap_or(JsValue::UNDEFINED);
            // Like JSON.stringify: a property set to undefined is absent.
            if item.is_undefined() {
                continue;
            }
            let converted = convert(&item, &join_path(path, &name), ancestors)?;
            out.insert(name, converted);
        }
        Value::Object(out)
    };
    ancestors.pop();
    Ok(result)
}

fn number(n: f64) -> Option<Value> {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        return Some(Value::Number((n as i64).into()));
    }
    if n.fract() == 0.0 && n.is_finite() {
        return None;
    }
    Number::from_f64(n).map(Value::Number)
}
