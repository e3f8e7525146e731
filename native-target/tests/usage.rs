//! LLM usage through the real binary: what the mock origin's answers said
//! (token counts, durations) shows on each request's log line and in the
//! metrics, as a client that reads the whole answer (or leaves early) leaves
//! it.

use std::time::Duration;

use ollama_proxy_tests::client::{call, empty, full, request, send, Got};
use ollama_proxy_tests::origin::MOCK_PROMPT_TOKENS;
use ollama_proxy_tests::MockOrigin;

mod common;
use common::{sigterm, start_with, TOKEN};

/// POSTs `body` to `path` with the test token and request id `id`.
async fn ask(addr: std::net::SocketAddr, path: &str, id: &str, body: &'static str) -> Got {
    let auth = format!("Bearer {TOKEN}");
    call(
        addr,
        "POST",
        path,
        &[
            ("cf-aig-authorization", auth.as_str()),
            ("x-request-id", id),
        ],
        full(body),
    )
    .await
}

fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_shows_on_log_lines_and_in_metrics() {
    let origin = MockOrigin::start().await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin_addr = admin.to_string();
    let mut proxy = start_with(
        &origin.url(),
        &[
            ("LOG_FORMAT", "json"),
            ("METRICS_ADDR", admin_addr.as_str()),
        ],
    );
    let auth = format!("Bearer {TOKEN}");
    let addr = proxy.addr;
    let chat = r#"{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}"#;
    // Native stream: 5 chunks 20 ms apart, a 1.5 s model load reported.
    let got = ask(
        addr,
        "/api/chat?chunks=5&delay_ms=20&load_ms=1500",
        "native-1",
        chat,
    )
    .await;
    assert_eq!(got.status, 200);
    // A cached prompt: Ollama gives no prompt count.
    ask(
        addr,
        "/api/generate?chunks=3&cached=1",
        "cached-1",
        r#"{"model":"llama3.2:1b","prompt":"hi"}"#,
    )
    .await;
    // OpenAI: a stream that asked for usage, and an answer.
    ask(
        addr,
        "/v1/chat/completions?chunks=4",
        "openai-stream",
        r#"{"model":"llama3.2:1b","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
    )
    .await;
    ask(addr, "/v1/chat/completions", "openai-answer", chat).await;
    // A stream that did not ask: the proxy asks, counts, and takes the usage
    // chunk out again.
    let unasked = ask(
        addr,
        "/v1/chat/completions?chunks=2",
        "openai-unasked",
        r#"{"model":"llama3.2:1b","stream":true,"messages":[]}"#,
    )
    .await;
    let unasked_len = unasked.body.len() as u64;
    let text = String::from_utf8_lossy(&unasked.body);
    assert!(
        !text.contains("usage") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    // Anthropic's Messages (Claude Code's route): counts at the end.
    ask(
        addr,
        "/v1/messages?chunks=3&delay_ms=10",
        "anthropic-stream",
        r#"{"model":"llama3.2:1b","stream":true,"max_tokens":64,"messages":[]}"#,
    )
    .await;
    // Embeddings: the input's tokens, nothing generated.
    ask(
        addr,
        "/api/embed",
        "embed-1",
        r#"{"model":"llama3.2:1b","input":"hi"}"#,
    )
    .await;
    ask(
        addr,
        "/v1/embeddings",
        "embed-2",
        r#"{"model":"llama3.2:1b","input":"hi"}"#,
    )
    .await;
    // Not an LLM's answer: no usage on the line.
    call(
        proxy.addr,
        "GET",
        "/api/tags",
        &[
            ("cf-aig-authorization", auth.as_str()),
            ("x-request-id", "tags-1"),
        ],
        empty(),
    )
    .await;
    // A client that leaves mid-stream.
    let response = send(request(
        proxy.addr,
        "POST",
        "/api/chat?chunks=50&delay_ms=100",
        &[
            ("cf-aig-authorization", auth.as_str()),
            ("x-request-id", "gone-1"),
        ],
        full(chat),
    ))
    .await;
    // Read the first chunk, then leave.
    let mut body = response.into_body();
    use http_body_util::BodyExt;
    assert!(body.frame().await.is_some());
    drop(body);
    origin
        .wait_until(
            Duration::from_secs(10),
            "the origin to see the client leave",
            |_, gone| gone >= 1,
        )
        .await;

    let metrics = call(admin, "GET", "/metrics", &[], empty()).await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let prompt = "ollama_proxy_tokens_total{key=\"default\",model=\"llama3.2:1b\",kind=\"prompt\"}";
    let completion =
        "ollama_proxy_tokens_total{key=\"default\",model=\"llama3.2:1b\",kind=\"completion\"}";
    // Prompt: native (26) + OpenAI streams (26 twice) + Anthropic (26) +
    // OpenAI answer (5) + embeddings (7 twice); the cached prompt adds
    // nothing. Completion: 5 + 3 + 4 + 3 + 5 + 2.
    assert_eq!(
        sample(&text, prompt),
        (4 * MOCK_PROMPT_TOKENS + 5 + 14) as f64,
        "{text}"
    );
    assert_eq!(sample(&text, completion), 22.0, "{text}");
    assert_eq!(
        sample(
            &text,
            "ollama_proxy_model_load_seconds_count{model=\"llama3.2:1b\"}"
        ),
        1.0
    );
    for reason in ["cached_prompt", "client_gone"] {
        let name = format!("ollama_proxy_usage_unknown_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &name), 1.0, "{name}\n{text}");
    }
    assert!(
        sample(
            &text,
            "ollama_proxy_time_to_first_token_seconds_count{model=\"llama3.2:1b\"}"
        ) >= 4.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "ollama_proxy_generation_tokens_per_second_count{model=\"llama3.2:1b\"}"
        ) >= 3.0
    );

    sigterm(&proxy.child);
    let status = tokio::task::block_in_place(|| proxy.child.wait()).unwrap();
    assert_eq!(status.code(), Some(0));
    let lines: Vec<serde_json::Value> = proxy
        .stderr
        .iter()
        .filter_map(|l| serde_json::from_str(&l).ok())
        .filter(|o: &serde_json::Value| o["message"] == "request")
        .collect();
    let line = |id: &str| {
        lines
            .iter()
            .find(|o| o["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
            .clone()
    };
    let native = line("native-1");
    assert_eq!(native["model"], "llama3.2:1b");
    assert_eq!(native["prompt_tokens"], MOCK_PROMPT_TOKENS.to_string());
    assert_eq!(native["completion_tokens"], "5");
    let ttft: f64 = native["ttft_ms"].as_str().unwrap().parse().unwrap();
    assert!(
        ttft > 0.0 && ttft < native["duration_ms"].as_f64().unwrap(),
        "{native}"
    );
    let cached = line("cached-1");
    assert_eq!(
        (
            cached["prompt_tokens"].as_str(),
            cached["completion_tokens"].as_str()
        ),
        (Some("-"), Some("3"))
    );
    assert_eq!(line("openai-stream")["completion_tokens"], "4");
    let anthropic = line("anthropic-stream");
    assert_eq!(
        (
            anthropic["prompt_tokens"].as_str(),
            anthropic["completion_tokens"].as_str()
        ),
        (Some("26"), Some("3")),
        "{anthropic}"
    );
    assert_ne!(anthropic["ttft_ms"], "-", "{anthropic}");
    assert_eq!(line("openai-answer")["prompt_tokens"], "5");
    for id in ["embed-1", "embed-2"] {
        let embed = line(id);
        assert_eq!(
            (
                embed["prompt_tokens"].as_str(),
                embed["completion_tokens"].as_str()
            ),
            (Some("7"), Some("-")),
            "{embed}"
        );
    }
    let unasked = line("openai-unasked");
    assert_eq!(unasked["completion_tokens"], "2");
    assert_eq!(
        unasked["bytes_out"].as_u64(),
        Some(unasked_len),
        "{unasked}"
    );
    let tags = line("tags-1");
    assert_eq!(
        (tags["model"].as_str(), tags["ttft_ms"].as_str()),
        (Some("-"), Some("-"))
    );
    let gone = line("gone-1");
    assert_eq!(gone["outcome"], "client_gone");
    assert_eq!(gone["completion_tokens"], "-");
}
