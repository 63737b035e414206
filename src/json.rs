//! A small JSON value: how the SDK reads options, properties and stored
//! records, and writes events, without serde_json.
//!
//! Why not serde_json: its `Value` (a `BTreeMap` per object), its
//! serialiser and its float printing and parsing were a fifth of the
//! browser bundle (README, "Size"). The SDK never does arithmetic on a
//! number it was given, so a number is kept as its JSON text, exactly as
//! it came and as it is sent; objects keep their keys in order. The relay
//! decodes batches with serde_json (see `wire`); the two meet in the
//! golden fixtures and in [`Json::from`] a `serde_json::Value`.

use std::fmt::Write as _;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's JSON text (`9`, `-2.5`, `1e21`).
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Members in their order; a repeated key's last value wins (as in `JSON.parse`).
    Object(Vec<(String, Json)>),
}

/// Deepest nesting [`Json::parse`] accepts (what it reads was written by
/// this SDK, at most 32 deep; the limit only guards against a corrupt entry).
const MAX_DEPTH: usize = 128;

impl Json {
    /// An empty object.
    pub fn object() -> Json {
        Json::Object(Vec::new())
    }

    /// Parses one JSON text (whitespace around it allowed); `None` when it
    /// is not JSON.
    pub fn parse(text: &str) -> Option<Json> {
        let mut p = Parser { text, s: text.as_bytes(), at: 0 };
        let value = p.value(0)?;
        p.space();
        (p.at == p.s.len()).then_some(value)
    }

    /// The member `key` of an object (`None` for anything else).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets member `key` of an object, replacing an earlier value.
    pub fn insert(&mut self, key: &str, value: Json) {
        if let Json::Object(members) = self {
            members.retain(|(k, _)| k != key);
            members.push((key.to_string(), value));
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A non-negative integer written without fraction or exponent (as
    /// serde_json's `as_u64`: `9.0` is not one).
    pub fn as_u64(&self) -> Option<u64> {
        let Json::Number(text) = self else { return None };
        digits(text)
    }

    /// An integer written without fraction or exponent.
    pub fn as_i64(&self) -> Option<i64> {
        let Json::Number(text) = self else { return None };
        integer(text)
    }

    /// The number's value, as near as `f64` gets (without the standard
    /// library's float parser, which would cost the bundle 8 KB).
    pub fn as_f64(&self) -> Option<f64> {
        let Json::Number(text) = self else { return None };
        let (mantissa, mut scale) = match text.split_once(['e', 'E']) {
            Some((m, e)) => (m, integer(e.strip_prefix('+').unwrap_or(e))?),
            None => (text.as_str(), 0),
        };
        let mut value = 0.0f64;
        let mut fraction = false;
        for b in mantissa.bytes() {
            match b {
                b'.' => fraction = true,
                b'-' => {}
                digit => {
                    value = value * 10.0 + f64::from(digit - b'0');
                    scale -= i64::from(fraction);
                }
            }
        }
        let value = value * 10f64.powi(scale.clamp(-999, 999) as i32);
        Some(if text.starts_with('-') { -value } else { value })
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Json::Number(_))
    }

    /// Appends the compact JSON text.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => quote(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quote(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The compact JSON text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// A short description of the value for error messages: `null`, `7`,
    /// `"spring"`, `an array`…
    pub fn describe(&self) -> String {
        match self {
            Json::Null | Json::Bool(_) | Json::Number(_) => self.text(),
            Json::String(s) if char_count(s) > 40 => "a long string".into(),
            // Quoted as JSON, the notation a JS developer reads.
            Json::String(_) => self.text(),
            Json::Array(_) => "an array".into(),
            Json::Object(_) => "an object".into(),
        }
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::String(s.to_string())
    }
}

impl From<u64> for Json {
    fn from(n: u64) -> Json {
        Json::Number(n.to_string())
    }
}

/// The relay's (and the tests') serde_json values, for the shared rules.
impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Json {
        use serde_json::Value;
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.to_string()),
            Value::String(s) => Json::String(s.clone()),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::from(map),
        }
    }
}

impl From<&serde_json::Map<String, serde_json::Value>> for Json {
    fn from(map: &serde_json::Map<String, serde_json::Value>) -> Json {
        Json::Object(map.iter().map(|(k, v)| (k.clone(), Json::from(v))).collect())
    }
}

/// A non-empty run of ASCII digits as a number, `None` beyond `u64` (the
/// SDK's one integer parser: `str::parse` accepts signs and costs the
/// browser bundle its generic code).
pub(crate) fn digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// [`digits`] with an optional leading minus sign, within `i64`.
fn integer(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) => 0i64.checked_sub_unsigned(digits(rest)?),
        None => i64::try_from(digits(s)?).ok(),
    }
}

/// The characters (Unicode scalar values) in `s`, as `s.chars().count()`
/// counts them, by its bytes that do not continue a character: smaller than
/// the standard library's vectorised count.
pub fn char_count(s: &str) -> usize {
    s.bytes().filter(|b| b & 0xC0 != 0x80).count()
}

/// Appends `s` as a JSON string, escaped as serde_json and `JSON.stringify`
/// escape it.
pub fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => {
                out.push_str("\\u00");
                push_hex(c as u8, out);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `byte` as two lowercase hex digits (no `fmt` machinery: the
/// storage scope, UUIDs and JSON escapes all need only this).
pub(crate) fn push_hex(byte: u8, out: &mut String) {
    for nibble in [byte >> 4, byte & 15] {
        out.push(char::from(b"0123456789abcdef"[usize::from(nibble)]));
    }
}

/// Writes `{"a":…,"b":…}` member by member (the SDK's hand-written records).
pub struct ObjectWriter<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        ObjectWriter { out, first: true }
    }

    /// Starts member `key`; the caller appends its value to the returned string.
    pub fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        quote(key, self.out);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        quote(value, self.key(key));
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    pub fn end(&mut self) {
        self.out.push('}');
    }
}

