//! Build orchestration for cuecast: `cargo xtask <command>`.
//!
//! # Layout
//! - `main.rs`: command dispatch and the small process helpers.
//! - `setup.rs`: installs what is missing (wasm target, wasm-bindgen CLI
//!   matching Cargo.lock, Debian's Chromium, the npm tools).
//! - `fuzz.rs`: runs the cargo-fuzz targets in `fuzz/` (nightly, installed on demand).
//! - `pkg.rs`: builds the npm package into `pkg/` (cargo → wasm-bindgen →
//!   wasm-opt → `pkg-template/`), and installs it where the tests and the
//!   benchmarks use it (the Vite-built example app and benchmark page).
//!
//! Every command installs what it needs first, so each works on a fresh
//! machine of this kind.

mod fuzz;
mod pkg;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build          build the npm package into pkg/ (cargo, wasm-bindgen, wasm-opt)
  test           the whole suite: host tests, then the packed npm package in headless Chromium
                 (alone, through the relay to webhook receivers, and in a Vite-built app)
  demo           run the demo: relay or receiver, plus the demo page on http://127.0.0.1:8080
  bench [--quick] measure the SDK against the anchors, the relay, and run the drills; writes
                 target/bench/*.json and BENCHMARKS.md (--quick: a smoke run, its report in target/bench/)
  fuzz [--seconds N] [TARGET...]
                 run the cargo-fuzz targets (batch, gzip, rules, ssrf) N seconds each (default 600),
                 one after the other at nice 19; installs nightly and cargo-fuzz when missing
  setup          install what is missing (also done by every command above)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => setup::all().and_then(|tools| pkg::build(&tools)).map(|_| ()),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("setup") => setup::all().map(|_| ()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn test() -> Result {
    let tools = setup::all()?;
    step("host tests (cargo test --workspace)");
    run(Command::new(cargo()).args(["test", "--workspace"]).current_dir(root()))?;
    // The whole-chain browser test runs the relay binary (usually already
    // built by the host tests; this makes sure).
    run(Command::new(cargo())
        .args(["build", "-q", "-p", "cuecast-relay", "--bin", "cuecast-relay"])
        .current_dir(root()))?;
    let tarball = pkg::build(&tools)?;
    pkg::install_for_tests(&tarball)?;
    pkg::install_and_build("tests/browser/app", &[])?;
    step("browser tests (node --test, headless Chromium)");
    run(node_tests(&tools, "tests/browser").current_dir(root()))
}

/// The main job: the relay on its embedded SQLite store with the demo
/// config, the demo page sending to it, and a receiver printing what the
/// relay delivers.
fn demo() -> Result {
    let tools = setup::all()?;
    pkg::build(&tools)?;
    step("building the relay (release)");
    run(Command::new(cargo()).args(["build", "--release", "-p", "cuecast-relay"]).current_dir(root()))?;
    step("demo: relay on http://127.0.0.1:8686, page on http://127.0.0.1:8080, webhooks printed below (Ctrl-C stops)");
    println!("     console on http://127.0.0.1:8686/console (token: demo-admin-token, or $CUECAST_ADMIN_TOKEN)");
    let mut relay = Command::new(root().join("target/release/cuecast-relay"))
        .args(["serve", "--config", "examples/relay/demo.toml"])
        .current_dir(root())
        .spawn()
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    let page = Command::new("node")
        .arg("examples/demo/serve.mjs")
        .env("DEMO_RELAY", "http://127.0.0.1:8686")
        .current_dir(root())
        .status();
    let _ = relay.kill();
    let _ = relay.wait();
    page.map_err(|e| format!("demo page: {e}")).map(|_| ())
}

fn bench(quick: bool) -> Result {
    let tools = setup::all()?;
    let tarball = pkg::build(&tools)?;
    pkg::install_for_tests(&tarball)?;
    // The anchor SDKs (pinned, install scripts off) and the page that bundles each of them;
    // the example app for the navigate-away drill.
    pkg::install_and_build("tests/browser/bench/anchors", &["--ignore-scripts"])?;
    pkg::install_and_build("tests/browser/app", &[])?;
    step("SDK benchmarks (size, main-thread cost in headless Chromium)");
    let mut cmd = Command::new("node");
    cmd.arg("tests/browser/bench/sdk.mjs").env("CHROMIUM", &tools.chromium).current_dir(root());
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)?;
    step("relay benchmarks (cuecast-loadgen: ingest, deliveries, event-to-webhook latency, 1-3 relays on PostgreSQL)");
    // The scale rows start `cuecast-relay` processes: build the binary next to the load generator.
    run(Command::new(cargo())
        .args(["build", "--quiet", "--release", "-p", "cuecast-relay", "--bins"])
        .current_dir(root()))?;
    let mut loadgen = Command::new(cargo());
    loadgen
        .args(["run", "--quiet", "--release", "-p", "cuecast-relay", "--bin", "cuecast-loadgen"])
        .current_dir(root());
    if quick {
        loadgen.args(["--", "--quick"]);
    }
    let figures = output(&mut loadgen).ok_or("cuecast-loadgen failed")?;
    let out = root().join("target/bench/relay.json");
    std::fs::write(&out, format!("{figures}\n")).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("{figures}\nwritten target/bench/relay.json");
    step("drills (the relay SIGKILLed under load; a sick receiver beside a healthy one; navigate-away trials)");
    run(Command::new(cargo())
        .args(["build", "--quiet", "--release", "-p", "cuecast-relay", "--bin", "cuecast-relay"])
        .current_dir(root()))?;
    let mut drills = Command::new("node");
    drills.arg("tests/browser/bench/drills.mjs").current_dir(root());
    if quick {
        drills.arg("--quick");
    }
    run(&mut drills)?;
    if quick {
        println!("durable-queue figures: skipped in --quick (the durable tests take about 2 minutes)");
    } else {
        step("durable queue (loss and duplicates in the durable browser tests, time to the first resend)");
        let mut durable = node_tests(&tools, "tests/browser/durable.test.mjs");
        let log = output(durable.current_dir(root())).ok_or("the durable browser tests failed")?;
        // The tests print `# figure {"name": …, "value": …}` lines.
        let figures: serde_json::Map<String, serde_json::Value> = log
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("# figure "))
            .filter_map(|f| serde_json::from_str::<serde_json::Value>(f).ok())
            .filter_map(|f| Some((f.get("name")?.as_str()?.to_string(), f.get("value")?.clone())))
            .collect();
        let date = output(Command::new("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_default();
        let json = serde_json::json!({ "date": date, "figures": figures }).to_string();
        let out = root().join("target/bench/durable.json");
        std::fs::write(&out, format!("{json}\n")).map_err(|e| format!("{}: {e}", out.display()))?;
        println!("{json}\nwritten target/bench/durable.json");
    }
    // A quick run writes its report under target/bench, never over the committed BENCHMARKS.md.
    step("report");
    run(Command::new("node")
        .arg("tests/browser/bench/report.mjs")
        .arg(if quick { "cargo xtask bench --quick" } else { "cargo xtask bench" })
        .env("CHROMIUM", &tools.chromium)
        .current_dir(root()))
}

fn node_tests(tools: &setup::Tools, dir: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-concurrency=1", "--test-reporter=spec"]).arg(dir).env("CHROMIUM", &tools.chromium);
    cmd
}

/// The repository root (the xtask crate lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf()
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result {
    let status = cmd.status().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

/// Runs a command and returns its standard output, or `None` if it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
