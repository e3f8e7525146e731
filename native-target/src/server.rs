//! Accepting connections (HTTP/1.1 and HTTP/2) and draining them on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::client;
use crate::h2_stall::{StallExecutor, Watched};
use crate::handler::{handle, Shared};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::stall::WriteStall;
use crate::upstream::{self, Upstream};

/// The largest request head (request line and headers) hyper reads, in
/// bytes; past it hyper answers a bare 431 itself. It is above the core's
/// limits (8 KiB target, 64 KiB of headers), so requests between those and
/// this get the core's JSON error, as in the Worker.
const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Everything the server needs besides its listener.
#[derive(Debug)]
pub struct Settings {
    /// The core, with its validated configuration (replaced on a reload of
    /// the keys document).
    pub proxy: Live,
    /// The metrics every request records (served by [`Admin`](crate::admin::Admin)).
    pub metrics: Arc<Metrics>,
    /// The doorman every runtime asks before a limited request goes on.
    pub turns: Arc<crate::turns::Turns>,
    /// What is known of the Ollama boxes (with several).
    pub pool: Arc<crate::backends::Pool>,
    /// HTTPS on the public listener (`TLS_CERT_FILE`, `TLS_KEY_FILE`).
    pub tls: Option<crate::tls::Tls>,
    /// Time allowed to connect to the origin.
    pub connect_timeout: Duration,
    /// Time allowed for the origin's response head.
    pub response_timeout: Duration,
    /// Longest pause between body chunks, either direction.
    pub idle_timeout: Duration,
    /// Time allowed for a client to send a request head.
    pub header_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

/// Serves the proxy on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight exchanges finish for the grace period, and
/// returns.
///
/// The work runs on one single-threaded runtime per core, each accepting
/// from the same listener and holding its own origin connection pool, so a
/// request is handled start to finish on one thread: no wake-ups across
/// threads (the bench showed those to be the largest cost per request).
///
/// # Errors
/// When the origin client cannot be built (an https origin and no system
/// trust roots), or a server thread cannot start.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let proxy = settings.proxy.load();
    let config = proxy.config();
    // Fail before reporting ready when the client cannot be built.
    client::tls_config(config.origins()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot load trusted root certificates for the https origin: {e}"),
        )
    })?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let keys: Vec<&str> = config.key_names().map(|k| k.as_str()).collect();
    let origins: Vec<String> = config.origins().iter().map(ToString::to_string).collect();
    tracing::info!(
        listen = %listener.local_addr()?,
        scheme = if settings.tls.is_some() { "https" } else { "http" },
        origin = %origins.join(","),
        keys = %keys.join(","),
        threads,
        "ollama-proxy {} ready",
        env!("CARGO_PKG_VERSION")
    );

    drop(proxy);
    // With several boxes, their probes run here until the server stops.
    let probes = tokio::spawn(
        Arc::clone(&settings.pool).probe_forever(settings.proxy.clone(), settings.connect_timeout),
    );
    let _probes = AbortOnDrop(probes);
    let listeners = thread_listeners(listener, threads)?;
    let settings = Arc::new(settings);
    let (stop, stopped) = watch::channel(false);
    // Each thread reports here once its listening socket is closed.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<()>(threads);
    let mut finished: Vec<oneshot::Receiver<io::Result<usize>>> = Vec::with_capacity(threads);
    for (index, listener) in listeners.into_iter().enumerate() {
        let settings = Arc::clone(&settings);
        let stopped = stopped.clone();
        let closed = closed_tx.clone();
        let (done, finished_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("ollama-proxy-{index}"))
            .spawn(move || {
                // Log lines wait for the thread to run out of work.
                crate::log_sink::batch_this_thread();
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(crate::log_sink::flush_this_thread)
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(serve_thread(listener, &settings, stopped, closed))
                    });
                crate::log_sink::flush_this_thread();
                let _ = done.send(result);
            })?;
        finished.push(finished_rx);
    }

    // Every thread runs until told to stop; one that ends before that has
    // failed, and the server must not carry on short-handed.
    let mut threads = JoinSet::new();
    for thread in finished {
        threads.spawn(async move {
            thread
                .await
                .unwrap_or_else(|_| Err(io::Error::other("a server thread panicked")))
        });
    }
    let early = tokio::select! {
        () = shutdown => None,
        Some(ended) = threads.join_next() => Some(ended),
    };
    let _ = stop.send(true);
    if let Some(ended) = early {
        while threads.join_next().await.is_some() {}
        let error = match ended {
            Ok(Err(error)) => error,
            _ => io::Error::other("a server thread stopped unexpectedly"),
        };
        tracing::error!(%error, "server thread failed; stopping");
        return Err(error);
    }
    drop(closed_tx);
    // Ends when every thread has reported (or ended, dropping its sender).
    while closed_rx.recv().await.is_some() {}
    tracing::info!(
        grace_s = settings.shutdown_grace.as_secs_f64(),
        "shutting down: no longer accepting, draining connections"
    );
    let mut result = Ok(());
    let mut cut = 0;
    while let Some(ended) = threads.join_next().await {
        match ended {
            Ok(Ok(thread_cut)) => cut += thread_cut,
            Ok(Err(error)) => result = Err(error),
            Err(_) => {}
        }
    }
    if cut == 0 {
        tracing::info!("stopped: every connection drained");
    } else {
        tracing::warn!(
            cut,
            "stopped: {cut} connection(s) still busy after the grace period were cut"
        );
    }
    result
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds a listening socket with `SO_REUSEPORT`, so that one socket per
/// thread can share the address and the kernel spreads connections evenly
/// between them. [`serve`] binds its extra per-thread sockets this way; a
/// first listener bound with this function lets it.
///
/// A live listener on the address (another `ollama-proxy`, which would
/// otherwise share it silently) is refused first: a socket without
/// `SO_REUSEPORT` cannot bind while one listens there.
///
/// # Errors
/// When the address cannot be bound; [`io::ErrorKind::AddrInUse`] when
/// something already listens on it.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.port() != 0 {
        let probe = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Connections of an earlier run still in TIME_WAIT do not count.
        probe.set_reuseaddr(true)?;
        probe.bind(addr)?;
    }
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// One listener per thread: a socket of its own when the address can be
/// shared (`SO_REUSEPORT`, see [`bind`]), else a handle on the same socket.
fn thread_listeners(
    listener: TcpListener,
    threads: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    let addr = listener.local_addr()?;
    let first = listener.into_std()?;
    let mut listeners = Vec::with_capacity(threads);
    for _ in 1..threads {
        #[cfg(unix)]
        let own = {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket
                .bind(addr)
                .and_then(|()| socket.listen(1024))
                .and_then(TcpListener::into_std)
        };
        #[cfg(not(unix))]
        let own: io::Result<std::net::TcpListener> = Err(io::ErrorKind::Unsupported.into());
        listeners.push(match own {
            Ok(own) => own,
            Err(_) => first.try_clone()?,
        });
    }
    listeners.insert(0, first);
    Ok(listeners)
}