/// Reads from `text` (already UTF-8: strings are copied out as slices cut
/// at ASCII quotes and backslashes, never validated again).
struct Parser<'a> {
    text: &'a str,
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.space();
        let found = self.s.get(self.at) == Some(&b);
        if found {
            self.at += 1;
        }
        found
    }

    fn literal(&mut self, word: &[u8], value: Json) -> Option<Json> {
        let found = self.s.get(self.at..self.at + word.len()) == Some(word);
        found.then(|| {
            self.at += word.len();
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.space();
        match *self.s.get(self.at)? {
            b'n' => self.literal(b"null", Json::Null),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'"' => self.string().map(Json::String),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value(depth + 1)?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                Some(Json::Array(items))
            }
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.space();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        members.push((key, self.value(depth + 1)?));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                Some(Json::Object(members))
            }
            _ => self.number(),
        }
    }

    /// The number grammar of RFC 8259, kept as text.
    fn number(&mut self) -> Option<Json> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.s.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at > from
        };
        if self.s.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let leading_zero = self.s.get(self.at) == Some(&b'0');
        if !digits(self) || (leading_zero && self.at - start > 1 + usize::from(self.s[start] == b'-')) {
            return None;
        }
        if self.s.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digits(self) {
                return None;
            }
        }
        if matches!(self.s.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.s.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        Some(Json::Number(self.text[start..self.at].to_string()))
    }

    fn string(&mut self) -> Option<String> {
        if self.s.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        let mut out = String::new();
        let mut run = self.at;
        loop {
            let b = *self.s.get(self.at)?;
            if b == b'"' || b == b'\\' {
                out.push_str(&self.text[run..self.at]);
            }
            self.at += 1;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    let c = match e {
                        b'"' | b'\\' | b'/' => e as char,
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                // A surrogate pair: the second half must follow.
                                if self.s.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return None;
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            char::from_u32(code)?
                        }
                        _ => return None,
                    };
                    out.push(c);
                    run = self.at;
                }
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.at..self.at + 4)?;
        self.at += 4;
        digits.iter().try_fold(0u32, |n, d| Some(n * 16 + (*d as char).to_digit(16)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_writes_back_what_serde_json_writes() {
        let value = json!({
            "s": "é \"quoted\" \\ \n\t\u{1} 🎉", "n": [0, -1, 2.5, 1e21, -0.0001, 18446744073709551615u64],
            "b": [true, false, null], "o": {"nested": {"deep": []}}, "e": {}
        });
        let text = serde_json::to_string(&value).unwrap();
        let parsed = Json::parse(&text).expect("parses");
        assert_eq!(parsed, Json::from(&value));
        assert_eq!(parsed.text(), text, "written exactly as serde_json writes it");
        assert_eq!(Json::parse(" [1 , {\"a\" : \"\\u00e9\\ud83c\\udf89\"} ] ").unwrap().text(), "[1,{\"a\":\"é🎉\"}]");
    }

    #[test]
    fn rejects_what_is_not_json() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"a",
            "\"\\x\"",
            "\"\u{1}\"",
            "{a:1}",
            "[1] 2",
            "\"\\ud83c\"",
            "NaN",
        ] {
            assert_eq!(Json::parse(bad), None, "{bad:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(Json::parse(&deep), None, "nesting is bounded");
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        let n = |t: &str| Json::Number(t.into());
        assert_eq!(
            (n("9").as_u64(), n("9.0").as_u64(), n("-1").as_u64(), n("1e2").as_u64()),
            (Some(9), None, None, None)
        );
        assert_eq!(n("18446744073709551616").as_u64(), None, "beyond u64");
        assert_eq!(
            (n("-42").as_i64(), n("42").as_i64(), n("-9223372036854775808").as_i64()),
            (Some(-42), Some(42), Some(i64::MIN))
        );
        for (text, want) in
            [("0.2", 0.2), ("-2.5", -2.5), ("1e-7", 1e-7), ("25E-1", 2.5), ("3", 3.0), ("1.5e+3", 1500.0)]
        {
            assert!((n(text).as_f64().unwrap() - want).abs() <= want.abs() * 1e-15, "{text}");
        }
    }

    #[test]
    fn characters_are_counted_as_chars_count_does() {
        for s in ["", "abc", "é", "日本語", "🎉 party", "a\u{0}b"] {
            assert_eq!(char_count(s), s.chars().count(), "{s:?}");
        }
    }

    #[test]
    fn objects_keep_their_order_and_the_last_repeated_key() {
        let mut o = Json::parse(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(o.get("b"), Some(&Json::Number("3".into())));
        o.insert("a", "x".into());
        assert_eq!(o.text(), r#"{"b":1,"b":3,"a":"x"}"#);
        assert_eq!(Json::Null.get("a"), None);
    }

    #[test]
    fn descriptions_read_like_javascript() {
        let d = |v: serde_json::Value| Json::from(&v).describe();
        assert_eq!(
            (d(json!(null)), d(json!(true)), d(json!(9.5)), d(json!("x"))),
            ("null".into(), "true".into(), "9.5".into(), "\"x\"".into())
        );
        assert_eq!(
            (d(json!("x".repeat(41))), d(json!([])), d(json!({}))),
            ("a long string".into(), "an array".into(), "an object".into())
        );
    }
}
