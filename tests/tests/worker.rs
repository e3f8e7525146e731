//! The shared scenarios against the Worker, built by `cargo xtask
//! build-worker` and running in the real Workers runtime (workerd).

use std::sync::LazyLock;

use ollama_proxy_tests::client::{call, empty};
use ollama_proxy_tests::workerd::Workerd;
use ollama_proxy_tests::MockOrigin;

static WORKER: LazyLock<Option<Workerd>> = LazyLock::new(Workerd::find);

/// The Worker target, or `None` (the test is skipped) when not built.
struct Worker;

impl ollama_proxy_tests::Target for Worker {
    const NAME: &'static str = "worker";

    async fn launch(
        &self,
        vars: &ollama_proxy_tests::Vars,
    ) -> (std::net::SocketAddr, Box<dyn Send>) {
        WORKER
            .as_ref()
            .expect("checked by the scenario macro")
            .launch(vars)
            .await
    }

    fn quirks(&self) -> ollama_proxy_tests::target::Quirks {
        WORKER
            .as_ref()
            .expect("checked by the scenario macro")
            .quirks()
    }
}

ollama_proxy_tests::scenario_tests!(Worker, WORKER.is_some());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_never_forwarded() {
    if WORKER.is_some() {
        ollama_proxy_tests::hostile::check_all(&Worker).await;
    }
}

const TOKEN: &str = ollama_proxy_tests::TOKEN;

