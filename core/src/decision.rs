//! The proxy's decision for one request: the orchestrator that asks each
//! capability in turn (CORS, auth and key state, endpoint policy, head
//! limits, the key's model list) and builds the head sent to the origin.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};

use crate::auth::{self, AuthOutcome, AuthSources, Key, CF_AIG_AUTHORIZATION};
use crate::backends::Probe;
use crate::config::Config;
use crate::cors::{self, CorsHeaders};
use crate::endpoint::{self, Endpoint, ModelSource};
use crate::error::ProxyError;
use crate::exchange::local;
use crate::exchange::{Exchange, Routing};
use crate::hop::strip_hop_by_hop;
use crate::length::{declared_length, framed_twice};
use crate::model_policy::{self, ModelCheck};
use crate::path::forwarded_path;
use crate::request_id::{self, X_REQUEST_ID};
use crate::route::RouteFamily;
use crate::time::UnixTime;
use crate::turns;

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
const CF_ACCESS_CLIENT_ID: HeaderName = HeaderName::from_static("cf-access-client-id");
const CF_ACCESS_CLIENT_SECRET: HeaderName = HeaderName::from_static("cf-access-client-secret");

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
            declared_length: None,
            llm: false,
            ask_usage: false,
            anthropic: false,
            turn: None,
            rate: None,
            turn_limits: cfg.turn_limits,
            routing: Routing::Any,
            several: cfg.origins.len() > 1,
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
        let auth::Authentication { outcome, ours } =
            auth::authenticate(&cfg.keys, &request.headers, sources);
        let key = match outcome {
            AuthOutcome::Accepted(key) => key,
            AuthOutcome::Missing => return exchange.reject(ProxyError::MissingToken),
            AuthOutcome::Rejected => return exchange.reject(ProxyError::InvalidToken),
        };
        let refusal = key.refusal(now);
        exchange.key = Some(Arc::clone(&key));
        if let Some(error) = refusal {
            return exchange.reject(error);
        }

        // The path as forwarded (dot segments resolved), owned only when it
        // differs from the request's.
        let resolved = match forwarded_path(request.uri.path()) {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path),
        };
        let endpoint = endpoint::classify(resolved.as_deref().unwrap_or(request.uri.path()));
        match self.check(&request, &key, &endpoint) {
            Ok(length) => exchange.declared_length = length,
            Err(error) => return exchange.reject(error),
        }
        exchange.llm = endpoint.llm;
        exchange.ask_usage = endpoint.ask_usage;
        exchange.anthropic = endpoint.anthropic;
        exchange.routing = routing(&endpoint, &request.method);
        match model_policy::check(&key, &endpoint, &request) {
            Ok(check) => exchange.model_check = check,
            Err(refusal) => return exchange.refuse(&refusal),
        }
        exchange.turn = turns::turn_for(&key, endpoint.slot, &cfg.turn_limits);
        let upstream = self.upstream_head(request, resolved.as_deref(), ours, &exchange);
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
        self.origin_get(0, READINESS_PATH)
    }

    /// The request that asks Ollama box `backend` (an index into
    /// [`Config::origins`]) what [`Probe`] wants to know: `GET /api/tags`
    /// or `GET /api/ps`, carried as a forwarded request would be.
    pub fn probe_request(&self, backend: usize, probe: Probe) -> request::Parts {
        let path = match probe {
            Probe::Models => "/api/tags",
            Probe::Loaded => "/api/ps",
        };
        self.origin_get(backend, path)
    }

    /// Points a forwarded head (as [`Action::Forward`] gives it, aimed at
    /// the first box) at Ollama box `backend` instead: its scheme,
    /// authority, base path and `Host`.
    pub fn aim(&self, head: &mut request::Parts, backend: usize) {
        let origins = &self.config.origins;
        let Some(to) = origins.get(backend).filter(|_| backend > 0) else {
            return;
        };
        let Some(target) = head.uri.path_and_query() else {
            return;
        };
        let rest = target
            .as_str()
            .strip_prefix(origins[0].base_path())
            .unwrap_or(target.as_str());
        let rest = http::uri::PathAndQuery::try_from(rest)
            .expect("a suffix of a valid path and query starting at a segment");
        head.uri = to.join(&rest, None);
        head.headers.insert(header::HOST, to.host_header().clone());
    }

    fn origin_get(&self, backend: usize, path: &'static str) -> request::Parts {
        let cfg = &self.config;
        let origin = &cfg.origins[backend.min(cfg.origins.len() - 1)];
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, origin.host_header().clone());
        if let Some(access) = &cfg.access {
            headers.insert(CF_ACCESS_CLIENT_ID, access.client_id.clone());
            headers.insert(CF_ACCESS_CLIENT_SECRET, access.client_secret.clone());
        }
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::GET;
        parts.uri = origin.join(&http::uri::PathAndQuery::from_static(path), None);
        parts.version = Version::HTTP_11;
        parts.headers = headers;
        parts
    }

    /// Checks an authenticated request against policy and framing rules;
    /// its declared body length, if it has one.
    fn check(
        &self,
        request: &request::Parts,
        key: &Key,
        endpoint: &Endpoint,
    ) -> Result<Option<u64>, ProxyError> {
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
        // URL parsers read `\` in an http path as `/` (WHATWG: the Worker's
        // `fetch` would send `/api\pull` as `/api/pull`, and `..\` would
        // climb), Go reads it as a byte: no one reading can be checked for
        // both, and no Ollama route has one.
        if request.uri.path().contains('\\') {
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
        if endpoint.hidden_dots {
            return Err(ProxyError::BadRequest);
        }
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
            length => Ok(length),
        }
    }

    /// Rewrites an accepted request head for the origin; `resolved` is the
    /// request's path with dot segments resolved, when that changed it;
    /// `ours` says which credential headers carry a configured token.
    fn upstream_head(
        &self,
        request: request::Parts,
        resolved: Option<&str>,
        ours: auth::Ours,
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
        drop_proxy_authorization(ours.authorization, &mut headers);
        for (name, ours) in auth::API_KEY_HEADERS.iter().zip(ours.api_keys) {
            if ours {
                headers.remove(name);
            }
        }
        headers.insert(header::HOST, cfg.origins[0].host_header().clone());
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
        if exchange.ask_usage || exchange.fans_out() {
            // The gate may add to the body: its length is not known. A
            // listing asked of every box is asked without a body.
            headers.remove(header::CONTENT_LENGTH);
        }
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        let target = uri.path_and_query().expect("checked to be origin-form");
        parts.uri = cfg.origins[0].join(target, resolved);
        parts.version = Version::HTTP_11;
        parts.headers = headers;
        parts
    }
}

