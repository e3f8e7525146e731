//! The bench's head-to-head part: the native proxy (everything on) and nginx
//! measured in alternating runs, so the machine's drift hits both alike;
//! ratios reported as median (min–max) over the runs, with the CPU each
//! spent per request, user and kernel apart (from `/proc`, nginx's workers
//! summed).

use std::fmt::Write as _;
use std::fs;

use crate::bench::{wrk, RUNS, SECONDS};

/// CPU time (user, kernel) in ms of a process and its children's
/// processes (nginx's workers), from `/proc/<pid>/stat`.
fn cpu_split_ms(pids: &[u32]) -> (f64, f64) {
    let mut user = 0.0;
    let mut kernel = 0.0;
    for pid in pids {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        user += field(11).unwrap_or(0.0) * 10.0; // USER_HZ is 100 on Linux
        kernel += field(12).unwrap_or(0.0) * 10.0;
    }
    (user, kernel)
}

/// The process and its direct children (nginx's master and workers).
pub(crate) fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// One measured run.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    pub(crate) rps: f64,
    p50_us: f64,
    p99_us: f64,
    user_us: f64,
    kernel_us: f64,
}

fn measure(url: &str, connections: u32, pids: &[u32]) -> Option<Run> {
    let before = cpu_split_ms(pids);
    let load = wrk(url, connections, SECONDS, true, None)?;
    let after = cpu_split_ms(pids);
    let per_request = |ms: f64| ms * 1e3 / load.requests.max(1.0);
    Some(Run {
        rps: load.rps,
        p50_us: load.p50_us,
        p99_us: load.p99_us,
        user_us: per_request(after.0 - before.0),
        kernel_us: per_request(after.1 - before.1),
    })
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// `median (min–max)` of a list.
/// `RUNS` rounds of `a` and `b` at `connections`, alternating which goes
/// first, each charged to its own processes: the runs of each, paired by
/// round.
pub(crate) fn alternating(
    a: (&str, &[u32]),
    b: (&str, &[u32]),
    connections: u32,
    mut between: impl FnMut(),
) -> (Vec<Run>, Vec<Run>) {
    let (mut runs_a, mut runs_b) = (Vec::new(), Vec::new());
    for round in 0..RUNS {
        between();
        let a_first = round % 2 == 0;
        for which in [a_first, !a_first] {
            if which {
                runs_a.extend(measure(a.0, connections, a.1));
            } else {
                runs_b.extend(measure(b.0, connections, b.1));
            }
        }
    }
    (runs_a, runs_b)
}

/// `a`'s req/s over `b`'s, round by round.
pub(crate) fn rps_ratios(a: &[Run], b: &[Run]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect()
}

/// Median (min–max) CPU per request, with the median user and kernel
/// parts: `20.0 (19.5–21.0) (8.0 + 12.0)`.
pub(crate) fn cpu_spread(runs: &[Run]) -> String {
    let part = |f: fn(&Run) -> f64| {
        median(&runs.iter().map(f).collect::<Vec<_>>()).map_or("—".into(), |v| format!("{v:.1}"))
    };
    format!(
        "{} ({} + {})",
        spread(
            &runs
                .iter()
                .map(|r| r.user_us + r.kernel_us)
                .collect::<Vec<_>>(),
            1
        ),
        part(|r| r.user_us),
        part(|r| r.kernel_us),
    )
}

pub(crate) fn spread(values: &[f64], digits: usize) -> String {
    if values.is_empty() {
        return "—".into();
    }
    let v = sorted(values.to_vec());
    let median = v[v.len() / 2];
    format!(
        "{median:.digits$} ({:.digits$}–{:.digits$})",
        v[0],
        v[v.len() - 1]
    )
}

fn median(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| sorted(values.to_vec())[values.len() / 2])
}

/// What the part found, for the ratio table.
pub(crate) struct HeadToHead {
    /// Ratio rows: (measure, value, target).
    pub(crate) rows: Vec<(String, String, &'static str)>,
}

/// The ports of the three targets and the processes to charge CPU to.
pub(crate) struct Targets<'a> {
    pub(crate) direct: u16,
    pub(crate) native: u16,
    pub(crate) nginx: u16,
    pub(crate) native_pids: &'a [u32],
    pub(crate) nginx_pids: &'a [u32],
}

