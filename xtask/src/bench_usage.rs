//! The bench's usage part: what reading LLM answers for their usage costs.
//!
//! - Added delay per streamed chunk, natively: 20 chunks 20 ms apart on a
//!   route the proxy meters (`POST /api/chat`) and on an OpenAI stream it
//!   asks for its usage (`POST /v1/chat/completions` without
//!   `include_usage`: the body is edited on its way, the usage chunk taken
//!   out of the answer), against the origin direct.
//! - Memory per open metered stream: 1,000 open `/api/chat` streams through
//!   a fresh native instance.
//! - The Worker: 48 MiB of NDJSON (lines as Ollama's `/api/generate` writes
//!   them) through the Rust Worker in workerd, metered
//!   (`/api/generate`, every chunk copied into WASM and read) and not
//!   (`/ndjson`, the same bytes), medians of 5.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::bench::{curl_median, rss_kib, wrk, TOKEN};

/// 20 chunks, 20 ms apart.
const CHUNKS: u32 = 20;
const DELAY_MS: u32 = 20;
const NATIVE_CHAT: &str = r#"{"model":"bench","messages":[{"role":"user","content":"hi"}]}"#;
const OPENAI_CHAT: &str =
    r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const WORKER_BYTES: u64 = 48 << 20;
/// The fresh instance the open streams go through.
const FRESH: u16 = 18508;

/// Where the bench's own instances listen: the origin, the native proxy
/// and the Rust Worker in workerd.
pub(crate) struct Ports {
    pub(crate) origin: u16,
    pub(crate) native: u16,
    pub(crate) worker: u16,
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// The median total time of a streamed POST, in seconds.
fn stream_total(port: u16, path: &str, body: &str) -> Option<f64> {
    let target = url(port, &format!("{path}?chunks={CHUNKS}&delay_ms={DELAY_MS}"));
    curl_median(
        &[
            "-N",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            body,
            &target,
        ],
        "%{time_total}",
        5,
    )
    .map(|v| v[0])
}

/// Runs the usage measurements and appends their section to `report`;
/// returns the ratio rows (measure, value, target).
pub(crate) fn bench_usage(
    target: &Path,
    ports: &Ports,
    scratch: &Path,
    report: &mut String,
) -> Result<Vec<(String, String, &'static str)>, String> {
    // Added delay per chunk.
    let mut added = Vec::new();
    for (what, path, body) in [
        (
            "`POST /api/chat` (NDJSON, metered)",
            "/api/chat",
            NATIVE_CHAT,
        ),
        (
            "`POST /v1/chat/completions` (SSE, usage asked for and taken out)",
            "/v1/chat/completions",
            OPENAI_CHAT,
        ),
    ] {
        let direct = stream_total(ports.origin, path, body);
        let native = stream_total(ports.native, path, body);
        let per_chunk = direct
            .zip(native)
            .map(|(d, n)| (n - d) * 1e3 / f64::from(CHUNKS));
        eprintln!("usage: {path}: direct {direct:?} s, native {native:?} s");
        added.push((what, direct, native, per_chunk));
    }

    // Memory with 1,000 open metered streams (a fresh baseline first).
    let script = scratch.join("usage-chat.lua");
    fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{NATIVE_CHAT}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let streams = 1000u32;
    let fresh = crate::bench_policy::proxy(
        target,
        scratch,
        FRESH,
        &[("AIG_AUTH_TOKEN", TOKEN.to_owned())],
    )?;
    let pid = fresh.0.id();
    let (rss_before, _) = rss_kib(pid);
    let rss_during = {
        let target = url(FRESH, "/api/chat?chunks=200&delay_ms=50");
        let script = script.clone();
        let handle = std::thread::spawn(move || wrk(&target, streams, 6, true, Some(&script)));
        std::thread::sleep(Duration::from_secs(4));
        let (now, _) = rss_kib(pid);
        let _ = handle.join();
        now
    };
    drop(fresh);
    let per_stream_kib = rss_during.saturating_sub(rss_before) as f64 / f64::from(streams);

    // The Worker: the same 48 MB, metered and not. A POST naming a model
    // the bench's key may use: its keys document (as natively) lists the
    // models each key may use, and an LLM route without one is refused.
    // An error instead of the stream (a few hundred bytes) counts as none.
    let worker_total = |path: &str| {
        curl_median(
            &[
                "-d",
                r#"{"model":"bench","prompt":"hi"}"#,
                &url(ports.worker, &format!("{path}?bytes={WORKER_BYTES}")),
            ],
            "%{time_total} %{size_download}",
            5,
        )
        .filter(|v| {
            v.get(1)
                .is_some_and(|&bytes| bytes >= (WORKER_BYTES / 2) as f64)
        })
    };
    let plain = worker_total("/ndjson");
    let metered = worker_total("/api/generate");
    eprintln!("usage: worker 48 MB: plain {plain:?}, metered {metered:?}");
    let seconds = |v: &Option<Vec<f64>>| v.as_ref().map(|v| v[0]);
    let mib = |v: &Option<Vec<f64>>| v.as_ref().map_or(0.0, |v| v[1] / 1_048_576.0);

    let ms = |s: Option<f64>| s.map_or_else(|| "—".to_owned(), |s| format!("{:.1} ms", s * 1e3));
    let per = |p: Option<f64>| p.map_or_else(|| "—".to_owned(), |p| format!("{p:.3} ms"));
    let _ = writeln!(
        report,
        "\n## LLM usage (the proxy reads every LLM answer)\n\nStreams of {CHUNKS} chunks {DELAY_MS} ms apart, medians of 5 (curl):\n\n| stream | direct | native | added per chunk |\n|---|---|---|---|"
    );
    for (what, direct, native, per_chunk) in &added {
        let _ = writeln!(
            report,
            "| {what} | {} | {} | {} |",
            ms(*direct),
            ms(*native),
            per(*per_chunk)
        );
    }
    let _ = writeln!(
        report,
        "\n{streams} open metered streams (`/api/chat`): RSS {rss_before} KiB before, {rss_during} KiB during ({per_stream_kib:.1} KiB per stream).\n\nThe Rust Worker in workerd, {:.0} MiB of NDJSON (medians of 5): not an LLM route (`/ndjson`, passed through) {}; metered (`/api/generate`, each chunk copied into WASM and read) {}.",
        mib(&plain).max(mib(&metered)),
        ms(seconds(&plain)),
        ms(seconds(&metered)),
    );
    let worst = added
        .iter()
        .filter_map(|(_, _, _, p)| *p)
        .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
    Ok(vec![
        (
            "added delay per metered chunk (worst of NDJSON, SSE)".into(),
            per(worst),
            "≤ 0.15 ms",
        ),
        (
            "RSS per open metered stream".into(),
            format!("{per_stream_kib:.1} KiB"),
            "≤ 64 KiB",
        ),
        (
            "Rust Worker, 48 MiB NDJSON, metered/not".into(),
            match (seconds(&metered), seconds(&plain)) {
                (Some(m), Some(p)) if p > 0.0 => format!("{:.2}×", m / p),
                _ => "—".to_owned(),
            },
            "≤ 1.25×",
        ),
    ])
}
