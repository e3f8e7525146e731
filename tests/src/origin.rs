//! A mock Ollama origin that records what it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

type Body = BoxBody<Bytes, std::io::Error>;

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The method.
    pub method: Method,
    /// The request target: path and query, as received.
    pub target: String,
    /// Every header, as received.
    pub headers: HeaderMap,
    /// The body bytes that arrived.
    pub body: Bytes,
    /// False when the body ended with an error (the sender aborted it).
    pub body_complete: bool,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// Request heads received (a request is recorded once its body is in).
    heads: usize,
    /// Responses or handlers abandoned because the client went away.
    disconnects: usize,
    /// Connections accepted.
    connections: usize,
}

/// A running mock origin. Dropping it stops the server.
pub struct MockOrigin {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
    script: Arc<Mutex<Option<Script>>>,
    changed: watch::Receiver<u64>,
    models: Arc<Mutex<Option<Models>>>,
    killed: watch::Sender<bool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What a mock lists instead of [`MODELS`]: its models (`/api/tags`,
/// `/v1/models`) and those loaded (`/api/ps`).
#[derive(Clone, Debug, Default)]
struct Models {
    all: Vec<String>,
    loaded: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
    script: Arc<Mutex<Option<Script>>>,
    models: Arc<Mutex<Option<Models>>>,
}

/// A scripted answer: when set, the origin answers every request with it,
/// whatever the path (after reading and recording the request).
#[derive(Clone, PartialEq, Eq)]
pub struct Script {
    /// The status.
    pub status: u16,
    /// Headers, in order, names as written.
    pub headers: Vec<(String, String)>,
    /// The body, sent as one frame per chunk.
    pub chunks: Vec<Bytes>,
    /// Whether to declare `Content-Length` (otherwise the body is chunked).
    pub content_length: bool,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
        self.changed.send_modify(|n| *n += 1);
    }
}

impl MockOrigin {
    /// Starts the origin on an ephemeral loopback port, over plain http.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts the origin over https, with the certificate for `localhost`
    /// from `tests/fixtures/tls` (signed by the test CA in [`TEST_CA_PEM`]).
    pub async fn start_tls() -> Self {
        Self::start_with(Some(tls_acceptor())).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock origin");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, changed) = watch::channel(0);
        let script = Arc::new(Mutex::new(None));
        let models = Arc::new(Mutex::new(None));
        let shared = Shared {
            state: Arc::clone(&state),
            changed: Arc::new(tx),
            script: Arc::clone(&script),
            models: Arc::clone(&models),
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (killed, kill) = watch::channel(false);
        let mut kill_accept = kill.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                    _ = &mut stopped => return,
                    _ = kill_accept.wait_for(|k| *k) => return,
                };
                shared.update(|s| s.connections += 1);
                let shared = shared.clone();
                let tls = tls.clone();
                let mut kill = kill.clone();
                tokio::spawn(async move {
                    let serve = async move {
                        match tls {
                            None => serve_connection(TokioIo::new(stream), shared).await,
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve_connection(TokioIo::new(stream), shared).await;
                                }
                            }
                        }
                    };
                    // Killed: every connection drops, mid-answer or not.
                    tokio::select! {
                        () = serve => {}
                        _ = kill.wait_for(|k| *k) => {}
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            state,
            script,
            changed,
            models,
            killed,
            _stop: stop,
        }
    }

    /// Lists `all` as its models and `loaded` as those loaded, instead of
    /// [`MODELS`] and [`PS`].
    pub fn set_models(&self, all: &[&str], loaded: &[&str]) {
        *self.models.lock().unwrap() = Some(Models {
            all: all.iter().map(|m| (*m).to_owned()).collect(),
            loaded: loaded.iter().map(|m| (*m).to_owned()).collect(),
        });
    }

