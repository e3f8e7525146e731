//! Removal of hop-by-hop headers (RFC 9110 §7.6.1), in both directions.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection rather than the message, plus the
/// proxy-credential pair that is meant for a proxy, never for the origin.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes every hop-by-hop header from `headers`: the fixed set above and
/// every header named in any `Connection` value.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, and a message has a handful of
    // headers: looking at each name once is cheaper than a hashed removal
    // for each of the nine (which was a twentieth of a small request).
    let mut found: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) {
            found.push(name.clone());
        }
    }
    if found.is_empty() {
        return;
    }
    let nominated =
        connection_tokens(headers).filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok());
    found.extend(nominated);
    for name in found {
        headers.remove(name);
    }
}

/// The tokens of every `Connection` value, trimmed (the headers it
/// nominates, `close`, `keep-alive`); a value that is not text has none.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn removes_fixed_set_and_nominated_headers() {
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive, X-Foo"));
        h.append("connection", HeaderValue::from_static("x-bar"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "left: {h:?}");
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn a_message_without_any_keeps_every_header() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-foo", HeaderValue::from_static("1"));
        h.append("x-foo", HeaderValue::from_static("2"));
        h.insert("proxy-status", HeaderValue::from_static("x"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        // Only the fixed set nominates: a header named in `Connection`
        // goes with it, one that merely looks nominated stays.
        h.insert("connection", HeaderValue::from_static("x-foo"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("x-foo") && !h.contains_key("connection"));
        assert!(h.contains_key("proxy-status") && h.contains_key("content-type"));
    }
}
