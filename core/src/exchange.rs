//! The state one request carries from the decision to its response: the
//! CORS answer, the key, the request id, what the key's model list asks of
//! the body and the answer, and every response the proxy writes itself.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{response, Response, StatusCode};

use crate::auth::{Key, KeyName};
use crate::backends::Probe;
use crate::cors::CorsHeaders;
use crate::decision::{Action, Decision};
use crate::error::ProxyError;
use crate::hop::strip_hop_by_hop;
use crate::listing;
use crate::model_gate::{ModelGate, Refusal, MAX_HELD_BYTES};
use crate::model_policy::ModelCheck;
use crate::rate::RateState;
use crate::request_id::X_REQUEST_ID;
use crate::route::RouteFamily;
use crate::turns::{Turn, TurnLimits, TurnRefusal};
use crate::usage::{Framing, UsageMeter};
use crate::usage_chunk::UsageChunkFilter;

#[path = "exchange_backends.rs"]
mod backends;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const NO: HeaderValue = HeaderValue::from_static("no");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const BEARER: HeaderValue = HeaderValue::from_static("Bearer");
const BEARER_INVALID: HeaderValue = HeaderValue::from_static("Bearer error=\"invalid_token\"");

/// The state one request carries from the decision to its response.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub(crate) cors: CorsHeaders,
    pub(crate) key: Option<Arc<Key>>,
    pub(crate) model_check: ModelCheck,
    pub(crate) route: RouteFamily,
    pub(crate) body_limit: u64,
    pub(crate) rejection: Option<ProxyError>,
    pub(crate) request_id: Option<HeaderValue>,
    /// The body length the request declared (checked against the limit).
    pub(crate) declared_length: Option<u64>,
    /// The answer is an LLM's: its usage is read.
    pub(crate) llm: bool,
    /// A stream that does not ask for its usage is asked (the body goes
    /// through a gate that may add to it).
    pub(crate) ask_usage: bool,
    /// Answered in Anthropic's Messages shape (see
    /// [`Exchange::interrupted_stream_notice`]).
    pub(crate) anthropic: bool,
    /// What to ask the doorman, when a limit applies.
    pub(crate) turn: Option<Turn>,
    /// The key's bucket after this request (for the rate headers).
    pub(crate) rate: Option<RateState>,
    pub(crate) turn_limits: TurnLimits,
    /// What picks the Ollama box.
    pub(crate) routing: Routing,
    /// There are several boxes.
    pub(crate) several: bool,
}

/// What picks the Ollama box for a request, when there are several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Routing {
    /// The model the body names (the gate reads it); `manage`: a model
    /// management request (see [`Need::Manage`]).
    Body {
        watched: crate::endpoint::Watched,
        manage: bool,
    },
    /// The model in the path.
    Path(String),
    /// A listing: every box's, merged; `probe` says what it tells of them.
    Listing {
        kind: crate::endpoint::Listing,
        probe: Option<Probe>,
    },
    /// Model management without a model (blobs): where a create will go.
    Manage,
    /// Any box.
    Any,
}

impl Exchange {
    /// The name of the key that authenticated the request, if any.
    pub fn key(&self) -> Option<&KeyName> {
        self.key.as_ref().map(|key| &key.name)
    }

    /// The gate the request body must pass through before it reaches the
    /// origin, when the key's model list needs the body read. Feed it every
    /// chunk (see [`ModelGate`]); an empty body is fed as no chunk at all.
    ///
    /// On the OpenAI streaming routes every request goes through a gate,
    /// which may add [`INCLUDE_USAGE`](crate::INCLUDE_USAGE) to the body
    /// ([`GateStep::PassWithUsage`](crate::GateStep::PassWithUsage)): the
    /// body may then grow, so it is forwarded without a `Content-Length`.
    ///
    /// With several Ollama boxes, every request whose body names the model
    /// goes through a gate too, which holds it until the model is read:
    /// then [`Exchange::choose_backends`] knows where it goes.
    pub fn model_gate(&self) -> Option<ModelGate> {
        let hold = self.body_limit.min(MAX_HELD_BYTES);
        let route = match &self.routing {
            Routing::Body { watched, .. } if self.several => Some(*watched),
            _ => None,
        };
        match (self.model_check, &self.key, route) {
            (ModelCheck::Body { watched, required }, Some(key), _) => Some(ModelGate::new(
                Arc::clone(key),
                watched,
                required,
                hold,
                self.ask_usage,
                route.is_some(),
            )),
            (_, Some(key), Some(watched)) => Some(ModelGate::new(
                Arc::clone(key),
                watched,
                false,
                hold,
                self.ask_usage,
                true,
            )),
            (_, Some(key), None) if self.ask_usage => Some(ModelGate::new(
                Arc::clone(key),
                crate::endpoint::MODEL,
                false,
                hold,
                true,
                false,
            )),
            _ => None,
        }
    }

