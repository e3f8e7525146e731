use super::*;
use http::Request;

#[path = "decision_limits_tests.rs"]
mod limits;

const TOKEN: &str = "tok-abc123";

fn proxy(extra: &[(&str, &str)]) -> Proxy {
    let mut vars: Vec<(String, String)> = vec![
        (
            "OLLAMA_ORIGIN".into(),
            "http://origin.internal:11434/base".into(),
        ),
        ("AIG_AUTH_TOKEN".into(), TOKEN.into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_lookup(|var| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == var.name())
            .map(|(_, v)| v.clone())
    });
    Proxy::new(config.unwrap())
}

fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn respond(d: Decision) -> Response<Bytes> {
    match d.action {
        Action::Respond(r) => r,
        Action::Forward(p) => panic!("forwarded: {p:?}"),
    }
}

fn forward(d: Decision) -> request::Parts {
    match d.action {
        Action::Forward(p) => p,
        Action::Respond(r) => panic!("answered locally: {r:?}"),
    }
}

fn error_code(r: &Response<Bytes>) -> String {
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    v["error"]["code"].as_str().unwrap().to_owned()
}

const AUTH: (&str, &str) = ("cf-aig-authorization", "Bearer tok-abc123");

#[test]
fn preflight_is_answered_without_token() {
    let p = proxy(&[]);
    let r = respond(p.decide(head(
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
        ],
    )));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[test]
fn options_without_preflight_headers_needs_a_token() {
    let p = proxy(&[]);
    let r = respond(p.decide(head(
        "OPTIONS",
        "/v1/models",
        &[("origin", "https://app.example")],
    )));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn healthz_is_local() {
    let r = respond(proxy(&[]).decide(head("GET", "/healthz", &[])));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.body()[..], br#"{"status":"ok"}"#);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[test]
fn missing_and_wrong_tokens_get_openai_401() {
    let p = proxy(&[]);
    let r = respond(p.decide(head("POST", "/v1/chat/completions", &[])));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(&r), "missing_api_key");
    let r = respond(p.decide(head(
        "POST",
        "/v1/chat/completions",
        &[("cf-aig-authorization", "Bearer nope")],
    )));
    assert_eq!(error_code(&r), "invalid_api_key");
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
}

#[test]
fn forwards_with_rewritten_head() {
    let p = proxy(&[
        ("CF_ACCESS_CLIENT_ID", "id.access"),
        ("CF_ACCESS_CLIENT_SECRET", "acc-secret"),
    ]);
    let d = p.decide(head(
        "POST",
        "http://evil.example/api/chat?x=%2F&y",
        &[
            AUTH,
            ("authorization", "Bearer tok-abc123"),
            ("origin", "https://app.example"),
            ("connection", "x-custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "proxy.example"),
            ("content-type", "application/json"),
        ],
    ));
    assert_eq!(d.exchange.key().unwrap().as_str(), "default");
    let up = forward(d);
    assert_eq!(up.uri, "http://origin.internal:11434/base/api/chat?x=%2F&y");
    assert_eq!(up.headers["host"], "origin.internal:11434");
    for gone in [
        "cf-aig-authorization",
        "authorization",
        "origin",
        "connection",
        "x-custom",
        "keep-alive",
    ] {
        assert!(!up.headers.contains_key(gone), "{gone} forwarded");
    }
    assert_eq!(up.headers["content-type"], "application/json");
    assert_eq!(up.headers["cf-access-client-id"], "id.access");
    assert!(up.headers["cf-access-client-secret"].is_sensitive());
}

#[test]
fn origin_credentials_other_than_ours_pass() {
    let up = forward(proxy(&[]).decide(head(
        "GET",
        "/api/tags",
        &[AUTH, ("authorization", "Bearer for-origin")],
    )));
    assert_eq!(up.headers["authorization"], "Bearer for-origin");
}

/// The proxy's token in `Authorization` never reaches the origin, even
/// where that header may not authenticate (the request then authenticates
/// with the other header), nor when it hides among other credentials.
#[test]
fn our_token_in_authorization_is_dropped_even_where_it_cannot_authenticate() {
    let off = proxy(&[("ALLOW_AUTHORIZATION_HEADER", "false")]);
    for value in [
        "Bearer tok-abc123",
        "Bearer for-origin, Bearer tok-abc123",
        "tok-abc123",
        "Token tok-abc123",
    ] {
        for p in [&off, &proxy(&[])] {
            let up = forward(p.decide(head("GET", "/api/tags", &[AUTH, ("authorization", value)])));
            assert!(
                !up.headers.contains_key("authorization"),
                "{value} forwarded"
            );
        }
    }
    // An SDK's own API-key header carrying the proxy's token stays here;
    // one meant for the origin passes.
    let p = proxy(&[]);
    let up = forward(p.decide(head(
        "POST",
        "/v1/messages",
        &[AUTH, ("x-api-key", "tok-abc123"), ("api-key", "tok-abc123")],
    )));
    assert!(!up.headers.contains_key("x-api-key") && !up.headers.contains_key("api-key"));
    let up = forward(p.decide(head(
        "POST",
        "/v1/messages",
        &[AUTH, ("x-api-key", "sk-ant-for-origin")],
    )));
    assert_eq!(up.headers["x-api-key"], "sk-ant-for-origin");
}

#[test]
fn management_endpoints_need_opt_in() {
    let r = respond(proxy(&[]).decide(head("POST", "/api/pull", &[AUTH])));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&r), "model_management_disabled");
    forward(proxy(&[("ALLOW_MODEL_MANAGEMENT", "true")]).decide(head(
        "POST",
        "/api/pull",
        &[AUTH],
    )));
}

