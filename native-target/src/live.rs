//! The proxy configuration in force, replaced whole when the keys document
//! is reloaded. A request takes the configuration at its start and keeps
//! what it decided with; the next request sees the new one.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use ollama_proxy_core::Proxy;

/// A shared handle on the current [`Proxy`].
#[derive(Clone, Debug)]
pub struct Live(Arc<ArcSwap<Proxy>>);

impl Live {
    /// Starts with `proxy`.
    pub fn new(proxy: Proxy) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(proxy)))
    }

    /// The configuration in force now (hold it briefly: across one decision).
    pub fn load(&self) -> Guard<Arc<Proxy>> {
        self.0.load()
    }

    /// Puts `proxy` in force for every request that starts from now on.
    pub fn replace(&self, proxy: Proxy) {
        self.0.store(Arc::new(proxy));
    }
}