/// Runs `RUNS` alternating rounds at c=1 (with the origin direct, for the
/// latency each proxy adds), c=64 and c=256, and appends the section.
pub(crate) fn head_to_head(t: &Targets<'_>, report: &mut String) -> HeadToHead {
    let url = |port: u16| format!("http://127.0.0.1:{port}/small");
    let _ = writeln!(
        report,
        "\n## Head to head with nginx (alternating runs)\n\n`GET /small`, {RUNS} rounds of {SECONDS} s each, native and nginx alternating (which goes first alternates too). The native proxy runs with everything on: a keys document of 50 hashed keys with model lists, the bench's key limited (`max_concurrent`, `requests_per_minute`) far above the load under `MAX_CONCURRENT`, metrics, request ids and the log line to a file (nginx logs too). CPU per request from `/proc` (user + kernel), nginx's master and workers summed. Values: median (min–max).\n\n| c | native req/s | nginx req/s | native/nginx req/s | native/nginx p99 | CPU µs/request native (user + kernel) | nginx |\n|---|---|---|---|---|---|---|"
    );
    let mut rows = Vec::new();
    let mut added = (Vec::new(), Vec::new());
    for connections in [1u32, 64, 256] {
        let mut direct = Vec::new();
        let (native, nginx) = alternating(
            (&url(t.native), t.native_pids),
            (&url(t.nginx), t.nginx_pids),
            connections,
            || {
                if connections == 1 {
                    direct.extend(measure(&url(t.direct), 1, &[]));
                }
            },
        );
        let rps_ratio = rps_ratios(&native, &nginx);
        let p99_ratio: Vec<f64> = native
            .iter()
            .zip(&nginx)
            .map(|(a, b)| a.p99_us / b.p99_us)
            .collect();
        let _ = writeln!(
            report,
            "| {connections} | {} | {} | {} | {} | {} | {} |",
            spread(&native.iter().map(|r| r.rps).collect::<Vec<_>>(), 0),
            spread(&nginx.iter().map(|r| r.rps).collect::<Vec<_>>(), 0),
            spread(&rps_ratio, 2),
            spread(&p99_ratio, 2),
            cpu_spread(&native),
            cpu_spread(&nginx),
        );
        eprintln!(
            "head to head c={connections}: native/nginx req/s {} p99 {}",
            spread(&rps_ratio, 2),
            spread(&p99_ratio, 2)
        );
        if connections == 1 {
            let base = median(&direct.iter().map(|r| r.p50_us).collect::<Vec<_>>());
            if let Some(base) = base {
                added.0 = native.iter().map(|r| r.p50_us - base).collect();
                added.1 = nginx.iter().map(|r| r.p50_us - base).collect();
            }
            continue;
        }
        rows.push((
            format!("native/nginx req/s, c={connections} (head to head)"),
            format!("{}×", spread(&rps_ratio, 2)),
            "≥ 1.2×",
        ));
        if connections == 64 {
            rows.push((
                "native/nginx p99, c=64 (head to head)".into(),
                format!("{}×", spread(&p99_ratio, 2)),
                "≤ 1×",
            ));
            let total = |runs: &[Run]| {
                median(
                    &runs
                        .iter()
                        .map(|r| r.user_us + r.kernel_us)
                        .collect::<Vec<_>>(),
                )
            };
            rows.push((
                "CPU per request, c=64, native; nginx (head to head)".into(),
                format!(
                    "{} µs; {} µs",
                    total(&native).map_or("—".into(), |v| format!("{v:.1}")),
                    total(&nginx).map_or("—".into(), |v| format!("{v:.1}"))
                ),
                "native ≤ nginx",
            ));
        }
    }
    rows.insert(
        0,
        (
            "latency added at c=1 (p50 over direct), native; nginx (head to head)".into(),
            format!("{} µs; {} µs", spread(&added.0, 0), spread(&added.1, 0)),
            "native ≤ nginx",
        ),
    );
    let _ = writeln!(
        report,
        "\nLatency added at c=1 (p50 minus the origin's own p50, measured in the same rounds): native {} µs, nginx {} µs.",
        spread(&added.0, 0),
        spread(&added.1, 0)
    );
    HeadToHead { rows }
}

