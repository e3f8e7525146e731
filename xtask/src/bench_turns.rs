//! The bench's fair-turns part: what the doorman costs when its limits are
//! on but high enough never to trip. Two native instances, interleaved at
//! c=64: one with a single token and no limits, one whose key has
//! `max_concurrent` and `requests_per_minute` and runs under
//! `MAX_CONCURRENT`: every request asks the doorman (its rate), and every
//! embedding request takes a slot and gives it back.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::bench::{fmt_load, medians, wrk, Load, SECONDS, TOKEN};
use crate::bench_policy::proxy;

const PLAIN: u16 = 18509;
const LIMITED: u16 = 18510;
const EMBED: &str = r#"{"model":"bench","input":"hello"}"#;
/// Runs of each, alternating: the difference measured is a few percent,
/// about the noise of one run here, so more runs than the rest of the bench.
const RUNS: usize = 7;

fn interleaved(path: &str, script: Option<&Path>) -> (Option<Load>, Option<Load>) {
    let mut plain = Vec::new();
    let mut limited = Vec::new();
    for _ in 0..RUNS {
        plain.extend(wrk(
            &format!("http://127.0.0.1:{PLAIN}{path}"),
            64,
            SECONDS,
            true,
            script,
        ));
        limited.extend(wrk(
            &format!("http://127.0.0.1:{LIMITED}{path}"),
            64,
            SECONDS,
            true,
            script,
        ));
    }
    (medians(plain), medians(limited))
}

/// Runs the measurements and appends their section to `report`; returns
/// the ratio rows (measure, value, target).
pub(crate) fn bench_turns(
    target: &Path,
    scratch: &Path,
    report: &mut String,
) -> Result<Vec<(String, String, &'static str)>, String> {
    let keys = scratch.join("turns-keys.toml");
    fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nmax_concurrent = 1000000\nrequests_per_minute = 1000000000\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let plain = proxy(
        target,
        scratch,
        PLAIN,
        &[("AIG_AUTH_TOKEN", TOKEN.to_owned())],
    )?;
    let limited = proxy(
        target,
        scratch,
        LIMITED,
        &[
            ("KEYS_FILE", keys.to_string_lossy().into_owned()),
            ("MAX_CONCURRENT", "1000000".to_owned()),
        ],
    )?;
    let script = scratch.join("embed.lua");
    fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{EMBED}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let (get_plain, get_limited) = interleaved("/small", None);
    let (embed_plain, embed_limited) = interleaved("/api/embed", Some(&script));
    drop((plain, limited));
    let _ = writeln!(
        report,
        "\n## Fair turns (limits on, never tripping)\n\nInterleaved runs at c=64 (medians of {RUNS}) against two native instances: one with a single token and no limits; one whose key has `max_concurrent` and `requests_per_minute` (both far above the load) under `MAX_CONCURRENT`.\n\n| request | no limits | limits on |\n|---|---|---|\n| `GET /small` (the key's rate) | {} | {} |\n| `POST /api/embed` (the rate, and a slot taken and given back) | {} | {} |",
        fmt_load(get_plain),
        fmt_load(get_limited),
        fmt_load(embed_plain),
        fmt_load(embed_limited),
    );
    let ratio = |a: Option<Load>, b: Option<Load>| match (a, b) {
        (Some(a), Some(b)) if b.rps > 0.0 => format!("{:.3}×", a.rps / b.rps),
        _ => "—".to_owned(),
    };
    Ok(vec![
        (
            "limits on/off req/s, c=64, GET (rate)".to_owned(),
            ratio(get_limited, get_plain),
            "≥ 0.97×",
        ),
        (
            "limits on/off req/s, c=64, embedding (rate and slot)".to_owned(),
            ratio(embed_limited, embed_plain),
            "≥ 0.97×",
        ),
    ])
}
