//! Listings the Worker reads whole: one box's, filtered for the key, or
//! several boxes' merged (then filtered).

use std::rc::Rc;

use ollama_proxy_core::{ProxyError, MAX_LISTING_BYTES};
use wasm_bindgen_futures::JsFuture;

use super::Forward;
use crate::backends;
use crate::convert::local_response;

impl Forward {
    /// A listing filtered for the key: read whole, filtered, answered.
    pub(super) async fn listing(
        mut self,
        head: http::response::Parts,
        upstream: &web_sys::Response,
    ) -> worker::Result<web_sys::Response> {
        let filtered = read_listing(upstream)
            .await
            .and_then(|all| self.exchange.filter_listing(&all));
        let (response, error) = match filtered {
            Ok(listing) => (http::Response::from_parts(head, listing), None),
            Err(error) => (self.exchange.error_response(error), Some(error)),
        };
        self.finish_line(response.status(), error);
        local_response(response)
    }

    /// A listing with several boxes: asked of each available one at once,
    /// each answer read whole, merged (then filtered for the key). A box
    /// that fails is left out; none answering is the first error.
    pub(super) async fn fan_out(
        mut self,
        route: &ollama_proxy_core::Route,
    ) -> worker::Result<web_sys::Response> {
        let proxy = Rc::clone(&self.proxy);
        let count = proxy.config().origins().len();
        let heads = route
            .candidates
            .iter()
            .map(|&b| {
                let mut sent = self.head.clone();
                proxy.aim(&mut sent, b);
                sent
            })
            .collect();
        let answers = backends::fetch_all(heads).await;
        let exchange = &self.exchange;
        let answers = backends::with(count, |state| {
            let now = backends::now_us();
            route
                .candidates
                .iter()
                .zip(answers)
                .map(|(&backend, answer)| match answer {
                    Some((head, body)) => {
                        state.observed(backend, head.status.as_u16(), None, now);
                        if let (true, Some(probe)) = (head.status.is_success(), exchange.probe()) {
                            state.learnt(backend, probe, &body, now);
                        }
                        Ok((head, bytes::Bytes::from(body)))
                    }
                    None => {
                        state.failed(backend, now);
                        Err(ProxyError::OriginUnreachable)
                    }
                })
                .collect()
        });
        let (response, error) = self.exchange.fan_in(answers);
        self.finish_line(response.status(), error);
        local_response(response)
    }
}

/// A listing's whole body (a small JSON document), at most
/// [`MAX_LISTING_BYTES`] of it.
async fn read_listing(response: &web_sys::Response) -> Result<Vec<u8>, ProxyError> {
    let unreadable = ProxyError::OriginListingUnreadable;
    let buffer = response.array_buffer().map_err(|_| unreadable)?;
    let buffer = JsFuture::from(buffer).await.map_err(|_| unreadable)?;
    let bytes = js_sys::Uint8Array::new(&buffer);
    if bytes.length() as usize > MAX_LISTING_BYTES {
        return Err(unreadable);
    }
    Ok(bytes.to_vec())
}
