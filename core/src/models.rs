//! Model allowlists: a requested name is read exactly the way Ollama
//! resolves it (`modelref.ParseRef`, then `model.ParseName`; the name a
//! model is written or copied under with `ParseName` alone, see
//! [`ModelName::resolve_plain`]), then matched against globs written in the
//! form `ollama list` shows.
//!
//! Ollama trims the name (Unicode whitespace), splits off a `:local` or
//! `:cloud` source suffix (the suffix itself trimmed and compared in any
//! case) or a tag ending in `-cloud`, drops a `scheme://`, fills in the
//! default host (`registry.ollama.ai`), namespace (`library`) and tag
//! (`latest`), refuses a name with an invalid part, and finds the model
//! case-insensitively. So `LLAMA3.2`, `library/llama3.2` and
//! `registry.ollama.ai/library/llama3.2:latest` are all `llama3.2:latest`
//! here, and a list entry `llama3.2` (no tag) means `llama3.2:latest`. A
//! name Ollama would refuse is never allowed.
//!
//! In a glob, `*` stands for any run of characters but `/`, `?` for one,
//! and `**` for any run at all: `*` is every model of the default library,
//! `me/*` every model of the namespace `me`, `hf.co/*/*` every model from
//! hf.co, `**` every model on the box. Cloud models (run on ollama.com under
//! the box owner's account) only match entries that are cloud references
//! themselves (`gpt-oss:120b-cloud`, `*:cloud`).

use std::fmt;

const DEFAULT_HOST: &str = "registry.ollama.ai";
const DEFAULT_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";

/// Where a name says the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Unspecified,
    Local,
    Cloud,
}

/// Ollama's `parseSourceSuffix`: the text after the last `:`, trimmed and
/// in any case, is `cloud` or `local`; or, without a `/`, ends in `-cloud`.
fn parse_source_suffix(raw: &str) -> (String, Source, bool) {
    if let Some(idx) = raw.rfind(':') {
        let suffix_raw = raw[idx + 1..].trim();
        // Go lowercases with Unicode's tables; no character outside ASCII
        // lowercases into these ASCII words, so ASCII lowercasing decides
        // the same (and keeps the tables out of the Worker's bundle).
        let suffix = suffix_raw.to_ascii_lowercase();
        match suffix.as_str() {
            "cloud" => return (raw[..idx].to_owned(), Source::Cloud, true),
            "local" => return (raw[..idx].to_owned(), Source::Local, true),
            _ => {}
        }
        if !suffix_raw.contains('/') && suffix.ends_with("-cloud") {
            let kept = &suffix_raw[..suffix_raw.len() - "-cloud".len()];
            return (format!("{}{kept}", &raw[..=idx]), Source::Cloud, true);
        }
    }
    (raw.to_owned(), Source::Unspecified, false)
}

/// Ollama's `ParseRef`: the base name and whether it names a cloud model;
/// `None` for what Ollama refuses (empty, or two source suffixes).
fn parse_ref(raw: &str) -> Option<(String, bool)> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let (base, source, explicit) = parse_source_suffix(raw);
    if explicit && parse_source_suffix(&base).2 {
        return None;
    }
    Some((base, source == Source::Cloud))
}

/// The four parts of a name (`host/namespace/model:tag`), as Ollama's
/// `ParseNameBare` cuts them: `None` for a part that is missing, `Some("")`
/// for one that is present but empty (which Ollama refuses).
#[derive(Debug, Default, PartialEq, Eq)]
struct Parts<'a> {
    host: Option<&'a str>,
    namespace: Option<&'a str>,
    model: &'a str,
    tag: Option<&'a str>,
}

fn cut_parts(name: &str) -> Parts<'_> {
    let mut parts = Parts::default();
    let mut rest = name;
    let last_colon = rest.rfind(':');
    if last_colon.is_some() && last_colon > rest.rfind('/') {
        let colon = last_colon.unwrap_or_default();
        parts.tag = Some(&rest[colon + 1..]);
        rest = &rest[..colon];
    }
    let Some((before, model)) = rest.rsplit_once('/') else {
        parts.model = rest;
        return parts;
    };
    parts.model = model;
    let Some((host, namespace)) = before.rsplit_once('/') else {
        parts.namespace = Some(before);
        return parts;
    };
    parts.namespace = Some(namespace);
    parts.host = Some(host.split_once("://").map_or(host, |(_, h)| h));
    parts
}

/// Ollama's `isValidPart`.
fn valid_part(part: &str, host: bool, namespace: bool) -> bool {
    let max = if host { 350 } else { 80 };
    let bytes = part.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    bytes.len() <= max
        && (first.is_ascii_alphanumeric() || *first == b'_')
        && rest.iter().all(|&b| match b {
            b'_' | b'-' => true,
            b'.' => !namespace,
            b':' => host,
            b => b.is_ascii_alphanumeric(),
        })
}

/// A requested name in the form `ollama list` shows (lower case), and
/// whether it names a cloud model; `None` when Ollama would refuse it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModelName {
    display: String,
    cloud: bool,
}

impl ModelName {
    /// The name as `ollama list` shows it, lower case.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// Reads a requested model name as Ollama resolves a model to run
    /// (`ParseRef`, then `ParseName`).
    pub(crate) fn resolve(requested: &str) -> Option<Self> {
        let (base, cloud) = parse_ref(requested)?;
        Self::parse_name(&base, cloud)
    }

    /// Reads a name as Ollama reads the name a model is written or copied
    /// under (`ParseName` alone): no trimming, and `:local`, `:cloud` or a
    /// `-cloud` tag are ordinary tags of a local model.
    pub(crate) fn resolve_plain(requested: &str) -> Option<Self> {
        Self::parse_name(requested, false)
    }

