use super::*;

fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn parses_wildcard_and_lists() {
    assert_eq!(AllowOrigin::parse(" * "), Ok(AllowOrigin::Any));
    assert_eq!(
        AllowOrigin::parse("https://A.example, http://localhost:5173").unwrap(),
        AllowOrigin::List(vec![
            "https://a.example".into(),
            "http://localhost:5173".into()
        ])
    );
    for bad in [
        "",
        "https://a.example/",
        "a.example",
        "null",
        "https://a,",
        "ftp://x",
    ] {
        assert!(AllowOrigin::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn preflight_mirrors_requested_headers() {
    let allow = AllowOrigin::Any;
    let h = req(&[
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type, x-stainless-os, cf-aig-authorization",
        ),
    ]);
    assert!(is_preflight(&Method::OPTIONS, &h));
    let out = preflight_headers(&allow, &h);
    assert_eq!(out["access-control-allow-origin"], "*");
    assert_eq!(
        out["access-control-allow-headers"],
        "content-type, x-stainless-os, cf-aig-authorization"
    );
    assert!(out.contains_key("access-control-max-age"));
}

#[test]
fn foreign_origin_gets_no_allow_headers() {
    let allow = AllowOrigin::parse("https://app.example").unwrap();
    let h = req(&[
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
    ]);
    let out = preflight_headers(&allow, &h);
    assert!(!out.contains_key("access-control-allow-origin"));
    assert!(!out.contains_key("access-control-allow-methods"));
    assert!(out.contains_key("vary"));
}

#[test]
fn apply_replaces_origin_cors_and_appends_vary() {
    let allow = AllowOrigin::parse("https://app.example").unwrap();
    let cors = CorsHeaders::for_request(&allow, &req(&[("origin", "https://app.example")]));
    let mut resp = req(&[
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
        ("vary", "Accept-Encoding"),
    ]);
    cors.apply(&mut resp);
    let acao: Vec<_> = resp.get_all("access-control-allow-origin").iter().collect();
    assert_eq!(acao, ["https://app.example"]);
    assert!(!resp.contains_key("access-control-allow-credentials"));
    let vary: Vec<_> = resp.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
}

#[test]
fn repeated_origins_are_not_allowed() {
    let allow = AllowOrigin::parse("https://app.example").unwrap();
    let separate = req(&[
        ("origin", "https://app.example"),
        ("origin", "https://evil.example"),
    ]);
    let joined = req(&[("origin", "https://app.example, https://evil.example")]);
    for request in [separate, joined] {
        let mut out = HeaderMap::new();
        CorsHeaders::for_request(&allow, &request).apply(&mut out);
        assert!(!out.contains_key("access-control-allow-origin"));
    }
}
