//! The `ollama-proxy` binary as an operator runs it: config errors, help,
//! request logs, and a clean exit on SIGTERM after draining.

use ollama_proxy_tests::client::{call, empty, full, raw, read_until};
use ollama_proxy_tests::MockOrigin;

mod common;
use common::{proxy_command, sigterm, start, start_with, wait_for_line, TOKEN};

#[test]
fn config_error_is_one_line_naming_the_variable() {
    let out = proxy_command()
        .env("OLLAMA_ORIGIN", "not a url")
        .env("AIG_AUTH_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ollama-proxy: config error: OLLAMA_ORIGIN:"),
        "{stderr}"
    );

    let out = proxy_command().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("AIG_AUTH_TOKEN: is required"), "{stderr}");

    let out = proxy_command()
        .env("AIG_AUTH_TOKEN", TOKEN)
        .env("AIG_AUTH_TOKENS", format!("a:{TOKEN}x,b:{TOKEN}x"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("AIG_AUTH_TOKENS") && !stderr.contains(TOKEN),
        "{stderr}"
    );
}

#[test]
fn gen_token_prints_32_random_bytes_as_hex() {
    let token = || {
        let out = proxy_command().arg("gen-token").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (a, b) = (token(), token());
    assert_eq!(a.len(), 64, "{a}");
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b, "two tokens were the same");
}

