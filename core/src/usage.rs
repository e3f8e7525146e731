//! What an LLM answer says about its usage, read as it streams past: token
//! counts, Ollama's durations, and when the first and last generated
//! content went by (for time to first token and tokens per second).
//!
//! One [`UsageMeter`] per answer, fed every chunk of the body as it passes
//! with the time it passed (microseconds since the request started: time is
//! an argument here), then told how the stream ended. It holds no part of
//! the body beyond the JSON scanner's bounded state, so memory per stream is
//! O(1) however long the answer, and `/api/generate`'s `context` array of
//! thousands of numbers is skipped, not held. Chunk boundaries may fall
//! anywhere: inside a number, a member name, between `data:` and its JSON.
//!
//! Read: Ollama's NDJSON stream (the final `"done": true` object) or single
//! object (`prompt_eval_count`, `eval_count`, `*_duration`); OpenAI-shaped
//! answers (`usage` in the answer, or in a stream's usage chunk); embeddings
//! (`prompt_eval_count`, `usage.prompt_tokens`). A `prompt_eval_count` that
//! is absent or 0 means Ollama reused a cached prompt: unknown, never 0.

use crate::json_scan::{Kind, Progress, Scanner, Visitor};

/// How the answer is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One JSON value, or one per line (Ollama's NDJSON).
    Json,
    /// Server-sent events whose `data:` lines hold JSON (OpenAI streams).
    Sse,
}

/// How a stream ended, as the adapter saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The whole body went to the client.
    Complete,
    /// The client left before the end.
    ClientGone,
    /// The origin's body broke off.
    OriginError,
}

/// What an answer's usage turned out to be. Counts the answer did not give
/// are `None` (unknown), never 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// Prompt tokens evaluated (`prompt_eval_count`, `usage.prompt_tokens`).
    pub prompt_tokens: Option<u64>,
    /// Tokens generated (`eval_count`, `usage.completion_tokens`).
    pub completion_tokens: Option<u64>,
    /// Microseconds from the request's start to the first generated content.
    pub first_token_us: Option<u64>,
    /// Generation speed: `eval_count` over `eval_duration` when Ollama gave
    /// them, else completion tokens over the time from the first to the
    /// last generated content.
    pub tokens_per_second: Option<f64>,
    /// Seconds Ollama spent loading the model (`load_duration`), when it
    /// shows a load ([`LOAD_SHOWN_NS`] or more).
    pub load_seconds: Option<f64>,
    /// The model the answer says it came from (its `model` member), lower
    /// case and at most [`MODEL_SHOWN`] characters.
    pub model: Option<String>,
    /// Why the counts are unknown, when they are: `client_gone`,
    /// `origin_error`, `error` (an in-stream error record), `cached_prompt`
    /// (prompt count absent or 0), `no_usage` (the answer had none).
    pub unknown: Option<&'static str>,
}

/// The most characters of an answer's model name kept.
pub const MODEL_SHOWN: usize = 100;

/// A `load_duration` at least this long means the model was loaded for this
/// request (a loaded model answers in a few milliseconds).
pub const LOAD_SHOWN_NS: u64 = 100_000_000;

/// Members the meter reads, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    Other,
    Model,
    Done,
    Error,
    Response,
    Thinking,
    Message,
    Content,
    ToolCalls,
    PromptEvalCount,
    EvalCount,
    LoadDuration,
    EvalDuration,
    Usage,
    PromptTokens,
    CompletionTokens,
    Choices,
    Delta,
    Text,
}

impl Name {
    fn of(raw: &[u8]) -> Self {
        match raw {
            b"model" => Self::Model,
            b"done" => Self::Done,
            b"error" => Self::Error,
            b"response" => Self::Response,
            b"thinking" => Self::Thinking,
            b"message" => Self::Message,
            b"content" => Self::Content,
            b"tool_calls" => Self::ToolCalls,
            b"prompt_eval_count" => Self::PromptEvalCount,
            b"eval_count" => Self::EvalCount,
            b"load_duration" => Self::LoadDuration,
            b"eval_duration" => Self::EvalDuration,
            b"usage" => Self::Usage,
            b"prompt_tokens" => Self::PromptTokens,
            b"completion_tokens" => Self::CompletionTokens,
            b"choices" => Self::Choices,
            b"delta" => Self::Delta,
            b"text" => Self::Text,
            _ => Self::Other,
        }
    }
}

