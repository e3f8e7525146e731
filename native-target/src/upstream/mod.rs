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

mod conn;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use ollama_proxy_core::{IdlePool, Origin};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::{ClientBodyFailed, RequestBody};
use crate::h1::{Decoded, Decoder, Head};
use conn::{Conn, Failure, Outgoing, Stream};

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
    /// than `timeout` (connecting included; while a body is still going
    /// out, counted from its last write). A kept connection the origin
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
            let mut first = true;
            let answer = poll_fn(|cx| {
                let (uploading, writes) = (!out.sent, out.writes);
                let polled = out.poll(&mut conn, cx);
                // A body still going out that made progress: the wait for
                // the answer counts from its last write, so a slow upload
                // is not cut (the client's own pauses have the idle
                // timeout). Not on the first poll: most requests go out
                // whole in it, with no clock read or timer move for this.
                if uploading && out.writes != writes && !first {
                    late.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                first = false;
                match polled {
                    Poll::Ready(answer) => Poll::Ready(Some(answer)),
                    Poll::Pending => late.as_mut().poll(cx).map(|()| None),
                }
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
                    // answer's body is read — unless writing failed already
                    // (the origin closed after answering early).
                    let broken = out.broken.is_some();
                    return Ok(response.map(|()| Driven {
                        conn: Some(conn),
                        body: decoder,
                        writing: (!out.sent && !broken).then(|| Box::new(out)),
                        reusable: keep_alive && !broken,
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
        // Not while the request is still going out.
        if self.reusable && self.writing.is_none() && conn.keepable() {
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
                    // origin sees a request that never ended — the client's
                    // failure, told apart from the origin's.
                    Poll::Ready(Err(Failure::Body(error))) => {
                        this.conn = None;
                        let failed = ClientBodyFailed(error);
                        return Poll::Ready(Some(Err(io::Error::other(failed))));
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
