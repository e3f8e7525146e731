//! Several Ollama boxes natively: the core's [`Backends`] behind one mutex
//! shared by every server thread, the clock it is given, the probes it asks
//! for (run on the main runtime, see [`Pool::probe_forever`]) and each box's
//! metrics. With one box none of this runs: requests go straight to it, as
//! they always did.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use ollama_proxy_core::{
    failing_status, Backends, Exchange, HealthPolicy, Origin, Probe, Reason, Route,
    MAX_LISTING_BYTES,
};

use crate::live::Live;
use crate::metrics::Metrics;

/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the probe loop asks the core what is due.
const PROBE_TICK: Duration = Duration::from_secs(1);

/// One box as `/readyz` shows it.
pub(crate) struct BackendState {
    pub(crate) origin: String,
    pub(crate) up: bool,
    pub(crate) in_flight: u32,
}

/// What the core knows of the boxes, shared by every thread.
pub struct Pool {
    state: Mutex<Backends>,
    epoch: Instant,
    names: Vec<Arc<str>>,
    metrics: Arc<Metrics>,
    /// Probes under way, so a slow one is not asked twice.
    probing: Mutex<HashSet<(usize, Probe)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origins", &self.names)
            .finish()
    }
}

impl Pool {
    /// The boxes of `origins`, none known yet.
    pub fn new(origins: &[Origin], policy: HealthPolicy, metrics: Arc<Metrics>) -> Arc<Self> {
        let names: Vec<Arc<str>> = origins.iter().map(|o| Arc::from(o.to_string())).collect();
        if names.len() > 1 {
            for name in &names {
                metrics.backend_up(name, true);
            }
        }
        Arc::new(Self {
            state: Mutex::new(Backends::new(origins.len(), policy)),
            epoch: Instant::now(),
            names,
            metrics,
            probing: Mutex::new(HashSet::new()),
        })
    }

    /// Whether there are several boxes (else requests go to the one).
    pub(crate) fn several(&self) -> bool {
        self.names.len() > 1
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Backends> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the request goes (see [`Exchange::choose_backends`]).
    pub(crate) fn route(
        &self,
        exchange: &mut Exchange,
        named: Option<&str>,
    ) -> Result<Route, Box<Response<Bytes>>> {
        let now = self.now_us();
        exchange.choose_backends(&self.lock(), named, now)
    }

    /// A request goes to `backend`, chosen for `reason`: counted in flight
    /// until the returned guard is dropped.
    pub(crate) fn start(self: &Arc<Self>, backend: usize, reason: Reason) -> InFlight {
        self.lock().started(backend);
        let name = &self.names[backend];
        self.metrics.backend_request(name, reason.as_str());
        self.metrics.backend_in_flight(name, 1);
        InFlight {
            pool: Arc::clone(self),
            backend,
        }
    }

    /// `backend` failed (`kind`: connect, reset, status, stream, probe).
    pub(crate) fn failed(&self, backend: usize, kind: &'static str) {
        let now = self.now_us();
        let mut state = self.lock();
        state.failed(backend, now);
        let up = state.is_up(backend, now);
        drop(state);
        self.metrics.backend_error(&self.names[backend], kind);
        self.metrics.backend_up(&self.names[backend], up);
    }

    /// An answer from `backend` (see [`Backends::observed`]).
    pub(crate) fn observed(&self, backend: usize, status: http::StatusCode, model: Option<&str>) {
        let now = self.now_us();
        let mut state = self.lock();
        state.observed(backend, status.as_u16(), model, now);
        let up = state.is_up(backend, now);
        drop(state);
        if failing_status(status.as_u16()) {
            self.metrics.backend_error(&self.names[backend], "status");
        }
        self.metrics.backend_up(&self.names[backend], up);
    }

    /// What a listing from `backend` tells of it.
    pub(crate) fn learnt(&self, backend: usize, probe: Probe, body: &[u8]) {
        let now = self.now_us();
        self.lock().learnt(backend, probe, body, now);
    }

    /// Requests in flight on every box together.
    pub fn in_flight(&self) -> u32 {
        let state = self.lock();
        (0..self.names.len()).map(|i| state.in_flight(i)).sum()
    }

    /// Each box's state, in configured order.
    pub(crate) fn states(&self) -> Vec<BackendState> {
        let now = self.now_us();
        let state = self.lock();
        self.names
            .iter()
            .enumerate()
            .map(|(i, name)| BackendState {
                origin: name.to_string(),
                up: state.is_up(i, now),
                in_flight: state.in_flight(i),
            })
            .collect()
    }

    /// Asks each box what the core wants to know, when it wants to know
    /// it, until dropped: lists of models and loaded models, and failing
    /// boxes once their backoff is over. Does nothing with one box.
    pub async fn probe_forever(self: Arc<Self>, proxy: Live, connect_timeout: Duration) {
        if !self.several() {
            return std::future::pending().await;
        }
        let origins = proxy.load().config().origins().to_vec();
        let client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>> =
            match crate::client::build_for(&origins, connect_timeout) {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(%error, "cannot build the probes' client");
                    return std::future::pending().await;
                }
            };
        let mut tick = tokio::time::interval(PROBE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = {
                let now = self.now_us();
                self.lock().due(now)
            };
            for (backend, probe) in due {
                if !self
                    .probing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((backend, probe))
                {
                    continue;
                }
                let pool = Arc::clone(&self);
                let client = client.clone();
                let head = proxy.load().probe_request(backend, probe);
                tokio::spawn(async move {
                    pool.probe(&client, head, backend, probe).await;
                    pool.probing
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(backend, probe));
                });
            }
        }
    }

    async fn probe(
        &self,
        client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
        head: http::request::Parts,
        backend: usize,
        probe: Probe,
    ) {
        let asked = async {
            let response = client
                .request(Request::from_parts(head, Empty::new()))
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_LISTING_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
            Ok(Ok((status, body))) => {
                if status.is_success() {
                    self.learnt(backend, probe, &body);
                }
                self.observed(backend, status, None);
            }
            Ok(Err(error)) => {
                tracing::warn!(origin = %self.names[backend], %error, "probe failed");
                self.failed(backend, "probe");
            }
            Err(_) => {
                tracing::warn!(origin = %self.names[backend], "probe timed out");
                self.failed(backend, "probe");
            }
        }
    }
}

/// A request in flight on one box; counted until dropped.
pub(crate) struct InFlight {
    pool: Arc<Pool>,
    backend: usize,
}

impl InFlight {
    /// The box's index.
    pub(crate) fn backend(&self) -> usize {
        self.backend
    }

    /// The box's answer broke off (a reset mid-stream).
    pub(crate) fn broke(&self) {
        self.pool.failed(self.backend, "stream");
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.lock().ended(self.backend);
        self.pool
            .metrics
            .backend_in_flight(&self.pool.names[self.backend], -1);
    }
}
