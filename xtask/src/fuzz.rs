//! `cargo xtask fuzz [--seconds N] [TARGET…]`: runs each cargo-fuzz target in
//! `fuzz/` for N seconds (default 600, the 10 minutes), one after the
//! other at the lowest CPU priority (the machine is shared). Installs
//! cargo-fuzz and a nightly toolchain when missing: libFuzzer's
//! instrumentation needs nightly flags. What each run found is in
//! `fuzz/README.md`; a crash leaves its input in `fuzz/artifacts/TARGET/`.

use std::process::Command;

use crate::{output, root, run, step, Result};

/// Every target under `fuzz/fuzz_targets/`, in the order they run.
const TARGETS: &[&str] = &["batch", "gzip", "rules", "ssrf"];

pub fn fuzz(args: &[String]) -> Result {
    let mut seconds = 600u64;
    let mut targets = Vec::new();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = rest.next().and_then(|s| s.parse().ok()).ok_or("--seconds needs a number")?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => return Err(format!("unknown fuzz argument {other:?} (targets: {})", TARGETS.join(", "))),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    tools()?;
    let mut failed = Vec::new();
    for target in targets {
        step(&format!("fuzzing {target} for {seconds} s (nice 19)"));
        // The batch parser starts from the wire contract's golden fixtures (valid and invalid).
        let seeds =
            if target == "batch" { root().join("tests/fixtures") } else { root().join("fuzz/seeds").join(target) };
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "19", "rustup", "run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // A render or decode that takes this long is a hang, reported like a crash.
            .arg("-timeout=10")
            // Inputs past 8 KB only slow it down: every invariant shows on small ones, and the
            // gzip target builds its bombs from a short pattern.
            .arg("-max_len=8192")
            .arg("-print_final_stats=1");
        if target == "gzip" {
            // Its tokio runtime lives across inputs, so mallocs and frees never balance within
            // one and libFuzzer ran a leak check after every input: 60 ms each, 12× slower.
            cmd.arg("-detect_leaks=0");
        }
        let dict = root().join("fuzz/dict").join(format!("{target}.dict"));
        if dict.exists() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        // Set by the outer `cargo xtask`; they would make cargo-fuzz build with the stable toolchain.
        for var in ["CARGO", "RUSTC", "RUSTUP_TOOLCHAIN", "RUSTC_WRAPPER"] {
            cmd.env_remove(var);
        }
        // A crash stops that target only: the others still get their time.
        if let Err(e) = run(cmd.current_dir(root().join("fuzz"))) {
            eprintln!("xtask: {target}: {e}");
            failed.push(target);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("crash or timeout in {} (inputs in fuzz/artifacts/)", failed.join(", ")))
    }
}

fn tools() -> Result {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("installing a nightly toolchain (cargo-fuzz needs it)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_none() {
        step("installing cargo-fuzz");
        run(Command::new("cargo").args(["install", "cargo-fuzz"]))?;
    }
    Ok(())
}
