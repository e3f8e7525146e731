use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use proptest::prelude::*;

use super::*;

fn head_text(method: &Method, headers: &[(&str, &str)], body: BodyShape) -> (String, Sending) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let mut dst = Vec::new();
    let sending = write_head(method, "/api/chat?x=1", &map, body, &mut dst);
    (String::from_utf8(dst).unwrap(), sending)
}

#[test]
fn a_request_without_a_body_gets_no_framing_headers() {
    let (text, sending) = head_text(&Method::GET, &[("host", "box:11434")], BodyShape::Ended);
    assert_eq!(
        text,
        "GET /api/chat?x=1 HTTP/1.1\r\nhost: box:11434\r\n\r\n"
    );
    assert_eq!(sending, Sending::Nothing);
}

#[test]
fn a_declared_length_is_written_back_once() {
    let (text, sending) = head_text(
        &Method::POST,
        &[
            ("content-length", "5, 5"),
            ("content-type", "application/json"),
        ],
        BodyShape::Exact(5),
    );
    assert_eq!(
        text,
        "POST /api/chat?x=1 HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(sending, Sending::Length(5));
    let (text, sending) = head_text(&Method::POST, &[("content-length", "0")], BodyShape::Ended);
    assert!(text.ends_with("\r\ncontent-length: 0\r\n\r\n"), "{text}");
    assert_eq!(sending, Sending::Nothing);
    // A body that has ended is still held to a length it declared: it falls
    // short, and the request is not sent (rather than sent with no body for
    // the origin to wait on, or to take from the next request).
    let (_, sending) = head_text(&Method::POST, &[("content-length", "5")], BodyShape::Ended);
    assert_eq!(sending, Sending::Length(5));
}

#[test]
fn a_body_of_known_length_gets_one_and_any_other_goes_in_chunks() {
    let (text, sending) = head_text(&Method::POST, &[], BodyShape::Exact(42));
    assert!(text.ends_with("\r\ncontent-length: 42\r\n\r\n"), "{text}");
    assert_eq!(sending, Sending::Length(42));
    // Whatever the method: a GET's body is sent, not dropped.
    for method in [Method::POST, Method::GET] {
        let (text, sending) = head_text(&method, &[], BodyShape::Unknown);
        assert!(
            text.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        assert_eq!(sending, Sending::Chunked);
    }
}

#[test]
fn chunk_lines_are_hex() {
    let mut dst = Vec::new();
    chunk_start(0x1a2b, &mut dst);
    assert_eq!(dst, b"1a2b\r\n");
}

fn read(text: &str, head_request: bool) -> io::Result<Option<Head>> {
    read_head(&mut BytesMut::from(text.as_bytes()), head_request)
}

#[test]
fn an_answer_head_is_read_with_its_headers_and_framing() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nX-Two: a\r\nX-Two: b\r\nContent-Length: 3\r\n\r\nabcNEXT"[..],
    );
    let head = read_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(head.response.status(), StatusCode::OK);
    assert_eq!(head.response.version(), Version::HTTP_11);
    let headers = head.response.headers();
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(
        headers.get_all("x-two").iter().collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(head.keep_alive);
    assert_eq!(head.body.remaining(), Some(3));
    // The head is taken off; the body's bytes (and what follows) stay.
    assert_eq!(&buf[..], b"abcNEXT");
}

#[test]
fn a_partial_head_waits_and_a_huge_one_is_refused() {
    assert!(read("HTTP/1.1 200 OK\r\nContent-Le", false)
        .unwrap()
        .is_none());
    let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}", "a".repeat(MAX_HEAD + 1));
    assert!(read(&huge, false).is_err());
    // Also when it arrived whole in one read.
    let whole = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert!(read(&whole, false).is_err());
}

#[test]
fn informational_answers_are_skipped_and_a_switch_refused() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
    );
    let head = read_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(head.response.status(), StatusCode::CREATED);
    assert!(head.body.is_done());
    assert!(buf.is_empty());
    // Only the 100 so far: wait for the rest.
    let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
    assert!(read_head(&mut buf, false).unwrap().is_none());
    assert!(buf.is_empty());
    assert!(read(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        false
    )
    .is_err());
}

#[test]
fn how_long_a_body_is() {
    let remaining = |text: &str, head_request| read(text, head_request).unwrap().unwrap().body;
    assert!(remaining("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).is_done());
    assert!(remaining("HTTP/1.1 204 No Content\r\n\r\n", false).is_done());
    assert!(remaining(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        false
    )
    .is_done());
    assert_eq!(
        remaining("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", false).remaining(),
        Some(7)
    );
    let chunked = remaining(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
        false,
    );
    assert_eq!(
        chunked.kind,
        Kind::Chunked(Chunk::Size { size: 0, digits: 0 })
    );
    // Not chunked last, or no length at all: until the connection closes,
    // and the connection is not kept.
    for text in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
    ] {
        let head = read(text, false).unwrap().unwrap();
        assert_eq!(head.body.kind, Kind::Close, "{text}");
        assert!(!head.keep_alive, "{text}");
    }
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        // Two framings (RFC 9112 §6.3): passed on, the length would frame a
        // body sent in chunks.
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "NOT HTTP\r\n\r\n",
    ] {
        assert!(read(bad, false).is_err(), "{bad}");
    }
}

