//! Instructions per request, counted: each server run under valgrind's
//! callgrind, its counters zeroed after a warm-up, then a fixed load of
//! `GET /small` at c=16. Unlike CPU time, the count repeats within 1 % from
//! run to run on this shared machine, so it shows a change of a few percent
//! that wall-clock runs cannot. Three servers are counted: the native proxy
//! with everything on (the bench's keys document, `MAX_CONCURRENT`, metrics,
//! the log line; once more with the token in `Authorization`, as OpenAI's
//! clients send it), the native proxy doing what the nginx recipe does (one
//! token, no limits, no metrics; the log line on, as nginx's access log),
//! and nginx itself (one process, the bench's configuration): the first
//! against the second is what the features cost, the second against nginx
//! what the machinery costs. (Under valgrind SHA-256 runs without the CPU's
//! SHA extensions: the token's hash, ≈ 3.5k instructions, counts for more
//! than it costs natively.) To see where they go, run the same by hand and
//! read the dump with `callgrind_annotate --inclusive=yes`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::{spawn_logging, wrk, wrk_with};
use crate::tasks::output;

/// The counted servers' ports (one at a time), and the proxy's admin port
/// (metrics on, as in the rest of the bench).
const COUNTED: u16 = 18511;
const COUNTED_ADMIN: u16 = 18521;

/// Instructions per `GET /small` at c=16 for each counted server.
pub(crate) struct Counts {
    /// The native proxy with everything on.
    pub(crate) native: Option<f64>,
    /// The same, the token sent as OpenAI's clients send it
    /// (`Authorization`).
    pub(crate) native_openai: Option<f64>,
    /// The native proxy with what the nginx recipe does (one token).
    pub(crate) native_plain: Option<f64>,
    /// nginx, when it is installed.
    pub(crate) nginx: Option<f64>,
}

/// `cargo xtask bench-count`: the three counts alone (about a minute
/// against the whole bench's eleven), for comparing two builds.
pub(crate) fn bench_count() -> Result<(), String> {
    crate::bench::ensure_apt(&[
        ("wrk", "wrk"),
        ("nginx", "nginx-light"),
        ("valgrind", "valgrind"),
    ]);
    let target = crate::bench::build_release_binaries()?;
    let scratch = std::env::temp_dir().join(format!("ollama-proxy-count-{}", std::process::id()));
    for sub in ["", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        fs::create_dir_all(scratch.join(sub)).map_err(|e| e.to_string())?;
    }
    let mut origin = Command::new(target.join("release/bench-origin"));
    origin.arg(format!("127.0.0.1:{}", crate::bench::ORIGIN));
    let _origin = crate::bench::spawn(origin, crate::bench::ORIGIN)?;
    let keys = scratch.join("keys.toml");
    fs::write(&keys, crate::bench::keys_everything_on()).map_err(|e| e.to_string())?;
    let counts = per_request(&target, &scratch, &keys);
    let shown = |n: Option<f64>| n.map_or_else(|| "not counted".into(), |n| format!("{n:.0}"));
    println!(
        "instructions per GET /small, c=16: native (everything on) {}; the same with the token in Authorization {}; native as the nginx recipe {}; nginx {}",
        shown(counts.native),
        shown(counts.native_openai),
        shown(counts.native_plain),
        shown(counts.nginx)
    );
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}

/// Counts each server in turn; a count that fails is `None` (and why, on
/// stderr).
pub(crate) fn per_request(target: &Path, scratch: &Path, keys: &Path) -> Counts {
    for tool in ["valgrind", "callgrind_control"] {
        if output("which", &[tool]).is_none() {
            eprintln!("instructions per request not counted: {tool} is not installed");
            return Counts {
                native: None,
                native_openai: None,
                native_plain: None,
                nginx: None,
            };
        }
    }
    let origin = format!("http://127.0.0.1:{}", crate::bench::ORIGIN);
    let listen = format!("127.0.0.1:{COUNTED}");
    let admin = format!("127.0.0.1:{COUNTED_ADMIN}");
    let binary = target.join("release/ollama-proxy");
    let everything_on = |valgrind: &mut Command| {
        valgrind
            .env_clear()
            .env("OLLAMA_ORIGIN", &origin)
            .env("LISTEN_ADDR", &listen)
            .env("KEYS_FILE", keys)
            .env("MAX_CONCURRENT", "1000000")
            .env("METRICS_ADDR", &admin)
            .arg(&binary);
    };
    let native = count("native", scratch, Sent::CfAig, everything_on);
    let native_openai = count("native-openai", scratch, Sent::Authorization, everything_on);
    let native_plain = count("native-plain", scratch, Sent::CfAig, |valgrind| {
        valgrind
            .env_clear()
            .env("OLLAMA_ORIGIN", &origin)
            .env("LISTEN_ADDR", &listen)
            .env("AIG_AUTH_TOKEN", crate::bench::TOKEN)
            .arg(&binary);
    });
    let nginx = output("which", &["nginx"]).and_then(|_| {
        let conf = scratch.join("nginx-counted.conf");
        let text = crate::bench::nginx_conf_with(scratch, "-counted", &listen, "");
        fs::write(&conf, text).ok()?;
        count("nginx", scratch, Sent::CfAig, |valgrind| {
            // One process: a master would fork its worker out of
            // callgrind's sight.
            valgrind
                .arg("nginx")
                .args(["-g", "daemon off; master_process off;", "-c"])
                .arg(&conf);
        })
    });
    Counts {
        native,
        native_openai,
        native_plain,
        nginx,
    }
}

/// The header the load's token goes in.
#[derive(Clone, Copy)]
enum Sent {
    /// `cf-aig-authorization`, as in the rest of the bench.
    CfAig,
    /// `Authorization`, as OpenAI's clients send it.
    Authorization,
}

/// Runs a server under callgrind (`server` adds its program, arguments and
/// environment to the valgrind command) on port `COUNTED`, and counts the
/// instructions it spends per `GET /small` at c=16.
fn count(name: &str, scratch: &Path, sent: Sent, server: impl FnOnce(&mut Command)) -> Option<f64> {
    let why = |what: &str| {
        eprintln!("instructions per request not counted for {name}: {what}");
        None
    };
    let dumps = scratch.join(format!("callgrind-{name}"));
    let _ = fs::create_dir_all(&dumps);
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--dump-instr=no"])
        .arg(format!(
            "--callgrind-out-file={}",
            dumps.join("callgrind.out").display()
        ));
    server(&mut cmd);
    let log = fs::File::create(scratch.join(format!("counted-{name}.log"))).ok()?;
    let server = match spawn_logging(cmd.stderr(log), COUNTED) {
        Ok(server) => server,
        Err(error) => return why(&error),
    };
    let pid = server.0.id().to_string();
    let url = format!("http://127.0.0.1:{COUNTED}/small");
    let control = |what: &str| {
        Command::new("callgrind_control")
            .args([what, &pid])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let bearer = format!("Authorization: Bearer {}", crate::bench::TOKEN);
    let load = |seconds| match sent {
        Sent::CfAig => wrk(&url, 16, seconds, true, None),
        Sent::Authorization => wrk_with(&url, 16, seconds, false, None, &[&bearer]),
    };
    // Warm: connections to the origin made, caches and the pool filled.
    let _ = load(2);
    if !control("-z") {
        return why("callgrind_control -z failed");
    }
    let Some(load) = load(5) else {
        return why("wrk failed");
    };
    if !control("-d") {
        return why("callgrind_control -d failed");
    }
    let total = latest_dump(&dumps).and_then(|dump| summary(&dump));
    drop(server);
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
