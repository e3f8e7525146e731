//! A small HTTP client for the scenarios: hyper over loopback, plus raw TCP
//! for what a well-behaved client cannot send.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request body for the test client.
pub type ReqBody = BoxBody<Bytes, io::Error>;

/// A finished response: status, headers and the whole body.
#[derive(Debug)]
pub struct Got {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Got {
    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// All values of a header, as strings.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
            .collect()
    }

    /// The one value of a header, or `None`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, ReqBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An empty body.
pub fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body with these bytes (and a Content-Length).
pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Builds a request to `path` on the proxy at `addr`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: ReqBody,
) -> Request<ReqBody> {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap()
}

/// Sends a request and returns the response head with its body unread.
pub async fn send(req: Request<ReqBody>) -> Response<Incoming> {
    client()
        .request(req)
        .await
        .expect("request to the proxy failed")
}

/// Sends a request and reads the whole response.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: ReqBody,
) -> Got {
    let response = send(request(addr, method, path, headers, body)).await;
    collect(response).await
}

/// Reads a whole response.
pub async fn collect(response: Response<Incoming>) -> Got {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Reads a streamed response line by line, noting when each line's first
/// byte arrived.
pub async fn lines_with_arrival(response: Response<Incoming>) -> Vec<(Instant, String)> {
    let mut body = response.into_body();
    let mut lines = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut started: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("stream frame");
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        for &b in data.iter() {
            if partial.is_empty() && b != b'\n' {
                started = Some(now);
            }
            if b == b'\n' {
                if !partial.is_empty() {
                    lines.push((
                        started.take().unwrap_or(now),
                        String::from_utf8_lossy(&partial).into_owned(),
                    ));
                }
                partial.clear();
            } else {
                partial.push(b);
            }
        }
    }
    lines
}

/// Opens a TCP connection and writes `bytes` as they are.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.write_all(bytes).await.expect("write raw request");
    stream
}

/// Reads from a raw connection until `needle` has been seen, or the
/// connection ends (EOF or reset); returns what arrived.
pub async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen
}

/// A streamed request body of unknown length, fed through the returned sender.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ReqBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = crate::origin::ChannelBody(rx)
        .map_err(|never| match never {})
        .boxed();
    (tx, body)
}

/// Reads a whole response body, calling `first` once the first data
/// arrives (to count streams that are open and flowing).
///
/// # Panics
/// When the body fails.
pub async fn collect_noting_first(response: Response<Incoming>, first: impl FnOnce()) -> Bytes {
    let mut body = response.into_body();
    let mut all = Vec::new();
    let mut first = Some(first);
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("response body");
        if let Some(data) = frame.data_ref() {
            all.extend_from_slice(data);
            if let Some(first) = first.take() {
                first();
            }
        }
    }
    Bytes::from(all)
}
