//! The bench's per-key policy part: what a keys document of 50 hashed keys
//! with model lists costs on small requests (GET, and a chat-sized POST
//! whose body goes through the model gate), and a 20 MB chat body with the
//! model at its end: forwarded intact, with the memory it takes bounded by
//! the body limit.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::bench::{
    cpu_ms, fmt_load, medians, rss_kib, spawn_logging, wrk, Load, Proc, ORIGIN, RUNS, SECONDS,
    TOKEN,
};

const PLAIN: u16 = 18505;
const POLICY: u16 = 18506;
const BIG: u16 = 18507;
const KEYS: usize = 50;
/// The body limit of the instance that takes the 20 MB body.
const LIMIT_MIB: u64 = 64;
const CHAT: &str = r#"{"model":"llama3.2:1b","messages":[{"role":"user","content":"Hello there, how are you today?"}],"stream":false}"#;

/// 50 hashed keys, each limited to some models; the bench's token is the
/// last one, so a request is compared against every key before it matches
/// (it would be anyway: comparisons never stop early).
fn keys_document() -> String {
    keys_document_with("")
}

/// [`keys_document`] with more lines for the bench's own key (limits).
/// Its model list also has `bench`, the model the usage part asks for.
pub(crate) fn keys_document_with(bench_key_lines: &str) -> String {
    let mut doc = String::new();
    for i in 0..KEYS {
        let (token, extra) = if i + 1 == KEYS {
            (TOKEN.to_owned(), bench_key_lines)
        } else {
            (format!("bench-key-{i:04}-token"), "")
        };
        let _ = write!(
            doc,
            "[[keys]]\nname = \"user-{i}\"\ntoken_sha256 = \"{}\"\nmodels = [\"llama3.2:*\", \"qwen3*\", \"team-{i}/*\", \"bench\"]\nexpires = 2999-01-01\n{extra}\n",
            sha256_hex(&token)
        );
    }
    doc
}

/// The same 50 keys as [`keys_document_with`], as the JSON a hand-written
/// JS Worker would take (`bench/js-worker-same-checks.js`).
pub(crate) fn keys_json() -> String {
    let keys: Vec<String> = (0..KEYS)
        .map(|i| {
            let token = if i + 1 == KEYS {
                TOKEN.to_owned()
            } else {
                format!("bench-key-{i:04}-token")
            };
            format!(
                r#"{{"name":"user-{i}","token_sha256":"{}","models":["llama3.2:*","qwen3*","team-{i}/*","bench"],"expires":"2999-01-01"}}"#,
                sha256_hex(&token)
            )
        })
        .collect();
    format!("[{}]", keys.join(","))
}

/// SHA-256 through the proxy binary's own `gen-token` line would need a
/// token it chose; `sha256sum` is on every Debian.
fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let _ = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn proxy(
    target: &Path,
    scratch: &Path,
    port: u16,
    env: &[(&str, String)],
) -> Result<Proc, String> {
    let mut cmd = Command::new(target.join("release/ollama-proxy"));
    cmd.env_clear()
        .env("OLLAMA_ORIGIN", format!("http://127.0.0.1:{ORIGIN}"))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "off")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let log =
        fs::File::create(scratch.join(format!("policy-{port}.log"))).map_err(|e| e.to_string())?;
    spawn_logging(cmd.stderr(log), port)
}

/// Medians of interleaved runs against the two proxies (plain first), so
/// drift on a shared machine hits both alike.
fn interleaved(path: &str, script: Option<&Path>) -> (Option<Load>, Option<Load>) {
    let mut plain = Vec::new();
    let mut policy = Vec::new();
    for _ in 0..RUNS {
        plain.extend(wrk(
            &format!("http://127.0.0.1:{PLAIN}{path}"),
            64,
            SECONDS,
            true,
            script,
        ));
        policy.extend(wrk(
            &format!("http://127.0.0.1:{POLICY}{path}"),
            64,
            SECONDS,
            true,
            script,
        ));
    }
    (medians(plain), medians(policy))
}

