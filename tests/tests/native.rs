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
