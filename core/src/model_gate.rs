//! The request-body gate: a sans-IO state machine fed the body's chunks as
//! they arrive, which says when they may go on to Ollama. For a key limited
//! to some models it holds the body until the model is read and allowed; on
//! the OpenAI streaming routes it also asks for the stream's usage (see
//! [`INCLUDE_USAGE`]) for every key.
//!
//! It reads the body as Ollama's `json.Decoder` will (see [`crate::gojson`]
//! and [`crate::json_scan`]): the watched top-level members (`model`, and on
//! some routes `name`, `from`, `source`, `destination`) in any case or
//! escaping, anywhere in the first JSON value. Chunks are held until a
//! watched member has been read and allowed; then they pass, and the rest of
//! the value is still scanned for a second naming (which Go would take as
//! the last word). The byte that completes the value is only ever passed
//! once the whole value has been checked, and Ollama acts on nothing before
//! that byte, so a later refusal aborts the upload in time. What follows
//! the value is never read by Ollama, nor scanned here.

use std::sync::Arc;

use crate::auth::Key;
use crate::endpoint::Watched;
use crate::error::ProxyError;
use crate::gojson::{member_matches, unquote};
use crate::json_scan::{Kind, Progress, Scanner, Visitor};

/// The most a gate holds before the model is named: bodies that name it
/// later are refused (`model_named_too_late`), so a key with a list cannot
/// make the proxy hold up to the whole body limit per request.
pub const MAX_HELD_BYTES: u64 = 32 * 1024 * 1024;

/// What the gate writes into a streamed OpenAI request that did not ask
/// for its usage, just before the closing brace: then every stream is
/// counted (the usage chunk it brings is taken out of the answer again).
pub const INCLUDE_USAGE: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// `chunk` with [`INCLUDE_USAGE`] put in at byte `at`, as
/// [`GateStep::PassWithUsage`] asks.
pub fn with_usage(chunk: &[u8], at: usize) -> Vec<u8> {
    let mut edited = Vec::with_capacity(chunk.len() + INCLUDE_USAGE.len());
    edited.extend_from_slice(&chunk[..at]);
    edited.extend_from_slice(INCLUDE_USAGE);
    edited.extend_from_slice(&chunk[at..]);
    edited
}

/// What to do with the chunk just pushed (and those held before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateStep {
    /// Keep it, and everything held: the model is not known yet.
    Hold,
    /// Send everything held and this chunk on.
    Pass,
    /// Send everything held and this chunk on with [`INCLUDE_USAGE`] put in
    /// at byte `at` of this chunk (before the object's closing brace).
    PassWithUsage {
        /// Where in this chunk the members go.
        at: usize,
    },
    /// Refuse the request: answer with [`Refusal`] (natively, abort the
    /// upload if some of it was already sent).
    Refuse(Refusal),
}

/// Why a request was refused for its model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    error: ProxyError,
    model: Option<String>,
}

impl Refusal {
    pub(crate) fn new(error: ProxyError, model: Option<String>) -> Self {
        Self { error, model }
    }

    /// The error: `model_not_allowed`, `model_required` or `duplicate_model`.
    pub fn error(&self) -> ProxyError {
        self.error
    }

    /// The model the client asked for, when one was refused.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No allowed model read yet: chunks are held.
    Holding,
    /// An allowed model read; the value is still being scanned.
    Open,
    /// Decided for the whole body: the rest passes unscanned.
    Settled,
    Refused,
}

/// The gate for one request body.
#[derive(Debug)]
pub struct ModelGate {
    scanner: Scanner,
    reader: Members,
    required: bool,
    state: State,
    /// Bytes pushed while holding, and the most that may be.
    held: u64,
    hold_limit: u64,
    /// Ask for the stream's usage when the request streams without it.
    usage: bool,
    /// Whether it did.
    asked: bool,
    /// The key has a model list (else the gate holds only to route).
    listed: bool,
}

/// Reads the watched members of the top-level object.
#[derive(Debug)]
struct Members {
    key: Arc<Key>,
    watched: Watched,
    /// How often each model member was seen.
    seen: [u8; 4],
    /// The watched member whose value comes next.
    pending: Option<Member>,
    allowed: bool,
    refusal: Option<Refusal>,
    top: Option<Kind>,
    /// Watch `stream` and `stream_options` too.
    usage: bool,
    /// The last `stream` value Go would keep, and whether `stream_options`
    /// appears at all.
    stream: Option<bool>,
    stream_options: bool,
    /// Whether the key has a model list: only then are members refused.
    listed: bool,
    /// The first model named (by the first watched member read), which
    /// picks the Ollama box when there are several.
    named: Option<String>,
}

