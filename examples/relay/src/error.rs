//! The crate's one error type, turned into an HTTP answer once (in
//! [`IntoResponse`]) and into an exit code once (in `main.rs`).

use std::fmt;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cuecast::wire::{ErrorBody, ErrorDetail};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file has problems; each one carries its line.
    #[error("{path}: {} problem(s) in the configuration:\n{}", errors.len(), ConfigErrors(errors))]
    Config { path: String, errors: Vec<ConfigError> },
    /// A batch that the wire contract rejects (400, or 413 for an oversized event).
    #[error(transparent)]
    Wire(#[from] cuecast::Error),
    #[error("unknown write key")]
    UnknownWriteKey,
    #[error("origin {0} is not allowed for this write key")]
    OriginNotAllowed(String),
    #[error("body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("body could not be read: {0}")]
    BadBody(String),
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("Content-Encoding {0:?} is not supported (send gzip or no encoding)")]
    UnsupportedEncoding(String),
    #[error("too many requests {per}; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { per: &'static str, retry_after: Duration },
    #[error("the relay is catching up with its backlog; retry in {}s", retry_after.as_secs().max(1))]
    Overloaded { retry_after: Duration },
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// Admin input that breaks a rule: every problem, each naming its field.
    #[error("{}", FieldErrors(.0))]
    Invalid(Vec<FieldError>),
    /// Creating something whose id is taken.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (disk full, file locked, corrupt, migration missing).
    #[error("storage: {0}")]
    Storage(String),
    /// Network or local IO outside storage.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A command-line usage problem.
    #[error("{0}")]
    Usage(String),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Storage(format!("PostgreSQL: {}", crate::storage::postgres::pg_message(&e)))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// One problem in a configuration file, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// One problem with a field of an admin request (`field` is its JSON key,
/// e.g. `url` or `headers.X-Team`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

struct ConfigErrors<'a>(&'a [ConfigError]);

impl fmt::Display for ConfigErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl Error {
    /// The stable code a client sees (also the `reason` label of rejections).
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The status and stable code a client sees.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Wire(e) => (StatusCode::BAD_REQUEST, e.code()),
            Error::UnknownWriteKey => (StatusCode::UNAUTHORIZED, "unknown_write_key"),
            Error::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::BadBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Error::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Error::UnsupportedEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Config { .. } | Error::Storage(_) | Error::Io(_) | Error::Usage(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Internals (paths, SQL errors) stay in the log, never in the answer.
        let message = if status == StatusCode::SERVICE_UNAVAILABLE && !matches!(self, Error::Overloaded { .. }) {
            tracing::error!(error = %self, "request failed");
            "the relay cannot store events right now; retry later".to_string()
        } else {
            self.to_string()
        };
        let mut response = match &self {
            // The admin API lists every field problem, for forms to show each next to its field.
            Error::Invalid(fields) => {
                let body = serde_json::json!({"error": {"code": code, "message": message, "fields": fields}});
                (status, axum::Json(body)).into_response()
            }
            _ => (status, axum::Json(ErrorBody { error: ErrorDetail { code: code.into(), message } })).into_response(),
        };
        let retry_after = match &self {
            Error::RateLimited { retry_after, .. } | Error::Overloaded { retry_after } => Some(*retry_after),
            Error::Storage(_) => Some(Duration::from_secs(5)),
            _ => None,
        };
        if let Some(after) = retry_after {
            // Retry-After counts whole seconds; round up so a client never comes back early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
