//! HTTPS on the public listener, through the real binary and real clients
//! (curl, trusting the test CA): HTTP/1.1 and HTTP/2, a live stream, and
//! TLS-level garbage that must not hurt the server.

use std::io::{Read, Write};
use std::process::Command;

use ollama_proxy_tests::MockOrigin;

mod common;
use common::{proxy_command, start_with, TOKEN};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tls");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn tls_env() -> [(&'static str, String); 2] {
    [
        ("TLS_CERT_FILE", fixture("localhost.pem")),
        ("TLS_KEY_FILE", fixture("localhost.key")),
    ]
}

/// curl against the proxy at `addr` as `https://localhost`, trusting the
/// test CA: (HTTP version, status, body).
fn curl(addr: std::net::SocketAddr, path: &str, extra: &[&str]) -> (String, String, String) {
    let url = format!("https://localhost:{}{path}", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", &fixture("ca.pem")])
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
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (version.to_owned(), status.to_owned(), body.to_owned())
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
    let origin = MockOrigin::start().await;
    let env = tls_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = start_with(&origin.url(), &env);
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
    let origin = MockOrigin::start().await;
    let env = tls_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = start_with(&origin.url(), &env);
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
