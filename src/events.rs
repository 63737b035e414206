//! The built-in guidance events and the rules every event obeys.
//!
//! These checks run twice: in the browser, where a typed helper such as
//! `surveySubmitted()` throws before anything is queued, and in the relay,
//! which rejects a batch from a client that skipped them. One definition keeps
//! the two sides from drifting.

use crate::error::{join_path, Error};
use crate::json::Json;

pub const SHOUTOUT_CLICKED: &str = "shoutout.clicked";
pub const SURVEY_SUBMITTED: &str = "survey.submitted";
pub const ONBOARDING_TASK_COMPLETED: &str = "onboarding.task_completed";
pub const WALKTHRU_GOAL_REACHED: &str = "walkthru.goal_reached";
pub const USER_IDENTIFIED: &str = "user.identified";

/// Every built-in event name, in the order the docs list them.
pub const BUILT_IN: [&str; 5] =
    [SHOUTOUT_CLICKED, SURVEY_SUBMITTED, ONBOARDING_TASK_COMPLETED, WALKTHRU_GOAL_REACHED, USER_IDENTIFIED];

/// Longest event name, id or user id, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Largest serialised event (with its context), in bytes.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Allowed values of `shoutout.clicked`'s `action`.
pub const SHOUTOUT_ACTIONS: [&str; 3] = ["cta", "dismiss", "link"];

/// Checks an event name: not blank, at most 200 characters, no control characters.
pub fn check_name(field: &str, name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::invalid(field, "must be a non-empty string"));
    }
    check_len(field, name)?;
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks an identifier (`userId`, `surveyId`, …): a non-blank string of at most 200 characters.
pub fn check_id(field: &str, value: Option<&Json>) -> Result<(), Error> {
    match value {
        None | Some(Json::Null) => Err(Error::invalid(field, "is required")),
        Some(Json::String(s)) => check_id_text(field, s),
        Some(other) => Err(Error::invalid(field, format!("must be a non-empty string, got {}", other.describe()))),
    }
}

/// [`check_id`] of a string.
pub fn check_id_text(field: &str, s: &str) -> Result<(), Error> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, format!("must be a non-empty string, got {}", Json::from(s).describe())));
    }
    check_len(field, s)
}

fn check_len(field: &str, s: &str) -> Result<(), Error> {
    let chars = crate::json::char_count(s);
    if chars > MAX_NAME_CHARS {
        return Err(Error::invalid(field, format!("must be at most {MAX_NAME_CHARS} characters, got {chars}")));
    }
    Ok(())
}

/// A member the contract fills in when it is absent (`shoutout.clicked`'s
/// `action` is `"cta"`), for the caller to add.
pub type Default = Option<(&'static str, &'static str)>;

/// Checks the properties of a built-in event (an object) and says which
/// default to fill in. Custom event names have no property rules beyond
/// being JSON.
///
/// ```
/// use cuecast::json::Json;
/// let props = Json::parse(r#"{"surveyId": "nps-q3", "kind": "nps", "score": 11}"#).unwrap();
/// let err = cuecast::events::check_properties("survey.submitted", &props).unwrap_err();
/// assert_eq!(err.to_string(), "score must be an integer from 0 to 10, got 11");
/// ```
pub fn check_properties(event: &str, props: &Json) -> Result<Default, Error> {
    match event {
        SHOUTOUT_CLICKED => {
            check_id("shoutoutId", props.get("shoutoutId"))?;
            match props.get("action") {
                None | Some(Json::Null) => return Ok(Some(("action", "cta"))),
                Some(Json::String(a)) if SHOUTOUT_ACTIONS.contains(&a.as_str()) => {}
                Some(other) => {
                    return Err(Error::invalid(
                        "action",
                        format!("must be one of cta, dismiss, link, got {}", other.describe()),
                    ))
                }
            }
        }
        SURVEY_SUBMITTED => {
            check_id("surveyId", props.get("surveyId"))?;
            optional_id(props, "kind")?;
            let nps = props.get("kind").and_then(Json::as_str) == Some("nps");
            match props.get("score") {
                Some(v) if nps => check_uint("score", v, 0, 10)?,
                Some(Json::Number(_)) | None => {}
                Some(other) => {
                    return Err(Error::invalid("score", format!("must be a number, got {}", other.describe())))
                }
            }
            if nps && props.get("score").is_none() {
                return Err(Error::invalid("score", "is required when kind is 'nps' (an integer from 0 to 10)"));
            }
            optional_type(props, "comment", "a string", |v| matches!(v, Json::String(_)))?;
            optional_type(props, "needsHelp", "a boolean", |v| matches!(v, Json::Bool(_)))?;
            if let Some(answers) = props.get("answers") {
                check_answers(answers).map_err(|e| e.within("answers"))?;
            } else if props.get("score").is_none() {
                return Err(Error::invalid("answers", "is required when there is no score"));
            }
        }
        ONBOARDING_TASK_COMPLETED => {
            check_id("taskId", props.get("taskId"))?;
            optional_id(props, "checklistId")?;
            if let Some(v) = props.get("completed") {
                check_uint("completed", v, 0, u32::MAX.into())?;
            }
            if let Some(v) = props.get("total") {
                check_uint("total", v, 1, u32::MAX.into())?;
            }
            if let (Some(done), Some(total)) =
                (props.get("completed").and_then(Json::as_u64), props.get("total").and_then(Json::as_u64))
            {
                if done > total {
                    return Err(Error::invalid("completed", format!("must not exceed total ({total}), got {done}")));
                }
            }
        }
        WALKTHRU_GOAL_REACHED => {
            check_id("walkthruId", props.get("walkthruId"))?;
            optional_id(props, "goal")?;
        }
        _ => {}
    }
    Ok(None)
}

