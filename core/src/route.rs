//! Labels for logs and metrics: the API family of a request path, and the
//! class of a status, the same on both targets.

/// The API family of a request, by path prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteFamily {
    /// The OpenAI-compatible API under `/v1`.
    OpenAi,
    /// Ollama's native API under `/api`.
    Ollama,
    /// Anything else (health checks, unknown paths).
    Other,
}

impl RouteFamily {
    /// Classifies a request path.
    pub fn of(path: &str) -> Self {
        if path == "/v1" || path.starts_with("/v1/") {
            Self::OpenAi
        } else if path == "/api" || path.starts_with("/api/") {
            Self::Ollama
        } else {
            Self::Other
        }
    }

    /// A short label: `v1`, `api` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "v1",
            Self::Ollama => "api",
            Self::Other => "other",
        }
    }
}

/// The class of a status for metrics: `1xx` … `5xx`.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
