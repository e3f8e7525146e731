//! `build-worker`: the Worker bundle, built with tools installed from
//! package registries only (crates.io for wasm-bindgen, npm for the rest).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tasks::{cargo, ensure_wasm_target, output, root, run, WASM_TARGET};

/// The Worker crate's directory.
pub(crate) fn worker_dir() -> PathBuf {
    root().join("worker-target")
}

/// Where the bundle goes: `worker.js` and the `.wasm` beside it.
pub(crate) fn build_dir() -> PathBuf {
    worker_dir().join("build")
}

const WASM_NAME: &str = "ollama_proxy_worker_bg.wasm";

/// The npm binaries the Worker work needs, installed from the lockfile.
pub(crate) fn ensure_npm_tools() -> Result<(), String> {
    let bin = worker_dir().join("node_modules/.bin");
    if ["workerd", "esbuild", "wasm-opt", "wrangler"]
        .iter()
        .all(|tool| bin.join(tool).exists())
    {
        return Ok(());
    }
    let mut npm = Command::new("npm");
    npm.current_dir(worker_dir())
        .args(["ci", "--no-audit", "--no-fund"]);
    run(npm)
}

/// The wasm-bindgen version `Cargo.lock` resolved: the CLI must match it.
fn locked_wasm_bindgen_version() -> Result<String, String> {
    let lock = fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_owned());
            }
        }
    }
    Err("wasm-bindgen is not in Cargo.lock".into())
}

/// Installs `wasm-bindgen-cli` at the locked version unless it is already
/// on PATH at that version. (`--locked` is left out on purpose: one of the
/// CLI's locked dependency versions is not served by the registry here.)
pub(crate) fn ensure_wasm_bindgen() -> Result<(), String> {
    let want = locked_wasm_bindgen_version()?;
    let have = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str()) {
        return Ok(());
    }
    let mut install = Command::new("cargo");
    install.args(["install", "wasm-bindgen-cli", "--version", &want]);
    run(install)
}

/// Builds the Worker: Rust → wasm → wasm-bindgen → wasm-opt → esbuild.
pub(crate) fn build_worker() -> Result<(), String> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen()?;
    ensure_npm_tools()?;

    let mut build = cargo();
    build.args([
        "build",
        "--locked",
        "-p",
        "ollama-proxy-worker",
        "--profile",
        "wasm-release",
        "--target",
        WASM_TARGET,
    ]);
    run(build)?;

    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let wasm = target_dir
        .join(WASM_TARGET)
        .join("wasm-release")
        .join("ollama_proxy_worker.wasm");
    let out = build_dir();
    let pkg = out.join("pkg");
    let _ = fs::remove_dir_all(&out);
    let mut bindgen = Command::new("wasm-bindgen");
    bindgen
        .args(["--target", "module", "--no-typescript", "--out-dir"])
        .arg(&pkg)
        .arg(&wasm);
    run(bindgen)?;

    // workerd imports a .wasm module as a compiled WebAssembly.Module with a
    // plain import; it does not know source-phase imports.
    let glue = pkg.join("ollama_proxy_worker.js");
    let js = fs::read_to_string(&glue).map_err(|e| format!("reading {}: {e}", glue.display()))?;
    let js = js.replace("import source wasmModule from", "import wasmModule from");
    fs::write(&glue, js).map_err(|e| format!("writing {}: {e}", glue.display()))?;

    let bin = worker_dir().join("node_modules/.bin");
    let mut opt = Command::new(bin.join("wasm-opt"));
    opt.arg("-Oz");
    for feature in [
        "bulk-memory",
        "reference-types",
        "sign-ext",
        "multivalue",
        "nontrapping-float-to-int",
        "mutable-globals",
        "exception-handling",
    ] {
        opt.arg(format!("--enable-{feature}"));
    }
    opt.arg(pkg.join(WASM_NAME))
        .arg("-o")
        .arg(out.join(WASM_NAME));
    run(opt)?;

    let mut esbuild = Command::new(bin.join("esbuild"));
    esbuild
        .current_dir(worker_dir())
        .args([
            "js/index.js",
            "--bundle",
            "--format=esm",
            "--log-level=warning",
            // wasm-bindgen imports a snippet module once per function
            // (`import * as import1`, `import2` from the same file) and lists
            // each under the same key; both are the same module, so harmless.
            "--log-override:duplicate-object-key=silent",
        ])
        .args([
            "--external:*.wasm",
            "--external:cloudflare:*",
            "--outfile=build/worker.js",
        ]);
    run(esbuild)?;
    // The bundle imports the wasm from its own directory.
    let bundle = out.join("worker.js");
    let js =
        fs::read_to_string(&bundle).map_err(|e| format!("reading {}: {e}", bundle.display()))?;
    fs::write(
        &bundle,
        js.replace(
            "\"./ollama_proxy_worker_bg.wasm\"",
            &format!("\"./{WASM_NAME}\""),
        ),
    )
    .map_err(|e| format!("writing {}: {e}", bundle.display()))?;

    report_size(&out.join("worker.js"), &out.join(WASM_NAME));
    Ok(())
}

/// `wrangler deploy --dry-run --env production` into a scratch directory:
/// no account or network needed.
pub(crate) fn wrangler_dry_run() -> Result<(), String> {
    let out = std::env::temp_dir().join(format!("ollama-proxy-wrangler-{}", std::process::id()));
    let mut wrangler = Command::new(worker_dir().join("node_modules/.bin/wrangler"));
    wrangler
        .current_dir(worker_dir())
        .args(["deploy", "--dry-run", "--env", "production", "--outdir"])
        .arg(&out)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "true");
    let result = run(wrangler);
    let _ = fs::remove_dir_all(&out);
    result
}

fn report_size(js: &Path, wasm: &Path) {
    let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    let gzip = |p: &Path| {
        Command::new("gzip")
            .args(["-9", "-c"])
            .arg(p)
            .output()
            .ok()
            .map_or(0, |o| o.stdout.len() as u64)
    };
    let raw = size(js) + size(wasm);
    let gz = gzip(js) + gzip(wasm);
    eprintln!(
        "\nworker bundle: {} KiB raw ({} KiB wasm + {} KiB js), {} KiB gzip",
        raw / 1024,
        size(wasm) / 1024,
        size(js) / 1024,
        gz / 1024
    );
}
