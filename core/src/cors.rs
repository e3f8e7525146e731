//! CORS for browser clients: preflights answered here, response headers set here.
//!
//! Credentials travel in headers, never cookies, so `Access-Control-Allow-Credentials`
//! is never sent and mirroring the requested headers is safe.

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

/// Methods a browser may use, as answered to preflights.
const ALLOW_METHODS: HeaderValue =
    HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
/// Headers allowed when the preflight names none. Mirroring is the rule; this
/// is only what a preflight without `Access-Control-Request-Headers` gets.
const DEFAULT_ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("authorization, cf-aig-authorization, content-type");
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");
const PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const ANY: HeaderValue = HeaderValue::from_static("*");

/// Which browser origins may read responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AllowOrigin {
    /// Every origin (`*`).
    Any,
    /// Exactly these origins, stored lowercase.
    List(Vec<String>),
}

/// Why a `CORS_ALLOWED_ORIGINS` entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BadOrigin(pub(crate) String);

impl AllowOrigin {
    /// Parses `*` or a comma-separated list of `scheme://host[:port]` origins.
    pub(crate) fn parse(raw: &str) -> Result<Self, BadOrigin> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(Self::Any);
        }
        let mut list = Vec::new();
        for entry in raw.split(',').map(str::trim) {
            if !is_serialized_origin(entry) {
                return Err(BadOrigin(entry.to_owned()));
            }
            list.push(entry.to_ascii_lowercase());
        }
        Ok(Self::List(list))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`,
    /// or `None` when that origin is not allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(ANY),
            Self::List(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter()
                    .any(|o| o.eq_ignore_ascii_case(text))
                    .then(|| origin.clone())
            }
        }
    }
}

/// `scheme://host[:port]` with an http(s) scheme and nothing after the authority.
fn is_serialized_origin(entry: &str) -> bool {
    let Some((scheme, rest)) = entry.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    let rest_ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    scheme_ok && rest_ok
}

/// The CORS part of one exchange: decided once from the request, applied to
/// whatever response the exchange ends with.
#[derive(Clone, Debug, Default)]
pub(crate) struct CorsHeaders {
    allow_origin: Option<HeaderValue>,
    vary_origin: bool,
}

impl CorsHeaders {
    pub(crate) fn for_request(allow: &AllowOrigin, request: &HeaderMap) -> Self {
        Self {
            allow_origin: allow.allow(single_origin(request)),
            vary_origin: matches!(allow, AllowOrigin::List(_)),
        }
    }

    /// Replaces any `Access-Control-*` headers in `headers` with the proxy's.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        remove_access_control(headers);
        if let Some(origin) = &self.allow_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            // So browser apps can quote the request id in bug reports.
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_REQUEST_ID);
        }
        if self.vary_origin {
            headers.append(header::VARY, VARY_ORIGIN);
        }
    }
}

/// What a browser script may read of a response beyond the safelisted
/// headers: the request id, and when and how much to retry.
const EXPOSE_REQUEST_ID: HeaderValue = HeaderValue::from_static(
    "x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests",
);

/// True for a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The headers of the answer to a preflight. An origin that is not allowed
/// gets none of the `Access-Control-Allow-*` headers, which browsers read as
/// a refusal.
pub(crate) fn preflight_headers(allow: &AllowOrigin, request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(header::VARY, PREFLIGHT_VARY);
    let Some(origin) = allow.allow(single_origin(request)) else {
        return out;
    };
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    let requested: Vec<&str> = request
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let allow_headers = match requested.as_slice() {
        [] => DEFAULT_ALLOW_HEADERS,
        values => HeaderValue::from_str(&values.join(", ")).unwrap_or(DEFAULT_ALLOW_HEADERS),
    };
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    out.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    out
}

/// The request's `Origin`, when it has exactly one. Repeated fields (which
/// some runtimes join with ", ") match no allowlist entry either way.
fn single_origin(request: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = request.get_all(header::ORIGIN).iter();
    match (values.next(), values.next()) {
        (Some(origin), None) => Some(origin),
        _ => None,
    }
}

fn remove_access_control(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
#[path = "cors_tests.rs"]
mod tests;
