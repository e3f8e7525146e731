//! What one JSON value of an LLM answer says (an NDJSON line, an SSE
//! event, a whole answer), read by the JSON scanner's visitor: the members
//! [`super::UsageMeter`] takes its counts, model and content times from.

use crate::json_scan::{Kind, Visitor};

/// Members the meter reads, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Name {
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
    InputTokens,
    OutputTokens,
    Choices,
    Delta,
    Text,
    PartialJson,
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
            b"input_tokens" => Self::InputTokens,
            b"output_tokens" => Self::OutputTokens,
            b"choices" => Self::Choices,
            b"delta" => Self::Delta,
            b"text" => Self::Text,
            b"partial_json" => Self::PartialJson,
            _ => Self::Other,
        }
    }
}

/// The deepest level the meter looks at: `choices[].delta.content`.
pub(super) const DEPTH: usize = 5;

/// What one JSON value (an NDJSON line, an SSE event, a whole answer) said.
#[derive(Debug, Default)]
pub(super) struct Value {
    /// The member name pending at each depth, and what each open container
    /// is (the member it is the value of; `Other` for array elements).
    names: [Option<Name>; DEPTH + 1],
    containers: [Option<Name>; DEPTH + 1],
    arrays: [bool; DEPTH + 1],
    pub(super) content: bool,
    pub(super) done: bool,
    pub(super) error: bool,
    pub(super) model: Option<String>,
    pub(super) prompt_eval_count: Option<u64>,
    pub(super) eval_count: Option<u64>,
    pub(super) load_ns: Option<u64>,
    pub(super) eval_ns: Option<u64>,
    pub(super) prompt_tokens: Option<u64>,
    pub(super) completion_tokens: Option<u64>,
    /// Read `model` (the meter keeps the first one only).
    pub(super) wants_model: bool,
}

impl Value {
    pub(super) fn fresh(wants_model: bool) -> Self {
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

    /// An element of a whole answer's `content` array: an Anthropic
    /// message's blocks (depth 3), a Responses answer's `output[].content`
    /// parts (depth 5). Not the same parts echoed by a stream's events
    /// (`response.output_item.done`, depth 4; `response.completed`, deeper
    /// than the meter looks), which come after the content did.
    fn in_content_part(&self, depth: u32) -> bool {
        let d = depth as usize;
        (d == 3 || d == 5) && self.arrays[d - 1] && self.container(depth - 1) == Some(Name::Content)
    }

    /// The whole answer inside a stream's event: Anthropic's
    /// `message_start` `message`, the Responses API's `response`.
    fn in_answer(&self, depth: u32) -> bool {
        depth == 2 && matches!(self.container(2), Some(Name::Message | Name::Response))
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
        // An error object (OpenAI's in-stream shape, Anthropic's `error`
        // event), or the failed answer of a Responses stream
        // (`response.failed`: `response.error`).
        if member == Some(Name::Error) && (depth == 2 || (depth == 3 && self.in_answer(2))) {
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
            (2, _, Name::Model)
                if kind == Kind::String && self.wants_model && self.in_answer(2) =>
            {
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
            // Anthropic's Messages and OpenAI's Responses: `usage` of the
            // answer, of Anthropic's `message_delta` (the counts Ollama
            // measured), or of the answer a Responses stream ends with
            // (`response.completed`). Not `message_start`'s: Ollama
            // estimates the prompt there, and a stream that ends without
            // its `message_delta` has no counts.
            (2, Some(Name::Usage), Name::InputTokens) => self.prompt_tokens = number(raw),
            (2, Some(Name::Usage), Name::OutputTokens) => self.completion_tokens = number(raw),
            (3, Some(Name::Usage), Name::InputTokens)
                if self.container(2) == Some(Name::Response) =>
            {
                self.prompt_tokens = number(raw);
            }
            (3, Some(Name::Usage), Name::OutputTokens)
                if self.container(2) == Some(Name::Response) =>
            {
                self.completion_tokens = number(raw);
            }
            // Generated content: a Responses stream's `delta` text, an
            // Anthropic stream's `delta`, an answer's content blocks.
            (1, _, Name::Delta) => self.content |= text,
            (2, Some(Name::Delta), Name::Text | Name::Thinking | Name::PartialJson) => {
                self.content |= text;
            }
            (_, _, Name::Text | Name::Thinking) if self.in_content_part(depth) => {
                self.content |= text;
            }
            (3, _, Name::Text) if self.in_choice(3) => self.content |= text,
            (4, Some(Name::Delta | Name::Message), Name::Content) if self.in_choice(3) => {
                self.content |= text;
            }
            _ => {}
        }
    }
}
