//! Model allowlists: a requested name is read the way Ollama resolves it,
//! then matched against globs written in the form `ollama list` shows.
//!
//! Ollama trims the name, drops a `scheme://`, fills in the default host
//! (`registry.ollama.ai`), namespace (`library`) and tag (`latest`), strips
//! a `:local` suffix, and finds the model case-insensitively. So
//! `LLAMA3.2`, `library/llama3.2`, `llama3.2:` and
//! `registry.ollama.ai/library/llama3.2:latest` are all `llama3.2:latest`
//! here, and a list entry `llama3.2` (no tag) means `llama3.2:latest`.
//!
//! Cloud models (`…:cloud`, or a tag ending in `-cloud`) run on ollama.com
//! under the box owner's account. They only match entries that are cloud
//! references themselves (`gpt-oss:120b-cloud`, `*:cloud`), never a plain
//! wildcard: `*` means every model on the box.

use std::fmt;

const DEFAULT_HOST: &str = "registry.ollama.ai";
const DEFAULT_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";

/// A model name in the form `ollama list` shows, lower case, and whether
/// it is a cloud reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModelName {
    display: String,
    cloud: bool,
}

impl ModelName {
    /// Reads a requested model name as Ollama resolves it.
    pub(crate) fn resolve(requested: &str) -> Self {
        let (base, cloud) = split_source(requested);
        Self {
            display: shortest(&base, true),
            cloud,
        }
    }
}

/// Lower case, trimmed, without a `scheme://`, a `:local` or `:cloud`
/// suffix or a `-cloud` tag suffix; and whether it named a cloud model.
fn split_source(name: &str) -> (String, bool) {
    let mut name = name.trim().to_ascii_lowercase();
    if let Some(at) = name.find("://") {
        name.drain(..at + 3);
    }
    if let Some(base) = name.strip_suffix(":cloud") {
        return (base.to_owned(), true);
    }
    if let Some(base) = name.strip_suffix(":local") {
        return (base.to_owned(), false);
    }
    let tag_start = tag_colon(&name);
    match tag_start {
        Some(colon) if name[colon + 1..].ends_with("-cloud") => {
            let len = name.len() - "-cloud".len();
            name.truncate(len);
            (name, true)
        }
        _ => (name, false),
    }
}

/// The `:` that starts the tag: the last one after the last `/`.
fn tag_colon(name: &str) -> Option<usize> {
    let slash = name.rfind('/').map_or(0, |s| s + 1);
    name[slash..].rfind(':').map(|c| slash + c)
}

/// Ollama's `DisplayShortest` of a (lower-case) name: default host and
/// namespace dropped, the tag always present. `add_tag` says whether a
/// missing or empty tag becomes `latest` (not for a glob that may cover it).
fn shortest(name: &str, add_tag: bool) -> String {
    let (path, tag) = match tag_colon(name) {
        Some(colon) => (&name[..colon], Some(&name[colon + 1..])),
        None => (name, None),
    };
    let (rest, model) = path.rsplit_once('/').unwrap_or(("", path));
    let (host, namespace) = rest.rsplit_once('/').unwrap_or(("", rest));
    let host = if host.is_empty() { DEFAULT_HOST } else { host };
    let namespace = if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    };
    let mut out = String::with_capacity(name.len() + 8);
    if host != DEFAULT_HOST {
        out.push_str(host);
        out.push('/');
        out.push_str(namespace);
        out.push('/');
    } else if namespace != DEFAULT_NAMESPACE {
        out.push_str(namespace);
        out.push('/');
    }
    out.push_str(model);
    match tag {
        Some(tag) if !tag.is_empty() => {
            out.push(':');
            out.push_str(tag);
        }
        _ if add_tag => {
            out.push(':');
            out.push_str(DEFAULT_TAG);
        }
        Some(_) => out.push(':'),
        None => {}
    }
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
}

impl fmt::Display for PatternProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
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
    /// Adds an entry: an exact name or a glob (`*` any run of characters,
    /// `?` one). An entry without a wildcard and without a tag means its
    /// `:latest`; one with a wildcard covers whatever the wildcard does.
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
        let (base, cloud) = split_source(trimmed);
        let wildcard = base.contains(['*', '?']);
        self.patterns.push(Pattern {
            written: written.to_owned(),
            glob: ModelName {
                display: shortest(&base, !wildcard),
                cloud,
            },
        });
        Ok(())
    }

    /// Whether `requested` (a model name as a client sent it) is allowed.
    pub(crate) fn allows(&self, requested: &str) -> bool {
        let name = ModelName::resolve(requested);
        self.patterns.iter().any(|p| {
            p.glob.cloud == name.cloud && glob(p.glob.display.as_bytes(), name.display.as_bytes())
        })
    }

    /// The entries as written, for `check-config`.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.written.as_str())
    }
}