/// The deepest level the meter looks at: `choices[].delta.content`.
const DEPTH: usize = 5;

/// What one JSON value (an NDJSON line, an SSE event, a whole answer) said.
#[derive(Debug, Default)]
struct Value {
    /// The member name pending at each depth, and what each open container
    /// is (the member it is the value of; `Other` for array elements).
    names: [Option<Name>; DEPTH + 1],
    containers: [Option<Name>; DEPTH + 1],
    arrays: [bool; DEPTH + 1],
    content: bool,
    done: bool,
    error: bool,
    model: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    load_ns: Option<u64>,
    eval_ns: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// Read `model` (the meter keeps the first one only).
    wants_model: bool,
}

impl Value {
    fn fresh(wants_model: bool) -> Self {
        Self {
            wants_model,
            ..Self::default()
        }
    }

    /// The member a value at `depth` is, when its container is an object.
    fn member(&self, depth: u32) -> Option<Name> {
        let d = depth as usize;
        if d > DEPTH || self.arrays[d] {
            None
        } else {
            self.names[d]
        }
    }

    fn container(&self, depth: u32) -> Option<Name> {
        self.containers.get(depth as usize).copied().flatten()
    }

    fn in_choice(&self, depth: u32) -> bool {
        // A choice is an element of `choices`: depth-1 array, itself the
        // value of `choices`.
        depth >= 2 && self.container(depth - 1) == Some(Name::Choices)
    }
}

fn number(raw: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(raw?).ok()?.parse().ok()
}

impl Visitor for Value {
    fn open(&mut self, kind: Kind, depth: u32, _at: u64) {
        let d = depth as usize;
        if d > DEPTH {
            return;
        }
        let parent = depth.saturating_sub(1);
        let member = if depth == 1 {
            None
        } else {
            self.member(parent)
        };
        self.containers[d] = Some(member.unwrap_or(Name::Other));
        self.arrays[d] = kind == Kind::Array;
        self.names[d] = None;
        // Tool calls are generated content too.
        if member == Some(Name::ToolCalls) {
            self.content = true;
        }
        // An error object (OpenAI's in-stream shape).
        if depth == 2 && member == Some(Name::Error) {
            self.error = true;
        }
    }

    fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
        if let Some(slot) = self.names.get_mut(depth as usize) {
            *slot = Some(raw.map_or(Name::Other, Name::of));
        }
    }

    fn scalar(&mut self, kind: Kind, depth: u32, raw: Option<&[u8]>) {
        let Some(member) = self.member(depth) else {
            return;
        };
        // Non-empty text (a string too long to capture is not empty).
        let text = kind == Kind::String && raw.is_none_or(|r| !r.is_empty());
        let container = self.container(depth);
        match (depth, container, member) {
            (1, _, Name::Done) => self.done = kind == Kind::True,
            (1, _, Name::Model) if kind == Kind::String && self.wants_model => {
                self.model = raw.map(crate::gojson::unquote);
            }
            (1, _, Name::Error) => self.error |= kind == Kind::String,
            (1, _, Name::Response | Name::Thinking) => self.content |= text,
            (1, _, Name::PromptEvalCount) => self.prompt_eval_count = number(raw),
            (1, _, Name::EvalCount) => self.eval_count = number(raw),
            (1, _, Name::LoadDuration) => self.load_ns = number(raw),
            (1, _, Name::EvalDuration) => self.eval_ns = number(raw),
            (2, Some(Name::Message), Name::Content | Name::Thinking) => self.content |= text,
            (2, Some(Name::Usage), Name::PromptTokens) => self.prompt_tokens = number(raw),
            (2, Some(Name::Usage), Name::CompletionTokens) => {
                self.completion_tokens = number(raw);
            }
            (3, _, Name::Text) if self.in_choice(3) => self.content |= text,
            (4, Some(Name::Delta | Name::Message), Name::Content) if self.in_choice(3) => {
                self.content |= text;
            }
            _ => {}
        }
    }
}

