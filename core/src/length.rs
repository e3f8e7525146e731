//! A message's declared body length, read one way wherever the proxy reads
//! one: a client's request (the decision's checks) and an origin's answer
//! (the native client's framing).

use http::header::{self, HeaderMap};

/// `Content-Length` values that do not read as one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidLength;

/// The length the `Content-Length` headers declare, if any. Each value may
/// be a comma-separated list (RFC 9110 §8.6); every entry must be digits
/// only and all must agree.
///
/// # Errors
/// An entry that is empty, not digits, past `u64`, or unlike the others.
pub fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, InvalidLength> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = digits(part.trim_ascii()).ok_or(InvalidLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(InvalidLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// A non-empty run of ASCII digits as a number, if it fits in a `u64`.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether a message is framed both by `Transfer-Encoding` and by
/// `Content-Length`. RFC 9112 §6.3: such a message "might indicate an
/// attempt to perform request smuggling or response splitting and ought to
/// be handled as an error" — a client's request and an origin's answer are
/// refused alike.
pub fn framed_twice(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_LENGTH) && headers.contains_key(header::TRANSFER_ENCODING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn length(values: &[&str]) -> Result<Option<u64>, InvalidLength> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::CONTENT_LENGTH,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        declared_length(&headers)
    }

    #[test]
    fn equal_values_are_one_length_and_anything_else_is_refused() {
        assert_eq!(length(&[]), Ok(None));
        assert_eq!(length(&["42"]), Ok(Some(42)));
        assert_eq!(length(&["7, 7", " 7 "]), Ok(Some(7)));
        assert_eq!(length(&["\t7\t"]), Ok(Some(7)));
        assert_eq!(length(&["007"]), Ok(Some(7)));
        assert_eq!(length(&["18446744073709551615"]), Ok(Some(u64::MAX)));
        for bad in [
            &["7, 8"][..],
            &["7", "8"],
            &["-1"],
            &["+1"],
            &[""],
            &["7,"],
            &["0x10"],
            &["99999999999999999999999"],
            &["18446744073709551616"],
            &["1 2"],
        ] {
            assert_eq!(length(bad), Err(InvalidLength), "{bad:?}");
        }
    }

    #[test]
    fn a_length_beside_a_transfer_encoding_is_two_framings() {
        let mut headers = HeaderMap::new();
        assert!(!framed_twice(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        assert!(!framed_twice(&headers));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(framed_twice(&headers));
        headers.remove(header::CONTENT_LENGTH);
        assert!(!framed_twice(&headers));
    }

    /// The reading the proxy had before it read bytes (`HeaderValue::to_str`,
    /// `str::split`, `trim`, `parse`): the byte reading must agree with it
    /// on any value a header can hold.
    fn by_text(values: &[Vec<u8>]) -> Result<Option<u64>, InvalidLength> {
        let mut found: Option<u64> = None;
        for value in values {
            let value = HeaderValue::from_bytes(value).map_err(|_| InvalidLength)?;
            let text = value.to_str().map_err(|_| InvalidLength)?;
            for part in text.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(InvalidLength);
                }
                let n: u64 = part.parse().map_err(|_| InvalidLength)?;
                if found.is_some_and(|f| f != n) {
                    return Err(InvalidLength);
                }
                found = Some(n);
            }
        }
        Ok(found)
    }

    /// A `Content-Length` value as clients send them, good and bad: lists
    /// of numbers (`u64`'s bounds among them) padded with whitespace,
    /// Unicode's included, or any bytes a header may hold.
    fn value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let space = prop::sample::select(vec!["", " ", "\t", "  ", "\u{a0}", "\u{85}", "\u{3000}"]);
        let number = prop_oneof![
            prop::sample::select(vec![
                "0",
                "7",
                "007",
                "18446744073709551615",
                "18446744073709551616",
                "+1",
                "-1",
                "",
                "1 2",
            ])
            .prop_map(str::to_owned),
            "[0-9]{1,22}",
        ];
        let part = (space.clone(), number, space).prop_map(|(a, n, b)| format!("{a}{n}{b}"));
        prop_oneof![
            prop::collection::vec(part, 1..4).prop_map(|parts| parts.join(",").into_bytes()),
            prop::collection::vec(
                prop_oneof![
                    prop::sample::select(b"0123456789, \t".to_vec()),
                    32u8..127,
                    128u8..=255,
                ],
                0..24,
            ),
        ]
    }

    proptest::proptest! {
        #[test]
        fn bytes_read_as_text_did(values in proptest::collection::vec(value(), 0..3)) {
            let mut headers = HeaderMap::new();
            for value in &values {
                headers.append(header::CONTENT_LENGTH, HeaderValue::from_bytes(value).unwrap());
            }
            proptest::prop_assert_eq!(declared_length(&headers), by_text(&values));
        }
    }
}
