use proptest::prelude::*;

use super::*;

/// Feeds `chunks`, the n-th at time `(n + 1) * 1000` µs.
fn read(framing: Framing, chunks: &[&[u8]], ended: Ended) -> Usage {
    let mut meter = UsageMeter::new(framing);
    for (n, chunk) in chunks.iter().enumerate() {
        meter.feed(chunk, (n as u64 + 1) * 1000);
    }
    meter.finish(ended)
}

const CHAT: &[&[u8]] = &[
    br#"{"model":"llama3.2:1b","message":{"role":"assistant","content":""},"done":false}"#,
    b"\n",
    br#"{"model":"llama3.2:1b","message":{"role":"assistant","content":"Hel"},"done":false}"#,
    b"\n",
    br#"{"model":"llama3.2:1b","message":{"role":"assistant","content":"lo"},"done":false}"#,
    b"\n",
    br#"{"model":"llama3.2:1b","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":2500000000,"load_duration":1500000000,"prompt_eval_count":26,"prompt_eval_duration":130000000,"eval_count":298,"eval_duration":4000000000}"#,
    b"\n",
];

#[test]
fn ollama_streams_give_counts_durations_and_first_token() {
    let usage = read(Framing::Json, CHAT, Ended::Complete);
    assert_eq!(usage.prompt_tokens, Some(26));
    assert_eq!(usage.completion_tokens, Some(298));
    // The first chunk with content is the third one fed.
    assert_eq!(usage.first_token_us, Some(3000));
    assert_eq!(usage.tokens_per_second, Some(298.0 / 4.0));
    assert_eq!(usage.load_seconds, Some(1.5));
    assert_eq!(usage.unknown, None);
    assert_eq!(usage.model.as_deref(), Some("llama3.2:1b"));
}

#[test]
fn a_cached_prompt_is_unknown_never_zero() {
    let answer: &[&[u8]] = &[
        br#"{"response":"Hi","done":false}"#,
        b"\n",
        br#"{"response":"","done":true,"prompt_eval_count":0,"eval_count":5,"eval_duration":50000000,"load_duration":3000000}"#,
    ];
    let usage = read(Framing::Json, answer, Ended::Complete);
    assert_eq!(usage.prompt_tokens, None);
    assert_eq!(usage.completion_tokens, Some(5));
    assert_eq!(usage.unknown, Some("cached_prompt"));
    // A loaded model's few milliseconds are not a load.
    assert_eq!(usage.load_seconds, None);
    let absent: &[&[u8]] = &[br#"{"response":"Hi","done":true,"eval_count":1}"#];
    let usage = read(Framing::Json, absent, Ended::Complete);
    assert_eq!(
        (usage.prompt_tokens, usage.unknown),
        (None, Some("cached_prompt"))
    );
}

#[test]
fn the_generate_context_is_skipped_not_held() {
    let mut body = br#"{"response":"","done":true,"context":["#.to_vec();
    for i in 0..20_000 {
        body.extend_from_slice(format!("{i},").as_bytes());
    }
    body.extend_from_slice(br#"1],"prompt_eval_count":7,"eval_count":3}"#);
    let usage = read(Framing::Json, &[&body], Ended::Complete);
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(7), Some(3))
    );
}

