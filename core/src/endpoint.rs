//! Which Ollama endpoint a request reaches, and where it names a model.
//!
//! Ollama's router matches the percent-decoded path, case-sensitively;
//! Go's `net/http` redirects `//`, `.` and `..` to the cleaned path, and gin
//! a trailing slash to the path without it. The classification here decodes
//! fully, ignores case and drops empty and dot segments, so it errs towards
//! treating a path as the endpoint it resembles (a spelling Ollama answers
//! with 404 or a redirect may be checked as that endpoint too; never the
//! other way round).

use std::borrow::Cow;

/// Model-management and account endpoints under `/api`, refused unless
/// allowed: pull, push, create, delete, copy and blobs change the models
/// on the box; me, signout and user read or change its ollama.com account.
const MANAGEMENT: [&str; 9] = [
    "pull", "push", "create", "delete", "copy", "blobs", "me", "signout", "user",
];

/// The members of a JSON body that matter to a key's model list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watched {
    /// Members that name a model: each one present must be in the list.
    pub(crate) models: &'static [&'static str],
    /// Which of `models` (bit `i` for `models[i]`) Ollama reads as a plain
    /// name (`model.ParseName`): the names a model is written or copied
    /// under, where `:local`, `:cloud` and a `-cloud` tag are ordinary
    /// tags and nothing is trimmed (copy, create's own name, push).
    pub(crate) plain: u8,
    /// Members that bring a model in another way (blob digests, a remote
    /// host): a key with a list may not send them at all.
    pub(crate) forbidden: &'static [&'static str],
}

const fn models(models: &'static [&'static str]) -> Watched {
    Watched {
        models,
        plain: 0,
        forbidden: &[],
    }
}

/// The inference routes.
pub(crate) const MODEL: Watched = models(&["model"]);
/// `/api/show`, pull, push and delete still read the deprecated `name`.
const MODEL_OR_NAME: Watched = models(&["model", "name"]);
/// `/api/create` names the new model and the one it starts `from` (which
/// Ollama pulls when it is not there); it can also assemble one from blob
/// digests or make an alias of a remote model.
const CREATE: Watched = Watched {
    models: &["model", "name", "from"],
    // `from` is read as a model to run (`parseAndValidateModelRef`).
    plain: 0b011,
    forbidden: &["files", "adapters", "draft_files", "remote_host"],
};
const COPY: Watched = Watched {
    models: &["source", "destination"],
    plain: 0b11,
    forbidden: &[],
};
/// `/api/push` reads its name as a plain name (unlike pull, show, delete).
const PUSH: Watched = Watched {
    models: &["model", "name"],
    plain: 0b11,
    forbidden: &[],
};

/// The listings whose answers are filtered to a key's models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// `/api/tags` and `/api/ps`: `{"models": [{"name", "model", …}]}`.
    Ollama,
    /// `/v1/models`: `{"data": [{"id", …}]}`.
    OpenAi,
}

/// Where a request names its model, if anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ModelSource {
    /// In these top-level members of a JSON body. `required`: the endpoint
    /// takes a model, so a body the proxy cannot read one from is refused.
    Body { watched: Watched, required: bool },
    /// Blobs (a digest and raw bytes): what `/api/create` can assemble a
    /// model from, so out of bounds for a key with a list.
    Blobs,
    /// The answer lists models.
    Listing(Listing),
    /// `/v1/models/{model}`: in the path, percent-decoded once.
    Path(String),
    /// `/v1/audio/transcriptions`: a multipart form whose `model` Go reads
    /// from the query string first.
    Query,
}

/// What the proxy needs to know about a request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Refused unless model management is allowed for the key.
    pub(crate) management: bool,
    /// Where the model is named.
    pub(crate) model: ModelSource,
    /// The answer is an LLM's (generation or embedding), whose usage is read.
    pub(crate) llm: bool,
    /// The request runs a model on the GPU, so it takes a slot under
    /// `max_concurrent`/`MAX_CONCURRENT`: every `llm` route, and those whose
    /// answers carry no token counts to read (Ollama runs a model for
    /// `/v1/audio/transcriptions` and `/v1/images/generations`/`edits`
    /// too).
    pub(crate) slot: bool,
    /// An OpenAI route that streams usage only when asked: the proxy asks.
    pub(crate) ask_usage: bool,
    /// Anthropic's Messages API (`/v1/messages`): a stream that breaks off
    /// ends with its `error` event, which Anthropic's clients raise.
    pub(crate) anthropic: bool,
    /// `/api/tags` or `/api/ps`: what its answer tells of a box's models.
    pub(crate) probe: Option<crate::backends::Probe>,
    /// The decoded path has a `.` or `..` segment that the forwarded path
    /// (its dots already resolved) still carries encoded — behind an
    /// encoded `/` (`..%2F`) or encoded twice. A server between the proxy
    /// and Ollama that decodes before it resolves dots (nginx under a base
    /// path does) would climb with it: out of the origin's base path, or
    /// back into it under a name the classification never saw.
    pub(crate) hidden_dots: bool,
}

