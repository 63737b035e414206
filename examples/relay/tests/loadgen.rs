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
    for key in ["ingest_events_per_s", "deliveries_per_s", "event_to_webhook_p99_ms"] {
        assert!(v["targets"][key]["measured"].is_number(), "{key}: {v}");
    }
}
