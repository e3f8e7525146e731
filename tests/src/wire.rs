//! Raw HTTP/1.1 on the wire: requests written byte for byte as generated
//! (header case, duplicates, odd targets), responses read to the end and
//! parsed, so nothing a client library would tidy up is lost.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as it arrived: status, headers in order, decoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Sends one request on a new connection (`Connection: close` is appended)
/// and reads the response until the server closes. The body goes out in
/// pieces cut at `splits` (offsets, taken modulo its length), each written
/// and flushed on its own.
///
/// # Panics
/// When the connection fails or the response is not HTTP/1.1.
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    splits: &[usize],
) -> RawResponse {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: proxy.test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" || method == "PATCH" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The proxy may answer (401, 413) without reading the body.
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % (body.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(body.len());
    let mut at = 0;
    for cut in cuts {
        if cut > at {
            if stream.write_all(&body[at..cut]).await.is_err() {
                break;
            }
            let _ = stream.flush().await;
            tokio::task::yield_now().await;
            at = cut;
        }
    }
    // Read until the response is complete by its own framing: not every
    // server closes promptly on `Connection: close` (workerd keeps the
    // connection until its idle timeout).
    let head_only = method == "HEAD";
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if complete(&raw, head_only) {
            break;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break, // closed (or reset after the answer)
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse(&raw, head_only)
}

/// Whether `raw` holds a whole response, judged by its framing.
fn complete(raw: &[u8], head_only: bool) -> bool {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut slots);
    let Ok(httparse::Status::Complete(head_len)) = response.parse(raw) else {
        return false;
    };
    let status = response.code.unwrap_or(0);
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return true;
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let body = &raw[head_len..];
    if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        return chunked_end(body).is_some();
    }
    match header("content-length").and_then(|l| l.trim().parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => false, // delimited by close
    }
}

/// The decoded body when `body` holds a whole chunked body.
fn chunked_end(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return rest.windows(2).any(|w| w == b"\r\n").then_some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Parses a complete HTTP/1.1 response.
///
/// # Panics
/// When `raw` is not a complete response.
pub fn parse(raw: &[u8], head_only: bool) -> RawResponse {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut slots);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "incomplete or bad response ({other:?}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    };
    let status = response.code.expect("status");
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &raw[head_len..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        chunked_end(rest).unwrap_or_else(|| {
            panic!(
                "chunked body cut short: {:?}",
                String::from_utf8_lossy(rest)
            )
        })
    } else {
        rest.to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}
