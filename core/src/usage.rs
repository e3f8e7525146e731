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
//! (`prompt_eval_count`, `usage.prompt_tokens`); Anthropic's Messages and
//! OpenAI's Responses (`usage.input_tokens`/`output_tokens` in the answer,
//! or in the stream's `message_start`/`message_delta` and
//! `response.completed` events; the last count given wins). A `prompt_eval_count` that
//! is absent or 0 means Ollama reused a cached prompt: unknown, never 0.

use crate::json_scan::{Progress, Scanner};

use value::{Value, DEPTH};

#[path = "usage_value.rs"]
mod value;

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