    /// Whether [`Exchange::model_gate`] has a gate for this request.
    pub fn has_model_gate(&self) -> bool {
        self.model_gate().is_some()
    }

    /// A filter that takes the usage chunk out of the origin's answer, when
    /// the request's gate asked for it (`asked`: its
    /// [`asked_for_usage`](ModelGate::asked_for_usage)) and the answer is a
    /// successful event stream. The answer then loses its `Content-Length`
    /// (if it had one): it will be shorter.
    pub fn usage_filter(
        &self,
        asked: bool,
        head: &mut response::Parts,
    ) -> Option<UsageChunkFilter> {
        let streamed = head
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| starts_with_ignore_case(ct.as_bytes(), b"text/event-stream"));
        if !(asked && head.status.is_success() && streamed) {
            return None;
        }
        head.headers.remove(header::CONTENT_LENGTH);
        Some(UsageChunkFilter::new())
    }

    /// What this request must ask the [`Doorman`](crate::Doorman) before it
    /// goes on, when a limit applies to it (the key's rate or cap, or
    /// `MAX_CONCURRENT` for a generation or embedding request).
    pub fn turn(&self) -> Option<&Turn> {
        self.turn.as_ref()
    }

    /// The doorman let the request through with the key's bucket at `rate`:
    /// the answer carries OpenAI's `x-ratelimit-*-requests` headers.
    pub fn admitted(&mut self, rate: Option<RateState>) {
        self.rate = rate;
    }

    /// The proxy's answer to a request the doorman refused: 429
    /// `rate_limit_exceeded` or 503 `server_busy`, with `Retry-After`.
    /// Records the refusal as this exchange's rejection.
    pub fn turn_refusal_response(&mut self, refusal: &TurnRefusal) -> Response<Bytes> {
        let mut extra = HeaderMap::new();
        let (error, message) =
            crate::turn_answer::refusal_parts(refusal, &self.turn_limits, &mut extra);
        self.rejection = Some(error);
        let mut response = self.local_json(error.status(), error.body_with(&message));
        response.headers_mut().extend(extra);
        response
    }

    /// The proxy's answer to a request refused for its model: 403
    /// `model_not_allowed` naming the model, or 400. Records the refusal
    /// as this exchange's rejection (for logs and metrics).
    pub fn refusal_response(&mut self, refusal: &Refusal) -> Response<Bytes> {
        let error = refusal.error();
        self.rejection = Some(error);
        let body = match refusal.model() {
            Some(model) => error.body_for_model(model),
            None => error.body(),
        };
        self.local_json(error.status(), body)
    }

    /// A meter for the origin's answer with this (rewritten) head, when it
    /// is an LLM's answer whose usage can be read: a successful answer to a
    /// generation or embedding route, framed as JSON, NDJSON or server-sent
    /// events. Feed it every chunk of the body as it passes.
    pub fn usage_meter(&self, head: &response::Parts) -> Option<UsageMeter> {
        if !self.llm || !head.status.is_success() {
            return None;
        }
        let content_type = head.headers.get(header::CONTENT_TYPE)?.as_bytes();
        let framing = if starts_with_ignore_case(content_type, b"text/event-stream") {
            Framing::Sse
        } else if starts_with_ignore_case(content_type, b"application/x-ndjson")
            || starts_with_ignore_case(content_type, b"application/json")
        {
            Framing::Json
        } else {
            return None;
        };
        Some(UsageMeter::new(framing))
    }

    /// Whether the origin's answer with this status must be read whole and
    /// passed through [`Exchange::filter_listing`]: a successful listing,
    /// for a key limited to some models.
    pub fn filters_listing(&self, status: StatusCode) -> bool {
        (matches!(self.model_check, ModelCheck::Listing(_)) || self.fans_out())
            && status.is_success()
    }

    /// The listing without the models the key may not use. Read at most
    /// [`MAX_LISTING_BYTES`](crate::MAX_LISTING_BYTES) of it; a longer one is
    /// [`ProxyError::OriginListingUnreadable`] too.
    ///
    /// # Errors
    /// [`ProxyError::OriginListingUnreadable`] when the answer is not the
    /// JSON listing Ollama sends, so it cannot be filtered.
    pub fn filter_listing(&self, body: &[u8]) -> Result<Bytes, ProxyError> {
        if body.len() > listing::MAX_LISTING_BYTES {
            return Err(ProxyError::OriginListingUnreadable);
        }
        self.filter_read(body)
    }

    fn filter_read(&self, body: &[u8]) -> Result<Bytes, ProxyError> {
        let (ModelCheck::Listing(kind), Some(key)) = (self.model_check, &self.key) else {
            return Ok(Bytes::copy_from_slice(body));
        };
        let Some(list) = &key.policy.models else {
            return Ok(Bytes::copy_from_slice(body));
        };
        if body.is_empty() {
            // A HEAD or an empty answer lists nothing.
            return Ok(Bytes::new());
        }
        listing::filter(kind, list, body).map_err(|_| ProxyError::OriginListingUnreadable)
    }

    /// Whether the request is a generation or an embedding (whose answer
    /// is an LLM's).
    pub fn is_llm(&self) -> bool {
        self.llm
    }

    /// The API family of the request path.
    pub fn route(&self) -> RouteFamily {
        self.route
    }

    /// The request id: the client's, or the fresh one given to
    /// [`Proxy::decide_with_request_id`].
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }

    /// The request body limit the adapter must enforce while streaming.
    pub fn body_limit(&self) -> u64 {
        self.body_limit
    }

    /// The limit an adapter must count against while streaming the request
    /// body, when only streaming can enforce it: the request declared no
    /// `Content-Length` (a declared one was checked by [`Proxy::decide`],
    /// and the runtime holds the body to it). `None` when there is nothing
    /// left to count.
    pub fn streamed_body_limit(&self) -> Option<u64> {
        self.declared_length.is_none().then_some(self.body_limit)
    }

    /// The body length the request declared, within the limit: an adapter
    /// that passes the body through a stream of its own keeps this length.
    pub fn declared_length(&self) -> Option<u64> {
        self.declared_length
    }

    /// Why the proxy answered the request itself with an error, if it did.
    pub fn rejection(&self) -> Option<ProxyError> {
        self.rejection
    }

    /// Rewrites the origin's response head in place: hop-by-hop headers
    /// and cookies dropped, the origin's CORS headers replaced by the
    /// proxy's, and anti-buffering headers on streamed responses. Status is
    /// kept.
    pub fn rewrite_response(&self, head: &mut response::Parts) {
        strip_hop_by_hop(&mut head.headers);
        strip_non_ascii(&mut head.headers);
        // Ollama sets no cookies; one from behind the proxy is never the
        // client's. Cloudflare Access answers a service token with a
        // `CF_Authorization` session: passed on, it would let any holder of
        // a proxy token call the tunnel hostname directly, past every check.
        head.headers.remove(header::SET_COOKIE);
        if self.filters_listing(head.status) {
            // The filtered body has a length of its own.
            head.headers.remove(header::CONTENT_LENGTH);
        }
        self.cors.apply(&mut head.headers);
        self.stamp(&mut head.headers);
        if let Some(rate) = self.rate {
            crate::turn_answer::put_rate(&mut head.headers, rate);
        }
        let bodiless = matches!(
            head.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
        if !bodiless && is_streamed(&head.headers) {
            head.headers.insert(header::CACHE_CONTROL, NO_CACHE);
            head.headers.insert(X_ACCEL_BUFFERING, NO);
        }
    }

    /// What to write into a streamed response whose origin stream breaks
    /// off, in the stream's own format, so that clients raise an error
    /// instead of taking a cut stream for a complete answer: an NDJSON
    /// `{"error": "..."}` line (Ollama's own mid-stream error shape) or a
    /// server-sent event whose data is the OpenAI error object (the OpenAI
    /// SDKs raise on an event carrying `error`), or on `/v1/messages`
    /// Anthropic's `error` event (its SDKs raise on that event name and
    /// skip unnamed ones). `None` for other bodies,
    /// and for a stream of declared length: its framing (`Content-Length`)
    /// already shows the cut, and the record could fill the length up so
    /// that the cut answer looked complete.
    ///
    /// Call it with the rewritten head. Natively the connection is also
    /// aborted after it; the Workers runtime ends the stream cleanly whatever
    /// the Worker does, which makes this notice the only signal there.
    pub fn interrupted_stream_notice(&self, head: &response::Parts) -> Option<Bytes> {
        if head.headers.contains_key(header::CONTENT_LENGTH) {
            return None;
        }
        let error = ProxyError::OriginStreamInterrupted;
        let content_type = head.headers.get(header::CONTENT_TYPE)?.as_bytes();
        if starts_with_ignore_case(content_type, b"application/x-ndjson") {
            let mut line = String::with_capacity(96);
            line.push_str("{\"error\":");
            crate::json::push_str(&mut line, error.message());
            line.push_str("}\n");
            Some(Bytes::from(line))
        } else if starts_with_ignore_case(content_type, b"text/event-stream") && self.anthropic {
            // Anthropic's clients read events by name: a `data:` line of
            // another shape would be skipped, the answer taken as complete.
            let mut event = String::with_capacity(160);
            event.push_str("\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":");
            crate::json::push_str(&mut event, error.message());
            event.push_str("}}\n\n");
            Some(Bytes::from(event))
        } else if starts_with_ignore_case(content_type, b"text/event-stream") {
            let body = error.body();
            let mut event = Vec::with_capacity(body.len() + 16);
            event.extend_from_slice(b"\n\ndata: ");
            event.extend_from_slice(&body);
            event.extend_from_slice(b"\n\n");
            Some(Bytes::from(event))
        } else {
            None
        }
    }

    /// The proxy's own error response: OpenAI-shaped JSON with CORS headers.
    pub fn error_response(&self, error: ProxyError) -> Response<Bytes> {
        let mut response = self.local_json(error.status(), error.body());
        match error {
            ProxyError::MissingToken => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, BEARER);
            }
            ProxyError::InvalidToken | ProxyError::ExpiredToken | ProxyError::DisabledToken => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, BEARER_INVALID);
            }
            _ => {}
        }
        response
    }

    /// The proxy's own JSON answer. One given after the request took its
    /// turn (a body its model list refuses, the origin unreachable) carries
    /// the key's rate headers, as the origin's answers do.
    pub(crate) fn local_json(&self, status: StatusCode, body: Bytes) -> Response<Bytes> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, JSON);
        headers.insert(header::CACHE_CONTROL, NO_STORE);
        self.cors.apply(&mut headers);
        self.stamp(&mut headers);
        if let Some(rate) = self.rate {
            crate::turn_answer::put_rate(&mut headers, rate);
        }
        local(status, headers, body)
    }

    /// Sets `X-Request-Id` on a response to the client.
    pub(crate) fn stamp(&self, headers: &mut HeaderMap) {
        headers.remove(X_REQUEST_ID);
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
    }

    pub(crate) fn respond(self, response: Response<Bytes>) -> Decision {
        Decision {
            exchange: self,
            action: Action::Respond(response),
        }
    }

    pub(crate) fn reject(mut self, error: ProxyError) -> Decision {
        self.rejection = Some(error);
        let response = self.error_response(error);
        self.respond(response)
    }

    pub(crate) fn refuse(mut self, refusal: &Refusal) -> Decision {
        let response = self.refusal_response(refusal);
        self.respond(response)
    }
}

