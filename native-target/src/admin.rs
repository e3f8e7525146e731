//! The admin listener, off the public port: `GET /metrics` (Prometheus),
//! `GET /readyz` (is the origin answering?), `GET /healthz` (is this
//! process up?).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::client;
use crate::handler::ErrorChain;
use crate::metrics::Metrics;
use crate::server::Settings;

/// How long `/readyz` waits for the origin.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const OPENMETRICS: HeaderValue =
    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// What the admin endpoints need.
pub struct Admin {
    metrics: Arc<Metrics>,
    pool: Arc<crate::backends::Pool>,
    probe_uri: Uri,
    probe_headers: HeaderMap,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Admin {
    /// Prepares the endpoints for `settings` (the origin probe comes from the core).
    ///
    /// # Errors
    /// When the probe's client cannot be built (an https origin and no
    /// system trust roots).
    pub fn new(settings: &Settings) -> io::Result<Self> {
        let proxy = settings.proxy.load();
        let probe = proxy.readiness_probe();
        Ok(Self {
            metrics: Arc::clone(&settings.metrics),
            pool: Arc::clone(&settings.pool),
            probe_uri: probe.uri,
            probe_headers: probe.headers,
            client: client::build_for(proxy.config().origins(), settings.connect_timeout)?,
        })
    }

    /// Serves the admin endpoints on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let admin = Arc::new(self);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let admin = Arc::clone(&admin);
            let service = service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.answer(req).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                JSON,
                r#"{"error":"GET only"}"#,
            );
        }
        match request.uri().path() {
            "/metrics" => plain(StatusCode::OK, OPENMETRICS, self.metrics.encode()),
            "/healthz" => plain(StatusCode::OK, JSON, r#"{"status":"ok"}"#),
            "/readyz" => self.ready().await,
            _ => plain(
                StatusCode::NOT_FOUND,
                JSON,
                r#"{"error":"not found; try /metrics, /readyz or /healthz"}"#,
            ),
        }
    }

    /// 200 when the origin answers its version endpoint with a success, else
    /// 503 with the reason (never a header value).
    async fn ready(&self) -> Response<Full<Bytes>> {
        if self.pool.several() {
            return self.ready_boxes();
        }
        let mut probe = Request::new(Empty::new());
        *probe.uri_mut() = self.probe_uri.clone();
        *probe.headers_mut() = self.probe_headers.clone();
        let reason = match tokio::time::timeout(PROBE_TIMEOUT, self.client.request(probe)).await {
            Ok(Ok(response)) if response.status().is_success() => {
                return plain(StatusCode::OK, JSON, r#"{"status":"ready"}"#);
            }
            Ok(Ok(response)) => format!("origin answered {}", response.status().as_u16()),
            Ok(Err(error)) => format!("origin unreachable: {}", ErrorChain(&error)),
            Err(_) => format!("origin did not answer within {}s", PROBE_TIMEOUT.as_secs()),
        };
        let mut body = String::from(r#"{"status":"unready","reason":"#);
        body.push_str(&json_string(&reason));
        body.push('}');
        plain(StatusCode::SERVICE_UNAVAILABLE, JSON, body)
    }
}

impl Admin {
    /// With several boxes: ready while at least one is up (as the probes
    /// and the traffic found them), each box's state shown.
    fn ready_boxes(&self) -> Response<Full<Bytes>> {
        let states = self.pool.states();
        let up = states.iter().filter(|s| s.up).count();
        let entries: Vec<String> = states
            .iter()
            .map(|s| {
                format!(
                    r#"{{"origin":{},"up":{},"in_flight":{}}}"#,
                    json_string(&s.origin),
                    s.up,
                    s.in_flight
                )
            })
            .collect();
        let (status, word) = if up > 0 {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "unready")
        };
        let body = format!(
            r#"{{"status":"{word}","backends_up":{up},"backends":[{}]}}"#,
            entries.join(",")
        );
        plain(status, JSON, body)
    }
}

fn plain(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON string literal (quotes included) for a short message.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    ollama_proxy_core::push_json_str(&mut out, text);
    out
}
