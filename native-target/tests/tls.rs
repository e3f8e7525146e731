//! HTTPS on the public listener, through the real binary and real clients
//! (curl, trusting the test CA): HTTP/1.1 and HTTP/2, a live stream, and
//! TLS-level garbage that must not hurt the server.

use std::io::{Read, Write};
use std::process::Command;

use ollama_proxy_tests::MockOrigin;

mod common;
use common::{proxy_command, start_with, wait_for_line, TOKEN};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tls");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// A mock origin and the binary in front of it, serving HTTPS with the
/// fixture certificate.
async fn https_proxy() -> (MockOrigin, common::Running) {
    https_proxy_with(&fixture("localhost.pem"), &fixture("localhost.key"), &[]).await
}

/// A mock origin and the binary in front of it, serving HTTPS with `cert`
/// and `key`, and `extra` settings.
async fn https_proxy_with(
    cert: &str,
    key: &str,
    extra: &[(&str, String)],
) -> (MockOrigin, common::Running) {
    let origin = MockOrigin::start().await;
    let mut env = vec![("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)];
    env.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let proxy = start_with(&origin.url(), &env);
    (origin, proxy)
}

/// curl against the proxy at `addr` as `https://localhost`, trusting the
/// test CA: (HTTP version, status, body).
fn curl(addr: std::net::SocketAddr, path: &str, extra: &[&str]) -> (String, String, String) {
    curl_trusting(&fixture("ca.pem"), addr, path, extra).expect("curl succeeds")
}

/// The curl command for `path` on the proxy, trusting `ca`.
fn curl_command(ca: &str, addr: std::net::SocketAddr, path: &str, extra: &[&str]) -> Command {
    let url = format!("https://localhost:{}{path}", addr.port());
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", "--cacert", ca])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .args(["-H", &format!("cf-aig-authorization: Bearer {TOKEN}")])
        .args(extra)
        .arg(&url);
    command
}

/// Like [`curl`], trusting `ca`; `Err` with curl's message when it fails.
fn curl_trusting(
    ca: &str,
    addr: std::net::SocketAddr,
    path: &str,
    extra: &[&str],
) -> Result<(String, String, String), String> {
    let url = format!("https://localhost:{}{path}", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", ca])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .args(["-H", &format!("cf-aig-authorization: Bearer {TOKEN}")])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, status) = tail.split_once(' ').unwrap_or((tail, ""));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok((version.to_owned(), status.to_owned(), body.to_owned()))
}

#[test]
fn config_names_what_is_missing_or_unusable() {
    let run = |env: &[(&str, String)]| {
        let out = proxy_command()
            .env("AIG_AUTH_TOKEN", TOKEN)
            .env("METRICS_ADDR", "off")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[("TLS_CERT_FILE", fixture("localhost.pem"))]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TLS_KEY_FILE: is required"), "{stderr}");
    let (code, stderr) = run(&[("TLS_KEY_FILE", fixture("localhost.key"))]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TLS_CERT_FILE: is required"), "{stderr}");
    let (code, stderr) = run(&[
        ("TLS_CERT_FILE", fixture("nope.pem")),
        ("TLS_KEY_FILE", fixture("localhost.key")),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("TLS_CERT_FILE (") && stderr.contains("nope.pem"),
        "{stderr}"
    );
    let (code, stderr) = run(&[("TLS_CLIENT_CA_FILE", fixture("client-ca.pem"))]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE"),
        "{stderr}"
    );
    // A key that is not the certificate's, or a certificate as the key.
    let (code, stderr) = run(&[
        ("TLS_CERT_FILE", fixture("localhost.pem")),
        ("TLS_KEY_FILE", fixture("localhost.pem")),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TLS_KEY_FILE ("), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_http2_and_live_streams() {
    let (_origin, proxy) = https_proxy().await;
    let addr = proxy.addr;
    tokio::task::spawn_blocking(move || {
        let (version, status, body) = curl(addr, "/healthz", &["--http1.1"]);
        assert_eq!(
            (version.as_str(), status.as_str()),
            ("1.1", "200"),
            "{body}"
        );
        let (version, status, _) = curl(addr, "/api/tags", &["--http2"]);
        assert_eq!((version.as_str(), status.as_str()), ("2", "200"));
        // A live NDJSON stream, over each.
        for http in ["--http1.1", "--http2"] {
            let (_, status, body) = curl(
                addr,
                "/api/chat?chunks=5&delay_ms=20",
                &[
                    http,
                    "-N",
                    "--data",
                    r#"{"model":"llama3.2:1b","messages":[]}"#,
                ],
            );
            assert_eq!(status, "200");
            assert_eq!(body.lines().count(), 5, "{body}");
            assert!(body.lines().last().unwrap().contains(r#""done":true"#));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_never_hurts_the_server() {
    let (_origin, proxy) = https_proxy().await;
    let addr = proxy.addr;
    tokio::task::spawn_blocking(move || {
        // Plain HTTP to the TLS port: no HTTP answer, the connection ends.
        let mut plain = std::net::TcpStream::connect(addr).unwrap();
        plain
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
        // A ClientHello cut short, then nothing, then gone.
        let mut cut = std::net::TcpStream::connect(addr).unwrap();
        cut.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
            .unwrap();
        drop(cut);
        // Random bytes.
        let mut noise = std::net::TcpStream::connect(addr).unwrap();
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = noise.write_all(&bytes);
        drop(noise);
        // Still serving.
        let (_, status, _) = curl(addr, "/healthz", &[]);
        assert_eq!(status, "200");
    })
    .await
    .unwrap();
    assert!(proxy_alive(&proxy));
}

fn proxy_alive(proxy: &common::Running) -> bool {
    std::net::TcpStream::connect(proxy.addr).is_ok()
}

/// Replaces `to` with `from`'s content in one step (as certbot's symlink
/// switch or a `mv` does).
fn replace_file(from: &str, to: &std::path::Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotates_under_a_running_stream() {
    let dir = std::env::temp_dir().join(format!("ollama-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(fixture("localhost.pem"), &cert).unwrap();
    std::fs::copy(fixture("localhost.key"), &key).unwrap();
    let (origin, proxy) =
        https_proxy_with(&cert.to_string_lossy(), &key.to_string_lossy(), &[]).await;
    let addr = proxy.addr;
    // A 3 s stream, under the first certificate.
    let stream = curl_command(
        &fixture("ca.pem"),
        addr,
        "/api/chat?chunks=30&delay_ms=100",
        &["-N", "--data", r#"{"model":"llama3.2:1b","messages":[]}"#],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    origin
        .wait_for_heads(1, std::time::Duration::from_secs(10))
        .await;
    let (cert2, key2) = (cert.clone(), key.clone());
    let rotated = tokio::task::spawn_blocking(move || {
        // The new pair: the key first, then the certificate (a reload may
        // find them mismatched in between, and keep the old pair).
        replace_file(&fixture("rotated.key"), &key2);
        replace_file(&fixture("rotated.pem"), &cert2);
        wait_for_line(&proxy, "TLS certificate reloaded");
        // New connections get the new certificate, and only it.
        let (_, status, _) = curl_trusting(&fixture("rotated.pem"), addr, "/healthz", &[])
            .expect("the rotated certificate is served");
        assert_eq!(status, "200");
        assert!(curl_trusting(&fixture("ca.pem"), addr, "/healthz", &[]).is_err());
        // A broken certificate file keeps the one in force.
        std::fs::write(&cert2, b"not a certificate").unwrap();
        let line = wait_for_line(&proxy, "TLS certificate not reloaded");
        assert!(line.contains("TLS_CERT_FILE"), "{line}");
        curl_trusting(&fixture("rotated.pem"), addr, "/healthz", &[])
            .expect("the certificate in force stays");
        // SIGHUP reloads too (the files as they are: still broken).
        let hup = Command::new("kill")
            .args(["-HUP", &proxy.child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        let line = wait_for_line(&proxy, "TLS certificate not reloaded");
        assert!(line.contains("SIGHUP"), "{line}");
        proxy
    })
    .await
    .unwrap();
    // The stream that started before finished whole.
    let out = stream.wait_with_output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(body.lines().count(), 30, "{body}");
    assert!(body.lines().last().unwrap().contains(r#""done":true"#));
    drop(rotated);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_wants_a_client_certificate_from_its_ca() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (origin, proxy) = https_proxy_with(
        &fixture("localhost.pem"),
        &fixture("localhost.key"),
        &[
            ("TLS_CLIENT_CA_FILE", fixture("client-ca.pem")),
            ("METRICS_ADDR", admin.to_string()),
        ],
    )
    .await;
    let origin = std::sync::Arc::new(origin);
    let addr = proxy.addr;
    let seen = std::sync::Arc::clone(&origin);
    tokio::task::spawn_blocking(move || {
        let ca = fixture("ca.pem");
        // Signed by the client CA: served (the token is still checked).
        let (cert, key) = (fixture("client.pem"), fixture("client.key"));
        let (_, status, _) =
            curl_trusting(&ca, addr, "/api/tags", &["--cert", &cert, "--key", &key])
                .expect("a good client certificate is accepted");
        assert_eq!(status, "200");
        // None, or one from another issuer: no TLS session at all.
        assert!(curl_trusting(&ca, addr, "/api/tags", &[]).is_err());
        let (bad, bad_key) = (fixture("rotated.pem"), fixture("rotated.key"));
        assert!(
            curl_trusting(&ca, addr, "/api/tags", &["--cert", &bad, "--key", &bad_key]).is_err()
        );
        assert!(origin_saw_one(&seen));
        // A client that does not trust the proxy's certificate.
        let other = fixture("other-ca.pem");
        assert!(
            curl_trusting(&other, addr, "/api/tags", &["--cert", &cert, "--key", &key]).is_err()
        );
    })
    .await
    .unwrap();
    // Each handshake counted by its result (the last ones end in their
    // connections' tasks: a bound, not a delay).
    let want = [
        r#"ollama_proxy_tls_handshakes_total{result="ok"} 1"#,
        r#"ollama_proxy_tls_handshakes_total{result="client_cert_refused"} 2"#,
        r#"ollama_proxy_tls_handshakes_total{result="bad_certificate"} 1"#,
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = ollama_proxy_tests::client::call(
            admin,
            "GET",
            "/metrics",
            &[],
            ollama_proxy_tests::client::empty(),
        )
        .await;
        let text = String::from_utf8_lossy(&got.body).into_owned();
        if want.iter().all(|line| text.contains(line)) {
            break;
        }
        let counted: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("tls_handshakes"))
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "handshakes not counted as {want:?}: {counted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(proxy);
}

fn origin_saw_one(origin: &MockOrigin) -> bool {
    origin.requests().len() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_writes_a_pair_clients_can_trust() {
    let dir = std::env::temp_dir().join(format!("ollama-proxy-self-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = || {
        proxy_command()
            .args(["self-signed", "--hosts", "localhost,127.0.0.1", "--out"])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    for hint in ["TLS_CERT_FILE=", "SSL_CERT_FILE=", "NODE_EXTRA_CA_CERTS="] {
        assert!(stdout.contains(hint), "{stdout}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is readable by others");
    }
    // A second run does not overwrite them.
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // Served, and trusted by a client given the certificate, by name and IP.
    let (_origin, proxy) =
        https_proxy_with(&cert.to_string_lossy(), &key.to_string_lossy(), &[]).await;
    let addr = proxy.addr;
    let ca = cert.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        let (_, status, _) = curl_trusting(&ca, addr, "/healthz", &[]).expect("trusted by name");
        assert_eq!(status, "200");
        let by_ip = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert", &ca])
            .arg(format!("https://127.0.0.1:{}/healthz", addr.port()))
            .output()
            .unwrap();
        assert!(
            by_ip.status.success(),
            "{}",
            String::from_utf8_lossy(&by_ip.stderr)
        );
    })
    .await
    .unwrap();
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The official Python clients (OpenAI's, Ollama's and Anthropic's, from
/// tests/python/.venv, which `cargo xtask test-all` makes) over HTTPS,
/// trusting the test CA through `SSL_CERT_FILE`: chats, streams, listings,
/// an Anthropic stream Ollama breaks off raising, and an untrusted
/// certificate refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_over_https() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python");
    let python = format!("{dir}/.venv/bin/python");
    if !std::path::Path::new(&python).exists() {
        let required = std::env::var_os("OLLAMA_PROXY_REQUIRE_PYTHON").is_some_and(|v| v == "1");
        assert!(!required, "{python} is missing: run `cargo xtask test-all`");
        eprintln!("skipped: {python} is missing (made by `cargo xtask test-all`)");
        return;
    }
    let (_origin, proxy) = https_proxy().await;
    let url = format!("https://127.0.0.1:{}", proxy.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(format!("{dir}/sdks.py"))
            .env("PROXY_URL", url)
            .env("TOKEN", TOKEN)
            .env("SSL_CERT_FILE", fixture("ca.pem"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        11,
        "{stdout}"
    );
    drop(proxy);
}
