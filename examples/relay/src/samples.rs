//! Sample events for `send-test` and the admin API's test and preview: the SDK's golden fixtures, so a test
//! delivery looks exactly like a real one.

use serde_json::Value;

use crate::catalog::Catalog;

const FIXTURES: [&str; 7] = [
    include_str!("../../../tests/fixtures/events/survey_submitted_nps.json"),
    include_str!("../../../tests/fixtures/events/survey_submitted_answers.json"),
    include_str!("../../../tests/fixtures/events/shoutout_clicked.json"),
    include_str!("../../../tests/fixtures/events/onboarding_task_completed.json"),
    include_str!("../../../tests/fixtures/events/walkthru_goal_reached.json"),
    include_str!("../../../tests/fixtures/events/user_identified.json"),
    include_str!("../../../tests/fixtures/events/custom.json"),
];

/// A sample event for webhook `hook`: preferably one that passes its `when`,
/// else one whose name matches, else the custom fixture renamed.
pub fn for_webhook(catalog: &Catalog, hook: usize) -> Value {
    let samples: Vec<Value> = FIXTURES.iter().map(|s| serde_json::from_str(s).expect("fixtures are JSON")).collect();
    let name = |v: &Value| v["event"].as_str().unwrap_or_default().to_string();
    let routed =
        |v: &Value| catalog.rules.route(&name(v), v).into_iter().find(|(h, _)| *h == hook).map(|(_, verdict)| verdict);
    let mut chosen = samples
        .iter()
        .find(|v| matches!(routed(v), Some(Ok(true))))
        .or_else(|| samples.iter().find(|v| routed(v).is_some()))
        .cloned()
        .unwrap_or_else(|| {
            let mut custom = samples[6].clone();
            let pattern = catalog.webhooks[hook].events.first();
            let renamed = match pattern {
                Some(crate::policy::Pattern::Exact(n)) => n.clone(),
                Some(crate::policy::Pattern::Prefix(p)) => format!("{p}test"),
                _ => "relay.test".into(),
            };
            custom["event"] = Value::String(renamed);
            custom
        });
    chosen["id"] = Value::String(uuid::Uuid::new_v4().to_string());
    chosen
}
