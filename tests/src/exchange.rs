//! proptest strategies for whole exchanges: a configuration, a request as
//! it goes on the wire, and what the origin answers. The cross-target
//! property (`tests/tests/cross_target.rs`) runs each case through the native
//! proxy and the Worker and compares everything both sides saw.

use bytes::Bytes;
use proptest::prelude::*;

use crate::origin::Script;
use crate::target::Vars;

/// The main token (`AIG_AUTH_TOKEN`).
pub const MAIN_TOKEN: &str = "main-token-7f3a9c";
/// Tokens from `AIG_AUTH_TOKENS`.
pub const LIST_TOKENS: [&str; 2] = ["laptop-token-51be20", "bare-token-c0ffee"];
/// The origin browsers may use when an allowlist is configured.
pub const ALLOWED_ORIGIN: &str = "https://app.example";
/// Tokens of the keys document: limited (hashed), limited (plain, may
/// manage models), expired, expiring far ahead (hashed), disabled.
pub const DOC_TOKENS: [&str; 5] = [
    "limited-token-41d0",
    "plain-limited-9a9a",
    "expired-token-0001",
    "future-token-2999",
    "disabled-token-77",
];

/// The keys document of a case with `keys_doc`.
pub fn keys_document() -> String {
    let [limited, plain, expired, future, disabled] = DOC_TOKENS;
    format!(
        r#"[[keys]]
name = "limited"
token_sha256 = "{}"
models = ["llama3.2:*", "qwen3*"]

[[keys]]
name = "plain-limited"
token = "{plain}"
models = ["llama3.2"]
model_management = true

[[keys]]
name = "expired"
token = "{expired}"
expires = 2001-01-01

[[keys]]
name = "future"
token_sha256 = "{}"
expires = "2999-01-01T00:00:00Z"

[[keys]]
name = "disabled"
token = "{disabled}"
disabled = true
"#,
        crate::policy::sha256_hex(limited),
        crate::policy::sha256_hex(future),
    )
}

/// The configuration side of a case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaseConfig {
    /// 0: `AIG_AUTH_TOKEN` only; 1: it and `AIG_AUTH_TOKENS`; 2: the list only.
    pub tokens: u8,
    /// `CORS_ALLOWED_ORIGINS` as an allowlist (otherwise `*`).
    pub cors_list: bool,
    /// `ALLOW_AUTHORIZATION_HEADER`.
    pub authorization_header: bool,
    /// `ALLOW_MODEL_MANAGEMENT`.
    pub model_management: bool,
    /// `CF_ACCESS_CLIENT_ID`/`SECRET` set.
    pub access: bool,
    /// `OLLAMA_ORIGIN` with a base path.
    pub base_path: bool,
    /// `AIG_KEYS`: the [`keys_document`], beside the variables.
    pub keys_doc: bool,
}

impl CaseConfig {
    /// The variables for this configuration, with the origin at `origin_url`.
    pub fn vars(&self, origin_url: &str) -> Vars {
        let mut vars: Vars = Vec::new();
        let base = if self.base_path { "/base" } else { "" };
        vars.push(("OLLAMA_ORIGIN".into(), format!("{origin_url}{base}")));
        if self.tokens < 2 {
            vars.push(("AIG_AUTH_TOKEN".into(), MAIN_TOKEN.into()));
        }
        if self.tokens > 0 {
            vars.push((
                "AIG_AUTH_TOKENS".into(),
                format!("laptop:{},{}", LIST_TOKENS[0], LIST_TOKENS[1]),
            ));
        }
        if self.cors_list {
            vars.push((
                "CORS_ALLOWED_ORIGINS".into(),
                format!("{ALLOWED_ORIGIN},http://localhost:5173"),
            ));
        }
        vars.push((
            "ALLOW_AUTHORIZATION_HEADER".into(),
            self.authorization_header.to_string(),
        ));
        vars.push((
            "ALLOW_MODEL_MANAGEMENT".into(),
            self.model_management.to_string(),
        ));
        if self.access {
            vars.push(("CF_ACCESS_CLIENT_ID".into(), "client-id.access".into()));
            vars.push(("CF_ACCESS_CLIENT_SECRET".into(), "access-secret-42".into()));
        }
        if self.keys_doc {
            vars.push(("AIG_KEYS".into(), keys_document()));
        }
        vars
    }
}

