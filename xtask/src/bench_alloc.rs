//! Allocations per request, counted from outside: `perf` uprobes on the C
//! library's `malloc`, `calloc` and `realloc` of the running proxy during a
//! fixed load (no counting code in the product). Needs `perf` and the right
//! to add probes (root); without them the bench says so and goes on.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};

use crate::bench::wrk;
use crate::tasks::output;

/// What the proxy allocated per request.
pub(crate) struct Allocations {
    pub(crate) calls: f64,
    pub(crate) bytes: f64,
    /// The sizes that took the most bytes: (size, calls per request).
    pub(crate) largest: Vec<(u64, f64)>,
}

const EVENTS: [(&str, &str); 3] = [
    // The first argument of malloc, the second of realloc; calloc's two.
    ("ollama_bench_malloc", "malloc size=%di:u64"),
    ("ollama_bench_realloc", "realloc size=%si:u64"),
    ("ollama_bench_calloc", "calloc n=%di:u64 size=%si:u64"),
];

fn libc_of(pid: u32) -> Option<String> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .map(str::to_owned)
}

fn remove_probes() {
    for (name, _) in EVENTS {
        let _ = Command::new("perf")
            .args(["probe", "-q", "-d", &format!("probe_libc:{name}")])
            .stderr(Stdio::null())
            .status();
    }
}

/// Counts the allocations of `pid` while `url` is loaded at c=`connections`
/// for `seconds`; `None` (and why, on stderr) when perf cannot.
pub(crate) fn per_request(
    pid: u32,
    url: &str,
    connections: u32,
    seconds: u32,
) -> Option<Allocations> {
    let why = |what: &str| {
        eprintln!("allocations per request not counted: {what}");
        None
    };
    if output("which", &["perf"]).is_none() {
        return why("perf is not installed");
    }
    let Some(libc) = libc_of(pid) else {
        return why("the proxy does not use the C library's allocator");
    };
    remove_probes();
    for (name, spec) in EVENTS {
        let added = Command::new("perf")
            .args([
                "probe",
                "-q",
                "-x",
                &libc,
                "--add",
                &format!("{name}={spec}"),
            ])
            .stderr(Stdio::null())
            .status();
        if !added.is_ok_and(|s| s.success()) {
            remove_probes();
            return why("perf cannot add uprobes here (needs root and tracefs)");
        }
    }
    let data = std::env::temp_dir().join(format!("ollama-proxy-alloc-{pid}.data"));
    let events: Vec<String> = EVENTS
        .iter()
        .map(|(name, _)| format!("probe_libc:{name}"))
        .collect();
    let mut record = Command::new("perf");
    record
        .args(["record", "-q", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string()]);
    for event in &events {
        record.args(["-e", event]);
    }
    let recording = record
        .args(["--", "sleep", &(seconds + 2).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut recording) = recording else {
        remove_probes();
        return why("perf record did not start");
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let load = wrk(url, connections, seconds, true, None);
    let _ = recording.wait();
    remove_probes();
    let script = Command::new("perf")
        .args(["script", "-F", "event,trace", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output();
    let _ = fs::remove_file(&data);
    let (Some(load), Ok(script)) = (load, script) else {
        return why("the load or perf script failed");
    };
    let mut calls = 0u64;
    let mut bytes = 0u64;
    let mut by_size: BTreeMap<u64, u64> = BTreeMap::new();
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    for line in String::from_utf8_lossy(&script.stdout).lines() {
        let size = if line.contains("ollama_bench_calloc") {
            field(line, "n=").unwrap_or(0) * field(line, "size=").unwrap_or(0)
        } else {
            field(line, "size=").unwrap_or(0)
        };
        calls += 1;
        bytes += size;
        *by_size.entry(size).or_default() += 1;
    }
    let requests = load.requests.max(1.0);
    let mut largest: Vec<(u64, u64)> = by_size.into_iter().collect();
    largest.sort_by_key(|(size, n)| std::cmp::Reverse(size * n));
    Some(Allocations {
        calls: calls as f64 / requests,
        bytes: bytes as f64 / requests,
        largest: largest
            .into_iter()
            .take(3)
            .map(|(size, n)| (size, n as f64 / requests))
            .collect(),
    })
}
