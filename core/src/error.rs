//! Errors the proxy answers itself, in the shape the OpenAI SDKs understand.
//!
//! This is the one place that maps a failure to a status, an OpenAI error
//! `type` and `code`, and a message. Messages never contain a token.

use bytes::Bytes;
use http::StatusCode;

use crate::json;

/// The most characters of a requested model name an error echoes.
const MODEL_SHOWN: usize = 200;

/// A response the proxy makes itself instead of (or after failing at) forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyError {
    /// No bearer token in an accepted header (401).
    MissingToken,
    /// A bearer token that matches no configured key (401).
    InvalidToken,
    /// A key past its `expires` (401).
    ExpiredToken,
    /// A key marked `disabled` (401).
    DisabledToken,
    /// A model the key's allowlist does not cover (403).
    ModelNotAllowed,
    /// A key limited to some models sent a request whose model the proxy
    /// cannot read: no JSON object, no string `model`, a compressed body (400).
    ModelRequired,
    /// The request body names the model more than once (400): Ollama would
    /// use the last, so the proxy will not pick one.
    DuplicateModel,
    /// A key limited to some models asked for blobs, or to create a model
    /// from files, adapters or a remote host (403).
    ModelSourceNotAllowed,
    /// A key limited to some models sent more than the gate holds before
    /// naming its model (413).
    ModelNamedTooLate,
    /// A model-management endpoint while that is disabled (403).
    ModelManagementDisabled,
    /// No Ollama box behind the proxy has the model (404), as OpenAI
    /// answers an unknown model (the SDKs raise `NotFoundError`).
    ModelNotFound,
    /// A request target that is not an origin-form path (or whose path has
    /// a `\`), or a bad framing header (400).
    BadRequest,
    /// A request header value with bytes outside ASCII (400). Runtimes do not
    /// carry such bytes alike (the Workers runtime re-encodes them), so the
    /// proxy refuses them instead of forwarding something else.
    NonAsciiHeader,
    /// A request target (path and query) over 8 KiB (414).
    UriTooLong,
    /// Request headers over 64 KiB in total (431).
    HeadersTooLarge,
    /// The client stopped sending its request body for too long (408).
    RequestTimeout,
    /// A method the proxy does not forward, such as `CONNECT` (405).
    MethodNotAllowed,
    /// A request body over the configured limit (413).
    BodyTooLarge,
    /// The origin could not be reached or broke the exchange (502).
    OriginUnreachable,
    /// The origin did not answer in time (504).
    OriginTimeout,
    /// The origin's model listing could not be read (not the JSON Ollama
    /// sends, or too large), so it could not be filtered for the key (502).
    OriginListingUnreadable,
    /// The origin's stream broke after its head was sent (the status is
    /// already out; this is written into the stream, see
    /// [`Exchange::interrupted_stream_notice`](crate::Exchange::interrupted_stream_notice)).
    OriginStreamInterrupted,
    /// The proxy's own configuration is invalid (500); details go to the log only.
    Misconfigured,
    /// The key is over its `requests_per_minute` or `max_concurrent` (429).
    RateLimited,
    /// No turn on the GPU: the queue is full, or the request waited
    /// `QUEUE_TIMEOUT` (503).
    ServerBusy,
}