/// A request body: small bytes, or a large deterministic pattern (kept
/// small in `Debug` so a failing case prints readably).
#[derive(Clone, PartialEq, Eq)]
pub enum BodySpec {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` bytes of [`crate::origin::pattern`].
    Large(usize),
}

impl BodySpec {
    /// The bytes to send.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Large(len) => crate::origin::pattern(*len),
        }
    }
}

impl std::fmt::Debug for BodySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) if b.len() > 400 => write!(
                f,
                "Bytes({:?} … {} bytes … {:?})",
                String::from_utf8_lossy(&b[..200]),
                b.len() - 400,
                String::from_utf8_lossy(&b[b.len() - 200..])
            ),
            Self::Bytes(b) => write!(f, "Bytes({:?})", String::from_utf8_lossy(b)),
            Self::Large(len) => write!(f, "Large({len})"),
        }
    }
}

/// The request side of a case, as written on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseRequest {
    /// The method.
    pub method: String,
    /// The request target (origin-form).
    pub target: String,
    /// Headers in order, names in the generated case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: BodySpec,
    /// Where the body is cut into separately written pieces.
    pub splits: Vec<usize>,
}

/// One generated exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The configuration both targets run with.
    pub config: CaseConfig,
    /// What the client sends.
    pub request: CaseRequest,
    /// What the origin answers, if the request reaches it.
    pub origin: Script,
}

fn config() -> impl Strategy<Value = CaseConfig> {
    (
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                tokens,
                cors_list,
                authorization_header,
                model_management,
                access,
                base_path,
                keys_doc,
            )| {
                CaseConfig {
                    tokens,
                    cors_list,
                    authorization_header,
                    model_management,
                    access,
                    base_path,
                    keys_doc,
                }
            },
        )
}

/// Changes the case of some letters of `s`, driven by `seed`.
fn recase(s: &str, seed: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if seed >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => generated_path(),
        1 => prop::sample::select(vec![
            "/api/chat",
            "/api/generate",
            "/api/embed",
            "/api/show",
            "/api/tags",
            "/api/ps",
            "/api/pull",
            "/api/copy",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/models",
            "/v1/models/mistral",
            "/v1/models/llama3.2%3A1b",
            "/v1/audio/transcriptions?model=llama3.2:1b",
            "/v1/audio/transcriptions",
        ])
        .prop_map(str::to_owned),
    ]
}

fn generated_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        4 => prop::sample::select(vec!["api", "v1"]).prop_map(str::to_owned),
        4 => prop::sample::select(vec!["chat", "generate", "tags", "show", "embed", "models", "chat", "completions"])
            .prop_map(str::to_owned),
        2 => prop::sample::select(vec!["pull", "push", "create", "delete", "copy", "blobs"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec![".", "..", "%2e", "%2E%2e", ".%2e", "...", ".well-known"])
            .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["%70ull", "%E2%9C%93", "a%2Fb", "%20", "sha256:0f1e", "~user", "a;b=c", "x,y", "@"])
            .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,8}",
    ];
    (
        prop::collection::vec(segment, 0..4),
        any::<bool>(),
        prop::option::of("[a-zA-Z0-9=&%._~-]{0,12}"),
    )
        .prop_map(|(segments, doubled, query)| {
            let mut path = format!("/{}", segments.join("/"));
            if doubled && path.len() > 1 {
                path.insert(0, '/'); // a leading `//`
            }
            if let Some(query) = query {
                path.push('?');
                path.push_str(&query);
            }
            path
        })
}

/// Credential headers: right, wrong, near misses, either header, odd spacing.
fn credentials() -> impl Strategy<Value = Vec<(String, String)>> {
    let token = prop::sample::select(vec![
        MAIN_TOKEN.to_owned(),
        LIST_TOKENS[0].to_owned(),
        LIST_TOKENS[1].to_owned(),
        DOC_TOKENS[0].to_owned(),
        DOC_TOKENS[0].to_owned(),
        DOC_TOKENS[1].to_owned(),
        DOC_TOKENS[2].to_owned(),
        DOC_TOKENS[3].to_owned(),
        DOC_TOKENS[4].to_owned(),
        format!("{MAIN_TOKEN}x"),
        MAIN_TOKEN[..MAIN_TOKEN.len() - 1].to_owned(),
        MAIN_TOKEN.to_uppercase(),
        "wrong-token".to_owned(),
    ]);
    let scheme = prop::sample::select(vec![
        "Bearer ", "bearer ", "BEARER  ", "Bearer\t", "Basic ", "",
    ]);
    let header = prop::sample::select(vec!["cf-aig-authorization", "authorization", "x-api-key"]);
    let one = (header, any::<u64>(), scheme, token)
        .prop_map(|(h, seed, s, t)| (recase(h, seed), format!("{s}{t}")));
    prop::collection::vec(one, 0..3)
}

