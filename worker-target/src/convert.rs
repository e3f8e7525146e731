//! Translation between the Workers runtime's `web_sys` types and `http`
//! types for the core. Only heads cross; bodies stay JS streams.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, Response, StatusCode, Uri};
use wasm_bindgen::JsValue;
use web_sys::{ReadableStream, RequestInit};

/// Builds the request head the core decides on from the incoming request
/// (method, URL and headers in one call across).
pub(crate) fn request_parts(request: &web_sys::Request) -> worker::Result<request::Parts> {
    let head = request_head(request);
    let bad = || worker::Error::RustError("unreadable request head".into());
    let (method, rest) = head.split_once('\n').ok_or_else(bad)?;
    let (url, flat) = rest.split_once('\n').ok_or_else(bad)?;
    parts_from(method, url, from_flat(flat))
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

#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/cross.js")]
extern "C" {
    /// `method\nurl\n` and the headers in [`flat`]'s form.
    #[wasm_bindgen(js_name = requestHead)]
    fn request_head(request: &web_sys::Request) -> String;

    /// `status\n` and the headers in [`flat`]'s form.
    #[wasm_bindgen(js_name = responseHead)]
    fn response_head(response: &web_sys::Response) -> String;

    /// The subrequest's init (see js/cross.js).
    #[wasm_bindgen(js_name = subrequestInit, catch)]
    fn subrequest_init(
        method: &str,
        flat: &str,
        body: &JsValue,
        signal: &web_sys::AbortSignal,
    ) -> Result<RequestInit, JsValue>;

    /// A response with `body` (a stream, bytes or null), `status` and
    /// headers in [`flat`]'s form.
    #[wasm_bindgen(js_name = newResponse, catch)]
    fn new_response(body: &JsValue, status: u16, flat: &str) -> Result<web_sys::Response, JsValue>;
}

/// A header set from its flat form: `name\nvalue\n` entries.
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

/// A header set in its flat form (see js/cross.js). A value that is not
/// visible ASCII is left out (as `Headers.append` of its text would
/// change it).
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
    Ok(subrequest_init(
        head.method.as_str(),
        &flat(&head.headers),
        body.unwrap_or(&JsValue::NULL),
        signal,
    )?)
}

/// The origin's response head as `http` parts.
pub(crate) fn upstream_response_head(
    response: &web_sys::Response,
) -> worker::Result<response::Parts> {
    let head = response_head(response);
    let (status, flat) = head
        .split_once('\n')
        .ok_or_else(|| worker::Error::RustError("unreadable response head".into()))?;
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status
        .parse::<u16>()
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| worker::Error::RustError(format!("status {status}")))?;
    parts.headers = from_flat(flat);
    Ok(parts)
}

/// A response to the client with the given head and the origin's body stream.
pub(crate) fn js_response(
    head: &response::Parts,
    body: Option<&ReadableStream>,
) -> worker::Result<web_sys::Response> {
    let body = body.map_or(JsValue::NULL, Into::into);
    Ok(new_response(
        &body,
        head.status.as_u16(),
        &flat(&head.headers),
    )?)
}

/// A response the core made (small JSON, or an empty preflight answer).
pub(crate) fn local_response(response: Response<Bytes>) -> worker::Result<web_sys::Response> {
    let (head, body) = response.into_parts();
    let body = if body.is_empty() {
        JsValue::NULL
    } else {
        js_sys::Uint8Array::from(&body[..]).into()
    };
    Ok(new_response(
        &body,
        head.status.as_u16(),
        &flat(&head.headers),
    )?)
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
