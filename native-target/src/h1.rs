//! HTTP/1.1 to the origin, the wire part: a request's head written out, an
//! answer's head read, and the answer's body framed (by length, in chunks,
//! or until the connection closes). Bytes in, events out: nothing here reads
//! or writes a socket ([`crate::upstream`] does), so each framing is tested
//! by feeding it bytes split anywhere.
//!
//! Read as RFC 9112 reads: §6.3 for how long a body is, §7.1 for chunks.
//! What an origin may send that is not HTTP (a bad length, a chunk size
//! past 64 bits, a head that never ends) is an error, never a guess.

use std::io::{self, Write as _};
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use ollama_proxy_core::{connection_tokens, declared_length, framed_twice, Digits};

/// The most an answer's head may take (hyper's client allowed ≈ 400 KiB
/// of buffer; Ollama's heads are a few hundred bytes).
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The most header lines an answer's head may have (hyper's default).
const MAX_HEADERS: usize = 100;

/// Header lines whose places are kept on the stack while a head is read.
const FEW_HEADERS: usize = 32;

/// The most bytes of chunk extensions and of trailers read (and dropped)
/// in one body.
const MAX_SKIPPED: u64 = 16 * 1024;

/// How a request's body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sending {
    /// No body.
    Nothing,
    /// Exactly this many bytes.
    Length(u64),
    /// In chunks, ended by a last chunk of size 0.
    Chunked,
}

/// What is known of a request body's length before it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyShape {
    /// It has already ended (no body).
    Ended,
    /// Exactly this many bytes will come.
    Exact(u64),
    /// Unknown.
    Unknown,
}

/// Writes a request's head into `dst` and says how its body goes out.
///
/// The framing headers are this function's: a declared `Content-Length`
/// is written back as one value (the core has checked that several agree),
/// a body of known length gets one, any other body goes in chunks
/// (whatever the method: a body is never dropped). `Transfer-Encoding` from
/// the client never reaches here (hop-by-hop, removed by the core).
pub(crate) fn write_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: BodyShape,
    dst: &mut Vec<u8>,
) -> Sending {
    // The core has refused requests whose length does not read.
    let declared = declared_length(headers).ok().flatten();
    let (sending, length) = match (body, declared) {
        (BodyShape::Ended, None | Some(0)) => (Sending::Nothing, declared),
        // A declared length is held to, even by a body that has ended (it
        // then falls short and the request is not sent).
        (_, Some(n)) | (BodyShape::Exact(n), None) => (Sending::Length(n), Some(n)),
        (BodyShape::Unknown, None) => (Sending::Chunked, None),
    };
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(target.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    match (sending, length) {
        (Sending::Chunked, _) => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        (_, Some(n)) => {
            dst.extend_from_slice(b"content-length: ");
            // Not `write!`: `core::fmt` was a tenth of writing a head.
            dst.extend_from_slice(Digits::of(n).as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        (_, None) => {}
    }
    dst.extend_from_slice(b"\r\n");
    sending
}

/// Writes the line that starts a chunk of `len` bytes.
pub(crate) fn chunk_start(len: usize, dst: &mut Vec<u8>) {
    let _ = write!(dst, "{len:x}");
    dst.extend_from_slice(b"\r\n");
}

/// What ends a chunk.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk, without trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// An answer's head, read.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) response: Response<()>,
    pub(crate) body: Decoder,
    /// Whether the connection may carry another request after this answer
    /// (HTTP/1.1 without `Connection: close`, or HTTP/1.0 asking for
    /// keep-alive; never for a body that ends when the connection does).
    pub(crate) keep_alive: bool,
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads an answer's head from the front of `buf`: `None` while more bytes
/// are needed; informational answers (`100 Continue`, `103`) are taken off
/// and skipped. `head_request`: the request was a `HEAD` (its answer has no
/// body, whatever its length says).
///
/// # Errors
/// Not HTTP/1.x, too large, a bad header, `101` (no upgrade was asked for),
/// or a body length that cannot be read.
pub(crate) fn read_head(buf: &mut BytesMut, head_request: bool) -> io::Result<Option<Head>> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Where each header's name and value sit in `buf`: on the stack for
        // a usual head.
        let mut few = [(0u32, 0u32, 0u32, 0u32); FEW_HEADERS];
        let mut many = Vec::new();
        let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut parsed, buf, &mut lines)
            .map_err(|_| invalid("the origin's answer is not HTTP/1.x"))?;
        let len = match status {
            httparse::Status::Complete(len) if len <= MAX_HEAD => len,
            httparse::Status::Partial if buf.len() <= MAX_HEAD => return Ok(None),
            _ => return Err(invalid("the origin's answer head is too large")),
        };
        let code = parsed.code.unwrap_or(0);
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let start = buf.as_ptr() as usize;
        let count = parsed.headers.len();
        let spans = if count <= FEW_HEADERS {
            &mut few[..count]
        } else {
            many.resize(count, (0, 0, 0, 0));
            &mut many[..]
        };
        // Offsets within a head of at most `MAX_HEAD` bytes fit in 32 bits.
        let at = |part: &[u8]| (part.as_ptr() as usize - start) as u32;
        for (span, line) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = at(line.name.as_bytes());
            let value = at(line.value);
            *span = (
                name,
                name + line.name.len() as u32,
                value,
                value + line.value.len() as u32,
            );
        }
        let head = buf.split_to(len).freeze();
        if (100..200).contains(&code) && code != 101 {
            continue;
        }
        if code == 101 {
            return Err(invalid("the origin switched protocols unasked"));
        }
        let status = StatusCode::from_u16(code).map_err(|_| invalid("a bad status code"))?;
        // Room for what the core adds on the way back (CORS, the request
        // id, rate headers) without growing the map.
        let mut headers = HeaderMap::with_capacity(count + 8);
        for &(name_at, name_end, value_at, value_end) in spans.iter() {
            let (name_at, name_end) = (name_at as usize, name_end as usize);
            let (value_at, value_end) = (value_at as usize, value_end as usize);
            let name = HeaderName::from_bytes(&head[name_at..name_end])
                .map_err(|_| invalid("a bad header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_end))
                .map_err(|_| invalid("a bad header value"))?;
            headers.append(name, value);
        }
        let body = framing(head_request, status, version, &headers)?;
        let keep_alive = !matches!(body.kind, Kind::Close) && keeps_alive(version, &headers);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            body,
            keep_alive,
        }));
    }
}