/// SSE line framing, fed byte by byte across chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// At the start of a line: how much of `data:` matched so far.
    Start(u8),
    /// After `data:`; `true` once the optional space was passed.
    Data(bool),
    /// A line that is not `data:` (or a value already read): skip it.
    Skip,
}

/// Reads one answer's usage as it streams. See the module docs.
#[derive(Debug)]
pub struct UsageMeter {
    framing: Framing,
    scanner: Scanner,
    value: Value,
    line: Line,
    /// Whether the scanner has seen a byte of the current value.
    started: bool,
    first_content_us: Option<u64>,
    last_content_us: Option<u64>,
    done: bool,
    error: bool,
    model: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    load_ns: Option<u64>,
    eval_ns: Option<u64>,
    eval_count: Option<u64>,
}

impl UsageMeter {
    /// A meter for an answer framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            scanner: Scanner::new(DEPTH as u32),
            value: Value::fresh(true),
            line: Line::Start(0),
            started: false,
            first_content_us: None,
            last_content_us: None,
            done: false,
            error: false,
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
            load_ns: None,
            eval_ns: None,
            eval_count: None,
        }
    }

    /// Feeds the next chunk of the body, which passed at `at_us`
    /// (microseconds since the request started).
    pub fn feed(&mut self, chunk: &[u8], at_us: u64) {
        match self.framing {
            Framing::Json => self.feed_json(chunk, at_us),
            Framing::Sse => self.feed_sse(chunk, at_us),
        }
    }

    /// JSON values one after another (whitespace between them); after
    /// bytes that are not JSON, the next line starts afresh.
    fn feed_json(&mut self, mut chunk: &[u8], at_us: u64) {
        while !chunk.is_empty() {
            if self.line == Line::Skip {
                match chunk.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        chunk = &chunk[nl + 1..];
                        self.line = Line::Start(0);
                    }
                    None => return,
                }
                continue;
            }
            if !self.started {
                let skip = chunk
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(chunk.len());
                chunk = &chunk[skip..];
                if chunk.is_empty() {
                    return;
                }
                self.started = true;
            }
            let before = self.scanner.position();
            match self.scanner.feed(chunk, &mut self.value) {
                Progress::NeedMore => return,
                Progress::Done(end) => {
                    let used = (end - before) as usize;
                    self.value_ended(at_us);
                    chunk = &chunk[used.min(chunk.len())..];
                }
                Progress::Invalid(at) => {
                    let used = (at.saturating_sub(before)) as usize;
                    chunk = &chunk[used.min(chunk.len())..];
                    self.reset();
                    self.line = Line::Skip;
                }
            }
        }
    }

    /// `data:` lines, each holding one JSON value (or `[DONE]`).
    fn feed_sse(&mut self, chunk: &[u8], at_us: u64) {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.line {
                Line::Start(n) => {
                    i += 1;
                    if b == b'\n' {
                        self.line = Line::Start(0);
                    } else if b == b"data:"[n as usize] {
                        self.line = if n == 4 {
                            Line::Data(false)
                        } else {
                            Line::Start(n + 1)
                        };
                    } else {
                        self.line = Line::Skip;
                    }
                }
                Line::Skip => {
                    let nl = chunk[i..].iter().position(|&c| c == b'\n');
                    match nl {
                        Some(nl) => {
                            i += nl + 1;
                            self.line = Line::Start(0);
                        }
                        None => i = chunk.len(),
                    }
                }
                Line::Data(spaced) => {
                    if !spaced && b == b' ' {
                        i += 1;
                        self.line = Line::Data(true);
                        continue;
                    }
                    self.line = Line::Data(true);
                    let end = chunk[i..]
                        .iter()
                        .position(|&c| c == b'\n' || c == b'\r')
                        .map_or(chunk.len(), |p| i + p);
                    let piece = &chunk[i..end];
                    if !piece.is_empty() {
                        match self.scanner.feed(piece, &mut self.value) {
                            Progress::Done(_) => {
                                self.value_ended(at_us);
                                self.line = Line::Skip;
                            }
                            Progress::Invalid(_) => {
                                self.reset();
                                self.line = Line::Skip;
                            }
                            Progress::NeedMore => {}
                        }
                    }
                    i = end;
                    if i < chunk.len() && self.line == Line::Data(true) {
                        // The line ended inside the value: it is not JSON.
                        self.reset();
                        self.line = Line::Skip;
                    }
                }
            }
        }
    }

    fn reset(&mut self) {
        self.scanner.restart();
        self.value = Value::fresh(self.model.is_none());
        self.started = false;
    }

    /// A whole value was read: take what it said.
    fn value_ended(&mut self, at_us: u64) {
        let v = std::mem::replace(&mut self.value, Value::fresh(false));
        if v.content {
            self.first_content_us.get_or_insert(at_us);
            self.last_content_us = Some(at_us);
        }
        self.error |= v.error;
        if self.model.is_none() {
            self.model = v.model.map(|m| {
                let mut m: String = m.chars().take(MODEL_SHOWN).collect();
                m.make_ascii_lowercase();
                m
            });
        }
        if v.done {
            self.done = true;
            self.prompt_tokens = v.prompt_eval_count.or(self.prompt_tokens);
            self.completion_tokens = v.eval_count.or(self.completion_tokens);
            self.eval_count = v.eval_count;
            self.load_ns = v.load_ns;
            self.eval_ns = v.eval_ns;
        }
        if v.prompt_tokens.is_some() || v.completion_tokens.is_some() {
            self.done = true;
            self.prompt_tokens = v.prompt_tokens.or(self.prompt_tokens);
            self.completion_tokens = v.completion_tokens.or(self.completion_tokens);
        }
        // Embeddings carry a prompt count and no `done`.
        if !v.done && v.prompt_eval_count.is_some() {
            self.done = true;
            self.prompt_tokens = v.prompt_eval_count;
        }
        self.scanner.restart();
        self.value.wants_model = self.model.is_none();
        self.started = false;
    }

    /// The answer ended: what its usage was.
    pub fn finish(mut self, ended: Ended) -> Usage {
        if self.framing == Framing::Json && self.started {
            // A value without a closing byte (a bare number) ends here.
            if let Progress::Done(_) = self.scanner.finish(&mut self.value) {
                let last = self.last_content_us.unwrap_or(0);
                self.value_ended(last);
            }
        }
        let first = self.first_content_us;
        let unknown = match ended {
            Ended::ClientGone => Some("client_gone"),
            Ended::OriginError => Some("origin_error"),
            Ended::Complete if self.error => Some("error"),
            Ended::Complete if !self.done => Some("no_usage"),
            Ended::Complete if self.prompt_tokens.is_none_or(|n| n == 0) => Some("cached_prompt"),
            Ended::Complete => None,
        };
        let counted = matches!(unknown, None | Some("cached_prompt"));
        let prompt_tokens = self.prompt_tokens.filter(|&n| n > 0 && counted);
        let completion_tokens = self.completion_tokens.filter(|_| counted);
        let tokens_per_second = match (self.eval_count, self.eval_ns) {
            (Some(count), Some(ns)) if ns > 0 && counted => Some(count as f64 * 1e9 / ns as f64),
            _ => match (completion_tokens, first, self.last_content_us) {
                (Some(count), Some(first), Some(last)) if last > first && count > 1 => {
                    Some((count - 1) as f64 * 1e6 / (last - first) as f64)
                }
                _ => None,
            },
        };
        Usage {
            model: self.model,
            prompt_tokens,
            completion_tokens,
            first_token_us: first,
            tokens_per_second,
            load_seconds: self
                .load_ns
                .filter(|&ns| ns >= LOAD_SHOWN_NS)
                .map(|ns| ns as f64 / 1e9),
            unknown,
        }
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
