//! The origins' TLS settings, and the pooled client the probes use (the
//! requests themselves go through [`crate::upstream`]).

use std::io;
use std::time::Duration;

use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ollama_proxy_core::Origin;
use rustls::{ClientConfig, RootCertStore};

/// The TLS settings for the origins. Trust roots are the system's, loaded
/// only when an origin is https, so http origins work on a machine without
/// CA files.
///
/// # Errors
/// When an origin is https and no system trust roots can be loaded.
pub(crate) fn tls_config(origins: &[Origin]) -> io::Result<ClientConfig> {
    Ok(
        if origins
            .iter()
            .any(|o| o.scheme() == &http::uri::Scheme::HTTPS)
        {
            ClientConfig::builder()
                .with_native_roots()?
                .with_no_client_auth()
        } else {
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        },
    )
}

/// A pooled client for requests without a body (readiness checks and the
/// probes of several boxes: a few a second at most).
///
/// # Errors
/// When an origin is https and no system trust roots can be loaded.
pub(crate) fn build_for<B>(
    origins: &[Origin],
    connect_timeout: Duration,
) -> io::Result<Client<HttpsConnector<HttpConnector>, B>>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(origins)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
