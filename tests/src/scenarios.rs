//! Behaviour scenarios that every target must pass, written once.
//!
//! Each scenario starts its own harness (a fresh mock origin and the target
//! in front of it, configured as the scenario needs), talks HTTP to it over
//! loopback, and checks what the client got and what the origin saw.
//! [`scenario_tests!`](crate::scenario_tests) turns the list into one test
//! per scenario for a target.

use std::time::Duration;

use bytes::Bytes;

pub use crate::boxes::{
    a_dead_box_is_left_and_nothing_is_sent_twice, a_model_goes_where_it_is_loaded,
    a_request_that_could_not_connect_goes_to_the_next_box,
    an_upload_its_client_breaks_is_not_the_boxs_failure,
};
use crate::broken::{Breakage, BrokenOrigin, FIRST_CHUNK, FIRST_EVENT};
use crate::client::{
    call, channel_body, collect, empty, full, lines_with_arrival, raw, read_until, request, send,
};
pub use crate::fair::{
    a_body_its_model_list_refuses_gives_its_slot_back, a_client_that_leaves_gives_its_slot_back,
    a_key_over_its_cap_is_refused_until_its_answer_ends,
    a_keys_rate_is_enforced_with_openais_headers, a_request_that_waits_too_long_gets_503,
    a_slot_granted_after_a_wait_is_kept_until_its_answer_ends,
    a_slow_answer_keeps_its_slot_until_it_ends,
    an_unmetered_generation_keeps_its_slot_until_it_ends,
    max_concurrent_queues_and_refuses_past_max_queue,
};
use crate::origin::pattern;
pub use crate::policy::{
    a_later_second_model_aborts_the_upload, allowed_bodies_stream_on_intact,
    an_answer_before_the_whole_body_streams_on, keys_document_tokens_and_their_states,
    listings_show_only_the_keys_models,
};
use crate::target::{closed_port, Harness, Target, AUTH, TOKEN};
pub use crate::usage::openai_streams_are_asked_for_their_usage;

/// Every attempt of [`crate::policy::ATTEMPTS`] gets its listed outcome.
pub async fn model_policy_holds_on_every_route<T: Target>(t: &T) {
    crate::policy::check_attempts(t).await;
}

/// The most a scenario may take before it fails as hung.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(120);
/// How long a scenario waits for the origin to see something before failing.
const ORIGIN_WAIT: Duration = Duration::from_secs(10);
const BROWSER: &str = "https://app.example";

/// Generates one `#[tokio::test]` per shared scenario for a target value;
/// with a second argument, each test returns early when it is false (a
/// target that is not built).
#[macro_export]
macro_rules! scenario_tests {
    ($target:expr) => {
        $crate::scenario_tests!($target, true);
    };
    ($target:expr, $enabled:expr) => {
        $crate::scenario_tests!(@each $target, $enabled;
            healthz_is_answered_without_token,
            preflight_is_answered_and_never_forwarded,
            preflight_from_foreign_origin_is_not_allowed,
            missing_token_gets_openai_401,
            wrong_tokens_get_401_and_nothing_is_forwarded,
            authorization_header_fallback_can_be_turned_off,
            every_configured_token_works,
            model_management_is_refused_unless_allowed,
            request_head_is_rewritten_for_the_origin,
            origin_base_path_is_prefixed,
            absolute_form_target_stays_on_the_origin,
            response_head_is_rewritten_for_the_client,
            origin_status_and_body_pass_through,
            a_get_with_a_body_is_answered,
            a_body_its_client_breaks_gets_400,
            an_encoded_answer_with_a_length_arrives_whole,
            ndjson_streams_chunk_by_chunk,
            sse_streams_chunk_by_chunk,
            openai_and_native_json_endpoints,
            large_download_is_intact,
            large_upload_is_intact,
            client_disconnect_mid_stream_reaches_origin,
            client_disconnect_before_response_reaches_origin,
            origin_down_gets_502,
            origin_answering_garbage_gets_502,
            an_origin_that_breaks_off_an_upload_gets_502,
            origin_reset_mid_stream_is_not_a_clean_end,
            an_anthropic_stream_that_breaks_off_ends_with_its_error_event,
            origin_short_body_is_not_a_clean_end,
            a_short_stream_of_declared_length_is_not_a_clean_end,
            body_over_limit_by_content_length_gets_413,
            chunked_body_over_limit_is_cut_off,
            proxy_errors_carry_cors_headers,
            request_ids_are_kept_or_generated,
            keys_document_tokens_and_their_states,
            model_policy_holds_on_every_route,
            listings_show_only_the_keys_models,
            allowed_bodies_stream_on_intact,
            a_later_second_model_aborts_the_upload,
            an_answer_before_the_whole_body_streams_on,
            openai_streams_are_asked_for_their_usage,
            a_keys_rate_is_enforced_with_openais_headers,
            a_body_its_model_list_refuses_gives_its_slot_back,
            a_key_over_its_cap_is_refused_until_its_answer_ends,
            max_concurrent_queues_and_refuses_past_max_queue,
            a_request_that_waits_too_long_gets_503,
            a_client_that_leaves_gives_its_slot_back,
            a_slow_answer_keeps_its_slot_until_it_ends,
            an_unmetered_generation_keeps_its_slot_until_it_ends,
            a_slot_granted_after_a_wait_is_kept_until_its_answer_ends,
            a_model_goes_where_it_is_loaded,
            a_dead_box_is_left_and_nothing_is_sent_twice,
            a_request_that_could_not_connect_goes_to_the_next_box,
            an_upload_its_client_breaks_is_not_the_boxs_failure,
        );
    };
    (@each $target:expr, $enabled:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if !$enabled {
                    return;
                }
                let limit = $crate::scenarios::SCENARIO_LIMIT;
                let run = tokio::time::timeout(limit, $crate::scenarios::$name(&$target)).await;
                assert!(run.is_ok(), "scenario {} did not finish within {limit:?}", stringify!($name));
            }
        )*
    };
}

