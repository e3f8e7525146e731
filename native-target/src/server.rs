//! Accepting connections (HTTP/1.1 and HTTP/2) and draining them on shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use ollama_proxy_core::Proxy;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::client;
use crate::handler::{handle, Shared};

/// Everything the server needs besides its listener.
#[derive(Debug)]
pub struct Settings {
    /// The core, with its validated configuration.
    pub proxy: Proxy,
    /// Time allowed to connect to the origin.
    pub connect_timeout: Duration,
    /// Time allowed for the origin's response head.
    pub response_timeout: Duration,
    /// Longest pause between body chunks, either direction.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

/// Serves the proxy on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight exchanges finish for the grace period, and
/// returns.
///
/// # Errors
/// When the origin client cannot be built (an https origin and no system
/// trust roots).
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let config = settings.proxy.config();
    let client = client::build(config.origin(), settings.connect_timeout).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot load trusted root certificates for the https origin: {e}"),
        )
    })?;
    let keys: Vec<&str> = config.key_names().map(|k| k.as_str()).collect();
    tracing::info!(
        listen = %listener.local_addr()?,
        origin = %config.origin(),
        keys = %keys.join(","),
        "ollama-proxy {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let shared = Arc::new(Shared {
        proxy: settings.proxy,
        client,
        response_timeout: settings.response_timeout,
        idle_timeout: settings.idle_timeout,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());

    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
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
                let shared = Arc::clone(&shared);
                let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(error = %error, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = connections.len();
    tracing::info!(
        open,
        grace_s = settings.shutdown_grace.as_secs_f64(),
        "shutting down: draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace) => {
            tracing::warn!(cut = connections.len(), "grace period over, closing remaining connections");
        }
    }
    connections.shutdown().await;
    Ok(())
}