/// Starts workerd with an invalid configuration, checks that a request
/// gets 500 `proxy_misconfigured` with nothing more for the client, and
/// returns the log once it holds the config error line (bounded wait).
async fn misconfigured(workerd: &Workerd, vars: Vec<(String, String)>, token: &str) -> String {
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    let auth = format!("Bearer {token}");
    let got = call(
        addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(got.status, 500);
    assert_eq!(got.json()["error"]["code"], "proxy_misconfigured");
    let body = String::from_utf8_lossy(&got.body).into_owned();
    for (name, _) in &vars {
        assert!(
            !body.contains(name.as_str()),
            "details leaked to the client: {body}"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = running.log();
        if log.contains("config error") || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_answers_500_and_logs_the_variable_not_the_secret() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), "not-a-url".to_owned()),
        ("AIG_AUTH_TOKEN".to_owned(), TOKEN.to_owned()),
    ];
    let log = misconfigured(workerd, vars, TOKEN).await;
    assert!(log.contains("config error: OLLAMA_ORIGIN"), "log: {log}");
    assert!(
        !log.contains(TOKEN) && !log.contains("not-a-url"),
        "a configured value in the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_document_answers_500_and_logs_the_key_and_field() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let secret = "a-secret-token-1234";
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), "http://127.0.0.1:9".to_owned()),
        (
            "AIG_KEYS".to_owned(),
            format!("[[keys]]\nname = \"alice\"\ntoken = \"{secret}\"\nexpires = \"soon\"\n"),
        ),
    ];
    let log = misconfigured(workerd, vars, secret).await;
    assert!(
        log.contains("config error: AIG_KEYS: key \"alice\": expires:"),
        "log: {log}"
    );
    assert!(
        !log.contains(secret) && !log.contains("soon"),
        "a value in the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_one_json_line_per_request_without_tokens() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let origin = MockOrigin::start().await;
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), origin.url()),
        ("AIG_AUTH_TOKEN".to_owned(), TOKEN.to_owned()),
    ];
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    let auth = format!("Bearer {TOKEN}");
    let first = call(
        addr,
        "GET",
        "/api/tags?q=secret-query",
        &[("cf-aig-authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(first.status, 200);
    let first_id = first
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    assert_eq!(
        call(
            addr,
            "GET",
            "/api/tags",
            &[("authorization", "Bearer wrong-token-99")],
            empty()
        )
        .await
        .status,
        401
    );
    // console.log lines reach the log file as workerd writes them; wait for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let log = running.log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| v["message"] == "request")
            .collect();
        if lines.len() >= 2 || std::time::Instant::now() > deadline {
            assert!(
                !log.contains(TOKEN) && !log.contains("wrong-token-99"),
                "token in the log: {log}"
            );
            assert!(!log.contains("secret-query"), "query in the log: {log}");
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["path"], "/api/tags");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["key"], "default");
    assert!(lines[0]["duration_ms"].is_number());
    assert_eq!(lines[0]["request_id"], first_id.as_str());
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["error"], "invalid_api_key");
    assert_ne!(lines[1]["request_id"], lines[0]["request_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_engine_gets_one_data_point_per_request_when_bound() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let origin = MockOrigin::start().await;
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), origin.url()),
        ("AIG_AUTH_TOKENS".to_owned(), format!("team-a:{TOKEN}")),
        (
            ollama_proxy_tests::workerd::ANALYTICS.to_owned(),
            "fake".to_owned(),
        ),
    ];
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    let auth = format!("Bearer {TOKEN}");
    let ok = call(
        addr,
        "GET",
        "/v1/models",
        &[("authorization", &auth)],
        empty(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let denied = call(addr, "GET", "/api/tags", &[], empty()).await;
    assert_eq!(denied.status, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let points = loop {
        let points: Vec<serde_json::Value> = running
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| v["message"] == "analytics")
            .map(|v| v["point"].clone())
            .collect();
        if points.len() >= 2 || std::time::Instant::now() > deadline {
            break points;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(points.len(), 2, "{points:?}");
    let id = ok.header("x-request-id").unwrap();
    assert_eq!(points[0]["indexes"], serde_json::json!(["team-a"]));
    assert_eq!(
        points[0]["blobs"],
        serde_json::json!(["v1", "2xx", "team-a", "GET", "-", id, "-"])
    );
    assert_eq!(points[0]["doubles"][0], 200.0);
    assert!(points[0]["doubles"][1].as_f64().unwrap() >= 0.0);
    assert_eq!(points[1]["blobs"][1], "4xx");
    assert_eq!(points[1]["blobs"][4], "missing_api_key");
    assert!(!running.log().contains(TOKEN));
}

/// Lines (or data points) workerd has logged with `message`, once `done`
/// holds for them (bounded wait).
async fn logged(
    running: &ollama_proxy_tests::workerd::Running,
    message: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = running
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| v["message"] == message)
            .collect();
        if done(&lines) || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_answers_are_logged_with_their_usage_when_they_end() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let origin = MockOrigin::start().await;
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), origin.url()),
        ("AIG_AUTH_TOKEN".to_owned(), TOKEN.to_owned()),
        (
            ollama_proxy_tests::workerd::ANALYTICS.to_owned(),
            "fake".to_owned(),
        ),
    ];
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    let auth = format!("Bearer {TOKEN}");
    let post = |path: &'static str, id: &'static str, body: &'static str| {
        let auth = auth.clone();
        async move {
            call(
                addr,
                "POST",
                path,
                &[
                    ("cf-aig-authorization", auth.as_str()),
                    ("x-request-id", id),
                ],
                ollama_proxy_tests::client::full(body),
            )
            .await
        }
    };
    let chat = r#"{"model":"llama3.2:1b","messages":[]}"#;
    assert_eq!(
        post("/api/chat?chunks=5&delay_ms=20", "w-native", chat)
            .await
            .status,
        200
    );
    post(
        "/v1/chat/completions?chunks=4",
        "w-openai",
        r#"{"model":"llama3.2:1b","stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    post("/api/generate?cached=1", "w-cached", chat).await;
    // A stream that did not ask: asked, counted, the usage chunk taken out.
    let unasked = post(
        "/v1/completions?chunks=3",
        "w-unasked",
        r#"{"model":"llama3.2:1b","stream":true,"prompt":"hi"}"#,
    )
    .await;
    let text = String::from_utf8_lossy(&unasked.body);
    assert!(
        !text.contains("usage") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    // An OpenAI answer that is not streamed, and embeddings.
    post("/v1/chat/completions", "w-answer", chat).await;
    let embed = r#"{"model":"llama3.2:1b","input":"hi"}"#;
    post("/api/embed", "w-embed", embed).await;
    post("/v1/embeddings", "w-embeddings", embed).await;
    // Anthropic's Messages (Claude Code's route): counts at the end.
    post(
        "/v1/messages?chunks=3",
        "w-anthropic",
        r#"{"model":"llama3.2:1b","stream":true,"max_tokens":64,"messages":[]}"#,
    )
    .await;
    // A client that leaves after the first chunk of a long stream.
    let response = ollama_proxy_tests::client::send(ollama_proxy_tests::client::request(
        addr,
        "POST",
        "/api/chat?chunks=50&delay_ms=100",
        &[
            ("cf-aig-authorization", auth.as_str()),
            ("x-request-id", "w-gone"),
        ],
        ollama_proxy_tests::client::full(chat),
    ))
    .await;
    let mut body = response.into_body();
    use http_body_util::BodyExt;
    assert!(body.frame().await.is_some());
    drop(body);
    let lines = logged(&running, "request", |l| l.len() >= 9).await;
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
            .clone()
    };
    let native = line("w-native");
    assert_eq!(native["model"], "llama3.2:1b");
    assert_eq!(native["prompt_tokens"], 26.0);
    assert_eq!(native["completion_tokens"], 5.0);
    assert!(native["ttft_ms"].as_f64().unwrap() >= 0.0, "{native}");
    // Logged at the stream's end: the duration covers the whole answer.
    assert!(native["duration_ms"].as_f64().unwrap() >= 80.0, "{native}");
    let openai = line("w-openai");
    assert_eq!(
        (
            openai["prompt_tokens"].as_f64(),
            openai["completion_tokens"].as_f64()
        ),
        (Some(26.0), Some(4.0))
    );
    let unasked = line("w-unasked");
    assert_eq!(
        (
            unasked["prompt_tokens"].as_f64(),
            unasked["completion_tokens"].as_f64()
        ),
        (Some(26.0), Some(3.0))
    );
    let count =
        |l: &serde_json::Value| (l["prompt_tokens"].as_f64(), l["completion_tokens"].as_f64());
    assert_eq!(count(&line("w-answer")), (Some(5.0), Some(5.0)));
    assert_eq!(count(&line("w-embed")), (Some(7.0), None));
    assert_eq!(count(&line("w-embeddings")), (Some(7.0), None));
    assert_eq!(count(&line("w-anthropic")), (Some(26.0), Some(3.0)));
    let gone = line("w-gone");
    assert_eq!(count(&gone), (None, None), "{gone}");
    assert_eq!(gone["usage_unknown"], "client_gone", "{gone}");
    let cached = line("w-cached");
    assert!(cached["prompt_tokens"].is_null(), "{cached}");
    assert_eq!(cached["usage_unknown"], "cached_prompt");

    let points = logged(&running, "analytics", |p| p.len() >= 3).await;
    let point = points
        .iter()
        .map(|p| &p["point"])
        .find(|p| p["blobs"][5] == "w-native")
        .expect("a data point for the native chat");
    assert_eq!(point["blobs"][6], "llama3.2:1b");
    assert_eq!(point["doubles"][2], 26.0);
    assert_eq!(point["doubles"][3], 5.0);
    assert!(point["doubles"][4].as_f64().unwrap() >= 0.0);
}

