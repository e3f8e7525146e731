//! The proxy's decision for one request, and the rewrite of the origin's answer.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, Response, StatusCode, Version};

use std::sync::Arc;

use crate::auth::{self, AuthOutcome, AuthSources, Key, KeyName, CF_AIG_AUTHORIZATION};
use crate::config::Config;
use crate::cors::{self, CorsHeaders};
use crate::endpoint::{self, Endpoint};
use crate::error::ProxyError;
use crate::hop::strip_hop_by_hop;
use crate::listing;
use crate::model_gate::{ModelGate, Refusal};
use crate::model_policy::{self, ModelCheck};
use crate::path::forwarded_path;
use crate::request_id::{self, X_REQUEST_ID};
use crate::route::RouteFamily;
use crate::time::UnixTime;

const HEALTHZ_PATH: &str = "/healthz";
const READINESS_PATH: &str = "/api/version";
/// The longest request target (path and query) forwarded, like nginx's
/// default `large_client_header_buffers` line limit.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// The most header bytes (names, values and `: `/CRLF framing) forwarded.
/// The Workers runtime accepts more than this and hyper's own cap is set
/// higher, so the limit and its error are the same on both targets.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
const HEALTHZ_BODY: &[u8] = br#"{"status":"ok"}"#;
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const NO: HeaderValue = HeaderValue::from_static("no");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const CF_ACCESS_CLIENT_ID: HeaderName = HeaderName::from_static("cf-access-client-id");
const CF_ACCESS_CLIENT_SECRET: HeaderName = HeaderName::from_static("cf-access-client-secret");
const BEARER: HeaderValue = HeaderValue::from_static("Bearer");
const BEARER_INVALID: HeaderValue = HeaderValue::from_static("Bearer error=\"invalid_token\"");

/// The proxy: a validated configuration and the decisions made from it.
#[derive(Clone, Debug)]
pub struct Proxy {
    config: Config,
}

/// What to do with one request.
#[derive(Debug)]
pub struct Decision {
    /// What the rest of the exchange needs: CORS, key name, body limit.
    pub exchange: Exchange,
    /// Answer locally, or forward.
    pub action: Action,
}

/// The two outcomes of [`Proxy::decide`].
#[derive(Debug)]
pub enum Action {
    /// Answer with this response; nothing reaches the origin.
    Respond(Response<Bytes>),
    /// Send this head to the origin, with the request body streamed as is.
    /// Its URI is absolute (the origin's scheme and authority).
    Forward(request::Parts),
}

/// The state one request carries from the decision to its response.
#[derive(Clone, Debug)]
pub struct Exchange {
    cors: CorsHeaders,
    key: Option<Arc<Key>>,
    model_check: ModelCheck,
    route: RouteFamily,
    body_limit: u64,
    rejection: Option<ProxyError>,
    request_id: Option<HeaderValue>,
    length_declared: bool,
}

impl Proxy {
    /// Wraps a validated configuration.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// The configuration this proxy was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides what to do with a request, given its head, at the Unix epoch
    /// and without a fresh request id: for tests of everything else.
    /// Adapters use [`Proxy::decide_at`].
    pub fn decide(&self, request: request::Parts) -> Decision {
        self.decide_at(request, None, UnixTime::from_secs(0))
    }

    /// Decides what to do with a request, given its head, a freshly
    /// generated request id (see [`RequestIds`](crate::RequestIds)) and the
    /// current time (for key expiry).
    ///
    /// The request id is the client's `X-Request-Id` when usable, else
    /// `fresh`; it is sent to the origin and returned on every response.
    /// Then, in order: CORS preflights and `GET /healthz` are answered here
    /// without a token; the token is checked (and the key's expiry), the
    /// endpoint policy applied, the request head validated, the key's model
    /// list applied to what the head shows; what passes is rewritten for the
    /// origin. The body, if the key's list needs it read, goes through
    /// [`Exchange::model_gate`].
    pub fn decide_at(
        &self,
        request: request::Parts,
        fresh: Option<HeaderValue>,
        now: UnixTime,
    ) -> Decision {
        let cfg = &self.config;
        let mut exchange = Exchange {
            cors: CorsHeaders::for_request(&cfg.allow_origin, &request.headers),
            key: None,
            model_check: ModelCheck::Nothing,
            route: RouteFamily::of(request.uri.path()),
            body_limit: cfg.max_body_bytes,
            rejection: None,
            request_id: request_id::pick(&request.headers, fresh),
            length_declared: request.headers.contains_key(header::CONTENT_LENGTH),
        };

        if cors::is_preflight(&request.method, &request.headers) {
            let mut headers = cors::preflight_headers(&cfg.allow_origin, &request.headers);
            exchange.stamp(&mut headers);
            return exchange.respond(local(StatusCode::NO_CONTENT, headers, Bytes::new()));
        }
        if is_health_check(&request) {
            let response = exchange.local_json(StatusCode::OK, Bytes::from_static(HEALTHZ_BODY));
            return exchange.respond(response);
        }

        let sources = AuthSources {
            authorization_header: cfg.allow_authorization_header,
        };
        let key = match auth::authenticate(&cfg.keys, &request.headers, sources) {
            AuthOutcome::Accepted(key) => key,
            AuthOutcome::Missing => return exchange.reject(ProxyError::MissingToken),
            AuthOutcome::Rejected => return exchange.reject(ProxyError::InvalidToken),
        };
        let refusal = key.refusal(now);
        exchange.key = Some(Arc::clone(&key));
        if let Some(error) = refusal {
            return exchange.reject(error);
        }

        let path = forwarded_path(request.uri.path()).into_owned();
        let endpoint = endpoint::classify(&path);
        if let Err(error) = self.check(&request, &key, &endpoint) {
            return exchange.reject(error);
        }
        match model_policy::check(&key, &endpoint, &request) {
            Ok(check) => exchange.model_check = check,
            Err(refusal) => return exchange.refuse(&refusal),
        }
        let upstream = self.upstream_head(request, &path, &exchange);
        Decision {
            exchange,
            action: Action::Forward(upstream),
        }
    }

