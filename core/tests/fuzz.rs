//! Fuzzing the core's entry points with arbitrary bytes, with proptest as
//! the engine (runs in `cargo test`, on stable, offline): request heads made
//! of whatever `http` accepts, arbitrary origin response heads, arbitrary
//! configuration strings. Nothing may panic, and what the core promises
//! holds whatever comes in. `PROPTEST_CASES` raises the count
//! (`cargo xtask soak` does).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, Response, Uri};
use ollama_proxy_core::{Action, Config, ConfigVar, Proxy};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

mod common;
use common::cases;

const TOKEN: &str = "fuzz-token-7a1c";

fn proxy(management: bool) -> Proxy {
    Proxy::new(
        Config::from_lookup(|var| match var {
            ConfigVar::OllamaOrigin => Some("https://origin.internal/base".into()),
            ConfigVar::AigAuthToken => Some(TOKEN.into()),
            ConfigVar::CorsAllowedOrigins => Some("https://app.example".into()),
            ConfigVar::AllowModelManagement => Some(management.to_string()),
            _ => None,
        })
        .unwrap(),
    )
}

/// Header names and values from arbitrary bytes; some are real names.
fn header() -> impl Strategy<Value = (HeaderName, HeaderValue)> {
    let name = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..24),
        prop::sample::select(vec![
            "cf-aig-authorization",
            "authorization",
            "connection",
            "transfer-encoding",
            "content-length",
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
            "content-type",
            "host",
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
    ];
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        Just(format!("Bearer {TOKEN}").into_bytes()),
        Just(b"POST".to_vec()),
        Just(b"https://app.example".to_vec()),
        Just(b"12".to_vec()),
    ];
    // Bytes `http` refuses become a fixed name or an empty value, so no case
    // is thrown away (a filter would reject most random names).
    (name, value).prop_map(|(n, v)| {
        (
            HeaderName::from_bytes(&n).unwrap_or(HeaderName::from_static("x-fuzz")),
            HeaderValue::from_bytes(&v).unwrap_or(HeaderValue::from_static("")),
        )
    })
}

fn head() -> impl Strategy<Value = request::Parts> {
    let method = prop_oneof![
        prop::sample::select(vec!["GET", "POST", "OPTIONS", "CONNECT", "HEAD", "DELETE"])
            .prop_map(|m| m.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..12),
    ];
    let target = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        "/[ -~]{0,60}".prop_map(String::into_bytes),
        Just(b"*".to_vec()),
        Just(b"http://elsewhere.example/api/pull".to_vec()),
    ];
    (
        method,
        target,
        prop::collection::vec(header(), 0..10),
        any::<bool>(),
    )
        .prop_map(|(m, t, headers, with_token)| {
            let (mut parts, ()) = http::Request::new(()).into_parts();
            parts.method = Method::from_bytes(&m).unwrap_or(Method::GET);
            parts.uri = Uri::try_from(t).unwrap_or_else(|_| Uri::from_static("/"));
            for (n, v) in headers {
                parts.headers.append(n, v);
            }
            if with_token {
                parts.headers.append(
                    "cf-aig-authorization",
                    HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
                );
            }
            parts
        })
}

