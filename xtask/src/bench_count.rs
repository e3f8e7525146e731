//! Instructions per request, counted: the native proxy with everything on
//! (the bench's keys document, `MAX_CONCURRENT`, metrics, the log line) run
//! under valgrind's callgrind, its counters zeroed after a warm-up, then a
//! fixed load. Unlike CPU time, the count repeats within 1 % from run to run
//! on this shared machine, so it shows a change of a few percent that
//! wall-clock runs cannot. (Under valgrind SHA-256 runs without the CPU's
//! SHA extensions: the token's hash, ≈ 3.5k instructions, counts for more
//! than it costs natively.) To see where they go, run the same by hand and
//! read the dump with `callgrind_annotate --inclusive=yes`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::{spawn_logging, wrk};
use crate::tasks::output;

/// The counted instance's port, and its admin port (metrics on, as in the
/// rest of the bench).
const COUNTED: u16 = 18511;
const COUNTED_ADMIN: u16 = 18521;

/// Instructions the proxy spent per `GET /small` at c=16; `None` (and why,
/// on stderr) when valgrind is missing or the run failed.
pub(crate) fn per_request(target: &Path, scratch: &Path, keys: &Path) -> Option<f64> {
    let why = |what: &str| {
        eprintln!("instructions per request not counted: {what}");
        None
    };
    for tool in ["valgrind", "callgrind_control"] {
        if output("which", &[tool]).is_none() {
            return why(&format!("{tool} is not installed"));
        }
    }
    let dumps = scratch.join("callgrind");
    let _ = fs::create_dir_all(&dumps);
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--dump-instr=no"])
        .arg(format!(
            "--callgrind-out-file={}",
            dumps.join("callgrind.out").display()
        ))
        .arg(target.join("release/ollama-proxy"))
        .env_clear()
        .env(
            "OLLAMA_ORIGIN",
            format!("http://127.0.0.1:{}", crate::bench::ORIGIN),
        )
        .env("KEYS_FILE", keys)
        .env("MAX_CONCURRENT", "1000000")
        .env("METRICS_ADDR", format!("127.0.0.1:{COUNTED_ADMIN}"))
        .env("LISTEN_ADDR", format!("127.0.0.1:{COUNTED}"));
    let log = fs::File::create(scratch.join("counted.log")).ok()?;
    let proxy = match spawn_logging(cmd.stderr(log), COUNTED) {
        Ok(proxy) => proxy,
        Err(error) => return why(&error),
    };
    let pid = proxy.0.id().to_string();
    let url = format!("http://127.0.0.1:{COUNTED}/small");
    let control = |what: &str| {
        Command::new("callgrind_control")
            .args([what, &pid])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // Warm: connections to the origin made, caches and the pool filled.
    let _ = wrk(&url, 16, 2, true, None);
    if !control("-z") {
        return why("callgrind_control -z failed");
    }
    let Some(load) = wrk(&url, 16, 5, true, None) else {
        return why("wrk failed");
    };
    if !control("-d") {
        return why("callgrind_control -d failed");
    }
    let total = latest_dump(&dumps).and_then(|dump| summary(&dump));
    drop(proxy);
    match total {
        Some(total) if load.requests > 0.0 => Some(total / load.requests),
        _ => why("no dump to read"),
    }
}

/// The newest dump callgrind wrote on request (`callgrind.out.<part>`).
fn latest_dump(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let part: u32 = name.strip_prefix("callgrind.out.")?.parse().ok()?;
            Some((part, e.path()))
        })
        .max_by_key(|(part, _)| *part)
        .map(|(_, path)| path)
}

/// A dump's `summary:` (the instructions counted since the counters were
/// zeroed).
fn summary(dump: &Path) -> Option<f64> {
    fs::read_to_string(dump)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
}
