//! Running the real `ollama-proxy` binary: start it on a free port with a
//! given environment, read its stderr line by line, signal it.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_ollama-proxy");
pub const TOKEN: &str = "binary-test-token-5f2c9a";

pub fn proxy_command() -> Command {
    let mut cmd = Command::new(BIN);
    // Only what the test sets: an inherited AIG_* variable must not leak in.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

pub struct Running {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    /// Lines of stderr; the sender drops at EOF, so after the child exits
    /// `iter()` yields every line and ends.
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a free port and waits for its ready line.
pub fn start(origin: &str) -> Running {
    start_with(origin, &[])
}

pub fn start_with(origin: &str, env: &[(&str, &str)]) -> Running {
    // A port found free can be taken before the binary binds it (another
    // test's outgoing connection may get it as its ephemeral port): then
    // the binary says so and exits, and another port is tried.
    for _ in 0..5 {
        match try_start(origin, env) {
            Ok(running) => return running,
            Err(taken) => eprintln!("retrying on another port: {taken}"),
        }
    }
    panic!("no free port after 5 tries");
}

/// Starts the binary on a port found free; `Err` when it was taken since.
fn try_start(origin: &str, env: &[(&str, &str)]) -> Result<Running, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = proxy_command()
        .env("OLLAMA_ORIGIN", origin)
        .env("AIG_AUTH_TOKEN", TOKEN)
        .env("LISTEN_ADDR", addr.to_string())
        .env("SHUTDOWN_GRACE", "10s")
        // Parallel tests must not all bind the default admin port.
        .env("METRICS_ADDR", "off")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, stderr) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = stderr
        .recv_timeout(Duration::from_secs(30))
        .expect("a ready line");
    let ready = if ready.contains("admin listener") {
        stderr
            .recv_timeout(Duration::from_secs(30))
            .expect("a ready line")
    } else {
        ready
    };
    if ready.contains("(LISTEN_ADDR): Address already in use") {
        let _ = child.wait();
        return Err(ready);
    }
    assert!(ready.contains(" ready"), "{ready}");
    Ok(Running {
        child,
        addr,
        stderr,
    })
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for a stderr line containing `needle` (bounded), returning it.
pub fn wait_for_line(proxy: &Running, needle: &str) -> String {
    loop {
        let line = proxy
            .stderr
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no stderr line containing {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// Reads from a raw client connection until a whole answer head has come;
/// returns everything read so far (the head and any body bytes after it).
pub async fn read_head(client: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer's head");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// The proxy's stderr so far that tells of trouble: every line that is not
/// an `INFO` line, and request lines whose status is not 200 (the log line
/// names the error: a test failing under load says why). Drains the lines.
pub fn trouble(proxy: &Running) -> String {
    let lines: Vec<String> = proxy
        .stderr
        .try_iter()
        .filter(|l| {
            !l.contains(" INFO ") || (l.contains(" request ") && !l.contains(" status=200 "))
        })
        .take(50)
        .collect();
    if lines.is_empty() {
        "the proxy logged no trouble".to_owned()
    } else {
        format!("the proxy logged:\n{}", lines.join("\n"))
    }
}