fn assert_openai_error(got: &crate::client::Got, status: u16, code: &str) {
    assert_eq!(
        got.status,
        status,
        "body: {:?}",
        String::from_utf8_lossy(&got.body)
    );
    let v = got.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"].is_string() && v["error"]["type"].is_string(),
        "{v}"
    );
    assert_eq!(got.header("content-type"), Some("application/json"));
}

pub async fn healthz_is_answered_without_token<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let got = call(h.proxy, "GET", "/healthz", &[], empty()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), serde_json::json!({"status": "ok"}));
    assert!(h.origin.requests().is_empty(), "healthz reached the origin");
}

pub async fn preflight_is_answered_and_never_forwarded<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let requested =
        "authorization, content-type, x-stainless-os, x-stainless-lang, cf-aig-authorization";
    let got = call(
        h.proxy,
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("origin", BROWSER),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", requested),
        ],
        empty(),
    )
    .await;
    assert!(got.status == 204 || got.status == 200, "{got:?}");
    assert_eq!(got.all("access-control-allow-origin"), ["*"]);
    let allowed = got
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "x-stainless-os",
        "cf-aig-authorization",
    ] {
        assert!(allowed.contains(name), "{name} not allowed: {allowed}");
    }
    assert!(got
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(got.header("access-control-max-age").is_some());
    assert!(
        h.origin.requests().is_empty(),
        "preflight reached the origin"
    );
}

pub async fn preflight_from_foreign_origin_is_not_allowed<T: Target>(t: &T) {
    let h = Harness::start(t, &[("CORS_ALLOWED_ORIGINS", BROWSER)]).await;
    let preflight = [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
    ];
    let foreign = call(h.proxy, "OPTIONS", "/api/chat", &preflight, empty()).await;
    assert!(
        foreign.header("access-control-allow-origin").is_none(),
        "{foreign:?}"
    );
    let preflight = [
        ("origin", BROWSER),
        ("access-control-request-method", "POST"),
    ];
    let allowed = call(h.proxy, "OPTIONS", "/api/chat", &preflight, empty()).await;
    assert_eq!(allowed.all("access-control-allow-origin"), [BROWSER]);
    assert!(allowed.all("vary").join(",").contains("Origin"));
    assert!(h.origin.requests().is_empty());
}

pub async fn missing_token_gets_openai_401<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let got = call(
        h.proxy,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        full("{}"),
    )
    .await;
    assert_openai_error(&got, 401, "missing_api_key");
    assert!(got
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    assert!(
        h.origin.requests().is_empty(),
        "unauthenticated request reached the origin"
    );
}