/// A watched member: one that names a model (by its index), one the key may
/// not send, or the two that say whether a stream's usage is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Model(usize),
    Forbidden,
    Stream,
    StreamOptions,
}

impl Members {
    fn refuse(&mut self, error: ProxyError, model: Option<String>) {
        self.refusal.get_or_insert(Refusal::new(error, model));
    }

    /// Counts a value of the watched member `field`; false (and refused)
    /// when it is a second one.
    fn first_value(&mut self, field: usize) -> bool {
        self.seen[field] = self.seen[field].saturating_add(1);
        if self.seen[field] > 1 && self.listed {
            self.refuse(ProxyError::DuplicateModel, None);
            return false;
        }
        true
    }
}

impl Visitor for Members {
    fn open(&mut self, kind: Kind, depth: u32, _at: u64) {
        if depth == 1 {
            self.top = Some(kind);
        } else if depth == 2 {
            match self.pending.take() {
                Some(Member::Model(field)) if self.first_value(field) && self.listed => {
                    // An object or array where Go wants a string.
                    self.refuse(ProxyError::ModelRequired, None);
                }
                Some(Member::Forbidden) => self.refuse(ProxyError::ModelSourceNotAllowed, None),
                Some(Member::StreamOptions) => self.stream_options = true,
                _ => {}
            }
        }
    }

    fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
        if depth == 1 {
            self.pending = raw.and_then(|raw| {
                let name = unquote(raw);
                let is = |f: &&str| member_matches(&name, f);
                if let Some(i) = self.watched.models.iter().position(is) {
                    Some(Member::Model(i))
                } else if self.watched.forbidden.iter().any(is) {
                    Some(Member::Forbidden)
                } else if self.usage && is(&"stream") {
                    Some(Member::Stream)
                } else if self.usage && is(&"stream_options") {
                    Some(Member::StreamOptions)
                } else {
                    None
                }
            });
        }
    }

    fn scalar(&mut self, kind: Kind, depth: u32, raw: Option<&[u8]>) {
        if depth == 0 {
            self.top = Some(kind);
            return;
        }
        let field = match self.pending.take().filter(|_| depth == 1) {
            Some(Member::Model(field)) => field,
            // Go leaves the field as it was: nothing sent.
            Some(Member::Forbidden) if kind == Kind::Null => return,
            Some(Member::Forbidden) => {
                return self.refuse(ProxyError::ModelSourceNotAllowed, None);
            }
            // Go keeps the last boolean; `null` leaves it as it was.
            Some(Member::Stream) => {
                match kind {
                    Kind::True => self.stream = Some(true),
                    Kind::False => self.stream = Some(false),
                    _ => {}
                }
                return;
            }
            Some(Member::StreamOptions) => {
                self.stream_options = true;
                return;
            }
            None => return,
        };
        if !self.first_value(field) {
            return;
        }
        match (kind, raw) {
            // Go leaves the field as it was.
            (Kind::Null, _) => {}
            (Kind::String, Some(raw)) => {
                let model = unquote(raw);
                if self.named.is_none() {
                    self.named = Some(model.clone());
                }
                let plain = self.watched.plain & (1 << field) != 0;
                let allowed = self.key.policy.models.as_ref().is_none_or(|list| {
                    if plain {
                        list.allows_plain(&model)
                    } else {
                        list.allows(&model)
                    }
                });
                if allowed {
                    self.allowed = true;
                } else {
                    self.refuse(ProxyError::ModelNotAllowed, Some(model));
                }
            }
            // Longer than any model name, or not a string at all.
            _ if self.listed => self.refuse(ProxyError::ModelRequired, None),
            // Ollama will answer that itself.
            _ => {}
        }
    }
}

impl ModelGate {
    /// A gate for `key` over the `watched` members. With a model list, the
    /// body is held until an allowed model is read (at most `hold_limit`
    /// bytes), and `required` (the endpoint takes a model) refuses a body
    /// without a readable one. `usage`: ask a stream for its usage.
    /// `route`: there are several Ollama boxes, so the body is held until
    /// its model is read whatever the key (without a list: never refused,
    /// and a body that has not named it within `hold_limit` goes on
    /// without).
    pub(crate) fn new(
        key: Arc<Key>,
        watched: Watched,
        required: bool,
        hold_limit: u64,
        usage: bool,
        route: bool,
    ) -> Self {
        debug_assert!(watched.models.len() <= 4);
        let listed = key.policy.models.is_some();
        // Without a list no member is checked: the gate only asks for usage
        // (and reads the model to route by).
        let watched = match (listed, route) {
            (true, _) => watched,
            (false, true) => Watched {
                forbidden: &[],
                ..watched
            },
            (false, false) => Watched {
                models: &[],
                plain: 0,
                forbidden: &[],
            },
        };
        Self {
            scanner: Scanner::new(1),
            reader: Members {
                key,
                watched,
                seen: [0; 4],
                pending: None,
                allowed: false,
                refusal: None,
                top: None,
                usage,
                stream: None,
                stream_options: false,
                listed,
                named: None,
            },
            required: required && listed,
            state: if listed || route {
                State::Holding
            } else {
                State::Open
            },
            held: 0,
            hold_limit,
            usage,
            asked: false,
            listed,
        }
    }

