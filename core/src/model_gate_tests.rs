use proptest::prelude::*;

use super::*;
use crate::auth::{Digest, KeyName, KeyPolicy};
use crate::endpoint::Watched;
use crate::gojson::member_matches;
use crate::models::ModelList;

const MODEL: Watched = Watched {
    models: &["model"],
    plain: 0,
    forbidden: &[],
};

fn key(models: &[&str]) -> Arc<Key> {
    let mut list = ModelList::default();
    for m in models {
        list.push(m).unwrap();
    }
    Arc::new(Key {
        name: KeyName::new("k"),
        digest: Digest::of(b"t"),
        policy: KeyPolicy {
            models: Some(list),
            ..KeyPolicy::default()
        },
    })
}

fn gate(required: bool) -> ModelGate {
    ModelGate::new(
        key(&["llama3.2:*"]),
        MODEL,
        required,
        MAX_HELD_BYTES,
        false,
        false,
    )
}

/// Feeds `chunks`, then the end; returns every step.
fn run(gate: &mut ModelGate, chunks: &[&[u8]]) -> Vec<GateStep> {
    let mut steps: Vec<GateStep> = chunks.iter().map(|c| gate.push(c)).collect();
    steps.push(gate.finish());
    steps
}

fn refusal(step: &GateStep) -> Option<(ProxyError, Option<&str>)> {
    match step {
        GateStep::Refuse(r) => Some((r.error(), r.model())),
        _ => None,
    }
}

fn last(chunks: &[&[u8]], required: bool) -> GateStep {
    run(&mut gate(required), chunks).pop().unwrap()
}

