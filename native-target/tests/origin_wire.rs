//! The native proxy's own HTTP/1.1 client against an origin written on raw
//! TCP, which can do what a well-behaved server does only by chance: close
//! a kept connection between requests, or after reading a request and
//! before answering it, answer with a body that runs to the connection's
//! end, send an interim `100 Continue` first, answer before reading the
//! body and close, send bytes past its answer, or frame an answer twice.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

mod common;
use common::{read_head, start, start_with, wait_for_line, TOKEN};

/// What the raw origin does with a request.
enum Reply {
    /// Sends these bytes and waits for the next request.
    Answer(Vec<u8>),
    /// Sends these bytes and closes the connection.
    AnswerThenClose(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Sends these bytes as soon as the request's head has come, and closes
    /// the connection without reading the body.
    AnswerEarlyThenClose(Vec<u8>),
    /// Sends these bytes as soon as the request's head has come, then reads
    /// whatever comes until the connection closes.
    AnswerEarly(Vec<u8>),
}

fn small(text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// What the raw origin saw: each request as (connection, request line), and
/// each connection it closed.
struct Seen {
    requests: UnboundedReceiver<(usize, String)>,
    closed: UnboundedReceiver<usize>,
}

/// A raw origin on loopback answering the `k`-th request on its `n`-th
/// connection (both from 0) with `reply(n, k)`.
async fn raw_origin(reply: fn(usize, usize) -> Reply) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (requests_tx, requests) = unbounded_channel();
    let (closed_tx, closed) = unbounded_channel();
    tokio::spawn(async move {
        for n in 0.. {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(
                stream,
                n,
                reply,
                requests_tx.clone(),
                closed_tx.clone(),
            ));
        }
    });
    (addr, Seen { requests, closed })
}

async fn serve(
    mut stream: TcpStream,
    n: usize,
    reply: fn(usize, usize) -> Reply,
    requests: UnboundedSender<(usize, String)>,
    closed: UnboundedSender<usize>,
) {
    let mut buf = Vec::new();
    for k in 0.. {
        let reply = reply(n, k);
        let early = matches!(
            reply,
            Reply::AnswerEarlyThenClose(_) | Reply::AnswerEarly(_)
        );
        let Some(line) = read_request(&mut stream, &mut buf, !early).await else {
            return;
        };
        requests.send((n, line)).unwrap();
        match reply {
            Reply::Answer(bytes) => stream.write_all(&bytes).await.unwrap(),
            Reply::AnswerThenClose(bytes) | Reply::AnswerEarlyThenClose(bytes) => {
                stream.write_all(&bytes).await.unwrap();
                break;
            }
            Reply::AnswerEarly(bytes) => {
                stream.write_all(&bytes).await.unwrap();
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                break;
            }
            Reply::Close => break,
        }
    }
    drop(stream);
    let _ = closed.send(n);
}

/// Reads one request (head, and with `body` a body of a declared length)
/// off `stream`; its request line, or `None` at the connection's end.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, body: bool) -> Option<String> {
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let length = if body { length } else { 0 };
    while buf.len() < end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..end + length);
    Some(head.lines().next().unwrap_or_default().to_owned())
}

