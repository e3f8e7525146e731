//! Clients that stop taking their answer, over HTTP/1.1 (the socket fills)
//! and HTTP/2 (the stream's flow-control window stays shut while the
//! socket is read): after `IDLE_TIMEOUT` without taking anything the proxy
//! lets go of the answer, which cancels the origin's request and gives back
//! any slot it held; a client that reads slowly but steadily is never cut.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{read_head, start_with, wait_for_line, TOKEN};

/// The origin's request dropped, and the proxy's log line for it saying the
/// client went (status 200: the answer had begun).
async fn origin_request_dropped_as_client_gone(
    origin: &ollama_proxy_tests::MockOrigin,
    proxy: &common::Running,
) {
    origin
        .wait_until(
            Duration::from_secs(20),
            "the proxy to drop the origin's request",
            |_, gone| gone == 1,
        )
        .await;
    let line = tokio::task::block_in_place(|| wait_for_line(proxy, "path=/big"));
    assert!(
        line.contains("status=200") && line.contains("outcome=client_gone"),
        "{line}"
    );
}

/// A client that reads the answer's head and then takes nothing more (its
/// socket full): after `IDLE_TIMEOUT` without a byte taken the proxy cuts
/// the connection, which cancels the origin's request (and gives back any
/// slot it held) instead of holding both for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_idle_timeout() {
    let origin = ollama_proxy_tests::MockOrigin::start().await;
    let proxy = start_with(&origin.url(), &[("IDLE_TIMEOUT", "300ms")]);
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    // 64 MiB: far more than the sockets and the proxy hold between them.
    let head = format!(
        "GET /big?bytes=67108864 HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut got = read_head(&mut client).await;
    let mut buf = [0u8; 4096];
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // The client stops reading; the origin's request must be dropped.
    origin_request_dropped_as_client_gone(&origin, &proxy).await;
    // What the sockets held arrives, then the connection ends short of the
    // 64 MiB.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open");
    assert!(got.len() < 64 << 20, "all of it arrived");
}

/// A client that reads slowly but steadily (≈ 1 MiB/s, a slow link) is
/// never cut, though the kernel reports its socket writable again only once
/// a large part of its send buffer has drained — longer than `IDLE_TIMEOUT`
/// here: what counts is bytes the client takes, not writes that go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_is_not_cut() {
    let origin = ollama_proxy_tests::MockOrigin::start().await;
    let proxy = start_with(&origin.url(), &[("IDLE_TIMEOUT", "1s")]);
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let size: usize = 6 << 20;
    let head = format!(
        "GET /big?bytes={size} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\ncf-aig-authorization: Bearer {TOKEN}\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // 32 KiB every 30 ms: the pace of a slow link, not a wait for
        // anything.
        tokio::time::sleep(Duration::from_millis(30)).await;
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let at = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    // Chunked: all of it, then the final chunk.
    assert!(got.len() - at > size, "cut short: {} bytes", got.len() - at);
    assert!(got.ends_with(b"\r\n0\r\n\r\n"), "cut short");
}

/// An HTTP/2 connection to the proxy (prior knowledge, as `curl
/// --http2-prior-knowledge` does) whose streams get `window` bytes of room
/// each, and the connection far more.
async fn h2_client(addr: std::net::SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(256 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.ready().await.unwrap()
}

/// Asks for `bytes` of the origin's download; returns the answer's body.
async fn h2_download(client: &mut h2::client::SendRequest<Bytes>, bytes: usize) -> h2::RecvStream {
    let request = http::Request::get(format!("http://proxy/big?bytes={bytes}"))
        .header("cf-aig-authorization", format!("Bearer {TOKEN}"))
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(request, true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200);
    answer.into_body()
}

/// An HTTP/2 client that takes what arrives but never gives the stream room
/// again: its socket is read (the kernel sees nothing wrong), the answer
/// waits in the proxy for a window that never opens. After `IDLE_TIMEOUT`
/// the proxy resets that stream — the origin's request is dropped, the log
/// says `client_gone` — and the connection's other streams go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_holding_its_answer_back_gets_the_stream_reset() {
    let origin = ollama_proxy_tests::MockOrigin::start().await;
    let proxy = start_with(&origin.url(), &[("IDLE_TIMEOUT", "300ms")]);
    let mut client = h2_client(proxy.addr, 64 * 1024).await;
    let mut held = h2_download(&mut client, 64 << 20).await;
    origin_request_dropped_as_client_gone(&origin, &proxy).await;
    // What the window let through, then the reset.
    let mut got = 0;
    let reset = loop {
        match held.data().await {
            Some(Ok(data)) => got += data.len(),
            Some(Err(error)) => break error,
            None => panic!("the stream ended as if whole after {got} bytes"),
        }
    };
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL), "{reset}");
    assert!(got <= 64 * 1024, "{got} bytes past the window");
    // The same connection serves the next answer whole.
    let size = 1 << 20;
    let mut body = h2_download(&mut client, size).await;
    let mut whole = 0;
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        whole += data.len();
        body.flow_control().release_capacity(data.len()).unwrap();
    }
    assert_eq!(whole, size);
}

/// An HTTP/2 client that gives room back slowly but steadily (64 KiB every
/// 100 ms, longer in all than `IDLE_TIMEOUT` many times over) gets its whole
/// answer: what counts is the answer being taken, not how long it takes —
/// whether the origin sends small pieces (a stream) or one large answer of
/// known length, which the proxy reads up to 256 KiB at a time (longer than
/// the limit for this reader to take in one piece).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_reading_slowly_is_not_cut() {
    let origin = ollama_proxy_tests::MockOrigin::start().await;
    let proxy = start_with(&origin.url(), &[("IDLE_TIMEOUT", "300ms")]);
    let mut client = h2_client(proxy.addr, 64 * 1024).await;
    let size = 2 << 20;
    for whole in [false, true] {
        origin.set_script(whole.then(|| ollama_proxy_tests::Script {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![Bytes::from(vec![b' '; size])],
            content_length: true,
        }));
        let mut body = h2_download(&mut client, size).await;
        let mut got = 0;
        while let Some(data) = body.data().await {
            let data = data.unwrap_or_else(|e| panic!("cut after {got} bytes: {e}"));
            got += data.len();
            // The pace of a slow reader, not a wait for anything.
            tokio::time::sleep(Duration::from_millis(100 * data.len() as u64 / (64 * 1024))).await;
            body.flow_control().release_capacity(data.len()).unwrap();
        }
        assert_eq!(got, size, "one answer of known length: {whole}");
    }
    assert_eq!(origin.disconnects(), 0, "the origin's request was cut");
}