pub async fn wrong_tokens_get_401_and_nothing_is_forwarded<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let near_misses = [
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", TOKEN.to_uppercase()),
        format!("Basic {TOKEN}"),
        format!("Token {TOKEN}"),
        TOKEN.to_string(),
    ];
    for value in &near_misses {
        for header in ["cf-aig-authorization", "authorization"] {
            let got = call(h.proxy, "GET", "/api/tags", &[(header, value)], empty()).await;
            assert_eq!(got.status, 401, "{header}: {value} was accepted");
            assert!(!String::from_utf8_lossy(&got.body).contains(TOKEN));
        }
    }
    for method in ["GET", "POST", "DELETE", "PUT", "OPTIONS"] {
        let got = call(h.proxy, method, "/api/tags", &[], empty()).await;
        assert_eq!(got.status, 401, "{method} without a token");
    }
    assert!(
        h.origin.requests().is_empty(),
        "a request without a valid token reached the origin"
    );
}

pub async fn authorization_header_fallback_can_be_turned_off<T: Target>(t: &T) {
    let bearer = format!("Bearer {TOKEN}");
    let on = Harness::start(t, &[]).await;
    let got = call(
        on.proxy,
        "GET",
        "/api/tags",
        &[("authorization", &bearer)],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &on.origin.requests()[0];
    assert!(
        seen.headers.get("authorization").is_none(),
        "proxy token forwarded in Authorization"
    );
    // Anthropic's SDKs send the key bare in `x-api-key`.
    let got = call(
        on.proxy,
        "GET",
        "/api/tags",
        &[("x-api-key", TOKEN)],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &on.origin.requests()[1];
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "proxy token forwarded in x-api-key"
    );

    let off = Harness::start(t, &[("ALLOW_AUTHORIZATION_HEADER", "false")]).await;
    let got = call(
        off.proxy,
        "GET",
        "/api/tags",
        &[("authorization", &bearer)],
        empty(),
    )
    .await;
    assert_openai_error(&got, 401, "missing_api_key");
    let got = call(
        off.proxy,
        "GET",
        "/api/tags",
        &[("x-api-key", TOKEN)],
        empty(),
    )
    .await;
    assert_openai_error(&got, 401, "missing_api_key");
    let got = call(off.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
    assert_eq!(got.status, 200);
}

pub async fn every_configured_token_works<T: Target>(t: &T) {
    let h = Harness::start(
        t,
        &[("AIG_AUTH_TOKENS", "laptop:laptop-token-1,bare-token-2")],
    )
    .await;
    for token in [TOKEN, "laptop-token-1", "bare-token-2"] {
        let bearer = format!("Bearer {token}");
        let got = call(
            h.proxy,
            "GET",
            "/api/tags",
            &[("cf-aig-authorization", &bearer)],
            empty(),
        )
        .await;
        assert_eq!(got.status, 200, "token {token}");
    }
    assert_eq!(h.origin.requests().len(), 3);
}

pub async fn model_management_is_refused_unless_allowed<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let refused = [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/copy"),
        ("POST", "/api/blobs/sha256:0123"),
        ("HEAD", "/api/blobs/sha256:0123"),
        ("POST", "/api/%70ull"),
        ("POST", "//api/pull"),
        ("POST", "/api/pull/"),
        ("POST", "/v1/../api/pull"),
    ];
    for (method, path) in refused {
        let got = call(h.proxy, method, path, &[AUTH], full("{}")).await;
        assert_eq!(got.status, 403, "{method} {path}");
        if method != "HEAD" {
            assert_openai_error(&got, 403, "model_management_disabled");
        }
    }
    assert!(
        h.origin.requests().is_empty(),
        "a management call reached the origin: {:?}",
        h.origin.requests()
    );

    let allowed = Harness::start(t, &[("ALLOW_MODEL_MANAGEMENT", "true")]).await;
    let got = call(allowed.proxy, "POST", "/api/pull", &[AUTH], full("{}")).await;
    assert_eq!(
        got.status, 404,
        "forwarded to the mock, which has no /api/pull"
    );
    assert_eq!(allowed.origin.requests()[0].target, "/api/pull");
}

pub async fn request_head_is_rewritten_for_the_origin<T: Target>(t: &T) {
    let h = Harness::start(
        t,
        &[
            ("CF_ACCESS_CLIENT_ID", "id.access"),
            ("CF_ACCESS_CLIENT_SECRET", "access-secret-1"),
        ],
    )
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let target = "/api/tags?q=a%2Fb&x=%E2%9C%93&empty=&&dup=1&dup=2";
    let got = call(
        h.proxy,
        "GET",
        target,
        &[
            AUTH,
            ("authorization", &bearer),
            ("origin", BROWSER),
            ("connection", "x-nominated"),
            ("x-nominated", "drop me"),
            ("proxy-authorization", "Basic abc"),
            ("x-stainless-os", "Linux"),
            ("user-agent", "scenario/1"),
            ("accept", "application/json"),
        ],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &h.origin.requests()[0];
    assert_eq!(
        seen.target, target,
        "path and query must reach the origin exactly"
    );
    assert_eq!(seen.headers["host"], h.origin.addr().to_string());
    for gone in [
        "cf-aig-authorization",
        "authorization",
        "origin",
        "x-nominated",
        "proxy-authorization",
    ] {
        assert!(
            seen.headers.get(gone).is_none(),
            "{gone} reached the origin"
        );
    }
    assert_eq!(seen.headers["x-stainless-os"], "Linux");
    assert_eq!(seen.headers["user-agent"], "scenario/1");
    assert_eq!(seen.headers["cf-access-client-id"], "id.access");
    assert_eq!(seen.headers["cf-access-client-secret"], "access-secret-1");
    let leaked = seen
        .headers
        .values()
        .any(|v| v.to_str().is_ok_and(|v| v.contains(TOKEN)));
    assert!(
        !leaked,
        "the proxy token reached the origin: {:?}",
        seen.headers
    );
}

pub async fn origin_base_path_is_prefixed<T: Target>(t: &T) {
    let h = Harness::start_at(t, "/ollama/", &[]).await;
    let got = call(h.proxy, "GET", "/api/tags?x=1", &[AUTH], empty()).await;
    assert_eq!(got.status, 404, "the mock serves nothing under /ollama");
    assert_eq!(h.origin.requests()[0].target, "/ollama/api/tags?x=1");
}

pub async fn absolute_form_target_stays_on_the_origin<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let req = format!(
        "GET http://evil.example:1/api/tags?via=absolute HTTP/1.1\r\nHost: evil.example:1\r\ncf-aig-authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = raw(h.proxy, req.as_bytes()).await;
    let answer = read_until(&mut stream, b"\r\n\r\n").await;
    if t.quirks().refuses_absolute_form {
        assert!(
            !answer.starts_with(b"HTTP/1.1 2"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            h.origin.requests().is_empty(),
            "the refused request reached the origin"
        );
        return;
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = &h.origin.requests()[0];
    assert_eq!(seen.target, "/api/tags?via=absolute");
    assert_eq!(seen.headers["host"], h.origin.addr().to_string());
}

pub async fn response_head_is_rewritten_for_the_client<T: Target>(t: &T) {
    let h = Harness::start(t, &[("CORS_ALLOWED_ORIGINS", BROWSER)]).await;
    let got = call(
        h.proxy,
        "GET",
        "/headers",
        &[AUTH, ("origin", BROWSER)],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.all("access-control-allow-origin"),
        [BROWSER],
        "never two, never the origin's own"
    );
    assert!(got.header("access-control-allow-credentials").is_none());
    assert!(
        got.header("x-origin-hop").is_none(),
        "header nominated by Connection was passed on"
    );
    assert!(got.header("keep-alive").is_none());
    assert_eq!(got.header("x-origin-kept"), Some("yes"));
    assert!(
        got.header("set-cookie").is_none(),
        "the origin's cookies (an Access session among them) reached the client"
    );
    let vary = got.all("vary").join(",");
    assert!(
        vary.contains("Accept-Encoding") && vary.contains("Origin"),
        "vary: {vary}"
    );
}

pub async fn origin_status_and_body_pass_through<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    for code in [200u16, 400, 404, 418, 500, 503] {
        let got = call(
            h.proxy,
            "POST",
            &format!("/status/{code}"),
            &[AUTH],
            full("{}"),
        )
        .await;
        assert_eq!(got.status, code);
        assert_eq!(
            got.body.as_ref(),
            br#"{"error":"from origin"}"#,
            "status {code}"
        );
    }
}

/// A `GET` carrying a body (some clients send one) is answered like any
/// other: natively the body goes on; at the edge workerd cannot send a
/// `GET` with a body, so the Worker sends it without.
pub async fn a_get_with_a_body_is_answered<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    for _ in 0..2 {
        let got = call(h.proxy, "GET", "/api/version", &[AUTH], full(r#"{"x":1}"#)).await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    }
    let seen = h.origin.requests();
    assert_eq!(seen.len(), 2);
    let body = if T::NAME == "native" {
        &br#"{"x":1}"#[..]
    } else {
        b""
    };
    assert_eq!(&seen[1].body[..], body);
}

/// A body its client announces longer than it sends, then ends its input
/// (a client gone mid-upload): the client's failure — 400 `bad_request` if
/// anyone is left to read it — never the origin's (not 502, and nothing
/// complete is forwarded), with a declared length as with chunks.
pub async fn a_body_its_client_breaks_gets_400<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    for framing in broken_bodies() {
        broken_body_gets_400(h.proxy, &framing).await;
    }
    assert!(
        h.origin.requests().iter().all(|r| !r.body_complete),
        "a broken body reached the origin complete"
    );
}

/// A chat body announced longer than what is sent: as a chunk, and as a
/// declared length (the head's end and the body's start).
pub(crate) fn broken_bodies() -> [String; 2] {
    let start = r#"{"model":"qwen3:8b","messages":[{"role":"user","content":"#;
    [
        format!(
            "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{start}",
            start.len() + 100
        ),
        format!("Content-Length: {}\r\n\r\n{start}", start.len() + 100),
    ]
}

/// Sends a chat request with the broken body `framing`, ends its input,
/// and checks the answer is 400 `bad_request`.
pub(crate) async fn broken_body_gets_400(proxy: std::net::SocketAddr, framing: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: proxy\r\n{}: {}\r\nContent-Type: application/json\r\n{framing}",
        AUTH.0, AUTH.1
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{framing:?}: {answer}");
    assert!(answer.contains("bad_request"), "{framing:?}: {answer}");
}

/// An LLM's answer that a compressing proxy in front of Ollama sent encoded,
/// with its length, arrives whole (the Worker reads it decoded as it
/// meters it; the encoded length does not frame what it sends on).
pub async fn an_encoded_answer_with_a_length_arrives_whole<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let body = r#"{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}"#;
    let got = call(h.proxy, "POST", "/api/chat?gzip=1", &[AUTH], full(body)).await;
    assert_eq!(got.status, 200);
    let text = match got.header("content-encoding") {
        Some("gzip") => {
            use std::io::Write as _;
            let mut gunzip = std::process::Command::new("gzip")
                .arg("-dc")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("gzip");
            gunzip.stdin.take().unwrap().write_all(&got.body).unwrap();
            gunzip.wait_with_output().unwrap().stdout
        }
        _ => got.body.to_vec(),
    };
    let text = String::from_utf8_lossy(&text);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains(r#""done":true"#), "{text}");
}

/// Checks lines arrived spread out as the origin sent them, not all at the end.
fn assert_live(lines: &[(std::time::Instant, String)], expected: usize, delay: Duration) {
    assert_eq!(lines.len(), expected, "lines: {lines:?}");
    let first = lines.first().unwrap().0;
    let last = lines.last().unwrap().0;
    let spread = last - first;
    // The origin paced lines `delay` apart; a buffering proxy would deliver
    // them together. Require at least half the paced spread.
    let paced = delay * (expected as u32 - 1);
    assert!(
        spread >= paced / 2,
        "lines arrived within {spread:?}, origin spread them over {paced:?}: buffered"
    );
}

pub async fn ndjson_streams_chunk_by_chunk<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let delay = Duration::from_millis(150);
    let req = request(
        h.proxy,
        "POST",
        "/api/chat?chunks=5&delay_ms=150",
        &[AUTH],
        full(r#"{"model":"m","stream":true}"#),
    );
    let response = send(req).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let lines = lines_with_arrival(response).await;
    assert_live(&lines, 5, delay);
    for (i, (_, line)) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["message"]["content"], format!("tok{i} "));
    }
}

pub async fn sse_streams_chunk_by_chunk<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let delay = Duration::from_millis(150);
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let response = send(request(
        h.proxy,
        "POST",
        "/v1/chat/completions?chunks=4&delay_ms=150",
        &[AUTH],
        full(body),
    ))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let lines = lines_with_arrival(response).await;
    assert_live(&lines, 5, delay);
    assert_eq!(lines.last().unwrap().1, "data: [DONE]");
}

pub async fn openai_and_native_json_endpoints<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let models = call(h.proxy, "GET", "/v1/models", &[AUTH], empty()).await;
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["data"][0]["id"], "llama3.2:1b");
    let tags = call(h.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
    assert_eq!(tags.json()["models"][0]["name"], "llama3.2:1b");
    assert!(
        tags.header("x-accel-buffering").is_none(),
        "a fixed-length reply is not a stream"
    );
    let version = call(h.proxy, "GET", "/api/version", &[AUTH], empty()).await;
    assert_eq!(version.json()["version"], "0.0.0-mock");
}