    fn parse_name(base: &str, cloud: bool) -> Option<Self> {
        let parts = cut_parts(base);
        let host = parts.host.unwrap_or(DEFAULT_HOST);
        let namespace = parts.namespace.unwrap_or(DEFAULT_NAMESPACE);
        let tag = parts.tag.unwrap_or(DEFAULT_TAG);
        let valid = valid_part(host, true, false)
            && valid_part(namespace, false, true)
            && valid_part(parts.model, false, false)
            && valid_part(tag, false, false);
        // A part ending in `.` would name another model on a file system
        // that drops trailing dots (Windows): never allowed.
        let dotted = [host, parts.model, tag].iter().any(|p| p.ends_with('.'));
        if !valid || dotted {
            return None;
        }
        Some(Self {
            display: display(host, namespace, parts.model, Some(tag)),
            cloud,
        })
    }
}

/// Ollama's `DisplayShortest`, lower case: the default host and namespace
/// left out, the tag (when there is one) after a `:`.
fn display(host: &str, namespace: &str, model: &str, tag: Option<&str>) -> String {
    let mut out = String::with_capacity(host.len() + namespace.len() + model.len() + 16);
    if !host.eq_ignore_ascii_case(DEFAULT_HOST) {
        out.push_str(host);
        out.push('/');
        out.push_str(namespace);
        out.push('/');
    } else if !namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
        out.push_str(namespace);
        out.push('/');
    }
    out.push_str(model);
    if let Some(tag) = tag {
        out.push(':');
        out.push_str(tag);
    }
    out.make_ascii_lowercase();
    out
}

/// One allowlist entry.
#[derive(Clone, Debug)]
struct Pattern {
    /// As written in the keys document.
    written: String,
    glob: ModelName,
}

/// Why an allowlist entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PatternProblem {
    Empty,
    BadChar(char),
    TwoSources,
}

impl fmt::Display for PatternProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::TwoSources => f.write_str("names both :local and :cloud"),
            Self::BadChar(c) => write!(
                f,
                "has {c:?}; a model name or glob uses letters, digits, `._-:/` and the wildcards `*` and `?`"
            ),
        }
    }
}

/// A key's model allowlist.
#[derive(Clone, Debug, Default)]
pub(crate) struct ModelList {
    patterns: Vec<Pattern>,
}

impl ModelList {
    /// Adds an entry: an exact name or a glob. An entry without a wildcard
    /// and without a tag means its `:latest`; one with a wildcard covers
    /// whatever the wildcard does. A literal default host or namespace is
    /// left out, as in the names it is matched against.
    pub(crate) fn push(&mut self, written: &str) -> Result<(), PatternProblem> {
        let trimmed = written.trim();
        if trimmed.is_empty() {
            return Err(PatternProblem::Empty);
        }
        if let Some(c) = trimmed.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '*' | '?'))
        }) {
            return Err(PatternProblem::BadChar(c));
        }
        let (base, cloud) = parse_ref(trimmed).ok_or(PatternProblem::TwoSources)?;
        let parts = cut_parts(&base);
        let wildcard = base.contains(['*', '?']);
        let tag = match parts.tag {
            None if !wildcard => Some(DEFAULT_TAG),
            tag => tag,
        };
        self.patterns.push(Pattern {
            written: written.to_owned(),
            glob: ModelName {
                display: display(
                    parts.host.unwrap_or(DEFAULT_HOST),
                    parts.namespace.unwrap_or(DEFAULT_NAMESPACE),
                    parts.model,
                    tag,
                ),
                cloud,
            },
        });
        Ok(())
    }

    /// Whether `requested` (a model name as a client sent it) is allowed.
    pub(crate) fn allows(&self, requested: &str) -> bool {
        ModelName::resolve(requested).is_some_and(|name| self.covers(&name))
    }

    /// Whether `requested`, a name a model is written or copied under (see
    /// [`ModelName::resolve_plain`]), is allowed.
    pub(crate) fn allows_plain(&self, requested: &str) -> bool {
        ModelName::resolve_plain(requested).is_some_and(|name| self.covers(&name))
    }

    fn covers(&self, name: &ModelName) -> bool {
        self.patterns.iter().any(|p| {
            p.glob.cloud == name.cloud && glob(p.glob.display.as_bytes(), name.display.as_bytes())
        })
    }

    /// The entries as written, for `check-config`.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.written.as_str())
    }
}

/// `**` matches any run of bytes, `*` any run without `/`, `?` one byte
/// but `/`. Dynamic programming over (pattern, text) prefixes: the time is
/// the product of their lengths whatever the wildcards (a requested name is
/// at most a few hundred bytes), never exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // matched[j]: the pattern so far matches text[..j].
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    let mut p = 0;
    while p < pattern.len() {
        let token = pattern[p];
        let across = token == b'*' && pattern.get(p + 1) == Some(&b'*');
        p += if across { 2 } else { 1 };
        if token == b'*' {
            // Extend each match over the bytes the wildcard may cover.
            for j in 1..=text.len() {
                if !matched[j] && matched[j - 1] && (across || text[j - 1] != b'/') {
                    matched[j] = true;
                }
            }
        } else {
            for j in (1..=text.len()).rev() {
                let byte = text[j - 1];
                let fits = if token == b'?' {
                    byte != b'/'
                } else {
                    byte == token
                };
                matched[j] = matched[j - 1] && fits;
            }
            matched[0] = false;
        }
    }
    matched[text.len()]
}

#[cfg(test)]
#[path = "models_tests.rs"]
mod tests;
