//! Prometheus metrics, with the `prometheus-client` crate: what operators
//! otherwise read off Cloudflare's dashboard (requests per minute, error
//! rate, latency quantiles) plus streams, bytes, auth failures and origin
//! errors. Served on the admin listener (see `admin.rs`).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use ollama_proxy_core::{
    status_class, Exchange, KeyName, NameHasher, ProxyError, RouteFamily, TurnRefusal, Usage,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::handles::Handles;
use crate::log::Outcome;

mod labels;
mod register;

use labels::{
    BackendLabels, BackendWhyLabels, KeyLabel, KeyLabels, Labels, ModelLabel, ModelLabels,
    RefusalLabels, RequestLabels, TokenLabels, MAX_MODELS,
};

/// Every metric the native proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: Handles<RequestLabels, Counter>,
    // Each route family's histogram, looked up once (they are observed on
    // every request): api, v1, other.
    duration: [Histogram; 3],
    first_byte: [Histogram; 3],
    open_streams: Gauge,
    bytes_in: Counter,
    bytes_out: Counter,
    auth_failures: Family<Labels<1>, Counter>,
    origin_errors: Family<Labels<1>, Counter>,
    reloads: Family<Labels<1>, Counter>,
    policy_refusals: Family<Labels<1>, Counter>,
    tokens: Handles<TokenLabels, Counter>,
    first_token: Handles<ModelLabels, Histogram, fn() -> Histogram>,
    speed: Handles<ModelLabels, Histogram, fn() -> Histogram>,
    load: Handles<ModelLabels, Histogram, fn() -> Histogram>,
    usage_unknown: Family<Labels<1>, Counter>,
    queue_depth: Gauge,
    queue_wait: Histogram,
    in_flight: Handles<KeyLabels, Gauge>,
    turn_refusals: Family<RefusalLabels, Counter>,
    backend_up: Family<BackendLabels, Gauge>,
    backend_in_flight: Family<BackendLabels, Gauge>,
    backend_requests: Family<BackendWhyLabels, Counter>,
    backend_errors: Family<BackendWhyLabels, Counter>,
    tls_handshakes: Family<Labels<1>, Counter>,
    /// The model label values in use (at most [`MAX_MODELS`]).
    /// Bounded, so a fast hash is safe whatever the names.
    models: Mutex<HashSet<Arc<str>, BuildHasherDefault<NameHasher>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Where a route family's histograms are kept.