/// Limits configured but the doorman object not bound: limited requests are
/// refused (500, the reason in the log), never let through unlimited;
/// requests no limit applies to are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_without_the_doorman_binding_fail_closed() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let origin = MockOrigin::start().await;
    let keys =
        "[[keys]]\nname = \"paced\"\ntoken = \"paced-token-0007\"\nrequests_per_minute = 100\n";
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), origin.url()),
        ("AIG_AUTH_TOKEN".to_owned(), TOKEN.to_owned()),
        ("AIG_KEYS".to_owned(), keys.to_owned()),
        (
            ollama_proxy_tests::workerd::NO_DOORMAN.to_owned(),
            "1".to_owned(),
        ),
    ];
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    let limited = call(
        addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", "Bearer paced-token-0007")],
        empty(),
    )
    .await;
    assert_eq!(limited.status, 500);
    assert_eq!(limited.json()["error"]["code"], "proxy_misconfigured");
    let auth = format!("Bearer {TOKEN}");
    let free = call(
        addr,
        "GET",
        "/api/tags",
        &[("cf-aig-authorization", auth.as_str())],
        empty(),
    )
    .await;
    assert_eq!(free.status, 200);
    assert_eq!(origin.requests().len(), 1, "the limited request went on");
    let log = running.log();
    assert!(
        log.contains("DOORMAN Durable Object binding is missing"),
        "{log}"
    );
}

/// The doorman object started again — as a deployment does, and as an idle
/// object evicted after a few seconds is — reads every key's bucket back
/// from its storage: a key that used up its `requests_per_minute` is still
/// refused, not handed a full bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_holds_across_a_doorman_restart() {
    let Some(workerd) = WORKER.as_ref() else {
        return;
    };
    let origin = MockOrigin::start().await;
    let store =
        std::env::temp_dir().join(format!("ollama-proxy-doorman-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    // Two a minute: the bucket is empty after two, and one more takes 30 s.
    let keys =
        "[[keys]]\nname = \"paced\"\ntoken = \"paced-token-0007\"\nrequests_per_minute = 2\n";
    let vars = vec![
        ("OLLAMA_ORIGIN".to_owned(), origin.url()),
        ("AIG_KEYS".to_owned(), keys.to_owned()),
        (
            ollama_proxy_tests::workerd::DOORMAN_STORE.to_owned(),
            store.to_string_lossy().into_owned(),
        ),
    ];
    let auth = [("cf-aig-authorization", "Bearer paced-token-0007")];
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    for expected in [200, 200, 429] {
        let got = call(addr, "GET", "/api/tags", &auth, empty()).await;
        assert_eq!(got.status, expected, "{}", running.log());
    }
    drop(running);
    let (addr, running) = tokio::task::block_in_place(|| workerd.start(&vars));
    let got = call(addr, "GET", "/api/tags", &auth, empty()).await;
    assert_eq!(got.status, 429, "a full bucket after the restart");
    assert_eq!(got.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "retry after {retry} s");
    assert_eq!(origin.requests().len(), 2);
    drop(running);
    let _ = std::fs::remove_dir_all(&store);
}
