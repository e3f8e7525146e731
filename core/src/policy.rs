//! Endpoint policy: which Ollama endpoints a token holder may not reach.
//!
//! Ollama's router matches on the percent-decoded path, so the check here
//! decodes, drops empty and `.` segments, resolves `..` and ignores case
//! before comparing. It errs towards refusing: a spelling that Ollama would
//! answer with 404 anyway may be refused here too, never the other way round.

/// Model-management endpoints under `/api`, refused unless allowed.
const MANAGEMENT: [&str; 6] = ["pull", "push", "create", "delete", "copy", "blobs"];

/// True when `path` reaches one of Ollama's model-management endpoints.
pub(crate) fn is_model_management(path: &str) -> bool {
    let normalized = normalize(path);
    let mut segments = normalized.iter().map(Vec::as_slice);
    match (segments.next(), segments.next()) {
        (Some(b"api"), Some(endpoint)) => MANAGEMENT.iter().any(|m| m.as_bytes() == endpoint),
        _ => false,
    }
}

/// Decoded, lowercased path segments with `.`/`..`/empty ones resolved.
fn normalize(path: &str) -> Vec<Vec<u8>> {
    let decoded = decode_fully(path.as_bytes());
    let mut out: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_ascii_lowercase()),
        }
    }
    out
}

/// Percent-decodes until nothing changes (bounded), so double encoding
/// cannot hide a segment from the check.
fn decode_fully(input: &[u8]) -> Vec<u8> {
    let mut current = input.to_vec();
    for _ in 0..4 {
        let next = percent_decode(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_management_endpoints_however_spelled() {
        for path in [
            "/api/pull",
            "/api/push",
            "/api/create",
            "/api/delete",
            "/api/copy",
            "/api/blobs/sha256:abc",
            "/api/pull/",
            "//api//pull",
            "/API/Pull",
            "/api/%70ull",
            "/api/%2570ull",
            "/v1/../api/delete",
            "/api/./copy",
            "/x/../api%2fpull",
        ] {
            assert!(is_model_management(path), "{path} not refused");
        }
    }

    #[test]
    fn allows_inference_and_listing() {
        for path in [
            "/api/chat",
            "/api/generate",
            "/api/tags",
            "/api/show",
            "/api/ps",
            "/v1/models",
            "/api/pulls",
            "/pull",
            "/",
            "/api",
        ] {
            assert!(!is_model_management(path), "{path} refused");
        }
    }

    #[test]
    fn truncated_escapes_are_kept_literally() {
        assert_eq!(percent_decode(b"/a%2"), b"/a%2");
        assert_eq!(percent_decode(b"%41%"), b"A%");
        assert_eq!(percent_decode(b"%zz"), b"%zz");
    }
}
