//! What a scenario runs against: a proxy target started with some config,
//! in front of a fresh mock origin.

use std::future::Future;
use std::net::SocketAddr;

use crate::origin::MockOrigin;

/// The token every harness configures as `AIG_AUTH_TOKEN`.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Configuration variables by name, as both targets read them.
pub type Vars = Vec<(String, String)>;

/// A way to run the proxy: natively, or as a Worker in workerd.
pub trait Target: Sync {
    /// `native` or `worker`: which expectations apply where targets differ.
    const NAME: &'static str;

    /// Starts the proxy with `vars` and returns its address and a guard that
    /// stops it when dropped.
    fn launch(&self, vars: &Vars) -> impl Future<Output = (SocketAddr, Box<dyn Send>)> + Send;

    /// What the runtime under this target does differently on its own,
    /// before or around the proxy's code. Each is listed and explained where
    /// a target sets it; the scenarios check the runtime's behaviour instead.
    fn quirks(&self) -> Quirks {
        Quirks::default()
    }
}

/// Runtime behaviour outside the proxy's control (none for the native target).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quirks {
    /// The runtime answers an absolute-form request target
    /// (`GET http://host/path`) itself, with an error, before the proxy runs.
    pub refuses_absolute_form: bool,
    /// The runtime does not notice a client that leaves before the response
    /// head, so the origin request is not cancelled until the origin answers.
    pub misses_disconnect_before_response: bool,
    /// The runtime ends a chunked response whose body stream failed with
    /// the final chunk, as if it were complete.
    pub ends_broken_streams_cleanly: bool,
    /// The runtime reports a connection refused and one lost after the
    /// request went out alike, so a request with a body whose connection
    /// failed is not sent to the next box (only `GET` and `HEAD` are).
    pub cannot_tell_refused_from_lost: bool,
}

/// A running proxy in front of a fresh mock origin.
pub struct Harness {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The origin behind it.
    pub origin: MockOrigin,
    _running: Box<dyn Send>,
}

impl Harness {
    /// Starts a mock origin and the target in front of it. `extra` overrides
    /// the defaults (`OLLAMA_ORIGIN` = the mock, `AIG_AUTH_TOKEN` = [`TOKEN`]).
    pub async fn start<T: Target>(target: &T, extra: &[(&str, &str)]) -> Self {
        Self::start_at(target, "", extra).await
    }

    /// Like [`Harness::start`], with `OLLAMA_ORIGIN` carrying a base path.
    pub async fn start_at<T: Target>(target: &T, base_path: &str, extra: &[(&str, &str)]) -> Self {
        let origin = MockOrigin::start().await;
        let mut vars: Vars = vec![
            (
                "OLLAMA_ORIGIN".into(),
                format!("{}{base_path}", origin.url()),
            ),
            ("AIG_AUTH_TOKEN".into(), TOKEN.into()),
        ];
        for (name, value) in extra {
            vars.retain(|(n, _)| n != name);
            vars.push(((*name).into(), (*value).into()));
        }
        let (proxy, running) = target.launch(&vars).await;
        Self {
            proxy,
            origin,
            _running: running,
        }
    }
}

/// `Bearer <TOKEN>` in the proxy's own header.
pub const AUTH: (&str, &str) = ("cf-aig-authorization", "Bearer test-token-0123456789abcdef");

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