#[test]
fn holds_until_an_allowed_model_is_read() {
    let steps = run(
        &mut gate(true),
        &[
            br#"{"messages":[{"role":"user"}],"#,
            br#""model":"llama3.2"}"#,
        ],
    );
    assert_eq!(steps, [GateStep::Hold, GateStep::Pass, GateStep::Pass]);

    let mut g = gate(true);
    let steps = run(
        &mut g,
        &[br#"{"model":"llama3.2:1b","#, br#""stream":true}"#],
    );
    assert_eq!(steps, [GateStep::Pass, GateStep::Pass, GateStep::Pass]);
    assert!(!g.scanning());
}

#[test]
fn refuses_a_model_outside_the_list_naming_it() {
    let step = last(&[br#"{"messages":[],"model":"qwen3:8b"}"#], true);
    assert_eq!(
        refusal(&step),
        Some((ProxyError::ModelNotAllowed, Some("qwen3:8b")))
    );
}

#[test]
fn reads_the_member_as_go_does() {
    for body in [
        r#"{"MODEL":"secret"}"#,
        r#"{"Model":"secret"}"#,
        r#"{"mod\u0065l":"secret"}"#,
        r#"{"model":"s\u0065cret"}"#,
        "{\"model\"\n:\t\"secret\"}",
        r#"{"options":{"model":"llama3.2"},"model":"secret"}"#,
    ] {
        let step = last(&[body.as_bytes()], true);
        assert_eq!(
            refusal(&step),
            Some((ProxyError::ModelNotAllowed, Some("secret"))),
            "{body}"
        );
    }
}

#[test]
fn a_second_naming_is_refused_even_after_an_allowed_one() {
    let mut g = gate(true);
    let steps = run(
        &mut g,
        &[br#"{"model":"llama3.2","#, br#""x":1,"MODEL":"llama3.2"}"#],
    );
    assert_eq!(steps[0], GateStep::Pass);
    assert_eq!(refusal(&steps[1]), Some((ProxyError::DuplicateModel, None)));
    assert_eq!(refusal(&steps[2]), Some((ProxyError::DuplicateModel, None)));
    let step = last(&[br#"{"model":null,"model":"llama3.2"}"#], true);
    assert_eq!(refusal(&step), Some((ProxyError::DuplicateModel, None)));
}

#[test]
fn unreadable_models_are_refused_where_one_is_needed() {
    for body in [
        &br#"{"model":5}"#[..],
        br#"{"model":{"name":"llama3.2"}}"#,
        br#"{"model":["llama3.2"]}"#,
        br#"{"messages":[]}"#,
        br#"{"model":null}"#,
        br#"[{"model":"llama3.2"}]"#,
        b"not json",
        b"",
        br#"{"model":"llama3.2""#,
    ] {
        let step = last(&[body], true);
        assert_eq!(
            refusal(&step),
            Some((ProxyError::ModelRequired, None)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // Elsewhere, a body without a model goes on as it is.
    for body in [&br#"{"query":"x"}"#[..], b"not json", b"", b"[1,2]"] {
        assert_eq!(last(&[body], false), GateStep::Pass);
    }
    // But a model that is named is checked on any route.
    let step = last(&[br#"{"model":"qwen3"}"#], false);
    assert_eq!(
        refusal(&step),
        Some((ProxyError::ModelNotAllowed, Some("qwen3")))
    );
}

#[test]
fn what_follows_the_value_is_not_read() {
    let step = last(&[br#"{"model":"llama3.2"} {"model":"secret"}"#], true);
    assert_eq!(step, GateStep::Pass);
}

#[test]
fn several_watched_members_must_each_be_allowed() {
    let copy = Watched {
        models: &["source", "destination"],
        plain: 0b11,
        forbidden: &[],
    };
    let mut g = ModelGate::new(
        key(&["llama3.2:*"]),
        copy,
        true,
        MAX_HELD_BYTES,
        false,
        false,
    );
    let steps = run(
        &mut g,
        &["{\"\u{17f}ource\":\"llama3.2\",\"destination\":\"stolen\"}".as_bytes()],
    );
    assert_eq!(
        refusal(&steps[0]),
        Some((ProxyError::ModelNotAllowed, Some("stolen")))
    );
}

#[test]
fn forbidden_members_are_refused_in_any_spelling() {
    let create = Watched {
        models: &["model", "name", "from"],
        plain: 0b011,
        forbidden: &["files", "remote_host"],
    };
    for body in [
        r#"{"model":"llama3.2:x","files":{"m.gguf":"sha256:00"}}"#,
        r#"{"FILES":{"m.gguf":"sha256:00"},"model":"llama3.2:x"}"#,
        r#"{"model":"llama3.2:x","remote_host":"https://ollama.com:443"}"#,
        r#"{"model":"llama3.2:x","files":[]}"#,
    ] {
        let mut g = ModelGate::new(
            key(&["llama3.2:*"]),
            create,
            true,
            MAX_HELD_BYTES,
            false,
            false,
        );
        let step = run(&mut g, &[body.as_bytes()]).pop().unwrap();
        assert_eq!(
            refusal(&step),
            Some((ProxyError::ModelSourceNotAllowed, None)),
            "{body}"
        );
    }
    let mut g = ModelGate::new(
        key(&["llama3.2:*"]),
        create,
        true,
        MAX_HELD_BYTES,
        false,
        false,
    );
    let step = run(
        &mut g,
        &[br#"{"model":"llama3.2:x","from":"llama3.2:1b","files":null}"#],
    );
    assert_eq!(step.last(), Some(&GateStep::Pass));
}

fn unlisted() -> Arc<Key> {
    Arc::new(Key {
        name: KeyName::new("open"),
        digest: Digest::of(b"t"),
        policy: KeyPolicy::default(),
    })
}

/// Feeds `chunks` through a gate that asks for usage and returns what goes
/// to the origin.
fn forwarded(key: Arc<Key>, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut g = ModelGate::new(key, MODEL, true, MAX_HELD_BYTES, true, false);
    let mut out = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    for chunk in chunks {
        held.extend_from_slice(chunk);
        match g.push(chunk) {
            GateStep::Hold => continue,
            GateStep::Pass => {}
            GateStep::PassWithUsage { at } => {
                let start = held.len() - chunk.len();
                let edited = with_usage(&held[start..], at);
                held.truncate(start);
                held.extend_from_slice(&edited);
            }
            GateStep::Refuse(r) => panic!("refused: {r:?}"),
        }
        out.append(&mut held);
    }
    assert_ne!(g.finish(), GateStep::Hold);
    out.append(&mut held);
    (out, g.asked_for_usage())
}

#[test]
fn a_stream_that_did_not_ask_for_usage_is_asked() {
    let (out, asked) = forwarded(
        unlisted(),
        &[br#"{"model":"x","stream":true,"messages":[]}"#],
    );
    assert!(asked);
    assert_eq!(
        out,
        br#"{"model":"x","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
    );
    // Split before the brace, whitespace before it, bytes after the object.
    let (out, _) = forwarded(
        unlisted(),
        &[br#"{"STREAM":true,"#, b"\"messages\":[]\n", b"} trailing"],
    );
    assert_eq!(
        out,
        b"{\"STREAM\":true,\"messages\":[]\n,\"stream_options\":{\"include_usage\":true}} trailing"
    );
    let (out, asked) = forwarded(unlisted(), &[br#"{"model":"x","MODEL":"y","stream":true}"#]);
    assert!(asked, "{}", String::from_utf8_lossy(&out));
    // A listed key's body is held until the model, then asked too.
    let (out, asked) = forwarded(
        key(&["llama3.2:*"]),
        &[br#"{"stream":true,"#, br#""model":"llama3.2:1b"}"#],
    );
    assert!(asked);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["stream_options"]["include_usage"], true);
}

#[test]
fn other_requests_go_on_untouched() {
    for body in [
        &br#"{"model":"x","stream":true,"stream_options":{"include_usage":false}}"#[..],
        br#"{"model":"x","stream":true,"Stream_Options":null}"#,
        br#"{"model":"x","stream":false}"#,
        br#"{"model":"x","stream":true,"stream":false}"#,
        br#"{"model":"x"}"#,
        br#"[{"stream":true}]"#,
        b"not json",
        // Without a list nothing is refused: not a second model either.
        br#"{"model":"x","model":"y","stream":false}"#,
    ] {
        let (out, asked) = forwarded(unlisted(), &[body]);
        assert!(!asked, "{}", String::from_utf8_lossy(body));
        assert_eq!(out, body);
    }
}

#[test]
fn holding_stops_at_its_limit() {
    let mut g = ModelGate::new(key(&["llama3.2:*"]), MODEL, true, 64, false, false);
    assert_eq!(
        g.push(br#"{"messages":[{"role":"user","content":""#),
        GateStep::Hold
    );
    let step = g.push(&[b'a'; 64]);
    assert_eq!(refusal(&step), Some((ProxyError::ModelNamedTooLate, None)));
    // Once the model is read nothing is held, so the limit no longer applies.
    let mut g = ModelGate::new(key(&["llama3.2:*"]), MODEL, true, 64, false, false);
    assert_eq!(
        g.push(br#"{"model":"llama3.2:1b","messages":[{"content":""#),
        GateStep::Pass
    );
    assert_eq!(g.push(&[b'a'; 1000]), GateStep::Pass);
}

/// A member name that may or may not name the model, however spelled.
fn member() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model".to_owned()),
        Just("MODEL".to_owned()),
        Just("Model".to_owned()),
        Just("mod\\u0065l".to_owned()),
        Just("\\u006dodel".to_owned()),
        Just("models".to_owned()),
        Just("messages".to_owned()),
        Just("stream".to_owned()),
        Just("options".to_owned()),
        "[a-z]{1,6}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""llama3.2""#.to_owned()),
        Just(r#""llama3.2:1b""#.to_owned()),
        Just(r#""LLAMA3.2""#.to_owned()),
        Just(r#""qwen3:8b""#.to_owned()),
        Just(r#""llama3.1""#.to_owned()),
        Just(r#""ll\u0061ma3.2""#.to_owned()),
        Just("null".to_owned()),
        Just("12".to_owned()),
        Just("true".to_owned()),
        Just(r#"{"model":"qwen3"}"#.to_owned()),
        Just(r#"[{"role":"user","content":"hi"}]"#.to_owned()),
        Just(r#""a long string with \"quotes\" and \\ slashes""#.to_owned()),
    ]
}

/// A JSON object with members in any order and odd whitespace.
fn body() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((member(), value()), 0..6),
        prop::sample::select(vec!["", " ", "\n  ", "\t"]),
    )
        .prop_map(|(members, ws)| {
            let inner: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
                .collect();
            format!("{{{}{ws}}}", inner.join(","))
        })
}

/// What the gate must decide, worked out from a full parse: the members
/// as Go would match them, with serde_json reading every value.
fn expected(body: &str, list: &ModelList) -> Result<(), ProxyError> {
    // serde_json keeps the last of duplicate keys; count them from the text
    // with a full parse into pairs instead.
    let pairs: Vec<(String, serde_json::Value)> = {
        let mut de = serde_json::Deserializer::from_str(body);
        let map: Pairs = serde::Deserialize::deserialize(&mut de).unwrap();
        map.0
    };
    // Members in order; the first problem is the answer.
    let mut seen = 0;
    let mut allowed = false;
    for (_, value) in pairs.iter().filter(|(k, _)| member_matches(k, "model")) {
        seen += 1;
        if seen > 1 {
            return Err(ProxyError::DuplicateModel);
        }
        match value {
            serde_json::Value::String(model) if list.allows(model) => allowed = true,
            serde_json::Value::String(_) => return Err(ProxyError::ModelNotAllowed),
            serde_json::Value::Null => {}
            _ => return Err(ProxyError::ModelRequired),
        }
    }
    if allowed {
        Ok(())
    } else {
        Err(ProxyError::ModelRequired)
    }
}

/// An object read as its members in order, duplicates kept.
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = a.next_entry()? {
                    out.push(pair);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::test_cases::cases(256), ..ProptestConfig::default() })]

    /// Split anywhere, the gate decides as a full parse does, never passes
    /// the byte that completes the object before it has decided, and passes
    /// every byte of an allowed body.
    #[test]
    fn agrees_with_a_full_parse_however_split(
        body in body(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let k = key(&["llama3.2:*"]);
        let want = expected(&body, k.policy.models.as_ref().unwrap());
        let bytes = body.as_bytes();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(bytes.len());
        let mut g = ModelGate::new(k, MODEL, true, MAX_HELD_BYTES, false, false);
        let (mut at, mut held, mut passed) = (0, 0, 0);
        let mut outcome = None;
        for end in bounds {
            let step = g.push(&bytes[at..end]);
            held += end - at;
            at = end;
            match step {
                GateStep::Hold => {}
                GateStep::Pass | GateStep::PassWithUsage { .. } => {
                    passed += held;
                    held = 0;
                }
                GateStep::Refuse(r) => {
                    outcome = Some(Err(r.error()));
                    break;
                }
            }
        }
        let outcome = outcome.unwrap_or_else(|| match g.finish() {
            GateStep::Refuse(r) => Err(r.error()),
            _ => {
                passed += held;
                Ok(())
            }
        });
        prop_assert_eq!(outcome, want, "body {}", body);
        if outcome.is_ok() {
            prop_assert_eq!(passed, bytes.len());
        } else {
            // The closing brace (the last byte) never went out.
            prop_assert!(passed < bytes.len(), "refused after passing everything: {}", body);
        }
    }
}

/// The gate's last step for `body` sent to `path`, for a key that may
/// manage models but only those of `models`.
fn managed(models: &[&str], path: &str, body: &str) -> GateStep {
    let mut list = ModelList::default();
    for m in models {
        list.push(m).unwrap();
    }
    let key = Arc::new(Key {
        name: KeyName::new("admin"),
        digest: crate::auth::Digest::of(b"t"),
        policy: KeyPolicy {
            models: Some(list),
            model_management: Some(true),
            ..KeyPolicy::default()
        },
    });
    let crate::endpoint::ModelSource::Body { watched, required } =
        crate::endpoint::classify(path).model
    else {
        panic!("{path} is not a body route")
    };
    let mut g = ModelGate::new(key, watched, required, MAX_HELD_BYTES, false, false);
    match g.push(body.as_bytes()) {
        step @ GateStep::Refuse(_) => step,
        _ => g.finish(),
    }
}

/// The names a model is written or copied under are read as Ollama's copy,
/// create and push read them (`ParseName` alone): `:local`, `:cloud` and a
/// `-cloud` tag are ordinary tags of a local model there, so they are not
/// the model a run by that name would resolve to (found in review).
#[test]
fn names_written_are_read_as_plain_names() {
    let refused = |list: &[&str], path: &str, body: &str| {
        matches!(managed(list, path, body), GateStep::Refuse(_))
    };
    // A list naming team/a (its :latest) does not cover team/a:local.
    for (path, body) in [
        (
            "/api/copy",
            r#"{"source":"team/a","destination":"team/a:local"}"#,
        ),
        (
            "/api/copy",
            r#"{"source":"team/a:local","destination":"team/a"}"#,
        ),
        ("/api/create", r#"{"model":"team/a:local","from":"team/a"}"#),
        ("/api/push", r#"{"model":"team/a:local"}"#),
        (
            "/api/copy",
            r#"{"source":"team/a","destination":" team/a"}"#,
        ),
    ] {
        assert!(refused(&["team/a"], path, body), "{path} {body}");
    }
    // A cloud entry covers no local manifest named like a cloud model.
    for (path, body) in [
        (
            "/api/copy",
            r#"{"source":"team/a","destination":"mistral:cloud"}"#,
        ),
        (
            "/api/copy",
            r#"{"source":"team/a","destination":"mistral:8b-cloud"}"#,
        ),
        (
            "/api/create",
            r#"{"model":"mistral:8b-cloud","from":"team/a"}"#,
        ),
        ("/api/push", r#"{"model":"mistral:cloud"}"#),
    ] {
        assert!(refused(&["team/*", "*:cloud"], path, body), "{path} {body}");
    }
    // What the list names still passes, and create's `from` is a model to
    // run (a cloud one included).
    for (path, body) in [
        (
            "/api/copy",
            r#"{"source":"team/a","destination":"team/b:v2"}"#,
        ),
        (
            "/api/create",
            r#"{"model":"team/b","from":"gpt-oss:120b-cloud"}"#,
        ),
        ("/api/push", r#"{"name":"team/a"}"#),
        ("/api/pull", r#"{"model":"team/c:local"}"#),
    ] {
        assert!(
            !refused(&["team/*", "*:cloud"], path, body),
            "{path} {body}"
        );
    }
}
