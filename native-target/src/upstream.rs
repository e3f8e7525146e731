//! Connections to the origins: HTTP/1.1 over TCP or TLS, kept alive in a
//! pool per server thread, each driven inside the task of the request using
//! it.
//!
//! The task serving the client writes the request and reads the answer
//! itself: its head in [`Upstream::send`], its body in [`Driven`], framed by
//! [`crate::h1`]. No connection task, no channel, no buffer that is not the
//! connection's own: hyper's client (even driven in place, as it was until
//! stop 22) handed each request through a channel whose blocks took 14 KiB
//! per connection and a second 8 KiB read buffer per answer. When the body
//! has ended the connection goes back to the pool; when the body is dropped
//! before its end (the client left) the connection is dropped with it, and
//! the origin sees it close.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use ollama_proxy_core::{IdlePool, Origin};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::{BodyError, RequestBody};
use crate::h1::{self, BodyShape, Decoded, Decoder, Head, Sending};

/// Idle connections kept per origin and server thread: enough warm ones
/// for 128 concurrent requests per thread (a cap of 32 cost 40 % of req/s
/// at 256 client connections in the bench, every request past it opening
/// a connection).
const MAX_IDLE_PER_ORIGIN: usize = 128;

/// How long an unused connection is kept. After a burst (a thousand
/// streams) the connections and their buffers are let go within this and
/// one sweep.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(30);

/// How often idle connections are looked at when no request comes.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

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

/// One server thread's connections to the origins.
pub(crate) struct Upstream {
    tls: TlsConnector,
    connect_timeout: Duration,
    epoch: Instant,
    // Boxed: a connection travels with every request using it (into the
    // answer's body, back to the pool).
    idle: Mutex<IdlePool<Key, Box<Conn>>>,
}

/// Which origin a connection goes to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key {
    tls: bool,
    authority: Authority,
}

/// A connection to an origin, between requests or serving one.
struct Conn {
    stream: Stream,
    // What has been read and not yet taken (an answer's head, its body).
    read: BytesMut,
    // How much the next renewal of `read` asks for.
    read_size: usize,
    // A request's head and chunk framing on their way out.
    write: Vec<u8>,
}

impl Conn {
    fn new(stream: Stream) -> Box<Self> {
        Box::new(Self {
            stream,
            read: BytesMut::new(),
            read_size: READ_SIZE,
            write: Vec::new(),
        })
    }

    /// Reads what the origin sent: how many bytes, 0 at the connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < MIN_ROOM {
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

    /// Whether a kept connection can carry a request: the origin has not
    /// closed it (nor sent anything unasked). Looks without waiting: a
    /// socket with nothing to read costs no system call here, as its last
    /// read came back short.
    fn still_open(&mut self) -> bool {
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

/// Why an origin request failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection: refused, unreachable, timed out, or TLS failed.
    Connect(io::Error),
    /// Connected, but the connection failed before the request went out.
    Unsent(io::Error),
    /// The request went out (or part of it), then the exchange failed: the
    /// connection, the origin's answer, or the client's body.
    Sent(Box<dyn std::error::Error + Send + Sync>),
    /// No answer's head within the response timeout.
    TimedOut,
}

impl UpstreamError {
    /// Nothing of the request reached the origin: another box may be tried.
    pub(crate) fn before_sent(&self) -> bool {
        !matches!(self, Self::Sent(_) | Self::TimedOut)
    }

    /// The answer's head did not come in time.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut)
    }

    /// No connection could be made.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect(_) => "cannot connect to the origin",
            Self::Unsent(_) => "the origin closed the connection before the request was sent",
            Self::Sent(_) => "the origin request failed",
            Self::TimedOut => "the origin did not answer in time",
        })
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(error) | Self::Unsent(error) => Some(error),
            Self::Sent(error) => Some(&**error),
            Self::TimedOut => None,
        }
    }
}

