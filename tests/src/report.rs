//! `docs/reliability.md`, rendered from what the tests check: the hostile
//! request table comes from [`crate::hostile::CASES`] (which both targets'
//! tests run against their expectations), and every other row names the
//! test that checks it (`tests/tests/report.rs` fails if that test is gone
//! or the committed file differs from this rendering).

/// Where a row is checked: both targets, or one.
#[derive(Clone, Copy)]
pub enum Targets {
    /// The shared scenario runs natively and in workerd.
    Both,
    /// Native only, with the reason the Worker is not checked.
    Native(&'static str),
    /// The Worker only, with the reason there is nothing to check natively.
    Worker(&'static str),
    /// The core, so both targets.
    Core,
}

/// One fault, input or load, what must happen, and the test that checks it.
pub struct Row {
    /// What is done to the proxy.
    pub input: &'static str,
    /// What the proxy does.
    pub result: &'static str,
    /// Where it is checked.
    pub targets: Targets,
    /// `path/to/file.rs::test_fn`, relative to the workspace root.
    pub test: &'static str,
}

/// A titled group of rows.
pub struct Section {
    /// The heading.
    pub title: &'static str,
    /// The rows.
    pub rows: &'static [Row],
}

const NO_WORKER_TIMEOUTS: &str =
    "the Worker has no timeouts of its own; Cloudflare's platform limits apply";
const WORKERD_FRONT: &str =
    "on Cloudflare the client connection is Cloudflare's front line's, not the Worker's";

/// Every non-table row of the report, in order.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "Broken origins",
        rows: &[
            Row {
                input: "origin down (connection refused)",
                result: "502 `origin_unreachable`, OpenAI-shaped, with CORS headers",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::origin_down_gets_502",
            },
            Row {
                input: "origin unreachable (SYNs dropped: a full accept queue)",
                result: "504 `origin_timeout` after `CONNECT_TIMEOUT`",
                targets: Targets::Native(NO_WORKER_TIMEOUTS),
                test: "tests/tests/native.rs::unreachable_origin_gets_504_after_the_connect_timeout",
            },
            Row {
                input: "origin accepts and never answers",
                result: "504 `origin_timeout` after `RESPONSE_TIMEOUT`; the origin connection is closed",
                targets: Targets::Native(NO_WORKER_TIMEOUTS),
                test: "tests/tests/native.rs::slow_origin_gets_504_and_is_released",
            },
            Row {
                input: "origin answers bytes that are not HTTP",
                result: "502 `origin_unreachable`",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::origin_answering_garbage_gets_502",
            },
            Row {
                input: "origin resets the connection mid-stream (NDJSON)",
                result: "the client gets what was sent, then an `{\"error\": …}` record in the stream's format (an SSE `data:` event with the OpenAI error for event streams); natively the stream then ends without its final chunk. workerd ends a failed stream with the final chunk whatever the Worker does, so there the record is the signal",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::origin_reset_mid_stream_is_not_a_clean_end",
            },
            Row {
                input: "origin breaks off an Anthropic Messages stream (`/v1/messages`, SSE)",
                result: "the client gets what was sent, then Anthropic's `event: error` with an `api_error` (its SDKs skip unnamed events, so the OpenAI-shaped record would pass unseen there); Anthropic's Python SDK raises `APIStatusError` (tests/python/sdks.py, natively over HTTPS)",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::an_anthropic_stream_that_breaks_off_ends_with_its_error_event",
            },
            Row {
                input: "origin closes before its `Content-Length` is sent",
                result: "the client gets fewer bytes than the `Content-Length` it was promised, then the connection closes",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::origin_short_body_is_not_a_clean_end",
            },
            Row {
                input: "an NDJSON stream with a `Content-Length` (a buffering hop in front of Ollama) that breaks off",
                result: "the client gets fewer bytes than promised and no error record: the framing shows the cut (a record would have filled the length up and looked complete)",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::a_short_stream_of_declared_length_is_not_a_clean_end",
            },
            Row {
                input: "origin closes a kept-alive connection while it sits idle (its keep-alive timeout shorter than the proxy's)",
                result: "the next request finds it closed before sending anything and goes out whole on a new connection; the client sees nothing of it",
                targets: Targets::Native("workerd keeps its own connections to origins"),
                test: "tests/tests/native.rs::a_kept_connection_the_origin_closed_is_replaced_unseen",
            },
            Row {
                input: "origin stalls mid-stream",
                result: "cut after `IDLE_TIMEOUT` with the error record, no final chunk",
                targets: Targets::Native(NO_WORKER_TIMEOUTS),
                test: "tests/tests/native.rs::stalled_origin_stream_is_cut_after_idle_timeout",
            },
            Row {
                input: "a client reads its answer's head and then nothing more (64 MiB answer, its socket full)",
                result: "after `IDLE_TIMEOUT` with nothing taken the connection is reset, the origin's request cancelled (and a slot it held given back); logged `client_gone` (HTTP/1.1)",
                targets: Targets::Native("on Cloudflare the client connection is Cloudflare's front line's, not the Worker's"),
                test: "native-target/tests/stalls.rs::a_client_that_stops_reading_is_cut_after_idle_timeout",
            },
            Row {
                input: "an HTTP/2 client reads its socket but never gives one stream room again (flow control)",
                result: "after `IDLE_TIMEOUT` with a piece of the answer held (the proxy hands h2 at most 16 KiB at a time, so the limit is on 16 KiB taken, whatever the origin's reads) that stream is reset (`CANCEL`), the origin's request cancelled; logged `client_gone`; the connection's next stream is served whole",
                targets: Targets::Native("on Cloudflare the client connection is Cloudflare's front line's, not the Worker's"),
                test: "native-target/tests/stalls.rs::an_http2_client_holding_its_answer_back_gets_the_stream_reset",
            },
            Row {
                input: "an HTTP/2 client gives a stream room back slowly but steadily (64 KiB per 100 ms, 2 MiB, `IDLE_TIMEOUT=300ms`), for a streamed answer and for one answer of known length",
                result: "never cut: each piece handed out is taken within the limit",
                targets: Targets::Native("on Cloudflare the client connection is Cloudflare's front line's, not the Worker's"),
                test: "native-target/tests/stalls.rs::an_http2_client_reading_slowly_is_not_cut",
            },
            Row {
                input: "a client reads a 6 MiB answer slowly but steadily (≈ 1 MiB/s) with `IDLE_TIMEOUT=1s` — the kernel reports its socket writable again only after a third of a multi-megabyte buffer drains",
                result: "never cut: what counts is bytes the client takes (the socket's unsent queue shrinking), not writes that go through",
                targets: Targets::Native("on Cloudflare the client connection is Cloudflare's front line's, not the Worker's"),
                test: "native-target/tests/stalls.rs::a_slow_but_steady_reader_is_not_cut",
            },
            Row {
                input: "origin answers 400, 404, 418, 500, 503",
                result: "passed through as is, status and body",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::origin_status_and_body_pass_through",
            },
            Row {
                input: "an LLM answer sent gzip-encoded with its `Content-Length` (a compressing proxy in front of Ollama)",
                result: "arrives whole (at the edge workerd decodes it for the meter and encodes it again; the encoded length no longer frames the stream)",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::an_encoded_answer_with_a_length_arrives_whole",
            },
            Row {
                input: "origin sends bytes past the end of its answer (after a small answer, and after a large one)",
                result: "its connection is never used again; the next request goes on a new one",
                targets: Targets::Native("workerd keeps its own connections to origins"),
                test: "native-target/tests/origin_wire.rs::bytes_past_an_answer_keep_its_connection_from_being_used_again",
            },
            Row {
                input: "origin answers early (413) and closes before reading a 20 MiB body",
                result: "the client gets the 413 and its body, every time (writing the rest fails; the answer is still read)",
                targets: Targets::Native("the Worker's subrequests go through workerd's own HTTP client"),
                test: "native-target/tests/origin_wire.rs::an_early_answer_stands_when_the_origin_closes_before_the_body",
            },
            Row {
                input: "origin's answer framed twice (`Content-Length` and `Transfer-Encoding: chunked`)",
                result: "502, as such a request is refused (passed on, the length would cut the chunked body)",
                targets: Targets::Native("the Worker's subrequests go through workerd's own HTTP client"),
                test: "native-target/tests/origin_wire.rs::an_answer_framed_twice_is_refused",
            },
            Row {
                input: "two of three boxes refuse connections before the proxy notices; a request with a body",
                result: "tried on each in turn; the third gets the body whole, once",
                targets: Targets::Native("at the edge workerd cannot tell a refused connection from a lost one, so a request with a body is not sent again"),
                test: "tests/src/boxes.rs::a_request_that_could_not_connect_goes_to_the_next_box",
            },
        ],
    },
    Section {
        title: "Clients",
        rows: &[
            Row {
                input: "client disconnects mid-stream",
                result: "the origin request is cancelled (the origin sees its connection close)",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::client_disconnect_mid_stream_reaches_origin",
            },
            Row {
                input: "client disconnects before the response head",
                result: "the origin request is cancelled",
                targets: Targets::Native("workerd does not read the client socket then, so it cannot notice (a plain JS Worker behaves the same)"),
                test: "tests/src/scenarios.rs::client_disconnect_before_response_reaches_origin",
            },
            Row {
                input: "two boxes; a client's chunked upload cut mid-body (its write side closed)",
                result: "400 `bad_request`; the box is not held responsible: the next request for the model goes to it again",
                targets: Targets::Both,
                test: "tests/src/boxes.rs::an_upload_its_client_breaks_is_not_the_boxs_failure",
            },
            Row {
                input: "`GET` with a body",
                result: "answered; natively the body goes on, at the edge the request goes without it (workerd cannot send one) — no box is marked failed",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::a_get_with_a_body_is_answered",
            },
            Row {
                input: "a client announces a longer body than it sends (a declared length, or a chunk), then ends its input",
                result: "400 `bad_request`, not 502: the client's failure, not the origin's; nothing complete reaches the origin. At the edge a body of declared length is piped into a `FixedLengthStream` of the Worker's own (the origin still gets its `Content-Length`) — passed to `fetch` as it came, workerd reported its break as the origin's",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::a_body_its_client_breaks_gets_400",
            },
            Row {
                input: "an origin that resets its connection in the middle of an 8 MiB upload of declared length",
                result: "502 `origin_unreachable`: the origin's failure, not the client's (at the edge the body is piped by the runtime into a `FixedLengthStream`; a pipe that fails while the subrequest is still on is the client's)",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::an_origin_that_breaks_off_an_upload_gets_502",
            },
            Row {
                input: "client leaves while the origin has not answered yet",
                result: "the origin request is cancelled; logged with status 499, outcome `client_gone`, and counted",
                targets: Targets::Native("workerd does not read the client socket then, so it cannot notice (a plain JS Worker behaves the same)"),
                test: "native-target/tests/origin_wire.rs::a_client_that_leaves_before_its_answer_is_logged_and_cancels_it",
            },
            Row {
                input: "client's chunked upload breaks after the origin began to answer",
                result: "the answer is cut; logged `client_gone` with `bad_request`; no record blaming the origin in the stream, no mark against its box",
                targets: Targets::Native("the Worker gets the client's body from workerd's own server"),
                test: "native-target/tests/origin_wire.rs::a_client_body_that_fails_after_an_early_answer_is_not_the_origins_fault",
            },
            Row {
                input: "upload that takes longer than `RESPONSE_TIMEOUT` (2.4 s against 1 s, each piece within `IDLE_TIMEOUT`)",
                result: "goes through and is answered: the wait for the answer counts from the body's last write",
                targets: Targets::Native(NO_WORKER_TIMEOUTS),
                test: "native-target/tests/origin_wire.rs::a_slow_upload_is_not_cut_by_the_response_timeout",
            },
            Row {
                input: "headers dribbled one line every 100 ms (slowloris)",
                result: "connection closed after `HEADER_TIMEOUT`; nothing forwarded",
                targets: Targets::Native(WORKERD_FRONT),
                test: "tests/tests/native.rs::slow_header_client_is_disconnected",
            },
            Row {
                input: "300 slow-header connections at once, three times (`cargo xtask soak`: 1,000)",
                result: "every one closed at `HEADER_TIMEOUT`; nothing forwarded; memory per connection bounded, and the third wave adds less than half of what the first took",
                targets: Targets::Native(WORKERD_FRONT),
                test: "native-target/tests/load.rs::slow_header_clients_are_cut_and_memory_stays_flat",
            },
            Row {
                input: "request body stalls after 10 of 100 bytes",
                result: "408 `request_timeout` after `IDLE_TIMEOUT`; the origin sees an aborted body",
                targets: Targets::Native(NO_WORKER_TIMEOUTS),
                test: "tests/tests/native.rs::stalled_request_body_gets_408",
            },
            Row {
                input: "`Content-Length` over `MAX_BODY_BYTES`",
                result: "413 `request_too_large` before the body is read; nothing forwarded",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::body_over_limit_by_content_length_gets_413",
            },
            Row {
                input: "chunked body that crosses `MAX_BODY_BYTES`",
                result: "413; the origin sees an aborted body, never a truncated complete one",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::chunked_body_over_limit_is_cut_off",
            },
        ],
    },
    Section {
        title: "Load and shutdown",
        rows: &[
            Row {
                input: "200 slow NDJSON streams at once, twice, with small requests alongside (`cargo xtask soak`: 1,000 streams, six rounds, release build)",
                result: "every stream byte-identical to the origin's; no small request takes 10 s; memory per open stream bounded and growth settling round over round",
                targets: Targets::Native("workerd here is a test runtime, not Cloudflare's edge"),
                test: "native-target/tests/load.rs::slow_streams_and_small_requests_complete_intact",
            },
            Row {
                input: "SIGTERM with a stream open, within the grace period",
                result: "the stream finishes; exit 0",
                targets: Targets::Native("Workers have no shutdown"),
                test: "native-target/tests/binary.rs::logs_each_request_and_drains_on_sigterm",
            },
            Row {
                input: "SIGTERM with a stream longer than the grace period",
                result: "new connections refused at once; the stream is cut when the grace period ends; the last log line says how many connections were cut; exit 0",
                targets: Targets::Native("Workers have no shutdown"),
                test: "native-target/tests/binary.rs::sigterm_refuses_new_connections_and_cuts_streams_past_the_grace_period",
            },
        ],
    },
    Section {
        title: "Keys and model policy",
        rows: &[
            Row {
                input: "a keys document with an unknown field, a bad glob, a bad date, a duplicate name or token, both `token` and `token_sha256`, or no TOML at all",
                result: "a config error naming the key and the field (or the line), never a value: exit 2 natively",
                targets: Targets::Native("the Worker answers 500 `proxy_misconfigured` and logs the same line: tests/tests/worker.rs"),
                test: "native-target/tests/keys_file.rs::keys_file_errors_name_the_key_and_field_and_exit_2",
            },
            Row {
                input: "the same, every rule",
                result: "each problem named, no token in any message",
                targets: Targets::Core,
                test: "core/src/keys_tests.rs::problems_never_show_a_value",
            },
            Row {
                input: "an expired key, a disabled key, a key's SHA-256 presented as a token",
                result: "401 `expired_api_key` / `disabled_api_key` / `invalid_api_key` with `WWW-Authenticate`; nothing forwarded",
                targets: Targets::Both,
                test: "tests/src/policy.rs::keys_document_tokens_and_their_states",
            },
            Row {
                input: "the keys file rewritten while a stream runs; a broken file; SIGHUP",
                result: "the revoked key is refused at its next request, the stream runs to its end, a broken file keeps the keys in force (logged, `config_reloads_total{result=\"error\"}`), never no keys",
                targets: Targets::Native("on the Worker the keys are a secret: a new deployment replaces them"),
                test: "native-target/tests/keys_file.rs::keys_file_reloads_on_change_and_sighup_keeping_streams_and_old_keys_on_error",
            },
            Row {
                input: "arbitrary bytes, split at arbitrary points, through the JSON scanner",
                result: "the same events and outcome however split; valid JSON read to its last byte and agreeing with a full parse",
                targets: Targets::Core,
                test: "core/src/json_scan_tests.rs::splits_never_change_the_scan",
            },
            Row {
                input: "request bodies naming models anywhere (any case, escaped, twice, nested, null), split at arbitrary points, through the model gate",
                result: "the gate decides as a full parse does; never passes the byte that completes the object before deciding; passes every byte of an allowed body",
                targets: Targets::Core,
                test: "core/src/model_gate_tests.rs::agrees_with_a_full_parse_however_split",
            },
            Row {
                input: "an allowed model, then in a later chunk a second `model` member",
                result: "400 `duplicate_model`; the upload is aborted before the object completes, so Ollama sees an incomplete request",
                targets: Targets::Both,
                test: "tests/src/policy.rs::a_later_second_model_aborts_the_upload",
            },
            Row {
                input: "a 3 MiB chat body with the model at its end, in pieces",
                result: "forwarded byte for byte once the model is read (held until then, within `MAX_BODY_BYTES`)",
                targets: Targets::Both,
                test: "tests/src/policy.rs::allowed_bodies_stream_on_intact",
            },
            Row {
                input: "a key limited to some models sends a body in pieces; the origin answers (echoes) before the last piece",
                result: "the gate reads on to the body's end and the answer streams on whole; at the edge the gate was dropped with the answer's head and the next piece, taken for a refusal, cut the answer",
                targets: Targets::Both,
                test: "tests/src/policy.rs::an_answer_before_the_whole_body_streams_on",
            },
            Row {
                input: "`/api/tags`, `/api/ps`, `/v1/models` for keys with and without lists",
                result: "only the key's models listed; the rest of the answer byte for byte; a listing that cannot be read is 502 `origin_listing_unreadable`, never passed on",
                targets: Targets::Both,
                test: "tests/src/policy.rs::listings_show_only_the_keys_models",
            },
            Row {
                input: "keys documents (hashed, plain, expired, disabled, management keys) with bodies naming models anywhere, split at random points, on random routes (generated)",
                result: "both targets give the same answer and forward the same thing, or nothing",
                targets: Targets::Both,
                test: "tests/tests/cross_target.rs::native_and_worker_agree",
            },
            Row {
                input: "the OpenAI JS SDK in headless Chromium, from another origin",
                result: "chat, a live stream, the filtered model list; `AuthenticationError` for a wrong key, `PermissionDeniedError` for a model outside the list",
                targets: Targets::Both,
                test: "tests/tests/browser.rs::sdk_in_chromium",
            },
            Row {
                input: "`MAX_CONCURRENT=1`; a request whose answer's head comes after 36 s (longer than a turn's 30 s lease), then another",
                result: "the first keeps its slot until its answer ends and the second waits for it (at the edge the lease is renewed from the turn on, every 5 s)",
                targets: Targets::Both,
                test: "tests/src/fair.rs::a_slow_answer_keeps_its_slot_until_it_ends",
            },
            Row {
                input: "`MAX_CONCURRENT=1`; an image generation streaming (a route that runs a model but is not read for usage), then a chat",
                result: "the stream keeps its slot until its last byte and the chat waits for it (at the edge its answer goes through a pass-through whose end gives the lease back; before, the lease went back when the head came)",
                targets: Targets::Both,
                test: "tests/src/fair.rs::an_unmetered_generation_keeps_its_slot_until_it_ends",
            },
            Row {
                input: "`MAX_CONCURRENT=1`; a key with `requests_per_minute = 3` and a model list asks for a model not on it in the body, then for one on it",
                result: "403 `model_not_allowed` once the gate has read the body, after the request's turn (it counts: `x-ratelimit-remaining-requests: 2`); its slot is given back at once, so the allowed request is served without waiting; only it reached Ollama",
                targets: Targets::Both,
                test: "tests/src/fair.rs::a_body_its_model_list_refuses_gives_its_slot_back",
            },
            Row {
                input: "`MAX_CONCURRENT=1`; a request waits for the slot, is granted it, and its answer's head comes 14 s later (past the 10 s a granted slot waits to be claimed at the edge); then a third request",
                result: "the granted request keeps its slot until its answer ends and the third waits for it (at the edge its isolate claims the slot as the grant arrives; a slot nobody claims — its client gone while it waited — goes to the next in line after 10 s instead of a lease's 30)",
                targets: Targets::Both,
                test: "tests/src/fair.rs::a_slot_granted_after_a_wait_is_kept_until_its_answer_ends",
            },
            Row {
                input: "`MAX_CONCURRENT=1`, `MAX_QUEUE=1`; a long stream holds the slot, two more requests at once",
                result: "one waits in the queue and is served once the stream ends; the other finds the queue full: 503 `server_busy` with `Retry-After` (at the edge the queue is the doorman object's, the waiting call held open)",
                targets: Targets::Both,
                test: "tests/src/fair.rs::max_concurrent_queues_and_refuses_past_max_queue",
            },
            Row {
                input: "`MAX_CONCURRENT=1`, `QUEUE_TIMEOUT=1s`; a 5 s stream holds the slot, another request waits",
                result: "503 `server_busy` with `Retry-After` at its deadline, before the slot is free (at the edge the object's own timer answers it)",
                targets: Targets::Both,
                test: "tests/src/fair.rs::a_request_that_waits_too_long_gets_503",
            },
            Row {
                input: "a key limited to 2 requests a minute uses them up; the doorman's Durable Object starts again (workerd restarted on the same storage, as a deployment does; an object evicted after ~10 s idle reads its storage back the same way)",
                result: "the key's next request is still refused with 429 and `Retry-After` (its bucket was read back, not started full); the core's model of it decides as an object never evicted, whatever the order of admissions, renewals, releases and evictions",
                targets: Targets::Worker("natively the doorman is the process's own memory"),
                test: "tests/tests/worker.rs::a_keys_rate_holds_across_a_doorman_restart",
            },
        ],
    },
    Section {
        title: "Security",
        rows: &[
            Row {
                input: "arbitrary request heads (fuzzed bytes: methods, targets, header names and values)",
                result: "no panic; nothing forwarded without a configured token; forwarded requests go to the origin with no proxy credential, hop-by-hop header or non-ASCII value; local answers are JSON",
                targets: Targets::Core,
                test: "core/tests/fuzz.rs::any_request_head",
            },
            Row {
                input: "arbitrary configuration strings (fuzzed)",
                result: "parsed or refused, never a panic; no secret in an error, `Debug` or the redacted summary",
                targets: Targets::Core,
                test: "core/tests/fuzz.rs::any_configuration",
            },
            Row {
                input: "wrong, near-miss, repeated and comma-joined tokens in either header",
                result: "401, nothing forwarded; one header with several credentials never authenticates",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::wrong_tokens_get_401_and_nothing_is_forwarded",
            },
            Row {
                input: "`%2e%2e`, `//`, dot segments, absolute-form targets, `OPTIONS` without preflight headers, random methods (generated)",
                result: "both targets give the same answer and forward the same thing, or nothing",
                targets: Targets::Both,
                test: "tests/tests/cross_target.rs::native_and_worker_agree",
            },
            Row {
                input: "token comparison",
                result: "constant time per configured token (`subtle`), every token compared (no early exit)",
                targets: Targets::Core,
                test: "core/src/auth_tests.rs::accepts_each_key_by_name",
            },
            Row {
                input: "a request with a valid token and a wrong one presented later; a query string",
                result: "no token (configured or presented) and no query string in any log line",
                targets: Targets::Native("the Worker's JSON log line is tested for the same in tests/tests/worker.rs"),
                test: "native-target/tests/binary.rs::logs_each_request_and_drains_on_sigterm",
            },
            Row {
                input: "browser origin outside `CORS_ALLOWED_ORIGINS`",
                result: "no `Access-Control-Allow-Origin`; `Vary: Origin` present",
                targets: Targets::Both,
                test: "tests/src/scenarios.rs::preflight_from_foreign_origin_is_not_allowed",
            },
        ],
    },
];

