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
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::handles::Handles;
use crate::log::Outcome;

/// Latency buckets in seconds: from a cached local answer to a long
/// generation (an LLM stream can run for minutes).
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Time to first token, in seconds: from a warm model's tens of
/// milliseconds to a cold load of a large one.
const TTFT_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Generation speed, tokens per second.
const SPEED_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
];
/// Model load time, seconds.
const LOAD_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// The most distinct `model` label values; answers for any other model are
/// counted as `other`, so clients cannot grow the series without bound.
const MAX_MODELS: usize = 64;

type Labels<const N: usize> = [(&'static str, &'static str); N];
type HistogramFamily = Family<Labels<1>, Histogram, fn() -> Histogram>;

/// A key name as a label value: `-` for unauthenticated requests. The
/// names come from the configuration in force, so a reload that adds a key
/// adds its label too.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct KeyLabel(Option<KeyName>);

impl EncodeLabelValue for KeyLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.0.as_ref().map_or("-", KeyName::as_str))
    }
}

/// A model name as a label value (bounded, see [`MAX_MODELS`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ModelLabel(Arc<str>);

impl EncodeLabelValue for ModelLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: ModelLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    key: KeyLabel,
    model: ModelLabel,
    kind: &'static str,
}

type ModelHistograms = Family<ModelLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: KeyLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
    key: KeyLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: ModelLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendWhyLabels {
    backend: ModelLabel,
    why: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status_class: &'static str,
    key: KeyLabel,
}

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

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ollama_proxy");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by route family (api, v1, other), status class and key name (- when unauthenticated)",
            requests.clone(),
        );
        let duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Whole exchange, until the last byte of the response (streams included), by route family",
            duration.clone(),
        );
        let first_byte = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "time_to_first_byte_seconds",
            "Until the response head is ready to send (for forwarded requests: the origin's head arrived), by route family",
            first_byte.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "open_streams",
            "Forwarded responses still streaming to clients",
            open_streams.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "request_body_bytes",
            "Request body bytes forwarded to the origin",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            bytes_out.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "auth_failures",
            "Requests refused for their token, by reason: missing, invalid, expired, disabled",
            auth_failures.clone(),
        );
        let origin_errors = Family::default();
        registry.register(
            "origin_errors",
            "Origin failures: unreachable, timeout (connect or response head), stream_interrupted, idle_timeout",
            origin_errors.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "config_reloads",
            "Reloads of the keys document (KEYS_FILE), by result: ok, or error (the keys in force were kept)",
            reloads.clone(),
        );
        let policy_refusals = Family::default();
        registry.register(
            "policy_refusals",
            "Requests a key's policy refused, by reason: model_not_allowed, model_required, duplicate_model, model_source_not_allowed, model_named_too_late, model_management_disabled",
            policy_refusals.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "tokens",
            "Tokens of LLM answers, by key, model and kind (prompt, completion); counts Ollama did not give (a cached prompt) are not counted",
            tokens.clone(),
        );
        let first_token = ModelHistograms::new_with_constructor(|| Histogram::new(TTFT_BUCKETS));
        registry.register(
            "time_to_first_token_seconds",
            "From the request's arrival to the first body chunk carrying generated content, by model",
            first_token.clone(),
        );
        let speed = ModelHistograms::new_with_constructor(|| Histogram::new(SPEED_BUCKETS));
        registry.register(
            "generation_tokens_per_second",
            "Generation speed (eval_count over eval_duration, else completion tokens over the time from the first to the last content), by model",
            speed.clone(),
        );
        let load = ModelHistograms::new_with_constructor(|| Histogram::new(LOAD_BUCKETS));
        registry.register(
            "model_load_seconds",
            "Ollama's load_duration when it shows a model load (0.1 s or more), by model",
            load.clone(),
        );
        let usage_unknown = Family::default();
        registry.register(
            "usage_unknown",
            "LLM answers whose token counts are (partly) unknown, by reason: client_gone, origin_error, error, cached_prompt, no_usage",
            usage_unknown.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Generation and embedding requests waiting for a turn (MAX_CONCURRENT)",
            queue_depth.clone(),
        );
        let queue_wait = latency_histogram();
        registry.register(
            "queue_wait_seconds",
            "How long requests waited in the queue for their turn",
            queue_wait.clone(),
        );
        let in_flight = Family::default();
        registry.register(
            "in_flight",
            "Generation and embedding requests holding a slot, by key (counted when a limit applies)",
            in_flight.clone(),
        );
        let turn_refusals = Family::default();
        registry.register(
            "turn_refusals",
            "Requests refused a turn, by reason (rate: requests_per_minute; key_busy: max_concurrent; queue_full; queue_timeout) and key",
            turn_refusals.clone(),
        );
        let backend_up = Family::default();
        registry.register(
            "backend_up",
            "With several Ollama boxes: 1 while the box takes requests, 0 while its circuit breaker is open",
            backend_up.clone(),
        );
        let backend_in_flight = Family::default();
        registry.register(
            "backend_in_flight",
            "With several Ollama boxes: requests in flight on each",
            backend_in_flight.clone(),
        );
        let backend_requests = Family::default();
        registry.register(
            "backend_requests",
            "With several Ollama boxes: requests sent to each, by why it was chosen (why: loaded, has_model, any, last_resort)",
            backend_requests.clone(),
        );
        let backend_errors = Family::default();
        registry.register(
            "backend_errors",
            "With several Ollama boxes: failures of each, by kind (why: connect, reset, status, stream, probe)",
            backend_errors.clone(),
        );
        let tls_handshakes = Family::default();
        registry.register(
            "tls_handshakes",
            "HTTPS handshakes on the public listener, by result: ok, no_common_version, bad_certificate (the client refused the proxy's), client_cert_refused (mutual TLS), timeout, error (anything else: not TLS, cut short)",
            tls_handshakes.clone(),
        );
        let by_route = |family: &HistogramFamily| {
            [RouteFamily::Ollama, RouteFamily::OpenAi, RouteFamily::Other]
                .map(|route| family.get_or_create(&[("route", route.as_str())]).clone())
        };
        Self {
            registry,
            requests: Handles::new(requests),
            duration: by_route(&duration),
            first_byte: by_route(&first_byte),
            open_streams,
            bytes_in,
            bytes_out,
            auth_failures,
            origin_errors,
            reloads,
            policy_refusals,
            tokens: Handles::new(tokens),
            first_token: Handles::new(first_token),
            speed: Handles::new(speed),
            load: Handles::new(load),
            usage_unknown,
            queue_depth,
            queue_wait,
            in_flight: Handles::new(in_flight),
            turn_refusals,
            backend_up,
            backend_in_flight,
            backend_requests,
            backend_errors,
            tls_handshakes,
            models: Mutex::new(HashSet::default()),
        }
    }

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