fn response_head() -> impl Strategy<Value = response::Parts> {
    (100u16..600, prop::collection::vec(header(), 0..10)).prop_map(|(status, headers)| {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = http::StatusCode::from_u16(status).unwrap();
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(n, v);
        }
        parts.headers = map;
        parts
    })
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn is_json(body: &Bytes) -> bool {
    body.is_empty() || serde_json::from_slice::<serde_json::Value>(body).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(1024),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/fuzz.txt"))),
        ..ProptestConfig::default()
    })]

    /// Whatever the head, the core decides without panicking; what it
    /// forwards was authenticated, goes to the origin, and carries no proxy
    /// credential, hop-by-hop header or non-ASCII value; what it answers
    /// itself is JSON (or empty).
    #[test]
    fn any_request_head(head in head(), management in any::<bool>(), response in response_head()) {
        let had_token = head.headers.iter().any(|(_, v)| v.as_bytes().ends_with(TOKEN.as_bytes()));
        let decision = proxy(management).decide(head);
        match &decision.action {
            Action::Forward(up) => {
                prop_assert!(had_token, "forwarded without a token");
                prop_assert_eq!(up.uri.authority().map(|a| a.as_str()), Some("origin.internal"));
                prop_assert!(up.uri.path().starts_with("/base/") || up.uri.path() == "/base");
                prop_assert!(!up.headers.contains_key("cf-aig-authorization"));
                for name in HOP_BY_HOP {
                    prop_assert!(!up.headers.contains_key(name), "{} forwarded", name);
                }
                // A value that happens to equal the token in some other
                // header is the client's data; the credential headers are not.
                if let Some(value) = up.headers.get("authorization") {
                    prop_assert!(!value.as_bytes().windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                        "the token went on in authorization");
                }
                for value in up.headers.values() {
                    prop_assert!(value.as_bytes().is_ascii());
                }
            }
            Action::Respond(r) => {
                prop_assert!(is_json(r.body()), "{:?}", r.body());
            }
        }
        let mut response = response;
        decision.exchange.rewrite_response(&mut response);
        for name in HOP_BY_HOP {
            prop_assert!(!response.headers.contains_key(name), "{} passed back", name);
        }
        for value in response.headers.values() {
            prop_assert!(value.as_bytes().is_ascii());
        }
        if let Some(notice) = decision.exchange.interrupted_stream_notice(&response) {
            prop_assert!(!notice.is_empty());
        }
        for error in [ollama_proxy_core::ProxyError::OriginUnreachable, ollama_proxy_core::ProxyError::BadRequest] {
            prop_assert!(is_json(decision.exchange.error_response(error).body()));
        }
    }

    /// Any keys document made of plausible and broken lines, with a secret
    /// in every place a value can go: parsed or refused, never a panic, and
    /// neither the error nor the configuration's `Debug` repeats the secret.
    #[test]
    fn any_keys_document(
        lines in prop::collection::vec(prop_oneof![
            Just("[[keys]]".to_owned()),
            Just("[keys]".to_owned()),
            Just("name = \"k\"".to_owned()),
            "name = \"[a-z]{1,3}\"",
            Just("token = \"SECRET\"".to_owned()),
            Just("token = \"SECRET \"".to_owned()),
            Just("token = SECRET".to_owned()),
            Just("token_sha256 = \"SECRET\"".to_owned()),
            "token_sha256 = \"[0-9a-f]{64}\"",
            Just("expires = \"SECRET\"".to_owned()),
            Just("expires = 2027-01-31".to_owned()),
            Just("disabled = \"SECRET\"".to_owned()),
            Just("models = [\"SECRET\", \"a b\"]".to_owned()),
            Just("models = [\"llama3.2:*\"]".to_owned()),
            Just("model_management = true".to_owned()),
            Just("SECRET = 1".to_owned()),
            "\\PC{0,30}",
        ], 0..14),
        secret in "sk[a-f0-9]{14}",
    ) {
        let doc = lines.join("\n").replace("SECRET", &secret);
        let lookup = |var: ConfigVar| match var {
            ConfigVar::OllamaOrigin => Some("http://127.0.0.1:11434".to_owned()),
            ConfigVar::AigKeys => Some(doc.clone()),
            _ => None,
        };
        match Config::from_lookup(lookup) {
            Ok(config) => {
                // A model name is not a secret: it may show, nothing else.
                let in_models = config.key_summaries().iter().any(|k| {
                    k.models.iter().flatten().any(|m| m.contains(&secret))
                });
                let shown = format!("{:?}", config);
                prop_assert!(in_models || !shown.contains(&secret), "{}", shown);
            }
            Err(error) => {
                prop_assert!(!error.to_string().contains(&secret), "{}", error);
            }
        }
    }

    /// Any configuration strings: parsed or refused, never a panic, and a
    /// refusal never repeats a secret.
    #[test]
    fn any_configuration(
        values in prop::collection::vec(prop::option::of(prop_oneof![
            "\\PC{0,40}",
            "[a-z]{1,8}:[A-Za-z0-9]{1,16}(,[a-z]{0,8}:?[A-Za-z0-9 ]{0,16}){0,3}",
            "https?://[a-z.]{1,12}(:[0-9]{1,6})?(/[a-z]{0,6})?",
            "[0-9]{1,12}(KiB|MiB|GiB|kb|)",
            "(true|false|yes|no|1|0|maybe)",
        ]), ConfigVar::ALL.len()),
        secret in "sk[A-Za-z0-9]{14}",
    ) {
        let lookup = |var: ConfigVar| {
            let i = ConfigVar::ALL.iter().position(|v| *v == var).unwrap();
            match var {
                ConfigVar::AigAuthToken | ConfigVar::CfAccessClientSecret => Some(secret.clone()),
                _ => values[i].clone(),
            }
        };
        match Config::from_lookup(lookup) {
            Ok(config) => {
                let debug = format!("{:?}", config);
                prop_assert!(!debug.contains(&secret));
                prop_assert!(config.redacted_summary().iter().all(|(_, v)| !v.contains(&secret)));
            }
            Err(error) => {
                let shown_elsewhere = values.iter().flatten().any(|v| v.contains(&secret));
                prop_assert!(shown_elsewhere || !error.to_string().contains(&secret), "{}", error);
            }
        }
    }
}