/// How long an answer's body is (RFC 9112 §6.3).
fn framing(
    head_request: bool,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> io::Result<Decoder> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Decoder::length(0));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(invalid("Transfer-Encoding in an HTTP/1.0 answer"));
        }
        // Refused as the core refuses such a request: passed on, the
        // length would frame a body sent in chunks.
        if framed_twice(headers) {
            return Err(invalid("both Transfer-Encoding and Content-Length"));
        }
        // Chunked only when it is the last coding; otherwise the body runs
        // to the connection's end.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(if last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
            Decoder::chunked()
        } else {
            Decoder::close()
        });
    }
    // Read as the core reads a client's request.
    let length = declared_length(headers).map_err(|_| invalid("a bad Content-Length"))?;
    Ok(length.map_or_else(Decoder::close, Decoder::length))
}

fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in connection_tokens(headers) {
        close |= token.eq_ignore_ascii_case("close");
        keep |= token.eq_ignore_ascii_case("keep-alive");
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// Takes an answer's body out of the bytes read, frame by frame.
#[derive(Debug)]
pub(crate) struct Decoder {
    kind: Kind,
    skipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This many bytes still to come.
    Length(u64),
    /// Until the connection closes.
    Close,
    Chunked(Chunk),
    Done,
}

/// Where a chunked body is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a size: `digits` hex digits so far (leading zeros too,
    /// counted up to 255).
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size.
    SizeSpace {
        size: u64,
    },
    /// An extension (dropped), up to its line's end.
    Extension {
        size: u64,
    },
    /// The size line's `\n`.
    SizeLf {
        size: u64,
    },
    /// This many bytes of the chunk still to come.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or the blank line ending the body.
    TrailerStart,
    /// Inside a trailer line (dropped).
    Trailer,
    TrailerLf,
    EndLf,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Bytes of the body (never empty).
    Data(Bytes),
    /// More bytes are needed.
    Need,
    /// The body has ended.
    End,
}

impl Decoder {
    pub(crate) fn length(n: u64) -> Self {
        Self::of(if n == 0 { Kind::Done } else { Kind::Length(n) })
    }

    pub(crate) fn chunked() -> Self {
        Self::of(Kind::Chunked(Chunk::Size { size: 0, digits: 0 }))
    }