/// What picks the Ollama box for a `method` request to `endpoint`. Only a
/// `GET` or `HEAD` of a listing asks every box (Ollama answers no other
/// method there; one box answers that).
fn routing(endpoint: &Endpoint, method: &Method) -> Routing {
    match &endpoint.model {
        ModelSource::Listing(_) if method != Method::GET && method != Method::HEAD => Routing::Any,
        ModelSource::Body { watched, .. } => Routing::Body {
            watched: *watched,
            manage: endpoint.management,
        },
        ModelSource::Path(model) => Routing::Path(model.clone()),
        ModelSource::Listing(kind) => Routing::Listing {
            kind: *kind,
            probe: endpoint.probe,
        },
        ModelSource::Blobs => Routing::Manage,
        ModelSource::Query => Routing::Any,
    }
}

fn is_health_check(request: &request::Parts) -> bool {
    (request.method == Method::GET || request.method == Method::HEAD)
        && request.uri.path() == HEALTHZ_PATH
}

/// The declared body length. Several `Content-Length` values must agree,
/// and a `Transfer-Encoding` beside it is refused ([`framed_twice`]).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    if framed_twice(headers) {
        return Err(ProxyError::BadRequest);
    }
    declared_length(headers).map_err(|_| ProxyError::BadRequest)
}

/// Removes the `Authorization` header when it carries a configured token
/// anywhere in it; otherwise it is a credential meant for the origin and
/// passes. All of it goes, not just the matching value, because a runtime may
/// hand over repeated fields joined into one.
fn drop_proxy_authorization(ours: bool, headers: &mut HeaderMap) {
    if ours {
        headers.remove(header::AUTHORIZATION);
    } else if let header::Entry::Occupied(mut entry) = headers.entry(header::AUTHORIZATION) {
        for value in entry.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
