//! How Go's `encoding/json` reads a string and matches a member name, so
//! the proxy reads a request body the way Ollama will.
//!
//! Two rules matter for policy: escapes are decoded and invalid UTF-8 is
//! replaced (byte by byte, as Go's `utf8.DecodeRune` does) before anything
//! is compared, and a member name matches a struct field when it is equal
//! after Unicode simple case folding (`"MODEL"`, `"Model"` and
//! `"mod\u0065l"` all set `model`; `"\u017fource"`, with a long s, sets
//! `source`).

const REPLACEMENT: char = '\u{fffd}';

/// Decodes the raw bytes of a JSON string (between its quotes, already
/// checked by the scanner) the way Go's `unquote` does.
pub(crate) fn unquote(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\\' {
            let Some(&e) = raw.get(i + 1) else { break };
            i += 2;
            let c = match e {
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let Some(unit) = hex4(&raw[i..]) else { break };
                    i += 4;
                    if (0xd800..0xe000).contains(&unit) {
                        // Only a high surrogate followed by an escaped low
                        // one makes a character; anything else is U+FFFD and
                        // the next escape is read on its own.
                        let low = raw
                            .get(i..i + 2)
                            .filter(|p| *p == b"\\u")
                            .and_then(|_| hex4(&raw[i + 2..]))
                            .filter(|low| (0xdc00..0xe000).contains(low));
                        match low {
                            Some(low) if unit < 0xdc00 => {
                                i += 6;
                                let c = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                                char::from_u32(c).unwrap_or(REPLACEMENT)
                            }
                            _ => REPLACEMENT,
                        }
                    } else {
                        char::from_u32(unit).unwrap_or(REPLACEMENT)
                    }
                }
                other => char::from(other), // `"`, `\` and `/`
            };
            out.push(c);
        } else if b < 0x80 {
            out.push(char::from(b));
            i += 1;
        } else {
            let end = raw.len().min(i + 4);
            match std::str::from_utf8(&raw[i..end]) {
                Ok(s) => {
                    let c = s.chars().next().unwrap_or(REPLACEMENT);
                    out.push(c);
                    i += c.len_utf8();
                }
                Err(e) if e.valid_up_to() > 0 => {
                    let s = std::str::from_utf8(&raw[i..i + e.valid_up_to()]).unwrap_or("");
                    let c = s.chars().next().unwrap_or(REPLACEMENT);
                    out.push(c);
                    i += c.len_utf8();
                }
                Err(_) => {
                    out.push(REPLACEMENT);
                    i += 1;
                }
            }
        }
    }
    out
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.get(..4)?;
    let text = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(text, 16).ok()
}

/// Go's fold of one character, as far as an ASCII name can tell: ASCII
/// letters to upper case, and the two non-ASCII characters whose fold set
/// holds an ASCII letter (U+017F long s, U+212A Kelvin sign) to it. Every
/// other character folds to something that is not ASCII.
fn fold(c: char) -> char {
    match c {
        '\u{17f}' => 'S',
        '\u{212a}' => 'K',
        c => c.to_ascii_uppercase(),
    }
}

/// Whether Go would set a field named `name` (ASCII) from a member whose
/// decoded name is `member`.
pub(crate) fn member_matches(member: &str, name: &str) -> bool {
    let mut chars = member.chars();
    name.chars()
        .all(|n| chars.next().is_some_and(|c| fold(c) == fold(n)))
        && chars.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_as_go_does() {
        assert_eq!(unquote(br"mod\u0065l"), "model");
        assert_eq!(unquote(br#"a\"b\\c\/d\n"#), "a\"b\\c/d\n");
        assert_eq!(unquote(br"\ud83d\ude00"), "\u{1f600}");
        // A lone or reversed surrogate is U+FFFD; what follows stands alone.
        assert_eq!(unquote(br"\ud83dx"), "\u{fffd}x");
        assert_eq!(unquote(br"\ude00\ud83d"), "\u{fffd}\u{fffd}");
        assert_eq!(unquote(br"\ud83d\u0041"), "\u{fffd}A");
        assert_eq!(unquote(br"\ud83d\ud83d\ude00"), "\u{fffd}\u{1f600}");
    }

    #[test]
    fn invalid_utf8_is_replaced_byte_by_byte() {
        // Go's DecodeRune consumes one byte per error, unlike a maximal-subpart
        // replacement (which would give one U+FFFD for `e2 82`).
        assert_eq!(unquote(b"a\xe2\x82b"), "a\u{fffd}\u{fffd}b");
        assert_eq!(unquote(b"\xed\xa0\x80"), "\u{fffd}\u{fffd}\u{fffd}");
        assert_eq!(unquote(b"\xff"), "\u{fffd}");
        assert_eq!(unquote("café".as_bytes()), "café");
    }

    #[test]
    fn member_names_match_after_folding() {
        for member in ["model", "MODEL", "Model", "mOdEl"] {
            assert!(member_matches(member, "model"), "{member}");
        }
        assert!(member_matches("\u{17f}ource", "source"));
        assert!(member_matches("de\u{17f}tination", "destination"));
        for member in ["models", "mode", "model ", "m\u{f8}del", "", "modeł"] {
            assert!(!member_matches(member, "model"), "{member}");
        }
    }
}