fn route_index(route: RouteFamily) -> usize {
    match route {
        RouteFamily::Ollama => 0,
        RouteFamily::OpenAi => 1,
        RouteFamily::Other => 2,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The label for `model`: itself while fewer than [`MAX_MODELS`] are in
    /// use, else `other`.
    fn model_label(&self, model: Option<&str>) -> ModelLabel {
        let Some(model) = model else {
            return ModelLabel(Arc::from("-"));
        };
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = models.get(model) {
            return ModelLabel(Arc::clone(known));
        }
        if models.len() >= MAX_MODELS {
            return ModelLabel(Arc::from("other"));
        }
        let name: Arc<str> = Arc::from(model);
        models.insert(Arc::clone(&name));
        ModelLabel(name)
    }

    /// Records what an LLM answer's usage turned out to be.
    pub(crate) fn usage(&self, exchange: &Exchange, usage: &Usage) {
        let model = self.model_label(usage.model.as_deref());
        let key = KeyLabel(exchange.key().cloned());
        for (kind, count) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            if let Some(count) = count {
                let labels = TokenLabels {
                    key: key.clone(),
                    model: model.clone(),
                    kind,
                };
                self.tokens.with(&labels, |c| c.inc_by(count));
            }
        }
        let labels = ModelLabels { model };
        if let Some(us) = usage.first_token_us {
            self.first_token
                .with(&labels, |h| h.observe(us as f64 / 1e6));
        }
        if let Some(speed) = usage.tokens_per_second {
            self.speed.with(&labels, |h| h.observe(speed));
        }
        if let Some(seconds) = usage.load_seconds {
            self.load.with(&labels, |h| h.observe(seconds));
        }
        if let Some(reason) = usage.unknown {
            self.usage_unknown
                .get_or_create(&[("reason", reason)])
                .inc();
        }
    }

    /// Records a reload of the keys document.
    pub(crate) fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&[("result", result)]).inc();
    }

    /// Records a finished exchange.
    pub(crate) fn finished(
        &self,
        exchange: &Exchange,
        status: StatusCode,
        elapsed: Duration,
        outcome: Outcome,
        bytes_out: u64,
        error: Option<ProxyError>,
    ) {
        self.finished_as(
            exchange.route(),
            exchange.key(),
            exchange.rejection(),
            status,
            elapsed,
            outcome,
            bytes_out,
            error,
        );
    }

    /// [`Metrics::finished`] from what the log kept of an exchange.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finished_as(
        &self,
        route_family: RouteFamily,
        key: Option<&KeyName>,
        rejection: Option<ProxyError>,
        status: StatusCode,
        elapsed: Duration,
        outcome: Outcome,
        bytes_out: u64,
        error: Option<ProxyError>,
    ) {
        let route = route_family.as_str();
        let labels = RequestLabels {
            route,
            status_class: status_class(status),
            key: KeyLabel(key.cloned()),
        };
        self.requests.with(&labels, Counter::inc);
        self.duration[route_index(route_family)].observe(elapsed.as_secs_f64());
        self.bytes_out.inc_by(bytes_out);
        match rejection {
            Some(ProxyError::MissingToken) => self.auth_failure("missing"),
            Some(ProxyError::InvalidToken) => self.auth_failure("invalid"),
            Some(ProxyError::ExpiredToken) => self.auth_failure("expired"),
            Some(ProxyError::DisabledToken) => self.auth_failure("disabled"),
            Some(
                refusal @ (ProxyError::ModelNotAllowed
                | ProxyError::ModelRequired
                | ProxyError::DuplicateModel
                | ProxyError::ModelSourceNotAllowed
                | ProxyError::ModelNamedTooLate
                | ProxyError::ModelManagementDisabled),
            ) => {
                self.policy_refusals
                    .get_or_create(&[("reason", refusal.code())])
                    .inc();
            }
            _ => {}
        }
        let origin_error = match (error, outcome) {
            (Some(ProxyError::OriginUnreachable), _) => Some("unreachable"),
            (Some(ProxyError::OriginTimeout), _) => Some("timeout"),
            (_, Outcome::OriginError) => Some("stream_interrupted"),
            (_, Outcome::IdleTimeout) => Some("idle_timeout"),
            _ => None,
        };
        if let Some(kind) = origin_error {
            self.origin_errors.get_or_create(&[("kind", kind)]).inc();
        }
    }

    fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Records the time until a response head was ready.
    pub(crate) fn first_byte(&self, exchange: &Exchange, elapsed: Duration) {
        self.first_byte[route_index(exchange.route())].observe(elapsed.as_secs_f64());
    }

    /// Requests now waiting for a turn.
    pub(crate) fn queue_depth(&self, waiting: usize) {
        self.queue_depth
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// A request waited this long in the queue.
    pub(crate) fn queue_waited(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// `key` took a slot: its in-flight gauge, counted up, for the holder
    /// to count down when it gives the slot back (one lookup per slot).
    pub(crate) fn lease_started(&self, key: &KeyName) -> Gauge {
        let labels = KeyLabels {
            key: KeyLabel(Some(key.clone())),
        };
        self.in_flight.with(&labels, |gauge| {
            gauge.inc();
            gauge.clone()
        })
    }

    /// `key`'s request was refused a turn.
    pub(crate) fn turn_refused(&self, key: &KeyName, refusal: &TurnRefusal) {
        let reason = match refusal {
            TurnRefusal::RateLimited(_) => "rate",
            TurnRefusal::KeyBusy { .. } => "key_busy",
            TurnRefusal::QueueFull => "queue_full",
            TurnRefusal::QueueTimeout => "queue_timeout",
        };
        self.turn_refusals
            .get_or_create(&RefusalLabels {
                reason,
                key: KeyLabel(Some(key.clone())),
            })
            .inc();
    }

    /// Whether the box `backend` takes requests.
    pub(crate) fn backend_up(&self, backend: &Arc<str>, up: bool) {
        self.backend_up
            .get_or_create(&BackendLabels {
                backend: ModelLabel(Arc::clone(backend)),
            })
            .set(i64::from(up));
    }

    /// A request started (`delta` 1) or ended (-1) on `backend`.
    pub(crate) fn backend_in_flight(&self, backend: &Arc<str>, delta: i64) {
        self.backend_in_flight
            .get_or_create(&BackendLabels {
                backend: ModelLabel(Arc::clone(backend)),
            })
            .inc_by(delta);
    }

    /// A request went to `backend`, chosen for `why`.
    pub(crate) fn backend_request(&self, backend: &Arc<str>, why: &'static str) {
        self.backend_requests
            .get_or_create(&BackendWhyLabels {
                backend: ModelLabel(Arc::clone(backend)),
                why,
            })
            .inc();
    }

    /// `backend` failed, this way.
    pub(crate) fn backend_error(&self, backend: &Arc<str>, why: &'static str) {
        self.backend_errors
            .get_or_create(&BackendWhyLabels {
                backend: ModelLabel(Arc::clone(backend)),
                why,
            })
            .inc();
    }

    /// An HTTPS handshake ended so.
    pub(crate) fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// A forwarded response started streaming.
    pub(crate) fn stream_opened(&self) {
        self.open_streams.inc();
    }

    /// A forwarded response ended (completed, failed or abandoned).
    pub(crate) fn stream_closed(&self) {
        self.open_streams.dec();
    }

    /// Request body bytes passed to the origin.
    pub(crate) fn request_bytes(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