#[test]
fn openai_answers_and_streams() {
    let answer = br#"{
      "id": "chatcmpl-1",
      "choices": [ { "index": 0, "message": { "role": "assistant", "content": "Hi" } } ],
      "usage": { "prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16 }
    }"#;
    let usage = read(Framing::Json, &[answer], Ended::Complete);
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(12), Some(4))
    );
    assert_eq!(usage.first_token_us, Some(1000));

    let stream: &[&[u8]] = &[
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n",
        b": a comment\nevent: chunk\ndata:{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":21}}\n\n",
        b"data: [DONE]\n\n",
    ];
    let usage = read(Framing::Sse, stream, Ended::Complete);
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(9), Some(21))
    );
    assert_eq!(usage.first_token_us, Some(2000));
    // No durations: the speed comes from the content's arrival times.
    assert_eq!(usage.tokens_per_second, Some(20.0 * 1e6 / 1000.0));

    // Without include_usage a stream has no counts.
    let usage = read(Framing::Sse, &stream[..3], Ended::Complete);
    assert_eq!(usage.unknown, Some("no_usage"));
    assert_eq!(usage.first_token_us, Some(2000));
    let legacy: &[&[u8]] = &[b"data: {\"choices\":[{\"text\":\"Hi\",\"index\":0}]}\n\n"];
    assert_eq!(
        read(Framing::Sse, legacy, Ended::Complete).first_token_us,
        Some(1000)
    );
}

#[test]
fn embeddings_count_their_input() {
    let native = br#"{"model":"m","embeddings":[[0.1,0.2]],"total_duration":1,"load_duration":1,"prompt_eval_count":8}"#;
    let usage = read(Framing::Json, &[native], Ended::Complete);
    assert_eq!((usage.prompt_tokens, usage.unknown), (Some(8), None));
    let openai = br#"{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
    let usage = read(Framing::Json, &[openai], Ended::Complete);
    assert_eq!(usage.prompt_tokens, Some(5));
}

#[test]
fn errors_and_early_ends_leave_usage_unknown() {
    let native: &[&[u8]] = &[
        br#"{"response":"Hi","done":false}"#,
        b"\n",
        br#"{"error":"an error was encountered while running the model"}"#,
        b"\n",
    ];
    let usage = read(Framing::Json, native, Ended::Complete);
    assert_eq!(usage.unknown, Some("error"));
    let sse: &[&[u8]] = &[b"data: {\"error\":{\"message\":\"x\",\"type\":\"api_error\"}}\n\n"];
    assert_eq!(
        read(Framing::Sse, sse, Ended::Complete).unknown,
        Some("error")
    );
    let gone = read(Framing::Json, &CHAT[..4], Ended::ClientGone);
    assert_eq!(
        (gone.prompt_tokens, gone.completion_tokens, gone.unknown),
        (None, None, Some("client_gone"))
    );
    assert_eq!(gone.first_token_us, Some(3000));
    let broke = read(Framing::Json, CHAT, Ended::OriginError);
    assert_eq!(
        (broke.completion_tokens, broke.unknown),
        (None, Some("origin_error"))
    );
}

#[test]
fn garbage_between_lines_is_skipped() {
    let lines: &[&[u8]] = &[
        b"not json at all\n",
        br#"{"response":"x","done":false}"#,
        b"\n{broken\n",
        br#"{"done":true,"prompt_eval_count":2,"eval_count":1}"#,
    ];
    let usage = read(Framing::Json, lines, Ended::Complete);
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(2), Some(1))
    );
}

/// Splits `body` at `cuts` and feeds it, each piece at the time of its end
/// offset.
fn read_split(framing: Framing, body: &[u8], cuts: &[usize], ended: Ended) -> Usage {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(body.len());
    let mut meter = UsageMeter::new(framing);
    let mut at = 0;
    for end in bounds {
        meter.feed(&body[at..end], end as u64);
        at = end;
    }
    meter.finish(ended)
}