/// Runs the policy measurements and appends their section to `report`;
/// returns the ratio rows (measure, value, target).
pub(crate) fn bench_policy(
    target: &Path,
    scratch: &Path,
    report: &mut String,
) -> Result<Vec<(String, String, &'static str)>, String> {
    let keys_file = scratch.join("keys.toml");
    fs::write(&keys_file, keys_document()).map_err(|e| e.to_string())?;
    let keys_path = keys_file.to_string_lossy().into_owned();
    let plain = proxy(
        target,
        scratch,
        PLAIN,
        &[("AIG_AUTH_TOKEN", TOKEN.to_owned())],
    )?;
    let policy = proxy(target, scratch, POLICY, &[("KEYS_FILE", keys_path.clone())])?;

    let script = scratch.join("chat.lua");
    fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{CHAT}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let cpu_before = cpu_ms(policy.0.id());
    let (get_plain, get_policy) = interleaved("/small", None);
    let spent = cpu_ms(policy.0.id()) - cpu_before;
    let (post_plain, post_policy) = interleaved("/upload", Some(&script));
    drop((plain, policy));
    let per_request = get_policy.map(|l| spent * 1e3 / (l.requests * RUNS as f64));

    // A 20 MB chat body with the model at its very end, on a fresh instance
    // (so its peak RSS is this request's).
    let big = chat_body(20 << 20);
    let body_file = scratch.join("chat-20mb.json");
    fs::write(&body_file, &big).map_err(|e| e.to_string())?;
    let instance = proxy(
        target,
        scratch,
        BIG,
        &[
            ("KEYS_FILE", keys_path),
            ("MAX_BODY_BYTES", format!("{LIMIT_MIB}MiB")),
        ],
    )?;
    let (rss_before, _) = rss_kib(instance.0.id());
    let answer = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            &format!("cf-aig-authorization: Bearer {TOKEN}"),
        ])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body_file.display()))
        .arg(format!("http://127.0.0.1:{BIG}/upload"))
        .output()
        .map_err(|e| e.to_string())?;
    let (_, rss_peak) = rss_kib(instance.0.id());
    drop(instance);
    let _ = fs::remove_file(&body_file);
    // The bench origin answers `{"bytes":N}` with the length it received.
    let answer = String::from_utf8_lossy(&answer.stdout).trim().to_owned();
    let intact = answer == format!("{{\"bytes\":{}}}", big.len());
    let grew_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;

    let fmt = fmt_load;
    let _ = writeln!(
        report,
        "\n## Per-key policy ({KEYS} hashed keys with model lists, `KEYS_FILE`)\n\nInterleaved runs at c=64 against two native instances: one with a single `AIG_AUTH_TOKEN`, one with the keys document (the bench's token is one of its keys, limited to some models).\n\n| request | plain | with the keys document |\n|---|---|---|\n| `GET /small` | {} | {} |\n| `POST` a chat-sized JSON body ({} bytes; read by the model gate) | {} | {} |\n\nCPU per `GET /small` with the keys document: {}.\n\nA 20 MB chat body with `model` at its end (`MAX_BODY_BYTES={LIMIT_MIB}MiB`): {}; the proxy's RSS grew by {grew_mib:.1} MiB while holding it (bounded by the body limit).",
        fmt(get_plain),
        fmt(get_policy),
        CHAT.len(),
        fmt(post_plain),
        fmt(post_policy),
        per_request.map_or_else(|| "—".to_owned(), |c| format!("{c:.1} µs")),
        if intact {
            format!("forwarded whole (the origin received all {} bytes)", big.len())
        } else {
            format!("NOT forwarded intact (origin answered {answer:?})")
        },
    );
    let ratio = |a: Option<Load>, b: Option<Load>| match (a, b) {
        (Some(a), Some(b)) if b.rps > 0.0 => format!("{:.3}×", a.rps / b.rps),
        _ => "—".to_owned(),
    };
    Ok(vec![
        (
            format!("keys document ({KEYS} hashed keys)/plain req/s, c=64, GET"),
            ratio(get_policy, get_plain),
            "≥ 0.95×",
        ),
        (
            format!(
                "keys document ({KEYS} hashed keys)/plain req/s, c=64, chat POST through the gate"
            ),
            ratio(post_policy, post_plain),
            "—",
        ),
        (
            "20 MB chat body, model at its end".to_owned(),
            format!(
                "{}; RSS +{grew_mib:.0} MiB",
                if intact { "intact" } else { "NOT intact" }
            ),
            "intact; memory ≤ body limit",
        ),
    ])
}

/// A chat request of about `size` bytes whose `model` is its last member.
fn chat_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"messages":[{"role":"user","content":""#.to_vec();
    body.extend((0..size).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(br#""}],"stream":false,"model":"qwen3:8b"}"#);
    body
}
