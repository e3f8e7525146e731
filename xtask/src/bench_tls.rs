//! The bench's HTTPS part: the native proxy with `TLS_CERT_FILE` beside
//! nginx with `ssl` on, the same certificate (the test fixture for
//! localhost/127.0.0.1), both in front of the bench origin over plain HTTP.
//! Keep-alive requests at c=64, new connections (a TLS handshake each) at
//! c=64, and the 512 MiB download, runs interleaved.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::bench::{
    curl_median, fmt_load, medians, nginx_conf_with, spawn, wrk_with, RUNS, SECONDS,
};
use crate::bench_head::{alternating, cpu_spread, rps_ratios, spread, with_children};
use crate::bench_policy::proxy;
use crate::tasks::root;

const NATIVE_TLS: u16 = 18530;
const NGINX_TLS: u16 = 18531;

fn nginx_conf(dir: &Path, cert: &Path, key: &Path) -> String {
    nginx_conf_with(
        dir,
        "-tls",
        &format!("127.0.0.1:{NGINX_TLS} ssl http2"),
        &format!(
            "ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;",
            cert.display(),
            key.display()
        ),
    )
}

/// Runs the measurements and appends their section to `report`; returns
/// the ratio rows (measure, value, target).
pub(crate) fn bench_tls(
    target: &Path,
    scratch: &Path,
    report: &mut String,
) -> Result<Vec<(String, String, &'static str)>, String> {
    let fixtures = root().join("tests/fixtures/tls");
    let (cert, key, ca) = (
        fixtures.join("localhost.pem"),
        fixtures.join("localhost.key"),
        fixtures.join("ca.pem"),
    );
    let native = proxy(
        target,
        scratch,
        NATIVE_TLS,
        &[
            // Everything on, as the plain-HTTP instance (its keys document).
            (
                "KEYS_FILE",
                scratch.join("keys.toml").to_string_lossy().into_owned(),
            ),
            ("MAX_CONCURRENT", "1000000".to_owned()),
            ("MAX_BODY_BYTES", "4GiB".to_owned()),
            ("TLS_CERT_FILE", cert.to_string_lossy().into_owned()),
            ("TLS_KEY_FILE", key.to_string_lossy().into_owned()),
        ],
    )?;
    let conf = scratch.join("nginx-tls.conf");
    fs::write(&conf, nginx_conf(scratch, &cert, &key)).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("nginx");
    cmd.args(["-g", "daemon off;", "-c"]).arg(&conf);
    let nginx = spawn(cmd, NGINX_TLS).ok();

    let url = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    // Keep-alive first, in rounds alternating which goes first (as the
    // plain head to head), with the CPU each spent per request; then the
    // handshakes, so their closed connections do not weigh on those rounds.
    let native_pids = [native.0.id()];
    let nginx_pids = nginx
        .as_ref()
        .map(|n| with_children(n.0.id()))
        .unwrap_or_default();
    let (kept_native, kept_nginx) = alternating(
        (&url(NATIVE_TLS, "/small"), &native_pids),
        (&url(NGINX_TLS, "/small"), &nginx_pids),
        64,
        || {},
    );
    let kept_ratio = rps_ratios(&kept_native, &kept_nginx);
    let mut fresh = (Vec::new(), Vec::new());
    for round in 0..RUNS {
        let order = if round % 2 == 0 {
            [(NATIVE_TLS, &mut fresh.0), (NGINX_TLS, &mut fresh.1)]
        } else {
            [(NGINX_TLS, &mut fresh.1), (NATIVE_TLS, &mut fresh.0)]
        };
        for (port, into) in order {
            into.extend(wrk_with(
                &url(port, "/small"),
                64,
                SECONDS,
                true,
                None,
                &["Connection: close"],
            ));
        }
    }
    let (fresh_native, fresh_nginx) = (medians(fresh.0), medians(fresh.1));
    let ca = ca.to_string_lossy().into_owned();
    let size: u64 = 512 << 20;
    let download = |port: u16| {
        curl_median(
            &["--cacert", &ca, &url(port, &format!("/large?bytes={size}"))],
            "%{speed_download}",
            RUNS,
        )
        .map(|v| v[0] / 1e6)
    };
    let (down_native, down_nginx) = (download(NATIVE_TLS), download(NGINX_TLS));
    drop((native, nginx));

    let mbs = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0}"));
    let _ = writeln!(
        report,
        "\n## HTTPS (native `TLS_CERT_FILE` vs nginx `ssl`, same certificate)\n\nTLS 1.3 (both offer 1.2 and 1.3; wrk and curl pick 1.3), the origin behind over plain HTTP; the native proxy with everything on, as above. Keep-alive: {RUNS} rounds alternating which goes first, median (min–max), CPU per request user + kernel from `/proc`; then the rest, medians of {RUNS} interleaved runs.\n\n| measure | native | nginx |\n|---|---|---|\n| `GET /small`, c=64, keep-alive: req/s | {} | {} |\n| the same: CPU µs per request (user + kernel) | {} | {} |\n| the same: native/nginx req/s | {} | |\n| `GET /small`, c=64, a new connection (handshake) per request | {} | {} |\n| 512 MiB download (MB/s, curl) | {} | {} |",
        spread(&kept_native.iter().map(|r| r.rps).collect::<Vec<_>>(), 0),
        spread(&kept_nginx.iter().map(|r| r.rps).collect::<Vec<_>>(), 0),
        cpu_spread(&kept_native),
        cpu_spread(&kept_nginx),
        spread(&kept_ratio, 2),
        fmt_load(fresh_native),
        fmt_load(fresh_nginx),
        mbs(down_native),
        mbs(down_nginx),
    );
    Ok(vec![
        (
            "HTTPS native/nginx req/s, c=64, keep-alive (alternating)".to_owned(),
            format!("{}×", spread(&kept_ratio, 2)),
            "≥ 1×",
        ),
        (
            "HTTPS handshakes/s, native/nginx (c=64, a connection per request)".to_owned(),
            match (fresh_native, fresh_nginx) {
                (Some(n), Some(g)) => format!("{:.0} / {:.0}", n.rps, g.rps),
                _ => "—".to_owned(),
            },
            "measured",
        ),
        (
            "HTTPS 512 MiB download, native/nginx".to_owned(),
            match (down_native, down_nginx) {
                (Some(n), Some(g)) if g > 0.0 => format!("{:.1}×", n / g),
                _ => "—".to_owned(),
            },
            "≥ 2×",
        ),
    ])
}
