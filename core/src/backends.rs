//! Several Ollama boxes behind one endpoint: where a request goes. Sans-IO:
//! the adapters tell it what they observed (listings of each box's models
//! and loaded models, connection failures, answers, requests in flight, the
//! time in microseconds of their own clock) and do the I/O it asks for; it
//! decides.
//!
//! - A request for model M goes to a backend that has M **loaded**
//!   (`/api/ps`), else one that **has** it (`/api/tags`), least in flight
//!   first; a backend whose models are not known yet comes after those.
//!   Nobody has M → `model_not_found`.
//! - A request without a model goes to any backend, least in flight first.
//! - Health is a circuit breaker per backend: a failure opens it for a
//!   backoff that doubles with each failure in a row (1 s up to 60 s); once
//!   the backoff is over the backend is tried again, and an answer closes it.
//!   When every backend is open, they are all tried anyway, the one that
//!   reopens first first: one backend behaves as if there were no breaker.
//! - A request whose connection failed before any byte of it was sent may go
//!   to the next candidate; once a byte went out, never (a generation is not
//!   idempotent).

use std::collections::HashSet;

use crate::gojson::unquote;
use crate::json_scan::{Kind, Scanner, Visitor};
use crate::models::ModelName;

/// How the breaker and the learning behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// The first backoff after a failure.
    pub backoff_us: u64,
    /// The longest backoff.
    pub max_backoff_us: u64,
    /// How old a backend's list of models may get before it is asked again.
    pub models_refresh_us: u64,
    /// How old its list of loaded models may get.
    pub loaded_refresh_us: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            backoff_us: 1_000_000,
            max_backoff_us: 60_000_000,
            models_refresh_us: 30_000_000,
            loaded_refresh_us: 5_000_000,
        }
    }
}

/// Why a backend was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It has the model loaded.
    Loaded,
    /// It has the model (not loaded).
    HasModel,
    /// The request names no model, or the backend's models are not known
    /// yet.
    Any,
    /// Every backend is failing: tried anyway.
    LastResort,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::HasModel => "has_model",
            Self::Any => "any",
            Self::LastResort => "last_resort",
        }
    }
}

/// What a request needs of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'m> {
    /// The model: a backend that has it loaded, else has it, else may.
    Model(&'m str),
    /// Model management (pull, create, copy, …) about a model: a backend
    /// that has it as for [`Need::Model`], else the first available in the
    /// configured order (where a pull or a create lands, predictably).
    Manage(Option<&'m str>),
    /// Nothing in particular: any backend, least in flight first.
    Any,
}

/// Whether an answer with this status is the origin's own failure (a
/// gateway or tunnel in front of Ollama that cannot reach it, or Ollama
/// refusing work): 502, 503, 504 and Cloudflare's 520–530. Ollama's
/// answers about a request (400, 404, 500 for a model that cannot load)
/// are not.
pub fn failing_status(status: u16) -> bool {
    matches!(status, 502..=504 | 520..=530)
}

/// Where a request may go, best first, and why the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Backend indexes, best first: the first, then the next if the
    /// connection to it fails before any byte is sent, and so on.
    pub candidates: Vec<usize>,
    /// Why the first was chosen.
    pub reason: Reason,
}

/// No backend for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No backend has the model (404 `model_not_found`).
    ModelNotFound,
}

/// How an attempt on a backend went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection failed before any byte of the request was sent.
    BeforeSent,
    /// It failed after (a reset, the origin's own 5xx, a broken stream).
    AfterSent,
}

/// What to ask a backend, when it is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `GET /api/tags`: its models.
    Models,
    /// `GET /api/ps`: its loaded models.
    Loaded,
}

#[derive(Clone, Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: u64,
}

#[derive(Clone, Debug, Default)]
struct Known {
    names: HashSet<String>,
    at_us: u64,
}

#[derive(Clone, Debug, Default)]
struct Backend {
    breaker: Breaker,
    models: Option<Known>,
    loaded: Option<Known>,
    in_flight: u32,
}

impl Backend {
    fn available(&self, now_us: u64) -> bool {
        self.breaker.open_until <= now_us
    }
}

/// What the core knows of the backends. See the module docs.
#[derive(Clone, Debug)]
pub struct Backends {
    policy: HealthPolicy,
    backends: Vec<Backend>,
}

/// A model name as the backends list it (`ollama list`'s form).
fn canonical(name: &str) -> Option<String> {
    ModelName::resolve(name).map(|m| m.display().to_owned())
}

