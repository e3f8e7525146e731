//! The keys document as a file (`KEYS_FILE`), through the real binary:
//! errors that name the key and field, `check-config` listing keys without
//! tokens, `gen-token`'s line to paste, and reloads on SIGHUP and on change
//! that keep streams running and never fall back to no keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ollama_proxy_tests::client::{call, collect, empty, full, request, send};
use ollama_proxy_tests::policy::sha256_hex;
use ollama_proxy_tests::MockOrigin;

mod common;
use common::{proxy_command, start_with, wait_for_line};

const ALICE: &str = "alice-file-token-1a";
const BOB: &str = "bob-file-token-2b";
const CAROL: &str = "carol-file-token-3c";

/// A keys file in a fresh directory, removed on drop.
struct KeysFile {
    dir: PathBuf,
    path: PathBuf,
}

impl KeysFile {
    fn new(name: &str, text: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ollama-proxy-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Self {
            path: dir.join("keys.toml"),
            dir,
        };
        file.write(text);
        file
    }

    /// Replaces the file in one step (write aside, then rename), as editors
    /// and config tools do, so the proxy never reads half a file.
    fn write(&self, text: &str) {
        let aside = self.dir.join("keys.toml.new");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.path).unwrap();
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for KeysFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ollama-proxy check-config` with `env`: what it printed (it must succeed).
fn check_config(env: &[(&str, &std::ffi::OsStr)]) -> String {
    let out = proxy_command()
        .arg("check-config")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn doc(keys: &[(&str, &str, &str)]) -> String {
    keys.iter()
        .map(|(name, token, extra)| {
            format!(
                "[[keys]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n{extra}\n",
                sha256_hex(token)
            )
        })
        .collect()
}

#[test]
fn keys_file_errors_name_the_key_and_field_and_exit_2() {
    let file = KeysFile::new(
        "errors",
        &format!(
            "[[keys]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nmodels = [\"llama3.2:*\", \"qwen[3]\"]\n"
        ),
    );
    let out = proxy_command()
        .env("KEYS_FILE", file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let want = format!(
        "ollama-proxy: config error: KEYS_FILE ({}): key \"alice\": models[2]: has '['",
        file.path().display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");
    assert!(
        !stderr.contains(ALICE) && !stderr.contains("qwen"),
        "{stderr}"
    );

    let missing = proxy_command()
        .env("KEYS_FILE", file.dir.join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(
        stderr.contains("KEYS_FILE") && stderr.contains("cannot read it"),
        "{stderr}"
    );

    let both = proxy_command()
        .env("KEYS_FILE", file.path())
        .env("AIG_KEYS", "")
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn check_config_lists_keys_without_tokens() {
    let file = KeysFile::new(
        "check",
        &format!(
            "{}[[keys]]\nname = \"bob\"\ntoken = \"{BOB}\"\nexpires = 2027-01-31\ndisabled = true\n",
            doc(&[(
                "alice",
                ALICE,
                "models = [\"llama3.2:*\", \"qwen3*\"]\nmodel_management = true"
            )])
        ),
    );
    let text = check_config(&[
        ("KEYS_FILE", file.path().as_os_str()),
        ("AIG_AUTH_TOKEN", CAROL.as_ref()),
    ]);
    for secret in [ALICE, BOB, CAROL, &sha256_hex(ALICE), &sha256_hex(BOB)] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    for line in [
        "key default: token=plain expires=never disabled=false models=* model_management=false max_concurrent=none requests_per_minute=none",
        "key alice: token=sha256 expires=never disabled=false models=[llama3.2:*, qwen3*] model_management=true max_concurrent=none requests_per_minute=none",
        "key bob: token=plain expires=2027-01-31T00:00:00Z disabled=true models=* model_management=false max_concurrent=none requests_per_minute=none",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(text.contains(&format!("KEYS_FILE={}", file.path().display())));
}

#[test]
fn gen_token_prints_the_line_for_a_keys_document() {
    let out = proxy_command().arg("gen-token").output().unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("token_sha256 = \"{}\"", sha256_hex(&token))),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&token),
        "the token on stderr too: {stderr}"
    );
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn status(addr: std::net::SocketAddr, token: &str, body: &'static str) -> u16 {
    let auth = bearer(token);
    call(
        addr,
        "POST",
        "/api/chat",
        &[("cf-aig-authorization", auth.as_str())],
        full(body),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_file_reloads_on_change_and_sighup_keeping_streams_and_old_keys_on_error() {
    let origin = MockOrigin::start().await;
    let file = KeysFile::new(
        "reload",
        &doc(&[
            ("alice", ALICE, "models = [\"llama3.2:*\"]"),
            ("bob", BOB, ""),
        ]),
    );
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let keys_file = file.path().to_str().unwrap().to_owned();
    let proxy = start_with(
        &origin.url(),
        &[
            ("KEYS_FILE", keys_file.as_str()),
            ("METRICS_ADDR", admin.as_str()),
        ],
    );
    let addr = proxy.addr;
    const LLAMA: &str = r#"{"model":"llama3.2:1b"}"#;
    const QWEN: &str = r#"{"model":"qwen3:8b"}"#;
    assert_eq!(status(addr, ALICE, LLAMA).await, 200);
    assert_eq!(status(addr, ALICE, QWEN).await, 403);
    assert_eq!(status(addr, BOB, QWEN).await, 200);

    // A stream by bob, running across the reloads below.
    let auth = bearer(BOB);
    let stream = send(request(
        addr,
        "POST",
        "/api/chat?chunks=30&delay_ms=100",
        &[("cf-aig-authorization", auth.as_str())],
        full(QWEN),
    ))
    .await;
    assert_eq!(stream.status(), 200);
    let stream = tokio::spawn(collect(stream));

    // The file changes: bob is revoked, alice gets qwen3 too.
    file.write(&doc(&[(
        "alice",
        ALICE,
        "models = [\"llama3.2:*\", \"qwen3*\"]",
    )]));
    let line = wait_for_line(&proxy, "keys reloaded");
    assert!(
        line.contains("file changed") && line.contains("alice"),
        "{line}"
    );
    assert_eq!(
        status(addr, BOB, QWEN).await,
        401,
        "a revoked key still works"
    );
    assert_eq!(status(addr, ALICE, QWEN).await, 200);

    // A broken file keeps the keys in force, and says why (not with values).
    file.write(&format!(
        "[[keys]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nmodels = [\"bad glob!\"]\n"
    ));
    let line = wait_for_line(&proxy, "keys reload failed");
    assert!(
        line.contains("key \\\"alice\\\": models[1]") || line.contains("key \"alice\": models[1]"),
        "{line}"
    );
    assert!(!line.contains(ALICE), "{line}");
    assert_eq!(
        status(addr, ALICE, QWEN).await,
        200,
        "the old keys were dropped"
    );
    assert_eq!(status(addr, CAROL, QWEN).await, 401);

    // SIGHUP reloads at once, even when the file did not change.
    file.write(&doc(&[("carol", CAROL, "")]));
    let line = wait_for_line(&proxy, "keys reloaded");
    assert!(line.contains("carol"), "{line}");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let line = wait_for_line(&proxy, "keys reloaded");
    assert!(line.contains("SIGHUP"), "{line}");
    assert_eq!(status(addr, CAROL, QWEN).await, 200);
    assert_eq!(status(addr, ALICE, QWEN).await, 401);

    // The stream that started before any of this ran to its end.
    let got = tokio::time::timeout(Duration::from_secs(30), stream)
        .await
        .expect("the stream ended")
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(String::from_utf8_lossy(&got.body).lines().count(), 30);

    let metrics = call(admin.parse().unwrap(), "GET", "/metrics", &[], empty()).await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for (labels, count) in [("result=\"ok\"", 3), ("result=\"error\"", 1)] {
        let line = format!("ollama_proxy_config_reloads_total{{{labels}}} {count}");
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

#[test]
fn the_example_keys_file_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/keys.example.toml");
    let text = check_config(&[("KEYS_FILE", example.as_os_str())]);
    for name in ["alice", "ci", "admin", "bob"] {
        assert!(
            text.contains(&format!("key {name}: token=sha256")),
            "{text}"
        );
    }
}