/// Hop-by-hop headers, and a `Connection` that nominates others.
fn hop_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let one = prop_oneof![
        Just(("Connection".to_owned(), "x-hop-a".to_owned())),
        Just(("connection".to_owned(), "keep-alive, X-Hop-B".to_owned())),
        Just(("x-hop-a".to_owned(), "nominated".to_owned())),
        Just(("X-Hop-B".to_owned(), "nominated".to_owned())),
        Just(("Keep-Alive".to_owned(), "timeout=5".to_owned())),
        Just(("TE".to_owned(), "trailers".to_owned())),
        Just(("Trailer".to_owned(), "x-checksum".to_owned())),
        Just((
            "Proxy-Authorization".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned()
        )),
        Just(("Proxy-Connection".to_owned(), "keep-alive".to_owned())),
    ];
    prop::collection::vec(one, 0..4)
}

/// Everyday headers, some repeated, in random case.
fn plain_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let one = prop_oneof![
        Just(("content-type", "application/json")),
        Just(("accept", "application/x-ndjson")),
        Just(("user-agent", "OpenAI/Python 1.99.0")),
        Just(("x-stainless-os", "Linux")),
        Just(("x-custom", "one")),
        Just(("x-custom", "two")),
        Just(("accept-language", "en")),
        Just(("x-title", "café ☕")),
        Just(("x-request-id", "client-req-0042")),
        Just(("x-request-id", "has a space")),
        Just(("content-encoding", "zstd")),
    ];
    prop::collection::vec((one, any::<u64>()), 0..5).prop_map(|v| {
        v.into_iter()
            .map(|((n, val), seed)| (recase(n, seed), val.to_owned()))
            .collect()
    })
}

/// Browser headers: none, a simple request from an allowed or foreign
/// origin, or a preflight.
fn browser_headers() -> impl Strategy<Value = (bool, Vec<(String, String)>)> {
    let origin = prop::sample::select(vec![
        ALLOWED_ORIGIN,
        "https://evil.example",
        "http://localhost:5173",
    ]);
    prop_oneof![
        2 => Just((false, Vec::new())),
        1 => origin.clone().prop_map(|o| (false, vec![("Origin".to_owned(), o.to_owned())])),
        1 => (origin, prop::option::of(Just("content-type, x-stainless-os, cf-aig-authorization"))).prop_map(|(o, h)| {
            let mut headers = vec![
                ("Origin".to_owned(), o.to_owned()),
                ("Access-Control-Request-Method".to_owned(), "POST".to_owned()),
            ];
            if let Some(h) = h {
                headers.push(("Access-Control-Request-Headers".to_owned(), h.to_owned()));
            }
            (true, headers)
        }),
    ]
}

/// A member that may name the model, however spelled.
fn member() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "model",
        "model",
        "MODEL",
        "Model",
        "mod\\u0065l",
        "\\u017fource",
        "name",
        "models",
        "messages",
        "stream",
        "stream",
        "STREAM",
        "stream_options",
        "options",
        "from",
    ])
}

fn member_value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        r#""llama3.2""#,
        r#""llama3.2:1b""#,
        r#""LLAMA3.2:latest""#,
        r#""qwen3:8b""#,
        r#""mistral""#,
        r#""team/x""#,
        r#""mi\u0073tral""#,
        "null",
        "7",
        r#"{"model":"mistral"}"#,
        r#"[{"role":"user","content":"hi"}]"#,
        "true",
        "true",
        "false",
        r#"{"include_usage":true}"#,
    ])
}