/// Classifies a request path (the one forwarded: dot segments resolved).
pub(crate) fn classify(path: &str) -> Endpoint {
    let decoded = decode_fully(path.as_bytes());
    let hidden_dots = matches!(decoded, Cow::Owned(_))
        && decoded
            .split(|&b| b == b'/')
            .any(|s| s == b"." || s == b"..");
    let segments = normalize(&decoded);
    let words: Vec<&[u8]> = segments.iter().map(|s| &**s).collect();
    let management = matches!(
        words.as_slice(),
        [b"api", endpoint, ..] if MANAGEMENT.iter().any(|m| m.as_bytes() == *endpoint)
    );
    let body = |watched, required| ModelSource::Body { watched, required };
    let model = match words.as_slice() {
        [b"api", b"chat" | b"generate" | b"embed" | b"embeddings"] => body(MODEL, true),
        [b"api", b"show" | b"pull" | b"delete"] => body(MODEL_OR_NAME, true),
        [b"api", b"push"] => body(PUSH, true),
        [b"api", b"create"] => body(CREATE, true),
        [b"api", b"copy"] => body(COPY, true),
        [b"api", b"blobs", ..] => ModelSource::Blobs,
        [b"api", b"tags" | b"ps"] => ModelSource::Listing(Listing::Ollama),
        [b"v1", b"models"] => ModelSource::Listing(Listing::OpenAi),
        [b"v1", b"models", _] => ModelSource::Path(model_in_path(path)),
        [b"v1", b"chat", b"completions"]
        | [b"v1", b"completions" | b"embeddings" | b"responses" | b"messages"]
        | [b"v1", b"images", b"generations" | b"edits"] => body(MODEL, true),
        [b"v1", b"audio", b"transcriptions"] => ModelSource::Query,
        // Any other JSON body that names a model is checked too.
        _ => body(MODEL, false),
    };
    let llm = matches!(
        words.as_slice(),
        [b"api", b"chat" | b"generate" | b"embed" | b"embeddings"]
            | [b"v1", b"chat", b"completions"]
            | [
                b"v1",
                b"completions" | b"embeddings" | b"responses" | b"messages"
            ]
    );
    let slot = llm
        || matches!(
            words.as_slice(),
            [b"v1", b"audio", b"transcriptions"] | [b"v1", b"images", b"generations" | b"edits"]
        );
    let ask_usage = matches!(
        words.as_slice(),
        [b"v1", b"chat", b"completions"] | [b"v1", b"completions"]
    );
    let anthropic = matches!(words.as_slice(), [b"v1", b"messages"]);
    let probe = match words.as_slice() {
        [b"api", b"tags"] => Some(crate::backends::Probe::Models),
        [b"api", b"ps"] => Some(crate::backends::Probe::Loaded),
        _ => None,
    };
    Endpoint {
        management,
        model,
        llm,
        slot,
        ask_usage,
        anthropic,
        probe,
        hidden_dots,
    }
}

/// The last non-empty segment, percent-decoded once (as gin's router does).
fn model_in_path(path: &str) -> String {
    let last = path
        .split('/')
        .rev()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    String::from_utf8_lossy(&percent_decode(last.as_bytes())).into_owned()
}

/// A decoded path's segments, lowercased, with `.`/`..`/empty ones
/// resolved. (Copied only when a segment has capitals: this runs for every
/// request.)
fn normalize(decoded: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let mut out: Vec<Cow<'_, [u8]>> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s if s.iter().any(u8::is_ascii_uppercase) => {
                out.push(Cow::Owned(s.to_ascii_lowercase()));
            }
            s => out.push(Cow::Borrowed(s)),
        }
    }
    out
}

/// Percent-decodes until nothing changes (bounded), so double encoding
/// cannot hide a segment from the check.
fn decode_fully(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'%') {
        return Cow::Borrowed(input);
    }
    let mut current = input.to_vec();
    for _ in 0..4 {
        let next = percent_decode(&current);
        if next == current {
            break;
        }
        current = next;
    }
    Cow::Owned(current)
}

pub(crate) fn percent_decode(input: &[u8]) -> Vec<u8> {
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
#[path = "endpoint_tests.rs"]
mod tests;
