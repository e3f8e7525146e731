//! Fair turns through the real binary: a flood from one key waits its turns
//! (and is refused beyond its own cap) while another key's requests go at
//! the next free slots; queued requests that leave, time out or find the
//! queue full never reach the origin; a key's rate is enforced with
//! OpenAI's headers.

use std::time::Duration;

use ollama_proxy_tests::client::{call, empty, full, Got};
use ollama_proxy_tests::MockOrigin;

mod common;
use common::start_with;

const A: &str = "key-a-token-0001";
const B: &str = "key-b-token-0002";
const CHAT: &str = r#"{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}"#;

fn keys() -> String {
    format!(
        "[[keys]]\nname = \"a\"\ntoken = \"{A}\"\nmax_concurrent = 8\n\n\
         [[keys]]\nname = \"b\"\ntoken = \"{B}\"\n\n\
         [[keys]]\nname = \"paced\"\ntoken = \"paced-token-0003\"\nrequests_per_minute = 2\n"
    )
}

fn admin() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn chat(addr: std::net::SocketAddr, token: &str, path: String) -> Got {
    let auth = format!("Bearer {token}");
    call(
        addr,
        "POST",
        &path,
        &[("cf-aig-authorization", auth.as_str())],
        full(CHAT),
    )
    .await
}

fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Polls the admin listener until `name_and_labels` reads `value`.
async fn metric_reaches(admin: std::net::SocketAddr, name_and_labels: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8(
            call(admin, "GET", "/metrics", &[], empty())
                .await
                .body
                .to_vec(),
        )
        .unwrap();
        if sample(&text, name_and_labels) == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name_and_labels} never reached {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_waits_its_turns_and_another_key_goes_at_the_next_free_slots() {
    let origin = MockOrigin::start().await;
    let keys = keys();
    let admin = admin();
    let admin_addr = admin.to_string();
    let proxy = start_with(
        &origin.url(),
        &[
            ("AIG_KEYS", keys.as_str()),
            ("MAX_CONCURRENT", "4"),
            ("METRICS_ADDR", admin_addr.as_str()),
        ],
    );
    let addr = proxy.addr;
    // 40 streams from a (cap 8): 4 run, 4 wait, 32 are refused at once.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..40 {
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let got = chat(
                addr,
                A,
                format!("/api/chat?chunks=10&delay_ms=100&who=a{i}"),
            )
            .await;
            let _ = done_tx.send(got);
        });
    }
    let mut refused = Vec::new();
    while refused.len() < 32 {
        let got = tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
            .await
            .expect("the refusals come at once")
            .unwrap();
        assert_eq!(got.status, 429, "{}", String::from_utf8_lossy(&got.body));
        refused.push(got);
    }
    origin.wait_for_heads(4, Duration::from_secs(10)).await;
    metric_reaches(admin, "ollama_proxy_queue_depth", 4.0).await;
    // Now b asks, twice.
    let b = tokio::spawn(async move {
        let (b1, b2) = tokio::join!(
            chat(addr, B, "/api/chat?chunks=2&delay_ms=10&who=b1".into()),
            chat(addr, B, "/api/chat?chunks=2&delay_ms=10&who=b2".into()),
        );
        [b1, b2]
    });
    metric_reaches(admin, "ollama_proxy_queue_depth", 6.0).await;
    for got in b.await.unwrap() {
        assert_eq!(got.status, 200);
    }
    let mut served = 0;
    while served < 8 {
        let got = tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .expect("the waiting streams are served")
            .unwrap();
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        served += 1;
    }

    // In the order the origin saw them: a's first four, then the first
    // round of freed slots, where b's two are (least recently served key
    // first: b, a, b, a), then a's last two.
    let seen: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.target.rsplit("who=").next().unwrap().to_owned())
        .collect();
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(seen[..4].iter().all(|w| w.starts_with('a')), "{seen:?}");
    let first_round = &seen[4..8];
    assert!(
        first_round.contains(&"b1".to_owned()) && first_round.contains(&"b2".to_owned()),
        "b waited behind a's queue: {seen:?}"
    );

    for got in &refused {
        let v = got.json();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(got.headers["retry-after"], "1");
    }
    let text = String::from_utf8(
        call(admin, "GET", "/metrics", &[], empty())
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert_eq!(
        sample(
            &text,
            "ollama_proxy_turn_refusals_total{reason=\"key_busy\",key=\"a\"}"
        ),
        32.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "ollama_proxy_queue_wait_seconds_count"),
        6.0,
        "{text}"
    );
    assert_eq!(sample(&text, "ollama_proxy_queue_depth"), 0.0);
    metric_reaches(admin, "ollama_proxy_in_flight{key=\"a\"}", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_that_leave_time_out_or_find_it_full_never_reach_the_origin() {
    let origin = MockOrigin::start().await;
    let admin = admin();
    let admin_addr = admin.to_string();
    let proxy = start_with(
        &origin.url(),
        &[
            ("MAX_CONCURRENT", "1"),
            ("MAX_QUEUE", "1"),
            ("QUEUE_TIMEOUT", "1s"),
            ("METRICS_ADDR", admin_addr.as_str()),
        ],
    );
    let addr = proxy.addr;
    let token = common::TOKEN;
    // One long stream holds the only slot.
    let running = tokio::spawn(chat(
        addr,
        token,
        "/api/chat?chunks=40&delay_ms=100&who=s1".into(),
    ));
    origin.wait_for_heads(1, Duration::from_secs(10)).await;
    // A request waits, then its client leaves: it leaves the queue.
    let gone = tokio::spawn(chat(addr, token, "/api/chat?who=q1".into()));
    metric_reaches(admin, "ollama_proxy_queue_depth", 1.0).await;
    gone.abort();
    metric_reaches(admin, "ollama_proxy_queue_depth", 0.0).await;
    // One waits; the next finds the queue full.
    let waits = tokio::spawn(chat(addr, token, "/api/chat?who=q2".into()));
    metric_reaches(admin, "ollama_proxy_queue_depth", 1.0).await;
    let full = chat(addr, token, "/api/chat?who=q3".into()).await;
    assert_eq!(full.status, 503);
    assert_eq!(full.json()["error"]["code"], "server_busy");
    assert!(full.headers.contains_key("retry-after"));
    // The one waiting gives up after QUEUE_TIMEOUT.
    let waited = waits.await.unwrap();
    assert_eq!(waited.status, 503);
    let message = waited.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("waited 1s"), "{message}");
    // Listings never wait.
    let tags = call(
        addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", &format!("Bearer {token}"))],
        empty(),
    )
    .await;
    assert_eq!(tags.status, 200);
    assert_eq!(running.await.unwrap().status, 200);
    // The slot is free again.
    assert_eq!(
        chat(addr, token, "/api/chat?who=q4".into()).await.status,
        200
    );
    let seen: Vec<String> = origin.requests().iter().map(|r| r.target.clone()).collect();
    for who in ["q1", "q2", "q3"] {
        assert!(
            !seen.iter().any(|t| t.ends_with(who)),
            "{who} reached the origin: {seen:?}"
        );
    }
    let text = String::from_utf8(
        call(admin, "GET", "/metrics", &[], empty())
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    for reason in ["queue_full", "queue_timeout"] {
        let name =
            format!("ollama_proxy_turn_refusals_total{{reason=\"{reason}\",key=\"default\"}}");
        assert_eq!(sample(&text, &name), 1.0, "{name}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_is_enforced_with_openais_headers() {
    let origin = MockOrigin::start().await;
    let keys = keys();
    let proxy = start_with(&origin.url(), &[("AIG_KEYS", keys.as_str())]);
    let auth = ("cf-aig-authorization", "Bearer paced-token-0003");
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let got = call(proxy.addr, "GET", "/api/tags", &[auth], empty()).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers["x-ratelimit-limit-requests"], "2");
        remaining.push(
            got.headers["x-ratelimit-remaining-requests"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["1", "0"]);
    let got = call(proxy.addr, "GET", "/api/tags", &[auth], empty()).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = got.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(got.headers["x-ratelimit-remaining-requests"], "0");
    // Other keys are not limited.
    let free = call(
        proxy.addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", &format!("Bearer {}", common::TOKEN))],
        empty(),
    )
    .await;
    assert_eq!(free.status, 200);
    assert!(!free.headers.contains_key("x-ratelimit-limit-requests"));
    assert_eq!(origin.requests().len(), 3);
}
