//! One request: translate to the core, ask it, do what it decided.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ollama_proxy_core::{
    Action, Backends, Exchange, Failure, ProxyError, Route, UnixTime, MAX_LISTING_BYTES,
};

use crate::body::{find_body_error, Along, BodyError, Guarded, RequestBody, ResponseBody};
use crate::live::Live;
use crate::log::{Outcome, RequestLog};
use crate::upstream::Upstream;

/// What every request needs, shared across connections.
pub(crate) struct Shared {
    pub(crate) proxy: Live,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) turns: Arc<crate::turns::Turns>,
    pub(crate) pool: Arc<crate::backends::Pool>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) response_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// The current time for the core (key expiry).
fn now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Handles one request. The origin call runs inside this future, so a client
/// that goes away drops it and the origin sees the connection close.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let mut log = RequestLog::start(&parts.method, parts.uri.path(), &shared.metrics);
    let decision = shared
        .proxy
        .load()
        .decide_at(parts, Some(crate::request_id::fresh()), now());
    let mut exchange = decision.exchange;
    log.knows(&exchange);
    let head = match decision.action {
        Action::Respond(response) => return Ok(local(response, &exchange, &log, None)),
        Action::Forward(head) => head,
    };

    // A limited key, or a generation under MAX_CONCURRENT: its turn first
    // (waiting, if it must, before anything reaches the origin), and before
    // the model gate reads the body, so that the key's limits bound the
    // bodies held for it (a body the gate refuses has used its turn). The
    // lease is held until the answer ends.
    let lease = match exchange.turn().cloned() {
        None => None,
        Some(turn) => match shared.turns.take(&turn).await {
            Ok(admitted) => {
                exchange.admitted(admitted.rate);
                log.queued(admitted.waited);
                admitted.lease
            }
            Err(refusal) => {
                let response = exchange.turn_refusal_response(&refusal);
                return Ok(local(response, &exchange, &log, None));
            }
        },
    };

    let body = Guarded::new(body, shared.idle_timeout, exchange.body_limit())
        .counting_into(Arc::clone(&shared.metrics));
    let body = match exchange.model_gate() {
        None => RequestBody::plain(body),
        // Held until the key's model list has been checked: a refusal here
        // sends nothing to the origin.
        Some(gate) => match RequestBody::through_gate(body, gate).await {
            Ok(body) => body,
            Err(error) => return Ok(body_failed(&mut exchange, &log, &error)),
        },
    };
    let asked = body.usage_asked();

    // With several Ollama boxes: which one (or all, for a listing).
    let mut flight = None;
    let mut routed = None;
    let mut spare = None;
    let mut body = body;
    if shared.pool.several() {
        let model = body.model().map(str::to_owned);
        let route = match shared.pool.route(&mut exchange, model.as_deref()) {
            Ok(route) => route,
            Err(response) => return Ok(local(*response, &exchange, &log, None)),
        };
        if exchange.fans_out() {
            // Boxed: only listings with several boxes take this path.
            return Ok(Box::pin(fan_out(&shared, head, &route, &exchange, &log)).await);
        }
        spare = Some(body.keep_if_unsent());
        routed = Some((route, model, 0usize));
    }
    let mut head = Some(head);
    let response = loop {
        // A copy only while another box may still be tried.
        let last = routed
            .as_ref()
            .is_none_or(|(route, _, attempt)| attempt + 1 >= route.candidates.len());
        let mut sent = match (last, head.as_ref()) {
            (false, Some(head)) => head.clone(),
            _ => head
                .take()
                .expect("a head while there is an attempt to make"),
        };
        if let Some((route, _, attempt)) = &routed {
            let backend = route.candidates[*attempt];
            shared.proxy.load().aim(&mut sent, backend);
            flight = Some(shared.pool.start(backend, route.reason));
        }
        let upstream = shared
            .upstream
            .send(Request::from_parts(sent, body), shared.response_timeout);
        let error = match upstream.await {
            Ok(response) => break response,
            Err(error) if error.is_timeout() => {
                let kind = ProxyError::OriginTimeout;
                return Ok(local(
                    exchange.error_response(kind),
                    &exchange,
                    &log,
                    Some(kind),
                ));
            }
            Err(error) => error,
        };
        if let Some(failed) = find_body_error(&error) {
            // The client's body broke, or was refused: the origin saw
            // an aborted request.
            return Ok(body_failed(&mut exchange, &log, failed));
        }
        // A connection that failed before anything was sent may be tried
        // on the next box; once a byte went out, never.
        let unsent = spare
            .as_ref()
            .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let (Some(flown), Some((route, _, attempt))) = (flight.take(), routed.as_mut()) {
            let before = if error.before_sent() && unsent.is_some() {
                Failure::BeforeSent
            } else {
                Failure::AfterSent
            };
            shared.pool.failed(
                flown.backend(),
                if error.is_connect() {
                    "connect"
                } else {
                    "reset"
                },
            );
            if let (Some(next), Some(unsent)) = (Backends::retry(route, *attempt, before), unsent) {
                *attempt = route
                    .candidates
                    .iter()
                    .position(|&b| b == next)
                    .unwrap_or(*attempt + 1);
                body = unsent;
                // Kept again for the box after this one.
                spare = Some(body.keep_if_unsent());
                continue;
            }
        }
        let kind = if timed_out(&error) {
            ProxyError::OriginTimeout
        } else {
            ProxyError::OriginUnreachable
        };
        // The cause chain (connect refused, TLS, reset); never a header.
        let request_id = crate::log::request_id(&exchange);
        tracing::warn!(request_id = %request_id, error = %ErrorChain(&error), "origin request failed");
        return Ok(local(
            exchange.error_response(kind),
            &exchange,
            &log,
            Some(kind),
        ));
    };
    if let (Some(flown), Some((_, model, _))) = (&flight, &routed) {
        let model = model.as_deref().filter(|_| exchange.is_llm());
        shared
            .pool
            .observed(flown.backend(), response.status(), model);
    }

    let (mut head, body) = response.into_parts();
    exchange.rewrite_response(&mut head);
    if exchange.filters_listing(head.status) {
        // A listing for a key limited to some models: read whole, filtered.
        let read = Guarded::new(body, shared.idle_timeout, MAX_LISTING_BYTES as u64)
            .collect()
            .await;
        let filtered = read
            .map_err(|_| ProxyError::OriginListingUnreadable)
            .and_then(|all| exchange.filter_listing(&all.to_bytes()));
        return Ok(match filtered {
            Ok(listing) => local(Response::from_parts(head, listing), &exchange, &log, None),
            Err(kind) => local(exchange.error_response(kind), &exchange, &log, Some(kind)),
        });
    }
    log.first_byte(&exchange);
    let status = head.status;
    let notice = exchange.interrupted_stream_notice(&head);
    let meter = exchange.usage_meter(&head).map(Box::new);
    let filter = exchange.usage_filter(asked.load(Ordering::Relaxed), &mut head);
    let body = Guarded::new(body, shared.idle_timeout, u64::MAX);
    Ok(Response::from_parts(
        head,
        ResponseBody::upstream(
            body,
            log,
            exchange,
            Along {
                status,
                notice,
                meter,
                filter,
                lease,
                backend: flight,
            },
        ),
    ))
}

