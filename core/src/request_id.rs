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

/// A fresh id from 128 bits: 32 lowercase hex digits.
pub fn format_request_id(high: u64, low: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    let bits = (u128::from(high) << 64) | u128::from(low);
    for (at, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * at)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// Request ids without a random draw per request: a random 64-bit prefix
/// drawn once by the adapter (per thread natively, per isolate in the
/// Worker), then a counter, mixed (splitmix64) so consecutive ids neither
/// look sequential nor reveal how many requests came before. Unique per
/// source, and across sources with high probability.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: u64,
}

impl RequestIds {
    /// A source from 128 random bits (the counter starts at the second half).
    pub fn new(prefix: u64, start: u64) -> Self {
        Self {
            prefix,
            next: start,
        }
    }

    /// The next id.
    #[allow(clippy::should_implement_trait)] // infinite; not worth an Iterator
    pub fn next(&mut self) -> HeaderValue {
        let n = self.next;
        self.next = n.wrapping_add(1);
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format_request_id(self.prefix, z ^ (z >> 31))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_and_distinct() {
        let mut ids = super::RequestIds::new(7, 0);
        let all: std::collections::HashSet<_> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(all.len(), 10_000);
        for id in all.iter().take(10) {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }

    #[test]
    fn an_id_is_both_halves_in_lowercase_hex() {
        for (high, low) in [(0, 0), (1, 0xabc), (u64::MAX, 0x0123_4567_89ab_cdef)] {
            assert_eq!(
                super::format_request_id(high, low).to_str().unwrap(),
                format!("{high:016x}{low:016x}")
            );
        }
    }
}
