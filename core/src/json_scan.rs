//! A push scanner for one JSON value, fed a body's bytes as they arrive.
//!
//! It accepts exactly what Go's `encoding/json` accepts for the first value
//! of a stream (what Ollama's `json.Decoder` reads): RFC 8259 grammar, bytes
//! of any value inside strings (Go coerces invalid UTF-8 instead of refusing
//! it), at most 10,000 levels of nesting, and nothing read past the end of
//! the first value. It holds no part of the input beyond a bounded capture
//! of short keys and scalars; a visitor sees the structure as events with
//! absolute byte offsets. Memory is O(1) per body, apart from one bit per
//! open container.

/// Go's `maxNestingDepth`: deeper values are a syntax error there.
pub(crate) const MAX_DEPTH: u32 = 10_000;
/// The longest raw (still escaped) key or scalar handed to a visitor.
pub(crate) const CAPTURE_LIMIT: usize = 2048;

/// What a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// Receives the structure of the value. Depths count open containers: the
/// top-level object is opened at depth 1, its members' keys and scalar
/// values are reported at depth 1, and a container inside it opens at 2.
pub(crate) trait Visitor {
    /// A container opens; `at` is the offset of its opening byte.
    fn open(&mut self, _kind: Kind, _depth: u32, _at: u64) {}
    /// A container closes; `end` is the offset just past its closing byte.
    fn close(&mut self, _kind: Kind, _depth: u32, _end: u64) {}
    /// A member name in the object at `depth`: its raw bytes between the
    /// quotes (escapes not yet decoded, see [`unquote`]), or `None` when it
    /// is longer than [`CAPTURE_LIMIT`] or deeper than the capture depth.
    fn key(&mut self, _depth: u32, _raw: Option<&[u8]>) {}
    /// A scalar inside the container at `depth` (0 for a top-level
    /// scalar): for strings the raw bytes between the quotes, for numbers
    /// their text; `None` as for keys (and always for literals).
    fn scalar(&mut self, _kind: Kind, _depth: u32, _raw: Option<&[u8]>) {}
}

/// Where the scan stands after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The value is not complete yet.
    NeedMore,
    /// The value ended just before this offset; nothing after it was read.
    Done(u64),
    /// Not JSON Go would read: a syntax error at or before this offset, or
    /// the input ended early.
    Invalid(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    Hex(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A value must come (after `:`, after `,` in an array, at the top).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the container's close.
    After,
    Str {
        key: bool,
        esc: Esc,
    },
    Num(Num),
    Lit {
        kind: Kind,
        matched: u8,
    },
    Done(u64),
    Invalid(u64),
}

/// The scanner. Feed it chunks with [`Scanner::feed`], then call
/// [`Scanner::finish`] at the end of the body.
#[derive(Clone, Debug)]
pub(crate) struct Scanner {
    state: State,
    /// One bit per open container, innermost last: 1 object, 0 array.
    stack: Vec<u64>,
    depth: u32,
    /// Offset of the next byte to be fed.
    pos: u64,
    capture_depth: u32,
    capture: Vec<u8>,
    /// The current string or number is being captured (and still fits).
    capturing: bool,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn literal(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::True => b"true",
        Kind::False => b"false",
        _ => b"null",
    }
}

/// How many bytes at the start of `bytes` are plain string content: not a
/// quote, a backslash or a control byte. Eight bytes at a time while none
/// is (an LLM answer is mostly string bytes, and the Worker reads every one
/// of them in WASM).
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // Nonzero exactly when some byte of `w` is below `n` (n ≤ 0x80).
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let stop = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if stop != 0 {
            break;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - i)
}

impl Scanner {
    /// A scanner that captures keys and scalars in containers up to
    /// `capture_depth` deep (0 captures nothing but a top-level scalar).
    pub(crate) fn new(capture_depth: u32) -> Self {
        Self {
            state: State::Value,
            stack: Vec::new(),
            depth: 0,
            pos: 0,
            capture_depth,
            capture: Vec::new(),
            capturing: false,
        }
    }

    /// Starts over for a new value, keeping what it allocated (a meter
    /// reads a value per NDJSON line).
    pub(crate) fn restart(&mut self) {
        self.state = State::Value;
        self.stack.clear();
        self.depth = 0;
        self.pos = 0;
        self.capture.clear();
        self.capturing = false;
    }

    /// How many bytes have been fed (the offset of the next one).
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Where the scan stands.
    pub(crate) fn progress(&self) -> Progress {
        match self.state {
            State::Done(at) => Progress::Done(at),
            State::Invalid(at) => Progress::Invalid(at),
            _ => Progress::NeedMore,
        }
    }

