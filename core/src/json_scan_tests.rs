use proptest::prelude::*;

use super::*;

/// Every event as text, to compare whole scans.
#[derive(Default)]
struct Log(Vec<String>);

impl Visitor for Log {
    fn open(&mut self, kind: Kind, depth: u32, at: u64) {
        self.0.push(format!("open {kind:?} {depth} @{at}"));
    }
    fn close(&mut self, kind: Kind, depth: u32, end: u64) {
        self.0.push(format!("close {kind:?} {depth} @{end}"));
    }
    fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
        let raw = raw.map(String::from_utf8_lossy);
        self.0.push(format!("key {depth} {raw:?}"));
    }
    fn scalar(&mut self, kind: Kind, depth: u32, raw: Option<&[u8]>) {
        let raw = raw.map(String::from_utf8_lossy);
        self.0.push(format!("{kind:?} {depth} {raw:?}"));
    }
}

fn scan_split(input: &[u8], cuts: &[usize], depth: u32) -> (Progress, Vec<String>) {
    let mut scanner = Scanner::new(depth);
    let mut log = Log::default();
    let mut progress = Progress::NeedMore;
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        if end < at {
            continue;
        }
        progress = scanner.feed(&input[at..end], &mut log);
        at = end;
        if progress != Progress::NeedMore {
            break;
        }
    }
    if progress == Progress::NeedMore {
        progress = scanner.finish(&mut log);
    }
    (progress, log.0)
}

fn scan(input: &str) -> Progress {
    scan_split(input.as_bytes(), &[], 1).0
}

#[test]
fn accepts_what_go_accepts() {
    for ok in [
        r#"{}"#,
        r#"[]"#,
        r#" {"a" : [1, -0, 0.5, -1.5e+10, 2E-3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"]} "#,
        "\"\u{7f}\u{e9}\"",
        "0",
        "\t\r\n[ ]",
    ] {
        assert!(matches!(scan(ok), Progress::Done(_)), "{ok}");
    }
    // Go takes invalid UTF-8 inside strings (and replaces it on decoding).
    assert!(matches!(
        scan_split(b"{\"k\":\"\xff\xfe\"}", &[], 1).0,
        Progress::Done(_)
    ));
}

#[test]
fn refuses_what_go_refuses() {
    for bad in [
        "",
        " ",
        "{",
        "{,}",
        "[1,]",
        r#"{"a":1,}"#,
        "{'a':1}",
        r#"{"a" 1}"#,
        "[01]",
        "[1.]",
        "[.5]",
        "[+1]",
        "[1e]",
        "[-]",
        "[NaN]",
        "[tru]",
        "[nul]",
        "[\"\\x\"]",
        "[\"\\u12g4\"]",
        "[\"a\nb\"]",
        "/* c */ {}",
        "\u{feff}{}",
        "{\"a\":1]",
        "[1}",
    ] {
        assert!(
            matches!(scan(bad), Progress::Invalid(_)),
            "{bad:?} gave {:?}",
            scan(bad)
        );
    }
}

#[test]
fn stops_after_the_first_value() {
    assert_eq!(scan(r#"{"a":1} trailing {"b":2}"#), Progress::Done(7));
    assert_eq!(scan(r#"[] garbage"#), Progress::Done(2));
    assert_eq!(scan("\"s\"x"), Progress::Done(3));
    // A top-level number ends at the byte after it, or at the end.
    assert_eq!(scan("12 "), Progress::Done(2));
    assert_eq!(scan("12"), Progress::Done(2));
}

#[test]
fn nesting_is_bounded_like_go() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(matches!(scan(&deep(10_000)), Progress::Done(_)));
    assert!(matches!(scan(&deep(10_001)), Progress::Invalid(_)));
}

#[test]
fn captures_are_bounded_and_depth_limited() {
    let long = format!(r#"{{"k":"{}"}}"#, "x".repeat(CAPTURE_LIMIT + 1));
    let (_, log) = scan_split(long.as_bytes(), &[7, 100, 2000], 1);
    assert!(log.contains(&"String 1 None".to_owned()), "{log:?}");
    let (_, log) = scan_split(br#"{"a":{"b":"c"}}"#, &[], 1);
    assert!(log.contains(&"key 2 None".to_owned()), "{log:?}");
    assert!(log.contains(&"key 1 Some(\"a\")".to_owned()), "{log:?}");
}

/// Arbitrary JSON text (valid), from serde_json values, compact or pretty.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (value, any::<bool>()).prop_map(|(v, pretty)| {
        if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            v.to_string()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::test_cases::cases(256), ..ProptestConfig::default() })]

    /// The word-at-a-time search for the end of plain string bytes stops
    /// where a byte-by-byte one does, whatever the bytes (quotes,
    /// backslashes, control and high bytes among them).
    #[test]
    fn plain_runs_stop_where_a_byte_loop_does(
        input in prop::collection::vec(
            prop_oneof![4 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x80u8..=0xff],
            0..40,
        ),
    ) {
        let naive = input
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(input.len());
        prop_assert_eq!(plain_run(&input), naive);
    }

    /// However the bytes are split, the scan is the same: same events,
    /// same outcome.
    #[test]
    fn splits_never_change_the_scan(
        input in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = scan_split(&input, &[], 3);
        let split = scan_split(&input, &cuts, 3);
        prop_assert_eq!(whole, split);
    }

    /// On valid JSON the scan ends exactly where the text does, and agrees
    /// with a full parse about what is there.
    #[test]
    fn valid_json_is_read_to_its_end(
        text in json_text(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        trailing in "[ a-z{}]{0,5}",
    ) {
        let input = format!("{text}{trailing}");
        let (progress, log) = scan_split(input.as_bytes(), &cuts, 64);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        match progress {
            Progress::Done(end) => {
                let is_number = value.is_number();
                // A bare number runs into trailing letters; everything else
                // ends at its last byte.
                if !is_number || trailing.starts_with([' ', '{', '}']) || trailing.is_empty() {
                    prop_assert_eq!(end as usize, text.len());
                }
            }
            Progress::Invalid(_) => {
                prop_assert!(value.is_number(), "valid JSON refused: {}", text);
            }
            Progress::NeedMore => prop_assert!(false, "not finished"),
        }
        let keys = log.iter().filter(|e| e.starts_with("key ")).count();
        fn count_keys(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Object(m) => m.len() + m.values().map(count_keys).sum::<usize>(),
                serde_json::Value::Array(a) => a.iter().map(count_keys).sum(),
                _ => 0,
            }
        }
        if matches!(progress, Progress::Done(_)) {
            prop_assert_eq!(keys, count_keys(&value));
        }
    }
}