fn optional_id(props: &Json, field: &str) -> Result<(), Error> {
    match props.get(field) {
        None => Ok(()),
        v => check_id(field, v),
    }
}

fn optional_type(props: &Json, field: &str, what: &str, ok: fn(&Json) -> bool) -> Result<(), Error> {
    match props.get(field) {
        Some(v) if !ok(v) => Err(Error::invalid(field, format!("must be {what}, got {}", v.describe()))),
        _ => Ok(()),
    }
}

fn check_uint(field: &str, v: &Json, min: u64, max: u64) -> Result<(), Error> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(()),
        _ if max == u64::from(u32::MAX) => {
            Err(Error::invalid(field, format!("must be an integer of at least {min}, got {}", v.describe())))
        }
        _ => Err(Error::invalid(field, format!("must be an integer from {min} to {max}, got {}", v.describe()))),
    }
}

fn check_answers(answers: &Json) -> Result<(), Error> {
    let Json::Array(items) = answers else {
        return Err(Error::invalid("", format!("must be an array, got {}", answers.describe())));
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("[{i}]");
        if !matches!(item, Json::Object(_)) {
            return Err(Error::invalid(
                at,
                format!("must be an object {{questionId, answer}}, got {}", item.describe()),
            ));
        }
        check_id("questionId", item.get("questionId")).map_err(|e| e.within(&at))?;
        let ok = match item.get("answer") {
            Some(Json::Array(parts)) => parts.iter().all(|p| matches!(p, Json::String(_) | Json::Number(_))),
            Some(Json::Object(_)) | None => false,
            Some(_) => true,
        };
        if !ok {
            let got = item.get("answer").map_or("nothing".into(), Json::describe);
            return Err(Error::invalid(
                join_path(&at, "answer"),
                format!("must be a string, number, boolean, null or a list of strings, got {got}"),
            ));
        }
    }
    Ok(())
}

