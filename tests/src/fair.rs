//! Fair turns on both targets: a key's rate with OpenAI's headers, a key's
//! cap, `MAX_CONCURRENT` with its queue (natively in the process, at the
//! edge in the doorman's Durable Object), and slots coming back when an
//! answer ends or its client leaves.

use std::time::Duration;

use http_body_util::BodyExt;

use crate::client::{call, empty, full, request, send, Got};
use crate::target::{Harness, Target, AUTH};

const CHAT: &str = r#"{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}"#;
/// A stream of 20 chunks 100 ms apart: long enough to hold a slot while
/// the scenario asks for another.
const LONG: &str = "/api/chat?chunks=20&delay_ms=100";

fn keys() -> String {
    "[[keys]]\nname = \"paced\"\ntoken = \"paced-token-0003\"\nrequests_per_minute = 2\n\n\
     [[keys]]\nname = \"capped\"\ntoken = \"capped-token-0004\"\nmax_concurrent = 1\n\n\
     [[keys]]\nname = \"other\"\ntoken = \"other-token-0005\"\n"
        .to_owned()
}

fn bearer(token: &str) -> (&'static str, String) {
    ("cf-aig-authorization", format!("Bearer {token}"))
}

async fn chat(h: &Harness, token: &str, path: &str) -> Got {
    let (name, value) = bearer(token);
    call(h.proxy, "POST", path, &[(name, value.as_str())], full(CHAT)).await
}

/// A chat request on `path` with the bench token, in its own task.
fn spawn_chat(h: &Harness, path: String) -> tokio::task::JoinHandle<Got> {
    let proxy = h.proxy;
    tokio::spawn(async move {
        let (name, value) = bearer(crate::target::TOKEN);
        call(proxy, "POST", &path, &[(name, value.as_str())], full(CHAT)).await
    })
}

/// Starts a long stream as `token` and returns its body once the first
/// chunk is in (the request holds its slot from then on).
async fn hold_a_slot(h: &Harness, token: &str) -> hyper::body::Incoming {
    let (name, value) = bearer(token);
    let response = send(request(
        h.proxy,
        "POST",
        LONG,
        &[(name, value.as_str())],
        full(CHAT),
    ))
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a first chunk").expect("a chunk");
    assert!(first.is_data());
    body
}