/// Counts and reasons, which splits must never change (times may).
fn counts(u: &Usage) -> (Option<u64>, Option<u64>, Option<&'static str>, Option<f64>) {
    (
        u.prompt_tokens,
        u.completion_tokens,
        u.unknown,
        u.load_seconds,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::test_cases::cases(256), ..ProptestConfig::default() })]

    /// However an answer is split, the counts are the same, and the first
    /// token is seen in the piece that completes the first content.
    #[test]
    fn splits_never_change_the_counts(
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        sse in any::<bool>(),
    ) {
        let (framing, body): (Framing, Vec<u8>) = if sse {
            let mut body = Vec::new();
            for part in [
                &b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"[..],
                b"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":21}}\n\n",
                b"data: [DONE]\n\n",
            ] {
                body.extend_from_slice(part);
            }
            (Framing::Sse, body)
        } else {
            (Framing::Json, CHAT.concat())
        };
        let whole = read_split(framing, &body, &[], Ended::Complete);
        let split = read_split(framing, &body, &cuts, Ended::Complete);
        prop_assert_eq!(counts(&whole), counts(&split));
        prop_assert!(split.first_token_us.is_some());
    }

    /// Arbitrary bytes, split anywhere: never a panic, and an answer that
    /// said nothing usable is unknown, never counted as 0.
    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        sse in any::<bool>(),
    ) {
        let framing = if sse { Framing::Sse } else { Framing::Json };
        let usage = read_split(framing, &body, &cuts, Ended::Complete);
        prop_assert!(usage.prompt_tokens != Some(0));
    }
}

/// An Anthropic Messages stream as Ollama writes it (`anthropic.go`'s
/// stream converter): `message_start` with an estimate of the prompt,
/// content deltas, then `message_delta` with the counts Ollama measured.
fn anthropic_stream(prompt: u64) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"Qwen3:8B\",\"content\":[],\"usage\":{\"input_tokens\":7,\"output_tokens\":0}}}\n\n");
    body.extend_from_slice(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for piece in ["Hel", "lo"] {
        body.extend_from_slice(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{piece}\"}}}}\n\n").as_bytes());
    }
    body.extend_from_slice(
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    body.extend_from_slice(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"input_tokens\":{prompt},\"output_tokens\":21}}}}\n\n").as_bytes());
    body.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    body
}

/// A Responses stream as Ollama writes it (`openai/responses.go`: Go
/// writes a map's members in name order).
fn responses_stream(prompt: u64) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(b"event: response.created\ndata: {\"response\":{\"error\":null,\"id\":\"resp_1\",\"model\":\"qwen3:8b\",\"output\":[],\"text\":{\"format\":{\"type\":\"text\"}},\"usage\":null},\"sequence_number\":0,\"type\":\"response.created\"}\n\n");
    for piece in ["Hel", "lo"] {
        body.extend_from_slice(format!("event: response.output_text.delta\ndata: {{\"content_index\":0,\"delta\":\"{piece}\",\"item_id\":\"msg_1\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":1,\"type\":\"response.output_text.delta\"}}\n\n").as_bytes());
    }
    body.extend_from_slice(b"event: response.output_item.done\ndata: {\"item\":{\"content\":[{\"text\":\"Hello\",\"type\":\"output_text\"}],\"type\":\"message\"},\"output_index\":0,\"sequence_number\":3,\"type\":\"response.output_item.done\"}\n\n");
    body.extend_from_slice(format!("event: response.completed\ndata: {{\"response\":{{\"error\":null,\"id\":\"resp_1\",\"model\":\"qwen3:8b\",\"output\":[{{\"content\":[{{\"text\":\"Hello\",\"type\":\"output_text\"}}],\"type\":\"message\"}}],\"usage\":{{\"input_tokens\":{prompt},\"input_tokens_details\":{{\"cached_tokens\":0}},\"output_tokens\":21,\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":{}}}}},\"sequence_number\":4,\"type\":\"response.completed\"}}\n\n", prompt + 21).as_bytes());
    body
}