    /// The model the body names (the first naming read), once the gate has
    /// let it through: what picks the Ollama box among several.
    pub fn model(&self) -> Option<&str> {
        self.reader.named.as_deref()
    }

    /// Whether the gate put [`INCLUDE_USAGE`] into the body (so the answer's
    /// usage chunk is the proxy's, to be taken out again).
    pub fn asked_for_usage(&self) -> bool {
        self.asked
    }

    /// Feeds the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) -> GateStep {
        match self.state {
            State::Settled => GateStep::Pass,
            State::Refused => self.refused(),
            State::Holding | State::Open => {
                let before = self.scanner.position();
                let progress = self.scanner.feed(chunk, &mut self.reader);
                let step = match self.decide(progress) {
                    // The closing brace is the last byte of the value.
                    GateStep::Pass if self.wants_usage(progress) => {
                        let Progress::Done(end) = progress else {
                            unreachable!("checked by wants_usage")
                        };
                        self.asked = true;
                        GateStep::PassWithUsage {
                            at: (end - 1 - before) as usize,
                        }
                    }
                    step => step,
                };
                if self.state == State::Holding {
                    self.held += chunk.len() as u64;
                    if self.held > self.hold_limit && !self.listed {
                        // Held only to route: it goes on, to any box.
                        self.state = State::Settled;
                        return GateStep::Pass;
                    }
                    if self.held > self.hold_limit {
                        self.reader.refuse(ProxyError::ModelNamedTooLate, None);
                        self.state = State::Refused;
                        return self.refused();
                    }
                }
                step
            }
        }
    }

    /// The body ended. Never [`GateStep::Hold`].
    pub fn finish(&mut self) -> GateStep {
        match self.state {
            State::Settled => GateStep::Pass,
            State::Refused => self.refused(),
            State::Holding | State::Open => {
                let progress = self.scanner.finish(&mut self.reader);
                self.decide(progress)
            }
        }
    }

    /// Whether the body may still grow (by [`INCLUDE_USAGE`]): while it
    /// may, its length is not known.
    pub fn may_grow(&self) -> bool {
        self.usage && !self.asked && self.scanning()
    }

    /// Whether the gate still needs to see the chunks that follow (false
    /// once it has decided for the whole body, or refused).
    pub fn scanning(&self) -> bool {
        matches!(self.state, State::Holding | State::Open)
    }

    /// The object just completed, streams, and did not ask for its usage.
    fn wants_usage(&self, progress: Progress) -> bool {
        self.usage
            && matches!(progress, Progress::Done(_))
            && self.reader.top == Some(Kind::Object)
            && self.reader.stream == Some(true)
            && !self.reader.stream_options
    }

    fn refused(&self) -> GateStep {
        let refusal = self
            .reader
            .refusal
            .clone()
            .unwrap_or_else(|| Refusal::new(ProxyError::ModelRequired, None));
        GateStep::Refuse(refusal)
    }

    fn decide(&mut self, progress: Progress) -> GateStep {
        if self.reader.refusal.is_some() {
            self.state = State::Refused;
            return self.refused();
        }
        let object = self.reader.top.is_none_or(|kind| kind == Kind::Object);
        let decided = match progress {
            Progress::NeedMore if object => None,
            // Not an object (Go cannot read a request from it) or not JSON
            // Go would read: a model can only be missing.
            Progress::NeedMore | Progress::Invalid(_) => Some(false),
            Progress::Done(_) => Some(self.reader.allowed),
        };
        match decided {
            // Allowed, or without a model list nothing to hold for.
            None if self.reader.allowed || self.state == State::Open => {
                self.state = State::Open;
                GateStep::Pass
            }
            None => GateStep::Hold,
            Some(false) if self.required => {
                self.reader.refuse(ProxyError::ModelRequired, None);
                self.state = State::Refused;
                self.refused()
            }
            Some(_) => {
                self.state = State::Settled;
                GateStep::Pass
            }
        }
    }
}

#[cfg(test)]
#[path = "model_gate_tests.rs"]
mod tests;
