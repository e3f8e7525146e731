//! Dot-segment removal for the forwarded path, in two steps, so that both
//! targets forward the same path and a `..` can never climb above the
//! origin's base path.
//!
//! First the step the Workers runtime takes before the Worker runs (KJ's URL
//! parser, seen in workerd): literal `.` and `..` segments are resolved, a
//! `..` removing whatever segment precedes it (an empty one, or a `%2e`,
//! included), and percent-encoded dots are left alone. The native proxy
//! takes the same step here; on the Worker it changes nothing, having been
//! taken already. Then the rule of URL parsers (WHATWG): `.` and `..`
//! segments, percent-encoded spellings included, are resolved.

use std::borrow::Cow;

/// workerd's step: resolves literal `.` and `..` segments only. Empty
/// segments stay, except that a `..` removes one, and a `.` or `..` at the
/// end leaves a trailing slash.
pub(crate) fn resolve_literal_dots(path: &str) -> Cow<'_, str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Cow::Borrowed(path);
    };
    if !rest.split('/').any(|s| s == "." || s == "..") {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            ".." => {
                out.pop();
                trailing = true;
            }
            "." => trailing = true,
            "" if last => trailing = true,
            segment => {
                out.push(segment);
                trailing = false;
            }
        }
    }
    let mut joined = String::with_capacity(path.len());
    for segment in &out {
        joined.push('/');
        joined.push_str(segment);
    }
    if trailing || out.is_empty() {
        joined.push('/');
    }
    Cow::Owned(joined)
}

/// Both steps: the path a request is forwarded with (before the origin's
/// base path), and the one every decision about the request looks at.
pub(crate) fn forwarded_path(path: &str) -> Cow<'_, str> {
    match resolve_literal_dots(path) {
        Cow::Borrowed(path) => remove_dot_segments(path),
        Cow::Owned(path) => Cow::Owned(remove_dot_segments(&path).into_owned()),
    }
}

fn is_single_dot(segment: &str) -> bool {
    segment == "." || segment.eq_ignore_ascii_case("%2e")
}

fn is_double_dot(segment: &str) -> bool {
    ["..", ".%2e", "%2e.", "%2e%2e"]
        .iter()
        .any(|dots| segment.eq_ignore_ascii_case(dots))
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
    use super::{forwarded_path, remove_dot_segments as r, resolve_literal_dots};

    /// Targets and the URL path workerd hands the Worker (its `request.url`),
    /// read off workerd 1.20260424.1.
    #[test]
    fn literal_dots_resolve_as_in_workerd() {
        for (target, seen) in [
            ("//%2e/..", "//"),
            ("/a/%2e/..", "/a/"),
            ("//%2e%2e/..", "//"),
            ("/%2e%2e/a", "/%2e%2e/a"),
            ("//./..", "/"),
            ("/a//b", "/a//b"),
            ("/a/./b", "/a/b"),
            ("/a/%2e/b", "/a/%2e/b"),
            ("/a/../b", "/b"),
            ("/a/.%2e/b", "/a/.%2e/b"),
            ("//a/..", "//"),
            ("//..", "/"),
            ("///..", "//"),
            ("/a//..", "/a/"),
            ("/a//.", "/a//"),
            ("/a/b//..", "/a/b/"),
            ("//%2e/../b", "//b"),
            ("/..", "/"),
            ("/a/", "/a/"),
        ] {
            assert_eq!(resolve_literal_dots(target), seen, "{target}");
        }
    }

    #[test]
    fn forwarded_paths_agree_with_the_worker() {
        // The cross-target case: native forwarded `/`, the Worker `//`.
        assert_eq!(forwarded_path("//%2e/.."), "//");
        assert_eq!(forwarded_path("/v1/%2E%2e/api/./tags"), "/api/tags");
        assert_eq!(forwarded_path("/a/%2e/.."), "/a/");
    }

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