/// A JSON object naming models anywhere, or after a large message, with
/// the bytes after it (Ollama reads the first value only).
fn model_body() -> impl Strategy<Value = BodySpec> {
    (
        prop::collection::vec((member(), member_value()), 0..5),
        prop::sample::select(vec!["", " ", "\n  "]),
        prop::option::of(0usize..3),
        prop::sample::select(vec!["", " ", " {\"model\":\"mistral\"}", "garbage"]),
    )
        .prop_map(|(members, ws, large_at, after)| {
            let mut parts: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
                .collect();
            if let Some(at) = large_at {
                let text: String = crate::origin::pattern(300 << 10)
                    .iter()
                    .map(|b| char::from(b'a' + b % 26))
                    .collect();
                let message = format!(r#""messages":[{{"role":"user","content":"{text}"}}]"#);
                parts.insert(at.min(parts.len()), message);
            }
            BodySpec::Bytes(format!("{{{}{ws}}}{after}", parts.join(",")).into_bytes())
        })
}

fn body() -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        3 => Just(BodySpec::Bytes(Vec::new())),
        4 => model_body(),
        3 => prop::sample::select(vec![r#"{"model":"llama3.2","stream":true}"#, r#"{"messages":[]}"#, "not json", r#"{"model":"llama3.2:1b","stream":true,"messages":[]}"#])
            .prop_map(|s| BodySpec::Bytes(s.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 1..512).prop_map(BodySpec::Bytes),
        1 => (1usize..3).prop_map(|mb| BodySpec::Large(mb << 20)),
    ]
}

fn request() -> impl Strategy<Value = CaseRequest> {
    let method = prop::sample::select(vec![
        "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
    ]);
    (
        method,
        path(),
        credentials(),
        hop_headers(),
        plain_headers(),
        browser_headers(),
        body(),
        any::<u64>(),
        prop::collection::vec(any::<usize>(), 0..4),
    )
        .prop_map(
            |(method, target, creds, hop, plain, (preflight, browser), body, order, splits)| {
                let method = if preflight { "OPTIONS" } else { method };
                let body = if method == "GET" || method == "HEAD" || method == "OPTIONS" {
                    BodySpec::Bytes(Vec::new())
                } else {
                    body
                };
                let mut headers: Vec<(String, String)> = Vec::new();
                headers.extend(creds);
                headers.extend(plain);
                headers.extend(hop);
                headers.extend(browser);
                // Shuffle deterministically so header order varies too.
                let n = headers.len();
                if n > 1 {
                    for i in 0..n {
                        let j = (order.rotate_left(i as u32 * 7) as usize) % n;
                        headers.swap(i, j);
                    }
                }
                CaseRequest {
                    method: method.to_owned(),
                    target,
                    headers,
                    body,
                    splits,
                }
            },
        )
}

fn origin_answer() -> impl Strategy<Value = Script> {
    let status = prop::sample::select(vec![200u16, 200, 201, 400, 404, 418, 500, 503]);
    let content_type = prop::sample::select(vec![
        "application/json; charset=utf-8",
        "application/x-ndjson",
        "text/event-stream",
        "text/plain",
    ]);
    let extra = prop::collection::vec(
        prop::sample::select(vec![
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", "x-origin-kept"),
            ("Connection", "x-origin-hop"),
            ("X-Origin-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Vary", "Accept-Encoding"),
            ("X-Origin-Kept", "yes"),
            ("Cache-Control", "max-age=60"),
            ("Proxy-Authenticate", "Basic"),
            ("X-Origin-Title", "naïve"),
        ]),
        0..5,
    );
    let listing = prop::sample::select(vec![
        crate::origin::TAGS,
        crate::origin::PS,
        crate::origin::OPENAI_MODELS,
    ]);
    let chunks = prop_oneof![
        3 => prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200).prop_map(Bytes::from), 0..4),
        1 => (listing, any::<usize>()).prop_map(|(body, cut)| {
            let cut = cut % body.len();
            vec![Bytes::from_static(&body.as_bytes()[..cut]), Bytes::from_static(&body.as_bytes()[cut..])]
        }),
        1 => Just(vec![Bytes::from(crate::origin::pattern(2 << 20))]),
        // An OpenAI stream with its usage chunk, cut anywhere.
        2 => (prop::collection::vec(any::<usize>(), 0..4), any::<bool>()).prop_map(|(cuts, crlf)| {
            cut(llm_stream("/v1/chat/completions", 2, true, crlf), &cuts)
        }),
    ];
    (status, content_type, extra, chunks, any::<bool>()).prop_map(
        |(status, ct, extra, chunks, content_length)| {
            let mut headers = vec![("Content-Type".to_owned(), ct.to_owned())];
            headers.extend(extra.into_iter().map(|(n, v)| (n.to_owned(), v.to_owned())));
            Script {
                status,
                headers,
                chunks,
                content_length,
            }
        },
    )
}

/// A whole exchange: configuration, request, origin answer.
pub fn case() -> impl Strategy<Value = Case> {
    (config(), request(), origin_answer()).prop_map(|(config, request, origin)| Case {
        config,
        request,
        origin,
    })
}

