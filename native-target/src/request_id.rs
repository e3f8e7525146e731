//! Fresh request ids without a system call per request: each server thread
//! draws a random seed once and takes ids from the core's generator.

use std::cell::RefCell;

use http::HeaderValue;
use ollama_proxy_core::RequestIds;

thread_local! {
    static IDS: RefCell<RequestIds> = {
        let mut seed = [0u8; 16];
        // Without a random source the ids are still unique per thread.
        let _ = getrandom::getrandom(&mut seed);
        let (prefix, start) = seed.split_at(8);
        RefCell::new(RequestIds::new(
            u64::from_le_bytes(prefix.try_into().unwrap_or_default()),
            u64::from_le_bytes(start.try_into().unwrap_or_default()),
        ))
    };
}

/// A new id: 32 hex digits.
pub(crate) fn fresh() -> HeaderValue {
    IDS.with(|ids| ids.borrow_mut().next())
}
