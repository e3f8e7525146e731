//! A client connection that stops taking its answer. Backpressure runs from
//! the client's socket to the origin's: a client that reads the head and
//! then nothing more would hold its connection, the origin's request (a
//! generation paused mid-answer) and its GPU slot for as long as it liked.
//! [`WriteStall`] sits under the HTTP server (and under TLS) and fails a
//! write the socket has taken nothing of for `IDLE_TIMEOUT` — the longest
//! pause between body chunks, now in this direction too — so the
//! connection ends and everything it held is given back. A slow reader that
//! takes something within the limit is never cut, and writes that go
//! through touch no timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// See the module docs.
pub(crate) struct WriteStall<S> {
    inner: S,
    limit: Duration,
    /// The timer, kept once made: re-armed, not re-made, at each stall.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current stall.
    armed: bool,
}

impl<S> WriteStall<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The socket took nothing: waits, or fails once it has taken nothing
    /// for the limit.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of its answer for IDLE_TIMEOUT",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn went<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
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
