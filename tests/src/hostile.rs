//! Hostile and malformed requests, written byte for byte, and what each
//! target must do with them: answer 4xx or close the connection, and never
//! forward a complete request to the origin.
//!
//! [`CASES`] is the one list: the targets' tests run it and compare what
//! they observe with the expectations here, and `docs/reliability.md` is
//! rendered from it (a test checks the committed file is current), so the
//! report cannot drift from what the tests check.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{call, empty};
use crate::target::{Harness, Target, AUTH, TOKEN};

/// One hostile request and the observed outcome each target must produce.
pub struct Hostile {
    /// A short identifier.
    pub name: &'static str,
    /// What is wrong with the request, for the report.
    pub what: &'static str,
    /// The bytes sent.
    pub bytes: fn() -> Vec<u8>,
    /// The head is valid and only the body is broken, so the proxy may
    /// start forwarding before it finds out: the origin must then see an
    /// aborted body, never a complete one.
    pub broken_body: bool,
    /// The outcome natively, as [`observe`] renders it.
    pub native: &'static str,
    /// The outcome in workerd, as [`observe`] renders it.
    pub worker: &'static str,
}

/// An authenticated request head with `lines` as extra header lines, then `body`.
fn request(start: &str, lines: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{start}\r\nHost: proxy.test\r\ncf-aig-authorization: Bearer {TOKEN}\r\n");
    for line in lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A `GET` with `count` headers of 4,000 bytes each.
fn big_headers(count: usize) -> Vec<u8> {
    let value = "v".repeat(4000);
    let lines: Vec<String> = (0..count).map(|i| format!("X-Big-{i}: {value}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    request("GET /api/tags HTTP/1.1", &lines, b"")
}

fn post(lines: &[&str], body: &[u8]) -> Vec<u8> {
    request("POST /api/chat HTTP/1.1", lines, body)
}

/// The list. Outcomes: the status the client got, or `closed` when the
/// connection ended without a response; then what reached the origin.
pub const CASES: &[Hostile] = &[
    Hostile {
        name: "nul_in_header_value",
        what: "NUL byte in a header value",
        bytes: || post(&["X-Bad: a\0b", "Content-Length: 2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "400, nothing forwarded",
    },
    Hostile {
        name: "bare_cr_in_header_value",
        what: "bare CR inside a header value",
        bytes: || post(&["X-Bad: a\rb", "Content-Length: 2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "400, nothing forwarded",
    },
    Hostile {
        name: "space_in_header_name",
        what: "space inside a header name",
        bytes: || post(&["X Bad: 1", "Content-Length: 2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "400, nothing forwarded",
    },
    Hostile {
        name: "space_before_colon",
        what: "`Transfer-Encoding : chunked` (space before the colon)",
        bytes: || post(&["Transfer-Encoding : chunked", "Content-Length: 2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "400, nothing forwarded",
    },
    Hostile {
        name: "obs_fold",
        what: "obsolete line folding (obs-fold)",
        bytes: || post(&["X-Folded: a", " b", "Content-Length: 2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        // workerd unfolds the line into one value before the Worker runs.
        worker: "200, POST /api/chat forwarded (2-byte body)",
    },
    Hostile {
        name: "non_ascii_header_value",
        what: "raw UTF-8 in a header value (`X-Title: café`)",
        bytes: || post(&["X-Title: caf\u{e9}", "Content-Length: 2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "400, nothing forwarded",
    },
    Hostile {
        name: "header_section_over_64k",
        what: "header section over 64 KiB (17 headers of 4,000 bytes)",
        bytes: || big_headers(17),
        broken_body: false,
        native: "431, nothing forwarded",
        worker: "431, nothing forwarded",
    },
    Hostile {
        name: "header_section_over_128k",
        what: "header section over 128 KiB (33 headers of 4,000 bytes)",
        bytes: || big_headers(33),
        broken_body: false,
        native: "431, nothing forwarded",
        worker: "431, nothing forwarded",
    },
    Hostile {
        name: "over_100_headers",
        what: "more than 100 header fields (101 small ones)",
        bytes: || {
            let lines: Vec<String> = (0..101).map(|i| format!("X-H-{i}: v")).collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            request("GET /api/tags HTTP/1.1", &lines, b"")
        },
        broken_body: false,
        native: "431, nothing forwarded",
        worker: "431, nothing forwarded",
    },
    Hostile {
        name: "request_line_over_8k",
        what: "request line over 8 KiB (a 9,000-byte query)",
        bytes: || {
            let start = format!("GET /api/tags?q={} HTTP/1.1", "a".repeat(9000));
            request(&start, &[], b"")
        },
        broken_body: false,
        native: "414, nothing forwarded",
        worker: "414, nothing forwarded",
    },
    Hostile {
        name: "invalid_chunk_size",
        what: "chunked body with a chunk size that is not hex",
        bytes: || post(&["Transfer-Encoding: chunked"], b"zz\r\nhello\r\n0\r\n\r\n"),
        broken_body: true,
        native: "400, nothing complete forwarded",
        // workerd fails the body's stream; the Worker, reading it through
        // its upload stream, answers as for any upload that breaks.
        worker: "400, nothing complete forwarded",
    },
    Hostile {
        name: "content_length_and_chunked",
        what: "`Content-Length` and `Transfer-Encoding: chunked` together (CL.TE smuggling)",
        bytes: || {
            post(
                &["Content-Length: 6", "Transfer-Encoding: chunked"],
                b"0\r\n\r\nGET /api/pull HTTP/1.1\r\nHost: x\r\n\r\n",
            )
        },
        broken_body: false,
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; hyper
        // drops the Content-Length and closes the connection after the
        // response, so what follows the chunked body is never read.
        native: "200, POST /api/chat forwarded (0-byte body)",
        worker: "400, nothing forwarded",
    },
    Hostile {
        name: "conflicting_content_lengths",
        what: "two `Content-Length` fields that disagree",
        bytes: || post(&["Content-Length: 2", "Content-Length: 3"], b"{}x"),
        broken_body: false,
        native: "400, nothing forwarded",
        // workerd refuses the framing itself with a 500; the Worker never runs.
        worker: "500, nothing forwarded",
    },
    Hostile {
        name: "content_length_list",
        what: "`Content-Length: 2, 3`",
        bytes: || post(&["Content-Length: 2, 3"], b"{}x"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "500, nothing forwarded",
    },
    Hostile {
        name: "content_length_plus",
        what: "`Content-Length: +2`",
        bytes: || post(&["Content-Length: +2"], b"{}"),
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "500, nothing forwarded",
    },
    Hostile {
        name: "chunked_not_last",
        what: "`Transfer-Encoding: chunked, identity` (chunked not the final coding)",
        bytes: || {
            post(
                &["Transfer-Encoding: chunked, identity"],
                b"2\r\n{}\r\n0\r\n\r\n",
            )
        },
        broken_body: false,
        native: "400, nothing forwarded",
        worker: "500, nothing forwarded",
    },
    Hostile {
        name: "control_byte_in_method",
        what: "control byte in the method",
        bytes: || request("GE\u{1}T /api/tags HTTP/1.1", &[], b""),
        broken_body: false,
        native: "400, nothing forwarded",
        // workerd: 501 Not Implemented for a method it cannot parse.
        worker: "501, nothing forwarded",
    },
    Hostile {
        name: "unknown_http_version",
        what: "`HTTP/9.9` request line",
        bytes: || request("GET /api/tags HTTP/9.9", &[], b""),
        broken_body: false,
        native: "400, nothing forwarded",
        // workerd accepts any HTTP/1.x-looking version; the origin gets HTTP/1.1.
        worker: "200, GET /api/tags forwarded (0-byte body)",
    },
];

/// How long to wait for the proxy's answer to one hostile request.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// Sends one hostile request on a fresh connection and renders what
/// happened: `<status>` or `closed`, then whether anything reached the origin.
///
/// After the answer, a valid request goes through the same proxy and is
/// awaited at the origin; by then a forwarded hostile request would have
/// been recorded too (it was sent first).
pub async fn observe(h: &Harness, case: &Hostile) -> String {
    h.origin.clear();
    let mut stream = TcpStream::connect(h.proxy).await.expect("connect");
    // The proxy may close before reading everything; that is an answer too.
    let _ = stream.write_all(&(case.bytes)()).await;
    let answer = tokio::time::timeout(ANSWER_LIMIT, read_status(&mut stream))
        .await
        .map_or_else(
            |_| "no answer within 15 s".to_owned(),
            |status| status.map_or_else(|| "closed".to_owned(), |s| s.to_string()),
        );
    drop(stream);

    let sentinel = call(h.proxy, "GET", "/api/version?sentinel", &[AUTH], empty()).await;
    assert_eq!(
        sentinel.status, 200,
        "the proxy stopped serving after {}",
        case.name
    );
    let requests = h.origin.requests();
    let others: Vec<_> = requests
        .iter()
        .filter(|r| !r.target.ends_with("?sentinel"))
        .collect();
    let complete: Vec<String> = others
        .iter()
        .filter(|r| r.body_complete)
        .map(|r| {
            format!(
                "{} {} forwarded ({}-byte body)",
                r.method,
                r.target,
                r.body.len()
            )
        })
        .collect();
    let reached = if !complete.is_empty() {
        &complete.join(" + ")
    } else if case.broken_body {
        // An aborted upload may be recorded either side of the sentinel.
        "nothing complete forwarded"
    } else if others.is_empty() {
        "nothing forwarded"
    } else {
        "an aborted request forwarded"
    };
    format!("{answer}, {reached}")
}

/// Reads a response head and returns its status, or `None` when the
/// connection ends (closed or reset) before a whole head arrived.
async fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut slots);
        if let Ok(httparse::Status::Complete(_)) = response.parse(&seen) {
            return response.code;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Runs every case against `target` and fails listing each mismatch.
pub async fn check_all<T: Target>(target: &T) {
    let h = Harness::start(target, &[]).await;
    let mut wrong = Vec::new();
    for case in CASES {
        let expected = if T::NAME == "native" {
            case.native
        } else {
            case.worker
        };
        let got = observe(&h, case).await;
        if got != expected {
            wrong.push(format!("{}: expected `{expected}`, got `{got}`", case.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} hostile requests handled differently than listed:\n{}",
        T::NAME,
        wrong.join("\n")
    );
}

/// The report table rendered from [`CASES`].
pub fn report_table() -> String {
    let mut out = String::from("| input | native | Worker (workerd) |\n|---|---|---|\n");
    for case in CASES {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            case.what, case.native, case.worker
        ));
    }
    out
}