/// Asks until the answer is 200 (a slot given back asynchronously, as the
/// Worker does, may take a moment), at most 10 s.
async fn until_served(h: &Harness, token: &str) -> Got {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = chat(h, token, "/api/chat").await;
        if got.status == 200 || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn a_keys_rate_is_enforced_with_openais_headers<T: Target>(t: &T) {
    let h = Harness::start(t, &[("AIG_KEYS", &keys())]).await;
    let (name, value) = bearer("paced-token-0003");
    let paced = [(name, value.as_str())];
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let got = call(h.proxy, "GET", "/api/tags", &paced, empty()).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-ratelimit-limit-requests"), Some("2"));
        remaining.push(
            got.header("x-ratelimit-remaining-requests")
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["1", "0"]);
    let got = call(h.proxy, "GET", "/api/tags", &paced, empty()).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(got.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(h.origin.requests().len(), 2, "the refused request went on");
    // Keys without a rate carry no rate headers and are not limited.
    let free = call(h.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
    assert_eq!(free.status, 200);
    assert!(free.header("x-ratelimit-limit-requests").is_none());
}

pub async fn a_key_over_its_cap_is_refused_until_its_answer_ends<T: Target>(t: &T) {
    let h = Harness::start(t, &[("AIG_KEYS", &keys())]).await;
    let running = hold_a_slot(&h, "capped-token-0004").await;
    let refused = chat(&h, "capped-token-0004", "/api/chat").await;
    assert_eq!(
        refused.status,
        429,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Another key is not held back, and listings take no slot.
    assert_eq!(chat(&h, "other-token-0005", "/api/chat").await.status, 200);
    let (name, value) = bearer("capped-token-0004");
    let tags = call(
        h.proxy,
        "GET",
        "/api/tags",
        &[(name, value.as_str())],
        empty(),
    )
    .await;
    assert_eq!(tags.status, 200);
    // The answer ends: the slot comes back.
    let rest = running
        .collect()
        .await
        .expect("the rest of the stream")
        .to_bytes();
    assert!(rest.ends_with(b"\n"));
    assert_eq!(until_served(&h, "capped-token-0004").await.status, 200);
}

/// A request above `MAX_CONCURRENT` waits for its turn and is served once
/// the slot is free; with the queue full (`MAX_QUEUE=1`) one more is
/// refused with 503 and `Retry-After`. Two are sent at once: whichever
/// comes second finds the queue full.
pub async fn max_concurrent_queues_and_refuses_past_max_queue<T: Target>(t: &T) {
    let h = Harness::start(
        t,
        &[
            ("AIG_KEYS", &keys()),
            ("MAX_CONCURRENT", "1"),
            ("MAX_QUEUE", "1"),
        ],
    )
    .await;
    let running = hold_a_slot(&h, "other-token-0005").await;
    let mut first = spawn_chat(&h, "/api/chat".to_owned());
    let mut second = spawn_chat(&h, "/api/chat".to_owned());
    // One finds the queue full at once, while the slot is still held.
    let (refused, waiting) = tokio::select! {
        got = &mut first => (got.unwrap(), second),
        got = &mut second => (got.unwrap(), first),
    };
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"]["code"], "server_busy");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("already waiting for a turn"), "{message}");
    assert!(!waiting.is_finished(), "served while the slot was held");
    // The other is served once the stream has ended.
    let rest = running.collect().await.expect("the stream").to_bytes();
    assert!(!rest.is_empty());
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}

/// A body the key's model list refuses is refused once the gate has read
/// it, after its turn (so a key's limits bound the bodies held for it):
/// it counts against `requests_per_minute`, carries the rate headers, and
/// gives its slot back at once — the next request is served without
/// waiting for it.
pub async fn a_body_its_model_list_refuses_gives_its_slot_back<T: Target>(t: &T) {
    let keys = format!(
        "{}\n[[keys]]\nname = \"listed\"\ntoken = \"listed-token-0006\"\nrequests_per_minute = 3\nmodels = [\"llama3.2:*\"]\n",
        keys()
    );
    let h = Harness::start(t, &[("AIG_KEYS", &keys), ("MAX_CONCURRENT", "1")]).await;
    let (name, value) = bearer("listed-token-0006");
    let listed = [(name, value.as_str())];
    let refused_body = r#"{"messages":[{"role":"user","content":"hi"}],"model":"qwen3:8b"}"#;
    let refused = call(h.proxy, "POST", "/api/chat", &listed, full(refused_body)).await;
    assert_eq!(
        refused.status,
        403,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"]["code"], "model_not_allowed");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("2"));
    // Its slot is free again: had it been kept, this one would wait for
    // QUEUE_TIMEOUT (60 s).
    let allowed = tokio::time::timeout(
        Duration::from_secs(10),
        chat(&h, "listed-token-0006", "/api/chat"),
    )
    .await
    .expect("served without waiting for the refused request's slot");
    assert_eq!(
        allowed.status,
        200,
        "{}",
        String::from_utf8_lossy(&allowed.body)
    );
    assert_eq!(allowed.header("x-ratelimit-remaining-requests"), Some("1"));
    let seen = h.origin.requests();
    assert_eq!(seen.len(), 1, "only the allowed chat went on");
}

/// A request that waits `QUEUE_TIMEOUT` for its turn gets 503 with
/// `Retry-After` (at the edge the doorman's own timer answers it).
pub async fn a_request_that_waits_too_long_gets_503<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_CONCURRENT", "1"), ("QUEUE_TIMEOUT", "1s")]).await;
    // A stream of 5 s holds the slot well past the wait.
    let (name, value) = bearer(crate::target::TOKEN);
    let response = send(request(
        h.proxy,
        "POST",
        "/api/chat?chunks=50&delay_ms=100",
        &[(name, value.as_str())],
        full(CHAT),
    ))
    .await;
    assert_eq!(response.status(), 200);
    let running = response.into_body();
    let got = tokio::time::timeout(
        Duration::from_secs(4),
        chat(&h, crate::target::TOKEN, "/api/chat"),
    )
    .await
    .expect("answered at its deadline, before the slot was free");
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "server_busy");
    assert!(got.header("retry-after").is_some());
    let message = got.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("waited 1s for a turn"), "{message}");
    drop(running);
}

pub async fn a_client_that_leaves_gives_its_slot_back<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_CONCURRENT", "1")]).await;
    let running = hold_a_slot(&h, crate::target::TOKEN).await;
    drop(running);
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the origin to see the client leave",
            |_, gone| gone >= 1,
        )
        .await;
    let got = until_served(&h, crate::target::TOKEN).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}