#[test]
fn which_connections_are_kept() {
    let kept = |text: &str| read(text, false).unwrap().unwrap().keep_alive;
    assert!(kept("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!kept(
        "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!kept("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(kept(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    ));
}

/// Feeds `wire` to a decoder in the pieces `cuts` makes; the body's bytes,
/// whether it ended, and what was left after its end.
fn feed(mut decoder: Decoder, wire: &[u8], cuts: &[usize]) -> io::Result<(Vec<u8>, bool, Vec<u8>)> {
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut at = 0;
    let mut cuts = cuts
        .iter()
        .map(|c| c % (wire.len() + 1))
        .collect::<Vec<_>>();
    cuts.push(wire.len());
    cuts.sort_unstable();
    for cut in cuts {
        buf.extend_from_slice(&wire[at..cut.max(at)]);
        at = cut.max(at);
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Decoded::Need => break,
                Decoded::End => {
                    // What follows the body is left as it was.
                    buf.extend_from_slice(&wire[at..]);
                    return Ok((body, true, buf.to_vec()));
                }
            }
        }
    }
    Ok((body, decoder.is_done(), buf.to_vec()))
}

fn chunked_wire(body: &[u8], sizes: &[usize], extension: bool, trailer: bool) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        chunk_start(n, &mut wire);
        if extension {
            wire.truncate(wire.len() - 2);
            wire.extend_from_slice(b" ;name=\"v;x\"\r\n");
        }
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(CHUNK_END);
        rest = &rest[n..];
    }
    if trailer {
        wire.extend_from_slice(b"0\r\nX-Trailer: 1\r\nX-Other: two\r\n\r\n");
    } else {
        wire.extend_from_slice(LAST_CHUNK);
    }
    wire
}

#[test]
fn chunks_with_extensions_and_trailers_are_read() {
    let wire = b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nExpires: never\r\n\r\nHTTP/1.1";
    let (body, ended, rest) = feed(Decoder::chunked(), wire, &[]).unwrap();
    assert_eq!(body, b"hello, world!!!");
    assert!(ended);
    assert_eq!(rest, b"HTTP/1.1");
}

#[test]
fn broken_chunks_are_errors() {
    for wire in [
        &b"x\r\n"[..],
        b"\r\n",
        b"5\r\nhelloX\r\n",
        b"5\nhello\r\n",
        b"11111111111111111\r\n",
        b"5;a\nb\r\n",
        b"0\r\nX: 1\n\r\n",
    ] {
        assert!(
            feed(Decoder::chunked(), wire, &[]).is_err(),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    // Extensions without end.
    let mut long = b"1;".to_vec();
    long.extend(std::iter::repeat_n(b'a', 20_000));
    assert!(feed(Decoder::chunked(), &long, &[]).is_err());
    // The largest size that fits is read (and waits for its bytes).
    let (body, ended, _) = feed(Decoder::chunked(), b"ffffffffffffffff\r\nab", &[]).unwrap();
    assert_eq!((body, ended), (b"ab".to_vec(), false));
    // Leading zeros do not count against it (RFC 9112 allows them).
    let (body, ended, _) = feed(
        Decoder::chunked(),
        b"00000000000000000000005\r\nhello\r\n0\r\n\r\n",
        &[],
    )
    .unwrap();
    assert_eq!((body, ended), (b"hello".to_vec(), true));
    assert!(feed(Decoder::chunked(), b"010000000000000000\r\n", &[]).is_err());
}

#[test]
fn a_cut_body_is_an_error_where_it_has_a_length() {
    assert!(Decoder::close().closed().is_ok());
    assert!(Decoder::length(0).closed().is_ok());
    for mut cut in [Decoder::length(3), Decoder::chunked()] {
        assert_eq!(
            cut.closed().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}

proptest! {
    #[test]
    fn chunked_bodies_read_the_same_however_split(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..200, 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        extension in any::<bool>(),
        trailer in any::<bool>(),
    ) {
        let mut wire = chunked_wire(&body, &sizes, extension, trailer);
        wire.extend_from_slice(b"HTTP/1.1 200");
        let (read, ended, rest) = feed(Decoder::chunked(), &wire, &cuts).unwrap();
        prop_assert_eq!(read, body);
        prop_assert!(ended);
        prop_assert_eq!(rest, b"HTTP/1.1 200".to_vec());
    }

    #[test]
    fn bodies_of_a_length_read_the_same_however_split(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = body.clone();
        wire.extend_from_slice(b"NEXT");
        let (read, ended, rest) = feed(Decoder::length(body.len() as u64), &wire, &cuts).unwrap();
        prop_assert_eq!(read, body);
        prop_assert!(ended);
        prop_assert_eq!(rest, b"NEXT".to_vec());
    }

    #[test]
    fn any_bytes_as_chunks_never_panic(
        wire in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let _ = feed(Decoder::chunked(), &wire, &cuts);
    }

    #[test]
    fn any_bytes_as_a_head_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_head(&mut BytesMut::from(&wire[..]), false);
    }
}
