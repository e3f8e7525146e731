//! The shared scenarios, and native-only behaviour, against the native proxy
//! running in-process on loopback.

use std::time::Duration;

use clap::Parser;
use ollama_proxy_native::cli::Args;
use ollama_proxy_tests::client::{call, empty, full, raw, read_until};
use ollama_proxy_tests::target::AUTH;
use ollama_proxy_tests::{Harness, TOKEN};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[path = "common/native.rs"]
mod native_target;
use native_target::Native;

ollama_proxy_tests::scenario_tests!(Native);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_never_forwarded() {
    ollama_proxy_tests::hostile::check_all(&Native).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_origin_gets_504_and_is_released() {
    let h = Harness::start(&Native, &[("RESPONSE_TIMEOUT", "300ms")]).await;
    let got = call(h.proxy, "GET", "/hang", &[AUTH], empty()).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["error"]["code"], "origin_timeout");
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the origin to see the request dropped",
            |_, gone| gone == 1,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_origin_gets_504_after_the_connect_timeout() {
    let (hole, _guard) = ollama_proxy_tests::broken::black_hole().await;
    let origin = format!("http://{hole}");
    let h = Harness::start(
        &Native,
        &[("OLLAMA_ORIGIN", &origin), ("CONNECT_TIMEOUT", "300ms")],
    )
    .await;
    let got = call(h.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
    assert_eq!(got.status, 504, "{:?}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "origin_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_client_is_disconnected() {
    let h = Harness::start(&Native, &[("HEADER_TIMEOUT", "500ms")]).await;
    let stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Slowloris: a header line every 100 ms, never the blank line.
    let dribble = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = write
            .write_all(b"GET /api/tags HTTP/1.1\r\nHost: proxy\r\n")
            .await;
        for i in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncReadExt;
        read.read_to_end(&mut buf).await
    })
    .await;
    assert!(closed.is_ok(), "the slow client was kept for 15 s");
    assert!(h.origin.requests().is_empty());
    dribble.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_body_gets_408() {
    let h = Harness::start(&Native, &[("IDLE_TIMEOUT", "300ms")]).await;
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"model\""
    );
    let mut stream = raw(h.proxy, head.as_bytes()).await;
    let answer = read_until(&mut stream, b"}}").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    h.origin.expect_one_aborted_upload().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_origin_stream_is_cut_after_idle_timeout() {
    let h = Harness::start(&Native, &[("IDLE_TIMEOUT", "200ms")]).await;
    let head = format!(
        "POST /api/chat?chunks=3&delay_ms=2000 HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut stream = raw(h.proxy, head.as_bytes()).await;
    // The head arrives; then the origin stalls past the idle timeout and the
    // proxy closes the connection without a final chunk.
    let answer = read_until(&mut stream, b"never-sent").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains("tok0"),
        "a chunk arrived although the origin had not sent one: {text}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "stream ended cleanly instead of being cut: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served() {
    let h = Harness::start(&Native, &[]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<ollama_proxy_tests::client::ReqBody>();
    let req = ollama_proxy_tests::client::request(
        h.proxy,
        "POST",
        "/api/chat?chunks=2",
        &[AUTH],
        full("{}"),
    );
    let response = client.request(req).await.expect("h2 request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let got = ollama_proxy_tests::client::collect(response).await;
    assert_eq!(got.status, 200);
    assert_eq!(String::from_utf8_lossy(&got.body).lines().count(), 2);
    assert_eq!(
        h.origin.requests()[0].headers["host"],
        h.origin.addr().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_streams() {
    let origin = ollama_proxy_tests::MockOrigin::start().await;
    let args = Args::try_parse_from([
        "ollama-proxy".to_owned(),
        format!("--ollama-origin={}", origin.url()),
        format!("--aig-auth-token={TOKEN}"),
        "--shutdown-grace=10s".to_owned(),
    ])
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ollama_proxy_native::serve(
        listener,
        args.settings().unwrap(),
        async move {
            let _ = stopped.await;
        },
    ));

    let head = format!(
        "POST /api/chat?chunks=4&delay_ms=200 HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut stream = raw(addr, head.as_bytes()).await;
    let first = read_until(&mut stream, b"tok0").await;
    assert!(first.starts_with(b"HTTP/1.1 200"));
    stop.send(()).unwrap();

    let rest = read_until(&mut stream, b"\r\n0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("tok3") && text.ends_with("\r\n0\r\n\r\n"),
        "stream was cut by shutdown: {text}"
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped after the drain")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// A single HTTP/1.1 connection to the proxy, for requests made in turn.
async fn one_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<ollama_proxy_tests::client::ReqBody> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    client
}

/// Origin connections are kept alive and reused: one client connection
/// making requests one after another (answers with a length, chunked
/// streams, bodies sent, a HEAD, an error status) reaches the origin over
/// a single connection; a client that leaves mid-stream costs that one
/// connection (closed, so the origin stops), and the next request opens a
/// new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused() {
    let h = Harness::start(&Native, &[]).await;
    // One client connection (so one server thread), requests in turn.
    let mut client = one_connection(h.proxy).await;
    let chat = r#"{"model":"llama3.2","messages":[],"stream":true}"#;
    let asks: [(&str, &str, &str); 6] = [
        ("GET", "/api/tags", ""),
        ("POST", "/api/chat", chat),
        ("HEAD", "/api/tags", ""),
        ("POST", "/api/embed", r#"{"model":"llama3.2","input":"hi"}"#),
        ("GET", "/status/500", ""),
        ("POST", "/v1/chat/completions", chat),
    ];
    for round in 0..3 {
        for (method, path, body) in asks {
            let request = ollama_proxy_tests::client::request(
                h.proxy,
                method,
                path,
                &[AUTH, ("content-type", "application/json")],
                full(body.to_owned()),
            );
            client
                .ready()
                .await
                .expect("the connection to the proxy is open");
            let response = client.send_request(request).await.expect("an answer");
            let got = ollama_proxy_tests::client::collect(response).await;
            assert!(
                got.status == 200 || path.starts_with("/status/"),
                "round {round}: {method} {path} got {}",
                got.status
            );
        }
    }
    assert_eq!(h.origin.requests().len(), 18);
    assert_eq!(
        h.origin.connections(),
        1,
        "every request after the first reuses the origin connection"
    );

    // A stream abandoned mid-way: its connection is closed, not reused.
    let request = ollama_proxy_tests::client::request(h.proxy, "GET", "/hang", &[AUTH], empty());
    client.ready().await.unwrap();
    let waiting = tokio::spawn(client.send_request(request));
    h.origin.wait_for_heads(19, Duration::from_secs(10)).await;
    waiting.abort();
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the origin to see the abandoned request go",
            |_, gone| gone == 1,
        )
        .await;
    let got = call(h.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
    assert_eq!(got.status, 200);
    assert!(
        h.origin.connections() >= 2,
        "the abandoned connection was handed to the next request"
    );
}

/// An origin that closes each connection after answering (an idle timeout
/// shorter than the proxy's): the next request finds its kept connection
/// closed before anything was sent, and goes out whole on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_the_origin_closed_is_replaced_unseen() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    // Each connection is closed when the test says so (once the proxy has
    // put it back in its pool), and the test hears when it is.
    let may_close = std::sync::Arc::new(tokio::sync::Notify::new());
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let permit = std::sync::Arc::clone(&may_close);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let permit = std::sync::Arc::clone(&permit);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as it announced.
                let (head_len, body_len) = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..at]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
                        break (at + 4, len);
                    }
                };
                while got.len() < head_len + body_len {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let answer = format!("{{\"body_bytes\":{body_len}}}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                permit.notified().await;
                drop(stream);
                let _ = closed_tx.send(());
            });
        }
    });
    let h = Harness::start(&Native, &[("OLLAMA_ORIGIN", &origin)]).await;
    let mut client = one_connection(h.proxy).await;
    let body = r#"{"model":"llama3.2","input":"hello"}"#;
    for i in 0..5 {
        let request = ollama_proxy_tests::client::request(
            h.proxy,
            "POST",
            "/api/embed",
            &[AUTH, ("content-type", "application/json")],
            full(body.to_owned()),
        );
        client.ready().await.unwrap();
        let response = client.send_request(request).await.expect("an answer");
        let got = ollama_proxy_tests::client::collect(response).await;
        assert_eq!(got.status, 200, "request {i}: {:?}", got.body);
        assert_eq!(
            got.json()["body_bytes"],
            body.len(),
            "request {i}: the body arrived whole"
        );
        may_close.notify_one();
        closed
            .recv()
            .await
            .expect("the origin closed its connection");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
}