/// A listing with several boxes: asked of each available one at once,
/// each answer read whole, merged (then filtered for the key). A box that
/// fails is left out; none answering is the error of the first.
async fn fan_out(
    shared: &Shared,
    head: http::request::Parts,
    route: &Route,
    exchange: &Exchange,
    log: &RequestLog,
) -> Response<ResponseBody> {
    let proxy = shared.proxy.load();
    let asks = route.candidates.iter().map(|&backend| {
        let mut sent = head.clone();
        proxy.aim(&mut sent, backend);
        let flight = shared.pool.start(backend, route.reason);
        let request = shared.upstream.send(
            Request::from_parts(sent, RequestBody::empty()),
            shared.response_timeout,
        );
        async move {
            let asked = async {
                let response = request.await.map_err(|error| {
                    if error.is_timeout() {
                        ProxyError::OriginTimeout
                    } else {
                        ProxyError::OriginUnreachable
                    }
                })?;
                let (head, body) = response.into_parts();
                let body = Guarded::new(body, shared.idle_timeout, MAX_LISTING_BYTES as u64)
                    .collect()
                    .await
                    .map_err(|_| ProxyError::OriginListingUnreadable)?
                    .to_bytes();
                Ok::<_, ProxyError>((head, body))
            };
            let answer = tokio::time::timeout(shared.response_timeout, asked)
                .await
                .unwrap_or(Err(ProxyError::OriginTimeout));
            (flight, answer)
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let answers = answers
        .into_iter()
        .map(|(flight, answer)| {
            let backend = flight.backend();
            match &answer {
                Ok((head, body)) => {
                    shared.pool.observed(backend, head.status, None);
                    if let (true, Some(probe)) = (head.status.is_success(), exchange.probe()) {
                        shared.pool.learnt(backend, probe, body);
                    }
                }
                Err(ProxyError::OriginListingUnreadable) => {}
                Err(_) => shared.pool.failed(backend, "connect"),
            }
            answer
        })
        .collect();
    let (response, error) = exchange.fan_in(answers);
    local(response, exchange, log, error)
}

/// The answer when the client's body could not be forwarded: over the
/// limit, stalled, broken, or refused by the key's model gate.
fn body_failed(
    exchange: &mut Exchange,
    log: &RequestLog,
    error: &BodyError,
) -> Response<ResponseBody> {
    if let BodyError::Refused(refusal) = error {
        let response = exchange.refusal_response(refusal);
        return local(response, exchange, log, None);
    }
    let kind = error.kind();
    local(exchange.error_response(kind), exchange, log, Some(kind))
}

fn local(
    response: Response<Bytes>,
    exchange: &Exchange,
    log: &RequestLog,
    error: Option<ProxyError>,
) -> Response<ResponseBody> {
    let len = response.body().len() as u64;
    log.first_byte(exchange);
    log.finish(exchange, response.status(), Outcome::Complete, len, error);
    response.map(ResponseBody::local)
}

/// Whether an I/O timeout is in the error's source chain: the connect
/// timeout, the only one the client itself applies.
fn timed_out(mut error: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        match error.source() {
            Some(source) => error = source,
            None => return false,
        }
    }
}

/// An error and its sources, `: `-separated.
pub(crate) struct ErrorChain<'e>(pub(crate) &'e (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    fn future_size<A, B, F: Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A request's future is moved into place once per request (a copy of
    /// all of it), so its size costs on every request: the rare paths (a
    /// new connection's TLS handshake, a listing asked of several boxes)
    /// are boxed, and so are the parts of what travels with a request that
    /// only some requests have (an origin connection's state, a usage
    /// meter, a model gate still scanning). 4.4 KiB in a debug build (7.7
    /// KiB before those were boxed, 9 KiB before the rare paths were).
    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(super::handle);
        eprintln!("request future: {size} bytes");
        assert!(size <= 5120, "the request future grew to {size} bytes");
    }
}