/// Size of a value's compact JSON, without building the string (the relay's
/// check of an event it decoded).
pub fn json_size<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising our own types into a sink that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn check(event: &str, props: Value) -> Result<Json, String> {
        let mut props = Json::from(&props);
        let default = check_properties(event, &props).map_err(|e| e.to_string())?;
        if let Some((key, value)) = default {
            props.insert(key, value.into());
        }
        Ok(props)
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("event", "report.exported").is_ok());
        assert_eq!(check_name("event", "  ").unwrap_err().to_string(), "event must be a non-empty string");
        let long = "x".repeat(201);
        assert_eq!(
            check_name("event", &long).unwrap_err().to_string(),
            "event must be at most 200 characters, got 201"
        );
        assert!(check_name("event", &"é".repeat(200)).is_ok(), "characters, not bytes");
        assert_eq!(check_name("event", "a\nb").unwrap_err().field(), "event");
    }

    #[test]
    fn shoutout_action_defaults_to_cta_and_is_checked() {
        assert_eq!(
            check(SHOUTOUT_CLICKED, json!({"shoutoutId": "spring"})).unwrap().get("action"),
            Some(&"cta".into())
        );
        assert!(check(SHOUTOUT_CLICKED, json!({"shoutoutId": "spring", "action": "link"})).is_ok());
        assert_eq!(
            check(SHOUTOUT_CLICKED, json!({"shoutoutId": "spring", "action": "close"})).unwrap_err(),
            r#"action must be one of cta, dismiss, link, got "close""#
        );
        assert_eq!(check(SHOUTOUT_CLICKED, json!({})).unwrap_err(), "shoutoutId is required");
        assert_eq!(
            check(SHOUTOUT_CLICKED, json!({"shoutoutId": 7})).unwrap_err(),
            "shoutoutId must be a non-empty string, got 7"
        );
    }

    #[test]
    fn nps_score_is_an_integer_from_0_to_10() {
        for ok in [0, 6, 10] {
            assert!(check(SURVEY_SUBMITTED, json!({"surveyId": "q3", "kind": "nps", "score": ok})).is_ok());
        }
        for (bad, got) in [(json!(11), "11"), (json!(-1), "-1"), (json!(9.5), "9.5"), (json!("9"), "\"9\"")] {
            assert_eq!(
                check(SURVEY_SUBMITTED, json!({"surveyId": "q3", "kind": "nps", "score": bad})).unwrap_err(),
                format!("score must be an integer from 0 to 10, got {got}")
            );
        }
        assert_eq!(
            check(SURVEY_SUBMITTED, json!({"surveyId": "q3", "kind": "nps"})).unwrap_err(),
            "score is required when kind is 'nps' (an integer from 0 to 10)"
        );
        // Other kinds (CSAT 1-5, CES 1-7) only need a number.
        assert!(check(SURVEY_SUBMITTED, json!({"surveyId": "q3", "kind": "csat", "score": 4.5})).is_ok());
    }

    #[test]
    fn survey_fields_are_typed() {
        let base = json!({"surveyId": "q3", "kind": "nps", "score": 3});
        let with = |k: &str, v: Value| {
            let mut p = base.clone();
            p[k] = v;
            check(SURVEY_SUBMITTED, p)
        };
        assert_eq!(with("comment", json!(5)).unwrap_err(), "comment must be a string, got 5");
        assert_eq!(with("needsHelp", json!("yes")).unwrap_err(), r#"needsHelp must be a boolean, got "yes""#);
        assert_eq!(with("answers", json!({})).unwrap_err(), "answers must be an array, got an object");
        assert_eq!(
            with("answers", json!([{"questionId": "q1", "answer": "Yes"}, {"answer": 1}])).unwrap_err(),
            "answers[1].questionId is required"
        );
        assert_eq!(
            with("answers", json!([{"questionId": "q1", "answer": {"a": 1}}])).unwrap_err(),
            "answers[0].answer must be a string, number, boolean, null or a list of strings, got an object"
        );
        assert!(with(
            "answers",
            json!([{"questionId": "q1", "answer": ["a", "b"]}, {"questionId": "q2", "answer": null}])
        )
        .is_ok());
        assert_eq!(
            check(SURVEY_SUBMITTED, json!({"surveyId": "s"})).unwrap_err(),
            "answers is required when there is no score"
        );
    }

    #[test]
    fn onboarding_progress_is_consistent() {
        assert!(check(ONBOARDING_TASK_COMPLETED, json!({"taskId": "crm", "completed": 3, "total": 5})).is_ok());
        assert_eq!(
            check(ONBOARDING_TASK_COMPLETED, json!({"taskId": "crm", "completed": 6, "total": 5})).unwrap_err(),
            "completed must not exceed total (5), got 6"
        );
        assert_eq!(
            check(ONBOARDING_TASK_COMPLETED, json!({"taskId": "crm", "total": 0})).unwrap_err(),
            "total must be an integer of at least 1, got 0"
        );
        assert_eq!(check(ONBOARDING_TASK_COMPLETED, json!({"checklistId": "x"})).unwrap_err(), "taskId is required");
    }

    #[test]
    fn walkthru_and_custom_events() {
        assert!(check(WALKTHRU_GOAL_REACHED, json!({"walkthruId": "w", "goal": "sent"})).is_ok());
        assert_eq!(
            check(WALKTHRU_GOAL_REACHED, json!({"walkthruId": "w", "goal": ""})).unwrap_err(),
            "goal must be a non-empty string, got \"\""
        );
        assert!(check("report.exported", json!({"anything": [1, {"goes": true}]})).is_ok());
    }

    #[test]
    fn json_size_matches_serialisation() {
        let v = json!({"a": "é", "b": [1, 2.5, null]});
        assert_eq!(json_size(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
