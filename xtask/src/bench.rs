//! `bench`: the proxy measured beside its alternatives, in one run, against
//! one fast origin. Not a test: numbers, ratios and a results file.
//!
//! Load comes from `wrk` and `curl` (installed from Debian's packages when
//! missing), nginx is the peer when it can be installed, and workerd runs
//! both the Rust Worker and a minimal hand-written JavaScript Worker.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tasks::{cargo, output, root, run};
use crate::worker::{build_dir, build_worker, worker_dir};

pub(crate) const TOKEN: &str = "bench-token-0123456789abcdef";
pub(crate) const ORIGIN: u16 = 18500;
const NATIVE: u16 = 18501;
const NGINX: u16 = 18502;
const WORKER_RS: u16 = 18503;
const WORKER_JS: u16 = 18504;
/// The hand-written JS Worker grown to the Rust Worker's checks.
const WORKER_JS_SAME: u16 = 18512;
pub(crate) const RUNS: usize = 3;
/// Where the hand-written part of `bench/results.md` starts.
const ANALYSIS: &str = "## Analysis";
pub(crate) const SECONDS: u32 = 4;

/// A child process stopped on drop: SIGTERM first, so that one with
/// children of its own (nginx's master) takes them down too (a SIGKILL
/// left nginx's workers serving the port into the next run), then SIGKILL
/// after 5 s.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for_port(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listening on port {port} after 20s"))
}

/// Starts a server and waits for its port.
pub(crate) fn spawn(mut cmd: Command, port: u16) -> Result<Proc, String> {
    spawn_logging(cmd.stderr(Stdio::null()), port)
}

/// Starts a server whose standard error the caller has set, and waits for
/// its port, which must be free before: a leftover of an earlier run
/// answering there would be measured instead.
pub(crate) fn spawn_logging(cmd: &mut Command, port: u16) -> Result<Proc, String> {
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return Err(format!(
            "port {port} is already taken (a leftover of an earlier run?)"
        ));
    }
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let proc = Proc(child);
    wait_for_port(port)?;
    Ok(proc)
}

/// Installs Debian packages for the programs that are missing.
pub(crate) fn ensure_apt(tools: &[(&str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| output("which", &[bin]).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    let install = |update: bool| {
        if update {
            let _ = Command::new("apt-get").arg("update").arg("-q").status();
        }
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install(false) && !install(true) {
        eprintln!("bench: could not install {missing:?}; measurements that need them are skipped");
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) requests: f64,
}

fn micros(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * factor)
}

/// One wrk run; `auth` adds the proxy token, `script` a Lua script (for a
/// request with a body).
pub(crate) fn wrk(
    url: &str,
    connections: u32,
    seconds: u32,
    auth: bool,
    script: Option<&Path>,
) -> Option<Load> {
    wrk_with(url, connections, seconds, auth, script, &[])
}

/// [`wrk`] with more request headers (`Name: value`).
pub(crate) fn wrk_with(
    url: &str,
    connections: u32,
    seconds: u32,
    auth: bool,
    script: Option<&Path>,
    headers: &[&str],
) -> Option<Load> {
    let threads = connections.clamp(1, 2).to_string();
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &threads,
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    if auth {
        cmd.args(["-H", &format!("cf-aig-authorization: Bearer {TOKEN}")]);
    }
    for header in headers {
        cmd.args(["-H", header]);
    }
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => load.rps = n.parse().ok()?,
            ["50%", t] => load.p50_us = micros(t)?,
            ["99%", t] => load.p99_us = micros(t)?,
            [n, "requests", "in", ..] => load.requests = n.parse().ok()?,
            _ => {}
        }
    }
    (load.rps > 0.0).then_some(load)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of `RUNS` wrk runs, field by field.
fn wrk_median(url: &str, connections: u32, auth: bool) -> Option<Load> {
    medians(
        (0..RUNS)
            .filter_map(|_| wrk(url, connections, SECONDS, auth, None))
            .collect(),
    )
}

/// Runs summed up field by field: each field's median; `None` for none.
pub(crate) fn medians(runs: Vec<Load>) -> Option<Load> {
    if runs.is_empty() {
        return None;
    }
    Some(Load {
        rps: median(runs.iter().map(|l| l.rps).collect()),
        p50_us: median(runs.iter().map(|l| l.p50_us).collect()),
        p99_us: median(runs.iter().map(|l| l.p99_us).collect()),
        requests: median(runs.iter().map(|l| l.requests).collect()),
    })
}

/// curl's `-w` variables for one transfer, as numbers.
fn curl(args: &[&str], write_out: &str) -> Option<Vec<f64>> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-H",
            &format!("cf-aig-authorization: Bearer {TOKEN}"),
            "-w",
            write_out,
        ])
        .args(args)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect()
}

