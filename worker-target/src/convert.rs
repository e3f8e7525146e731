//! Translation between the Workers runtime's `web_sys` types and `http`
//! types for the core. Only heads cross; bodies stay JS streams.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, Response, StatusCode, Uri};
use wasm_bindgen::JsValue;
use web_sys::{Headers, ReadableStream, RequestInit, RequestRedirect, ResponseInit};

/// Builds the request head the core decides on from the incoming request.
pub(crate) fn request_parts(request: &web_sys::Request) -> worker::Result<request::Parts> {
    let headers = header_map(&request.headers())?;
    parts_from(&request.method(), &request.url(), headers)
}

/// The pure half of [`request_parts`]: method, absolute URL and headers.
pub(crate) fn parts_from(
    method: &str,
    url: &str,
    headers: HeaderMap,
) -> worker::Result<request::Parts> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| worker::Error::RustError(e.to_string()))?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.headers = headers;
    Ok(parts)
}

#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/headers.js")]
extern "C" {
    /// Every entry of `headers` as `name\nvalue\n` (see js/headers.js).
    #[wasm_bindgen(js_name = headersFlat)]
    fn headers_flat(headers: &Headers) -> String;

    /// New headers from [`flat`]'s form (see js/headers.js).
    #[wasm_bindgen(js_name = headersFromFlat, catch)]
    fn headers_from_flat(flat: &str) -> Result<Headers, JsValue>;
}

/// Copies JS headers into a `HeaderMap`, in one call across. The runtime
/// has already validated them as byte strings; a name or value `http`
/// refuses is skipped.
pub(crate) fn header_map(headers: &Headers) -> worker::Result<HeaderMap> {
    Ok(from_flat(&headers_flat(headers)))
}

/// Copies a `HeaderMap` into new JS headers, in one call across.
pub(crate) fn js_headers(map: &HeaderMap) -> worker::Result<Headers> {
    Ok(headers_from_flat(&flat(map))?)
}

/// The pure half of [`header_map`]: `name\nvalue\n` entries.
fn from_flat(flat: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut parts = flat.split('\n');
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// The pure half of [`js_headers`]. A value that is not visible ASCII is
/// left out (as `Headers.append` of its text would change it).
fn flat(map: &HeaderMap) -> String {
    let mut flat = String::with_capacity(map.len() * 48);
    for (name, value) in map {
        if let Ok(value) = value.to_str() {
            flat.push_str(name.as_str());
            flat.push('\n');
            flat.push_str(value);
            flat.push('\n');
        }
    }
    flat
}

/// The subrequest's init: the core's method and headers, the client's body
/// stream and abort signal, and redirects passed back to the client.
pub(crate) fn upstream_init(
    head: &request::Parts,
    body: Option<&JsValue>,
    signal: &web_sys::AbortSignal,
) -> worker::Result<RequestInit> {
    let init = RequestInit::new();
    init.set_method(head.method.as_str());
    init.set_headers(&js_headers(&head.headers)?.into());
    init.set_redirect(RequestRedirect::Manual);
    init.set_signal(Some(signal));
    if let Some(body) = body {
        init.set_body(body);
    }
    Ok(init)
}

/// The origin's response head as `http` parts.
pub(crate) fn upstream_response_head(
    response: &web_sys::Response,
) -> worker::Result<response::Parts> {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = StatusCode::from_u16(response.status())
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    parts.headers = header_map(&response.headers())?;
    Ok(parts)
}

/// A response to the client with the given head and the origin's body stream.
pub(crate) fn js_response(
    head: &response::Parts,
    body: Option<&ReadableStream>,
) -> worker::Result<web_sys::Response> {
    let init = response_init(head.status, &head.headers)?;
    Ok(web_sys::Response::new_with_opt_readable_stream_and_init(
        body, &init,
    )?)
}

/// A response the core made (small JSON, or an empty preflight answer).
pub(crate) fn local_response(response: Response<Bytes>) -> worker::Result<web_sys::Response> {
    let (head, body) = response.into_parts();
    let init = response_init(head.status, &head.headers)?;
    if body.is_empty() {
        return Ok(web_sys::Response::new_with_opt_str_and_init(None, &init)?);
    }
    let mut bytes = body.to_vec();
    Ok(web_sys::Response::new_with_opt_u8_array_and_init(
        Some(&mut bytes),
        &init,
    )?)
}

fn response_init(status: StatusCode, headers: &HeaderMap) -> Result<ResponseInit, JsValue> {
    let init = ResponseInit::new();
    init.set_status(status.as_u16());
    init.set_headers(&js_headers(headers).map_err(JsValue::from)?.into());
    Ok(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_keep_path_and_query() {
        let parts = parts_from(
            "POST",
            "https://proxy.example/api/chat?x=%2F&y",
            HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(parts.method, Method::POST);
        assert_eq!(
            parts.uri.path_and_query().unwrap().as_str(),
            "/api/chat?x=%2F&y"
        );
    }

    #[test]
    fn headers_cross_flat_and_back() {
        let mut map = HeaderMap::new();
        map.append("content-type", HeaderValue::from_static("application/json"));
        map.append("x-two", HeaderValue::from_static("a"));
        map.append("x-two", HeaderValue::from_static("b, c"));
        map.append("x-empty", HeaderValue::from_static(""));
        let flat = flat(&map);
        assert_eq!(
            flat,
            "content-type\napplication/json\nx-two\na\nx-two\nb, c\nx-empty\n\n"
        );
        assert_eq!(from_flat(&flat), map);
        assert!(from_flat("").is_empty());
        // A name http refuses is skipped, the rest kept.
        let got = from_flat("bad name\nv\nok\nyes\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got["ok"], "yes");
    }

    #[test]
    fn bad_methods_are_errors() {
        assert!(parts_from("BAD METHOD", "https://p/", HeaderMap::new()).is_err());
    }
}