impl Backends {
    /// `count` backends, none known yet.
    pub fn new(count: usize, policy: HealthPolicy) -> Self {
        Self {
            policy,
            backends: vec![Backend::default(); count],
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Where a request for `model` (or none) goes at `now_us`.
    pub fn route(&self, model: Option<&str>, now_us: u64) -> Result<Route, NoRoute> {
        self.route_for(model.map_or(Need::Any, Need::Model), now_us)
    }

    /// Where a request that needs `need` goes at `now_us`.
    pub fn route_for(&self, need: Need<'_>, now_us: u64) -> Result<Route, NoRoute> {
        match need {
            Need::Model(model) => self.rank(Some(model), now_us),
            Need::Any => self.rank(None, now_us),
            Need::Manage(model) => {
                let by_model = model.and_then(|m| self.rank(Some(m), now_us).ok());
                if let Some(route) =
                    by_model.filter(|r| matches!(r.reason, Reason::Loaded | Reason::HasModel))
                {
                    return Ok(route);
                }
                // In the configured order, available ones first.
                let mut order: Vec<(bool, usize)> = (0..self.backends.len())
                    .map(|i| (!self.backends[i].available(now_us), i))
                    .collect();
                order.sort_unstable();
                let reason = match order.first() {
                    Some((false, _)) => Reason::Any,
                    _ => Reason::LastResort,
                };
                Ok(Route {
                    candidates: order.into_iter().map(|(_, i)| i).collect(),
                    reason,
                })
            }
        }
    }

    fn rank(&self, model: Option<&str>, now_us: u64) -> Result<Route, NoRoute> {
        let wanted = model.map(|m| canonical(m).unwrap_or_else(|| m.to_ascii_lowercase()));
        let has = |known: &Option<Known>| match (&wanted, known) {
            (Some(m), Some(k)) => k.names.contains(m),
            _ => false,
        };
        // Classes, best first: 0 loaded, 1 has it, 2 not known yet (or no
        // model asked); `None`: it does not have the model.
        let class = |b: &Backend| -> Option<u8> {
            if wanted.is_none() {
                return Some(2);
            }
            if has(&b.loaded) {
                Some(0)
            } else if has(&b.models) {
                Some(1)
            } else if b.models.is_none() {
                Some(2)
            } else {
                None
            }
        };
        let mut ranked: Vec<(u8, u32, usize)> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.available(now_us))
            .filter_map(|(i, b)| class(b).map(|c| (c, b.in_flight, i)))
            .collect();
        ranked.sort_unstable();
        if let Some(&(best, _, _)) = ranked.first() {
            let reason = match (best, &wanted) {
                (0, _) => Reason::Loaded,
                (1, _) => Reason::HasModel,
                _ => Reason::Any,
            };
            return Ok(Route {
                candidates: ranked.into_iter().map(|(_, _, i)| i).collect(),
                reason,
            });
        }
        // Every backend that could serve it is failing: try them anyway,
        // the one that reopens first first.
        let mut failing: Vec<(u64, usize)> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| class(b).is_some())
            .map(|(i, b)| (b.breaker.open_until, i))
            .collect();
        failing.sort_unstable();
        if failing.is_empty() {
            return Err(NoRoute::ModelNotFound);
        }
        Ok(Route {
            candidates: failing.into_iter().map(|(_, i)| i).collect(),
            reason: Reason::LastResort,
        })
    }

    /// After `failure` on the `attempt`-th candidate of `route`, the next
    /// one to try, if the request may be tried again at all.
    pub fn retry(route: &Route, attempt: usize, failure: Failure) -> Option<usize> {
        match failure {
            Failure::BeforeSent => route.candidates.get(attempt + 1).copied(),
            Failure::AfterSent => None,
        }
    }

    /// A request started on `backend`.
    pub fn started(&mut self, backend: usize) {
        if let Some(b) = self.backends.get_mut(backend) {
            b.in_flight += 1;
        }
    }

    /// A request on `backend` ended (however it did).
    pub fn ended(&mut self, backend: usize) {
        if let Some(b) = self.backends.get_mut(backend) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }

    /// `backend` answered (it is up): its breaker closes. `model`, when the
    /// answer was a successful generation for it, is loaded there now.
    pub fn answered(&mut self, backend: usize, model: Option<&str>, now_us: u64) {
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        b.breaker = Breaker::default();
        if let Some(name) = model.and_then(canonical) {
            b.loaded
                .get_or_insert_with(|| Known {
                    names: HashSet::new(),
                    at_us: now_us,
                })
                .names
                .insert(name);
        }
    }

    /// `backend` answered with `status` at `now_us`: a failure of the box's
    /// own ([`failing_status`]) opens its breaker; any other answer closes
    /// it, and a successful one for `model` (a generation's) marks the model
    /// loaded there.
    pub fn observed(&mut self, backend: usize, status: u16, model: Option<&str>, now_us: u64) {
        if failing_status(status) {
            self.failed(backend, now_us);
        } else {
            let model = model.filter(|_| (200..300).contains(&status));
            self.answered(backend, model, now_us);
        }
    }