pub(crate) fn curl_median(args: &[&str], write_out: &str, runs: usize) -> Option<Vec<f64>> {
    let all: Vec<Vec<f64>> = (0..runs).filter_map(|_| curl(args, write_out)).collect();
    let width = all.first()?.len();
    Some(
        (0..width)
            .map(|i| median(all.iter().map(|v| v[i]).collect()))
            .collect(),
    )
}

/// Resident set size now and at its peak, in KiB.
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of a process, in milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks * 10.0 // USER_HZ is 100 on Linux
}

fn nginx_conf(dir: &Path) -> String {
    nginx_conf_with(dir, "", &format!("127.0.0.1:{NGINX}"), "")
}

/// The nginx the bench measures against: the recipe a user would write
/// (token check on either header, credentials and `Origin` stripped, CORS
/// header, nothing buffered), listening on `listen`, with `server_extra` in
/// its server block (the TLS settings); files named with `tag`.
pub(crate) fn nginx_conf_with(dir: &Path, tag: &str, listen: &str, server_extra: &str) -> String {
    format!(
        r#"worker_processes auto;
pid {dir}/nginx{tag}.pid;
error_log {dir}/error{tag}.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access{tag}.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  client_max_body_size 0;
  map $http_cf_aig_authorization $aig_ok {{ "Bearer {TOKEN}" 1; default 0; }}
  map $http_authorization $bearer_ok {{ "Bearer {TOKEN}" 1; default 0; }}
  upstream ollama {{ server 127.0.0.1:{ORIGIN}; keepalive 128; }}
  server {{
    listen {listen};
    {server_extra}
    location / {{
      set $ok "$aig_ok$bearer_ok";
      if ($ok = "00") {{
        add_header WWW-Authenticate Bearer always;
        return 401 '{{"error":{{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}}}';
      }}
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header cf-aig-authorization "";
      proxy_set_header Authorization "";
      proxy_set_header Origin "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
      add_header Access-Control-Allow-Origin * always;
    }}
  }}
}}
"#,
        dir = dir.display()
    )
}

const JS_WORKER: &str = r#"// The hand-written Worker a user would otherwise deploy: token check,
// credentials stripped, CORS header, body streamed through.
export default {
  async fetch(request, env) {
    const auth = request.headers.get("cf-aig-authorization") || request.headers.get("authorization") || "";
    if (auth !== `Bearer ${env.AIG_AUTH_TOKEN}`) {
      return new Response('{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}',
        { status: 401, headers: { "content-type": "application/json", "www-authenticate": "Bearer" } });
    }
    const url = new URL(request.url);
    const headers = new Headers(request.headers);
    headers.delete("cf-aig-authorization");
    headers.delete("authorization");
    headers.delete("origin");
    const upstream = await fetch(env.OLLAMA_ORIGIN + url.pathname + url.search, {
      method: request.method, headers, body: request.body, redirect: "manual", signal: request.signal,
    });
    const response = new Response(upstream.body, upstream);
    response.headers.set("access-control-allow-origin", "*");
    return response;
  },
};
"#;

/// `credentials`: the Worker's credential bindings.
fn workerd_conf(port: u16, modules: &str, credentials: &str) -> String {
    format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .w), (name = "loopback", network = (allow = ["local"])) ],
  sockets = [ (name = "http", address = "127.0.0.1:{port}", http = (), service = "main") ],
);
const w :Workerd.Worker = (
  modules = [ {modules} ],
  compatibilityDate = "2026-04-01",
  compatibilityFlags = ["enable_request_signal"],
  bindings = [ (name = "OLLAMA_ORIGIN", text = "http://127.0.0.1:{ORIGIN}"), {credentials} ],
  globalOutbound = "loopback",
);
"#
    )
}

