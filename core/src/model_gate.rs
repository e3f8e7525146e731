//! The request-body gate for keys limited to some models: a sans-IO state
//! machine fed the body's chunks as they arrive, which says when they may
//! go on to Ollama.
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

/// What to do with the chunk just pushed (and those held before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateStep {
    /// Keep it, and everything held: the model is not known yet.
    Hold,
    /// Send everything held and this chunk on.
    Pass,
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
}

/// A watched member: one that names a model (by its index), or one the key
/// may not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Model(usize),
    Forbidden,
}

impl Members {
    fn refuse(&mut self, error: ProxyError, model: Option<String>) {
        self.refusal.get_or_insert(Refusal::new(error, model));
    }

    /// Counts a value of the watched member `field`; false (and refused)
    /// when it is a second one.
    fn first_value(&mut self, field: usize) -> bool {
        self.seen[field] = self.seen[field].saturating_add(1);
        if self.seen[field] > 1 {
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
                Some(Member::Model(field)) if self.first_value(field) => {
                    // An object or array where Go wants a string.
                    self.refuse(ProxyError::ModelRequired, None);
                }
                Some(Member::Forbidden) => self.refuse(ProxyError::ModelSourceNotAllowed, None),
                _ => {}
            }
        }
    }

    fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
        if depth == 1 {
            self.pending = raw.and_then(|raw| {
                let name = unquote(raw);
                let is = |f: &&str| member_matches(&name, f);
                match self.watched.models.iter().position(is) {
                    Some(i) => Some(Member::Model(i)),
                    None => self
                        .watched
                        .forbidden
                        .iter()
                        .any(is)
                        .then_some(Member::Forbidden),
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
                let allowed = self
                    .key
                    .policy
                    .models
                    .as_ref()
                    .is_none_or(|list| list.allows(&model));
                if allowed {
                    self.allowed = true;
                } else {
                    self.refuse(ProxyError::ModelNotAllowed, Some(model));
                }
            }
            // Longer than any model name, or not a string at all.
            _ => self.refuse(ProxyError::ModelRequired, None),
        }
    }
}

impl ModelGate {
    /// A gate for `key`'s list over the `watched` members; `required`: the
    /// endpoint takes a model, so a body without a readable one is refused.
    /// At most `hold_limit` bytes are held before the model is named.
    pub(crate) fn new(key: Arc<Key>, watched: Watched, required: bool, hold_limit: u64) -> Self {
        debug_assert!(watched.models.len() <= 4);
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
            },
            required,
            state: State::Holding,
            held: 0,
            hold_limit,
        }
    }

    /// Feeds the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) -> GateStep {
        match self.state {
            State::Settled => GateStep::Pass,
            State::Refused => self.refused(),
            State::Holding | State::Open => {
                let progress = self.scanner.feed(chunk, &mut self.reader);
                let step = self.decide(progress);
                if self.state == State::Holding {
                    self.held += chunk.len() as u64;
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

    /// Whether the gate still needs to see the chunks that follow (false
    /// once it has decided for the whole body, or refused).
    pub fn scanning(&self) -> bool {
        matches!(self.state, State::Holding | State::Open)
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
            None if self.reader.allowed => {
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