pub async fn large_download_is_intact<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let size = 48 << 20;
    let got = call(
        h.proxy,
        "GET",
        &format!("/big?bytes={size}"),
        &[AUTH],
        empty(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), size);
    assert!(
        got.body == pattern(size),
        "downloaded bytes differ from what the origin sent"
    );
}

pub async fn large_upload_is_intact<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let size = 32 << 20;
    let sent = pattern(size);
    let got = call(
        h.proxy,
        "POST",
        "/echo",
        &[AUTH, ("content-type", "application/octet-stream")],
        full(sent.clone()),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.body == sent, "echoed bytes differ from the upload");
    h.origin
        .wait_until(ORIGIN_WAIT, "the upload to be recorded", |r, _| {
            r.len() == 1
        })
        .await;
    let seen = &h.origin.requests()[0];
    assert!(
        seen.body_complete && seen.body == sent,
        "origin got {} bytes",
        seen.body.len()
    );
    assert_eq!(seen.headers["content-length"], size.to_string());
}

pub async fn client_disconnect_mid_stream_reaches_origin<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let req = format!(
        "POST /api/chat?chunks=200&delay_ms=50 HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut stream = raw(h.proxy, req.as_bytes()).await;
    let first = read_until(&mut stream, b"tok0").await;
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    drop(stream);
    h.origin
        .wait_until(
            ORIGIN_WAIT,
            "the origin to notice the client left",
            |_, gone| gone == 1,
        )
        .await;
}