impl Upstream {
    /// # Errors
    /// When an origin is https and no system trust roots can be loaded.
    pub(crate) fn new(origins: &[Origin], connect_timeout: Duration) -> io::Result<Self> {
        let tls = TlsConnector::from(Arc::new(crate::client::tls_config(origins)?));
        Ok(Self {
            tls,
            connect_timeout,
            epoch: Instant::now(),
            idle: Mutex::new(IdlePool::new(
                MAX_IDLE_PER_ORIGIN,
                u64::try_from(MAX_IDLE.as_micros()).unwrap_or(u64::MAX),
            )),
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Sends a request (its URI absolute, as the core aims it) on a kept
    /// connection to its origin, or a new one; returns the answer once its
    /// head has arrived, or [`UpstreamError::TimedOut`] if that takes longer
    /// than `timeout` (connecting included). A kept connection the origin
    /// had closed meanwhile is noticed before anything is sent, and a new
    /// one is made; so is one that fails before any of the request went out
    /// or, for a request without a body that may be repeated (`GET`, `HEAD`,
    /// `OPTIONS`), before any of the answer came.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<Driven>, UpstreamError> {
        // Timed here rather than by a wrapper around this future: a wrapper
        // costs a move of the whole future and a poll layer per request.
        let deadline = tokio::time::Instant::now() + timeout;
        let (parts, body) = request.into_parts();
        let key = Key {
            tls: parts.uri.scheme() == Some(&Scheme::HTTPS),
            authority: parts
                .uri
                .authority()
                .cloned()
                .ok_or_else(|| UpstreamError::Connect(io::ErrorKind::InvalidInput.into()))?,
        };
        // On the wire: the path and query only (Host is already set).
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut body = body;
        loop {
            let kept = self.take(&key);
            let reused = kept.is_some();
            let mut conn = match kept {
                Some(conn) => conn,
                // Boxed: a rare path whose future (a TLS handshake's
                // state) would otherwise make every request's future, and
                // each move of it, several KiB larger.
                None => Box::pin(tokio::time::timeout_at(deadline, self.connect(&key)))
                    .await
                    .map_err(|_elapsed| UpstreamError::TimedOut)??,
            };
            let mut out = Outgoing::start(&mut conn, &parts.method, target, &parts.headers, body);
            let mut late = pin!(tokio::time::sleep_until(deadline));
            let answer = poll_fn(|cx| match out.poll(&mut conn, cx) {
                Poll::Ready(answer) => Poll::Ready(Some(answer)),
                Poll::Pending => late.as_mut().poll(cx).map(|()| None),
            })
            .await;
            let Some(answer) = answer else {
                return Err(UpstreamError::TimedOut);
            };
            match answer {
                Ok(Head {
                    response,
                    body: decoder,
                    keep_alive,
                }) => {
                    // An answer may come before the whole request went out
                    // (an echo, an early error): the rest goes out while the
                    // answer's body is read.
                    let writing = !(out.body_done && out.nothing_pending(&conn));
                    return Ok(response.map(|()| Driven {
                        conn: Some(conn),
                        body: decoder,
                        writing: writing.then(|| Box::new(out)),
                        reusable: keep_alive,
                        home: Some((Arc::clone(self), key)),
                    }));
                }
                Err(Failure::Body(error)) => return Err(UpstreamError::Sent(Box::new(error))),
                Err(Failure::Io(error)) => {
                    let repeatable = out.wrote_nothing
                        || (matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
                            && out.heard_nothing);
                    match out.body.take() {
                        Some(unpolled) if reused && repeatable && !out.body_polled => {
                            body = unpolled;
                        }
                        _ if out.wrote_nothing => return Err(UpstreamError::Unsent(error)),
                        _ => return Err(UpstreamError::Sent(Box::new(error))),
                    }
                }
            }
        }
    }

    fn take(&self, key: &Key) -> Option<Box<Conn>> {
        let now = self.now_us();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut conn) = idle.take(key, now) {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, key: Key, conn: Box<Conn>) {
        let now = self.now_us();
        let gone = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(key, conn, now);
        drop(gone);
    }

    /// An exchange ended without giving its connection back: the sweeps
    /// count it as work (its buffers were freed).
    fn ended(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ended();
    }

    /// Closes the connections idle for too long; whether the load has
    /// passed and freed memory should go back to the system.
    pub(crate) fn sweep(&self) -> bool {
        let now = self.now_us();
        let swept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sweep(now);
        drop(swept.closed);
        swept.release_memory
    }

    async fn connect(&self, key: &Key) -> Result<Box<Conn>, UpstreamError> {
        let host = key.authority.host();
        // An IPv6 literal comes bracketed.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = key
            .authority
            .port_u16()
            .unwrap_or(if key.tls { 443 } else { 80 });
        let connecting = async {
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            if !key.tls {
                return Ok(Stream::Plain(tcp));
            }
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Ok(Stream::Tls(Box::new(self.tls.connect(name, tcp).await?)))
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => Ok(Conn::new(stream)),
            Ok(Err(error)) => Err(UpstreamError::Connect(error)),
            Err(_elapsed) => Err(UpstreamError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }
}

/// Why writing a request or reading its answer's head stopped.
enum Failure {
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
struct Outgoing {
    // `None` once it has ended.
    body: Option<RequestBody>,
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
    body_polled: bool,
    wrote_nothing: bool,
    heard_nothing: bool,
}

impl Outgoing {
    fn start(
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
            body: Some(body),
            sending,
            head_request: method == Method::HEAD,
            written: 0,
            data: Bytes::new(),
            tail: &[],
            taken: 0,
            body_polled: false,
            wrote_nothing: true,
            heard_nothing: true,
        }
    }

    fn nothing_pending(&self, conn: &Conn) -> bool {
        self.written == conn.write.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Writes what it can of the request, then reads the answer's head
    /// (even before the request has all gone out: an origin may answer
    /// early).
    fn poll(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<Head, Failure>> {
        if !(self.body_done && self.nothing_pending(conn)) {
            if let Poll::Ready(Err(failure)) = self.poll_write(conn, cx) {
                return Poll::Ready(Err(failure));
            }
        }
        loop {
            if let Some(head) = h1::read_head(&mut conn.read, self.head_request)? {
                return Poll::Ready(Ok(head));
            }
            if ready!(conn.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the origin closed the connection before answering",
                ))));
            }
            self.heard_nothing = false;
        }
    }

    /// Writes the head and the body, the body's pieces as they come.
    fn poll_write(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
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
                        Poll::Pending if self.nothing_pending(conn) => return Poll::Pending,
                        Poll::Pending => {}
                    }
                }
            }
            if self.nothing_pending(conn) {
                conn.write.clear();
                self.written = 0;
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
            let mut n =
                ready!(Pin::new(&mut conn.stream).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.wrote_nothing = false;
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
                h1::chunk_start(data.len(), &mut conn.write);
                self.tail = h1::CHUNK_END;
            }
            _ => {}
        }
        self.data = data;
        Ok(())
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
            Sending::Chunked => conn.write.extend_from_slice(h1::LAST_CHUNK),
            _ => {}
        }
        self.body_done = true;
        self.body = None;
        Ok(())
    }
}