impl ProxyError {
    /// The HTTP status of this error.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken | Self::ExpiredToken | Self::DisabledToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::ModelManagementDisabled | Self::ModelNotAllowed | Self::ModelSourceNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Self::ModelNamedTooLate => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound => StatusCode::NOT_FOUND,
            Self::BadRequest
            | Self::NonAsciiHeader
            | Self::ModelRequired
            | Self::DuplicateModel => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::OriginUnreachable
            | Self::OriginStreamInterrupted
            | Self::OriginListingUnreadable => StatusCode::BAD_GATEWAY,
            Self::OriginTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::MissingToken | Self::InvalidToken | Self::ExpiredToken | Self::DisabledToken => {
                "invalid_request_error"
            }
            Self::ModelManagementDisabled | Self::ModelNotAllowed | Self::ModelSourceNotAllowed => {
                "permission_error"
            }
            Self::ModelRequired
            | Self::DuplicateModel
            | Self::ModelNamedTooLate
            | Self::ModelNotFound => "invalid_request_error",
            Self::BadRequest
            | Self::NonAsciiHeader
            | Self::UriTooLong
            | Self::HeadersTooLarge
            | Self::RequestTimeout
            | Self::MethodNotAllowed
            | Self::BodyTooLarge => "invalid_request_error",
            Self::OriginUnreachable
            | Self::OriginTimeout
            | Self::OriginStreamInterrupted
            | Self::OriginListingUnreadable
            | Self::Misconfigured => "api_error",
            // OpenAI's own type for a request-rate limit.
            Self::RateLimited => "requests",
            Self::ServerBusy => "server_error",
        }
    }

    /// The OpenAI error `code`, stable for clients to match on.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_api_key",
            Self::InvalidToken => "invalid_api_key",
            Self::ExpiredToken => "expired_api_key",
            Self::DisabledToken => "disabled_api_key",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::ModelRequired => "model_required",
            Self::DuplicateModel => "duplicate_model",
            Self::ModelSourceNotAllowed => "model_source_not_allowed",
            Self::ModelNamedTooLate => "model_named_too_late",
            Self::ModelManagementDisabled => "model_management_disabled",
            Self::ModelNotFound => "model_not_found",
            Self::BadRequest => "bad_request",
            Self::NonAsciiHeader => "invalid_header_value",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "request_headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "request_too_large",
            Self::OriginUnreachable => "origin_unreachable",
            Self::OriginTimeout => "origin_timeout",
            Self::OriginListingUnreadable => "origin_listing_unreadable",
            Self::OriginStreamInterrupted => "origin_stream_interrupted",
            Self::Misconfigured => "proxy_misconfigured",
            Self::RateLimited => "rate_limit_exceeded",
            Self::ServerBusy => "server_busy",
        }
    }

    /// A human-readable message. Never contains request data.
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingToken => {
                "Missing API key. Send it as `cf-aig-authorization: Bearer <token>` or `Authorization: Bearer <token>`."
            }
            Self::InvalidToken => "Invalid API key.",
            Self::ExpiredToken => "This API key has expired.",
            Self::DisabledToken => "This API key is disabled.",
            Self::ModelNotAllowed => "This API key may not use this model.",
            Self::ModelRequired => {
                "This API key may only use some models, so the request must name its model where the proxy can read it: a JSON object with a string `model` (not compressed; for /v1/audio/transcriptions, `?model=` in the query)."
            }
            Self::DuplicateModel => "The request names the model more than once.",
            Self::ModelSourceNotAllowed => {
                "This API key may only use the models in its list: it cannot use blobs, or create a model from files, adapters or a remote host."
            }
            Self::ModelNamedTooLate => {
                "This API key may only use some models, and the request body did not name its model within its first 32 MiB; send `model` earlier in the body."
            }
            Self::ModelManagementDisabled => {
                "Model management endpoints (pull, push, create, delete, copy, blobs) and account endpoints (me, signout, user) are disabled for this API key."
            }
            Self::ModelNotFound => "The model does not exist on any Ollama server behind this proxy.",
            Self::BadRequest => "The request is malformed.",
            Self::NonAsciiHeader => {
                "A request header value contains non-ASCII bytes; encode it (for example percent-encoding or RFC 8187) before sending."
            }
            Self::UriTooLong => "The request path and query are longer than 8 KiB.",
            Self::HeadersTooLarge => "The request headers are larger than 64 KiB in total.",
            Self::RequestTimeout => "The request body did not arrive in time.",
            Self::MethodNotAllowed => "This method is not supported by the proxy.",
            Self::BodyTooLarge => "The request body is larger than this proxy accepts.",
            Self::OriginUnreachable => "The Ollama origin could not be reached or closed the connection.",
            Self::OriginTimeout => "The Ollama origin did not answer in time.",
            Self::OriginListingUnreadable => {
                "The Ollama origin's model list could not be read, so it could not be filtered for this API key."
            }
            Self::OriginStreamInterrupted => {
                "The Ollama origin's stream broke off before it was complete."
            }
            Self::Misconfigured => "The proxy is misconfigured; see its logs.",
            Self::RateLimited => "Rate limit reached for this API key. Try again later.",
            Self::ServerBusy => "The server is busy. Try again shortly.",
        }
    }

    /// The JSON body: `{"error":{"message","type","param","code"}}`.
    pub fn body(self) -> Bytes {
        self.render(self.message(), None)
    }

    /// The body of a refusal about one model: the message names the model
    /// the client asked for (never what the key may use instead), and
    /// `param` is `model`, as OpenAI does.
    pub(crate) fn body_for_model(self, model: &str) -> Bytes {
        // A model name is short; a longer one is cut, not echoed whole.
        let shown: String = model.chars().take(MODEL_SHOWN).collect();
        let message = match self {
            Self::ModelNotAllowed => format!("This API key may not use the model `{shown}`."),
            Self::ModelNotFound => format!(
                "The model `{shown}` does not exist on any Ollama server behind this proxy."
            ),
            other => other.message().to_owned(),
        };
        self.render(&message, Some("model"))
    }

    /// The JSON body with a message of the caller's (which must not carry
    /// request data either).
    pub(crate) fn body_with(self, message: &str) -> Bytes {
        self.render(message, None)
    }

    fn render(self, message: &str, param: Option<&str>) -> Bytes {
        let mut out = String::with_capacity(160 + message.len());
        out.push_str("{\"error\":{\"message\":");
        json::push_str(&mut out, message);
        out.push_str(",\"type\":");
        json::push_str(&mut out, self.kind());
        out.push_str(",\"param\":");
        match param {
            Some(param) => json::push_str(&mut out, param),
            None => out.push_str("null"),
        }
        out.push_str(",\"code\":");
        json::push_str(&mut out, self.code());
        out.push_str("}}");
        Bytes::from(out)
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}