/// A request whose answer's head comes later than a turn's lease lives
/// (30 s: a long generation not streamed) keeps its slot until its answer
/// ends: the lease is renewed from the moment the turn is taken, not from
/// the head.
pub async fn a_slow_answer_keeps_its_slot_until_it_ends<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_CONCURRENT", "1")]).await;
    // A lease's life without renewal (the core's `LEASE_TTL_US`).
    let lease_life = Duration::from_secs(30);
    let late = lease_life + Duration::from_secs(6);
    let mut slow = spawn_chat(&h, format!("/api/chat?head_delay_ms={}", late.as_millis()));
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the slow request at the origin",
            |seen, _| !seen.is_empty(),
        )
        .await;
    // Past the lease's life (what this scenario is about), the slow answer
    // still on its way.
    tokio::time::sleep(lease_life + Duration::from_secs(3)).await;
    assert!(!slow.is_finished());
    // The next request waits for the slow one: had its slot lapsed (at the
    // edge, a lease not renewed), the next would be served first.
    let mut waiting = spawn_chat(&h, "/api/chat".to_owned());
    // Biased: both may be ready by the time this task runs again.
    let first = tokio::select! {
        biased;
        first = &mut slow => first.unwrap(),
        got = &mut waiting => panic!("served while the slot was held: {}", got.unwrap().status),
    };
    assert_eq!(first.status, 200);
    let got = waiting.await.unwrap();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}

/// A route that runs a model but whose answer the proxy does not read for
/// usage (`/v1/images/generations`, as `/v1/audio/transcriptions`) holds
/// its slot until the answer's last byte too: the next request waits for it
/// (at the edge its lease was given back when the head came, found in
/// review).
pub async fn an_unmetered_generation_keeps_its_slot_until_it_ends<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_CONCURRENT", "1")]).await;
    let proxy = h.proxy;
    let mut streaming = tokio::spawn(async move {
        let (name, value) = bearer(crate::target::TOKEN);
        call(
            proxy,
            "POST",
            "/v1/images/generations?chunks=20&delay_ms=100",
            &[(name, value.as_str())],
            full(CHAT),
        )
        .await
    });
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the image request at the origin",
            |seen, _| !seen.is_empty(),
        )
        .await;
    let mut waiting = spawn_chat(&h, "/api/chat".to_owned());
    // Biased: both may be ready by the time this task runs again.
    let first = tokio::select! {
        biased;
        first = &mut streaming => first.unwrap(),
        got = &mut waiting => panic!("served while the stream held the slot: {}", got.unwrap().status),
    };
    assert_eq!(first.status, 200);
    assert!(String::from_utf8_lossy(&first.body).contains("tok19"));
    let got = waiting.await.unwrap();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}

/// A request that waited for its turn keeps the slot it was granted for
/// as long as its answer takes, past the seconds a granted slot waits to be
/// claimed at the edge (the core's `CLAIM_TTL_US`: its isolate claims
/// it at once; one that never does — its client gone while it waited —
/// loses it to the next in line): a third request waits for it.
pub async fn a_slot_granted_after_a_wait_is_kept_until_its_answer_ends<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_CONCURRENT", "1")]).await;
    // The claim window (the core's `CLAIM_TTL_US`).
    let claim_window = Duration::from_secs(10);
    // Slow enough that the next request surely finds the slot taken.
    let first = spawn_chat(&h, "/api/chat?head_delay_ms=3000".to_owned());
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the first request at the origin",
            |seen, _| !seen.is_empty(),
        )
        .await;
    let slow_ms = (claim_window + Duration::from_secs(4)).as_millis();
    let mut granted = spawn_chat(&h, format!("/api/chat?head_delay_ms={slow_ms}"));
    assert_eq!(first.await.unwrap().status, 200);
    // The waiting request got the slot: its request reached the origin.
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the granted request at the origin",
            |seen, _| seen.len() == 2,
        )
        .await;
    // Past the claim window (what this scenario is about), its answer
    // still on its way.
    tokio::time::sleep(claim_window + Duration::from_secs(1)).await;
    assert!(!granted.is_finished());
    let mut third = spawn_chat(&h, "/api/chat".to_owned());
    // Biased: both may be ready by the time this task runs again.
    let done = tokio::select! {
        biased;
        done = &mut granted => done.unwrap(),
        got = &mut third => panic!("served while the granted slot was held: {}", got.unwrap().status),
    };
    assert_eq!(done.status, 200);
    let got = third.await.unwrap();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}
