//! An origin connection's own part: its socket and buffers, and a request
//! on its way out with its answer's head on its way in. The pool and the
//! answer's body are in the parent module.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::{BodyError, RequestBody};
use crate::h1::{self, BodyShape, Head, Sending};

/// A connection's read buffer to start with, and the least it grows by.
const READ_SIZE: usize = 4 * 1024;

/// The most one read asks for (a large download's reads double up to it).
const MAX_READ_SIZE: usize = 256 * 1024;

/// Below this much room a read buffer is renewed rather than read into:
/// small answers share one buffer (a few hundred bytes each), a large body
/// is read in large pieces.
const MIN_ROOM: usize = 1024;

/// The most a kept connection's write buffer holds on to (a request's head).
const MAX_KEPT_WRITE: usize = 16 * 1024;

/// A connection to an origin, between requests or serving one.
pub(super) struct Conn {
    stream: Stream,
    // What has been read and not yet taken (an answer's head, its body).
    pub(super) read: BytesMut,
    // How much the next renewal of `read` asks for.
    read_size: usize,
    // A renewal asked for more than `READ_SIZE` since `read` was last
    // dropped (its allocation may be large whatever `capacity` says: that
    // counts only the room after what was taken).
    read_grew: bool,
    // A request's head and chunk framing on their way out.
    write: Vec<u8>,
}

impl Conn {
    pub(super) fn new(stream: Stream) -> Box<Self> {
        Box::new(Self {
            stream,
            read: BytesMut::new(),
            read_size: READ_SIZE,
            read_grew: false,
            write: Vec::new(),
        })
    }

    /// Reads what the origin sent: how many bytes, 0 at the connection's end.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < MIN_ROOM {
            self.read_grew |= self.read_size > READ_SIZE;
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.read
        ))?;
        if n == room {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        } else if n < self.read_size / 8 {
            self.read_size = (self.read_size / 2).max(READ_SIZE);
        }
        Poll::Ready(Ok(n))
    }

    /// Whether a connection can be kept (no bytes past the answer's end:
    /// the origin would not be speaking HTTP), and if so readies it: no
    /// more than a usual answer's buffers (a large download grew its reads).
    pub(super) fn keepable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        if self.read_grew || self.read.capacity() > READ_SIZE {
            self.read = BytesMut::new();
            self.read_grew = false;
        }
        self.read_size = READ_SIZE;
        if self.write.capacity() > MAX_KEPT_WRITE {
            self.write = Vec::new();
        }
        true
    }

    /// Whether a kept connection can carry a request: the origin has not
    /// closed it (nor sent anything unasked). Looks without waiting: a
    /// socket with nothing to read costs no system call here, as its last
    /// read came back short.
    pub(super) fn still_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }
}

/// Why writing a request or reading its answer's head stopped.
pub(super) enum Failure {
    /// The client's body failed (or was refused by the key's model gate).
    Body(BodyError),
    /// The connection failed, or the origin's answer is not HTTP.
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// A request on its way out, and its answer's head on its way in.
pub(super) struct Outgoing {
    // `None` once it has ended.
    pub(super) body: Option<RequestBody>,
    sending: Sending,
    head_request: bool,
    // How far into the connection's `write` has gone out.
    written: usize,
    // A piece of the body, then the end of its chunk, after `write`.
    data: Bytes,
    tail: &'static [u8],
    // Body bytes taken so far (checked against a declared length).
    taken: u64,
    body_done: bool,
    // Everything has gone out (and been flushed).
    pub(super) sent: bool,
    // Writing failed (the origin may have answered early and closed): the
    // answer is still read; the connection is not kept.
    pub(super) broken: Option<io::Error>,
    pub(super) body_polled: bool,
    pub(super) wrote_nothing: bool,
    // Writes that took bytes, so far (the upload's progress).
    pub(super) writes: u64,
    pub(super) heard_nothing: bool,
}

impl Outgoing {
    pub(super) fn start(
        conn: &mut Conn,
        method: &Method,
        target: &str,
        headers: &http::HeaderMap,
        body: RequestBody,
    ) -> Self {
        let shape = if body.is_end_stream() {
            BodyShape::Ended
        } else {
            body.size_hint()
                .exact()
                .map_or(BodyShape::Unknown, BodyShape::Exact)
        };
        conn.write.clear();
        let sending = h1::write_head(method, target, headers, shape, &mut conn.write);
        Self {
            body_done: sending == Sending::Nothing,
            sent: false,
            broken: None,
            body: Some(body),
            sending,
            head_request: method == Method::HEAD,
            written: 0,
            data: Bytes::new(),
            tail: &[],
            taken: 0,
            body_polled: false,
            wrote_nothing: true,
            writes: 0,
            heard_nothing: true,
        }
    }

