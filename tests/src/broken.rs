//! Origins that break the exchange on purpose, written on raw TCP so they
//! can send what no HTTP library would: garbage instead of a response, a
//! stream cut by a reset, a body shorter than its `Content-Length`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How a [`BrokenOrigin`] answers every request.
#[derive(Clone, Copy, Debug)]
pub enum Breakage {
    /// Bytes that are not an HTTP response, then close.
    Garbage,
    /// A chunked NDJSON head and one chunk, then a TCP reset when
    /// [`BrokenOrigin::cut`] is called (a reset discards data the peer has
    /// not read yet, so the test first sees the chunk arrive).
    ResetMidStream,
    /// The same with a stream of server-sent events (Anthropic's
    /// Messages): its head and [`FIRST_EVENT`], then a reset when cut.
    ResetMidEvents,
    /// `Content-Length: 100` and 10 bytes, then close.
    ShortBody,
    /// An NDJSON stream of `Content-Length: 100` (as a buffering hop in
    /// front of Ollama may send), 65 bytes of it, then close: the proxy's
    /// error record would take it past the length.
    ShortStream,
    /// Reads the head and some of the body, then resets the connection
    /// without answering (a box that fails mid-upload).
    ResetMidUpload,
}

/// The first chunk a stream-cutting origin sends before it breaks.
pub const FIRST_CHUNK: &str = "{\"response\":\"partial\"}\n";

/// The first event an event-stream-cutting origin sends before it breaks.
pub const FIRST_EVENT: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n";

/// A raw origin that reads each request head and breaks its answer.
pub struct BrokenOrigin {
    addr: SocketAddr,
    cut: Arc<Notify>,
    task: JoinHandle<()>,
}

impl BrokenOrigin {
    /// Starts one on a free loopback port.
    pub async fn start(breakage: Breakage) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(Notify::new());
        let cut_for_task = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, breakage, Arc::clone(&cut_for_task)));
            }
        });
        Self { addr, cut, task }
    }

    /// Lets a [`Breakage::ResetMidStream`] answer reset its connection.
    pub fn cut(&self) {
        self.cut.notify_one();
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BrokenOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, breakage: Breakage, cut: Arc<Notify>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match breakage {
        Breakage::Garbage => {
            let _ = stream.write_all(b"this is not http\r\n\r\n").await;
        }
        Breakage::ResetMidStream | Breakage::ResetMidEvents => {
            let (content_type, first) = if matches!(breakage, Breakage::ResetMidEvents) {
                ("text/event-stream", FIRST_EVENT)
            } else {
                ("application/x-ndjson", FIRST_CHUNK)
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
                first.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.flush().await;
            cut.notified().await;
            // Linger 0: closing sends RST instead of FIN.
            let _ = stream.set_zero_linger();
        }
        Breakage::ShortBody => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\"")
                .await;
        }
        Breakage::ShortStream => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100\r\n\r\n{\"model\":\"x\",\"response\":\"a partial answer\",\"done\":false}\n{\"model\"")
                .await;
        }
        Breakage::ResetMidUpload => {
            let mut seen = head.len();
            while seen < 64 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen += n,
                }
            }
            let _ = stream.set_zero_linger();
        }
    }
}

/// An address whose connections hang: a listener with a backlog of one
/// that never accepts, its queue filled first, so the kernel drops further
/// SYNs and `connect` waits until the caller's timeout. Keep the returned
/// guard alive while using the address.
pub async fn black_hole() -> (SocketAddr, impl Send) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    // Fill the accept queue until a connect no longer completes (two on
    // Linux for a backlog of one); the bound only ends the filling.
    let bound = std::time::Duration::from_millis(300);
    while let Ok(Ok(stream)) = tokio::time::timeout(bound, TcpStream::connect(addr)).await {
        fillers.push(stream);
        assert!(fillers.len() < 64, "the kernel accepted every connection");
    }
    (addr, (listener, fillers))
}
