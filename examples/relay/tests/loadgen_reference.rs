//! The load generator's physical references, fan-out and stored-events rows
//! run end to end and say what they measured (tiny numbers, no scale rows;
//! `loadgen.rs` checks the rest).

#[test]
fn loadgen_quick_run_measures_references_fanout_and_stored_rows() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cuecast-loadgen"))
        .args(["--quick", "--no-scale"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");

    let reference = &v["reference"];
    let bare = &reference["bare_server"];
    assert_eq!(bare["errors"], 0, "{bare}");
    assert!(bare["events_per_s"].as_f64().unwrap() > 0.0, "{bare}");
    assert!(bare["ack_ms"]["p99"].is_number(), "{bare}");
    assert!(reference["raw_sqlite"]["events"].as_u64().unwrap() > 0, "{reference}");
    if reference["raw_postgres"].is_string() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "the PostgreSQL reference was skipped under CI: {}", reference["raw_postgres"]);
    } else {
        assert!(reference["raw_postgres"]["events"].as_u64().unwrap() > 0, "{reference}");
    }
    let ratios = &reference["ratio_cuecast_to_reference"];
    for key in
        ["ingest_events_per_s_to_bare_server", "ingest_ack_p99_to_bare_server", "ingest_events_per_s_to_raw_sqlite"]
    {
        assert!(ratios[key].as_f64().unwrap() > 0.0, "{key}: {ratios}");
    }
    for section in ["bare_server", "raw_sqlite"] {
        assert!(reference[section]["what"].is_string(), "{section} says what it is");
    }

    for hooks in [1, 10, 100] {
        let row = &v["fanout"][format!("webhooks_{hooks}")];
        assert_eq!(row["webhooks"], hooks, "{row}");
        assert_eq!(row["ingest_errors"], 0, "{row}");
        assert!(row["ingest_events_per_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["backlog"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["delivered"], row["backlog"], "every delivery of the backlog arrived: {row}");
    }

    let stored = &v["stored"];
    assert_eq!(stored["stored_events"], 10_000, "{stored}");
    assert_eq!(stored["ingest_errors"], 0, "{stored}");
    assert_eq!(stored["delivered"], stored["backlog"], "{stored}");
    assert!(stored["ratio_to_empty_file"]["ingest_events_per_s"].as_f64().unwrap() > 0.0, "{stored}");
}
