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
    curl_median, fmt_load, medians, spawn, wrk_with, Load, ORIGIN, RUNS, SECONDS, TOKEN,
};
use crate::bench_policy::proxy;
use crate::tasks::root;

const NATIVE_TLS: u16 = 18530;
const NGINX_TLS: u16 = 18531;

fn nginx_conf(dir: &Path, cert: &Path, key: &Path) -> String {
    format!(
        r#"worker_processes auto;
pid {dir}/nginx-tls.pid;
error_log {dir}/error-tls.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {dir}/access-tls.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  client_max_body_size 0;
  map $http_cf_aig_authorization $aig_ok {{ "Bearer {TOKEN}" 1; default 0; }}
  upstream ollama {{ server 127.0.0.1:{ORIGIN}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{NGINX_TLS} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      if ($aig_ok = "0") {{ return 401; }}
      proxy_pass http://ollama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header cf-aig-authorization "";
      proxy_buffering off;
      proxy_request_buffering off;
      add_header Access-Control-Allow-Origin * always;
    }}
  }}
}}
"#,
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
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
    let mut kept = (Vec::new(), Vec::new());
    let mut fresh = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        for (port, into) in [(NATIVE_TLS, &mut kept.0), (NGINX_TLS, &mut kept.1)] {
            into.extend(wrk_with(&url(port, "/small"), 64, SECONDS, true, None, &[]));
        }
        for (port, into) in [(NATIVE_TLS, &mut fresh.0), (NGINX_TLS, &mut fresh.1)] {
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
    let (kept_native, kept_nginx) = (medians(kept.0), medians(kept.1));
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
        "\n## HTTPS (native `TLS_CERT_FILE` vs nginx `ssl`, same certificate)\n\nTLS 1.3 (both offer 1.2 and 1.3; wrk and curl pick 1.3), the origin behind over plain HTTP. Medians of {RUNS} interleaved runs.\n\n| measure | native | nginx |\n|---|---|---|\n| `GET /small`, c=64, keep-alive | {} | {} |\n| `GET /small`, c=64, a new connection (handshake) per request | {} | {} |\n| 512 MiB download (MB/s, curl) | {} | {} |",
        fmt_load(kept_native),
        fmt_load(kept_nginx),
        fmt_load(fresh_native),
        fmt_load(fresh_nginx),
        mbs(down_native),
        mbs(down_nginx),
    );
    let ratio = |a: Option<Load>, b: Option<Load>| match (a, b) {
        (Some(a), Some(b)) if b.rps > 0.0 => format!("{:.2}×", a.rps / b.rps),
        _ => "—".to_owned(),
    };
    Ok(vec![
        (
            "HTTPS native/nginx req/s, c=64, keep-alive".to_owned(),
            ratio(kept_native, kept_nginx),
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