pub async fn client_disconnect_before_response_reaches_origin<T: Target>(t: &T) {
    if t.quirks().misses_disconnect_before_response {
        eprintln!(
            "skipped: this runtime does not notice a client leaving before the response head"
        );
        return;
    }
    let h = Harness::start(t, &[]).await;
    let req = format!(
        "GET /hang HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\n\r\n"
    );
    let stream = raw(h.proxy, req.as_bytes()).await;
    h.origin
        .wait_until(ORIGIN_WAIT, "the request to reach the origin", |r, _| {
            r.len() == 1
        })
        .await;
    drop(stream);
    h.origin
        .wait_until(
            ORIGIN_WAIT,
            "the origin to notice the client left",
            |_, gone| gone == 1,
        )
        .await;
}

pub async fn origin_down_gets_502<T: Target>(t: &T) {
    let down = format!("http://{}", closed_port().await);
    let h = Harness::start(t, &[("OLLAMA_ORIGIN", &down)]).await;
    let got = call(
        h.proxy,
        "POST",
        "/api/chat",
        &[AUTH, ("origin", BROWSER)],
        full("{}"),
    )
    .await;
    assert_openai_error(&got, 502, "origin_unreachable");
    assert_eq!(got.all("access-control-allow-origin"), ["*"]);
}

