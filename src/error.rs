//! The crate's one error type.
//!
//! Every rejected input names the field it is about (`score`,
//! `events[3].properties.surveyId`, `options.endpoint`) so a developer can fix
//! the call without reading our source. The browser layer turns it into a JS
//! `Error` once; the relay turns it into a 4xx `{"error":{"code","message"}}`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A value given by a caller (a JS argument, an `init` option, a wire field)
    /// is missing, of the wrong type or out of range.
    Invalid { field: String, reason: String },
    /// A value is larger than its limit, in bytes or characters.
    TooLarge { field: String, size: usize, limit: usize },
    /// A batch speaks a wire version this build does not.
    UnsupportedVersion(u64),
    /// A body that is not JSON, or JSON of the wrong shape.
    Malformed { field: String, reason: String },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }

    /// A stable machine-readable code, part of the wire contract.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid_field",
            Error::TooLarge { .. } => "too_large",
            Error::UnsupportedVersion(_) => "unsupported_version",
            Error::Malformed { .. } => "invalid_json",
        }
    }

    /// The path of the offending field, empty when the whole input is at fault.
    pub fn field(&self) -> &str {
        match self {
            Error::Invalid { field, .. } | Error::TooLarge { field, .. } | Error::Malformed { field, .. } => field,
            Error::UnsupportedVersion(_) => "v",
        }
    }

    /// Nests the field under `prefix`: `score` inside `events[3].properties`
    /// becomes `events[3].properties.score`.
    pub fn within(mut self, prefix: &str) -> Self {
        if let Error::Invalid { field, .. } | Error::TooLarge { field, .. } | Error::Malformed { field, .. } = &mut self
        {
            *field = join_path(prefix, field);
        }
        self
    }
}

pub(crate) fn join_path(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => prefix.to_string(),
        _ if field.starts_with('[') => format!("{prefix}{field}"),
        _ => format!("{prefix}.{field}"),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.field();
        if !field.is_empty() {
            write!(f, "{field} ")?;
        }
        match self {
            Error::Invalid { reason, .. } | Error::Malformed { reason, .. } => f.write_str(reason),
            Error::TooLarge { size, limit, .. } => write!(f, "is too large ({size} bytes, the limit is {limit})"),
            Error::UnsupportedVersion(v) => write!(f, "is {v}, but only version 1 is supported"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_nested_field() {
        let e =
            Error::invalid("score", "must be an integer from 0 to 10, got 11").within("properties").within("events[3]");
        assert_eq!(e.field(), "events[3].properties.score");
        assert_eq!(e.to_string(), "events[3].properties.score must be an integer from 0 to 10, got 11");
        assert_eq!(e.code(), "invalid_field");
        let e = Error::invalid("[2].questionId", "is required").within("answers");
        assert_eq!(e.field(), "answers[2].questionId");
        assert_eq!(Error::UnsupportedVersion(2).to_string(), "v is 2, but only version 1 is supported");
    }
}