const BEGIN: &str = "<!-- generated by tests/src/report.rs: begin -->";
const END: &str = "<!-- generated by tests/src/report.rs: end -->";

/// The generated part of the report, markers included.
pub fn render() -> String {
    let mut out = format!("{BEGIN}\n\n## Hostile requests\n\n");
    out.push_str(
        "Sent byte for byte on a fresh connection with a valid token, so that only the \
         malformation can stop them; then a valid request confirms the proxy still serves \
         and shows what reached the origin. The Worker column is local workerd (tests, \
         `wrangler dev`); on Cloudflare the client's HTTP is parsed by Cloudflare's front \
         line before the Worker runs.\n\n",
    );
    out.push_str(&crate::hostile::report_table());
    out.push_str("\n## Model policy: bypass attempts\n\n");
    out.push_str(
        "A keys document limits keys to some models. Each attempt below is sent to both \
         targets (`tests/src/policy.rs::ATTEMPTS`, run by \
         `tests/src/scenarios.rs::model_policy_holds_on_every_route`); `mistral` is on the \
         box and outside every list. A refusal names the model asked for, never the key's \
         list, and nothing reaches Ollama.\n\n",
    );
    out.push_str(&crate::policy::report_table());
    for section in SECTIONS {
        out.push_str(&format!(
            "\n## {}\n\n| input | result | checked on | test |\n|---|---|---|---|\n",
            section.title
        ));
        for row in section.rows {
            let targets = match row.targets {
                Targets::Both => "native + Worker".to_owned(),
                Targets::Core => "core (both)".to_owned(),
                Targets::Native(why) => format!("native ({why})"),
                Targets::Worker(why) => format!("Worker ({why})"),
            };
            out.push_str(&format!(
                "| {} | {} | {targets} | `{}` |\n",
                row.input, row.result, row.test
            ));
        }
    }
    out.push_str(&format!("\n{END}\n"));
    out
}

/// Replaces the generated part of `doc` with `generated`; `None` when the
/// markers are missing.
pub fn splice(doc: &str, generated: &str) -> Option<String> {
    let start = doc.find(BEGIN)?;
    let end = doc.find(END)? + END.len();
    let end = end + usize::from(doc[end..].starts_with('\n'));
    Some(format!("{}{generated}{}", &doc[..start], &doc[end..]))
}

/// The rows whose named test function is missing from the named file.
pub fn missing_tests(root: &std::path::Path) -> Vec<&'static str> {
    SECTIONS
        .iter()
        .flat_map(|s| s.rows.iter())
        .filter(|row| {
            let Some((file, name)) = row.test.split_once("::") else {
                return true;
            };
            let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            !text.contains(&format!("fn {name}(")) && !text.contains(&format!("fn {name}<"))
        })
        .map(|row| row.test)
        .collect()
}