    /// Scans `chunk`, the bytes that follow everything fed so far, and
    /// reports to `visitor`. Stops at the end of the value.
    pub(crate) fn feed(&mut self, chunk: &[u8], visitor: &mut impl Visitor) -> Progress {
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::Done(_) | State::Invalid(_) => break,
                State::Str { key, esc } => {
                    i = self.string(chunk, i, key, esc, visitor);
                }
                // The rest of a literal, when the chunk holds it, at once.
                State::Lit { kind, matched }
                    if chunk[i..].starts_with(&literal(kind)[matched as usize..]) =>
                {
                    i += literal(kind).len() - matched as usize;
                    self.end_scalar(kind, visitor);
                    self.value_done(self.pos + i as u64);
                }
                _ => {
                    let at = self.pos + i as u64;
                    if self.step(chunk[i], at, visitor) {
                        i += 1;
                    }
                }
            }
        }
        self.pos += i as u64;
        self.progress()
    }

    /// The body ended: a top-level number ends here; anything else still
    /// open is an unexpected end.
    pub(crate) fn finish(&mut self, visitor: &mut impl Visitor) -> Progress {
        match self.state {
            State::Num(n) if self.depth == 0 => {
                if matches!(n, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) {
                    self.end_scalar(Kind::Number, visitor);
                    self.state = State::Done(self.pos);
                } else {
                    self.state = State::Invalid(self.pos);
                }
            }
            State::Done(_) | State::Invalid(_) => {}
            _ => self.state = State::Invalid(self.pos),
        }
        self.progress()
    }

    fn fail(&mut self, at: u64) {
        self.state = State::Invalid(at);
    }

    fn top_is_object(&self) -> bool {
        let d = self.depth as usize - 1;
        self.stack[d / 64] >> (d % 64) & 1 == 1
    }

    fn push(&mut self, kind: Kind, at: u64, visitor: &mut impl Visitor) {
        if self.depth == MAX_DEPTH {
            return self.fail(at);
        }
        let d = self.depth as usize;
        if d / 64 == self.stack.len() {
            self.stack.push(0);
        }
        let bit = 1u64 << (d % 64);
        if kind == Kind::Object {
            self.stack[d / 64] |= bit;
        } else {
            self.stack[d / 64] &= !bit;
        }
        self.depth += 1;
        visitor.open(kind, self.depth, at);
        self.state = if kind == Kind::Object {
            State::ObjectFirst
        } else {
            State::ArrayFirst
        };
    }

    fn pop(&mut self, end: u64, visitor: &mut impl Visitor) {
        let kind = if self.top_is_object() {
            Kind::Object
        } else {
            Kind::Array
        };
        visitor.close(kind, self.depth, end);
        self.depth -= 1;
        self.value_done(end);
    }

    /// A value just ended at `end`: the container goes on, or the scan is done.
    fn value_done(&mut self, end: u64) {
        self.state = if self.depth == 0 {
            State::Done(end)
        } else {
            State::After
        };
    }

    fn begin_capture(&mut self) {
        self.capture.clear();
        self.capturing = self.depth <= self.capture_depth;
    }

    fn captured(&self) -> Option<&[u8]> {
        self.capturing.then_some(self.capture.as_slice())
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.capturing {
            if self.capture.len() + bytes.len() > CAPTURE_LIMIT {
                self.capturing = false;
            } else {
                self.capture.extend_from_slice(bytes);
            }
        }
    }

    fn end_scalar(&mut self, kind: Kind, visitor: &mut impl Visitor) {
        let depth = self.depth;
        let raw = match kind {
            Kind::String | Kind::Number => self.captured(),
            _ => None,
        };
        visitor.scalar(kind, depth, raw);
    }

    /// Starts a value at byte `b`; false when `b` cannot start one.
    fn start_value(&mut self, b: u8, at: u64, visitor: &mut impl Visitor) -> bool {
        match b {
            b'{' => self.push(Kind::Object, at, visitor),
            b'[' => self.push(Kind::Array, at, visitor),
            b'"' => {
                self.begin_capture();
                self.state = State::Str {
                    key: false,
                    esc: Esc::None,
                };
            }
            b'-' | b'0'..=b'9' => {
                self.begin_capture();
                self.keep(&[b]);
                self.state = State::Num(match b {
                    b'-' => Num::Minus,
                    b'0' => Num::Zero,
                    _ => Num::Int,
                });
            }
            b't' | b'f' | b'n' => {
                let kind = match b {
                    b't' => Kind::True,
                    b'f' => Kind::False,
                    _ => Kind::Null,
                };
                self.state = State::Lit { kind, matched: 1 };
            }
            _ => return false,
        }
        true
    }

    /// One byte outside a string. Returns false when the byte was not
    /// consumed (it ended a number and is looked at again).
    fn step(&mut self, b: u8, at: u64, visitor: &mut impl Visitor) -> bool {
        match self.state {
            State::Value => {
                if !is_space(b) && !self.start_value(b, at, visitor) {
                    self.fail(at);
                }
            }
            State::ArrayFirst => {
                if b == b']' {
                    self.pop(at + 1, visitor);
                } else if !is_space(b) && !self.start_value(b, at, visitor) {
                    self.fail(at);
                }
            }
            State::ObjectFirst | State::Key => {
                if b == b'"' {
                    self.begin_capture();
                    self.state = State::Str {
                        key: true,
                        esc: Esc::None,
                    };
                } else if b == b'}' && self.state == State::ObjectFirst {
                    self.pop(at + 1, visitor);
                } else if !is_space(b) {
                    self.fail(at);
                }
            }
            State::Colon => {
                if b == b':' {
                    self.state = State::Value;
                } else if !is_space(b) {
                    self.fail(at);
                }
            }
            State::After => match b {
                b',' => {
                    self.state = if self.top_is_object() {
                        State::Key
                    } else {
                        State::Value
                    };
                }
                b'}' if self.top_is_object() => self.pop(at + 1, visitor),
                b']' if !self.top_is_object() => self.pop(at + 1, visitor),
                b if is_space(b) => {}
                _ => self.fail(at),
            },
            State::Num(n) => return self.number(n, b, at, visitor),
            State::Lit { kind, matched } => {
                let word = literal(kind);
                if word[matched as usize] != b {
                    self.fail(at);
                } else if matched as usize + 1 == word.len() {
                    self.end_scalar(kind, visitor);
                    self.value_done(at + 1);
                } else {
                    self.state = State::Lit {
                        kind,
                        matched: matched + 1,
                    };
                }
            }
            State::Str { .. } | State::Done(_) | State::Invalid(_) => {}
        }
        true
    }

    fn number(&mut self, n: Num, b: u8, at: u64, visitor: &mut impl Visitor) -> bool {
        let next = match (n, b) {
            (Num::Minus, b'0') => Some(Num::Zero),
            (Num::Minus, b'1'..=b'9') => Some(Num::Int),
            (Num::Int, b'0'..=b'9') => Some(Num::Int),
            (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
            (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
            (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Some(Num::ExpDigits),
            _ => None,
        };
        if let Some(next) = next {
            self.keep(&[b]);
            self.state = State::Num(next);
            return true;
        }
        if !matches!(n, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) {
            self.fail(at);
            return true;
        }
        self.end_scalar(Kind::Number, visitor);
        self.value_done(at);
        // The byte after a number belongs to what follows it.
        false
    }

    /// Scans string bytes from `i`; returns where it stopped. The raw
    /// string is what earlier chunks left in the capture followed by this
    /// chunk's bytes from `i`: a string that starts and ends in one chunk
    /// is handed over from the chunk, without a copy.
    fn string(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        key: bool,
        mut esc: Esc,
        visitor: &mut impl Visitor,
    ) -> usize {
        let start = i;
        while i < chunk.len() {
            match esc {
                Esc::None => {
                    i += plain_run(&chunk[i..]);
                    let Some(&b) = chunk.get(i) else { break };
                    i += 1;
                    match b {
                        b'"' => {
                            self.string_ended(&chunk[start..i - 1], key, visitor);
                            if key {
                                // The colon mostly follows at once.
                                if chunk.get(i) == Some(&b':') {
                                    i += 1;
                                    self.state = State::Value;
                                }
                            } else {
                                self.value_done(self.pos + i as u64);
                            }
                            return i;
                        }
                        b'\\' => esc = Esc::Backslash,
                        _ => {
                            self.fail(self.pos + i as u64 - 1);
                            return i;
                        }
                    }
                }
                Esc::Backslash => {
                    let b = chunk[i];
                    i += 1;
                    match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => esc = Esc::None,
                        b'u' => esc = Esc::Hex(0),
                        _ => {
                            self.fail(self.pos + i as u64 - 1);
                            return i;
                        }
                    }
                }
                Esc::Hex(n) => {
                    let b = chunk[i];
                    i += 1;
                    if !b.is_ascii_hexdigit() {
                        self.fail(self.pos + i as u64 - 1);
                        return i;
                    }
                    esc = if n == 3 { Esc::None } else { Esc::Hex(n + 1) };
                }
            }
        }
        // The string goes on in the next chunk: keep this part.
        self.keep(&chunk[start..]);
        self.state = State::Str { key, esc };
        i
    }

    /// A string ended; `tail` is its raw bytes in the last chunk.
    fn string_ended(&mut self, tail: &[u8], key: bool, visitor: &mut impl Visitor) {
        let depth = self.depth;
        let raw = if self.capture.is_empty() {
            (self.capturing && tail.len() <= CAPTURE_LIMIT).then_some(tail)
        } else {
            self.keep(tail);
            self.captured()
        };
        if key {
            visitor.key(depth, raw);
            self.state = State::Colon;
        } else {
            visitor.scalar(Kind::String, depth, raw);
        }
    }
}

#[cfg(test)]
#[path = "json_scan_tests.rs"]
mod tests;
