//! Just enough JSON writing for the proxy's own small response bodies.

use std::fmt::Write;

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                // Infallible: writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `n` in decimal (for text on every request: `write!` costs
/// several times as much).
pub fn push_u64(out: &mut String, n: u64) {
    out.extend(Digits::of(n).as_bytes().iter().map(|&d| char::from(d)));
}

/// A number's decimal digits, written on the stack.
#[derive(Debug, Clone, Copy)]
pub struct Digits {
    digits: [u8; 20],
    at: usize,
}

impl Digits {
    /// `n`'s digits.
    #[must_use]
    pub fn of(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, at }
    }

    /// The digits, as ASCII.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.at..]
    }
}

#[cfg(test)]
mod tests {
    use super::{push_str, push_u64};

    #[test]
    fn numbers_in_decimal() {
        let mut out = String::new();
        for n in [0, 7, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn escapes_what_json_requires() {
        let mut out = String::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