/// An error answered before there is an [`Exchange`]: the configuration is
/// invalid ([`ProxyError::Misconfigured`], a generic 500 whose details belong
/// in the log), or the runtime handed over a request head that cannot be read
/// ([`ProxyError::BadRequest`]). Without an exchange there is no CORS decision,
/// so no CORS headers either.
pub fn early_error_response(error: ProxyError) -> Response<Bytes> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, JSON);
    headers.insert(header::CACHE_CONTROL, NO_STORE);
    local(error.status(), headers, error.body())
}

pub(crate) fn local(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A response is streamed when its length is not declared up front, or its
/// type is a stream (NDJSON from `/api/*`, server-sent events from `/v1/*`).
fn is_streamed(headers: &HeaderMap) -> bool {
    let stream_type = headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        starts_with_ignore_case(ct, b"application/x-ndjson")
            || starts_with_ignore_case(ct, b"text/event-stream")
    });
    stream_type || !headers.contains_key(header::CONTENT_LENGTH)
}

/// Drops every field that has a value with bytes outside ASCII: the Workers
/// runtime would re-encode them, so neither target passes them on.
fn strip_non_ascii(headers: &mut HeaderMap) {
    if headers.values().all(|v| v.as_bytes().is_ascii()) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| !v.as_bytes().is_ascii())
        .map(|(n, _)| n.clone())
        .collect();
    for name in names {
        headers.remove(name);
    }
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}
