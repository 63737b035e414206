//! `GET /events`, `/events/{id}` and `/event-names`: stored events, newest
//! first, filtered by name, user and time; one event with the deliveries it
//! created; the names a webhook can choose from. Also the query checks the
//! other lists share (times, pages).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as CURSOR;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ErrorResponse, Page, PageQuery};
use crate::error::{Error, FieldError, Result};
use crate::storage::admin::{EventCursor, EventDetail, EventFilter, EventSummary};
use crate::Relay;

/// Filters of `GET /events` (times as text, so a bad one is a 400 naming it).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of this name.
    pub name: Option<String>,
    /// Only events of this `userId`.
    pub user_id: Option<String>,
    /// Only events received at or after this time (Unix ms).
    #[param(value_type = Option<i64>)]
    pub since: Option<String>,
    /// Only events received at or before this time (Unix ms).
    #[param(value_type = Option<i64>)]
    pub until: Option<String>,
}

#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(EventsQuery, PageQuery),
    responses(
        (status = 200, description = "Events, newest received first", body = Page<EventSummary>),
        (status = 400, description = "A filter or the cursor is invalid; `fields` names it", body = ErrorResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorResponse),
    )
)]
pub async fn list_events(
    State(relay): State<Arc<Relay>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<EventSummary>>> {
    let mut errors = Vec::new();
    let query = filters(query, &mut errors);
    let page = page_query(page, &mut errors);
    let (since, until) = time_range(query.since.as_deref(), query.until.as_deref(), &mut errors);
    let after = cursor(&page, &mut errors, decode_cursor);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let filter = EventFilter { name: query.name, user_id: query.user_id, since, until };
    let limit = page.limit();
    let items = relay.storage.list_events(filter, after, limit + 1).await?;
    Ok(Json(page_of(items, limit, |last| {
        encode_cursor(&EventCursor { received_at: last.received_at, id: last.id.clone() })
    })))
}

#[utoipa::path(
    get,
    path = "/events/{id}",
    tag = "events",
    params(("id" = String, Path, description = "The event's id")),
    responses(
        (status = 200, description = "The stored event and the deliveries it created", body = EventDetail),
        (status = 404, description = "No event has this id", body = ErrorResponse),
    )
)]
pub async fn get_event(State(relay): State<Arc<Relay>>, Path(id): Path<String>) -> Result<Json<EventDetail>> {
    match relay.storage.event(id.clone()).await? {
        Some(event) => Ok(Json(event)),
        None => Err(Error::NotFound(format!("no event {id}"))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventNames {
    /// The built-in kinds, then every other name seen in stored events, in name order.
    pub names: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/event-names",
    tag = "events",
    responses(
        (status = 200, description = "Names a webhook can subscribe to", body = EventNames),
        (status = 401, description = "Missing or wrong admin token", body = ErrorResponse),
    )
)]
pub async fn event_names(State(relay): State<Arc<Relay>>) -> Result<Json<EventNames>> {
    let mut names: Vec<String> = cuecast::events::BUILT_IN.iter().map(|n| n.to_string()).collect();
    for name in relay.storage.event_names().await? {
        if !cuecast::events::BUILT_IN.contains(&name.as_str()) {
            names.push(name);
        }
    }
    Ok(Json(EventNames { names }))
}

/// A list's `?limit=&cursor=`; a limit that is not a number is a field error.
pub(super) fn page_query(page: Result<Query<PageQuery>, QueryRejection>, errors: &mut Vec<FieldError>) -> PageQuery {
    page.map(|q| q.0).unwrap_or_else(|_| {
        errors.push(FieldError::new("limit", format!("must be a whole number from 1 to {}", PageQuery::MAX)));
        PageQuery::default()
    })
}

/// A list's filters; a query string that does not parse is a field error on `query`.
pub(super) fn filters<T: Default>(query: Result<Query<T>, QueryRejection>, errors: &mut Vec<FieldError>) -> T {
    query.map(|q| q.0).unwrap_or_else(|e| {
        errors.push(FieldError::new("query", e.body_text()));
        T::default()
    })
}

/// The page's `cursor` read by `decode`; one it cannot read is a field error.
pub(super) fn cursor<T>(
    page: &PageQuery,
    errors: &mut Vec<FieldError>,
    decode: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let raw = page.cursor.as_deref()?;
    let cursor = decode(raw);
    if cursor.is_none() {
        errors.push(FieldError::new("cursor", "is not a cursor this list returned"));
    }
    cursor
}

/// One page from up to `limit + 1` rows: the row more than asked says that
/// there is a next page, which starts after the last one kept (`next_cursor`).
pub(super) fn page_of<T>(mut items: Vec<T>, limit: usize, next_cursor: impl FnOnce(&T) -> String) -> Page<T> {
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        next_cursor(items.last().expect("limit is at least 1"))
    });
    Page { items, next }
}

/// `since` and `until` as Unix ms; each bad one, or `since` after `until`, is a field error.
pub(super) fn time_range(
    since: Option<&str>,
    until: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> (Option<i64>, Option<i64>) {
    let mut millis = |field: &str, value: Option<&str>| {
        let value = value?;
        let parsed = value.trim().parse::<i64>().ok().filter(|v| *v >= 0);
        if parsed.is_none() {
            errors.push(FieldError::new(field, format!("{value:?} is not a time in milliseconds since 1970")));
        }
        parsed
    };
    let (since, until) = (millis("since", since), millis("until", until));
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            errors.push(FieldError::new("since", format!("{s} is after until ({u})")));
        }
    }
    (since, until)
}

fn encode_cursor(c: &EventCursor) -> String {
    CURSOR.encode(format!("{}:{}", c.received_at, c.id))
}

fn decode_cursor(s: &str) -> Option<EventCursor> {
    let text = String::from_utf8(CURSOR.decode(s).ok()?).ok()?;
    let (at, id) = text.split_once(':')?;
    Some(EventCursor { received_at: at.parse().ok()?, id: id.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = EventCursor { received_at: 1_764_861_412_001, id: "019aea5c:9e01".into() };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(&CURSOR.encode("x:y")), None);
    }

    #[test]
    fn times_name_their_field() {
        let mut errors = Vec::new();
        assert_eq!(time_range(Some("5"), None, &mut errors), (Some(5), None));
        assert!(errors.is_empty());
        time_range(Some("soon"), Some("-1"), &mut errors);
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["since", "until"]);
        errors.clear();
        time_range(Some("9"), Some("3"), &mut errors);
        assert_eq!(errors, [FieldError::new("since", "9 is after until (3)")]);
    }
}
