//! Errors the proxy answers itself, in the shape the OpenAI SDKs understand.
//!
//! This is the one place that maps a failure to a status, an OpenAI error
//! `type` and `code`, and a message. Messages never contain a token.

use bytes::Bytes;
use http::StatusCode;

use crate::json;

/// A response the proxy makes itself instead of (or after failing at) forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyError {
    /// No bearer token in an accepted header (401).
    MissingToken,
    /// A bearer token that matches no configured key (401).
    InvalidToken,
    /// A model-management endpoint while that is disabled (403).
    ModelManagementDisabled,
    /// A request target that is not an origin-form path, or a bad framing header (400).
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
    /// The origin's stream broke after its head was sent (the status is
    /// already out; this is written into the stream, see
    /// [`Exchange::interrupted_stream_notice`](crate::Exchange::interrupted_stream_notice)).
    OriginStreamInterrupted,
    /// The proxy's own configuration is invalid (500); details go to the log only.
    Misconfigured,
}

impl ProxyError {
    /// The HTTP status of this error.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::ModelManagementDisabled => StatusCode::FORBIDDEN,
            Self::BadRequest | Self::NonAsciiHeader => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::OriginUnreachable | Self::OriginStreamInterrupted => StatusCode::BAD_GATEWAY,
            Self::OriginTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error `type`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::MissingToken | Self::InvalidToken => "invalid_request_error",
            Self::ModelManagementDisabled => "permission_error",
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
            | Self::Misconfigured => "api_error",
        }
    }

    /// The OpenAI error `code`, stable for clients to match on.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_api_key",
            Self::InvalidToken => "invalid_api_key",
            Self::ModelManagementDisabled => "model_management_disabled",
            Self::BadRequest => "bad_request",
            Self::NonAsciiHeader => "invalid_header_value",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "request_headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "request_too_large",
            Self::OriginUnreachable => "origin_unreachable",
            Self::OriginTimeout => "origin_timeout",
            Self::OriginStreamInterrupted => "origin_stream_interrupted",
            Self::Misconfigured => "proxy_misconfigured",
        }
    }

    /// A human-readable message. Never contains request data.
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingToken => {
                "Missing API key. Send it as `cf-aig-authorization: Bearer <token>` or `Authorization: Bearer <token>`."
            }
            Self::InvalidToken => "Invalid API key.",
            Self::ModelManagementDisabled => {
                "Model management endpoints (pull, push, create, delete, copy, blobs) are disabled on this proxy."
            }
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
            Self::OriginStreamInterrupted => {
                "The Ollama origin's stream broke off before it was complete."
            }
            Self::Misconfigured => "The proxy is misconfigured; see its logs.",
        }
    }

    /// The JSON body: `{"error":{"message","type","param","code"}}`.
    pub fn body(self) -> Bytes {
        let mut out = String::with_capacity(160);
        out.push_str("{\"error\":{\"message\":");
        json::push_str(&mut out, self.message());
        out.push_str(",\"type\":");
        json::push_str(&mut out, self.kind());
        out.push_str(",\"param\":null,\"code\":");
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
