//! The load generator runs end to end (tiny numbers; the real figures come
//! from `cargo xtask bench` on a release build).

#[test]
fn loadgen_quick_run_prints_complete_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-loadgen")).arg("--quick").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(v["ingest"]["events"].as_u64().unwrap() > 0);
    assert_eq!(v["ingest"]["errors"], 0);
    assert_eq!(v["ingest"]["stored_events"], v["ingest"]["events"], "every acknowledged event is stored");
    assert_eq!(v["delivery"]["delivered"], v["delivery"]["backlog"]);
    assert_eq!(v["latency"]["delivered"], v["latency"]["expected"]);
    assert_eq!(v["pipeline"]["delivered"], v["pipeline"]["events_acked"]);
    // The scale rows ran relay processes: on SQLite, and on 1-3 sharing PostgreSQL (when it is up).
    let scale = &v["scale"];
    let mut rows = vec!["sqlite_1"];
    if !scale["postgres"].is_string() {
        rows.extend(["postgres_1", "postgres_2", "postgres_3"]);
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the PostgreSQL rows were skipped under CI: {}", scale["postgres"]);
    }
    for row in rows {
        let r = &scale[row];
        assert_eq!(r["ingest_errors"], 0, "{row}: {r}");
        assert!(r["ingest_events_per_s"].as_f64().unwrap() > 0.0, "{row}: {r}");
        assert_eq!(r["delivered"], r["backlog"], "{row}: every delivery of the backlog arrived: {r}");
        assert!(r["ingest_busy_cores"].as_f64().unwrap() > 0.0, "{row}: {r}");
    }
    for key in ["ingest_events_per_s", "deliveries_per_s", "event_to_webhook_p99_ms"] {
        assert!(v["targets"][key]["measured"].is_number(), "{key}: {v}");
    }
}
