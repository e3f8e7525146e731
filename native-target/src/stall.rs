//! A client connection that stops taking its answer. Backpressure runs from
//! the client's socket to the origin's: a client that reads the head and
//! then nothing more would hold its connection, the origin's request (a
//! generation paused mid-answer) and its GPU slot for as long as it liked.
//! [`WriteStall`] sits under the HTTP server (and under TLS) and fails a
//! write that has waited `IDLE_TIMEOUT` while the client took none of what
//! the kernel holds for it — the longest pause between body chunks, now in
//! this direction too — so the connection ends and everything it held is
//! given back. What counts is bytes the client takes (the socket's unsent
//! queue shrinking), not writes that go through: the kernel reports a full
//! socket writable again only once a third of its buffer (megabytes) has
//! drained, which a slow but steady reader may take longer than the limit
//! to do. Writes that go through touch no timer.
//!
//! An HTTP/2 client reads the socket whatever its application does, and
//! holds an answer back by flow control instead: see `h2_stall.rs`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A socket that can say how many bytes it still holds for its peer.
pub(crate) trait Unsent {
    /// Bytes written but not yet taken (acknowledged) by the peer, if known.
    fn unsent(&self) -> Option<u64>;

    /// What it holds for a peer that takes nothing is dropped when it
    /// closes (a reset), instead of being kept by the kernel for minutes.
    fn abandon(&self) {}
}

impl Unsent for tokio::net::TcpStream {
    fn abandon(&self) {
        let _ = self.set_zero_linger();
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn unsent(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        unsafe extern "C" {
            fn ioctl(fd: std::ffi::c_int, request: std::ffi::c_ulong, ...) -> std::ffi::c_int;
        }
        /// `SIOCOUTQ` (= `TIOCOUTQ`): a TCP socket's unsent and
        /// unacknowledged bytes.
        const SIOCOUTQ: std::ffi::c_ulong = 0x5411;
        let mut queued: std::ffi::c_int = 0;
        // SAFETY: the descriptor is this open socket's; the call writes one
        // `int` through the pointer, which lives across it.
        let done = unsafe {
            ioctl(
                self.as_raw_fd(),
                SIOCOUTQ,
                &mut queued as *mut std::ffi::c_int,
            )
        };
        (done == 0).then(|| u64::try_from(queued).unwrap_or(0))
    }

    #[cfg(not(target_os = "linux"))]
    fn unsent(&self) -> Option<u64> {
        None
    }
}

/// See the module docs.
pub(crate) struct WriteStall<S> {
    inner: S,
    limit: Duration,
    /// The timer, kept once made: re-armed, not re-made, at each stall.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current stall.
    armed: bool,
    /// What the socket held for the client when the timer was last armed.
    unsent: Option<u64>,
}

impl<S> WriteStall<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            armed: false,
            unsent: None,
        }
    }

    /// The socket took nothing: waits, or fails once the client has taken
    /// nothing for the limit.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>>
    where
        S: Unsent,
    {
        if !self.armed {
            self.arm();
            self.armed = true;
        }
        loop {
            let timer = self.timer.as_mut().expect("armed above");
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let unsent = self.inner.unsent();
            let took = matches!((unsent, self.unsent), (Some(now), Some(then)) if now < then);
            if !took {
                self.inner.abandon();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took nothing of its answer for IDLE_TIMEOUT",
                )));
            }
            // The client is reading, slowly: another period from now.
            self.arm();
        }
    }

    fn arm(&mut self)
    where
        S: Unsent,
    {
        let deadline = Instant::now() + self.limit;
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.unsent = self.inner.unsent();
    }

    fn went<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>>
    where
        S: Unsent,
    {
        match poll {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin + Unsent> AsyncWrite for WriteStall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.went(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.went(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.went(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.went(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An in-memory pipe says nothing of its peer: a write that waits
    /// counts as the client taking nothing.
    impl Unsent for tokio::io::DuplexStream {
        fn unsent(&self) -> Option<u64> {
            None
        }
    }

    const LIMIT: Duration = Duration::from_secs(300);

    /// Virtual time: a reader that takes a little within each limit is
    /// never cut; once it takes nothing for the limit, the write fails.
    #[tokio::test(start_paused = true)]
    async fn a_write_fails_only_after_the_limit_without_progress() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut near = WriteStall::new(near, LIMIT);
        let started = Instant::now();
        let pause = LIMIT - Duration::from_secs(1);
        // 16 bytes every 299 s, 64 in all; then it keeps the socket open
        // and takes nothing.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 64 {
                tokio::time::sleep(pause).await;
                let n = far.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            (got, far)
        });
        let error = near.write_all(&[7u8; 96]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        let last_taken = pause * 4;
        assert!(
            waited >= last_taken + LIMIT && waited < last_taken + LIMIT + Duration::from_secs(1),
            "{waited:?}"
        );
        let (got, _far) = reader.await.unwrap();
        assert_eq!(got.len(), 64);
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_says_what_happened() {
        let (near, _far) = tokio::io::duplex(4);
        let mut near = WriteStall::new(near, LIMIT);
        let started = Instant::now();
        let error = near.write_all(&[1u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), LIMIT);
    }
}
