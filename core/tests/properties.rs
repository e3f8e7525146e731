//! Properties of the core's decisions over generated requests.

use bytes::Bytes;
use http::{request, Request, Response};
use ollama_proxy_core::{Action, Config, Decision, Proxy, UnixTime};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

mod common;
use common::cases;

const TOKEN: &str = "right-token-0123";
const CORS_LIST: &str = "https://app.example,http://localhost:5173";

fn proxy(cors_list: bool, fallback: bool) -> Proxy {
    Proxy::new(
        Config::from_lookup(|var| match var.name() {
            "OLLAMA_ORIGIN" => Some("https://origin.internal/base".into()),
            "AIG_AUTH_TOKEN" => Some(TOKEN.into()),
            "AIG_AUTH_TOKENS" => Some("ci:second-token-4567".into()),
            "CORS_ALLOWED_ORIGINS" if cors_list => Some(CORS_LIST.into()),
            "ALLOW_AUTHORIZATION_HEADER" => Some(fallback.to_string()),
            _ => None,
        })
        .unwrap(),
    )
}

/// Header names a request may carry, in random case, including every
/// hop-by-hop and credential header.
fn header_name() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "cf-aig-authorization",
        "authorization",
        "origin",
        "content-type",
        "accept",
        "x-custom",
        "x-stainless-os",
        "host",
        "user-agent",
    ]);
    (names, any::<u64>()).prop_map(|(n, seed)| {
        n.chars()
            .enumerate()
            .map(|(i, c)| {
                if seed >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("Bearer {TOKEN}")),
        Just("Bearer second-token-4567".to_owned()),
        Just(format!("bearer   {TOKEN}")),
        Just(format!("Bearer {TOKEN}x")),
        Just("x-custom, upgrade".to_owned()),
        Just("https://app.example".to_owned()),
        "[ -~]{0,24}",
    ]
}

fn path_and_query() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("api".to_owned()),
        Just("v1".to_owned()),
        Just("chat".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%E2%9C%93".to_owned()),
        "[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,8}",
    ];
    (
        prop::collection::vec(segment, 0..5),
        prop::option::of("[a-zA-Z0-9=&%/?:@-]{0,12}"),
    )
        .prop_map(|(segs, q)| {
            let mut pq = format!("/{}", segs.join("/"));
            if let Some(q) = q {
                pq.push('?');
                pq.push_str(&q);
            }
            pq
        })
}

fn request_head() -> impl Strategy<Value = request::Parts> {
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
    ]);
    (
        method,
        path_and_query(),
        prop::collection::vec((header_name(), header_value()), 0..8),
    )
        .prop_map(|(m, pq, headers)| {
            let mut b = Request::builder().method(m).uri(pq);
            for (n, v) in headers {
                b = b.header(n, v);
            }
            b.body(()).unwrap().into_parts().0
        })
}

fn forwarded(d: &Decision) -> Option<&request::Parts> {
    match &d.action {
        Action::Forward(p) => Some(p),
        Action::Respond(_) => None,
    }
}

fn local(d: &Decision) -> Option<&Response<Bytes>> {
    match &d.action {
        Action::Respond(r) => Some(r),
        Action::Forward(_) => None,
    }
}

