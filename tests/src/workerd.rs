//! Runs the built Worker in the real Workers runtime (workerd from npm).
//!
//! Each launch writes a workerd config binding the given variables as text
//! bindings, with outbound traffic limited to local addresses (so the Worker
//! can reach the mock origin on loopback and nothing else), and serves on a
//! free loopback port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::target::{Quirks, Target, Vars};

/// workerd's own build date bounds the compatibility date it accepts. Keep
/// this and the flags in step with `worker-target/wrangler.toml`:
/// `enable_request_signal` makes `request.signal` fire when the client goes
/// away, which the Worker passes to its subrequest to cancel it.
const COMPATIBILITY_DATE: &str = "2026-04-01";
const WASM_NAME: &str = "ollama_proxy_worker_bg.wasm";

/// The Worker bundle and the workerd binary, as `cargo xtask build-worker` leaves them.
pub struct Workerd {
    bundle_dir: PathBuf,
    binary: PathBuf,
}

impl Workerd {
    /// Finds the built bundle. Returns `None` when it has not been built, so a
    /// plain `cargo test` can skip; `cargo xtask test-all` builds it first and
    /// sets `OLLAMA_PROXY_REQUIRE_WORKER=1`, which turns a missing bundle into
    /// a failure.
    pub fn find() -> Option<Self> {
        let worker = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker-target");
        let found = Self {
            bundle_dir: worker.join("build"),
            binary: worker.join("node_modules/.bin/workerd"),
        };
        let present = found.bundle_dir.join("worker.js").exists()
            && found.bundle_dir.join(WASM_NAME).exists()
            && found.binary.exists();
        if present {
            return Some(found);
        }
        let required = std::env::var_os("OLLAMA_PROXY_REQUIRE_WORKER").is_some_and(|v| v == "1");
        assert!(
            !required,
            "the Worker bundle or workerd is missing: run `cargo xtask build-worker`"
        );
        eprintln!(
            "skipped: no Worker bundle (run `cargo xtask build-worker`, or `cargo xtask test-all`)"
        );
        None
    }
}

/// A running workerd, killed on drop.
pub struct Running {
    child: Child,
    dir: TempDir,
}

impl Running {
    /// What workerd has printed so far (stdout and stderr: the Worker's
    /// `console.log`/`console.error` lines and workerd's own messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("workerd.log")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn capnp_string(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len() + 2);
    escaped.push('"');
    for c in s.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c => escaped.push(c),
        }
    }
    escaped.push('"');
    escaped
}

/// A variable with this name (any value) binds a fake Workers Analytics
/// Engine dataset as `ANALYTICS`, which logs each data point as a JSON line
/// (`{"message":"analytics","point":{…}}`) for tests to read.
pub const ANALYTICS: &str = "ANALYTICS";

/// A variable with this name (any value) leaves the `DOORMAN` Durable
/// Object binding out, as a deployment that forgot it would.
pub const NO_DOORMAN: &str = "NO_DOORMAN";

/// A variable with this name keeps the Durable Objects' storage in the
/// directory it names, so a second workerd started with it finds what the
/// first wrote (a restart, as a deployment does to the object). Without it
/// each workerd keeps its own, in its temporary directory. Storage is on
/// disk and SQLite-backed either way, as it is in production
/// (`new_sqlite_classes`; workerd's in-memory storage is lost when an idle
/// object is evicted, Cloudflare's is not).
pub const DOORMAN_STORE: &str = "DOORMAN_STORE";

const FAKE_ANALYTICS: &str = r#"// A stand-in for a Workers Analytics Engine dataset binding.
export default function dataset() {
  return {
    writeDataPoint(point) {
      console.log(JSON.stringify({ message: "analytics", point }));
    },
  };
}
"#;