fn start_workerd(dir: &Path, port: u16, modules: &str, credentials: &str) -> Result<Proc, String> {
    fs::write(
        dir.join(format!("w{port}.capnp")),
        workerd_conf(port, modules, credentials),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(worker_dir().join("node_modules/.bin/workerd"));
    cmd.current_dir(dir)
        .args(["serve", &format!("w{port}.capnp")]);
    spawn(cmd, port)
}

pub(crate) fn fmt_load(l: Option<Load>) -> String {
    l.map_or_else(
        || "—".into(),
        |l| {
            format!(
                "{:>9.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs",
                l.rps, l.p50_us, l.p99_us
            )
        },
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

/// Builds the release proxy and the bench origin; returns the target dir.
pub(crate) fn build_release_binaries() -> Result<PathBuf, String> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "ollama-proxy-native",
        "-p",
        "ollama-proxy-bench",
    ]);
    run(build)?;
    Ok(std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from))
}

/// The bench's keys document: 50 hashed keys with model lists, the bench's
/// key limited far above any load.
pub(crate) fn keys_everything_on() -> String {
    crate::bench_policy::keys_document_with(
        "max_concurrent = 1000000\nrequests_per_minute = 1000000000\n",
    )
}

/// Runs every measurement and writes `bench/results.md`.
pub(crate) fn bench() -> Result<(), String> {
    ensure_apt(&[("wrk", "wrk"), ("curl", "curl"), ("nginx", "nginx-light")]);
    // Counts allocations per request; on its own, as it is optional.
    ensure_apt(&[("perf", "linux-perf")]);
    // Counts instructions per request; optional too.
    ensure_apt(&[("valgrind", "valgrind")]);
    let target = build_release_binaries()?;
    build_worker()?;

    let scratch = std::env::temp_dir().join(format!("ollama-proxy-bench-{}", std::process::id()));
    for sub in ["", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        fs::create_dir_all(scratch.join(sub)).map_err(|e| e.to_string())?;
    }

    let mut origin_cmd = Command::new(target.join("release/bench-origin"));
    origin_cmd.arg(format!("127.0.0.1:{ORIGIN}"));
    let _origin = spawn(origin_cmd, ORIGIN)?;
    // Everything on: 50 hashed keys with model lists, the bench's key
    // limited far above the load, under MAX_CONCURRENT; metrics, request
    // ids and the log line are on by default.
    let keys = scratch.join("keys.toml");
    fs::write(&keys, keys_everything_on()).map_err(|e| e.to_string())?;
    let mut native_cmd = Command::new(target.join("release/ollama-proxy"));
    native_cmd
        .env_clear()
        .env("OLLAMA_ORIGIN", format!("http://127.0.0.1:{ORIGIN}"))
        .env("KEYS_FILE", &keys)
        .env("MAX_CONCURRENT", "1000000")
        .env("METRICS_ADDR", "127.0.0.1:18520")
        .env("LISTEN_ADDR", format!("127.0.0.1:{NATIVE}"))
        // nginx is configured without a body limit; match it for the upload.
        .env("MAX_BODY_BYTES", "4GiB");
    // Both proxies write their default access log line per request to a file.
    let native_log = fs::File::create(scratch.join("native.log")).map_err(|e| e.to_string())?;
    let native = spawn_logging(native_cmd.stderr(native_log), NATIVE)?;
    let native_pid = native.0.id();
    let _nginx = if output("which", &["nginx"]).is_some() {
        fs::write(scratch.join("nginx.conf"), nginx_conf(&scratch)).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nginx");
        cmd.args(["-g", "daemon off;", "-c"])
            .arg(scratch.join("nginx.conf"));
        spawn(cmd, NGINX).ok()
    } else {
        None
    };

    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    let targets: Vec<(&str, u16, bool)> = {
        let mut t = vec![("direct", ORIGIN, false), ("native", NATIVE, true)];
        if _nginx.is_some() {
            t.push(("nginx", NGINX, true));
        }
        t
    };
    let mut report = String::new();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(report, "# Benchmark results\n");
    let _ = writeln!(
        report,
        "Machine: {cores} cores ({cpu}), shared by load generator, proxy and origin. Medians of {RUNS} runs of {SECONDS}s. Produced by `cargo xtask bench`.\n"
    );

    // Small authenticated requests.
    let (rss_idle, _) = rss_kib(native_pid);
    let _ = writeln!(
        report,
        "## Small authenticated requests (`GET /small`, 60-byte JSON)\n"
    );
    let _ = writeln!(report, "| target | c=1 | c=64 | c=256 |\n|---|---|---|---|");
    let mut loads: Vec<(&str, [Option<Load>; 3])> = Vec::new();
    let mut native_cpu_per_req = None;
    for (name, port, auth) in &targets {
        let mut row = [None; 3];
        for (i, c) in [1u32, 64, 256].into_iter().enumerate() {
            let cpu_before = cpu_ms(native_pid);
            row[i] = wrk_median(&url(*port, "/small"), c, *auth);
            if *name == "native" && c == 64 {
                let spent = cpu_ms(native_pid) - cpu_before;
                native_cpu_per_req = row[i].map(|l| spent * 1e3 / (l.requests * RUNS as f64));
            }
        }
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} |",
            fmt_load(row[0]),
            fmt_load(row[1]),
            fmt_load(row[2])
        );
        eprintln!(
            "{name:>7}: c=1 {} | c=64 {} | c=256 {}",
            fmt_load(row[0]),
            fmt_load(row[1]),
            fmt_load(row[2])
        );
        loads.push((name, row));
    }
    let (_, rss_peak_load) = rss_kib(native_pid);
    let head = _nginx.as_ref().map(|nginx| {
        crate::bench_head::head_to_head(
            &crate::bench_head::Targets {
                direct: ORIGIN,
                native: NATIVE,
                nginx: NGINX,
                native_pids: &[native_pid],
                nginx_pids: &crate::bench_head::with_children(nginx.0.id()),
            },
            &mut report,
        )
    });
    let get = |name: &str, i: usize| {
        loads
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, r)| r[i])
    };
    let added_native = get("native", 0)
        .zip(get("direct", 0))
        .map(|(n, d)| n.p50_us - d.p50_us);
    let added_nginx = get("nginx", 0)
        .zip(get("direct", 0))
        .map(|(n, d)| n.p50_us - d.p50_us);

    // Allocations per small request, counted from outside.
    let allocs = crate::bench_alloc::per_request(native_pid, &url(NATIVE, "/small"), 64, 2);
    // Instructions per small request, counted under callgrind.
    let counts = crate::bench_count::per_request(&target, &scratch, &keys);

    // Large bodies.
    let size: u64 = 512 << 20;
    let upload = scratch.join("upload.bin");
    fs::write(&upload, vec![b'u'; 256 << 20]).map_err(|e| e.to_string())?;
    let mut down = Vec::new();
    let mut up = Vec::new();
    for (name, port, _) in &targets {
        let d = curl_median(
            &[&url(*port, &format!("/large?bytes={size}"))],
            "%{speed_download}",
            RUNS,
        )
        .map(|v| v[0] / 1e6);
        let u = curl_median(
            &[
                "-X",
                "POST",
                "-T",
                upload.to_str().unwrap_or_default(),
                &url(*port, "/upload"),
            ],
            "%{speed_upload}",
            RUNS,
        )
        .map(|v| v[0] / 1e6);
        down.push((*name, d));
        up.push((*name, u));
    }
    let _ = fs::remove_file(&upload);

    // Streaming: time to first byte and added delay per chunk (20 chunks, 20 ms apart).
    let mut streaming = Vec::new();
    for (name, port, _) in &targets {
        let v = curl_median(
            &["-N", &url(*port, "/stream?chunks=20&delay_ms=20")],
            "%{time_starttransfer} %{time_total}",
            5,
        );
        streaming.push((*name, v));
    }

    // Memory with 1,000 open streams.
    let streams = 1000u32;
    let rss_during = {
        let handle = std::thread::spawn(move || {
            wrk(
                &url(NATIVE, "/stream?chunks=200&delay_ms=50"),
                streams,
                6,
                true,
                None,
            )
        });
        std::thread::sleep(Duration::from_secs(4));
        let (now, _) = rss_kib(native_pid);
        let _ = handle.join();
        now
    };
    // What is left a few sweeps after the streams ended (users read memory
    // that never comes back as a leak).
    std::thread::sleep(Duration::from_secs(12));
    let (rss_after, _) = rss_kib(native_pid);
    let per_stream_kib = (rss_during.saturating_sub(rss_idle)) as f64 / f64::from(streams);

    let lookup = |v: &[(&str, Option<f64>)], name: &str| {
        v.iter().find(|(n, _)| *n == name).and_then(|(_, x)| *x)
    };
    let _ = writeln!(report, "\n## Large bodies (MB/s, curl)\n\n| target | 512 MiB download | 256 MiB upload |\n|---|---|---|");
    for (name, _, _) in &targets {
        let _ = writeln!(
            report,
            "| {name} | {:.0} | {:.0} |",
            lookup(&down, name).unwrap_or(f64::NAN),
            lookup(&up, name).unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(report, "\n## Streaming (20 NDJSON chunks, 20 ms apart; medians of 5)\n\n| target | time to first byte | total | added per chunk vs direct |\n|---|---|---|---|");
    let direct_total = streaming
        .iter()
        .find(|(n, _)| *n == "direct")
        .and_then(|(_, v)| v.as_ref())
        .map(|v| v[1]);
    for (name, v) in &streaming {
        if let Some(v) = v {
            let added = direct_total.map_or(f64::NAN, |d| (v[1] - d) * 1e3 / 20.0);
            let _ = writeln!(
                report,
                "| {name} | {:.2} ms | {:.1} ms | {:.3} ms |",
                v[0] * 1e3,
                v[1] * 1e3,
                added
            );
        }
    }

    // Per-key policy: a keys document of 50 hashed keys with model lists.
    let policy_rows = crate::bench_policy::bench_policy(&target, &scratch, &mut report)?;
    // Fair turns: limits on but never tripping.
    let turns_rows = crate::bench_turns::bench_turns(&target, &scratch, &mut report)?;
    // HTTPS beside nginx's.
    let tls_rows = crate::bench_tls::bench_tls(&target, &scratch, &mut report)?;

    // The Worker.
    let bundle = build_dir();
    let size_of = |p: PathBuf| fs::metadata(p).map_or(0, |m| m.len());
    let gzip_of = |p: PathBuf| {
        Command::new("gzip")
            .args(["-9", "-c"])
            .arg(p)
            .output()
            .map_or(0, |o| o.stdout.len() as u64)
    };
    let raw =
        size_of(bundle.join("worker.js")) + size_of(bundle.join("ollama_proxy_worker_bg.wasm"));
    let gz =
        gzip_of(bundle.join("worker.js")) + gzip_of(bundle.join("ollama_proxy_worker_bg.wasm"));
    for file in ["worker.js", "ollama_proxy_worker_bg.wasm"] {
        fs::copy(bundle.join(file), scratch.join(file)).map_err(|e| e.to_string())?;
    }
    fs::write(scratch.join("js-worker.js"), JS_WORKER).map_err(|e| e.to_string())?;
    // The Rust Worker with what has landed on: the same 50 hashed keys with
    // model lists as the native proxy (the bench's token among them), as the
    // AIG_KEYS secret. Limits stay off here: at the edge they need the
    // DOORMAN Durable Object, a round trip the hand-written Worker has no
    // counterpart for.
    fs::write(
        scratch.join("worker-keys.toml"),
        crate::bench_policy::keys_document_with(""),
    )
    .map_err(|e| e.to_string())?;
    let rs = start_workerd(
        &scratch,
        WORKER_RS,
        r#"(name = "worker.js", esModule = embed "worker.js"), (name = "ollama_proxy_worker_bg.wasm", wasm = embed "ollama_proxy_worker_bg.wasm")"#,
        r#"(name = "AIG_KEYS", text = embed "worker-keys.toml")"#,
    )?;
    let js = start_workerd(
        &scratch,
        WORKER_JS,
        r#"(name = "js-worker.js", esModule = embed "js-worker.js")"#,
        &format!(r#"(name = "AIG_AUTH_TOKEN", text = "{TOKEN}")"#),
    )?;
    fs::write(
        scratch.join("js-worker-same-checks.js"),
        include_str!("../../bench/js-worker-same-checks.js"),
    )
    .map_err(|e| e.to_string())?;
    fs::write(
        scratch.join("worker-keys.json"),
        crate::bench_policy::keys_json(),
    )
    .map_err(|e| e.to_string())?;
    let js_same = start_workerd(
        &scratch,
        WORKER_JS_SAME,
        r#"(name = "js-worker-same-checks.js", esModule = embed "js-worker-same-checks.js")"#,
        r#"(name = "AIG_KEYS_JSON", text = embed "worker-keys.json")"#,
    )?;
    let mut worker_rows = Vec::new();
    for (name, port) in [
        ("direct", ORIGIN),
        ("Rust Worker (workerd)", WORKER_RS),
        ("JS Worker (workerd)", WORKER_JS),
    ] {
        let c1 = wrk_median(&url(port, "/small"), 1, true);
        let c64 = wrk_median(&url(port, "/small"), 64, true);
        eprintln!("{name:>22}: c=1 {} | c=64 {}", fmt_load(c1), fmt_load(c64));
        worker_rows.push((name, c1, c64));
    }
    let mut workers_text = String::new();
    let mut workers_rows = crate::bench_head::workers_head_to_head(
        (WORKER_RS, rs.0.id()),
        (WORKER_JS, js.0.id()),
        crate::bench_head::JsWorker::Plain,
        &mut workers_text,
    );
    drop(js);
    workers_rows.extend(crate::bench_head::workers_head_to_head(
        (WORKER_RS, rs.0.id()),
        (WORKER_JS_SAME, js_same.0.id()),
        crate::bench_head::JsWorker::SameChecks,
        &mut workers_text,
    ));
    drop(js_same);
    // What reading LLM answers for their usage costs (the Rust Worker too).
    let usage_rows = crate::bench_usage::bench_usage(
        &target,
        &crate::bench_usage::Ports {
            origin: ORIGIN,
            native: NATIVE,
            worker: WORKER_RS,
        },
        &scratch,
        &mut report,
    )?;
    drop(rs);

    // Summary and ratios.
    let wr = |name: &str| worker_rows.iter().find(|(n, _, _)| *n == name).copied();
    let rs_row = wr("Rust Worker (workerd)");
    let js_row = wr("JS Worker (workerd)");
    let _ = writeln!(report, "\n## The Worker\n\nBundle: {} KiB raw, {} KiB gzip.\n\n| target | c=1 | c=64 |\n|---|---|---|", raw / 1024, gz / 1024);
    for (name, c1, c64) in &worker_rows {
        let _ = writeln!(
            report,
            "| {name} | {} | {} |",
            fmt_load(*c1),
            fmt_load(*c64)
        );
    }
    report.push_str(&workers_text);
    let _ = writeln!(
        report,
        "\n## Memory and CPU (native)\n\n- RSS idle: {} KiB; peak under load: {} KiB; with {streams} open streams: {} KiB ({per_stream_kib:.1} KiB per stream); 12 s after they ended: {} KiB\n- CPU per request at c=64: {}\n- Allocations per `GET /small` at c=64 (everything on; `perf` uprobes on malloc, calloc and realloc): {}\n- Instructions per `GET /small` at c=16 (everything on, under callgrind; repeats within 1 % from run to run, see `xtask/src/bench_count.rs`): {}",
        rss_idle,
        rss_peak_load,
        rss_during,
        rss_after,
        native_cpu_per_req.map_or_else(|| "—".into(), |c| format!("{c:.1} µs")),
        allocs.as_ref().map_or_else(
            || "not counted (see the bench's output)".into(),
            |a| format!(
                "{:.1} calls, {:.1} KiB; the sizes taking the most bytes: {}",
                a.calls,
                a.bytes / 1024.0,
                a.largest
                    .iter()
                    .map(|(size, n)| format!("{size} B × {n:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        ),
        {
            let shown = |n: Option<f64>| n.map_or_else(|| "not counted".into(), |n| format!("{n:.0}"));
            format!(
                "{}; the same with the token in `Authorization` (as OpenAI's clients send it): {}; the native proxy doing only what the nginx recipe does (one token, no limits, no metrics, the log line): {}; nginx: {}",
                shown(counts.native),
                shown(counts.native_openai),
                shown(counts.native_plain),
                shown(counts.nginx)
            )
        }
    );
    let _ = writeln!(
        report,
        "\n## Ratios (same run)\n\n| measure | value | target |\n|---|---|---|"
    );
    let rps = |name: &str, i: usize| get(name, i).map(|l| l.rps);
    let p99 = |name: &str, i: usize| get(name, i).map(|l| l.p99_us);
    let rows: Vec<(String, String, &str)> = vec![
        (
            "native/direct req/s, c=64".into(),
            ratio(rps("native", 1), rps("direct", 1)),
            "—",
        ),
        (
            "native/nginx req/s, c=64 (the first table: blocks in turn)".into(),
            ratio(rps("native", 1), rps("nginx", 1)),
            "—",
        ),
        (
            "native/nginx p99, c=64 (the first table)".into(),
            ratio(p99("native", 1), p99("nginx", 1)),
            "—",
        ),
        (
            "native/nginx req/s, c=256 (the first table)".into(),
            ratio(rps("native", 2), rps("nginx", 2)),
            "—",
        ),
        (
            "added latency at c=1 (native; nginx; the first table)".into(),
            format!(
                "{} µs; {} µs",
                added_native.map_or("—".into(), |v| format!("{v:.0}")),
                added_nginx.map_or("—".into(), |v| format!("{v:.0}"))
            ),
            "—",
        ),
        (
            "native/nginx MB/s, download".into(),
            ratio(lookup(&down, "native"), lookup(&down, "nginx")),
            "≥ 2×",
        ),
        (
            "native/nginx MB/s, upload".into(),
            ratio(lookup(&up, "native"), lookup(&up, "nginx")),
            "≥ 2×",
        ),
        (
            "native/direct MB/s, download".into(),
            ratio(lookup(&down, "native"), lookup(&down, "direct")),
            "—",
        ),
        (
            "RSS 12 s after 1,000 streams ended / idle before".into(),
            format!(
                "{:.2}× ({:.1} / {:.1} MiB)",
                rss_after as f64 / rss_idle.max(1) as f64,
                rss_after as f64 / 1024.0,
                rss_idle as f64 / 1024.0
            ),
            "≤ 2×",
        ),
        (
            "allocations per GET /small, c=64 (calls; bytes)".into(),
            allocs.as_ref().map_or_else(
                || "—".into(),
                |a| format!("{:.1}; {:.1} KiB", a.calls, a.bytes / 1024.0),
            ),
            "measured",
        ),
        (
            "instructions per GET /small, c=16 (callgrind): native; token in Authorization; native as the nginx recipe; nginx".into(),
            [counts.native, counts.native_openai, counts.native_plain, counts.nginx]
                .map(|n| n.map_or_else(|| "—".into(), |n| format!("{:.1}k", n / 1e3)))
                .join("; "),
            "measured",
        ),
        (
            "RSS under load".into(),
            format!("{} MiB", rss_peak_load / 1024),
            "≤ 20 MiB",
        ),
        (
            "RSS per open stream".into(),
            format!("{per_stream_kib:.1} KiB"),
            "≤ 64 KiB",
        ),
        (
            "Rust Worker/JS Worker p50, c=1 (the Worker table: blocks in turn)".into(),
            ratio(
                rs_row.and_then(|r| r.1).map(|l| l.p50_us),
                js_row.and_then(|r| r.1).map(|l| l.p50_us),
            ),
            "—",
        ),
        (
            "Rust Worker/JS Worker req/s, c=64".into(),
            ratio(
                rs_row.and_then(|r| r.2).map(|l| l.rps),
                js_row.and_then(|r| r.2).map(|l| l.rps),
            ),
            "—",
        ),
        (
            "Worker bundle gzip".into(),
            format!("{} KiB", gz / 1024),
            "≤ 300 KiB",
        ),
    ];
    let head_rows = head.map(|h| h.rows).unwrap_or_default();
    for (measure, value, target) in head_rows
        .iter()
        .chain(&rows)
        .chain(&workers_rows)
        .chain(&policy_rows)
        .chain(&turns_rows)
        .chain(&tls_rows)
        .chain(&usage_rows)
    {
        let _ = writeln!(report, "| {measure} | {value} | {target} |");
    }
    println!("{report}");
    let out = root().join("bench/results.md");
    // The hand-written analysis below the generated tables survives re-runs.
    if let Some(notes) = fs::read_to_string(&out)
        .ok()
        .and_then(|old| old.find(ANALYSIS).map(|at| old[at..].to_owned()))
    {
        report.push('\n');
        report.push_str(&notes);
    }
    fs::write(&out, &report).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}
