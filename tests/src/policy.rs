//! Per-key policy, on any target: a keys document with hashed and plain
//! tokens, expiry, disabled keys, model allowlists and a management key.
//!
//! [`ATTEMPTS`] is the list of ways a request may try to use a model its
//! key may not: every route that takes a model, the model in odd places,
//! spelled oddly, named twice. Both targets' tests run it, and
//! `docs/reliability.md` renders its table from it.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::client::{call, channel_body, collect, empty, full, request, send};
use crate::origin::pattern;
use crate::target::{Harness, Target, TOKEN};

/// A key limited to `llama3.2:*` and `qwen3*`, given by its SHA-256.
pub const ALICE: &str = "alice-token-7c1d";
/// A key limited to `llama3.2` (that is, `llama3.2:latest`), plain.
pub const BOB: &str = "bob-token-9e2f";
/// An expired key.
pub const OLD: &str = "old-token-0a11";
/// A disabled key.
pub const OFF: &str = "off-token-5b5b";
/// A key that may manage models, limited to `team/*`.
pub const ADMIN: &str = "admin-token-3f3f";

/// 64 hex digits of `token`'s SHA-256.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The keys document every policy scenario runs with (beside the harness's
/// own `AIG_AUTH_TOKEN`, a key without a list).
pub fn keys_document() -> String {
    format!(
        r#"# Who may use the proxy.
[[keys]]
name = "alice"
token_sha256 = "{}"
models = ["llama3.2:*", "qwen3*"]

[[keys]]
name = "bob"
token = "{BOB}"
models = ["llama3.2"]
expires = 2999-12-31

[[keys]]
name = "old"
token = "{OLD}"
expires = "2001-01-01T00:00:00Z"

[[keys]]
name = "off"
token = "{OFF}"
disabled = true

[[keys]]
name = "admin"
token_sha256 = "{}"
model_management = true
models = ["team/*"]
"#,
        sha256_hex(ALICE),
        sha256_hex(ADMIN)
    )
}

async fn harness<T: Target>(t: &T) -> Harness {
    Harness::start(t, &[("AIG_KEYS", &keys_document())]).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What must happen to an attempt.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Reaches the origin, body intact.
    Forwarded,
    /// Answered with this status and error code; nothing reaches the origin.
    Refused(u16, &'static str),
}

/// An attempt's body.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    /// These bytes.
    Text(&'static str),
    /// `before`, 64 KiB of message text, then `after`.
    Padded(&'static str, &'static str),
}

impl Body {
    /// The bytes to send.
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Self::Text(text) => text.as_bytes().to_vec(),
            Self::Padded(before, after) => {
                let mut out = before.as_bytes().to_vec();
                out.extend(pattern(64 << 10).iter().map(|b| b'a' + b % 26));
                out.extend_from_slice(after.as_bytes());
                out
            }
        }
    }
}

/// One request that names a model, and what the proxy must do with it.
pub struct Attempt {
    /// What it tries, for the report.
    pub what: &'static str,
    /// The token it sends.
    pub token: &'static str,
    /// Method and target.
    pub method: &'static str,
    /// Path and query.
    pub target: &'static str,
    /// Extra headers.
    pub headers: &'static [(&'static str, &'static str)],
    /// The body, sent in one write.
    pub body: Body,
    /// The outcome.
    pub expect: Expect,
}

const NOT_ALLOWED: Expect = Expect::Refused(403, "model_not_allowed");
const REQUIRED: Expect = Expect::Refused(400, "model_required");
const TWICE: Expect = Expect::Refused(400, "duplicate_model");
const SOURCE: Expect = Expect::Refused(403, "model_source_not_allowed");
const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const MULTIPART: &[(&str, &str)] = &[("content-type", "multipart/form-data; boundary=b")];
const FORM: &str = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmistral\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n";

macro_rules! attempt {
    ($what:expr, $token:expr, $method:expr, $target:expr, $body:expr, $expect:expr) => {
        attempt!($what, $token, $method, $target, JSON, $body, $expect)
    };
    ($what:expr, $token:expr, $method:expr, $target:expr, $headers:expr, $body:expr, $expect:expr) => {
        Attempt {
            what: $what,
            token: $token,
            method: $method,
            target: $target,
            headers: $headers,
            body: Body::Text($body),
            expect: $expect,
        }
    };
}

