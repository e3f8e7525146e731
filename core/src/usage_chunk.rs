//! Takes the usage chunk out of an OpenAI stream whose usage the proxy
//! asked for ([`INCLUDE_USAGE`](crate::model_gate::INCLUDE_USAGE)): the
//! client did not ask for it, so it gets the stream it would have got.
//!
//! Events are held until they end (a blank line), then passed on, or
//! dropped when one is that chunk: `choices` empty and `usage` an object.
//! Ollama sends one event per chunk, so nothing waits longer than its own
//! event; an event longer than [`MAX_EVENT`] is not a usage chunk and
//! passes on as it comes.

use crate::json_scan::{Kind, Progress, Scanner, Visitor};

/// The longest event held whole.
pub const MAX_EVENT: usize = 64 * 1024;

/// Filters one stream. See the module docs.
#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    /// The current event's bytes so far (unless it is passing through).
    event: Vec<u8>,
    /// The current event was too long to hold: it passes as it comes.
    through: bool,
    /// Bytes in the current line, whether the last byte was a CR, and
    /// whether a blank line just ended with one.
    line_len: usize,
    after_cr: bool,
    ending: bool,
    /// Usage chunks dropped, and their bytes.
    dropped: u32,
    dropped_bytes: u64,
}

impl UsageChunkFilter {
    /// A filter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next chunk of the stream: appends what may go to the client now
    /// to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if std::mem::take(&mut self.ending) {
                // A blank line ended with CR: a LF right after it belongs to
                // the event that ended.
                let end = if b == b'\n' { i + 1 } else { i };
                self.take(&chunk[start..end], out);
                self.end_event(out);
                start = end;
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' if std::mem::take(&mut self.after_cr) => {}
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    if std::mem::take(&mut self.line_len) > 0 {
                        continue;
                    }
                    if b == b'\r' {
                        self.ending = true;
                    } else {
                        self.take(&chunk[start..=i], out);
                        self.end_event(out);
                        start = i + 1;
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line_len += 1;
                }
            }
        }
        self.take(&chunk[start..], out);
        if !self.through && self.event.len() > MAX_EVENT {
            out.append(&mut self.event);
            self.through = true;
        }
    }

    /// The stream ended: whatever is held goes on as it is (a last event
    /// that ended is still checked).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.ending) {
            self.end_event(out);
        }
        out.append(&mut self.event);
    }

    /// How many usage chunks were taken out.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// How many bytes were taken out.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    fn take(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.through {
            out.extend_from_slice(bytes);
        } else {
            self.event.extend_from_slice(bytes);
        }
    }

    fn end_event(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.through) {
            return;
        }
        if is_usage_chunk(&self.event) {
            self.dropped += 1;
            self.dropped_bytes += self.event.len() as u64;
            self.event.clear();
        } else {
            out.append(&mut self.event);
        }
    }
}

/// Whether an event's `data:` holds `{"choices": [], "usage": {…}}` (and
/// whatever else, such as `id` and `model`).
fn is_usage_chunk(event: &[u8]) -> bool {
    let Some(data) = event
        .split(|&b| b == b'\n' || b == b'\r')
        .find_map(|line| line.strip_prefix(b"data:"))
    else {
        return false;
    };
    #[derive(Default)]
    struct Shape {
        member: Option<&'static str>,
        choices_open: bool,
        choices_empty: bool,
        usage: bool,
    }
    impl Visitor for Shape {
        fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
            if depth == 1 {
                self.member = match raw {
                    Some(b"choices") => Some("choices"),
                    Some(b"usage") => Some("usage"),
                    _ => None,
                };
            }
        }
        fn open(&mut self, kind: Kind, depth: u32, _at: u64) {
            match (depth, self.member, kind) {
                (2, Some("choices"), Kind::Array) => {
                    self.choices_open = true;
                    self.choices_empty = true;
                }
                (3, _, _) if self.choices_open => self.choices_empty = false,
                (2, Some("usage"), Kind::Object) => self.usage = true,
                _ => {}
            }
        }
        fn close(&mut self, _kind: Kind, depth: u32, _end: u64) {
            if depth == 2 {
                self.choices_open = false;
            }
        }
        fn scalar(&mut self, _kind: Kind, depth: u32, _raw: Option<&[u8]>) {
            if depth == 2 && self.choices_open {
                self.choices_empty = false;
            }
        }
    }
    let mut shape = Shape::default();
    let mut scanner = Scanner::new(1);
    let data = data.strip_prefix(b" ").unwrap_or(data);
    let done = matches!(scanner.feed(data, &mut shape), Progress::Done(_));
    done && shape.choices_empty && shape.usage
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STREAM: &[u8] = b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
data: [DONE]\n\n";
    const WITHOUT: &[u8] = b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: [DONE]\n\n";

    fn filter(chunks: &[&[u8]]) -> (Vec<u8>, u32) {
        let mut f = UsageChunkFilter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            f.push(chunk, &mut out);
        }
        f.finish(&mut out);
        (out, f.dropped())
    }

    #[test]
    fn the_usage_chunk_is_taken_out() {
        assert_eq!(filter(&[STREAM]), (WITHOUT.to_vec(), 1));
        // CRLF framing, and an event that merely mentions usage.
        let crlf = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r\n\r\ndata: {\"choices\":[{\"delta\":{}}],\"usage\":null}\r\n\r\n";
        let (out, dropped) = filter(&[crlf]);
        assert_eq!(dropped, 1);
        assert_eq!(
            out,
            b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\r\n\r\n"
        );
    }

    #[test]
    fn events_pass_as_soon_as_they_end() {
        let mut f = UsageChunkFilter::new();
        let mut out = Vec::new();
        f.push(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n",
            &mut out,
        );
        assert!(out.is_empty(), "held until the blank line");
        f.push(b"\n", &mut out);
        assert!(out.ends_with(b"}\n\n"));
    }

    #[test]
    fn a_long_event_passes_as_it_comes() {
        let long = format!("data: {{\"x\":\"{}\"}}\n\n", "a".repeat(MAX_EVENT + 10));
        let (out, dropped) = filter(&[long.as_bytes()]);
        assert_eq!((out, dropped), (long.into_bytes(), 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::test_cases::cases(256), ..ProptestConfig::default() })]

        /// Split anywhere: the same stream out, the usage chunk gone.
        #[test]
        fn splits_never_change_the_output(cuts in prop::collection::vec(0..STREAM.len(), 0..10)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.push(STREAM.len());
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts {
                chunks.push(&STREAM[at..cut]);
                at = cut;
            }
            prop_assert_eq!(filter(&chunks), (WITHOUT.to_vec(), 1));
        }

        /// Any bytes, split anywhere, give the output of the whole.
        #[test]
        fn arbitrary_streams_are_split_invariant(
            body in prop::collection::vec(prop::sample::select(b"data: {}[]\"choices\"usage:\r\n x".to_vec()), 0..300),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            bounds.sort_unstable();
            bounds.push(body.len());
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in bounds {
                chunks.push(&body[at..cut]);
                at = cut;
            }
            prop_assert_eq!(filter(&chunks), filter(&[&body]));
        }
    }
}