pub async fn origin_answering_garbage_gets_502<T: Target>(t: &T) {
    let origin = BrokenOrigin::start(Breakage::Garbage).await;
    let h = Harness::start(t, &[("OLLAMA_ORIGIN", &origin.url())]).await;
    let got = call(h.proxy, "POST", "/api/chat", &[AUTH], full("{}")).await;
    assert_openai_error(&got, 502, "origin_unreachable");
}

/// An origin that resets its connection in the middle of an upload (a
/// declared length) is the origin's failure: 502, not the client's 400.
pub async fn an_origin_that_breaks_off_an_upload_gets_502<T: Target>(t: &T) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = BrokenOrigin::start(Breakage::ResetMidUpload).await;
    let h = Harness::start(t, &[("OLLAMA_ORIGIN", &origin.url())]).await;
    let size = 8 << 20;
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n"
    );
    let stream = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The client sends its whole body (or as much as the proxy takes).
    let sending = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&pattern(size)).await;
        write
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(ORIGIN_WAIT, read.read_to_end(&mut answer))
        .await
        .expect("the proxy answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("origin_unreachable"), "{answer}");
    sending.abort();
}

/// Sends a request through a proxy in front of a [`BrokenOrigin`] and
/// returns everything the client received until the proxy closed. For a
/// reset, the origin is told to cut once the first chunk reached the client.
async fn through_broken(t: &impl Target, breakage: Breakage) -> String {
    let origin = BrokenOrigin::start(breakage).await;
    let h = Harness::start(t, &[("OLLAMA_ORIGIN", &origin.url())]).await;
    let (path, first) = match breakage {
        Breakage::ResetMidEvents => ("/v1/messages", FIRST_EVENT),
        _ => ("/api/chat", FIRST_CHUNK),
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: proxy\r\ncf-aig-authorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut stream = raw(h.proxy, req.as_bytes()).await;
    let mut got = Vec::new();
    if matches!(
        breakage,
        Breakage::ResetMidStream | Breakage::ResetMidEvents
    ) {
        got = tokio::time::timeout(ORIGIN_WAIT, read_until(&mut stream, first.as_bytes()))
            .await
            .expect("the first chunk did not arrive");
        origin.cut();
    }
    // Returns at the end marker of a clean chunked body, or when the proxy
    // closes or resets the connection.
    let rest = tokio::time::timeout(ORIGIN_WAIT, read_until(&mut stream, b"\r\n0\r\n\r\n"))
        .await
        .expect("the proxy kept the connection open after the origin broke it");
    got.extend_from_slice(&rest);
    String::from_utf8_lossy(&got).into_owned()
}

/// A stream the origin cuts off must not look complete to the client: it
/// carries the proxy's error record in the stream's own format (Ollama's
/// `{"error": ...}` line here), and natively it also lacks the final chunk.
/// (The Workers runtime ends the chunked stream cleanly whatever the Worker
/// does, so there the error record is the signal.)
pub async fn origin_reset_mid_stream_is_not_a_clean_end<T: Target>(t: &T) {
    let got = through_broken(t, Breakage::ResetMidStream).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains(FIRST_CHUNK), "the first chunk was lost: {got}");
    let notice = r#"{"error":"The Ollama origin's stream broke off before it was complete."}"#;
    assert!(
        got.contains(&format!("{FIRST_CHUNK}\r\n")) && got.contains(notice),
        "no error record after the cut: {got}"
    );
    if !t.quirks().ends_broken_streams_cleanly {
        assert!(
            !got.ends_with("\r\n0\r\n\r\n"),
            "a reset stream ended like a complete one: {got}"
        );
    }
}

