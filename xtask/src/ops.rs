//! `ops-check`: the Grafana dashboard's queries run against a real
//! Prometheus scraping a loaded native proxy, panel by panel, so the
//! dashboard is known to show data (Grafana itself is not packaged for this
//! machine; Prometheus is, in Debian).

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench::{build_release_binaries, ensure_apt, spawn};
use crate::tasks::{output, root};

const ORIGIN: u16 = 18700;
const PROXY: u16 = 18701;
const ADMIN: u16 = 18702;
const PROMETHEUS: u16 = 18703;
const TOKEN_A: &str = "ops-token-team-a-0123456789";
const TOKEN_B: &str = "ops-token-team-b-0123456789";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every `"expr"` string in the dashboard, with its panel title, unescaped.
fn panel_queries(dashboard: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut title = String::new();
    let mut rest = dashboard;
    while let Some(at) = rest.find('"') {
        rest = &rest[at..];
        let (key, after) = read_json_string(rest);
        rest = after.trim_start();
        if let Some(value) = rest.strip_prefix(':') {
            let value = value.trim_start();
            if value.starts_with('"') {
                let (text, after) = read_json_string(value);
                match key.as_str() {
                    "title" => title = text,
                    "expr" => out.push((title.clone(), text)),
                    _ => {}
                }
                rest = after;
            } else {
                rest = value;
            }
        }
    }
    out
}

/// Reads a JSON string literal at the start of `s`; returns it and the rest.
fn read_json_string(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 2..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    (out, "")
}

