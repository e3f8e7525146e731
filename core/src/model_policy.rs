//! What a key's model allowlist asks of one request: refuse it now (the
//! model is in the path or query), read its body through a [`ModelGate`],
//! filter its answer (a listing), or nothing (keys without a list).
//!
//! [`ModelGate`]: crate::model_gate::ModelGate

use http::header::{self, HeaderMap};
use http::request;

use crate::auth::Key;
use crate::endpoint::{percent_decode, Endpoint, Listing, ModelSource, Watched};
use crate::error::ProxyError;
use crate::model_gate::Refusal;

/// The check a request needs after its head was accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ModelCheck {
    /// Nothing to check: the key may use every model, or the endpoint
    /// names none.
    #[default]
    Nothing,
    /// Read the body through a gate over these members.
    Body { watched: Watched, required: bool },
    /// Filter the listing in the answer.
    Listing(Listing),
}

/// Decides what `key`'s model list asks of a request to `endpoint`.
///
/// # Errors
/// The refusal, when the request can be refused from its head alone: a
/// model in the path or query the list does not allow, a transcription
/// whose model Go would read from the body, or a compressed body.
pub(crate) fn check(
    key: &Key,
    endpoint: &Endpoint,
    request: &request::Parts,
) -> Result<ModelCheck, Refusal> {
    let Some(list) = &key.policy.models else {
        return Ok(ModelCheck::Nothing);
    };
    let allowed = |model: String| {
        if list.allows(&model) {
            Ok(ModelCheck::Nothing)
        } else {
            Err(Refusal::new(ProxyError::ModelNotAllowed, Some(model)))
        }
    };
    match &endpoint.model {
        // Raw weights in, or a probe of which are there: not for a key
        // limited to some models.
        ModelSource::Blobs => Err(Refusal::new(ProxyError::ModelSourceNotAllowed, None)),
        ModelSource::Listing(kind) => Ok(ModelCheck::Listing(*kind)),
        ModelSource::Path(model) => allowed(model.clone()),
        ModelSource::Query => {
            // Go's FormValue reads a urlencoded body before the query, and
            // a multipart form after it: only the query can be checked.
            if form_body_comes_first(&request.headers) {
                return Err(Refusal::new(ProxyError::ModelRequired, None));
            }
            match request
                .uri
                .query()
                .and_then(|q| first_query_value(q, "model"))
            {
                Some(model) => allowed(model),
                None => Err(Refusal::new(ProxyError::ModelRequired, None)),
            }
        }
        ModelSource::Body { watched, required } => {
            if compressed(&request.headers) {
                // Ollama decompresses some bodies (zstd on /v1); the proxy
                // cannot read them, so it cannot let them through.
                return Err(Refusal::new(ProxyError::ModelRequired, None));
            }
            Ok(ModelCheck::Body {
                watched: *watched,
                required: *required,
            })
        }
    }
}

/// A `Content-Encoding` other than `identity`.
fn compressed(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|c| {
            !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity")
        })
    })
}

/// Whether Go would take form values from the body before the query: a
/// urlencoded body, or a `Content-Type` that is ambiguous (repeated).
fn form_body_comes_first(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (Some(_), Some(_)) => true,
        (Some(value), None) => {
            let media = value
                .as_bytes()
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default();
            media
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        }
        (None, _) => false,
    }
}

/// The first value of `name` in a query string, as Go's `url.ParseQuery`
/// reads it: `&`-separated pairs, a pair with `;` or a bad escape skipped,
/// `+` a space.
pub(crate) fn first_query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return None;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (query_unescape(key)? == name).then(|| query_unescape(value))?
    })
}

/// Go's `QueryUnescape`: `%XX` must be two hex digits, `+` is a space.
fn query_unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'%') {
        let ok = bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return None;
        }
    }
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Some(String::from_utf8_lossy(&percent_decode(&spaced)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_as_go_reads_them() {
        assert_eq!(
            first_query_value("model=llama3.2", "model").as_deref(),
            Some("llama3.2")
        );
        assert_eq!(
            first_query_value("x=1&model=a%3Ab&model=c", "model").as_deref(),
            Some("a:b")
        );
        assert_eq!(
            first_query_value("model=a;b&model=c", "model").as_deref(),
            Some("c")
        );
        assert_eq!(
            first_query_value("model=%zz&model=d", "model").as_deref(),
            Some("d")
        );
        assert_eq!(
            first_query_value("mod%65l=e+f", "model").as_deref(),
            Some("e f")
        );
        assert_eq!(first_query_value("Model=x", "model"), None);
        assert_eq!(first_query_value("", "model"), None);
        assert_eq!(first_query_value("model", "model").as_deref(), Some(""));
    }

    #[test]
    fn compressed_and_form_bodies() {
        let mut h = HeaderMap::new();
        assert!(!compressed(&h));
        h.insert(header::CONTENT_ENCODING, "identity".parse().unwrap());
        assert!(!compressed(&h));
        h.insert(header::CONTENT_ENCODING, "zstd".parse().unwrap());
        assert!(compressed(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().unwrap(),
        );
        assert!(!form_body_comes_first(&h));
        h.insert(
            header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded".parse().unwrap(),
        );
        assert!(form_body_comes_first(&h));
        h.append(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(form_body_comes_first(&h));
    }
}