/// Which hand-written JS Worker the Rust Worker is measured against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsWorker {
    /// Token check, credentials stripped, CORS header: the issue's
    /// yardstick.
    Plain,
    /// Grown to the Rust Worker's checks on the bench's request
    /// (`bench/js-worker-same-checks.js`): for the analysis, not a target.
    SameChecks,
}

/// The Rust Worker against a JS Worker, alternating rounds at c=1 and c=64:
/// a table in `report`, and the ratio rows for the summary.
pub(crate) fn workers_head_to_head(
    rust: (u16, u32),
    js: (u16, u32),
    which: JsWorker,
    report: &mut String,
) -> Vec<(String, String, &'static str)> {
    let url = |port: u16| format!("http://127.0.0.1:{port}/small");
    let (title, label) = match which {
        JsWorker::Plain => ("the JS Worker", "JS Worker"),
        JsWorker::SameChecks => (
            "a JS Worker with the same checks (`bench/js-worker-same-checks.js`: 50 keys by SHA-256 in constant time, hop-by-hop headers, request id, CORS, the log line)",
            "JS Worker with the same checks",
        ),
    };
    let _ = writeln!(
        report,
        "\n### Rust Worker against {title} (alternating runs)\n\n{RUNS} rounds of {SECONDS} s, each Worker in its own workerd; CPU per request is that workerd process's (user + kernel). Values: median (min–max).\n\n| c | Rust p50 µs | JS p50 µs | Rust/JS p50 | Rust/JS req/s | CPU µs/request Rust | JS | Rust/JS CPU |\n|---|---|---|---|---|---|---|---|"
    );
    let target = |t: &'static str| if which == JsWorker::Plain { t } else { "—" };
    let mut rows = Vec::new();
    for connections in [1u32, 64] {
        let (rs, jsr) = alternating(
            (&url(rust.0), &[rust.1]),
            (&url(js.0), &[js.1]),
            connections,
            || {},
        );
        let pairs: Vec<(Run, Run)> = rs.iter().copied().zip(jsr.iter().copied()).collect();
        let p50: Vec<f64> = pairs.iter().map(|(a, b)| a.p50_us / b.p50_us).collect();
        let rps = rps_ratios(&rs, &jsr);
        let cpu_of = |r: &Run| r.user_us + r.kernel_us;
        let cpu: Vec<f64> = pairs.iter().map(|(a, b)| cpu_of(a) / cpu_of(b)).collect();
        let _ = writeln!(
            report,
            "| {connections} | {} | {} | {} | {} | {} | {} | {} |",
            spread(&rs.iter().map(|r| r.p50_us).collect::<Vec<_>>(), 0),
            spread(&jsr.iter().map(|r| r.p50_us).collect::<Vec<_>>(), 0),
            spread(&p50, 2),
            spread(&rps, 2),
            spread(&rs.iter().map(cpu_of).collect::<Vec<_>>(), 0),
            spread(&jsr.iter().map(cpu_of).collect::<Vec<_>>(), 0),
            spread(&cpu, 2),
        );
        eprintln!(
            "workers c={connections}, against the {label}: Rust/JS p50 {} req/s {} CPU {}",
            spread(&p50, 2),
            spread(&rps, 2),
            spread(&cpu, 2)
        );
        if connections == 1 {
            rows.push((
                format!("Rust Worker/{label} p50, c=1 (alternating)"),
                format!("{}×", spread(&p50, 2)),
                target("≤ 1.1×"),
            ));
        } else {
            rows.push((
                format!("Rust Worker/{label} req/s, c=64 (alternating)"),
                format!("{}×", spread(&rps, 2)),
                target("≥ 0.9×"),
            ));
            rows.push((
                format!("Rust Worker/{label} CPU per request, c=64 (workerd process)"),
                format!("{}×", spread(&cpu, 2)),
                target("≤ 1.0×"),
            ));
        }
    }
    rows
}
