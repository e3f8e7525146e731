//! The native proxy and the Worker (in workerd) behave the same: generated
//! exchanges run through both, in front of one recording origin, and
//! everything is compared — what the client got (status, headers, body) and
//! what the origin saw (method, target, headers, body). For LLM answers the
//! usage each target read (from its log line) is compared too.
//!
//! `PROPTEST_CASES` sets the number of cases (default below); failures are
//! kept in `proptest-regressions/cross_target.txt` and replayed first.

#[path = "common/native.rs"]
mod native_target;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use native_target::Native;
use ollama_proxy_tests::exchange::{boxes_case, case, usage_case, Case, CaseConfig};
use ollama_proxy_tests::workerd::{Running, Workerd};
use ollama_proxy_tests::{wire, MockOrigin, Target};
use proptest::prelude::ProptestConfig;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};

/// Default number of generated cases when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;
/// Default number of LLM answer cases (`OLLAMA_PROXY_USAGE_CASES`).
const DEFAULT_USAGE_CASES: u32 = 96;
/// Default number of cases in front of three boxes
/// (`OLLAMA_PROXY_BOXES_CASES`).
const DEFAULT_BOXES_CASES: u32 = 128;

/// Response headers each runtime's own HTTP layer writes, whatever the proxy
/// decides; they are left out of the comparison, and only these.
const CLIENT_RUNTIME_HEADERS: [(&str, &str); 4] = [
    ("date", "the time of each exchange (stamped by the origin, or the server when absent): differs run to run"),
    ("connection", "hyper answers the client's `Connection: close` with its own; workerd sends none"),
    ("transfer-encoding", "framing: each server chooses chunked or not; the de-chunked bodies are compared"),
    ("content-length", "framing, as above; the bodies are compared byte for byte"),
];

/// Request headers each runtime's HTTP client writes on its own.
const ORIGIN_RUNTIME_HEADERS: [(&str, &str); 2] = [
    (
        "transfer-encoding",
        "framing of the forwarded body: chunked or not; the bodies are compared",
    ),
    ("content-length", "framing, as above"),
];

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});
static ORIGIN: LazyLock<MockOrigin> = LazyLock::new(|| RUNTIME.block_on(MockOrigin::start()));
static WORKER: LazyLock<Option<Workerd>> = LazyLock::new(Workerd::find);

/// Both targets for the current configuration; restarted when it changes.
struct Launched {
    config: CaseConfig,
    native: SocketAddr,
    worker: SocketAddr,
    worker_log: Running,
    _native: Box<dyn Send>,
}

static LAUNCHED: Mutex<Option<Launched>> = Mutex::new(None);
/// The tests here share one origin and the launched targets: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

async fn targets(config: &CaseConfig) -> (SocketAddr, SocketAddr) {
    if let Some(l) = LAUNCHED
        .lock()
        .unwrap()
        .as_ref()
        .filter(|l| &l.config == config)
    {
        return (l.native, l.worker);
    }
    let vars = config.vars(&ORIGIN.url());
    let (native, native_guard) = Native.launch(&vars).await;
    let workerd = WORKER.as_ref().expect("worker checked");
    let (worker, worker_log) = tokio::task::block_in_place(|| workerd.start(&vars));
    *LAUNCHED.lock().unwrap() = Some(Launched {
        config: config.clone(),
        native,
        worker,
        worker_log,
        _native: native_guard,
    });
    (native, worker)
}