/// An Anthropic Messages stream the origin breaks off ends with
/// Anthropic's `error` event, which its SDKs raise (they skip unnamed
/// events, so the OpenAI-shaped record would leave the answer looking
/// whole).
pub async fn an_anthropic_stream_that_breaks_off_ends_with_its_error_event<T: Target>(t: &T) {
    let got = through_broken(t, Breakage::ResetMidEvents).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let notice = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The Ollama origin's stream broke off before it was complete.\"}}\n\n";
    let at = got
        .find(notice)
        .unwrap_or_else(|| panic!("no error event after the cut: {got}"));
    assert!(
        got.find(FIRST_EVENT).is_some_and(|content| content < at),
        "the content was lost, or came after the error event: {got}"
    );
}

pub async fn origin_short_body_is_not_a_clean_end<T: Target>(t: &T) {
    let got = through_broken(t, Breakage::ShortBody).await;
    assert_cut_short(&got);
}

/// `got`, an answer the origin promised 100 bytes of and cut, must not
/// look complete: short of its length, or chunked without the last chunk.
/// Returns its body.
fn assert_cut_short(got: &str) -> &str {
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let (head, body) = got.split_once("\r\n\r\n").expect("a whole head");
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        assert!(
            !got.ends_with("\r\n0\r\n\r\n"),
            "a cut body ended cleanly: {got}"
        );
    } else {
        assert!(head.contains("content-length: 100"), "{head}");
        assert!(body.len() < 100, "filled up to its length: {got}");
    }
    body
}