    pub(crate) fn close() -> Self {
        Self::of(Kind::Close)
    }

    fn of(kind: Kind) -> Self {
        Self { kind, skipped: 0 }
    }

    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.kind == Kind::Done
    }

    /// How many bytes are still to come, when that is known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            Kind::Done => Some(0),
            Kind::Close | Kind::Chunked(_) => None,
        }
    }

    /// Takes the next piece of the body from the front of `buf`.
    ///
    /// # Errors
    /// A chunked body that breaks its grammar.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        match self.kind {
            Kind::Done => Ok(Decoded::End),
            Kind::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::Need);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let left = left - take as u64;
                self.kind = if left == 0 {
                    Kind::Done
                } else {
                    Kind::Length(left)
                };
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Kind::Close => Ok(if buf.is_empty() {
                Decoded::Need
            } else {
                Decoded::Data(buf.split().freeze())
            }),
            Kind::Chunked(state) => self.chunk(state, buf),
        }
    }

    fn chunk(&mut self, mut state: Chunk, buf: &mut BytesMut) -> io::Result<Decoded> {
        let mut used = 0;
        let found = loop {
            if let Chunk::Data { left } = state {
                // The bytes before `used` are framing: dropped first.
                buf.advance(used);
                used = 0;
                if buf.is_empty() {
                    break Decoded::Need;
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let left = left - take as u64;
                state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { left }
                };
                break Decoded::Data(buf.split_to(take).freeze());
            }
            let Some(&byte) = buf.get(used) else {
                break Decoded::Need;
            };
            used += 1;
            state = match (state, byte) {
                (Chunk::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                    if size >> 60 != 0 {
                        return Err(invalid("a chunk size past 64 bits"));
                    }
                    let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                    Chunk::Size {
                        size: size << 4 | digit,
                        digits: digits.saturating_add(1),
                    }
                }
                (Chunk::Size { digits: 0, .. }, _) => {
                    return Err(invalid("a chunk without a size"))
                }
                (Chunk::Size { size, .. } | Chunk::SizeSpace { size }, b' ' | b'\t') => {
                    Chunk::SizeSpace { size }
                }
                (Chunk::Size { size, .. } | Chunk::SizeSpace { size }, b';') => {
                    Chunk::Extension { size }
                }
                (Chunk::Size { size, .. } | Chunk::SizeSpace { size }, b'\r') => {
                    Chunk::SizeLf { size }
                }
                (Chunk::Size { .. } | Chunk::SizeSpace { .. }, _) => {
                    return Err(invalid("a bad chunk size line"))
                }
                (Chunk::Extension { size }, b'\r') => Chunk::SizeLf { size },
                (Chunk::Extension { .. }, b'\n') => {
                    return Err(invalid("a bare line feed in a chunk extension"))
                }
                (Chunk::Extension { size }, _) => {
                    self.skip()?;
                    Chunk::Extension { size }
                }
                (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::TrailerStart,
                (Chunk::SizeLf { size }, b'\n') => Chunk::Data { left: size },
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
                (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::TrailerStart | Chunk::Trailer, b'\n') => {
                    return Err(invalid("a bare line feed in a trailer"))
                }
                (Chunk::TrailerStart | Chunk::Trailer, _) => {
                    self.skip()?;
                    Chunk::Trailer
                }
                (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
                (Chunk::EndLf, b'\n') => {
                    buf.advance(used);
                    self.kind = Kind::Done;
                    return Ok(Decoded::End);
                }
                _ => return Err(invalid("a chunk's framing is broken")),
            };
        };
        buf.advance(used);
        self.kind = Kind::Chunked(state);
        Ok(found)
    }

    fn skip(&mut self) -> io::Result<()> {
        self.skipped += 1;
        if self.skipped > MAX_SKIPPED {
            return Err(invalid("chunk extensions or trailers too long"));
        }
        Ok(())
    }

    /// The connection closed: the end of a body that runs to it, an error
    /// for any other still short of its end.
    ///
    /// # Errors
    /// The body was cut short.
    pub(crate) fn closed(&mut self) -> io::Result<()> {
        match self.kind {
            Kind::Close | Kind::Done => {
                self.kind = Kind::Done;
                Ok(())
            }
            Kind::Length(_) | Kind::Chunked(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the origin closed the connection before the body's end",
            )),
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