/// Headers as a map: lowercase name → values joined with ", " in order (the
/// Workers runtime combines repeated request headers into one that way,
/// which RFC 9110 §5.3 makes equivalent), without the listed runtime headers.
fn normalize(headers: &[(String, String)], runtime: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if runtime.iter().any(|(n, _)| *n == name) {
            continue;
        }
        map.entry(name)
            .and_modify(|v| *v = format!("{v}, {value}"))
            .or_insert_with(|| value.clone());
    }
    map
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct OriginSaw {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body_len: usize,
    body_hash: u64,
    body_complete: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Observed {
    status: u16,
    headers: BTreeMap<String, String>,
    body_len: usize,
    body_hash: u64,
    body_preview: String,
    origin: Option<OriginSaw>,
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: enough to tell bodies apart in a diff.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

async fn observe(addr: SocketAddr, case: &Case, body: &[u8]) -> Observed {
    ORIGIN.clear();
    ORIGIN.set_script(Some(case.origin.clone()));
    let r = &case.request;
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        wire::exchange(addr, &r.method, &r.target, &r.headers, body, &r.splits),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer within 20s from {addr}"));
    // The origin records a request before answering it, so it is there now.
    let origin = ORIGIN.requests().into_iter().next().map(origin_saw);
    observed(&got, origin, &r.headers)
}

/// A request as the origin saw it, for comparison.
fn origin_saw(seen: ollama_proxy_tests::Recorded) -> OriginSaw {
    let headers: Vec<(String, String)> = seen
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    OriginSaw {
        method: seen.method.to_string(),
        target: seen.target,
        headers: normalize(&headers, &ORIGIN_RUNTIME_HEADERS),
        body_len: seen.body.len(),
        body_hash: hash(&seen.body),
        body_complete: seen.body_complete,
    }
}

/// What the client got (and the origin saw), for comparison.
fn observed(
    got: &wire::RawResponse,
    origin: Option<OriginSaw>,
    sent: &[(String, String)],
) -> Observed {
    let mut observed = Observed {
        status: got.status,
        headers: normalize(&got.headers, &CLIENT_RUNTIME_HEADERS),
        body_len: got.body.len(),
        body_hash: hash(&got.body),
        body_preview: String::from_utf8_lossy(&got.body[..got.body.len().min(120)]).into_owned(),
        origin,
    };
    generated_ids_alike(&mut observed, sent);
    observed
}

/// A request id the proxy generated is random, so it differs between the
/// targets: check it is the same on both sides of one exchange (the client's
/// response and the origin's request) and 32 hex digits, then compare it
/// as `<generated>`. An id the client sent is compared as is.
fn generated_ids_alike(observed: &mut Observed, sent: &[(String, String)]) {
    const ID: &str = "x-request-id";
    let usable: Vec<&String> = sent
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(ID))
        .map(|(_, v)| v)
        .collect();
    let client_id = usable.len() == 1
        && !usable[0].is_empty()
        && usable[0].len() <= 128
        && usable[0].bytes().all(|b| (0x21..=0x7e).contains(&b));
    if client_id {
        return;
    }
    let Some(generated) = observed.headers.get(ID).cloned() else {
        return;
    };
    let well_formed = generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit());
    let placeholder = if well_formed {
        "<generated>"
    } else {
        "<malformed>"
    };
    observed
        .headers
        .insert(ID.to_owned(), placeholder.to_owned());
    if let Some(origin) = &mut observed.origin {
        let same = origin.headers.get(ID) == Some(&generated);
        let value = if same {
            placeholder
        } else {
            "<not the id returned to the client>"
        };
        origin.headers.insert(ID.to_owned(), value.to_owned());
    }
}

fn diff_maps(
    out: &mut String,
    what: &str,
    native: &BTreeMap<String, String>,
    worker: &BTreeMap<String, String>,
) {
    for name in native
        .keys()
        .chain(worker.keys().filter(|k| !native.contains_key(*k)))
    {
        let (n, w) = (native.get(name), worker.get(name));
        if n != w {
            let _ = writeln!(out, "  {what} header {name}: native {n:?} / worker {w:?}");
        }
    }
}