#[test]
fn check_config_prints_the_effective_config_redacted() {
    let out = proxy_command()
        .arg("check-config")
        .env("AIG_AUTH_TOKEN", TOKEN)
        .env("AIG_AUTH_TOKENS", "ci:ci-token-abcdef123")
        .env("CF_ACCESS_CLIENT_ID", "access-id.access")
        .env("CF_ACCESS_CLIENT_SECRET", "access-secret-998877")
        .env("IDLE_TIMEOUT", "90s")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [TOKEN, "ci-token-abcdef123", "access-secret-998877"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    for line in [
        "OLLAMA_ORIGIN=http://127.0.0.1:11434",
        "AIG_AUTH_TOKEN=<2 key(s): default, ci>",
        "CF_ACCESS_CLIENT_ID=access-id.access",
        "IDLE_TIMEOUT=90000ms",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let out = proxy_command()
        .arg("check-config")
        .env("AIG_AUTH_TOKEN", TOKEN)
        .env("MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("MAX_BODY_BYTES"), "{stderr}");

    let out = proxy_command().arg("--version").output().unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        version.trim(),
        format!("ollama-proxy {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_variable_without_secret_values() {
    let out = proxy_command()
        .arg("--help")
        .env("AIG_AUTH_TOKEN", TOKEN)
        .env("OLLAMA_ORIGIN", "https://user:pa55word@ollama.internal")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in ollama_proxy_core::ConfigVar::ALL {
        assert!(
            help.contains(var.name()),
            "{} missing from --help",
            var.name()
        );
    }
    for var in [
        "LISTEN_ADDR",
        "CONNECT_TIMEOUT",
        "RESPONSE_TIMEOUT",
        "IDLE_TIMEOUT",
        "HEADER_TIMEOUT",
        "SHUTDOWN_GRACE",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
    assert!(!help.contains(TOKEN), "--help printed the token");
    assert!(
        !help.contains("pa55word"),
        "--help printed the origin's password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_each_request_and_drains_on_sigterm() {
    let origin = MockOrigin::start().await;
    let mut proxy = start(&origin.url());
    let auth = format!("Bearer {TOKEN}");

    let ok = call(
        proxy.addr,
        "GET",
        "/api/tags?secret=query",
        &[("cf-aig-authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let ok_id = ok.header("x-request-id").expect("a request id").to_owned();
    let denied = call(
        proxy.addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", "Bearer wrong-token-123")],
        empty(),
    )
    .await;
    assert_eq!(denied.status, 401);

    // A stream in flight when SIGTERM arrives must finish.
    let head = format!(
        "POST /api/chat?chunks=4&delay_ms=200 HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut stream = raw(proxy.addr, head.as_bytes()).await;
    let first = read_until(&mut stream, b"tok0").await;
    assert!(first.starts_with(b"HTTP/1.1 200"));
    sigterm(&proxy.child);
    let rest = read_until(&mut stream, b"\r\n0\r\n\r\n").await;
    assert!(
        String::from_utf8_lossy(&rest).contains("tok3"),
        "stream cut by shutdown"
    );
    drop(stream);

    let status = tokio::task::block_in_place(|| proxy.child.wait()).unwrap();
    assert_eq!(status.code(), Some(0), "exit after drain");

    let lines: Vec<String> = proxy.stderr.iter().collect();
    let log = lines.join("\n");
    assert!(!log.contains(TOKEN), "token in the log:\n{log}");
    assert!(
        !log.contains("wrong-token-123"),
        "presented token in the log:\n{log}"
    );
    assert!(
        !log.contains("secret=query"),
        "query string in the log:\n{log}"
    );
    let requests: Vec<&String> = lines.iter().filter(|l| l.contains(" request ")).collect();
    assert_eq!(requests.len(), 3, "one line per request:\n{log}");
    assert!(
        requests[0].contains("method=GET") && requests[0].contains("path=/api/tags"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0].contains("status=200") && requests[0].contains("key=default"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("duration_ms="), "{}", requests[0]);
    assert!(
        requests[0].contains(&format!("request_id={ok_id}")),
        "{}",
        requests[0]
    );
    assert!(
        requests[1].contains("status=401") && requests[1].contains("error=invalid_api_key"),
        "{}",
        requests[1]
    );
    assert!(
        requests[2].contains("path=/api/chat") && requests[2].contains("outcome=complete"),
        "{}",
        requests[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_and_cuts_streams_past_the_grace_period() {
    let origin = MockOrigin::start().await;
    let mut proxy = start_with(&origin.url(), &[("SHUTDOWN_GRACE", "500ms")]);
    // Far longer than the grace period: 100 chunks 100 ms apart.
    let head = format!(
        "POST /api/chat?chunks=100&delay_ms=100 HTTP/1.1\r\nHost: p\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut stream = raw(proxy.addr, head.as_bytes()).await;
    let first = read_until(&mut stream, b"tok0").await;
    assert!(first.starts_with(b"HTTP/1.1 200"));
    sigterm(&proxy.child);
    let addr = proxy.addr;
    let draining = tokio::task::block_in_place(|| wait_for_line(&proxy, "shutting down"));
    assert!(draining.contains("grace_s=0.5"), "{draining}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a new connection was accepted while draining"
    );
    let rest = read_until(&mut stream, b"\r\n0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.contains("tok99"), "the stream finished: {text}");
    assert!(
        !text.ends_with("\r\n0\r\n\r\n"),
        "cut stream ended cleanly: {text}"
    );
    let status = tokio::task::block_in_place(|| proxy.child.wait()).unwrap();
    assert_eq!(status.code(), Some(0));
    let stopped = tokio::task::block_in_place(|| wait_for_line(&proxy, "stopped"));
    assert!(stopped.contains("1 connection(s)"), "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_is_verified_against_the_system_trust_store() {
    let origin = MockOrigin::start_tls().await;
    let auth = format!("Bearer {TOKEN}");
    let ca = std::env::temp_dir().join(format!("ollama-proxy-test-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, ollama_proxy_tests::origin::TEST_CA_PEM).unwrap();

    // Trusting the test CA (as an operator would add an internal CA), the
    // proxy reaches the https origin and streams from it.
    let trusted = start_with(&origin.url(), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let got = call(
        trusted.addr,
        "POST",
        "/api/chat?chunks=3",
        &[("cf-aig-authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", String::from_utf8_lossy(&got.body));
    assert_eq!(String::from_utf8_lossy(&got.body).lines().count(), 3);
    assert_eq!(
        origin.requests()[0].headers["host"],
        format!("localhost:{}", origin.addr().port())
    );

    // Without it, the certificate is refused: 502, and nothing reaches the origin.
    let other_ca = ca.with_extension("other.pem");
    std::fs::write(
        &other_ca,
        include_bytes!("../../tests/fixtures/tls/other-ca.pem"),
    )
    .unwrap();
    let untrusted = start_with(
        &origin.url(),
        &[("SSL_CERT_FILE", other_ca.to_str().unwrap())],
    );
    let got = call(
        untrusted.addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(
        origin.requests().len(),
        1,
        "a request crossed an unverified TLS connection"
    );
    // The log says why: a warning with the cause, and the request line.
    let mut untrusted = untrusted;
    sigterm(&untrusted.child);
    let _ = tokio::task::block_in_place(|| untrusted.child.wait());
    let log: Vec<String> = untrusted.stderr.iter().collect();
    let log = log.join("\n");
    assert!(
        log.contains("origin request failed") && log.contains("certificate"),
        "{log}"
    );
    assert!(
        log.contains("status=502") && log.contains("error=origin_unreachable"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "token in the log: {log}");
    let _ = std::fs::remove_file(ca);
    let _ = std::fs::remove_file(other_ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let origin = MockOrigin::start().await;
    let mut proxy = start_with(&origin.url(), &[("LOG_FORMAT", "json")]);
    let auth = format!("Bearer {TOKEN}");
    let got = call(
        proxy.addr,
        "GET",
        "/api/tags",
        &[
            ("cf-aig-authorization", &auth),
            ("x-request-id", "trace-me-7"),
        ],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200);
    sigterm(&proxy.child);
    let status = tokio::task::block_in_place(|| proxy.child.wait()).unwrap();
    assert_eq!(status.code(), Some(0));
    let lines: Vec<String> = proxy.stderr.iter().collect();
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = objects
        .iter()
        .find(|o| o["message"] == "request")
        .expect("a request line");
    assert_eq!(request["request_id"], "trace-me-7");
    assert_eq!(request["status"], 200);
    assert_eq!(request["path"], "/api/tags");
    assert_eq!(request["key"], "default");
    assert!(!lines.join("\n").contains(TOKEN));
}

/// A free loopback port (bound then released; the same small race as the
/// public port above).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The value of the sample `name{labels}` in an exposition, or 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `histogram_quantile` as Prometheus computes it, from cumulative buckets.
fn quantile(text: &str, name: &str, route: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{"))?;
            let (labels, value) = rest.split_once("} ")?;
            if !labels.contains(&format!("route=\"{route}\"")) {
                return None;
            }
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = buckets.last().expect("buckets").1;
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0;
            }
            return lower.0 + (le - lower.0) * (rank - lower.1) / (count - lower.1);
        }
        lower = (le, count);
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_and_readyz_checks_the_origin() {
    let origin = MockOrigin::start().await;
    let admin = free_addr();
    let proxy = start_with(&origin.url(), &[("METRICS_ADDR", admin.as_str())]);
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    let auth = format!("Bearer {TOKEN}");
    let ok = [("cf-aig-authorization", auth.as_str())];
    let wrong = [("cf-aig-authorization", "Bearer nope-nope-nope")];
    for _ in 0..3 {
        assert_eq!(
            call(proxy.addr, "GET", "/api/tags", &ok, empty())
                .await
                .status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            call(proxy.addr, "GET", "/api/tags", &wrong, empty())
                .await
                .status,
            401
        );
    }
    assert_eq!(
        call(proxy.addr, "GET", "/v1/models", &[], empty())
            .await
            .status,
        401
    );
    assert_eq!(
        call(proxy.addr, "POST", "/api/pull", &ok, full("{}"))
            .await
            .status,
        403
    );
    // One stream of 3 chunks 100 ms apart: at least 200 ms long.
    let stream = call(
        proxy.addr,
        "POST",
        "/api/chat?chunks=3&delay_ms=100",
        &ok,
        full("{}"),
    )
    .await;
    assert_eq!(stream.status, 200);

    let got = call(admin, "GET", "/metrics", &[], empty()).await;
    assert_eq!(got.status, 200);
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(got.body.to_vec()).unwrap();
    let requests = "ollama_proxy_requests_total";
    assert_eq!(
        sample(
            &text,
            requests,
            r#"route="api",status_class="2xx",key="default""#
        ),
        4.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, requests, r#"route="api",status_class="4xx",key="-""#),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            requests,
            r#"route="api",status_class="4xx",key="default""#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, requests, r#"route="v1",status_class="4xx",key="-""#),
        1.0,
        "{text}"
    );
    let failures = "ollama_proxy_auth_failures_total";
    assert_eq!(
        sample(&text, failures, r#"reason="invalid""#),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, failures, r#"reason="missing""#),
        1.0,
        "{text}"
    );
    let duration = "ollama_proxy_request_duration_seconds";
    assert_eq!(
        sample(&text, &format!("{duration}_count"), r#"route="api""#),
        7.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "ollama_proxy_open_streams", ""),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "ollama_proxy_request_body_bytes_total", ""),
        2.0,
        "{text}"
    );
    assert!(sample(&text, "ollama_proxy_response_body_bytes_total", "") > 0.0);
    // Six quick answers and one 200+ ms stream: the median is in the lowest
    // buckets, the 95th percentile in the stream's.
    let p50 = quantile(&text, duration, "api", 0.5);
    let p95 = quantile(&text, duration, "api", 0.95);
    assert!(p50 <= 0.1, "p50 {p50}\n{text}");
    assert!(p95 > 0.1 && p95 <= 0.5, "p95 {p95}\n{text}");
    let ttfb = "ollama_proxy_time_to_first_byte_seconds";
    assert_eq!(
        sample(&text, &format!("{ttfb}_count"), r#"route="api""#),
        7.0,
        "{text}"
    );

    let ready = call(admin, "GET", "/readyz", &[], empty()).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(origin.requests().last().unwrap().target, "/api/version");
    // A proxy whose origin is down is up (healthz) but not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin = free_addr();
    let _down = start_with(
        &format!("http://{closed}"),
        &[("METRICS_ADDR", admin.as_str())],
    );
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    let unready = call(admin, "GET", "/readyz", &[], empty()).await;
    assert_eq!(unready.status, 503);
    assert_eq!(unready.json()["status"], "unready");
    assert!(
        !String::from_utf8_lossy(&unready.body).contains(TOKEN),
        "{unready:?}"
    );
    assert_eq!(
        call(admin, "GET", "/healthz", &[], empty()).await.status,
        200
    );
}

/// The dashboard and the scrape example in `ops/` must use only metrics the
/// proxy exports (a rename would leave panels empty without this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_name_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("ops/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);

    let origin = MockOrigin::start().await;
    let admin = free_addr();
    let proxy = start_with(
        &origin.url(),
        &[
            ("METRICS_ADDR", admin.as_str()),
            ("RESPONSE_TIMEOUT", "200ms"),
        ],
    );
    let auth = format!("Bearer {TOKEN}");
    let ok = [("cf-aig-authorization", auth.as_str())];
    // A success, an auth failure, an origin timeout and an LLM answer with
    // a model load and a cached prompt: every family has a sample (an empty
    // family is not listed at all).
    call(proxy.addr, "GET", "/api/tags", &ok, empty()).await;
    call(
        proxy.addr,
        "POST",
        "/api/chat?cached=1&load_ms=150",
        &ok,
        full(r#"{"model":"llama3.2:1b"}"#),
    )
    .await;
    call(proxy.addr, "GET", "/api/tags", &[], empty()).await;
    assert_eq!(
        call(proxy.addr, "GET", "/hang", &ok, empty()).await.status,
        504
    );
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    let text = String::from_utf8(
        call(admin, "GET", "/metrics", &[], empty())
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let declared: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();

    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("ollama_proxy_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_total", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    declared.contains(&base),
                    "panel {:?} uses {name}, which the proxy does not export",
                    panel["title"]
                );
                rest = &rest[at + name.len()..];
            }
        }
    }
}

/// Polls `/readyz` until `done` holds for its answer (a bound, not a delay:
/// the probes run once a second).
async fn readyz_until(
    admin: std::net::SocketAddr,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let got = call(admin, "GET", "/readyz", &[], empty()).await;
        let json = got.json();
        if done(got.status.as_u16(), &json) {
            return json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never got there: {} {json}",
            got.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_boxes_show_in_readyz_and_metrics() {
    let alive = MockOrigin::start().await;
    alive.set_models(&["qwen3:8b"], &["qwen3:8b"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("http://{closed}");
    let admin = free_addr();
    let proxy = start_with(
        &format!("{dead},{}", alive.url()),
        &[("METRICS_ADDR", admin.as_str())],
    );
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    // The probes find the dead box down and learn what the other has.
    let ready = readyz_until(admin, |status, json| {
        status == 200 && json["backends"][0]["up"] == false
    })
    .await;
    assert_eq!(ready["backends_up"], 1, "{ready}");
    assert_eq!(ready["backends"][0]["origin"], dead.as_str());
    assert_eq!(ready["backends"][1]["up"], true, "{ready}");
    let auth = format!("Bearer {TOKEN}");
    let chat = r#"{"model":"qwen3:8b","messages":[]}"#;
    let got = call(
        proxy.addr,
        "POST",
        "/api/chat",
        &[("cf-aig-authorization", auth.as_str())],
        full(chat),
    )
    .await;
    assert_eq!(got.status, 200);
    let metrics = call(admin, "GET", "/metrics", &[], empty()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        format!("ollama_proxy_backend_up{{backend=\"{dead}\"}} 0"),
        format!("ollama_proxy_backend_up{{backend=\"{}\"}} 1", alive.url()),
        format!(
            "ollama_proxy_backend_requests_total{{backend=\"{}\",why=\"loaded\"}} 1",
            alive.url()
        ),
        format!(
            "ollama_proxy_backend_in_flight{{backend=\"{}\"}} 0",
            alive.url()
        ),
    ] {
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "ollama_proxy_backend_errors_total{{backend=\"{dead}\",why=\"probe\"}}"
        )),
        "{text}"
    );
    // Both down: not ready.
    alive.kill();
    let unready = readyz_until(admin, |status, _| status == 503).await;
    assert_eq!(unready["backends_up"], 0, "{unready}");
}

/// A second proxy on a live one's address is refused, naming it, with exit
/// code 2 — not let in to share the port through `SO_REUSEPORT`.
#[test]
fn a_second_proxy_on_a_live_address_is_refused() {
    let first = start("http://127.0.0.1:9");
    let mut second = proxy_command()
        .env("OLLAMA_ORIGIN", "http://127.0.0.1:9")
        .env("AIG_AUTH_TOKEN", TOKEN)
        .env("LISTEN_ADDR", first.addr.to_string())
        .env("METRICS_ADDR", "off")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit on its own (a bound, not a delay).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second proxy started on {} beside the first", first.addr);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {} (LISTEN_ADDR)", first.addr))
            && stderr
                .to_ascii_lowercase()
                .contains("address already in use"),
        "{stderr}"
    );
    // The first one is untouched.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(first.addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
