//! Request ids: the client's `X-Request-Id` when it is usable, else the
//! fresh one the adapter generated. The id goes to the origin, back to the
//! client, and into the adapters' log lines.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// The client's id if there is exactly one and it is 1–128 visible ASCII
/// characters (no spaces, so a runtime's comma-joined repeats never pass),
/// else `fresh`.
pub(crate) fn pick(headers: &HeaderMap, fresh: Option<HeaderValue>) -> Option<HeaderValue> {
    let mut values = headers.get_all(X_REQUEST_ID).iter();
    if let (Some(value), None) = (values.next(), values.next()) {
        let bytes = value.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_LEN
            && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Some(value.clone());
        }
    }
    fresh
}

/// A fresh id from 128 bits the caller drew (from a random source, or a
/// random prefix and a counter): 32 lowercase hex digits.
pub fn format_request_id(high: u64, low: u64) -> HeaderValue {
    let text = format!("{high:016x}{low:016x}");
    HeaderValue::from_str(&text).expect("hex digits are a valid header value")
}