/// One kept-alive client connection to the proxy: every request on it is
/// served by the same server thread, so by the same pool of origin
/// connections.
async fn client(proxy: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn ask(
    send: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: &'static str,
) -> (StatusCode, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "proxy")
        .header("cf-aig-authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    send.ready().await.unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Reads from `client` until an answer's head has come whole (and perhaps
/// some of its body).
fn lines(seen: &mut Seen) -> Vec<(usize, String)> {
    std::iter::from_fn(|| seen.requests.try_recv().ok()).collect()
}

#[tokio::test]
async fn a_kept_connection_the_origin_closed_is_not_used() {
    let (origin, mut seen) = raw_origin(|n, _| match n {
        0 => Reply::AnswerThenClose(small("first")),
        _ => Reply::Answer(small("second")),
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    assert_eq!(
        ask(&mut send, "GET", "/api/version", "").await,
        (StatusCode::OK, Bytes::from("first"))
    );
    // The origin has closed the connection the proxy kept.
    assert_eq!(seen.closed.recv().await, Some(0));
    assert_eq!(
        ask(&mut send, "GET", "/api/version", "").await,
        (StatusCode::OK, Bytes::from("second"))
    );
    assert_eq!(
        lines(&mut seen),
        [
            (0, "GET /api/version HTTP/1.1".to_owned()),
            (1, "GET /api/version HTTP/1.1".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_get_cut_before_its_answer_is_sent_again_on_a_new_connection() {
    let (origin, mut seen) = raw_origin(|n, k| match (n, k) {
        (0, 0) => Reply::Answer(small("kept")),
        (0, _) => Reply::Close,
        _ => Reply::Answer(small("again")),
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    assert_eq!(ask(&mut send, "GET", "/api/version", "").await.1, "kept");
    assert_eq!(
        ask(&mut send, "GET", "/api/version", "").await,
        (StatusCode::OK, Bytes::from("again"))
    );
    let seen = lines(&mut seen);
    assert_eq!(
        seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 0, 1],
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_post_cut_before_its_answer_is_not_sent_again() {
    let (origin, mut seen) = raw_origin(|n, k| match (n, k) {
        (0, 0) => Reply::Answer(small("kept")),
        (0, _) => Reply::Close,
        _ => Reply::Answer(small("must not come")),
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    assert_eq!(ask(&mut send, "GET", "/api/version", "").await.1, "kept");
    let (status, body) = ask(
        &mut send,
        "POST",
        "/api/generate",
        r#"{"model":"m","prompt":"once"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?}");
    assert_eq!(
        lines(&mut seen),
        [
            (0, "GET /api/version HTTP/1.1".to_owned()),
            (0, "POST /api/generate HTTP/1.1".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_answer_that_runs_to_the_close_arrives_whole() {
    fn until_close(_: usize, _: usize) -> Reply {
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        answer.extend((0..100_000u32).map(|i| b'a' + (i % 26) as u8));
        Reply::AnswerThenClose(answer)
    }
    let (origin, mut seen) = raw_origin(until_close).await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    for _ in 0..2 {
        let (status, body) = ask(&mut send, "GET", "/api/version", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 100_000);
        assert!(body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8));
    }
    // Such a connection is never kept: each answer came on its own.
    assert_eq!(
        lines(&mut seen).iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1]
    );
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (origin, _seen) = raw_origin(|_, _| {
        let mut answer = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        answer.extend(small("final"));
        Reply::Answer(answer)
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    for _ in 0..2 {
        assert_eq!(
            ask(
                &mut send,
                "POST",
                "/api/generate",
                r#"{"model":"m","prompt":"hi"}"#
            )
            .await,
            (StatusCode::OK, Bytes::from("final"))
        );
    }
}

#[tokio::test]
async fn bytes_past_an_answer_keep_its_connection_from_being_used_again() {
    // Junk after a small answer, then after a large one (read in reads
    // that grew); "next" otherwise.
    fn with_junk(n: usize, k: usize) -> Reply {
        let size = match (n, k) {
            (0, 0) => 10,
            (1, 1) => 100_000,
            _ => return Reply::Answer(small("next")),
        };
        let mut answer = small(&"a".repeat(size));
        answer.extend_from_slice(b"JUNK");
        Reply::Answer(answer)
    }
    let (origin, mut seen) = raw_origin(with_junk).await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    let mut sizes = Vec::new();
    for _ in 0..4 {
        let (status, body) = ask(&mut send, "GET", "/api/version", "").await;
        assert_eq!(status, StatusCode::OK);
        sizes.push(if body == "next" { 0 } else { body.len() });
    }
    assert_eq!(sizes, [10, 0, 100_000, 0]);
    // After each answer with junk the next request went on a new
    // connection; after a clean one the connection was kept.
    let seen = lines(&mut seen);
    assert_eq!(
        seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1, 1, 2],
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_early_answer_stands_when_the_origin_closes_before_the_body() {
    let (origin, _seen) = raw_origin(|_, _| {
        Reply::AnswerEarlyThenClose(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlarge"
                .to_vec(),
        )
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    // Writing the rest of the body fails once the origin has closed; which
    // comes first, that or reading the answer, is up to the scheduler, so
    // several rounds. The client is raw: the proxy, having answered, stops
    // reading its body and may close while it still writes.
    for _ in 0..5 {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let size = 20 << 20;
        let head = format!(
            "POST /api/generate HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n"
        );
        let upload = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            let piece = vec![b'x'; 64 << 10];
            for _ in 0..size / piece.len() {
                writer.write_all(&piece).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"large") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.ends_with("large"), "{answer}");
        upload.abort();
    }
}

#[tokio::test]
async fn an_answer_framed_twice_is_refused() {
    let (origin, _seen) = raw_origin(|_, _| {
        Reply::Answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    let (status, _) = ask(&mut send, "GET", "/api/version", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_that_fails_after_an_early_answer_is_not_the_origins_fault() {
    // An origin that answers as soon as it has a request's head (Ollama
    // stops reading at the end of the JSON value) and holds its answer open.
    let (origin, _seen) = raw_origin(|_, _| {
        Reply::AnswerEarly(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{\"response\":\"a\"}\n"
                .to_vec(),
        )
    })
    .await;
    let proxy = start(&format!("http://{origin}"));
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /api/generate HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let json = r#"{"model":"m","prompt":"hi"}"#;
    client.write_all(head.as_bytes()).await.unwrap();
    client
        .write_all(format!("{:x}\r\n{json}\r\n", json.len()).as_bytes())
        .await
        .unwrap();
    // The answer is on its way; then the client's body breaks (a chunk
    // size that is not hex).
    let mut got = read_head(&mut client).await;
    let mut buf = [0u8; 4096];
    client.write_all(b"zz\r\n").await.unwrap();
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // No record blaming the origin in the stream, and the log says whose it
    // was.
    assert!(!got.contains("broke off"), "{got}");
    let line = tokio::task::block_in_place(|| wait_for_line(&proxy, "path=/api/generate"));
    assert!(
        line.contains("outcome=client_gone") && line.contains("error=bad_request"),
        "{line}"
    );
}

#[tokio::test]
async fn what_the_usage_filter_held_arrives_when_the_answer_had_a_length() {
    // An OpenAI stream the proxy asked for its usage (the client did not),
    // sent with a Content-Length and ending in an event without its blank
    // line: the filter holds that event until the body's end.
    const EVENTS: &str =
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n";
    fn sse(_: usize, _: usize) -> Reply {
        Reply::Answer(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{EVENTS}",
                EVENTS.len()
            )
            .into_bytes(),
        )
    }
    let (origin, mut seen) = raw_origin(sse).await;
    let proxy = start(&format!("http://{origin}"));
    let mut send = client(proxy.addr).await;
    let (status, body) = ask(
        &mut send,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"m","messages":[],"stream":true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines(&mut seen).len(), 1);
    assert_eq!(body, EVENTS, "the whole stream, its last event too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_its_answer_is_logged_and_cancels_it() {
    // An origin that takes the request and does not answer (a model still
    // loading).
    let (origin, mut seen) = raw_origin(|_, _| Reply::AnswerEarly(Vec::new())).await;
    let proxy = start(&format!("http://{origin}"));
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "GET /api/tags HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // The origin has it; the client leaves.
    assert!(seen.requests.recv().await.is_some());
    drop(client);
    assert_eq!(
        seen.closed.recv().await,
        Some(0),
        "the origin request was cancelled"
    );
    let line = tokio::task::block_in_place(|| wait_for_line(&proxy, "path=/api/tags"));
    assert!(
        line.contains("status=499") && line.contains("outcome=client_gone"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
    // The origin answers once it has read the whole body.
    let (origin, _seen) = raw_origin(|_, _| Reply::Answer(small("got it"))).await;
    let proxy = start_with(&format!("http://{origin}"), &[("RESPONSE_TIMEOUT", "1s")]);
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let body = format!(r#"{{"model":"m","prompt":"{}"}}"#, "x".repeat(8000));
    let head = format!(
        "POST /api/generate HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    // A client on a slow link: the whole body takes 2.4 s, more than the
    // response timeout, each piece well within the idle timeout.
    for piece in body.as_bytes().chunks(body.len().div_ceil(8)) {
        client.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap_or_default();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("got it"), "{got}");
}
