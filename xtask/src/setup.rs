//! Installs what the build and the tests need, skipping what is there.
//! The facts behind each step (versions that work here, what breaks) are in
//! the README's "Toolchain" section.

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, output, root, run, step, Result};

/// Paths of the tools the other commands call.
pub struct Tools {
    /// The pinned nightly the npm package is built with (see [`SIZE_NIGHTLY`]).
    pub nightly: &'static str,
    pub wasm_bindgen: PathBuf,
    pub wasm_opt: PathBuf,
    pub esbuild: PathBuf,
    pub chromium: PathBuf,
}

pub fn all() -> Result<Tools> {
    wasm_target()?;
    let nightly = size_nightly()?;
    let wasm_bindgen = wasm_bindgen_cli()?;
    let chromium = chromium()?;
    npm_tools()?;
    let bin = root().join("tests/browser/node_modules/.bin");
    Ok(Tools { nightly, wasm_bindgen, wasm_opt: bin.join("wasm-opt"), esbuild: bin.join("esbuild"), chromium })
}

/// The npm package is built with a pinned nightly: only nightly can rebuild
/// the standard library with `panic=immediate-abort`, which drops the panic
/// messages, locations and formatting the SDK never shows (−13.6 KB gzip of
/// 99.6, measured side by side; README, "Size"). Pinned, not the moving
/// `nightly`, so that a build is the same build tomorrow; the wasm tests and
/// everything else stay on stable.
pub const SIZE_NIGHTLY: &str = "nightly-2026-05-20";

fn size_nightly() -> Result<&'static str> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", SIZE_NIGHTLY]))
            .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step(&format!("installing {SIZE_NIGHTLY} with rust-src (the npm package's size build)"));
        run(Command::new("rustup")
            .args(["toolchain", "install", SIZE_NIGHTLY, "--profile", "minimal"])
            .args(["--component", "rust-src"]))?;
    }
    Ok(SIZE_NIGHTLY)
}

fn wasm_target() -> Result {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == "wasm32-unknown-unknown") {
        return Ok(());
    }
    step("installing the wasm32-unknown-unknown target");
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// The CLI must match the `wasm-bindgen` crate in Cargo.lock exactly.
/// Installed without `--locked`: its published lockfile pins a crate version
/// the registry here does not carry.
fn wasm_bindgen_cli() -> Result<PathBuf> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasm-bindgen\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string)))
        .ok_or("Cargo.lock has no wasm-bindgen package")?;
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let bin = cargo_home.join("bin/wasm-bindgen");
    let have = output(Command::new(&bin).arg("--version")).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(version.as_str()) {
        return Ok(bin);
    }
    step(&format!("installing wasm-bindgen-cli {version} (about 3 minutes)"));
    run(Command::new(cargo())
        .args(["install", "wasm-bindgen-cli", "--force", "--version"])
        .arg(format!("={version}")))?;
    Ok(bin)
}

/// Debian's Chromium: the npm browsers download from the internet, which is closed here.
fn chromium() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Ok(path);
    }
    step("installing Debian's chromium");
    let sudo = output(Command::new("id").arg("-u")).is_some_and(|uid| uid != "0");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(if sudo { "sudo" } else { "apt-get" });
        if sudo {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update"])?;
    apt(&["install", "-y", "chromium"])?;
    Ok(path)
}

/// The npm tools pinned in `tests/browser/package.json`: playwright-core
/// (drives Debian's Chromium; downloads no browser), binaryen's wasm-opt 132
/// (Debian's 108 produces modules that fail in Chromium), TypeScript (to
/// check the shipped declarations) and esbuild (minifies the package's JavaScript).
fn npm_tools() -> Result {
    let dir = root().join("tests/browser");
    let manifest =
        std::fs::read_to_string(dir.join("package.json")).map_err(|e| format!("tests/browser/package.json: {e}"))?;
    let deps = manifest.split("\"devDependencies\"").nth(1).and_then(|rest| rest.split('}').next()).unwrap_or_default();
    let names = deps.lines().filter_map(|l| l.trim().strip_prefix('"')?.split('"').next());
    let mut missing =
        names.filter(|name| !dir.join("node_modules").join(name).join("package.json").exists()).peekable();
    if missing.peek().is_none() {
        return Ok(());
    }
    step("installing npm tools (npm ci in tests/browser)");
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir))
}
