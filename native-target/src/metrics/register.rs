//! Every metric registered, with its name and help text.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use ollama_proxy_core::RouteFamily;

use super::labels::{
    HistogramFamily, ModelHistograms, LATENCY_BUCKETS, LOAD_BUCKETS, SPEED_BUCKETS, TTFT_BUCKETS,
};
use super::Metrics;
use crate::handles::Handles;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
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
}