fn diff(native: &Observed, worker: &Observed) -> String {
    let mut out = String::new();
    if native.status != worker.status {
        let _ = writeln!(
            out,
            "  client status: native {} / worker {}",
            native.status, worker.status
        );
    }
    diff_maps(&mut out, "client", &native.headers, &worker.headers);
    if (native.body_len, native.body_hash) != (worker.body_len, worker.body_hash) {
        let _ = writeln!(
            out,
            "  client body: native {}B {:?} / worker {}B {:?}",
            native.body_len, native.body_preview, worker.body_len, worker.body_preview
        );
    }
    // An upload the proxy aborted (a model refused after part of the body
    // went on) never reaches Ollama's handler: whether the origin saw its
    // head, or how much of its body, is timing.
    let forwarded = |o: &Option<OriginSaw>| o.as_ref().filter(|o| o.body_complete).cloned();
    match (&forwarded(&native.origin), &forwarded(&worker.origin)) {
        (None, None) => {}
        (Some(_), None) => out.push_str("  origin: reached through native only\n"),
        (None, Some(_)) => out.push_str("  origin: reached through the worker only\n"),
        (Some(n), Some(w)) => {
            if n.method != w.method {
                let _ = writeln!(
                    out,
                    "  origin method: native {} / worker {}",
                    n.method, w.method
                );
            }
            if n.target != w.target {
                let _ = writeln!(
                    out,
                    "  origin target: native {} / worker {}",
                    n.target, w.target
                );
            }
            diff_maps(&mut out, "origin", &n.headers, &w.headers);
            if (n.body_len, n.body_hash, n.body_complete)
                != (w.body_len, w.body_hash, w.body_complete)
            {
                let _ = writeln!(
                    out,
                    "  origin body: native {}B complete={} / worker {}B complete={}",
                    n.body_len, n.body_complete, w.body_len, w.body_complete
                );
            }
        }
    }
    out
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    LazyLock::force(&ORIGIN); // started on RUNTIME, outside the block_on below
    RUNTIME.block_on(async {
        let (native, worker) = targets(&case.config).await;
        let body = case.request.body.bytes();
        let n = observe(native, case, &body).await;
        let w = observe(worker, case, &body).await;
        let differences = diff(&n, &w);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "native and worker disagree:\n{differences}"
            )))
        }
    })
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Targets whose dot segments follow an empty segment: workerd resolves
/// the literal `..` against the `%2e` before the Worker runs, so natively
/// the proxy must too. `GET //%2e/..` was forwarded as `/` natively and as
/// `//` by the Worker (found at `PROPTEST_CASES=3000`).
#[test]
fn dot_segments_after_an_empty_segment_agree() {
    if WORKER.is_none() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use ollama_proxy_tests::exchange::{BodySpec, CaseRequest, MAIN_TOKEN};
    use ollama_proxy_tests::origin::Script;
    let config = CaseConfig {
        tokens: 0,
        cors_list: false,
        authorization_header: false,
        model_management: false,
        access: false,
        base_path: false,
        keys_doc: false,
    };
    let mut failures = Vec::new();
    for target in [
        "//%2e/..",
        "//%2e/../b",
        "/a/%2e/..",
        "///%2e/..",
        "//%2E%2e/..",
        "/api/%2e/../tags",
    ] {
        let case = Case {
            config: config.clone(),
            request: CaseRequest {
                method: "GET".into(),
                target: target.into(),
                headers: vec![(
                    "cf-aig-authorization".into(),
                    format!("Bearer {MAIN_TOKEN}"),
                )],
                body: BodySpec::Bytes(Vec::new()),
                splits: Vec::new(),
            },
            origin: Script {
                status: 200,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                chunks: Vec::new(),
                content_length: true,
            },
        };
        if let Err(e) = check(&case) {
            failures.push(format!("{target}: {e}"));
        }
    }
    *LAUNCHED.lock().unwrap() = None;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The native proxy's log lines (it runs in this process), as JSON.
static NATIVE_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct NativeLog;

impl std::io::Write for NativeLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        NATIVE_LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the native proxy's log lines to [`NATIVE_LOG`], as its
/// `LOG_FORMAT=json` writes them.
static CAPTURE: LazyLock<()> = LazyLock::new(|| {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(|| NativeLog)
        .try_init();
});

/// The usage a target logged for a request: model, prompt and completion
/// tokens, and whether a first token was timed.
#[derive(Debug, PartialEq, Eq)]
struct Metered {
    model: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    first_token: bool,
}

impl Metered {
    /// From a log line: the native one writes `-` for unknown, the Worker's
    /// `null`.
    fn of(line: &serde_json::Value) -> Self {
        let known = |name: &str| match &line[name] {
            serde_json::Value::String(s) if s == "-" => None,
            serde_json::Value::Null => None,
            v => Some(v.to_string().trim_matches('"').to_owned()),
        };
        let count = |name: &str| known(name).map(|n| n.parse().expect(name));
        Self {
            model: known("model"),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            first_token: known("ttft_ms").is_some(),
        }
    }
}

/// Waits for the `request` line with `id` in `log()` past byte `from`.
async fn logged_line(log: impl Fn() -> Vec<u8>, from: usize, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = log();
        let found = String::from_utf8_lossy(&all[from.min(all.len())..])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .find(|v| v["message"] == "request" && v["request_id"] == id);
        if let Some(line) = found {
            return line;
        }
        assert!(std::time::Instant::now() < deadline, "no log line for {id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`check`], then both targets logged the same usage for the exchange.
fn check_usage(case: &Case) -> Result<(), TestCaseError> {
    LazyLock::force(&CAPTURE);
    LazyLock::force(&ORIGIN);
    RUNTIME.block_on(async {
        let (native, worker) = targets(&case.config).await;
        let body = case.request.body.bytes();
        let native_from = NATIVE_LOG.lock().unwrap().len();
        let n = observe(native, case, &body).await;
        let native_line = logged_line(
            || NATIVE_LOG.lock().unwrap().clone(),
            native_from,
            "usage-case",
        )
        .await;
        let worker_log = || {
            let launched = LAUNCHED.lock().unwrap();
            launched
                .as_ref()
                .map_or_else(Vec::new, |l| l.worker_log.log().into_bytes())
        };
        let worker_from = worker_log().len();
        let w = observe(worker, case, &body).await;
        let worker_line = logged_line(worker_log, worker_from, "usage-case").await;
        let mut differences = diff(&n, &w);
        let (native_usage, worker_usage) = (Metered::of(&native_line), Metered::of(&worker_line));
        if native_usage != worker_usage {
            let _ = writeln!(
                differences,
                "usage: native {native_usage:?}, worker {worker_usage:?}"
            );
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "native and worker disagree:\n{differences}"
            )))
        }
    })
}

