//! Scenarios for the OpenAI streams whose usage the proxy asks for: a
//! stream that did not ask gets `stream_options.include_usage` added on its
//! way to Ollama and the usage chunk that brings taken out of its answer, so
//! it is counted and its client sees the stream it asked for. Everything
//! else reaches Ollama as it was sent.

use std::time::Duration;

use bytes::Bytes;

use crate::client::{channel_body, collect, full, request, send, Got};
use crate::policy::{keys_document, ALICE};
use crate::target::{Harness, Target, AUTH};

/// What the client got and what the origin saw of one request.
struct Seen {
    got: Got,
    sent_on: serde_json::Value,
    raw: Bytes,
}

/// POSTs `pieces` (one chunk each, so later pieces reach the proxy after it
/// has read the earlier ones) to `path` as `auth`.
async fn post(h: &Harness, auth: (&str, &str), path: &str, pieces: &[&'static str]) -> Seen {
    let before = h.origin.requests().len();
    let (tx, body) = channel_body();
    let req = request(h.proxy, "POST", path, &[auth], body);
    let answer = tokio::spawn(async move { collect(send(req).await).await });
    for piece in pieces {
        tx.send(Bytes::from_static(piece.as_bytes())).await.unwrap();
    }
    drop(tx);
    let got = tokio::time::timeout(Duration::from_secs(20), answer)
        .await
        .expect("an answer")
        .unwrap();
    let requests = h.origin.requests();
    assert_eq!(requests.len(), before + 1, "one request reaches the origin");
    let raw = requests[before].body.clone();
    let sent_on = serde_json::from_slice(&raw)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw)));
    Seen { got, sent_on, raw }
}

/// The `data:` payloads of an event stream, in order.
fn events(got: &Got) -> Vec<String> {
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    String::from_utf8_lossy(&got.body)
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn has_usage_chunk(events: &[String]) -> bool {
    events.iter().any(|e| e.contains("\"usage\""))
}

pub async fn openai_streams_are_asked_for_their_usage<T: Target>(t: &T) {
    let h = Harness::start(t, &[("AIG_KEYS", &keys_document())]).await;
    let alice = format!("Bearer {ALICE}");
    let alice = ("cf-aig-authorization", alice.as_str());

    // A stream that did not ask, in one piece and in two (the object ends
    // in a later chunk than the one the proxy starts forwarding).
    for pieces in [
        &[r#"{"model":"llama3.2:1b","stream":true,"messages":[]}"#][..],
        &[
            r#"{"model":"llama3.2:1b","stream":true,"#,
            r#""messages":[]}"#,
        ],
    ] {
        let seen = post(&h, AUTH, "/v1/chat/completions?chunks=3", pieces).await;
        assert_eq!(
            seen.sent_on["stream_options"]["include_usage"],
            true,
            "{}",
            String::from_utf8_lossy(&seen.raw)
        );
        assert_eq!(seen.sent_on["messages"], serde_json::json!([]));
        let events = events(&seen.got);
        assert_eq!(events.len(), 4, "3 chunks and [DONE]: {events:?}");
        assert!(!has_usage_chunk(&events), "{events:?}");
        assert_eq!(events.last().unwrap(), "[DONE]");
    }

    // A key limited to some models whose body is held until the model: the
    // held chunks go on with the members added to the last.
    let seen = post(
        &h,
        alice,
        "/v1/completions?chunks=2",
        &[
            r#"{"stream":true,"prompt":"hi","#,
            r#""model":"llama3.2:1b"}"#,
        ],
    )
    .await;
    assert_eq!(seen.sent_on["stream_options"]["include_usage"], true);
    assert_eq!(seen.sent_on["prompt"], "hi");
    let got = events(&seen.got);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(!has_usage_chunk(&got), "{got:?}");

    // Everything else reaches the origin byte for byte: a stream that asked
    // (and gets its usage chunk), one that said no, an answer that is not
    // streamed, and a native route.
    let asked = r#"{"model":"llama3.2:1b","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let seen = post(&h, AUTH, "/v1/chat/completions?chunks=2", &[asked]).await;
    assert_eq!(seen.raw, asked.as_bytes());
    let got = events(&seen.got);
    assert!(has_usage_chunk(&got), "{got:?}");
    assert_eq!(got.len(), 4, "{got:?}");
    for body in [
        r#"{"model":"llama3.2:1b","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#,
        r#"{"model":"llama3.2:1b","stream":false,"messages":[]}"#,
        r#"{"model":"llama3.2:1b","stream":true,"stream":false,"messages":[]}"#,
    ] {
        let seen = post(&h, alice, "/v1/chat/completions", &[body]).await;
        assert_eq!(seen.raw, body.as_bytes());
        assert_eq!(seen.got.status, 200);
    }
    let native = r#"{"model":"llama3.2:1b","stream":true,"messages":[]}"#;
    let seen = post(&h, AUTH, "/api/chat", &[native]).await;
    assert_eq!(seen.raw, native.as_bytes());

    // A whole body sent with its length arrives whole, one member longer.
    let body = r#"{"model":"llama3.2:1b","stream":true,"messages":[]}"#;
    let before = h.origin.requests().len();
    let got = collect(
        send(request(
            h.proxy,
            "POST",
            "/v1/chat/completions",
            &[AUTH],
            full(body),
        ))
        .await,
    )
    .await;
    assert!(!has_usage_chunk(&events(&got)));
    let sent_on = &h.origin.requests()[before];
    assert!(sent_on.body_complete);
    assert_eq!(
        sent_on.body.len(),
        body.len() + r#","stream_options":{"include_usage":true}"#.len()
    );
}
