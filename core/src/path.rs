//! Dot-segment removal for the forwarded path, the way URL parsers do it.
//!
//! The Workers runtime hands the Worker a URL already parsed by the WHATWG
//! URL rules, which resolve `.` and `..` segments (including their
//! percent-encoded spellings `%2e`). The native proxy applies the same rule
//! here, so both targets forward the same path, and a `..` can never climb
//! above the origin's base path.

use std::borrow::Cow;

fn is_single_dot(segment: &str) -> bool {
    segment == "." || segment.eq_ignore_ascii_case("%2e")
}

fn is_double_dot(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        ".." | ".%2e" | "%2e." | "%2e%2e"
    )
}

/// Resolves `.` and `..` segments in an absolute path (query excluded). A
/// final `.` or `..` leaves a trailing slash; `..` at the root stays at the
/// root; empty segments (`//`) are kept.
pub(crate) fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Cow::Borrowed(path);
    };
    if !rest
        .split('/')
        .any(|s| is_single_dot(s) || is_double_dot(s))
    {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if is_double_dot(segment) {
            out.pop();
            if last {
                out.push("");
            }
        } else if is_single_dot(segment) {
            if last {
                out.push("");
            }
        } else {
            out.push(segment);
        }
    }
    Cow::Owned(format!("/{}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::remove_dot_segments as r;

    #[test]
    fn resolves_like_a_url_parser() {
        assert_eq!(r("/api/tags"), "/api/tags");
        assert_eq!(r("/v1/../api/tags"), "/api/tags");
        assert_eq!(r("/v1/%2E%2e/api/./tags"), "/api/tags");
        assert_eq!(r("/a/b/.."), "/a/");
        assert_eq!(r("/a/."), "/a/");
        assert_eq!(r("/../../x"), "/x");
        assert_eq!(r("//api/../x"), "//x");
        assert_eq!(r("/.well-known/x"), "/.well-known/x");
        assert_eq!(r("/..."), "/...");
        assert_eq!(r("/"), "/");
    }
}