    /// The request a readiness check sends to the origin: `GET /api/version`
    /// (Ollama's cheapest endpoint) under the origin's base path, with the
    /// origin's `Host` and the Access service-token headers when configured,
    /// exactly as a forwarded request would carry them.
    pub fn readiness_probe(&self) -> request::Parts {
        let cfg = &self.config;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, cfg.origin.host_header().clone());
        if let Some(access) = &cfg.access {
            headers.insert(CF_ACCESS_CLIENT_ID, access.client_id.clone());
            headers.insert(CF_ACCESS_CLIENT_SECRET, access.client_secret.clone());
        }
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::GET;
        parts.uri = cfg.origin.join(READINESS_PATH, None);
        parts.version = Version::HTTP_11;
        parts.headers = headers;
        parts
    }

    /// Checks an authenticated request against policy and framing rules.
    fn check(
        &self,
        request: &request::Parts,
        key: &Key,
        endpoint: &Endpoint,
    ) -> Result<(), ProxyError> {
        if request.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        let origin_form = request
            .uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str().starts_with('/'));
        if !origin_form {
            return Err(ProxyError::BadRequest);
        }
        if request
            .uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str().len() > MAX_TARGET_BYTES)
        {
            return Err(ProxyError::UriTooLong);
        }
        let management = key
            .policy
            .model_management
            .unwrap_or(self.config.allow_model_management);
        if endpoint.management && !management {
            return Err(ProxyError::ModelManagementDisabled);
        }
        let header_bytes: usize = request
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return Err(ProxyError::HeadersTooLarge);
        }
        if request.headers.values().any(|v| !v.as_bytes().is_ascii()) {
            return Err(ProxyError::NonAsciiHeader);
        }
        match content_length(&request.headers)? {
            Some(len) if len > self.config.max_body_bytes => Err(ProxyError::BodyTooLarge),
            _ => Ok(()),
        }
    }

    /// Rewrites an accepted request head for the origin; `path` is the
    /// request's path with dot segments resolved.
    fn upstream_head(
        &self,
        request: request::Parts,
        path: &str,
        exchange: &Exchange,
    ) -> request::Parts {
        let cfg = &self.config;
        let request::Parts {
            method,
            uri,
            mut headers,
            ..
        } = request;
        strip_hop_by_hop(&mut headers);
        headers.remove(CF_AIG_AUTHORIZATION);
        headers.remove(header::ORIGIN);
        drop_proxy_authorization(&cfg.keys, &mut headers);
        headers.insert(header::HOST, cfg.origin.host_header().clone());
        headers.remove(X_REQUEST_ID);
        if let Some(id) = &exchange.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
        if let Some(access) = &cfg.access {
            headers.insert(CF_ACCESS_CLIENT_ID, access.client_id.clone());
            headers.insert(CF_ACCESS_CLIENT_SECRET, access.client_secret.clone());
        }
        if matches!(exchange.model_check, ModelCheck::Listing(_)) {
            // The listing is read to be filtered: ask for it uncompressed.
            headers.remove(header::ACCEPT_ENCODING);
        }
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = cfg.origin.join(path, uri.query());
        parts.version = Version::HTTP_11;
        parts.headers = headers;
        parts
    }
}

impl Exchange {
    /// The name of the key that authenticated the request, if any.
    pub fn key(&self) -> Option<&KeyName> {
        self.key.as_ref().map(|key| &key.name)
    }

