//! The decision's limits: who takes a turn, a slot, and how a refusal reads.

use super::*;

#[test]
fn limits_apply_to_whom_they_name() {
    let keys = "[[keys]]\nname = \"capped\"\ntoken = \"capped-token\"\nmax_concurrent = 2\nrequests_per_minute = 30\n";
    let p = proxy(&[("AIG_KEYS", keys)]);
    let capped = ("cf-aig-authorization", "Bearer capped-token");
    // Without MAX_CONCURRENT: the capped key's generations take a slot, and
    // every request of it counts against its rate; the main token is free.
    let d = p.decide(head("POST", "/api/chat", &[capped]));
    let turn = d.exchange.turn().expect("a turn");
    assert_eq!(turn.key().as_str(), "capped");
    assert!(turn.slot && turn.key_cap == Some(2) && turn.per_minute == Some(30));
    let d = p.decide(head("GET", "/api/tags", &[capped]));
    let turn = d.exchange.turn().expect("a turn for the rate");
    assert!(!turn.slot);
    assert!(p
        .decide(head("POST", "/api/chat", &[AUTH]))
        .exchange
        .turn()
        .is_none());
    // With MAX_CONCURRENT every key's generations take a slot, and listings
    // never do.
    let p = proxy(&[("MAX_CONCURRENT", "4")]);
    assert!(p
        .decide(head("POST", "/v1/embeddings", &[AUTH]))
        .exchange
        .turn()
        .is_some_and(|t| t.slot));
    assert!(p
        .decide(head("GET", "/api/tags", &[AUTH]))
        .exchange
        .turn()
        .is_none());
    assert!(p
        .decide(head("GET", "/api/version", &[AUTH]))
        .exchange
        .turn()
        .is_none());
}

/// Every route Ollama answers by running a model takes a slot, those whose
/// answers are not read for usage too (found in review: they were free of
/// `max_concurrent`).
#[test]
fn every_generation_route_takes_a_slot() {
    let p = proxy(&[("MAX_CONCURRENT", "1")]);
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/audio/transcriptions?model=whisper",
        "/v1/images/generations",
        "/v1/images/edits",
    ] {
        let d = p.decide(head("POST", path, &[AUTH]));
        assert!(matches!(d.action, Action::Forward(_)), "{path}");
        assert!(
            d.exchange.turn().is_some_and(|t| t.slot),
            "{path} takes no slot"
        );
    }
}

#[test]
fn refusals_are_openai_shaped_with_when_to_retry() {
    use crate::{RateRefusal, TurnRefusal};
    let p = proxy(&[("MAX_QUEUE", "7"), ("QUEUE_TIMEOUT", "90s")]);
    let mut exchange = p
        .decide(head(
            "POST",
            "/api/chat",
            &[AUTH, ("origin", "https://app.example")],
        ))
        .exchange;
    let r = exchange.turn_refusal_response(&TurnRefusal::RateLimited(RateRefusal {
        retry_in_us: 2_500_000,
        limit: 30,
        reset_us: 61_000_000,
    }));
    assert_eq!(r.status(), 429);
    assert_eq!(error_code(&r), "rate_limit_exceeded");
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "30");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(r.headers()["x-ratelimit-reset-requests"], "1m1s");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(exchange.rejection(), Some(ProxyError::RateLimited));
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["error"]["type"], "requests");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("30 requests per minute"));

    let r = exchange.turn_refusal_response(&TurnRefusal::KeyBusy { cap: 2 });
    assert_eq!(
        (r.status().as_u16(), error_code(&r)),
        (429, "rate_limit_exceeded".into())
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let r = exchange.turn_refusal_response(&TurnRefusal::QueueFull);
    assert_eq!(
        (r.status().as_u16(), error_code(&r)),
        (503, "server_busy".into())
    );
    assert!(String::from_utf8_lossy(r.body()).contains("7 requests are already waiting"));
    let r = exchange.turn_refusal_response(&TurnRefusal::QueueTimeout);
    assert_eq!(
        (r.status().as_u16(), error_code(&r)),
        (503, "server_busy".into())
    );
    assert!(String::from_utf8_lossy(r.body()).contains("waited 1m30s"));
}

#[test]
fn the_limits_variables_are_checked() {
    for (var, value) in [
        ("MAX_CONCURRENT", "0"),
        ("MAX_CONCURRENT", "four"),
        ("MAX_QUEUE", "-1"),
        ("QUEUE_TIMEOUT", "0s"),
        ("QUEUE_TIMEOUT", "soon"),
    ] {
        let error = Config::from_lookup(|v| match v.name() {
            "OLLAMA_ORIGIN" => Some("http://o:1".into()),
            "AIG_AUTH_TOKEN" => Some(TOKEN.into()),
            name if name == var => Some(value.into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(error.var().name(), var, "{value}");
    }
    let p = proxy(&[
        ("MAX_CONCURRENT", "3"),
        ("MAX_QUEUE", "0"),
        ("QUEUE_TIMEOUT", "1500ms"),
    ]);
    let limits = p.config().turn_limits();
    assert_eq!(limits.max_concurrent, Some(3));
    assert_eq!(limits.max_queue, 0);
    assert_eq!(limits.queue_timeout_us, 1_500_000);
}
