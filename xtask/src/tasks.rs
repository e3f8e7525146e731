//! The tasks themselves, and the small helpers they share.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

pub(crate) const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The workspace root (the parent of this crate's directory).
///
/// Read at run time: `cargo run` sets `CARGO_MANIFEST_DIR` for the process.
/// The compile-time value would be wrong when clones share a target dir,
/// since `target/debug/xtask` may then be a binary another clone built.
pub(crate) fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command, echoing it first; fails with the command line.
pub(crate) fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("\n$ {shown}");
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    eprintln!("  ({:.1}s)", start.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed ({status}): {shown}"))
    }
}

/// Runs a test command, passing its output through while adding up its
/// `test result:` lines; fails when the command does.
fn run_tests(mut cmd: Command, totals: &mut (u64, u64)) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Write};
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("\n$ {shown}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let _ = writeln!(out, "{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            totals.0 += count(" passed");
            totals.1 += count(" failed");
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed ({status}): {shown}"))
    }
}

/// Output of a command, or `None` when it cannot run or fails.
pub(crate) fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds the wasm32 target with rustup unless it is already installed.
pub(crate) fn ensure_wasm_target() -> Result<(), String> {
    match output("rustup", &["target", "list", "--installed"]) {
        Some(list) if list.lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Some(_) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["target", "add", WASM_TARGET]);
            run(cmd)
        }
        None => Err(format!(
            "rustup not found: install the {WASM_TARGET} target for this toolchain by hand"
        )),
    }
}

/// fmt check, clippy, the core for wasm32, the Worker bundle and its wasm
/// tests, and all tests (the shared scenarios run on both targets).
pub(crate) fn test_all() -> Result<(), String> {
    let start = Instant::now();
    ensure_wasm_target()?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;

    // The core must stay free of platform code: prove it builds for wasm32.
    let mut wasm = cargo();
    wasm.args([
        "build",
        "--locked",
        "-p",
        "ollama-proxy-core",
        "--target",
        WASM_TARGET,
    ]);
    run(wasm)?;

    // Installs wasm-bindgen-cli and the npm tools (workerd) when missing.
    crate::worker::build_worker()?;

    // What `wrangler deploy --env production` would upload, checked offline:
    // the config parses, the build step runs, the bundle resolves.
    crate::worker::wrangler_dry_run()?;

    // The adapter's conversions against real web_sys types, under Node.
    let mut wasm_tests = cargo();
    wasm_tests
        .args([
            "test",
            "--locked",
            "-p",
            "ollama-proxy-worker",
            "--lib",
            "--target",
            WASM_TARGET,
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        );
    let mut totals = (0, 0);
    run_tests(wasm_tests, &mut totals)?;

    // Chromium (apt) and the page the browser test loads.
    crate::browser::prepare()?;
    // The OpenAI and Ollama Python clients the HTTPS tests drive.
    crate::python::prepare()?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--locked"])
        .env("OLLAMA_PROXY_REQUIRE_WORKER", "1")
        .env("OLLAMA_PROXY_REQUIRE_BROWSER", "1")
        .env("OLLAMA_PROXY_REQUIRE_PYTHON", "1");
    run_tests(test, &mut totals)?;

    eprintln!(
        "\ntest-all: everything passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    // One closing line for the whole run, in the plain form CI reads.
    println!("{} passed, {} failed", totals.0, totals.1);
    Ok(())
}

/// The long variants of the reliability tests: 1,000 slow streams for six
/// rounds through the release binary, the core's fuzz targets and
/// properties at 100,000 cases each, and 2,000 cross-target cases.
pub(crate) fn soak() -> Result<(), String> {
    let start = Instant::now();
    ensure_wasm_target()?;
    crate::worker::build_worker()?;
    let mut totals = (0, 0);

    let mut load = cargo();
    load.args([
        "test",
        "--release",
        "--locked",
        "-p",
        "ollama-proxy-native",
        "--test",
        "load",
        "--",
        "--nocapture",
    ])
    .env("OLLAMA_PROXY_LOAD_STREAMS", "1000")
    .env("OLLAMA_PROXY_LOAD_ROUNDS", "6")
    .env("OLLAMA_PROXY_LOAD_CHUNKS", "50")
    .env("OLLAMA_PROXY_LOAD_SLOW_CLIENTS", "1000");
    run_tests(load, &mut totals)?;

    let mut fuzz = cargo();
    fuzz.args(["test", "--release", "--locked", "-p", "ollama-proxy-core"])
        .env("PROPTEST_CASES", "100000");
    run_tests(fuzz, &mut totals)?;

    let mut cross = cargo();
    cross
        .args([
            "test",
            "--locked",
            "-p",
            "ollama-proxy-tests",
            "--test",
            "cross_target",
        ])
        .env("OLLAMA_PROXY_REQUIRE_WORKER", "1")
        .env("PROPTEST_CASES", "2000")
        .env("OLLAMA_PROXY_USAGE_CASES", "1000")
        .env("OLLAMA_PROXY_BOXES_CASES", "1000");
    run_tests(cross, &mut totals)?;

    eprintln!("\nsoak: passed in {:.0}s", start.elapsed().as_secs_f64());
    println!("{} passed, {} failed", totals.0, totals.1);
    Ok(())
}
