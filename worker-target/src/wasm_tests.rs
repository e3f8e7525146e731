//! The adapter's conversions against the real `web_sys` types, run under
//! Node by `wasm-bindgen-test` (`cargo xtask test-all`).

use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;
use wasm_bindgen_test::wasm_bindgen_test;
use web_sys::Headers;

use crate::convert::{
    js_response, local_response, parts_from, request_parts, upstream_init, upstream_response_head,
};

#[wasm_bindgen_test]
fn a_request_becomes_parts_for_the_core() {
    let headers = Headers::new().unwrap();
    headers.append("Content-Type", "application/json").unwrap();
    headers
        .append("CF-AIG-Authorization", "Bearer abc")
        .unwrap();
    headers.append("X-Stainless-OS", "Linux").unwrap();
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers.into());
    let request =
        web_sys::Request::new_with_str_and_init("https://proxy.example/api/chat?x=%2F", &init)
            .unwrap();
    let parts = request_parts(&request).unwrap();
    assert_eq!(parts.method, http::Method::POST);
    assert_eq!(parts.uri, "https://proxy.example/api/chat?x=%2F");
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["cf-aig-authorization"], "Bearer abc");
    assert_eq!(parts.headers["x-stainless-os"], "Linux");
    assert_eq!(parts.headers.len(), 3);
}

#[wasm_bindgen_test]
fn response_heads_survive_the_round_trip() {
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = StatusCode::CREATED;
    head.headers
        .append("vary", HeaderValue::from_static("Accept-Encoding"));
    head.headers
        .append("vary", HeaderValue::from_static("Origin"));
    head.headers
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    let js = js_response(&head, None).unwrap();
    // JS joins repeated values with ", ", which is the same field value.
    assert_eq!(
        js.headers().get("vary").unwrap().as_deref(),
        Some("Accept-Encoding, Origin")
    );
    assert!(js.body().is_none());
    let back = upstream_response_head(&js).unwrap();
    assert_eq!(back.status, StatusCode::CREATED);
    assert_eq!(back.headers["x-accel-buffering"], "no");
    assert_eq!(back.headers["vary"], "Accept-Encoding, Origin");
}

#[wasm_bindgen_test]
fn local_responses_keep_status_headers_and_body() {
    let mut response = http::Response::new(bytes::Bytes::from_static(br#"{"status":"ok"}"#));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
        .headers_mut()
        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    let js = local_response(response).unwrap();
    assert_eq!(js.status(), 401);
    assert_eq!(
        js.headers().get("www-authenticate").unwrap().as_deref(),
        Some("Bearer")
    );
    assert!(js.body().is_some());

    let empty = local_response(http::Response::new(bytes::Bytes::new())).unwrap();
    assert!(
        empty.body().is_none(),
        "an empty local answer has no body stream"
    );
}

#[wasm_bindgen_test]
fn the_subrequest_carries_method_headers_and_manual_redirects() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("origin.internal"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut head = parts_from("POST", "http://origin.internal/api/chat", headers).unwrap();
    head.headers.remove("host");
    let controller = web_sys::AbortController::new().unwrap();
    let init = upstream_init(&head, None, &controller.signal()).unwrap();
    let request =
        web_sys::Request::new_with_str_and_init("http://origin.internal/api/chat", &init).unwrap();
    assert_eq!(request.method(), "POST");
    assert_eq!(request.redirect(), web_sys::RequestRedirect::Manual);
    assert_eq!(
        request.headers().get("content-type").unwrap().as_deref(),
        Some("application/json")
    );
    controller.abort();
    assert!(
        request.signal().aborted(),
        "aborting the client's signal aborts the subrequest"
    );
}
