//! The `ollama-proxy` binary as an operator runs it: config errors, help,
//! request logs, and a clean exit on SIGTERM after draining.

use ollama_proxy_tests::client::{call, empty, raw, read_until};
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