    /// The gate the request body must pass through before it reaches the
    /// origin, when the key's model list needs the body read. Feed it every
    /// chunk (see [`ModelGate`]); an empty body is fed as no chunk at all.
    pub fn model_gate(&self) -> Option<ModelGate> {
        match (self.model_check, &self.key) {
            (ModelCheck::Body { fields, required }, Some(key)) => {
                Some(ModelGate::new(Arc::clone(key), fields, required))
            }
            _ => None,
        }
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

    /// Whether the origin's answer with this status must be read whole and
    /// passed through [`Exchange::filter_listing`]: a successful listing,
    /// for a key limited to some models.
    pub fn filters_listing(&self, status: StatusCode) -> bool {
        matches!(self.model_check, ModelCheck::Listing(_)) && status.is_success()
    }

    /// The listing without the models the key may not use. Read at most
    /// [`MAX_LISTING_BYTES`](crate::MAX_LISTING_BYTES) of it; a longer one is
    /// [`ProxyError::OriginListingUnreadable`] too.
    ///
    /// # Errors
    /// [`ProxyError::OriginListingUnreadable`] when the answer is not the
    /// JSON listing Ollama sends, so it cannot be filtered.
    pub fn filter_listing(&self, body: &[u8]) -> Result<Bytes, ProxyError> {
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
        if body.len() > listing::MAX_LISTING_BYTES {
            return Err(ProxyError::OriginListingUnreadable);
        }
        listing::filter(kind, list, body).map_err(|_| ProxyError::OriginListingUnreadable)
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
        (!self.length_declared).then_some(self.body_limit)
    }

    /// Why the proxy answered the request itself with an error, if it did.
    pub fn rejection(&self) -> Option<ProxyError> {
        self.rejection
    }

    /// Rewrites the origin's response head in place: hop-by-hop headers
    /// dropped, the origin's CORS headers replaced by the proxy's, and
    /// anti-buffering headers on streamed responses. Status is kept.
    pub fn rewrite_response(&self, head: &mut response::Parts) {
        strip_hop_by_hop(&mut head.headers);
        strip_non_ascii(&mut head.headers);
        if self.filters_listing(head.status) {
            // The filtered body has a length of its own.
            head.headers.remove(header::CONTENT_LENGTH);
        }
        self.cors.apply(&mut head.headers);
        self.stamp(&mut head.headers);
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
    /// SDKs raise on an event carrying `error`). `None` for other bodies,
    /// whose framing (`Content-Length`) already shows the cut.
    ///
    /// Call it with the rewritten head. Natively the connection is also
    /// aborted after it; the Workers runtime ends the stream cleanly whatever
    /// the Worker does, which makes this notice the only signal there.
    pub fn interrupted_stream_notice(&self, head: &response::Parts) -> Option<Bytes> {
        let error = ProxyError::OriginStreamInterrupted;
        let content_type = head.headers.get(header::CONTENT_TYPE)?.as_bytes();
        if starts_with_ignore_case(content_type, b"application/x-ndjson") {
            let mut line = String::with_capacity(96);
            line.push_str("{\"error\":");
            crate::json::push_str(&mut line, error.message());
            line.push_str("}\n");
            Some(Bytes::from(line))
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

    fn local_json(&self, status: StatusCode, body: Bytes) -> Response<Bytes> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, JSON);
        headers.insert(header::CACHE_CONTROL, NO_STORE);
        self.cors.apply(&mut headers);
        self.stamp(&mut headers);
        local(status, headers, body)
    }

    /// Sets `X-Request-Id` on a response to the client.
    fn stamp(&self, headers: &mut HeaderMap) {
        headers.remove(X_REQUEST_ID);
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
    }

    fn respond(self, response: Response<Bytes>) -> Decision {
        Decision {
            exchange: self,
            action: Action::Respond(response),
        }
    }

    fn reject(mut self, error: ProxyError) -> Decision {
        self.rejection = Some(error);
        let response = self.error_response(error);
        self.respond(response)
    }

    fn refuse(mut self, refusal: &Refusal) -> Decision {
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

fn local(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn is_health_check(request: &request::Parts) -> bool {
    (request.method == Method::GET || request.method == Method::HEAD)
        && request.uri.path() == HEALTHZ_PATH
}

/// The declared body length. Several `Content-Length` values must agree,
/// and a `Transfer-Encoding` beside it is refused: RFC 9112 §6.3 calls that
/// pair a likely smuggling attempt "ought to be handled as an error".
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    if headers.contains_key(header::CONTENT_LENGTH)
        && headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(ProxyError::BadRequest);
    }
    let mut found: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| ProxyError::BadRequest)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ProxyError::BadRequest);
            }
            let n: u64 = part.parse().map_err(|_| ProxyError::BadRequest)?;
            if found.is_some_and(|f| f != n) {
                return Err(ProxyError::BadRequest);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Removes the `Authorization` header when it carries a configured token
/// anywhere in it; otherwise it is a credential meant for the origin and
/// passes. All of it goes, not just the matching value, because a runtime may
/// hand over repeated fields joined into one.
fn drop_proxy_authorization(keys: &[Arc<Key>], headers: &mut HeaderMap) {
    if auth::authorization_carries_configured_token(keys, headers) {
        headers.remove(header::AUTHORIZATION);
    } else if let header::Entry::Occupied(mut entry) = headers.entry(header::AUTHORIZATION) {
        for value in entry.iter_mut() {
            value.set_sensitive(true);
        }
    }
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

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
