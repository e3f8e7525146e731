//! Project tasks: `cargo xtask <task>` (matklad's xtask convention).
//!
//! No dependencies on purpose: this crate builds first on a fresh machine.

mod bench;
mod bench_alloc;
mod bench_count;
mod bench_head;
mod bench_policy;
mod bench_tls;
mod bench_turns;
mod bench_usage;
mod browser;
mod ops;
mod python;
mod tasks;
mod worker;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test-all    install what the tests need, then: fmt check, clippy -D warnings,
              the core built for wasm32, the Worker built and dry-run deployed,
              its wasm tests under Node, and every test in the workspace
              (the shared scenarios on the native proxy and in workerd,
              the OpenAI JS SDK in headless Chromium against both)
  build-worker
              build the Cloudflare Worker bundle into worker-target/build/
              (installs wasm-bindgen-cli and the npm tools it needs)
  soak        the long reliability runs: 1,000 slow streams x 6 rounds through
              the release binary, core fuzzing at 100,000 cases, 2,000
              cross-target cases, 1,000 LLM answers, 1,000 in front of three
              boxes (a few minutes; not part of test-all)
  ops-check   run the Grafana dashboard's queries against a real Prometheus
              (installed with apt) scraping a loaded native proxy; prints
              each panel's series
  bench       measure the native proxy beside direct and nginx, and the Worker
              beside a hand-written JS Worker in workerd; writes bench/results.md
  bench-count instructions per small request under callgrind: the native proxy
              with everything on, as the nginx recipe, and nginx (a minute)
";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("test-all") => tasks::test_all(),
        Some("build-worker") => worker::build_worker(),
        Some("bench") => bench::bench(),
        Some("bench-count") => bench_count::bench_count(),
        Some("soak") => tasks::soak(),
        Some("ops-check") => ops::ops_check(),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