    /// Dies: stops listening (connecting is refused from now on) and drops
    /// every connection, answers half-sent included, as a box that loses
    /// power or whose Ollama crashes.
    pub fn kill(&self) {
        let _ = self.killed.send(true);
    }

    /// The origin's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }

    /// The address the origin listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers every following request with `script` (or, with `None`, goes
    /// back to the Ollama-like routes).
    pub fn set_script(&self, script: Option<Script>) {
        *self.script.lock().unwrap() = script;
    }

    /// Forgets the requests and disconnects recorded so far.
    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap();
        state.requests.clear();
        state.disconnects = 0;
        state.heads = 0;
    }

    /// Every request received so far, in order of completion.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// How many times a client went away before a response was complete.
    pub fn disconnects(&self) -> usize {
        self.state.lock().unwrap().disconnects
    }

    /// Waits (bounded) for the one request of a test to be recorded, and
    /// checks that its body arrived aborted, not complete.
    pub async fn expect_one_aborted_upload(&self) {
        self.wait_until(
            Duration::from_secs(10),
            "the origin to record the aborted upload",
            |r, _| r.len() == 1,
        )
        .await;
        assert!(
            !self.requests()[0].body_complete,
            "the origin saw a complete body"
        );
    }

    /// Waits (bounded) until `n` request heads have arrived, before their
    /// bodies are complete.
    pub async fn wait_for_heads(&self, n: usize, limit: Duration) {
        let mut changed = self.changed.clone();
        let waited = tokio::time::timeout(limit, async {
            while self.state.lock().unwrap().heads < n {
                changed.changed().await.expect("origin alive");
            }
        })
        .await;
        assert!(waited.is_ok(), "origin: no request head within {limit:?}");
    }

    /// Waits until `done` holds for the recorded requests and disconnect
    /// count, failing the test after `limit` (a bound, not a delay).
    pub async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[Recorded], usize) -> bool,
    ) {
        let mut changed = self.changed.clone();
        let check = || {
            let s = self.state.lock().unwrap();
            done(&s.requests, s.disconnects)
        };
        let waited = tokio::time::timeout(limit, async {
            while !check() {
                changed.changed().await.expect("origin alive");
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "origin: gave up after {limit:?} waiting for {what}"
        );
    }
}

/// The test CA that signed the mock origin's https certificate.
pub const TEST_CA_PEM: &[u8] = include_bytes!("../fixtures/tls/ca.pem");
const LOCALHOST_CERT_PEM: &[u8] = include_bytes!("../fixtures/tls/localhost.pem");
const LOCALHOST_KEY_PEM: &[u8] = include_bytes!("../fixtures/tls/localhost.key");

fn tls_acceptor() -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(LOCALHOST_CERT_PEM)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(LOCALHOST_KEY_PEM).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

async fn serve_connection<IO>(io: TokioIo<IO>, shared: Shared)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| respond(shared.clone(), req));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

/// Marks a response abandoned (client gone) when dropped before `finish`.
struct Watch {
    shared: Shared,
    finished: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.update(|s| s.disconnects += 1);
        }
    }
}