fn config(port: u16, vars: &Vars, store: &Path) -> String {
    let doorman = !vars.iter().any(|(name, _)| name == NO_DOORMAN);
    let bindings: Vec<String> = vars
        .iter()
        .filter(|(name, _)| name != NO_DOORMAN && name != DOORMAN_STORE)
        .map(|(name, value)| {
            if name == ANALYTICS {
                // Not a variable: bind the fake Analytics Engine dataset.
                return format!(
                    "    (name = {}, wrapped = (moduleName = \"fake-analytics:dataset\")),",
                    capnp_string(name)
                );
            }
            format!(
                "    (name = {}, text = {}),",
                capnp_string(name),
                capnp_string(value)
            )
        })
        .collect();
    let store = capnp_string(&store.to_string_lossy());
    format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .proxy),
    (name = "loopback", network = (allow = ["local"])),
    (name = "doorman-store", disk = (path = {store}, writable = true)),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:{port}", http = (), service = "main") ],
  extensions = [ (modules = [
    (name = "fake-analytics:dataset", esModule = embed "fake-analytics.js", internal = true),
  ]) ],
);
const proxy :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "{WASM_NAME}", wasm = embed "{WASM_NAME}"),
  ],
  compatibilityDate = "{COMPATIBILITY_DATE}",
  compatibilityFlags = ["enable_request_signal"],
  bindings = [
{}
{}
  ],
  durableObjectNamespaces = [
    (className = "Doorman", uniqueKey = "ollama-proxy-doorman", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "doorman-store"),
  globalOutbound = "loopback",
);
"#,
        bindings.join("\n"),
        if doorman {
            r#"    (name = "DOORMAN", durableObjectNamespace = "Doorman"),"#
        } else {
            ""
        }
    )
}

/// A free loopback port for workerd, outside the kernel's ephemeral range
/// (32768 and up on Linux). Everything else in the tests binds port 0 and
/// gets an ephemeral port, so between our check here and workerd's own bind
/// none of them can take this one and answer in workerd's place.
fn free_port(n: usize) -> u16 {
    let base = (std::process::id() as usize).wrapping_mul(7919);
    for i in 0..1000 {
        let offset = base.wrapping_add(n * 131).wrapping_add(i * 17) % 12_000;
        let port = 20_000 + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

impl Workerd {
    fn spawn(&self, vars: &Vars) -> (SocketAddr, Running) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        for _attempt in 0..3 {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("ollama-proxy-workerd-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let dir = TempDir(dir);
            for file in ["worker.js", WASM_NAME] {
                std::fs::copy(self.bundle_dir.join(file), dir.0.join(file)).unwrap();
            }
            std::fs::write(dir.0.join("fake-analytics.js"), FAKE_ANALYTICS).unwrap();
            let port = free_port(n);
            let store = vars
                .iter()
                .find(|(name, _)| name == DOORMAN_STORE)
                .map_or_else(|| dir.0.join("store"), |(_, path)| PathBuf::from(path));
            std::fs::create_dir_all(&store).unwrap();
            std::fs::write(dir.0.join("config.capnp"), config(port, vars, &store)).unwrap();
            let log = std::fs::File::create(dir.0.join("workerd.log")).unwrap();
            let child = Command::new(&self.binary)
                .args(["serve", "config.capnp"])
                .current_dir(&dir.0)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start workerd");
            let mut running = Running { child, dir };
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            // Wait for the socket to accept (a readiness condition, bounded).
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = running.child.try_wait() {
                    break; // exited: most likely the port was taken; try another
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return (addr, running);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("workerd did not start");
    }

    /// Starts workerd with exactly `vars` (no defaults added), for tests
    /// that read its log or give it an invalid configuration.
    pub fn start(&self, vars: &Vars) -> (SocketAddr, Running) {
        self.spawn(vars)
    }
}

impl Target for Workerd {
    const NAME: &'static str = "worker";

    async fn launch(&self, vars: &Vars) -> (SocketAddr, Box<dyn Send>) {
        let (addr, running) = tokio::task::block_in_place(|| self.spawn(vars));
        (addr, Box::new(running))
    }

    fn quirks(&self) -> Quirks {
        Quirks {
            // workerd's HTTP front end fails to parse an absolute-form target
            // and answers 500 itself; the Worker never runs, nothing is sent.
            refuses_absolute_form: true,
            // workerd does not read the client connection while the Worker
            // awaits the origin's response head, so a client that leaves
            // then is only noticed once the origin answers (a client leaving
            // mid-stream is noticed at once and cancels the origin request).
            misses_disconnect_before_response: true,
            // Seen with a plain JS Worker too (`new Response(r.body, r)`, and
            // through a TransformStream): a fetch body that fails with
            // "Network connection lost" still ends with `0\r\n\r\n`.
            ends_broken_streams_cleanly: true,
            // A fetch to a closed port and one whose connection reset after
            // the request went out both fail with "Network connection
            // lost"; a generation sent twice would run twice.
            cannot_tell_refused_from_lost: true,
        }
    }
}