#[test]
fn policy_is_checked_after_auth() {
    let r = respond(proxy(&[]).decide(head("DELETE", "/api/delete", &[])));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn oversized_and_conflicting_lengths() {
    let p = proxy(&[("MAX_BODY_BYTES", "1KiB")]);
    let r = respond(p.decide(head(
        "POST",
        "/api/chat",
        &[AUTH, ("content-length", "1025")],
    )));
    assert_eq!(error_code(&r), "request_too_large");
    forward(p.decide(head(
        "POST",
        "/api/chat",
        &[AUTH, ("content-length", "1024")],
    )));
    let r = respond(p.decide(head(
        "POST",
        "/api/chat",
        &[AUTH, ("content-length", "5, 6")],
    )));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = respond(p.decide(head("POST", "/api/chat", &[AUTH, ("content-length", "+5")])));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn connect_and_asterisk_are_refused() {
    let p = proxy(&[]);
    let r = respond(p.decide(head("CONNECT", "origin.internal:11434", &[AUTH])));
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = respond(p.decide(head("OPTIONS", "*", &[AUTH])));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn response_rewrite() {
    let p = proxy(&[("CORS_ALLOWED_ORIGINS", "https://app.example")]);
    let d = p.decide(head(
        "POST",
        "/api/chat",
        &[AUTH, ("origin", "https://app.example")],
    ));
    let mut resp = http::Response::builder()
        .header("content-type", "application/x-ndjson")
        .header("transfer-encoding", "chunked")
        .header("access-control-allow-origin", "*")
        .header("vary", "Accept-Encoding")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    d.exchange.rewrite_response(&mut resp);
    assert!(!resp.headers.contains_key("transfer-encoding"));
    let acao: Vec<_> = resp
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(acao, ["https://app.example"]);
    let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    assert_eq!(resp.headers["cache-control"], "no-cache");
    assert_eq!(resp.headers["x-accel-buffering"], "no");
}

#[test]
fn fixed_length_json_is_not_marked_streamed() {
    let d = proxy(&[]).decide(head("GET", "/api/tags", &[AUTH]));
    let mut resp = http::Response::builder()
        .header("content-type", "application/json")
        .header("content-length", "12")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    d.exchange.rewrite_response(&mut resp);
    assert!(!resp.headers.contains_key("cache-control"));
    assert!(!resp.headers.contains_key("x-accel-buffering"));
}

#[test]
fn non_ascii_header_values_are_refused_and_stripped() {
    let p = proxy(&[]);
    let r = respond(p.decide(head(
        "POST",
        "/v1/chat/completions",
        &[AUTH, ("x-title", "café ☕")],
    )));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r), "invalid_header_value");
    // Unauthenticated requests learn nothing beyond the 401.
    let r = respond(p.decide(head("POST", "/api/chat", &[("x-title", "café")])));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let d = p.decide(head("GET", "/api/tags", &[AUTH]));
    let mut resp = http::Response::builder()
        .header("x-origin-title", "naïve")
        .header("x-origin-kept", "yes")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    d.exchange.rewrite_response(&mut resp);
    assert!(!resp.headers.contains_key("x-origin-title"));
    assert_eq!(resp.headers["x-origin-kept"], "yes");
}

#[test]
fn head_size_limits_and_smuggling_shapes() {
    let p = proxy(&[]);
    let long = format!("/api/tags?q={}", "a".repeat(MAX_TARGET_BYTES));
    let r = respond(p.decide(head("GET", &long, &[AUTH])));
    assert_eq!(error_code(&r), "uri_too_long");
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
    let fits = format!("/api/tags?q={}", "a".repeat(MAX_TARGET_BYTES - 12));
    forward(p.decide(head("GET", &fits, &[AUTH])));

    let value = "v".repeat(4000);
    let names: Vec<String> = (0..17).map(|i| format!("x-big-{i}")).collect();
    let mut headers: Vec<(&str, &str)> =
        names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    headers.push(AUTH);
    let r = respond(p.decide(head("GET", "/api/tags", &headers)));
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(error_code(&r), "request_headers_too_large");
    headers.drain(..2);
    forward(p.decide(head("GET", "/api/tags", &headers)));

    let r = respond(p.decide(head(
        "POST",
        "/api/chat",
        &[
            AUTH,
            ("content-length", "6"),
            ("transfer-encoding", "chunked"),
        ],
    )));
    assert_eq!(error_code(&r), "bad_request");
}

#[test]
fn interrupted_streams_get_a_notice_in_their_own_format() {
    let d = proxy(&[]).decide(head("POST", "/api/chat", &[AUTH]));
    let head_with = |ct: &str| {
        http::Response::builder()
            .header("content-type", ct)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let ndjson = d
        .exchange
        .interrupted_stream_notice(&head_with("application/x-ndjson"))
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&ndjson).unwrap();
    assert!(line["error"].as_str().unwrap().contains("broke off"));
    assert!(ndjson.ends_with(b"\n"));

    let sse = d
        .exchange
        .interrupted_stream_notice(&head_with("text/event-stream; charset=utf-8"))
        .unwrap();
    let text = std::str::from_utf8(&sse).unwrap();
    let data = text.trim().strip_prefix("data: ").unwrap();
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["error"]["code"], "origin_stream_interrupted");
    assert!(text.ends_with("\n\n"));

    assert!(d
        .exchange
        .interrupted_stream_notice(&head_with("application/json"))
        .is_none());
    // Of declared length, the framing shows a cut.
    let mut sized = head_with("application/x-ndjson");
    sized
        .headers
        .insert("content-length", "100".parse().unwrap());
    assert!(d.exchange.interrupted_stream_notice(&sized).is_none());

    // Anthropic's Messages: its `error` event, by name.
    let messages = proxy(&[]).decide(head("POST", "/v1/messages", &[AUTH]));
    let sse = messages
        .exchange
        .interrupted_stream_notice(&head_with("text/event-stream"))
        .unwrap();
    let text = std::str::from_utf8(&sse).unwrap();
    let (name, data) = text.trim().split_once('\n').unwrap();
    assert_eq!(name, "event: error");
    let event: serde_json::Value =
        serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["type"], "error");
    assert_eq!(event["error"]["type"], "api_error");
    assert!(event["error"]["message"]
        .as_str()
        .unwrap()
        .contains("broke off"));
    assert!(text.starts_with("\n\n") && text.ends_with("\n\n"));
}

