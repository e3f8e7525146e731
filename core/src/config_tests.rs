use super::*;
use std::collections::HashMap;

fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|var| map.get(var.name()).cloned())
}

fn err(pairs: &[(&str, &str)]) -> String {
    parse(pairs).unwrap_err().to_string()
}

const BASE: [(&str, &str); 2] = [
    ("OLLAMA_ORIGIN", "http://127.0.0.1:11434"),
    ("AIG_AUTH_TOKEN", "tok-123"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = BASE.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn defaults() {
    let c = parse(&BASE).unwrap();
    assert_eq!(c.allow_origin, AllowOrigin::Any);
    assert!(c.allow_authorization_header);
    assert!(!c.allow_model_management);
    assert!(c.access.is_none());
    assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(
        c.key_names().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["default"]
    );
}

#[test]
fn errors_name_the_variable() {
    assert!(err(&[("AIG_AUTH_TOKEN", "x")]).starts_with("OLLAMA_ORIGIN: is required"));
    assert!(
        err(&[("OLLAMA_ORIGIN", "ollama:11434"), ("AIG_AUTH_TOKEN", "x")])
            .starts_with("OLLAMA_ORIGIN:")
    );
    assert!(err(&[("OLLAMA_ORIGIN", "http://h")]).starts_with("AIG_AUTH_TOKEN: is required"));
    assert!(
        err(&[("OLLAMA_ORIGIN", "http://h"), ("AIG_AUTH_TOKEN", "  ")])
            .starts_with("AIG_AUTH_TOKEN: is set but empty")
    );
    assert!(
        err(&with(&[("CORS_ALLOWED_ORIGINS", "https://a.example/")]))
            .starts_with("CORS_ALLOWED_ORIGINS:")
    );
    assert!(
        err(&with(&[("ALLOW_MODEL_MANAGEMENT", "maybe")])).starts_with("ALLOW_MODEL_MANAGEMENT:")
    );
    assert!(err(&with(&[("MAX_BODY_BYTES", "lots")])).starts_with("MAX_BODY_BYTES:"));
    assert!(
        err(&with(&[("CF_ACCESS_CLIENT_ID", "id.access")])).starts_with("CF_ACCESS_CLIENT_SECRET:")
    );
    assert!(err(&with(&[("AIG_AUTH_TOKENS", "a:x,,b:y")])).starts_with("AIG_AUTH_TOKENS: entry 2"));
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let secret = "super-secret-value";
    let cases = [
        vec![
            ("OLLAMA_ORIGIN", "http://h"),
            ("AIG_AUTH_TOKEN", "has space super-secret-value"),
        ],
        vec![
            ("OLLAMA_ORIGIN", "http://h"),
            ("AIG_AUTH_TOKEN", "t"),
            (
                "AIG_AUTH_TOKENS",
                "a:super-secret-value,b:super-secret-value",
            ),
        ],
        vec![
            ("OLLAMA_ORIGIN", "http://h"),
            ("AIG_AUTH_TOKEN", "super-secret-value"),
            ("AIG_AUTH_TOKENS", "super-secret-value"),
        ],
        vec![
            ("OLLAMA_ORIGIN", "http://u:super-secret-value@h"),
            ("AIG_AUTH_TOKEN", "t"),
        ],
    ];
    for case in cases {
        let e = parse(&case).unwrap_err();
        assert!(!e.to_string().contains(secret), "{e}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
    }
    let ok = parse(&[
        ("OLLAMA_ORIGIN", "http://h"),
        ("AIG_AUTH_TOKEN", secret),
        ("AIG_AUTH_TOKENS", "ci:super-secret-value-2"),
        ("CF_ACCESS_CLIENT_ID", "id.access"),
        ("CF_ACCESS_CLIENT_SECRET", "super-secret-value-3"),
    ])
    .unwrap();
    let shown = format!("{ok:?} {:?}", ok.redacted_summary());
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("id.access"));
}

#[test]
fn token_lists_name_keys() {
    let c = parse(&with(&[("AIG_AUTH_TOKENS", " laptop:abc , def ,ci: ghi")])).unwrap();
    let names: Vec<_> = c.key_names().map(|k| k.as_str().to_owned()).collect();
    assert_eq!(names, ["default", "laptop", "token-2", "ci"]);
    // AIG_AUTH_TOKENS alone is enough, so the main token can be retired.
    let c = parse(&[
        ("OLLAMA_ORIGIN", "http://h"),
        ("AIG_AUTH_TOKENS", "new:abc"),
    ])
    .unwrap();
    assert_eq!(c.key_names().count(), 1);
    assert!(err(&with(&[("AIG_AUTH_TOKENS", "default:zzz")])).contains("`default` is used twice"));
}

#[test]
fn sizes_and_bools() {
    assert_eq!(parse_size("100MiB"), Some(100 << 20));
    assert_eq!(parse_size("512 KiB"), Some(512 << 10));
    assert_eq!(parse_size("42"), Some(42));
    assert_eq!(parse_size("1.5GiB"), None);
    assert_eq!(parse_size("99999999999999999999"), None);
    let c = parse(&with(&[
        ("ALLOW_AUTHORIZATION_HEADER", "OFF"),
        ("ALLOW_MODEL_MANAGEMENT", "Yes"),
    ]))
    .unwrap();
    assert!(!c.allow_authorization_header);
    assert!(c.allow_model_management);
}