/// `bytes` cut at `cuts` (taken modulo its length) into frames.
fn cut(bytes: Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes.slice(w[0]..w[1])).collect()
}

/// An LLM's streamed answer as Ollama writes it for `path`: OpenAI events
/// (with a usage chunk when `usage`, CRLF-framed when `crlf`), Anthropic's
/// Messages or the Responses API's events (their counts at the end, the
/// prompt's 0 when `usage` is false), or native NDJSON lines ending with
/// the counts (no prompt count when `usage` is false, as for a cached
/// prompt).
pub fn llm_stream(path: &str, tokens: usize, usage: bool, crlf: bool) -> Bytes {
    let mut text = String::new();
    // Ollama counts no prompt when it was cached: 0 in these shapes.
    let prompt: u64 = if usage { 26 } else { 0 };
    if path == "/v1/messages" {
        let mut events = crate::origin::anthropic_start(5).to_vec();
        events.extend((0..tokens).map(|_| crate::origin::anthropic_delta("tok")));
        events.push(crate::origin::anthropic_end(prompt, tokens as u64));
        for event in events {
            text += std::str::from_utf8(&event).expect("text");
        }
    } else if path == "/v1/responses" {
        text += "event: response.created\ndata: {\"response\":{\"error\":null,\"id\":\"resp_1\",\"model\":\"llama3.2:1b\",\"output\":[],\"usage\":null},\"sequence_number\":0,\"type\":\"response.created\"}\n\n";
        for _ in 0..tokens {
            text += "event: response.output_text.delta\ndata: {\"content_index\":0,\"delta\":\"tok\",\"item_id\":\"msg_1\",\"output_index\":0,\"type\":\"response.output_text.delta\"}\n\n";
        }
        text += &format!("event: response.completed\ndata: {{\"response\":{{\"error\":null,\"id\":\"resp_1\",\"model\":\"llama3.2:1b\",\"output\":[],\"usage\":{{\"input_tokens\":{prompt},\"output_tokens\":{tokens},\"total_tokens\":{}}}}},\"type\":\"response.completed\"}}\n\n", prompt + tokens as u64);
    } else if path.starts_with("/v1/") {
        let piece = if path == "/v1/completions" {
            r#""text":"tok""#
        } else {
            r#""delta":{"content":"tok"}"#
        };
        for _ in 0..tokens {
            text += &format!("data: {{\"id\":\"c\",\"model\":\"llama3.2:1b\",\"choices\":[{{\"index\":0,{piece}}}]}}\n\n");
        }
        if usage {
            text += &format!("data: {{\"id\":\"c\",\"model\":\"llama3.2:1b\",\"choices\":[],\"usage\":{{\"prompt_tokens\":26,\"completion_tokens\":{tokens},\"total_tokens\":{}}}}}\n\n", 26 + tokens);
        }
        text += "data: [DONE]\n\n";
    } else {
        for _ in 0..tokens {
            text += r#"{"model":"llama3.2:1b","message":{"role":"assistant","content":"tok"},"done":false}"#;
            text += "\n";
        }
        let counted = if usage {
            r#","prompt_eval_count":26"#
        } else {
            ""
        };
        text += &format!("{{\"model\":\"llama3.2:1b\",\"done\":true,\"load_duration\":5000000{counted},\"eval_count\":{tokens},\"eval_duration\":40000000}}\n");
    }
    if crlf && path.starts_with("/v1/") {
        text = text.replace('\n', "\r\n");
    }
    Bytes::from(text)
}