#[test]
fn request_ids() {
    let p = proxy(&[("CORS_ALLOWED_ORIGINS", "https://app.example")]);
    let fresh = || Some(HeaderValue::from_static("0123456789abcdef0123456789abcdef"));
    let d = p.decide_at(
        head("GET", "/api/tags", &[AUTH, ("x-request-id", "abc-1")]),
        fresh(),
        UnixTime::from_secs(0),
    );
    assert_eq!(d.exchange.request_id().unwrap(), "abc-1");
    assert_eq!(forward(d).headers["x-request-id"], "abc-1");

    for bad in ["has space", "", &"x".repeat(129)] {
        let d = p.decide_at(
            head("GET", "/api/tags", &[AUTH, ("x-request-id", bad)]),
            fresh(),
            UnixTime::from_secs(0),
        );
        assert_eq!(
            forward(d).headers["x-request-id"],
            "0123456789abcdef0123456789abcdef",
            "{bad:?}"
        );
    }
    let d = p.decide_at(
        head(
            "GET",
            "/api/tags",
            &[AUTH, ("x-request-id", "a"), ("x-request-id", "b")],
        ),
        fresh(),
        UnixTime::from_secs(0),
    );
    assert_eq!(
        d.exchange.request_id().unwrap(),
        "0123456789abcdef0123456789abcdef"
    );

    // On local answers and rewritten responses, replacing the origin's.
    let d = p.decide_at(
        head("GET", "/api/tags", &[("origin", "https://app.example")]),
        fresh(),
        UnixTime::from_secs(0),
    );
    let r = respond(d);
    assert_eq!(
        r.headers()["x-request-id"],
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        r.headers()["access-control-expose-headers"],
        "x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests"
    );
    let d = p.decide_at(
        head("GET", "/api/tags", &[AUTH, ("x-request-id", "abc-1")]),
        fresh(),
        UnixTime::from_secs(0),
    );
    let mut resp = http::Response::builder()
        .header("x-request-id", "origin-own")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    d.exchange.rewrite_response(&mut resp);
    assert_eq!(resp.headers["x-request-id"], "abc-1");
    // Without a fresh id (plain `decide`), a request without one has none.
    let d = p.decide(head("GET", "/api/tags", &[AUTH]));
    assert!(d.exchange.request_id().is_none());
}