/// `*` matches any run of bytes (`/` and `:` included), `?` one byte.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> ModelList {
        let mut list = ModelList::default();
        for entry in entries {
            list.push(entry).unwrap();
        }
        list
    }

    #[test]
    fn names_resolve_as_ollama_does() {
        for same in [
            "llama3.2",
            "llama3.2:latest",
            "LLAMA3.2",
            " llama3.2 ",
            "llama3.2:",
            "library/llama3.2",
            "registry.ollama.ai/library/llama3.2:latest",
            "https://registry.ollama.ai/library/llama3.2",
            "Registry.Ollama.AI/Library/Llama3.2:LATEST",
            "llama3.2:local",
        ] {
            assert_eq!(
                ModelName::resolve(same).display,
                "llama3.2:latest",
                "{same}"
            );
        }
        assert_eq!(ModelName::resolve("me/m").display, "me/m:latest");
        assert_eq!(
            ModelName::resolve("hf.co/Org/Model-GGUF:Q4_K_M").display,
            "hf.co/org/model-gguf:q4_k_m"
        );
        let cloud = ModelName::resolve("gpt-oss:120b-cloud");
        assert_eq!(
            (cloud.display.as_str(), cloud.cloud),
            ("gpt-oss:120b", true)
        );
        let cloud = ModelName::resolve("gpt-oss:120b:cloud");
        assert_eq!(
            (cloud.display.as_str(), cloud.cloud),
            ("gpt-oss:120b", true)
        );
        assert!(!ModelName::resolve("my-cloud").cloud);
    }

    #[test]
    fn exact_entries_mean_latest_when_untagged() {
        let l = list(&["llama3.2", "qwen3:8b"]);
        assert!(l.allows("llama3.2"));
        assert!(l.allows("llama3.2:latest"));
        assert!(l.allows("Llama3.2"));
        assert!(!l.allows("llama3.2:1b"));
        assert!(l.allows("qwen3:8b"));
        assert!(!l.allows("qwen3"));
        assert!(!l.allows("qwen3:8b-instruct"));
        assert!(!l.allows("me/llama3.2"));
    }

    #[test]
    fn globs_cover_tags_and_names() {
        let l = list(&["llama3.2:*", "qwen3*", "hf.co/*"]);
        for ok in [
            "llama3.2",
            "llama3.2:1b",
            "LLAMA3.2:3B",
            "qwen3",
            "qwen3:8b",
            "qwen3-coder:30b",
            "hf.co/org/model:q4",
        ] {
            assert!(l.allows(ok), "{ok}");
        }
        for refused in ["llama3.1", "llama3.2-vision", "qwen2.5", "me/qwen3", ""] {
            assert!(!l.allows(refused), "{refused}");
        }
        assert!(list(&["*"]).allows("anything/at:all"));
        assert!(list(&["llama3.?:1b"]).allows("llama3.2:1b"));
    }

    #[test]
    fn cloud_models_need_cloud_entries() {
        let everything = list(&["*"]);
        assert!(!everything.allows("gpt-oss:120b-cloud"));
        assert!(!everything.allows("gpt-oss:cloud"));
        let cloud = list(&["gpt-oss:120b-cloud"]);
        assert!(cloud.allows("gpt-oss:120b-cloud"));
        assert!(cloud.allows("gpt-oss:120b:cloud"));
        assert!(!cloud.allows("gpt-oss:120b"));
        assert!(!cloud.allows("gpt-oss:20b-cloud"));
        assert!(list(&["*:cloud"]).allows("deepseek-v3.1:671b-cloud"));
    }

    #[test]
    fn bad_entries_are_refused() {
        let mut l = ModelList::default();
        assert_eq!(l.push(" "), Err(PatternProblem::Empty));
        assert_eq!(l.push("llama[3]"), Err(PatternProblem::BadChar('[')));
        assert_eq!(l.push("llama 3"), Err(PatternProblem::BadChar(' ')));
        assert_eq!(l.push("lläma"), Err(PatternProblem::BadChar('ä')));
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(glob(b"*:latest", b"m:latest"));
        assert!(!glob(b"a*b", b"axxbx"));
        assert!(glob(b"**", b""));
        assert!(!glob(b"?", b""));
    }
}