    fn nothing_pending(&self, conn: &Conn) -> bool {
        self.written == conn.write.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Writes what it can of the request, then reads the answer's head
    /// (even before the request has all gone out: an origin may answer
    /// early, and close before reading the rest — its answer still
    /// stands).
    pub(super) fn poll(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Head, Failure>> {
        if !self.sent && self.broken.is_none() {
            match self.poll_write(conn, cx) {
                Poll::Ready(Err(Failure::Io(error))) => self.broken = Some(error),
                Poll::Ready(Err(failure)) => return Poll::Ready(Err(failure)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            if let Some(head) = h1::read_head(&mut conn.read, self.head_request)? {
                return Poll::Ready(Ok(head));
            }
            let read = match ready!(conn.poll_fill(cx)) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the origin closed the connection before answering",
                )),
                read => read,
            };
            if let Err(error) = read {
                // Why writing stopped says more than what reading met then.
                return Poll::Ready(Err(Failure::Io(self.broken.take().unwrap_or(error))));
            }
            self.heard_nothing = false;
        }
    }

    /// Writes the head and the body, the body's pieces as they come; ready
    /// once everything has gone out.
    pub(super) fn poll_write(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Failure>> {
        loop {
            // The next piece is taken once everything before it has gone,
            // and before writing, so a head and a body ready with it go out
            // in one write.
            if !self.body_done && self.data.is_empty() && self.tail.is_empty() {
                if let Some(body) = self.body.as_mut() {
                    self.body_polled = true;
                    match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                self.stage(conn, data)?;
                            }
                            continue;
                        }
                        Poll::Ready(None) => self.finish(conn)?,
                        Poll::Ready(Some(Err(error))) => {
                            return Poll::Ready(Err(Failure::Body(error)))
                        }
                        Poll::Pending if self.nothing_pending(conn) => {
                            // What went out so far reaches the origin while
                            // the client's next piece is awaited.
                            ready!(Pin::new(&mut conn.stream).poll_flush(cx))?;
                            return Poll::Pending;
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if self.nothing_pending(conn) {
                // A TLS stream may still hold the last record (the socket
                // was full): out before the request counts as sent.
                ready!(Pin::new(&mut conn.stream).poll_flush(cx))?;
                conn.write.clear();
                self.written = 0;
                self.sent = self.body_done;
                return Poll::Ready(Ok(()));
            }
            // Only the parts with bytes (a TLS stream gathers several
            // slices into a list it allocates).
            let parts = [&conn.write[self.written..], &self.data[..], self.tail];
            let mut slices = [IoSlice::new(&[]); 3];
            let mut count = 0;
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                slices[count] = IoSlice::new(part);
                count += 1;
            }
            let mut n = if count == 1 {
                ready!(Pin::new(&mut conn.stream).poll_write(cx, &slices[0]))?
            } else {
                ready!(Pin::new(&mut conn.stream).poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.wrote_nothing = false;
            self.writes += 1;
            let head = n.min(conn.write.len() - self.written);
            self.written += head;
            n -= head;
            let data = n.min(self.data.len());
            self.data.advance(data);
            n -= data;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
    }

    /// Puts a piece of the body in line.
    fn stage(&mut self, conn: &mut Conn, data: Bytes) -> Result<(), Failure> {
        if data.is_empty() {
            return Ok(());
        }
        self.taken += data.len() as u64;
        match self.sending {
            Sending::Length(length) if self.taken > length => {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the request body is longer than its Content-Length",
                )))
            }
            Sending::Chunked => {
                self.reuse_write(conn);
                h1::chunk_start(data.len(), &mut conn.write);
                self.tail = h1::CHUNK_END;
            }
            _ => {}
        }
        self.data = data;
        Ok(())
    }

    /// Starts `write` afresh when all of it has gone out, so that an
    /// upload's chunk-size lines do not pile up in it.
    fn reuse_write(&mut self, conn: &mut Conn) {
        if self.written == conn.write.len() {
            conn.write.clear();
            self.written = 0;
        }
    }

    /// The body has ended.
    fn finish(&mut self, conn: &mut Conn) -> Result<(), Failure> {
        match self.sending {
            Sending::Length(length) if self.taken != length => {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the request body is shorter than its Content-Length",
                )))
            }
            Sending::Chunked => {
                self.reuse_write(conn);
                conn.write.extend_from_slice(h1::LAST_CHUNK);
            }
            _ => {}
        }
        self.body_done = true;
        self.body = None;
        Ok(())
    }
}

/// A connection's socket: plain TCP, or TLS over it.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