async fn respond(shared: Shared, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    shared.update(|s| s.heads += 1);
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.to_string());
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let param = |name: &str| -> Option<u64> {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    let chunks = param("chunks").unwrap_or(3);
    let delay = Duration::from_millis(param("delay_ms").unwrap_or(0));

    if path == "/echo" {
        // Streams the request body back as it arrives and records it at the end.
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let recorded = Recorded {
            method: parts.method,
            target,
            headers: parts.headers,
            body: Bytes::new(),
            body_complete: false,
        };
        let shared2 = shared.clone();
        tokio::spawn(async move {
            let mut body = body;
            let mut all = Vec::new();
            let mut complete = true;
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            all.extend_from_slice(&data);
                            let _ = tx.send(data).await;
                        }
                    }
                    Some(Err(_)) => {
                        complete = false;
                        break;
                    }
                    None => break,
                }
            }
            shared2.update(|s| {
                s.requests.push(Recorded {
                    body: all.into(),
                    body_complete: complete,
                    ..recorded
                })
            });
        });
        return Ok(stream_response("application/octet-stream", rx));
    }

    // Every other route reads the whole body first, like Ollama does.
    let (bytes, complete) = match body.collect().await {
        Ok(collected) => (collected.to_bytes(), true),
        Err(_) => (Bytes::new(), false),
    };
    // An OpenAI request without `"stream":true` gets one JSON answer; a
    // stream gets a usage chunk when the request asked for one. Read as
    // Ollama reads it: the first JSON value, the last of repeated members.
    let first: serde_json::Value = serde_json::Deserializer::from_slice(&bytes)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    let streamed = first["stream"] == true;
    let usage_asked = first["stream_options"]["include_usage"] == true;
    shared.update(|s| {
        s.requests.push(Recorded {
            method: parts.method.clone(),
            target,
            headers: parts.headers.clone(),
            body: bytes,
            body_complete: complete,
        })
    });
    // An answer whose head comes late (a model loading, a generation not
    // streamed).
    if let Some(ms) = param("head_delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    let listed = shared.models.lock().unwrap().clone();
    // Under any base path, and before any script.
    let listing = ["/api/tags", "/api/ps", "/v1/models"]
        .into_iter()
        .find(|l| path.ends_with(l));
    if let (Some(models), Some(listing)) = (listed, listing) {
        let names = if listing == "/api/ps" {
            &models.loaded
        } else {
            &models.all
        };
        let body = if listing == "/v1/models" {
            let entries: Vec<String> = names
                .iter()
                .map(|n| {
                    format!(r#"{{"id":"{n}","object":"model","created":1,"owned_by":"library"}}"#)
                })
                .collect();
            format!(r#"{{"object":"list","data":[{}]}}"#, entries.join(","))
        } else {
            let entries: Vec<String> = names
                .iter()
                .map(|n| format!(r#"{{"name":"{n}","model":"{n}","size":1}}"#))
                .collect();
            format!(r#"{{"models":[{}]}}"#, entries.join(","))
        };
        return Ok(Response::builder()
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(body)).map_err(never).boxed())
            .unwrap());
    }
    let scripted = shared.script.lock().unwrap().clone();
    if let Some(script) = scripted {
        return Ok(scripted_response(script));
    }

    let response = match path.as_str() {
        "/api/version" => json(StatusCode::OK, r#"{"version":"0.0.0-mock"}"#),
        "/api/tags" => json(StatusCode::OK, TAGS),
        "/api/ps" => json(StatusCode::OK, PS),
        "/v1/models" => json(StatusCode::OK, OPENAI_MODELS),
        "/api/embed" => json(StatusCode::OK, EMBED),
        "/v1/embeddings" => json(StatusCode::OK, OPENAI_EMBEDDINGS),
        "/api/chat" | "/api/generate" => {
            // The final line carries Ollama's counts and durations (no
            // prompt count with `?cached=1`, as when Ollama reused a cached
            // prompt); /api/generate's also its `context`.
            let cached = param("cached") == Some(1);
            let load_ns = param("load_ms").unwrap_or(2) * 1_000_000;
            let lines = (0..chunks).map(|i| {
                if i + 1 < chunks {
                    return Bytes::from(format!("{{\"model\":\"llama3.2:1b\",\"message\":{{\"role\":\"assistant\",\"content\":\"tok{i} \"}},\"done\":false}}\n"));
                }
                let prompt = if cached { String::new() } else { format!(",\"prompt_eval_count\":{MOCK_PROMPT_TOKENS}") };
                let context = if path == "/api/generate" { ",\"context\":[1,2,3,4,5,6,7,8,9,10]" } else { "" };
                Bytes::from(format!(
                    "{{\"model\":\"llama3.2:1b\",\"message\":{{\"role\":\"assistant\",\"content\":\"tok{i} \"}},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":{},\"load_duration\":{load_ns}{prompt},\"eval_count\":{chunks},\"eval_duration\":{}{context}}}\n",
                    load_ns + chunks * 20_000_000,
                    chunks * 20_000_000,
                ))
            });
            if param("gzip") == Some(1) {
                // Whole and encoded, with its length (as a compressing
                // proxy in front of Ollama would send it).
                let plain: Vec<u8> = lines.flat_map(|l| l.to_vec()).collect();
                let encoded = gzip_stored(&plain);
                Response::builder()
                    .header("content-type", "application/x-ndjson")
                    .header("content-encoding", "gzip")
                    .header("content-length", encoded.len())
                    .body(Full::new(Bytes::from(encoded)).map_err(never).boxed())
                    .unwrap()
            } else {
                paced(&shared, "application/x-ndjson", lines.collect(), delay)
            }
        }
        "/v1/chat/completions" if !streamed => json(StatusCode::OK, CHAT_COMPLETION),
        "/v1/completions" if !streamed => json(StatusCode::OK, COMPLETION),
        "/v1/chat/completions" | "/v1/completions" => {
            let (object, piece) = if path == "/v1/completions" {
                ("text_completion", "\"text\":\"tok{} \"")
            } else {
                (
                    "chat.completion.chunk",
                    "\"delta\":{\"content\":\"tok{} \"}",
                )
            };
            let mut events: Vec<Bytes> = (0..chunks)
                .map(|i| Bytes::from(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"{object}\",\"model\":\"llama3.2:1b\",\"choices\":[{{\"index\":0,{}}}]}}\n\n", piece.replace("{}", &i.to_string()))))
                .collect();
            if usage_asked {
                events.push(Bytes::from(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"{object}\",\"model\":\"llama3.2:1b\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{MOCK_PROMPT_TOKENS},\"completion_tokens\":{chunks},\"total_tokens\":{}}}}}\n\n", MOCK_PROMPT_TOKENS + chunks)));
            }
            events.push(Bytes::from_static(b"data: [DONE]\n\n"));
            paced(&shared, "text/event-stream", events, delay)
        }
        "/v1/messages" if !streamed => json(StatusCode::OK, ANTHROPIC_MESSAGE),
        // An Anthropic Messages stream as Ollama writes it, paced like
        // /api/chat's: its counts come in `message_delta`. With `?cut=1` it
        // breaks off after the content (Ollama gone mid-answer).
        "/v1/messages" => {
            let mut events = anthropic_start(1).to_vec();
            events.extend((0..chunks).map(|i| anthropic_delta(&format!("tok{i} "))));
            if param("cut") == Some(1) {
                return Ok(paced_then_broken(&shared, events, delay));
            }
            events.push(anthropic_end(MOCK_PROMPT_TOKENS, chunks));
            paced(&shared, "text/event-stream", events, delay)
        }
        // Image generation (Ollama runs a model; its answer counts no
        // tokens), as progress lines paced like /api/chat's.
        "/v1/images/generations" => {
            let lines: Vec<Bytes> = (0..chunks)
                .map(|i| {
                    Bytes::from(format!(
                        "{{\"status\":\"tok{i}\",\"completed\":{i},\"total\":{chunks}}}\n"
                    ))
                })
                .collect();
            paced(&shared, "application/x-ndjson", lines, delay)
        }
        "/big" => {
            let size = param("bytes").unwrap_or(1 << 20) as usize;
            let data = Bytes::from(pattern(size));
            let pieces: Vec<Bytes> = (0..size)
                .step_by(64 * 1024)
                .map(|at| data.slice(at..(at + 64 * 1024).min(size)))
                .collect();
            paced(&shared, "application/octet-stream", pieces, Duration::ZERO)
        }
        "/hang" => {
            // Never answers; notices when the caller gives up.
            let _watch = Watch {
                shared: shared.clone(),
                finished: false,
            };
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/headers" => {
            let mut r = json(StatusCode::OK, r#"{"ok":true}"#);
            let h = r.headers_mut();
            h.insert(
                "access-control-allow-origin",
                "http://origin-own.example".parse().unwrap(),
            );
            h.insert("access-control-allow-credentials", "true".parse().unwrap());
            h.insert("connection", "x-origin-hop".parse().unwrap());
            h.insert("x-origin-hop", "1".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("vary", "Accept-Encoding".parse().unwrap());
            h.insert("x-origin-kept", "yes".parse().unwrap());
            // What Cloudflare Access answers a service token with.
            h.append(
                "set-cookie",
                "CF_Authorization=eyJhbGciOi.session.jwt; Path=/; Secure; HttpOnly"
                    .parse()
                    .unwrap(),
            );
            h.append("set-cookie", "other=1; Path=/".parse().unwrap());
            r
        }
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..]
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::IM_A_TEAPOT);
            json(code, r#"{"error":"from origin"}"#)
        }
        _ => json(StatusCode::NOT_FOUND, "404 page not found"),
    };
    Ok(response)
}

impl std::fmt::Debug for Script {
    /// Chunks print as lengths with a short preview, so a failing case stays readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chunks: Vec<String> = self
            .chunks
            .iter()
            .map(|c| {
                format!(
                    "{}B {:?}",
                    c.len(),
                    String::from_utf8_lossy(&c[..c.len().min(16)])
                )
            })
            .collect();
        f.debug_struct("Script")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("chunks", &chunks)
            .field("content_length", &self.content_length)
            .finish()
    }
}

fn scripted_response(script: Script) -> Response<Body> {
    let mut builder = Response::builder().status(script.status);
    for (name, value) in &script.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if script.content_length {
        let len: usize = script.chunks.iter().map(Bytes::len).sum();
        builder = builder.header("content-length", len);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(script.chunks.len().max(1));
    for chunk in script.chunks {
        tx.try_send(chunk).expect("channel sized for every chunk");
    }
    drop(tx);
    builder
        .body(ChannelBody(rx).map_err(never).boxed())
        .unwrap()
}

/// The prompt tokens the mock reports for every generation.
pub const MOCK_PROMPT_TOKENS: u64 = 26;

/// The models the mock has, as `/api/tags` lists them.
pub const MODELS: [&str; 3] = ["llama3.2:1b", "qwen3:8b", "mistral:latest"];
/// `/api/tags`, listing [`MODELS`].
pub const TAGS: &str = r#"{"models":[{"name":"llama3.2:1b","model":"llama3.2:1b","size":1321098329,"details":{"family":"llama"}},{"name":"qwen3:8b","model":"qwen3:8b","size":5225387923,"details":{"family":"qwen3"}},{"name":"mistral:latest","model":"mistral:latest","size":4113301824,"details":{"family":"llama"}}]}"#;
const CHAT_COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"llama3.2:1b","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}"#;
/// The events an Anthropic Messages stream starts with, as Ollama writes
/// them (`message_start` carrying its estimate of the prompt, then the
/// text block's start).
pub fn anthropic_start(estimate: u64) -> [Bytes; 2] {
    [
        Bytes::from(format!("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"llama3.2:1b\",\"content\":[],\"stop_reason\":null,\"usage\":{{\"input_tokens\":{estimate},\"output_tokens\":0}}}}}}\n\n")),
        Bytes::from_static(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"),
    ]
}

/// One piece of an Anthropic Messages stream's text.
pub fn anthropic_delta(text: &str) -> Bytes {
    Bytes::from(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"))
}

/// The events an Anthropic Messages stream ends with: the block's end, the
/// counts Ollama measured (`message_delta`), `message_stop`.
pub fn anthropic_end(prompt: u64, output: u64) -> Bytes {
    Bytes::from(format!("event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"input_tokens\":{prompt},\"output_tokens\":{output}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"))
}

/// `/v1/messages` not streamed (Anthropic's shape).
const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"llama3.2:1b","content":[{"type":"text","text":"Hello from the mock."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":5}}"#;
/// `/api/embed`: Ollama counts the input's tokens.
const EMBED: &str = r#"{"model":"llama3.2:1b","embeddings":[[0.1,-0.2,0.3]],"total_duration":1000000,"load_duration":500000,"prompt_eval_count":7}"#;
/// `/v1/embeddings`.
const OPENAI_EMBEDDINGS: &str = r#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,-0.2,0.3],"index":0}],"model":"llama3.2:1b","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
/// `/v1/completions` without streaming.
const COMPLETION: &str = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"llama3.2:1b","choices":[{"index":0,"text":"Hello from the mock.","finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":5,"total_tokens":10}}"#;
/// `/api/ps`: two of them loaded.
pub const PS: &str = r#"{"models":[{"name":"qwen3:8b","model":"qwen3:8b","size_vram":6135914496},{"name":"mistral:latest","model":"mistral:latest","size_vram":5637144576}]}"#;
/// `/v1/models`, listing [`MODELS`].
pub const OPENAI_MODELS: &str = r#"{"object":"list","data":[{"id":"llama3.2:1b","object":"model","created":1,"owned_by":"library"},{"id":"qwen3:8b","object":"model","created":1,"owned_by":"library"},{"id":"mistral:latest","object":"model","created":1,"owned_by":"library"}]}"#;

/// The deterministic byte pattern used for large bodies.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 12)) as u8)
        .collect()
}

/// `data` in the gzip format, as stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(0xffff).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend((!crc).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(never)
                .boxed(),
        )
        .unwrap()
}

/// Sends `pieces` one by one, `delay` apart, as separate body frames.
fn paced(
    shared: &Shared,
    content_type: &str,
    pieces: Vec<Bytes>,
    delay: Duration,
) -> Response<Body> {
    stream_response(content_type, paced_channel(shared, pieces, delay))
}

/// As [`paced`] (server-sent events), then the body fails: the answer
/// breaks off without its end, as when Ollama goes away mid-answer (hyper
/// may drop what it has not written out yet, as a crash would).
fn paced_then_broken(shared: &Shared, pieces: Vec<Bytes>, delay: Duration) -> Response<Body> {
    let body = BreaksAtEnd(ChannelBody(paced_channel(shared, pieces, delay)));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body.boxed())
        .unwrap()
}

/// `pieces`, `delay` apart, through a channel that closes after the last.
fn paced_channel(shared: &Shared, pieces: Vec<Bytes>, delay: Duration) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let watch = Watch {
        shared: shared.clone(),
        finished: false,
    };
    tokio::spawn(async move {
        let mut watch = watch; // the whole guard moves in, not just one field
        for piece in pieces {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(piece).await.is_err() {
                return; // receiver dropped: the client went away; `watch` records it
            }
        }
        watch.finished = true;
    });
    rx
}

fn stream_response(content_type: &str, rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let builder = Response::builder().header("content-type", content_type);
    builder
        .body(ChannelBody(rx).map_err(never).boxed())
        .unwrap()
}

/// For bodies that cannot fail, in the mock's body type.
fn never(never: Infallible) -> std::io::Error {
    match never {}
}

/// A channel's frames, then an error instead of the end.
struct BreaksAtEnd(ChannelBody);

impl http_body::Body for BreaksAtEnd {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.0)
            .poll_frame(cx)
            .map(|next| match next {
                Some(Ok(frame)) => Some(Ok(frame)),
                Some(Err(never)) => match never {},
                None => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the mock's answer breaks off",
                ))),
            })
    }
}

/// A body fed by a channel: each message is one frame; ends when the sender drops.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}