/// LLM answers and the OpenAI streams whose usage the proxy asks for: the
/// same body reaches Ollama, the client gets the same answer (without the
/// usage chunk it did not ask for), and the same usage is read, wherever
/// the request and the answer are cut.
#[test]
fn llm_answers_agree_and_are_metered_alike() {
    if WORKER.is_none() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = ProptestConfig {
        cases: env_number("OLLAMA_PROXY_USAGE_CASES", DEFAULT_USAGE_CASES),
        max_shrink_iters: env_number("PROPTEST_MAX_SHRINK_ITERS", 200),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/cross_target_usage.txt",
        ))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&usage_case(), |case| check_usage(&case));
    *LAUNCHED.lock().unwrap() = None;
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}

/// Three boxes behind both targets, for [`several_boxes_agree`]: every
/// model held by more than one box is loaded on one of them, so what the
/// targets learn from their answers never changes where a request goes,
/// whatever the timing of native probes and the edge's refreshes.
static BOXES: LazyLock<Vec<MockOrigin>> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let boxes = vec![
            MockOrigin::start().await,
            MockOrigin::start().await,
            MockOrigin::start().await,
        ];
        boxes[0].set_models(
            &["llama3.2:1b", "llama3.2:latest", "qwen3:8b"],
            &["llama3.2:latest", "qwen3:8b"],
        );
        boxes[1].set_models(
            &["qwen3:8b", "mistral:latest", "llama3.2:1b"],
            &["mistral:latest", "llama3.2:1b"],
        );
        boxes[2].set_models(&["team/x:latest"], &[]);
        boxes
    })
});

/// Both targets in front of [`BOXES`], and the native pool (to wait until
/// no request is counted in flight, which decides ties).
struct LaunchedBoxes {
    config: CaseConfig,
    native: SocketAddr,
    worker: SocketAddr,
    pool: std::sync::Arc<ollama_proxy_native::Pool>,
    _worker: Running,
    _native: tokio::sync::oneshot::Sender<()>,
}

static LAUNCHED_BOXES: Mutex<Option<LaunchedBoxes>> = Mutex::new(None);

async fn box_targets(
    config: &CaseConfig,
) -> (
    SocketAddr,
    SocketAddr,
    std::sync::Arc<ollama_proxy_native::Pool>,
) {
    if let Some(l) = LAUNCHED_BOXES
        .lock()
        .unwrap()
        .as_ref()
        .filter(|l| &l.config == config)
    {
        return (l.native, l.worker, std::sync::Arc::clone(&l.pool));
    }
    *LAUNCHED_BOXES.lock().unwrap() = None;
    let mut vars = config.vars("X");
    let base = if config.base_path { "/base" } else { "" };
    let list: Vec<String> = BOXES.iter().map(|o| format!("{}{base}", o.url())).collect();
    for (name, value) in &mut vars {
        if name == "OLLAMA_ORIGIN" {
            *value = list.join(",");
        }
    }
    let mut argv = vec!["ollama-proxy".to_owned()];
    for (name, value) in &vars {
        argv.push(format!(
            "--{}={value}",
            name.to_ascii_lowercase().replace('_', "-")
        ));
    }
    let settings = <ollama_proxy_native::cli::Args as clap::Parser>::try_parse_from(argv)
        .expect("flags parse")
        .settings()
        .expect("valid config");
    let pool = std::sync::Arc::clone(&settings.pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ollama_proxy_native::serve(listener, settings, async move {
        let _ = stopped.await;
    }));
    let workerd = WORKER.as_ref().expect("worker checked");
    let (worker, worker_log) = tokio::task::block_in_place(|| workerd.start(&vars));
    // Both learn what each box has and has loaded, from the listings.
    let token = if config.tokens < 2 {
        ollama_proxy_tests::exchange::MAIN_TOKEN
    } else {
        ollama_proxy_tests::exchange::LIST_TOKENS[0]
    };
    let auth = format!("Bearer {token}");
    for addr in [native, worker] {
        for path in ["/api/ps", "/api/tags"] {
            let got = ollama_proxy_tests::client::call(
                addr,
                "GET",
                path,
                &[("cf-aig-authorization", auth.as_str())],
                ollama_proxy_tests::client::empty(),
            )
            .await;
            assert_eq!(got.status, 200, "warming {addr}{path}: {:?}", got.body);
        }
    }
    *LAUNCHED_BOXES.lock().unwrap() = Some(LaunchedBoxes {
        config: config.clone(),
        native,
        worker,
        pool: std::sync::Arc::clone(&pool),
        _worker: worker_log,
        _native: stop,
    });
    (native, worker, pool)
}