/// An origin's answer body, read from its connection as the client takes
/// it; the connection goes back to the pool at its end.
pub(crate) struct Driven {
    // `None` once it has gone (back to the pool, or closed).
    conn: Option<Box<Conn>>,
    body: Decoder,
    // The rest of a request still going out (boxed: most requests have
    // gone whole before their answer comes).
    writing: Option<Box<Outgoing>>,
    reusable: bool,
    home: Option<(Arc<Upstream>, Key)>,
}

impl Driven {
    /// The body has ended: the connection goes back to the pool if it can
    /// take another request.
    fn release(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // A connection kept idle keeps no more than a usual answer's
        // buffers (a large download grew its reads).
        if conn.read.capacity() > READ_SIZE || conn.write.capacity() > MAX_KEPT_WRITE {
            conn.read = BytesMut::new();
            conn.read_size = READ_SIZE;
            conn.write = Vec::new();
        }
        // Not while the request is still going out; not with bytes past
        // the answer's end (the origin is not speaking HTTP).
        if self.reusable && self.writing.is_none() && conn.read.is_empty() {
            if let Some((upstream, key)) = self.home.take() {
                upstream.put(key, conn);
            }
        }
    }
}

impl Drop for Driven {
    /// A body the server never reads to its end because it has none (the
    /// answer to a HEAD, a 204 or 304, a length of 0) still gives its
    /// connection back; one dropped mid-way closes it, which the origin
    /// sees as the request going away.
    fn drop(&mut self) {
        if self.body.is_done() {
            self.release();
        }
        // Not given back (cut short, or not reusable): the pool still hears
        // that an exchange ended, so a quiet spell after it gives the freed
        // memory back.
        if let Some((upstream, _)) = self.home.take() {
            upstream.ended();
        }
    }
}

impl Body for Driven {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(out) = this.writing.as_mut() {
                match out.poll_write(conn, cx) {
                    Poll::Ready(Ok(())) => this.writing = None,
                    // The origin stopped reading: its answer still stands,
                    // the connection is not kept.
                    Poll::Ready(Err(Failure::Io(_))) => {
                        this.writing = None;
                        this.reusable = false;
                    }
                    // The client's body failed: the exchange is cut, as the
                    // origin sees a request that never ended.
                    Poll::Ready(Err(Failure::Body(error))) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(io::Error::other(error))));
                    }
                    Poll::Pending => {}
                }
            }
            match this.body.decode(&mut conn.read) {
                Ok(Decoded::Data(data)) => {
                    // A body of known length may not be polled past its
                    // last bytes: that is its end too.
                    if this.body.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::Need) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    // Closed: the end of a body that runs to it, else cut.
                    this.conn = None;
                    return Poll::Ready(this.body.closed().err().map(Err));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .remaining()
            .map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

/// A connection's socket: plain TCP, or TLS over it.
enum Stream {
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