/// Every attempt, by a key limited to `llama3.2:*` and `qwen3*` (alice)
/// unless the row says otherwise. `mistral` is on the box but not allowed.
pub const ATTEMPTS: &[Attempt] = &[
    attempt!(
        "`/api/chat`, an allowed model",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"llama3.2:1b","messages":[]}"#,
        Expect::Forwarded
    ),
    attempt!(
        "`/api/chat`, a model outside the list",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"mistral","messages":[]}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/generate`",
        ALICE,
        "POST",
        "/api/generate",
        r#"{"model":"mistral","prompt":"hi"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/embed`",
        ALICE,
        "POST",
        "/api/embed",
        r#"{"model":"mistral","input":"hi"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/embeddings`",
        ALICE,
        "POST",
        "/api/embeddings",
        r#"{"model":"mistral","prompt":"hi"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/show` with `model`",
        ALICE,
        "POST",
        "/api/show",
        r#"{"model":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/show` with the deprecated `name`",
        ALICE,
        "POST",
        "/api/show",
        r#"{"name":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/show`: an allowed `model`, a forbidden `name`",
        ALICE,
        "POST",
        "/api/show",
        r#"{"model":"qwen3:8b","name":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/v1/chat/completions`",
        ALICE,
        "POST",
        "/v1/chat/completions",
        r#"{"messages":[],"model":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/v1/completions`",
        ALICE,
        "POST",
        "/v1/completions",
        r#"{"model":"mistral","prompt":"hi"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/v1/embeddings`",
        ALICE,
        "POST",
        "/v1/embeddings",
        r#"{"model":"mistral","input":"hi"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/v1/responses`",
        ALICE,
        "POST",
        "/v1/responses",
        r#"{"model":"mistral","input":"hi"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/v1/messages` (Anthropic)",
        ALICE,
        "POST",
        "/v1/messages",
        r#"{"model":"mistral","max_tokens":1,"messages":[]}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`GET /v1/models/{model}`",
        ALICE,
        "GET",
        "/v1/models/mistral",
        "",
        NOT_ALLOWED
    ),
    attempt!(
        "`GET /v1/models/{model}`, an allowed one, `:` encoded",
        ALICE,
        "GET",
        "/v1/models/qwen3%3A8b",
        "",
        Expect::Forwarded
    ),
    attempt!(
        "a route the proxy does not know, with a `model`",
        ALICE,
        "POST",
        "/api/experimental/new",
        r#"{"model":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/%63hat` (the path percent-encoded)",
        ALICE,
        "POST",
        "/api/%63hat",
        r#"{"model":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`//v1/../api/chat/` (dot segments, slashes)",
        ALICE,
        "POST",
        "//v1/../api/chat/",
        r#"{"model":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api\\tags` (a backslash: `/` to the Worker's `fetch`, a byte to Go)",
        ALICE,
        "GET",
        "/api\\tags",
        "",
        Expect::Refused(400, "bad_request")
    ),
    attempt!(
        "`/..%2Fapi%2Ftags` (dots behind an encoded `/`: a server that decodes first would climb with them)",
        ALICE,
        "GET",
        "/..%2Fapi%2Ftags",
        "",
        Expect::Refused(400, "bad_request")
    ),
    attempt!(
        "`/x/..\\api/pull` (a backslash after dots)",
        ALICE,
        "POST",
        "/x/..\\api/pull",
        r#"{"name":"mistral"}"#,
        Expect::Refused(400, "bad_request")
    ),
    attempt!(
        "`\"MODEL\"` (Go matches member names case-insensitively)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"MODEL":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`\"mod\\u0065l\"` (an escape in the member name)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"mod\u0065l":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`\"mi\\u0073tral\"` (an escape in the value)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"mi\u0073tral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`\"MISTRAL:LATEST\"` (Ollama finds models case-insensitively)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"MISTRAL:LATEST"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`registry.ollama.ai/library/mistral` (the full name)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"registry.ollama.ai/library/mistral"}"#,
        NOT_ALLOWED
    ),
    Attempt {
        what: "the model after 64 KiB of messages",
        token: ALICE,
        method: "POST",
        target: "/api/chat",
        headers: JSON,
        body: Body::Padded(
            r#"{"messages":[{"role":"user","content":""#,
            r#""}],"model":"mistral"}"#,
        ),
        expect: NOT_ALLOWED,
    },
    attempt!(
        "an allowed model, then a forbidden one (Go takes the last)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"llama3.2:1b","model":"mistral"}"#,
        TWICE
    ),
    attempt!(
        "an allowed model, then the same member in other case",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"llama3.2:1b","Model":"llama3.2:1b"}"#,
        TWICE
    ),
    attempt!(
        "`null`, then a forbidden model",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":null,"model":"mistral"}"#,
        TWICE
    ),
    attempt!(
        "a model only inside a nested object",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"options":{"model":"llama3.2:1b"}}"#,
        REQUIRED
    ),
    attempt!(
        "a model that is not a string",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":["llama3.2:1b"]}"#,
        REQUIRED
    ),
    attempt!("no body", ALICE, "POST", "/api/chat", "", REQUIRED),
    attempt!(
        "a body that is not JSON",
        ALICE,
        "POST",
        "/api/chat",
        "model=mistral",
        REQUIRED
    ),
    attempt!(
        "a compressed body",
        ALICE,
        "POST",
        "/api/chat",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "zstd")
        ],
        r#"{"model":"llama3.2:1b"}"#,
        REQUIRED
    ),
    attempt!(
        "an allowed object, then a second one (Go reads the first only)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"qwen3:8b"} {"model":"mistral"}"#,
        Expect::Forwarded
    ),
    attempt!(
        "`/v1/audio/transcriptions`: the form's model (Go reads `?model=` first)",
        ALICE,
        "POST",
        "/v1/audio/transcriptions?model=llama3.2:1b",
        MULTIPART,
        FORM,
        Expect::Forwarded
    ),
    attempt!(
        "`/v1/audio/transcriptions`: a forbidden `?model=`",
        ALICE,
        "POST",
        "/v1/audio/transcriptions?model=mistral",
        MULTIPART,
        FORM,
        NOT_ALLOWED
    ),
    attempt!(
        "`/v1/audio/transcriptions`: the model only in the form",
        ALICE,
        "POST",
        "/v1/audio/transcriptions",
        MULTIPART,
        FORM,
        REQUIRED
    ),
    attempt!(
        "`llama3.2` for a key listing `llama3.2` (`:latest`)",
        BOB,
        "POST",
        "/api/chat",
        r#"{"model":"llama3.2"}"#,
        Expect::Forwarded
    ),
    attempt!(
        "`library/llama3.2:latest` for that key",
        BOB,
        "POST",
        "/api/chat",
        r#"{"model":"library/llama3.2:latest"}"#,
        Expect::Forwarded
    ),
    attempt!(
        "`llama3.2:1b` for that key (another tag)",
        BOB,
        "POST",
        "/api/chat",
        r#"{"model":"llama3.2:1b"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/pull` by a key without model management",
        ALICE,
        "POST",
        "/api/pull",
        r#"{"model":"qwen3:8b"}"#,
        Expect::Refused(403, "model_management_disabled")
    ),
    attempt!(
        "`/api/pull` by a management key, a model in its list",
        ADMIN,
        "POST",
        "/api/pull",
        r#"{"model":"team/coder"}"#,
        Expect::Forwarded
    ),
    attempt!(
        "`/api/pull` by that key, outside its list",
        ADMIN,
        "POST",
        "/api/pull",
        r#"{"model":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/delete` by that key, with the deprecated `name`",
        ADMIN,
        "DELETE",
        "/api/delete",
        r#"{"name":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/copy` by that key, to a name outside its list",
        ADMIN,
        "POST",
        "/api/copy",
        r#"{"source":"team/a","destination":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/copy` with a long s (`\\u017f`) in `source`",
        ADMIN,
        "POST",
        "/api/copy",
        r#"{"\u017fource":"mistral","destination":"team/b"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/create` from a model outside its list",
        ADMIN,
        "POST",
        "/api/create",
        r#"{"model":"team/new","from":"mistral"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`/api/create` from blob digests (`files`)",
        ADMIN,
        "POST",
        "/api/create",
        r#"{"model":"team/new","files":{"m.gguf":"sha256:0000"}}"#,
        SOURCE
    ),
    attempt!(
        "`/api/create` as an alias of a remote model (`remote_host`)",
        ADMIN,
        "POST",
        "/api/create",
        r#"{"model":"team/new","from":"team/a","remote_host":"https://ollama.com:443"}"#,
        SOURCE
    ),
    attempt!(
        "`/api/blobs/{digest}` by a key with a list",
        ADMIN,
        "POST",
        "/api/blobs/sha256:0000",
        "GGUF",
        SOURCE
    ),
    attempt!(
        "`qwen3.evil.example/ns/m` (`qwen3*` stays within the library)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"qwen3.evil.example/ns/m"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`qwen3:8b: cloud` (a cloud model: Ollama trims the suffix)",
        ALICE,
        "POST",
        "/api/chat",
        r#"{"model":"qwen3:8b: cloud"}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "`qwen3:8b-cloud` (a cloud model by its tag)",
        ALICE,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"qwen3:8b-cloud","messages":[]}"#,
        NOT_ALLOWED
    ),
    attempt!(
        "any model, by a key without a list",
        TOKEN,
        "POST",
        "/api/chat",
        r#"{"model":"mistral"}"#,
        Expect::Forwarded
    ),
];

