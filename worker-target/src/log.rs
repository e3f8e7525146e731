//! One JSON log line per request, for Workers Logs: request id, method,
//! path, status, duration, key name, and for an LLM's answer its model,
//! token counts and time to first token. Never a token, never the query.

use http::{request, StatusCode};
use ollama_proxy_core::{push_json_str as push_json, Exchange, ProxyError, Usage};

pub(crate) struct Line {
    method: String,
    path: String,
    pub(crate) started: f64,
}

impl Line {
    pub(crate) fn start(parts: &request::Parts, started: f64) -> Self {
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            started,
        }
    }

    /// Logs the line: for an LLM's answer when its stream ends (with its
    /// usage), for other forwarded requests when the response head
    /// arrives. With an Analytics Engine dataset bound as `ANALYTICS`, also
    /// writes a data point there (see [`analytics_point`]).
    /// `error` is a failure the Worker met itself (origin down, body over
    /// the limit); the core's own rejections come from the exchange.
    pub(crate) fn finish(
        &mut self,
        exchange: &Exchange,
        status: StatusCode,
        error: Option<ProxyError>,
        env: &worker::Env,
        usage: Option<&Usage>,
    ) {
        let error = error.or(exchange.rejection());
        let duration_ms = js_sys::Date::now() - self.started;
        if let Some(dataset) = analytics(env) {
            // Losing a data point must never fail the request.
            let _ = analytics_point(exchange, &self.method, status, error, duration_ms, usage)
                .write_to(&dataset);
        }
        let key = exchange.key().map_or("-", |k| k.as_str());
        let error = error.map_or("-", |e| e.code());
        let mut line = String::with_capacity(160);
        line.push_str("{\"message\":\"request\",\"request_id\":");
        let id = exchange.request_id().and_then(|id| id.to_str().ok());
        push_json(&mut line, id.unwrap_or("-"));
        line.push_str(",\"method\":");
        push_json(&mut line, &self.method);
        line.push_str(",\"path\":");
        push_json(&mut line, &self.path);
        line.push_str(&format!(
            ",\"status\":{},\"duration_ms\":{duration_ms},\"key\":",
            status.as_u16()
        ));
        push_json(&mut line, key);
        line.push_str(",\"route\":");
        push_json(&mut line, exchange.route().as_str());
        line.push_str(",\"error\":");
        push_json(&mut line, error);
        if let Some(usage) = usage {
            line.push_str(",\"model\":");
            push_json(&mut line, usage.model.as_deref().unwrap_or("-"));
            let number = |n: Option<f64>| n.map_or_else(|| "null".to_owned(), |n| n.to_string());
            line.push_str(&format!(
                ",\"prompt_tokens\":{},\"completion_tokens\":{},\"ttft_ms\":{}",
                number(usage.prompt_tokens.map(|n| n as f64)),
                number(usage.completion_tokens.map(|n| n as f64)),
                number(usage.first_token_us.map(|us| us as f64 / 1e3)),
            ));
            if let Some(reason) = usage.unknown {
                line.push_str(",\"usage_unknown\":");
                push_json(&mut line, reason);
            }
        }
        line.push('}');
        worker::console_log!("{line}");
    }
}

/// The optional Workers Analytics Engine binding (off unless configured in
/// `wrangler.toml`).
const ANALYTICS_BINDING: &str = "ANALYTICS";

/// One data point per request: index = key name (`-` unauthenticated);
/// blobs = route family, status class, key name, method, error code, request
/// id, model (`-` when not an LLM's answer); doubles = status, milliseconds
/// (to the end of an LLM's answer, else to the response head), prompt
/// tokens, completion tokens, milliseconds to the first token (-1 when
/// unknown).
fn analytics_point(
    exchange: &Exchange,
    method: &str,
    status: StatusCode,
    error: Option<ProxyError>,
    duration_ms: f64,
    usage: Option<&Usage>,
) -> worker::AnalyticsEngineDataPointBuilder {
    let key = exchange.key().map_or("-", |k| k.as_str());
    let id = exchange
        .request_id()
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-");
    worker::AnalyticsEngineDataPointBuilder::new()
        .indexes([key])
        .add_blob(exchange.route().as_str())
        .add_blob(ollama_proxy_core::status_class(status))
        .add_blob(key)
        .add_blob(method)
        .add_blob(error.map_or("-", |e| e.code()))
        .add_blob(id)
        .add_blob(usage.and_then(|u| u.model.as_deref()).unwrap_or("-"))
        .add_double(status.as_u16())
        .add_double(duration_ms)
        .add_double(
            usage
                .and_then(|u| u.prompt_tokens)
                .map_or(-1.0, |n| n as f64),
        )
        .add_double(
            usage
                .and_then(|u| u.completion_tokens)
                .map_or(-1.0, |n| n as f64),
        )
        .add_double(
            usage
                .and_then(|u| u.first_token_us)
                .map_or(-1.0, |us| us as f64 / 1e3),
        )
}

thread_local! {
    /// Whether `ANALYTICS` is bound, learnt at the isolate's first request:
    /// bindings cannot change without a new deployment (and a new
    /// isolate). Only the answer is kept, never the binding object, which
    /// belongs to its request.
    static ANALYTICS_BOUND: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// The Analytics Engine dataset, if one is bound.
fn analytics(env: &worker::Env) -> Option<worker::AnalyticsEngineDataset> {
    if ANALYTICS_BOUND.get() == Some(false) {
        return None;
    }
    let dataset = env.analytics_engine(ANALYTICS_BINDING).ok();
    ANALYTICS_BOUND.set(Some(dataset.is_some()));
    dataset
}