const NEVER_FORWARDED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "cf-aig-authorization",
    "origin",
    "x-custom-never",
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/properties.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_hop_by_hop_or_credential_header_is_forwarded(head in request_head(), cors in any::<bool>(), fallback in any::<bool>()) {
        let named_by_connection: Vec<String> = head.headers.get_all("connection").iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect();
        let d = proxy(cors, fallback).decide(head);
        if let Some(up) = forwarded(&d) {
            for name in NEVER_FORWARDED.iter().copied().chain(named_by_connection.iter().map(String::as_str)) {
                if name == "host" { continue; }
                prop_assert!(!up.headers.contains_key(name), "{} forwarded: {:?}", name, up.headers);
            }
            for value in up.headers.get_all("authorization") {
                let words: Vec<&str> = value.to_str().unwrap_or("").split_whitespace().collect();
                let ours = matches!(words.as_slice(), [scheme, token]
                    if scheme.eq_ignore_ascii_case("bearer") && (*token == TOKEN || *token == "second-token-4567"));
                prop_assert!(!ours, "proxy token forwarded in Authorization: {:?}", value);
            }
            prop_assert_eq!(up.headers.get_all("host").iter().count(), 1);
            prop_assert_eq!(&up.headers["host"], "origin.internal");
        }
    }

    #[test]
    fn path_and_query_are_preserved(head in request_head()) {
        let path = head.uri.path().to_owned();
        let query = head.uri.query().map(str::to_owned);
        let d = proxy(false, true).decide(head);
        if let Some(up) = forwarded(&d) {
            prop_assert_eq!(up.uri.scheme_str(), Some("https"));
            prop_assert_eq!(up.uri.authority().unwrap().as_str(), "origin.internal");
            prop_assert_eq!(up.uri.query().map(str::to_owned), query, "query changed");
            let sent = up.uri.path().strip_prefix("/base").expect("under the base path");
            let dot = |s: &str| matches!(s.to_ascii_lowercase().as_str(), "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e.");
            if path.split('/').any(dot) {
                // Dot segments are resolved, as URL parsers (and the Workers runtime) do.
                prop_assert!(!sent.split('/').any(dot), "dot segment forwarded: {}", sent);
                prop_assert!(sent.starts_with('/'));
            } else {
                prop_assert_eq!(sent, path.as_str(), "path changed");
            }
        }
    }

    #[test]
    fn wrong_tokens_never_authenticate(token in "[!-~]{1,40}", header in prop::sample::select(vec!["cf-aig-authorization", "authorization"])) {
        prop_assume!(token != TOKEN && token != "second-token-4567");
        let head = Request::post("/api/chat").header(header, format!("Bearer {token}")).body(()).unwrap().into_parts().0;
        let d = proxy(false, true).decide(head);
        prop_assert!(forwarded(&d).is_none());
        prop_assert_eq!(local(&d).unwrap().status(), 401);
    }

    #[test]
    fn right_tokens_always_authenticate(
        which in prop::sample::select(vec![(TOKEN, "default"), ("second-token-4567", "ci")]),
        scheme in prop::sample::select(vec!["Bearer", "bearer", "BEARER", "bEaReR"]),
        gap in "[ \t]{1,3}",
        noise in prop::collection::vec((header_name(), header_value()), 0..4),
    ) {
        let mut b = Request::post("/v1/chat/completions");
        for (n, v) in noise {
            if !n.eq_ignore_ascii_case("cf-aig-authorization") { b = b.header(n, v); }
        }
        let head = b.header("cf-aig-authorization", format!("{scheme}{gap}{}", which.0)).body(()).unwrap().into_parts().0;
        let d = proxy(false, false).decide(head);
        prop_assert_eq!(d.exchange.key().map(|k| k.as_str()), Some(which.1));
    }

    #[test]
    fn proxy_made_responses_are_openai_json_with_cors(head in request_head(), cors in any::<bool>()) {
        // Exactly one Origin counts; repeated ones match no allowlist entry.
        let origins: Vec<_> = head.headers.get_all("origin").iter().cloned().collect();
        let origin = if origins.len() == 1 { origins.first().cloned() } else { None };
        let d = proxy(cors, true).decide(head);
        if let Some(r) = local(&d) {
            if r.status() == 204 { return Ok(()); } // preflight: headers only
            let v: serde_json::Value = serde_json::from_slice(r.body()).expect("valid JSON");
            if r.status() != 200 {
                prop_assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string() && v["error"]["code"].is_string());
            }
            prop_assert_eq!(&r.headers()["content-type"], "application/json");
            let allowed = !cors || origin.as_ref().is_some_and(|o| CORS_LIST.split(',').any(|a| a.eq_ignore_ascii_case(o.to_str().unwrap_or(""))));
            prop_assert_eq!(r.headers().contains_key("access-control-allow-origin"), allowed);
            if cors {
                prop_assert!(r.headers().get_all("vary").iter().any(|v| v == "Origin"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        ..ProptestConfig::default()
    })]

    /// A key works before its expiry and from that instant on answers 401
    /// `expired_api_key`, at any time passed in; a key without one never
    /// expires. (Time is an argument: no clock is read.)
    #[test]
    fn keys_expire_at_their_instant(
        expires in -2_000_000_000i64..8_000_000_000,
        offset in -100_000i64..100_000,
        hashed in any::<bool>(),
    ) {
        let at = UnixTime::from_secs(expires);
        let credential = if hashed {
            format!("token_sha256 = \"{}\"", ollama_proxy_core::token_sha256_hex("dated-token-1"))
        } else {
            "token = \"dated-token-1\"".to_owned()
        };
        let doc = format!(
            "[[keys]]\nname = \"dated\"\n{credential}\nexpires = \"{at}\"\n[[keys]]\nname = \"forever\"\ntoken = \"forever-token-2\"\n"
        );
        let proxy = Proxy::new(Config::from_lookup(|var| match var.name() {
            "OLLAMA_ORIGIN" => Some("http://origin.internal".into()),
            "AIG_KEYS" => Some(doc.clone()),
            _ => None,
        }).unwrap());
        let now = UnixTime::from_secs(expires + offset);
        let head = |token: &str| {
            let (mut parts, ()) = Request::builder()
                .uri("/api/tags")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap()
                .into_parts();
            parts.method = http::Method::GET;
            parts
        };
        let dated = proxy.decide_at(head("dated-token-1"), None, now);
        match dated.action {
            Action::Forward(_) => prop_assert!(offset < 0, "used {} s past its expiry", offset),
            Action::Respond(r) => {
                prop_assert!(offset >= 0, "refused {} s before its expiry", -offset);
                prop_assert_eq!(r.status(), 401);
                prop_assert_eq!(dated.exchange.rejection().map(|e| e.code()), Some("expired_api_key"));
            }
        }
        let forever = proxy.decide_at(head("forever-token-2"), None, now);
        prop_assert!(matches!(forever.action, Action::Forward(_)));
    }
}
