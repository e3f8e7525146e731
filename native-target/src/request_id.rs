//! Fresh request ids without a system call per request: each server thread
//! draws a random 64-bit prefix once, then counts.

use std::cell::Cell;

use http::HeaderValue;
use ollama_proxy_core::format_request_id;

thread_local! {
    /// This thread's random prefix and its next counter value.
    static STATE: (u64, Cell<u64>) = {
        let mut seed = [0u8; 16];
        // Without a random source the ids are still unique per thread.
        let _ = getrandom::getrandom(&mut seed);
        let prefix = u64::from_le_bytes(seed[..8].try_into().unwrap_or_default());
        let start = u64::from_le_bytes(seed[8..].try_into().unwrap_or_default());
        (prefix, Cell::new(start))
    };
}

/// A new id: 32 hex digits, unique within the process, and across
/// processes with high probability.
pub(crate) fn fresh() -> HeaderValue {
    STATE.with(|(prefix, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        // Mixed (splitmix64) so consecutive ids do not look sequential.
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format_request_id(*prefix, z ^ (z >> 31))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| super::fresh()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }
}