#[test]
fn anthropic_and_responses_streams_are_read() {
    for body in [anthropic_stream(9), responses_stream(9)] {
        // One event per piece, each at its own time.
        let events: Vec<&[u8]> = body
            .split_inclusive(|&b| b == b'\n')
            .filter(|line| line.starts_with(b"data:"))
            .collect();
        let usage = read(Framing::Sse, &events, Ended::Complete);
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(usage.prompt_tokens, Some(9), "{text}");
        assert_eq!(usage.completion_tokens, Some(21), "{text}");
        assert_eq!(usage.unknown, None, "{text}");
        assert_eq!(usage.model.as_deref(), Some("qwen3:8b"), "{text}");
        // The first delta is the third (Anthropic) or second event (an
        // empty block's start and the answer's echo are not content).
        let first = if text.contains("message_start") {
            3000
        } else {
            2000
        };
        assert_eq!(usage.first_token_us, Some(first), "{text}");
        // 21 tokens between the two deltas, 1 ms apart: the answer echoed
        // at the end (`response.output_item.done`) is not content.
        assert_eq!(usage.tokens_per_second, Some(20_000.0), "{text}");
    }
    // Ollama reports a cached prompt as 0 there too: unknown, never 0.
    for body in [anthropic_stream(0), responses_stream(0)] {
        let usage = read(Framing::Sse, &[&body], Ended::Complete);
        assert_eq!(usage.prompt_tokens, None);
        assert_eq!(usage.completion_tokens, Some(21));
        assert_eq!(usage.unknown, Some("cached_prompt"));
    }
    // A stream that ends without its counts (Ollama failed mid-answer and
    // its Anthropic writer sent nothing more): no usage, not the prompt
    // estimate `message_start` carries.
    let body = anthropic_stream(9);
    let cut = String::from_utf8_lossy(&body)
        .find("event: message_delta")
        .unwrap();
    let usage = read(Framing::Sse, &[&body[..cut]], Ended::Complete);
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens, usage.unknown),
        (None, None, Some("no_usage"))
    );
    // A Responses stream that failed (`response.failed`, as Ollama's web
    // search sends it): counts given, but an error.
    let failed: &[&[u8]] = &[b"event: response.failed\ndata: {\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"boom\"},\"model\":\"qwen3:8b\",\"status\":\"failed\",\"usage\":{\"input_tokens\":9,\"output_tokens\":3}},\"type\":\"response.failed\"}\n\n"];
    let usage = read(Framing::Sse, failed, Ended::Complete);
    assert_eq!((usage.prompt_tokens, usage.unknown), (None, Some("error")));
}

#[test]
fn anthropic_and_responses_answers_are_read() {
    let message: &[&[u8]] = &[br#"{"id":"msg_1","type":"message","role":"assistant","model":"qwen3:8b","content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":21}}"#];
    let response: &[&[u8]] = &[br#"{"id":"resp_1","object":"response","model":"qwen3:8b","output":[{"type":"message","content":[{"type":"output_text","text":"Hello"}]}],"usage":{"input_tokens":9,"output_tokens":21,"total_tokens":30}}"#];
    for answer in [message, response] {
        let usage = read(Framing::Json, answer, Ended::Complete);
        assert_eq!(usage.prompt_tokens, Some(9));
        assert_eq!(usage.completion_tokens, Some(21));
        assert_eq!(usage.unknown, None);
        assert_eq!(usage.model.as_deref(), Some("qwen3:8b"));
        assert_eq!(usage.first_token_us, Some(1000));
    }
    // An Anthropic error event: not counted.
    let error: &[&[u8]] = &[b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n"];
    let usage = read(Framing::Sse, error, Ended::Complete);
    assert_eq!(usage.unknown, Some("error"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::test_cases::cases(128), ..ProptestConfig::default() })]

    /// Anthropic's and the Responses API's streams, split anywhere: the
    /// same counts as read whole.
    #[test]
    fn splits_never_change_anthropic_or_responses_counts(
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        anthropic in any::<bool>(),
    ) {
        let body = if anthropic { anthropic_stream(9) } else { responses_stream(9) };
        let whole = read_split(Framing::Sse, &body, &[], Ended::Complete);
        let split = read_split(Framing::Sse, &body, &cuts, Ended::Complete);
        prop_assert_eq!(counts(&whole), counts(&split));
        prop_assert_eq!(split.prompt_tokens, Some(9));
        prop_assert!(split.first_token_us.is_some());
    }
}
