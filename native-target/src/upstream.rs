//! Connections to the origins: HTTP/1.1 over TCP or TLS, kept alive in a
//! pool per server thread, each driven inside the task of the request using
//! it.
//!
//! hyper's pooled client runs every connection in a task of its own and
//! hands it each request over a channel, so a small request woke two tasks
//! and crossed a channel both ways. Here the task serving the client polls
//! the origin connection itself: while waiting for the answer's head
//! ([`Upstream::send`]), then while the answer's body is read ([`Driven`]).
//! When the body has ended the connection goes back to the pool; when the
//! body is dropped before its end (the client left) the connection is
//! dropped with it, and the origin sees it close.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ollama_proxy_core::{IdlePool, Origin};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::RequestBody;

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

/// One server thread's connections to the origins.
pub(crate) struct Upstream {
    tls: TlsConnector,
    connect_timeout: Duration,
    epoch: Instant,
    // Boxed: a connection's state (hyper's buffers and dispatcher) is
    // several hundred bytes, and it travels with every request using it
    // (into the answer's body, back to the pool).
    idle: Mutex<IdlePool<Key, Box<Conn>>>,
}

/// Which origin a connection goes to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key {
    tls: bool,
    authority: Authority,
}

struct Conn {
    send: http1::SendRequest<RequestBody>,
    // `None` once it has closed (dropped then: a request still queued on
    // it comes back to its sender).
    conn: Option<http1::Connection<TokioIo<Stream>, RequestBody>>,
}

impl Conn {
    /// Drives the connection (reads, writes, hands the answer over);
    /// whether it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "origin connection ended with an error");
                }
                self.conn = None;
                false
            }
        }
    }
}

/// Why an origin request failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection: refused, unreachable, timed out, or TLS failed.
    Connect(io::Error),
    /// Connected, but the connection closed before the request went out.
    Unsent(hyper::Error),
    /// The request went out (or may have), then the exchange failed.
    Sent(hyper::Error),
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
            Self::Connect(error) => Some(error),
            Self::Unsent(error) | Self::Sent(error) => Some(error),
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
    /// one is made.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<Driven>, UpstreamError> {
        // Timed here rather than by a wrapper around this future: a wrapper
        // costs a move of the whole future and a poll layer per request.
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut parts, body) = request.into_parts();
        let key = Key {
            tls: parts.uri.scheme() == Some(&Scheme::HTTPS),
            authority: parts
                .uri
                .authority()
                .cloned()
                .ok_or_else(|| UpstreamError::Connect(io::ErrorKind::InvalidInput.into()))?,
        };
        // On the wire: the path and query only (Host is already set).
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let mut request = Request::from_parts(parts, body);
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
            let mut sending = pin!(conn.send.try_send_request(request));
            let mut late = pin!(tokio::time::sleep_until(deadline));
            let answer = poll_fn(|cx| {
                conn.drive(cx);
                match sending.as_mut().poll(cx) {
                    Poll::Ready(answer) => Poll::Ready(Some(answer)),
                    Poll::Pending => late.as_mut().poll(cx).map(|()| None),
                }
            })
            .await;
            let Some(answer) = answer else {
                return Err(UpstreamError::TimedOut);
            };
            match answer {
                Ok(response) => {
                    return Ok(response.map(|body| Driven {
                        body,
                        conn: Some(conn),
                        home: Some((Arc::clone(self), key)),
                    }))
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    Some(_) => return Err(UpstreamError::Unsent(error.into_error())),
                    None => return Err(UpstreamError::Sent(error.into_error())),
                },
            }
        }
    }

    fn take(&self, key: &Key) -> Option<Box<Conn>> {
        let now = self.now_us();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(key, now)
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
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(UpstreamError::Connect(error)),
            Err(_elapsed) => {
                return Err(UpstreamError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out",
                )))
            }
        };
        // No I/O: the handshake only sets the connection up.
        let (send, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
        Ok(Box::new(Conn {
            send,
            conn: Some(conn),
        }))
    }
}

/// An origin's answer body, which drives its connection while it is read
/// and gives the connection back to the pool at its end.
pub(crate) struct Driven {
    body: Incoming,
    conn: Option<Box<Conn>>,
    home: Option<(Arc<Upstream>, Key)>,
}

impl Driven {
    /// The body has ended: the connection goes back to the pool if it can
    /// take another request (one poll lets it see its end and say so).
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if conn.drive(cx) && conn.send.is_ready() {
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
        if self.conn.is_some() && self.body.is_end_stream() {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut drove = false;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.release(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // A body of known length may not be polled past its
                    // last bytes: that is its end too.
                    if this.body.is_end_stream() {
                        this.release(cx);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(error) => return Poll::Ready(error),
                Poll::Pending if drove => return Poll::Pending,
                Poll::Pending => {}
            }
            // The body waits on its connection: drive it once, then look
            // again. (A connection that closed has told the body how.)
            drove = true;
            match this.conn.as_mut() {
                Some(conn) => {
                    conn.drive(cx);
                }
                None => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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
