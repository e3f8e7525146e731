//! `bench-origin`: the origin `cargo xtask bench` measures against. Fixed
//! answers, no recording, zero-copy bodies, so it is never the bottleneck.
//!
//! Routes: `GET /small` (a 60-byte JSON reply with a length), `GET
//! /large?bytes=N` (N bytes streamed in 256 KiB frames of one shared
//! buffer), `POST /upload` (drains the body, answers its length), `GET
//! /stream?chunks=N&delay_ms=D` (NDJSON lines D ms apart, the last with
//! Ollama's counts; also as `/api/chat`, with `load_ms=` for its load),
//! `POST /v1/chat/completions` (the same paced as OpenAI events, with a
//! usage chunk when the body asks for one), `GET /ndjson?bytes=N` (about N
//! bytes of NDJSON lines in 256 KiB frames, then the counts; also as
//! `/api/generate`, which the proxy meters), `POST /api/embed` (a small
//! embedding answer).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const SMALL: &[u8] = br#"{"model":"llama3.2","created_at":"2026-01-01","done":true}"#;
const FRAME: usize = 256 * 1024;
const EMBED: &[u8] = br#"{"model":"bench","embeddings":[[0.1,0.2,0.3]],"prompt_eval_count":3}"#;

/// The bodies this origin sends.
enum Out {
    Full(Option<Bytes>),
    Repeat {
        frame: Bytes,
        left: u64,
    },
    Paced {
        lines: u32,
        total: u32,
        load_ms: u64,
        delay: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        /// OpenAI events instead of NDJSON, and whether a usage chunk ends
        /// them.
        sse: bool,
        usage: bool,
    },
    Lines {
        frame: Bytes,
        frames: u64,
        last: Option<Bytes>,
    },
}

/// One token's NDJSON line as `/api/chat` writes it (a paced stream), and
/// as `/api/generate` does (the bulk one); the final one with the counts.
const LINE: &str = "{\"model\":\"bench\",\"response\":\"tok\",\"done\":false}\n";
const GENERATE_LINE: &str = "{\"model\":\"llama3.2:1b\",\"created_at\":\"2026-11-26T18:00:00.123456789Z\",\"response\":\" tok\",\"done\":false}\n";
const EVENT: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\"}}]}\n\n";

fn final_line(load_ms: u64, tokens: u64) -> String {
    format!(
        "{{\"model\":\"bench\",\"response\":\"tok\",\"done\":true,\"load_duration\":{},\"prompt_eval_count\":12,\"eval_count\":{tokens},\"eval_duration\":{}}}\n",
        load_ms * 1_000_000,
        tokens * 20_000_000
    )
}

impl Body for Out {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Out::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Out::Repeat { frame, left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(frame.len() as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(frame.slice(..n)))))
            }
            Out::Paced {
                lines,
                total,
                load_ms,
                delay,
                sleep,
                sse,
                usage,
            } => {
                if *lines == 0 {
                    return Poll::Ready(None);
                }
                let timer = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*delay)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *sleep = None;
                *lines -= 1;
                let line = match (*sse, *lines) {
                    // Ollama's final line: counts and durations.
                    (false, 0) => final_line(*load_ms, u64::from(*total)),
                    (false, _) => LINE.to_owned(),
                    (true, 0) if *usage => format!(
                        "{EVENT}data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"bench\",\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{total},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
                        *total + 12
                    ),
                    (true, 0) => format!("{EVENT}data: [DONE]\n\n"),
                    (true, _) => EVENT.to_owned(),
                };
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
            }
            Out::Lines {
                frame,
                frames,
                last,
            } => {
                if *frames == 0 {
                    return Poll::Ready(last.take().map(|b| Ok(Frame::data(b))));
                }
                *frames -= 1;
                Poll::Ready(Some(Ok(Frame::data(frame.clone()))))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Out::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Out::Full(None) => SizeHint::with_exact(0),
            Out::Repeat { left, .. } => SizeHint::with_exact(*left),
            Out::Paced { .. } | Out::Lines { .. } => SizeHint::default(),
        }
    }
}

use std::future::Future;

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

async fn serve(
    (frame, lines): (Bytes, Bytes),
    req: Request<Incoming>,
) -> Result<Response<Out>, Infallible> {
    let query = req.uri().query().unwrap_or("").to_owned();
    // `/api/…` and `/v1/…` answer like the bare path, so traffic can look
    // like Ollama's two API families (the ops check's dashboard shows both).
    let path = req.uri().path();
    let path = path
        .strip_prefix("/api")
        .or_else(|| path.strip_prefix("/v1"))
        .unwrap_or(path);
    let (content_type, body) = match path {
        "/small" => (
            "application/json",
            Out::Full(Some(Bytes::from_static(SMALL))),
        ),
        "/large" => {
            let left = param(&query, "bytes").unwrap_or(64 << 20);
            ("application/octet-stream", Out::Repeat { frame, left })
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                total += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            (
                "application/json",
                Out::Full(Some(Bytes::from(format!("{{\"bytes\":{total}}}")))),
            )
        }
        // `/api/chat` is an LLM route to the proxy (its usage is read); a
        // bare `/stream` is not.
        "/stream" | "/chat" => {
            let lines = param(&query, "chunks").unwrap_or(10) as u32;
            let delay = Duration::from_millis(param(&query, "delay_ms").unwrap_or(50));
            (
                "application/x-ndjson",
                Out::Paced {
                    lines,
                    total: lines,
                    load_ms: param(&query, "load_ms").unwrap_or(2),
                    delay,
                    sleep: None,
                    sse: false,
                    usage: false,
                },
            )
        }
        "/chat/completions" => {
            let count = param(&query, "chunks").unwrap_or(10) as u32;
            let delay = Duration::from_millis(param(&query, "delay_ms").unwrap_or(50));
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let usage = body.is_ok_and(|b| {
                b.windows(b"\"include_usage\":true".len())
                    .any(|w| w == b"\"include_usage\":true")
            });
            (
                "text/event-stream",
                Out::Paced {
                    lines: count,
                    total: count,
                    load_ms: 0,
                    delay,
                    sleep: None,
                    sse: true,
                    usage,
                },
            )
        }
        // A small embedding answer (a generation-class route: it takes a
        // slot under the proxy's limits).
        "/embed" => (
            "application/json",
            Out::Full(Some(Bytes::from_static(EMBED))),
        ),
        // The same bytes: metered as `/api/generate`, not as `/ndjson`.
        "/ndjson" | "/generate" => {
            let frames = param(&query, "bytes").unwrap_or(48 << 20) / lines.len() as u64;
            let tokens = frames * (lines.len() / GENERATE_LINE.len()) as u64;
            (
                "application/x-ndjson",
                Out::Lines {
                    frame: lines,
                    frames,
                    last: Some(Bytes::from(final_line(0, tokens))),
                },
            )
        }
        _ => (
            "text/plain",
            Out::Full(Some(Bytes::from_static(b"not found"))),
        ),
    };
    Ok(Response::builder()
        .header("content-type", content_type)
        .body(body)
        .unwrap())
}

fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18500".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await.expect("bind");
        let frame = Bytes::from(vec![b'x'; FRAME]);
        let lines = Bytes::from(GENERATE_LINE.repeat(FRAME / GENERATE_LINE.len()));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let bodies = (frame.clone(), lines.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| serve(bodies.clone(), req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