    /// `backend` failed at `now_us` (connection refused or reset, the
    /// origin's own 5xx, a broken stream): its breaker opens, for longer
    /// each failure in a row.
    pub fn failed(&mut self, backend: usize, now_us: u64) {
        let policy = self.policy;
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        let doublings = b.breaker.failures.min(16);
        let backoff = policy
            .backoff_us
            .saturating_mul(1 << doublings)
            .min(policy.max_backoff_us);
        b.breaker.failures = b.breaker.failures.saturating_add(1);
        b.breaker.open_until = now_us.saturating_add(backoff);
    }

    /// `backend`'s answer to a [`Probe`] (the body of its listing), read at
    /// `now_us`. An answer that is not a listing changes nothing.
    pub fn learnt(&mut self, backend: usize, probe: Probe, body: &[u8], now_us: u64) {
        let Some(names) = listed_names(body) else {
            return;
        };
        let Some(b) = self.backends.get_mut(backend) else {
            return;
        };
        let known = Some(Known {
            names: names.iter().filter_map(|n| canonical(n)).collect(),
            at_us: now_us,
        });
        match probe {
            Probe::Models => b.models = known,
            Probe::Loaded => b.loaded = known,
        }
    }

    /// What to ask which backend now: lists of models that were never
    /// read or are older than the policy allows, of available backends
    /// (and of failing ones whose backoff is over, which is also how they
    /// are found to be up again).
    pub fn due(&self, now_us: u64) -> Vec<(usize, Probe)> {
        let stale = |known: &Option<Known>, every: u64| {
            known
                .as_ref()
                .is_none_or(|k| now_us.saturating_sub(k.at_us) >= every)
        };
        let mut due = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            if !b.available(now_us) {
                continue;
            }
            // A failing backend whose backoff is over is asked too: its
            // answer is how it is found to be up again.
            if b.breaker.failures > 0 || stale(&b.models, self.policy.models_refresh_us) {
                due.push((i, Probe::Models));
            }
            if stale(&b.loaded, self.policy.loaded_refresh_us) {
                due.push((i, Probe::Loaded));
            }
        }
        due
    }

    /// Whether `backend` is taking requests at `now_us` (its breaker is
    /// closed, or its backoff is over).
    pub fn is_up(&self, backend: usize, now_us: u64) -> bool {
        self.backends
            .get(backend)
            .is_some_and(|b| b.available(now_us) && b.breaker.failures == 0)
    }

    /// Whether some backend that takes requests at `now_us` has never told
    /// its models: routing by model would be guessing, so an adapter that
    /// cannot probe in the background asks before routing.
    pub fn unknown(&self, now_us: u64) -> bool {
        self.backends
            .iter()
            .any(|b| b.available(now_us) && b.models.is_none())
    }

    /// Requests in flight on `backend`.
    pub fn in_flight(&self, backend: usize) -> u32 {
        self.backends.get(backend).map_or(0, |b| b.in_flight)
    }
}

/// The `name`/`model` of every entry of a `{"models": [...]}` listing
/// (`/api/tags`, `/api/ps`); `None` when the body is not one.
fn listed_names(body: &[u8]) -> Option<Vec<String>> {
    #[derive(Default)]
    struct Names {
        in_models: bool,
        name_next: bool,
        names: Vec<String>,
        listing: bool,
    }
    impl Visitor for Names {
        fn open(&mut self, kind: Kind, depth: u32, _at: u64) {
            if depth == 2 && self.in_models {
                self.listing = kind == Kind::Array;
            }
        }
        fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
            let name = raw.map(unquote);
            match depth {
                1 => self.in_models = name.as_deref() == Some("models"),
                3 if self.in_models => {
                    self.name_next = matches!(name.as_deref(), Some("name" | "model"));
                }
                _ => {}
            }
        }
        fn scalar(&mut self, kind: Kind, depth: u32, raw: Option<&[u8]>) {
            if depth == 3 && self.in_models && std::mem::take(&mut self.name_next) {
                if let (Kind::String, Some(raw)) = (kind, raw) {
                    self.names.push(unquote(raw));
                }
            }
        }
    }
    let mut names = Names::default();
    let mut scanner = Scanner::new(3);
    match scanner.feed(body, &mut names) {
        crate::json_scan::Progress::Done(_) if names.listing => Some(names.names),
        _ => None,
    }
}

#[cfg(test)]
#[path = "backends_tests.rs"]
mod tests;