#[test]
fn readiness_probe_goes_to_the_origin_like_a_forwarded_request() {
    let p = proxy(&[
        ("CF_ACCESS_CLIENT_ID", "id.access"),
        ("CF_ACCESS_CLIENT_SECRET", "secret-1"),
    ]);
    let probe = p.readiness_probe();
    assert_eq!(probe.method, Method::GET);
    assert_eq!(probe.uri, "http://origin.internal:11434/base/api/version");
    assert_eq!(probe.headers["host"], "origin.internal:11434");
    assert_eq!(probe.headers["cf-access-client-id"], "id.access");
    assert_eq!(probe.headers["cf-access-client-secret"], "secret-1");
}

#[test]
fn streamed_limit_only_without_a_declared_length() {
    let p = proxy(&[("MAX_BODY_BYTES", "1KiB")]);
    let d = p.decide(head(
        "POST",
        "/api/chat",
        &[AUTH, ("transfer-encoding", "chunked")],
    ));
    assert_eq!(d.exchange.streamed_body_limit(), Some(1024));
    let d = p.decide(head("POST", "/api/chat", &[AUTH, ("content-length", "10")]));
    assert_eq!(d.exchange.streamed_body_limit(), None);
}

#[test]
fn status_classes() {
    for (code, class) in [
        (101, "1xx"),
        (200, "2xx"),
        (304, "3xx"),
        (429, "4xx"),
        (503, "5xx"),
    ] {
        assert_eq!(
            crate::status_class(StatusCode::from_u16(code).unwrap()),
            class
        );
    }
}

/// A `\` in the path is refused: the Worker's `fetch` would read it as `/`
/// (reaching `/api/pull` past the checks for a path the core never saw),
/// Go as a byte (found in review).
#[test]
fn a_backslash_in_the_path_is_refused() {
    for p in [proxy(&[]), proxy(&[("ALLOW_MODEL_MANAGEMENT", "true")])] {
        for target in [
            "/api\\pull",
            "/api\\tags",
            "/v1/models\\secret",
            "/x/..\\api/pull",
            "/api/chat\\",
        ] {
            let r = respond(p.decide(head("POST", target, &[AUTH])));
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{target}");
            assert_eq!(error_code(&r), "bad_request", "{target}");
        }
        // In the query it is the query's business.
        forward(p.decide(head("GET", "/api/tags?q=a\\b", &[AUTH])));
    }
}

/// An encoded `/` can hide dot segments from the proxy's own resolution:
/// a server between the proxy and Ollama that decodes before it resolves
/// dots (nginx under a base path) would read `/base/..%2Fadmin` as
/// `/admin` (out of the base path, with the Access token), and
/// `/base/..%2Fbase%2Fapi%2Fpull` as Ollama's `/api/pull` — a route the
/// classification saw as `[base, api, pull]`, unknown (found in review:
/// shown at the edge behind nginx). Refused instead; encoded slashes
/// without dots still pass.
#[test]
fn dot_segments_hidden_by_encoding_are_refused() {
    let p = proxy(&[]);
    for target in [
        "/..%2Fadmin",
        "/..%2fadmin",
        "/%2e%2e%2Fadmin",
        "/x/..%2F..%2Fadmin",
        "/..%2Fbase%2Fapi%2Fpull",
        "/..%2Fbase/api/pull",
        "/x/..%2F..%2Fbase/api/delete",
        "/api%2F.%2Ftags",
        "/api/%252e%252e/x",
    ] {
        let r = respond(p.decide(head("POST", target, &[AUTH])));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{target}");
        assert_eq!(error_code(&r), "bad_request", "{target}");
    }
    let up = forward(p.decide(head("GET", "/v1/models/hf.co%2Fa%2Fb", &[AUTH])));
    assert_eq!(up.uri.path(), "/base/v1/models/hf.co%2Fa%2Fb");
    let up = forward(p.decide(head("GET", "/v1/../api/%2e/tags", &[AUTH])));
    assert_eq!(up.uri.path(), "/base/api/tags");
}