/// One thread's accept loop and drain. Returns how many connections were
/// still busy when the grace period ended, and so were cut.
async fn serve_thread(
    listener: std::net::TcpListener,
    settings: &Settings,
    mut stopped: watch::Receiver<bool>,
    closed: tokio::sync::mpsc::Sender<()>,
) -> io::Result<usize> {
    let listener = TcpListener::from_std(listener)?;
    let upstream = Arc::new(Upstream::new(
        settings.proxy.load().config().origins(),
        settings.connect_timeout,
    )?);
    // Connections left idle by a burst close even when no request comes,
    // and what the burst freed goes back to the system.
    let sweeper = tokio::spawn({
        let upstream = Arc::clone(&upstream);
        async move {
            let mut every = tokio::time::interval(upstream::SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if upstream.sweep() {
                    crate::memory::release_free();
                }
            }
        }
    });
    let shared = Arc::new(Shared {
        proxy: settings.proxy.clone(),
        metrics: Arc::clone(&settings.metrics),
        turns: Arc::clone(&settings.turns),
        pool: Arc::clone(&settings.pool),
        upstream,
        response_timeout: settings.response_timeout,
        idle_timeout: settings.idle_timeout,
    });
    // HTTP/2 streams run as tasks of their own, watched for a client that
    // holds its answer back by flow control (see h2_stall.rs).
    let mut builder = auto::Builder::new(StallExecutor {
        limit: settings.idle_timeout,
    });
    // An answer's head and body go out as one slice, copied together into
    // hyper's write buffer (at most MAX_HEAD_BYTES of it), not as a list of
    // slices: one `write` costs the kernel less than a `writev` of two or
    // three (CPU per small request −3 %, 12 alternating rounds; large
    // downloads no slower), and over TLS rustls copies them into a record
    // anyway and would gather a list into an allocation per write.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .writev(false);
    builder.http2().timer(TokioTimer::new());

    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    // Stops on the signal, or when `serve` itself is dropped.
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Under TLS too: a client that stops taking its answer is
                // cut after IDLE_TIMEOUT (see stall.rs).
                let stream = WriteStall::new(stream, settings.idle_timeout);
                let shared = Arc::clone(&shared);
                let service = service_fn(move |req| {
                    let answer = handle(Arc::clone(&shared), req);
                    async move { Ok::<_, Infallible>(answer.await?.map(Watched::new)) }
                });
                let Some(tls) = &settings.tls else {
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    connections.spawn(async move {
                        if let Err(error) = conn.await {
                            tracing::debug!(error = %error, "connection ended with an error");
                        }
                    });
                    continue;
                };
                // The handshake runs in the connection's own task, bounded
                // like a request head; a failed one just closes it.
                let acceptor = tls.acceptor().clone();
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let limit = settings.header_timeout;
                let metrics = Arc::clone(&settings.metrics);
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            metrics.tls_handshake("ok");
                            stream
                        }
                        Ok(Err(error)) => {
                            metrics.tls_handshake(crate::tls::Tls::failure_kind(&error));
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.tls_handshake("timeout");
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(error) = watcher.watch(conn).await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = closed.send(()).await;
    drop(closed);
    let cut = tokio::select! {
        () = graceful.shutdown() => 0,
        () = tokio::time::sleep(settings.shutdown_grace) => {
            // Reap the ones that did finish; the rest are cut.
            while connections.try_join_next().is_some() {}
            connections.len()
        }
    };
    connections.shutdown().await;
    sweeper.abort();
    Ok(cut)
}