/// What the client got, and which boxes saw the request forwarded (probes,
/// which carry no request id, left out) and how.
async fn observe_boxes(addr: SocketAddr, case: &Case, body: &[u8]) -> (Observed, Vec<usize>) {
    let mut script = case.origin.clone();
    // A failing status takes the box out for a while: when the other target
    // asks, the backoff may be over or not. Ollama's own 500 instead.
    if matches!(script.status, 502..=504 | 520..=530) {
        script.status = 500;
    }
    for origin in BOXES.iter() {
        origin.clear();
        origin.set_script(Some(script.clone()));
    }
    let r = &case.request;
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        wire::exchange(addr, &r.method, &r.target, &r.headers, body, &r.splits),
    )
    .await
    .unwrap_or_else(|_| {
        let seen: Vec<Vec<String>> = BOXES
            .iter()
            .map(|o| o.requests().iter().map(|r| r.target.clone()).collect())
            .collect();
        panic!(
            "no answer within 20s from {addr} to {} {}; the boxes saw {seen:?}",
            r.method, r.target
        )
    });
    let mut reached = Vec::new();
    let mut first = None;
    for (i, origin) in BOXES.iter().enumerate() {
        let forwarded = origin
            .requests()
            .into_iter()
            .filter(|seen| seen.headers.contains_key("x-request-id"))
            .find(|seen| seen.body_complete);
        if let Some(seen) = forwarded {
            reached.push(i);
            if first.is_none() {
                first = Some(origin_saw(seen));
            }
        }
    }
    (observed(&got, first, &r.headers), reached)
}

fn check_boxes(case: &Case) -> Result<(), TestCaseError> {
    LazyLock::force(&BOXES);
    RUNTIME.block_on(async {
        let (native, worker, pool) = box_targets(&case.config).await;
        // Ties go to the box with the fewest requests in flight (natively;
        // the edge does not count them): none may be left from the last case.
        let idle = tokio::time::timeout(Duration::from_secs(10), async {
            while pool.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        if idle.is_err() {
            return Err(TestCaseError::fail(
                "native requests still in flight after 10 s",
            ));
        }
        let body = case.request.body.bytes();
        let (n, n_boxes) = observe_boxes(native, case, &body).await;
        let (w, w_boxes) = observe_boxes(worker, case, &body).await;
        let mut differences = diff(&n, &w);
        if n_boxes != w_boxes {
            let _ = writeln!(
                differences,
                "  boxes reached: native {n_boxes:?} / worker {w_boxes:?}"
            );
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "native and worker disagree (three boxes):\n{differences}"
            )))
        }
    })
}

/// The generated exchanges again, in front of three boxes holding
/// different models (some loaded): both targets send each request to the
/// same box (or, for a listing, the same boxes) and answer alike.
#[test]
fn several_boxes_agree() {
    if WORKER.is_none() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = ProptestConfig {
        cases: env_number("OLLAMA_PROXY_BOXES_CASES", DEFAULT_BOXES_CASES),
        max_shrink_iters: env_number("PROPTEST_MAX_SHRINK_ITERS", 200),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/cross_target_boxes.txt",
        ))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&boxes_case(), |case| check_boxes(&case));
    *LAUNCHED_BOXES.lock().unwrap() = None;
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}

#[test]
fn native_and_worker_agree() {
    if WORKER.is_none() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = ProptestConfig {
        cases: env_number("PROPTEST_CASES", DEFAULT_CASES),
        max_shrink_iters: env_number("PROPTEST_MAX_SHRINK_ITERS", 200),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/cross_target.txt",
        ))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| check(&case));
    // Statics are never dropped: stop the last workerd here, pass or fail.
    *LAUNCHED.lock().unwrap() = None;
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}