/// Minimal percent-encoding for a query parameter.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn ops_check() -> Result<(), String> {
    ensure_apt(&[
        ("prometheus", "prometheus"),
        ("curl", "curl"),
        ("wrk", "wrk"),
    ]);
    if output("which", &["prometheus"]).is_none() {
        return Err("prometheus is not installed and apt could not install it".into());
    }
    let target = build_release_binaries()?;
    let scratch = std::env::temp_dir().join(format!("ollama-proxy-ops-{}", std::process::id()));
    fs::create_dir_all(scratch.join("data")).map_err(|e| e.to_string())?;

    let mut origin = Command::new(target.join("release/bench-origin"));
    origin.arg(format!("127.0.0.1:{ORIGIN}"));
    let _origin = spawn(origin, ORIGIN)?;
    let mut proxy = Command::new(target.join("release/ollama-proxy"));
    proxy
        .env_clear()
        .env("OLLAMA_ORIGIN", format!("http://127.0.0.1:{ORIGIN}"))
        .env(
            "AIG_AUTH_TOKENS",
            format!("team-a:{TOKEN_A},team-b:{TOKEN_B}"),
        )
        .env("LISTEN_ADDR", format!("127.0.0.1:{PROXY}"))
        .env("METRICS_ADDR", format!("127.0.0.1:{ADMIN}"));
    let _proxy = spawn(proxy, PROXY)?;

    // The repo's scrape example, pointed at this admin port, scraping every second.
    let example =
        fs::read_to_string(root().join("ops/prometheus.yml")).map_err(|e| e.to_string())?;
    let config = example
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{ADMIN}"));
    fs::write(scratch.join("prometheus.yml"), config).map_err(|e| e.to_string())?;
    let mut prometheus = Command::new("prometheus");
    prometheus
        .arg(format!(
            "--config.file={}",
            scratch.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS}"));
    let _prometheus = spawn(prometheus, PROMETHEUS)?;

    // Load for 40 s: team A steady small requests, both teams LLM answers
    // (team B's with a model load; some of team A's left early), team B
    // streams, some wrong tokens, and a few requests to a closed path of
    // the origin.
    eprintln!("ops-check: loading the proxy for 40 s while Prometheus scrapes it");
    let url = |path: &str| format!("http://127.0.0.1:{PROXY}{path}");
    let wrk = Command::new("wrk")
        .args(["-t1", "-c4", "-d40s", "-H"])
        .arg(format!("cf-aig-authorization: Bearer {TOKEN_A}"))
        .arg(url("/api/small"))
        .output();
    let started = Instant::now();
    let mut extra = 0;
    while started.elapsed() < Duration::from_secs(10) {
        for (token, path) in [
            (TOKEN_B, "/v1/stream?chunks=5&delay_ms=20"),
            (TOKEN_A, "/api/chat?chunks=8&delay_ms=10"),
            (TOKEN_B, "/api/chat?chunks=4&delay_ms=10&load_ms=400"),
            ("wrong-token", "/api/small"),
        ] {
            let _ = output(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-H",
                    &format!("authorization: Bearer {token}"),
                    &url(path),
                ],
            );
            extra += 1;
        }
        // A client that leaves an LLM answer early: its usage is unknown.
        let _ = output(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "0.2",
                "-H",
                &format!("authorization: Bearer {TOKEN_A}"),
                &url("/api/chat?chunks=20&delay_ms=50"),
            ],
        );
        extra += 1;
    }
    let wrk = wrk.map_err(|e| format!("wrk: {e}"))?;
    eprintln!(
        "ops-check: wrk: {}; {extra} curl requests",
        String::from_utf8_lossy(&wrk.stdout)
            .lines()
            .find(|l| l.contains("Requests/sec"))
            .unwrap_or("?")
            .trim()
    );
    let load_end = unix_now();
    // Wait (bounded) until Prometheus has scraped the proxy after the load
    // ended, so the queries below see the whole load.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scraped = output(
            "curl",
            &[
                "-s",
                &format!(
                    "http://127.0.0.1:{PROMETHEUS}/api/v1/query?query={}",
                    encode("timestamp(up{job=\"ollama-proxy\"})")
                ),
            ],
        )
        .and_then(|a| a.split("\"value\":[").nth(1).map(str::to_owned))
        .and_then(|v| v.split('"').nth(1).and_then(|t| t.parse::<f64>().ok()));
        if scraped.is_some_and(|t| t >= load_end as f64) {
            break;
        }
        if Instant::now() > deadline {
            return Err("Prometheus did not scrape the proxy within 30 s of the load".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let dashboard =
        fs::read_to_string(root().join("ops/grafana-dashboard.json")).map_err(|e| e.to_string())?;
    let queries = panel_queries(&dashboard);
    let mut report = String::from("| panel | query | series | values |\n|---|---|---|---|\n");
    let mut empty_panels = Vec::new();
    let mut panel_has_data: Vec<(String, bool)> = Vec::new();
    for (title, expr) in &queries {
        let expr = expr
            .replace("$__rate_interval", "30s")
            .replace("$job", ".*");
        // Evaluated at the last second of the load: rates over its last 30 s.
        let time = load_end - 1;
        let answer = output(
            "curl",
            &[
                "-s",
                &format!(
                    "http://127.0.0.1:{PROMETHEUS}/api/v1/query?time={time}&query={}",
                    encode(&expr)
                ),
            ],
        )
        .unwrap_or_default();
        if !answer.contains("\"status\":\"success\"") {
            return Err(format!("{title}: query failed: {expr}\n{answer}"));
        }
        let values: Vec<&str> = answer
            .split("\"value\":[")
            .skip(1)
            .filter_map(|v| v.split('"').nth(1))
            .collect();
        let labels: Vec<&str> = answer
            .split("\"metric\":{")
            .skip(1)
            .filter_map(|m| m.split('}').next())
            .collect();
        let shown: Vec<String> = labels
            .iter()
            .zip(&values)
            .map(|(l, v)| {
                let v: f64 = v.parse().unwrap_or(f64::NAN);
                if l.is_empty() {
                    format!("{v:.4}")
                } else {
                    format!("{{{l}}} {v:.4}")
                }
            })
            .collect();
        match panel_has_data.iter_mut().find(|(t, _)| t == title) {
            Some((_, has)) => *has |= !values.is_empty(),
            None => panel_has_data.push((title.clone(), !values.is_empty())),
        }
        report.push_str(&format!(
            "| {title} | `{}` | {} | {} |\n",
            expr.replace('|', "\\|"),
            values.len(),
            shown.join("; ").replace('|', "\\|")
        ));
    }
    for (title, has) in panel_has_data {
        if !has {
            empty_panels.push(title);
        }
    }
    println!("{report}");
    let written = format!(
        "# Dashboard check\n\nProduced by `cargo xtask ops-check`: every query of \
         `ops/grafana-dashboard.json` evaluated by a real Prometheus ({}) scraping a native \
         proxy under load (wrk with team A's token on `/api/small`, team B streaming on \
         `/v1/stream`, and wrong tokens), with `$__rate_interval` = 30s and `$job` = all. \
         Grafana itself is not packaged for Debian, so the panels were not drawn here; \
         their data was.\n\n{report}",
        output("prometheus", &["--version"])
            .and_then(|v| v.lines().next().map(str::to_owned))
            .unwrap_or_default()
    );
    fs::write(root().join("ops/dashboard-check.md"), written).map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&scratch);
    if empty_panels.is_empty() {
        eprintln!("ops-check: every panel of the dashboard has data");
        Ok(())
    } else {
        Err(format!("panels without data: {empty_panels:?}"))
    }
}
