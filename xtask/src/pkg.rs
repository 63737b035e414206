//! The npm package: `pkg/` = wasm-bindgen's output, optimised by wasm-opt,
//! plus `pkg-template/` (package.json, the `index.js` entry, types, README).

use std::path::PathBuf;
use std::process::Command;

use crate::setup::Tools;
use crate::{output, root, run, step, Result};

/// Builds `pkg/` and packs it; returns the tarball's path.
pub fn build(tools: &Tools) -> Result<PathBuf> {
    let root = root();
    step(&format!("building the SDK for wasm32 (profile wasm-release, {}, std rebuilt)", tools.nightly));
    // std rebuilt with `panic=immediate-abort`: a panic traps at once, and
    // its message and location strings and formatting code are not shipped.
    // Its own target directory: the stable wasm tests' artefacts stay put.
    run(Command::new("rustup")
        .args(["run", tools.nightly, "cargo", "build", "--profile", "wasm-release", "--lib", "-p", "cuecast"])
        .args(["--target", "wasm32-unknown-unknown", "-Zbuild-std=std,panic_abort"])
        .arg("--target-dir")
        .arg(root.join("target/size"))
        // No file/line/column strings for `#[track_caller]` either: nothing
        // would ever print them (−0.4 KB gzip). Without reference types
        // wasm-bindgen keeps JS values in its classic heap slab instead of an
        // externref table: 0.6 KB gzip smaller here (README, "Size").
        .env(
            "RUSTFLAGS",
            "-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Ctarget-feature=-reference-types",
        )
        .current_dir(&root))?;
    let pkg = root.join("pkg");
    let _ = std::fs::remove_dir_all(&pkg);
    step("wasm-bindgen --target web");
    run(Command::new(&tools.wasm_bindgen)
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(&pkg)
        .arg(root.join("target/size/wasm32-unknown-unknown/wasm-release/cuecast.wasm")))?;
    step("wasm-opt -Oz");
    let wasm = pkg.join("cuecast_bg.wasm");
    // The features rustc enables by default for wasm32 must be enabled here too.
    // Flattening and re-looping the control flow before two -Oz rounds took
    // 0.6 KB gzip more; the producers and target-features sections are for
    // tools, not browsers (README, "Size").
    run(Command::new(&tools.wasm_opt)
        .args(["--flatten", "--rereloop", "-Oz", "-Oz", "--converge", "--strip-producers", "--strip-target-features"])
        .args(["--enable-bulk-memory", "--enable-nontrapping-float-to-int", "--enable-sign-ext"])
        .args(["--enable-reference-types", "--enable-mutable-globals", "--enable-multivalue"])
        .arg(&wasm)
        .arg("-o")
        .arg(&wasm))?;
    for entry in std::fs::read_dir(root.join("pkg-template")).map_err(|e| format!("pkg-template: {e}"))? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), pkg.join(entry.file_name())).map_err(|e| format!("{:?}: {e}", entry.path()))?;
    }
    bundle(tools, &pkg)?;
    check_versions(&pkg)?;
    let out = root.join("target/npm");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let name = output(Command::new("npm").args(["pack", "--silent", "--pack-destination"]).arg(&out).arg(&pkg))
        .ok_or("npm pack failed")?;
    let tarball = out.join(name.lines().last().unwrap_or_default());
    eprintln!("packed {}", tarball.display());
    Ok(tarball)
}

/// Bundles the entry (`index.js`, the wasm-bindgen glue and its `host.js`
/// snippet) into one minified `index.js`, and minifies `loader.js` (esbuild).
/// One module for the page to fetch, and one gzip stream compresses better
/// than three (README, "Size"). The sources keep their comments; the package
/// need not carry them. The glue and the snippet are then not shipped.
fn bundle(tools: &Tools, pkg: &std::path::Path) -> Result {
    step("esbuild: index.js bundled with the glue and host.js, minified; loader.js minified");
    let entry = pkg.join("index.js");
    run(Command::new(&tools.esbuild)
        .arg(&entry)
        .args(["--bundle", "--format=esm", "--minify", "--allow-overwrite", "--log-level=warning"])
        // wasm-bindgen's glue names the snippet module once per function
        // imported straight into the wasm: the same module, harmless.
        .arg("--log-override:duplicate-object-key=silent")
        .arg(format!("--outfile={}", entry.display())))?;
    let loader = pkg.join("loader.js");
    run(Command::new(&tools.esbuild)
        .arg(&loader)
        .args(["--minify", "--allow-overwrite", "--log-level=warning"])
        .arg(format!("--outfile={}", loader.display())))?;
    std::fs::remove_file(pkg.join("cuecast.js")).map_err(|e| format!("pkg/cuecast.js: {e}"))?;
    std::fs::remove_dir_all(pkg.join("snippets")).map_err(|e| format!("pkg/snippets: {e}"))?;
    Ok(())
}

/// package.json's version must be the crate's: the SDK reports the crate's
/// version in every event's `context.library`.
fn check_versions(pkg: &std::path::Path) -> Result {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    let crate_version =
        manifest.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"')).ok_or("no version")?;
    let package = std::fs::read_to_string(pkg.join("package.json")).map_err(|e| e.to_string())?;
    if !package.contains(&format!("\"version\": \"{crate_version}\"")) {
        return Err(format!("pkg-template/package.json's version differs from the crate's ({crate_version})"));
    }
    Ok(())
}

/// Installs the packed package into `tests/browser/node_modules`, as a user
/// would, so the browser tests load exactly what would be published.
pub fn install_for_tests(tarball: &std::path::Path) -> Result {
    step("installing the packed package for the browser tests");
    run(Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock"])
        .arg(tarball)
        .current_dir(root().join("tests/browser")))
}

/// Installs an npm project that depends on the packed tarball (`file:` in
/// its package.json), as its users would: `npm ci` from its lockfile, then
/// builds it with its own `npm run build` (Vite). The lockfiles carry no
/// integrity for the tarball, so `npm ci` reads the file rebuilt just now;
/// the installed module is compared with `pkg/` to be sure.
pub fn install_and_build(dir: &str, extra: &[&str]) -> Result {
    let dir = root().join(dir);
    step(&format!("npm ci and vite build in {}", dir.strip_prefix(root()).unwrap_or(&dir).display()));
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).args(extra).current_dir(&dir))?;
    let wasm = "cuecast_bg.wasm";
    let installed =
        std::fs::read(dir.join("node_modules/cuecast").join(wasm)).map_err(|e| format!("{}: {e}", dir.display()))?;
    if installed != std::fs::read(root().join("pkg").join(wasm)).map_err(|e| e.to_string())? {
        return Err(format!("{}: npm ci installed another cuecast than the one just packed", dir.display()));
    }
    run(Command::new("npm").args(["run", "--silent", "build"]).current_dir(&dir))
}