/// Runs every attempt against `target` and checks what the client got and
/// what reached the origin.
pub async fn check_attempts<T: Target>(target: &T) {
    let h = harness(target).await;
    let mut wrong = Vec::new();
    for a in ATTEMPTS {
        h.origin.clear();
        let auth = bearer(a.token);
        let mut headers = vec![("cf-aig-authorization", auth.as_str())];
        headers.extend_from_slice(a.headers);
        let sent = a.body.bytes();
        let body = if sent.is_empty() {
            empty()
        } else {
            full(sent.clone())
        };
        let got = call(h.proxy, a.method, a.target, &headers, body).await;
        let seen = h.origin.requests();
        let problem = match a.expect {
            Expect::Forwarded => {
                let intact = seen.len() == 1 && seen[0].body == sent && seen[0].body_complete;
                (!intact).then(|| {
                    format!(
                        "expected forwarded intact, got {} and the origin saw {:?}",
                        got.status,
                        seen.iter().map(|r| r.body.len()).collect::<Vec<_>>()
                    )
                })
            }
            Expect::Refused(status, code) => {
                let answered = got.status == status
                    && got.header("content-type") == Some("application/json")
                    && got.json()["error"]["code"] == code;
                if !answered {
                    Some(format!(
                        "expected {status} {code}, got {} {}",
                        got.status,
                        String::from_utf8_lossy(&got.body)
                    ))
                } else if !seen.is_empty() {
                    Some(format!(
                        "refused, but the origin saw {} request(s)",
                        seen.len()
                    ))
                } else if code == "model_not_allowed" {
                    // The refusal names the model asked for, never the list.
                    let message = got.json()["error"]["message"].to_string();
                    (message.contains("llama3.2:*") || message.contains("team/*"))
                        .then(|| format!("the refusal shows the key's list: {message}"))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            wrong.push(format!("{}: {problem}", a.what));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: model-policy attempts handled wrongly:\n{}",
        T::NAME,
        wrong.join("\n")
    );
}

/// The report table rendered from [`ATTEMPTS`].
pub fn report_table() -> String {
    let mut out = String::from("| attempt | key | result |\n|---|---|---|\n");
    for a in ATTEMPTS {
        let key = match a.token {
            ALICE => "limited to `llama3.2:*`, `qwen3*`",
            BOB => "limited to `llama3.2`",
            ADMIN => "management, limited to `team/*`",
            _ => "no list",
        };
        let result = match a.expect {
            Expect::Forwarded => "forwarded, body intact".to_owned(),
            Expect::Refused(status, code) => format!("{status} `{code}`, nothing forwarded"),
        };
        out.push_str(&format!("| {} | {key} | {result} |\n", a.what));
    }
    out
}

pub async fn keys_document_tokens_and_their_states<T: Target>(t: &T) {
    let h = harness(t).await;
    for token in [ALICE, BOB, ADMIN, TOKEN] {
        let got = call(
            h.proxy,
            "GET",
            "/api/version",
            &[("authorization", &bearer(token))],
            empty(),
        )
        .await;
        assert_eq!(got.status, 200, "{token}");
    }
    for (token, code) in [
        (OLD, "expired_api_key"),
        (OFF, "disabled_api_key"),
        ("alice-token-7c1", "invalid_api_key"),
    ] {
        let got = call(
            h.proxy,
            "GET",
            "/api/version",
            &[("authorization", &bearer(token))],
            empty(),
        )
        .await;
        assert_eq!(got.status, 401, "{token}");
        assert_eq!(got.json()["error"]["code"], code, "{token}");
        assert!(got.header("www-authenticate").is_some());
    }
    // A hashed key's digest is not a token.
    let got = call(
        h.proxy,
        "GET",
        "/api/version",
        &[("authorization", &bearer(&sha256_hex(ALICE)))],
        empty(),
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(h.origin.requests().len(), 4);
}

pub async fn listings_show_only_the_keys_models<T: Target>(t: &T) {
    let h = harness(t).await;
    let names = |got: &crate::client::Got, list: &str, field: &str| -> Vec<String> {
        got.json()[list]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|m| m[field].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    for (token, want_tags, want_ps) in [
        (ALICE, &["llama3.2:1b", "qwen3:8b"][..], &["qwen3:8b"][..]),
        (BOB, &[][..], &[][..]),
        (
            TOKEN,
            &["llama3.2:1b", "qwen3:8b", "mistral:latest"][..],
            &["qwen3:8b", "mistral:latest"][..],
        ),
    ] {
        let auth = [("authorization", bearer(token))];
        let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let tags = call(h.proxy, "GET", "/api/tags", &auth, empty()).await;
        assert_eq!(tags.status, 200);
        assert_eq!(names(&tags, "models", "name"), want_tags, "{token}");
        let ps = call(h.proxy, "GET", "/api/ps", &auth, empty()).await;
        assert_eq!(names(&ps, "models", "model"), want_ps, "{token}");
        let models = call(h.proxy, "GET", "/v1/models", &auth, empty()).await;
        assert_eq!(names(&models, "data", "id"), want_tags, "{token}");
        assert_eq!(models.json()["object"], "list");
        // The filtered body carries its own length.
        assert_eq!(
            models.header("content-length").map(str::to_owned),
            Some(models.body.len().to_string())
        );
    }
}

/// A large body with the model at its end reaches the origin byte for byte,
/// in pieces, for a key whose list allows the model.
pub async fn allowed_bodies_stream_on_intact<T: Target>(t: &T) {
    let h = harness(t).await;
    let filler =
        String::from_utf8(pattern(3 << 20).iter().map(|b| b'a' + b % 26).collect()).expect("ASCII");
    let body =
        format!(r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"qwen3:8b"}}"#);
    let (tx, stream) = channel_body();
    let pieces: Vec<Bytes> = body
        .as_bytes()
        .chunks(200_000)
        .map(Bytes::copy_from_slice)
        .collect();
    tokio::spawn(async move {
        for piece in pieces {
            if tx.send(piece).await.is_err() {
                return;
            }
        }
    });
    let auth = bearer(ALICE);
    let got = collect(
        send(request(
            h.proxy,
            "POST",
            "/api/chat",
            &[("cf-aig-authorization", &auth)],
            stream,
        ))
        .await,
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let seen = h.origin.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body_complete);
    assert!(
        seen[0].body == body.as_bytes(),
        "the body changed on the way"
    );
}

/// A second naming after an allowed model, in a later chunk: part of the
/// body has gone out by then, so the upload is aborted before the object
/// completes, and the client gets the refusal. Ollama never sees a whole
/// request.
pub async fn a_later_second_model_aborts_the_upload<T: Target>(t: &T) {
    let h = harness(t).await;
    let (tx, stream) = channel_body();
    let auth = bearer(ALICE);
    let req = request(
        h.proxy,
        "POST",
        "/api/chat",
        &[("cf-aig-authorization", &auth)],
        stream,
    );
    let answer = tokio::spawn(async move { collect(send(req).await).await });
    tx.send(Bytes::from_static(
        br#"{"model":"llama3.2:1b","messages":[],"#,
    ))
    .await
    .unwrap();
    // The first part is forwarded once the allowed model is read.
    h.origin.wait_for_heads(1, Duration::from_secs(10)).await;
    tx.send(Bytes::from_static(br#""MODEL":"mistral"}"#))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(got.status, 400, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["error"]["code"], "duplicate_model");
    h.origin.expect_one_aborted_upload().await;
    drop(tx);
}

/// An origin that answers while the body is still coming (here it echoes
/// the body as it arrives): the model gate goes on reading the rest, and
/// the answer streams on whole — the gate is not dropped with the answer's
/// head (at the edge, a gate gone made the next chunk a refusal that cut
/// the answer).
pub async fn an_answer_before_the_whole_body_streams_on<T: Target>(t: &T) {
    let h = harness(t).await;
    let (tx, stream) = channel_body();
    let auth = bearer(ALICE);
    let first = r#"{"model":"llama3.2:1b","messages":[],"note":""#;
    let rest = r#"the rest"}"#;
    tx.send(Bytes::from_static(first.as_bytes())).await.unwrap();
    let req = request(
        h.proxy,
        "POST",
        "/echo",
        &[("cf-aig-authorization", &auth)],
        stream,
    );
    let response = tokio::time::timeout(Duration::from_secs(10), send(req))
        .await
        .expect("the echo's head while the body is still open");
    assert_eq!(response.status(), 200);
    tx.send(Bytes::from_static(rest.as_bytes())).await.unwrap();
    drop(tx);
    let got = tokio::time::timeout(Duration::from_secs(10), collect(response))
        .await
        .expect("the whole echo");
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        format!("{first}{rest}"),
        "the answer was cut"
    );
    h.origin
        .wait_until(
            Duration::from_secs(10),
            "the upload to be recorded",
            |r, _| r.len() == 1,
        )
        .await;
    assert!(h.origin.requests()[0].body_complete);
}
