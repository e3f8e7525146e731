//! The doorman's I/O natively: one core [`Doorman`] for the whole process
//! (every per-core runtime shares it behind a mutex), the clock it is given,
//! the waiting requests' wake-ups, and the leases' release when an answer
//! ends. What a request may do is the doorman's decision, never this file's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ollama_proxy_core::{
    Admission, Doorman, Grant, Lease, RateState, Ticket, Turn, TurnLimits, TurnRefusal,
};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// What a waiting request is told.
enum Verdict {
    Granted(Lease),
    Expired,
}

struct Inner {
    doorman: Doorman,
    waiters: HashMap<Ticket, oneshot::Sender<Verdict>>,
}

/// The doorman and everyone waiting on it. `MAX_CONCURRENT` and the rest
/// come from the environment, which a reload does not change: the limits
/// are set once; the keys' own limits come with each request.
pub struct Turns {
    inner: Mutex<Inner>,
    /// Time zero of the doorman's clock.
    epoch: Instant,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Turns")
            .field("limits", &inner.doorman.limits())
            .field("in_flight", &inner.doorman.in_flight())
            .field("queued", &inner.doorman.queued())
            .finish()
    }
}

/// A request let through: hold `lease` until its answer has ended.
pub(crate) struct Admitted {
    pub(crate) lease: Option<LeaseGuard>,
    pub(crate) rate: Option<RateState>,
    /// How long it waited for its turn.
    pub(crate) waited: Duration,
}

impl Turns {
    /// A doorman with `limits` (see [`TurnLimits`]), counting into `metrics`.
    pub fn new(limits: TurnLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                doorman: Doorman::new(limits),
                waiters: HashMap::new(),
            }),
            epoch: Instant::now(),
            metrics,
        })
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn instant(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the doorman consistent
        // (every method completes its bookkeeping before it can panic).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `turn`, waiting in the queue if the doorman says so. A
    /// caller that is dropped while waiting (its client left) leaves the
    /// queue at once.
    pub(crate) async fn take(self: &Arc<Self>, turn: &Turn) -> Result<Admitted, TurnRefusal> {
        let (ticket, deadline, rate, rx) = {
            let mut inner = self.lock();
            let admission = inner.doorman.admit(turn, self.now_us());
            match admission {
                Admission::Go { lease, rate } => {
                    return Ok(Admitted {
                        lease: lease.map(|lease| self.guard(lease)),
                        rate,
                        waited: Duration::ZERO,
                    })
                }
                Admission::Refuse(refusal) => {
                    drop(inner);
                    self.metrics.turn_refused(turn.key(), &refusal);
                    return Err(refusal);
                }
                Admission::Wait {
                    ticket,
                    deadline_us,
                    rate,
                } => {
                    let (tx, rx) = oneshot::channel();
                    inner.waiters.insert(ticket, tx);
                    self.metrics.queue_depth(inner.doorman.queued());
                    (ticket, deadline_us, rate, rx)
                }
            }
        };
        // Read the clock only for a request that waits (most go at once).
        let started = Instant::now();
        let mut waiting = Waiting {
            turns: Arc::clone(self),
            ticket,
            rx,
            settled: false,
        };
        let mut deadline = deadline;
        let verdict = loop {
            tokio::select! {
                verdict = &mut waiting.rx => break verdict.ok(),
                () = tokio::time::sleep_until(self.instant(deadline).into()) => {
                    // The doorman says who expired (this request, or one
                    // whose own timer has not fired yet).
                    let now = self.now_us();
                    let mut inner = self.lock();
                    for expired in inner.doorman.expire(now) {
                        if let Some(tx) = inner.waiters.remove(&expired) {
                            let _ = tx.send(Verdict::Expired);
                        }
                    }
                    self.metrics.queue_depth(inner.doorman.queued());
                    // Never spin on a deadline the doorman does not see yet.
                    deadline = deadline.max(now + 1_000);
                }
            }
        };
        waiting.settled = true;
        let waited = started.elapsed();
        self.metrics.queue_waited(waited);
        match verdict {
            Some(Verdict::Granted(lease)) => Ok(Admitted {
                lease: Some(self.guard(lease)),
                rate,
                waited,
            }),
            // The sender is only dropped after a send; treat a lost one as
            // the wait running out.
            Some(Verdict::Expired) | None => {
                self.metrics
                    .turn_refused(turn.key(), &TurnRefusal::QueueTimeout);
                Err(TurnRefusal::QueueTimeout)
            }
        }
    }

    fn guard(self: &Arc<Self>, lease: Lease) -> LeaseGuard {
        let in_flight = self.metrics.lease_started(lease.key());
        LeaseGuard {
            turns: Arc::clone(self),
            lease: Some(lease),
            in_flight,
        }
    }

    fn release(self: &Arc<Self>, lease: Lease) {
        let mut inner = self.lock();
        let grants = inner.doorman.release_at(lease, self.now_us());
        self.deliver(&mut inner, grants);
    }

    /// Hands slots to the requests they went to; a slot whose request has
    /// gone meanwhile goes straight back.
    fn deliver(&self, inner: &mut Inner, grants: Vec<Grant>) {
        let mut pending = grants;
        while let Some(grant) = pending.pop() {
            let sent = match inner.waiters.remove(&grant.ticket) {
                Some(tx) => tx.send(Verdict::Granted(grant.lease)),
                None => Err(Verdict::Granted(grant.lease)),
            };
            if let Err(Verdict::Granted(lease)) = sent {
                pending.extend(inner.doorman.release(lease));
            }
        }
        self.metrics.queue_depth(inner.doorman.queued());
    }
}

/// A request in the queue; dropped (its client left) before its verdict,
/// it leaves the queue, or gives back the slot it was just granted.
struct Waiting {
    turns: Arc<Turns>,
    ticket: Ticket,
    rx: oneshot::Receiver<Verdict>,
    /// The verdict was taken: nothing to undo.
    settled: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut inner = self.turns.lock();
        if inner.doorman.cancel(self.ticket) {
            inner.waiters.remove(&self.ticket);
            self.turns.metrics.queue_depth(inner.doorman.queued());
            return;
        }
        drop(inner);
        if let Ok(Verdict::Granted(lease)) = self.rx.try_recv() {
            self.turns.release(lease);
        }
    }
}

/// A slot held until its answer ends (dropped with the response body, or
/// with the handler for an answer the proxy made itself).
pub(crate) struct LeaseGuard {
    turns: Arc<Turns>,
    lease: Option<Lease>,
    /// The key's in-flight gauge, counted up when the slot was taken.
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.in_flight.dec();
            self.turns.release(lease);
        }
    }
}