/// A stream of declared length that breaks off gets no error record: its
/// framing already shows the cut, and the record would fill the length up
/// (the client would read a complete answer ending in a cut line).
pub async fn a_short_stream_of_declared_length_is_not_a_clean_end<T: Target>(t: &T) {
    let got = through_broken(t, Breakage::ShortStream).await;
    let body = assert_cut_short(&got);
    assert!(!body.contains("broke off"), "{got}");
}

pub async fn body_over_limit_by_content_length_gets_413<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_BODY_BYTES", "1KiB")]).await;
    let got = call(h.proxy, "POST", "/echo", &[AUTH], full(vec![b'x'; 1025])).await;
    assert_openai_error(&got, 413, "request_too_large");
    let got = call(h.proxy, "POST", "/echo", &[AUTH], full(vec![b'x'; 1024])).await;
    assert_eq!(got.status, 200);
    h.origin
        .wait_until(ORIGIN_WAIT, "the allowed upload", |r, _| r.len() == 1)
        .await;
    assert_eq!(
        h.origin.requests().len(),
        1,
        "the oversized body reached the origin"
    );
}

pub async fn proxy_errors_carry_cors_headers<T: Target>(t: &T) {
    let h = Harness::start(t, &[("CORS_ALLOWED_ORIGINS", BROWSER)]).await;
    let got = call(
        h.proxy,
        "POST",
        "/v1/chat/completions",
        &[("origin", BROWSER)],
        full("{}"),
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(got.all("access-control-allow-origin"), [BROWSER]);
    assert!(got.all("vary").join(",").contains("Origin"));
    let got = call(
        h.proxy,
        "POST",
        "/api/pull",
        &[AUTH, ("origin", "https://evil.example")],
        full("{}"),
    )
    .await;
    assert_eq!(got.status, 403);
    assert!(got.header("access-control-allow-origin").is_none());
}

pub async fn request_ids_are_kept_or_generated<T: Target>(t: &T) {
    let h = Harness::start(t, &[]).await;
    let got = call(
        h.proxy,
        "GET",
        "/api/tags",
        &[AUTH, ("x-request-id", "client-id-42")],
        empty(),
    )
    .await;
    assert_eq!(got.header("x-request-id"), Some("client-id-42"));
    let got = call(h.proxy, "GET", "/api/version", &[AUTH], empty()).await;
    let generated = got.header("x-request-id").expect("an id").to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(
        generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );
    let seen = h.origin.requests();
    assert_eq!(seen[0].headers["x-request-id"], "client-id-42");
    assert_eq!(seen[1].headers["x-request-id"], generated.as_str());
    // Local answers carry one too, and each request gets its own.
    let denied = call(h.proxy, "GET", "/api/tags", &[], empty()).await;
    let other = denied.header("x-request-id").expect("an id on a 401");
    assert_ne!(other, generated);
}

/// Without a `Content-Length` the limit can only be enforced while the
/// body streams: the client gets 413 while still sending, and the origin
/// sees an aborted upload, never a truncated one that looks complete.
pub async fn chunked_body_over_limit_is_cut_off<T: Target>(t: &T) {
    let h = Harness::start(t, &[("MAX_BODY_BYTES", "64KiB")]).await;
    // No Content-Length: the limit can only be enforced while streaming.
    let (tx, body) = channel_body();
    let sender = tokio::spawn(async move {
        for _ in 0..5 {
            tx.send(Bytes::from(vec![b'y'; 16 * 1024])).await.unwrap();
        }
        tx // stays open: the client is still "sending" when the proxy answers
    });
    let req = request(
        h.proxy,
        "POST",
        "/api/chat",
        &[AUTH, ("content-type", "application/json")],
        body,
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), send(req)).await;
    let got = collect(answer.expect("no answer while the client kept the body open")).await;
    assert_eq!(got.status, 413, "{:?}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "request_too_large");
    h.origin.expect_one_aborted_upload().await;
    drop(sender);
}