/// Cases for LLM answers and the OpenAI streams whose usage the proxy asks
/// for: an authorized POST to a generation route with a body that may or
/// may not stream and ask for usage (in any order and spelling, cut
/// anywhere), answered by a stream cut anywhere. Both targets must send the
/// same body on, give the client the same answer, and read the same usage.
pub fn usage_case() -> impl Strategy<Value = Case> {
    let path = prop::sample::select(vec![
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/messages",
        "/v1/responses",
        "/api/chat",
        "/api/generate",
    ]);
    let member = prop::sample::select(vec![
        r#""model":"llama3.2:1b""#,
        r#""model":"llama3.2:1b""#,
        r#""MODEL":"mistral""#,
        r#""stream":true"#,
        r#""stream":true"#,
        r#""Stream":true"#,
        r#""stream":false"#,
        r#""stream":null"#,
        r#""stream_options":{"include_usage":true}"#,
        r#""stream_options":{"include_usage":false}"#,
        r#""stream_options":null"#,
        r#""messages":[{"role":"user","content":"hi"}]"#,
        r#""prompt":"}{\"stream\":true""#,
    ]);
    let body = (
        prop::collection::vec(member, 0..6),
        prop::sample::select(vec!["", " ", "\n\t"]),
        prop::sample::select(vec!["", "\n", " {\"stream\":false}", "garbage"]),
    )
        .prop_map(|(members, ws, after)| {
            let members: Vec<String> = members.iter().map(|m| format!("{ws}{m}")).collect();
            format!("{{{}{ws}}}{after}", members.join(",")).into_bytes()
        });
    (
        any::<bool>(),
        any::<bool>(),
        path,
        body,
        prop::collection::vec(any::<usize>(), 0..4),
        (1usize..5, any::<bool>(), any::<bool>()),
        prop::collection::vec(any::<usize>(), 0..5),
        any::<bool>(),
    )
        .prop_map(
            |(keys_doc, limited, path, body, splits, (tokens, usage, crlf), cuts, length)| {
                let token = if keys_doc && limited {
                    DOC_TOKENS[0]
                } else {
                    MAIN_TOKEN
                };
                let content_type = if path.starts_with("/v1/") {
                    "text/event-stream"
                } else {
                    "application/x-ndjson"
                };
                Case {
                    config: CaseConfig {
                        tokens: 0,
                        cors_list: false,
                        authorization_header: false,
                        model_management: false,
                        access: false,
                        base_path: false,
                        keys_doc,
                    },
                    request: CaseRequest {
                        method: "POST".into(),
                        target: path.into(),
                        headers: vec![
                            ("cf-aig-authorization".into(), format!("Bearer {token}")),
                            ("x-request-id".into(), "usage-case".into()),
                        ],
                        body: BodySpec::Bytes(body),
                        splits,
                    },
                    origin: Script {
                        status: 200,
                        headers: vec![("Content-Type".into(), content_type.into())],
                        chunks: cut(llm_stream(path, tokens, usage, crlf), &cuts),
                        content_length: length,
                    },
                }
            },
        )
}

/// A request several boxes route: a token most configurations accept, a
/// route that names a model (in the body or the path), a listing, or none,
/// and a model some boxes hold (loaded or not), none holds, or none at all.
pub fn boxes_case() -> impl Strategy<Value = Case> {
    let route = prop::sample::select(vec![
        ("POST", "/api/chat"),
        ("POST", "/api/chat"),
        ("POST", "/api/generate"),
        ("POST", "/api/embed"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/api/show"),
        ("POST", "/api/pull"),
        ("GET", "/api/tags"),
        ("HEAD", "/api/tags"),
        ("GET", "/api/ps"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{m}"),
        ("GET", "/api/version"),
    ]);
    let model = prop::sample::select(vec![
        "llama3.2",
        "llama3.2:1b",
        "LLAMA3.2:latest",
        "qwen3:8b",
        "mistral",
        "team/x",
        "phi4",
        "gemma3:27b",
    ]);
    let body = prop_oneof![
        3 => (model.clone(), any::<bool>()).prop_map(|(m, stream)| {
            BodySpec::Bytes(format!(r#"{{"model":"{m}","stream":{stream},"messages":[]}}"#).into_bytes())
        }),
        1 => model_body(),
        1 => Just(BodySpec::Bytes(br#"{"messages":[]}"#.to_vec())),
    ];
    (
        config(),
        any::<usize>(),
        route,
        model,
        body,
        prop::collection::vec(any::<usize>(), 0..3),
        origin_answer(),
    )
        .prop_map(
            |(config, pick, (method, target), model, body, splits, origin)| {
                // A token this configuration accepts.
                let mut tokens = Vec::new();
                if config.tokens < 2 {
                    tokens.push(MAIN_TOKEN);
                }
                if config.tokens > 0 {
                    tokens.push(LIST_TOKENS[0]);
                }
                if config.keys_doc {
                    tokens.extend([DOC_TOKENS[0], DOC_TOKENS[1]]);
                }
                let token = tokens[pick % tokens.len()];
                let body = if method == "POST" {
                    body
                } else {
                    BodySpec::Bytes(Vec::new())
                };
                let headers = vec![("cf-aig-authorization".to_owned(), format!("Bearer {token}"))];
                Case {
                    config,
                    request: CaseRequest {
                        method: method.to_owned(),
                        target: target.replace("{m}", model),
                        headers,
                        body,
                        splits,
                    },
                    origin,
                }
            },
        )
}
