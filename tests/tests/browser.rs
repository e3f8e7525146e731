//! CORS is for browsers, so it is proven in one: headless Chromium (Debian's,
//! driven by puppeteer-core) loads a page from another origin, and the
//! official OpenAI JS SDK in it talks to each target with a key limited to
//! some models: a chat, a live stream, the model list, a wrong key
//! (`AuthenticationError`) and a model outside the list
//! (`PermissionDeniedError`).
//!
//! The same SDK, in Node, retries on its own a request refused because its
//! key is at its limit, and is served once the slot is free.
//!
//! `cargo xtask test-all` installs Chromium and the npm tools, bundles the
//! page (tests/browser/) and sets `OLLAMA_PROXY_REQUIRE_BROWSER=1`; a plain
//! `cargo test` skips these tests when that was not done.

#[path = "common/native.rs"]
mod native_target;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use native_target::Native;
use ollama_proxy_tests::policy::{keys_document, ALICE};
use ollama_proxy_tests::workerd::Workerd;
use ollama_proxy_tests::{Harness, Target};

/// The page's tools and the browser, or `None` (skipped) when not set up.
struct Browser {
    dir: PathBuf,
    chromium: PathBuf,
}

static BROWSER: LazyLock<Option<Browser>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    let ready = dir.join("build/page.js").exists()
        && dir.join("node_modules/puppeteer-core").exists()
        && chromium.exists();
    if ready {
        return Some(Browser { dir, chromium });
    }
    let required = std::env::var_os("OLLAMA_PROXY_REQUIRE_BROWSER").is_some_and(|v| v == "1");
    assert!(
        !required,
        "Chromium or the page bundle is missing: run `cargo xtask test-all`"
    );
    eprintln!("skipped: no Chromium or page bundle (run `cargo xtask test-all`)");
    None
});

static WORKER: LazyLock<Option<Workerd>> = LazyLock::new(Workerd::find);

const INDEX: &str = "<!doctype html><meta charset=utf-8><title>ollama-proxy browser test</title><script type=module src=/page.js></script>";

/// Serves the page and its bundle on a loopback port of its own: another
/// origin than the proxy's.
async fn page_server(bundle: Bytes) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => continue },
                _ = &mut stopped => return,
            };
            let bundle = bundle.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let (body, content_type) = match req.uri().path() {
                    "/page.js" => (bundle.clone(), "text/javascript"),
                    _ => (Bytes::from_static(INDEX.as_bytes()), "text/html"),
                };
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", content_type)
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, stop)
}

async fn sdk_in_chromium<T: Target>(target: &T) {
    let Some(browser) = BROWSER.as_ref() else {
        return;
    };
    let bundle = std::fs::read(browser.dir.join("build/page.js")).unwrap();
    let (page, _page_server) = page_server(Bytes::from(bundle)).await;
    let page_origin = format!("http://{page}");
    let h = Harness::start(
        target,
        &[
            ("AIG_KEYS", &keys_document()),
            ("CORS_ALLOWED_ORIGINS", &page_origin),
        ],
    )
    .await;
    let args = serde_json::json!({
        "baseURL": format!("http://{}/v1", h.proxy),
        "token": ALICE,
        "wrongToken": "not-a-key-0000",
        "allowed": "llama3.2:1b",
        "blocked": "mistral",
    });
    let mut node = std::process::Command::new("node");
    node.arg(browser.dir.join("run.mjs"))
        .arg(format!("{page_origin}/"))
        .arg(args.to_string())
        .env("CHROMIUM", &browser.chromium)
        .current_dir(&browser.dir);
    let out = tokio::task::spawn_blocking(move || node.output());
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the browser run finished")
        .unwrap()
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", T::NAME);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let name = T::NAME;
    assert!(
        seen.get("error").is_none(),
        "{name}: the page failed: {seen}"
    );
    assert_eq!(seen["pageOrigin"], page_origin.as_str());
    assert_eq!(seen["chat"], "Hello from the mock.", "{name}: {seen}");

    // The stream arrived as it was sent: four deltas 150 ms apart.
    let stream = seen["stream"].as_array().expect("stream deltas");
    let texts: Vec<&str> = stream.iter().map(|d| d["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["tok0 ", "tok1 ", "tok2 ", "tok3 "],
        "{name}: {seen}"
    );
    let last = stream.last().unwrap()["ms"].as_f64().unwrap();
    assert!(
        last >= 300.0,
        "{name}: deltas arrived together ({last} ms): {seen}"
    );

    assert_eq!(
        seen["models"],
        serde_json::json!(["llama3.2:1b", "qwen3:8b"]),
        "{name}: the list shows models outside the key's list"
    );
    let wrong = &seen["wrongKey"];
    assert_eq!(wrong["authentication"], true, "{name}: {wrong}");
    assert_eq!(wrong["status"], 401);
    let blocked = &seen["blocked"];
    assert_eq!(blocked["permission"], true, "{name}: {blocked}");
    assert_eq!(blocked["status"], 403);
    assert_eq!(blocked["code"], "model_not_allowed");
    assert!(
        blocked["message"].as_str().unwrap().contains("mistral"),
        "{blocked}"
    );
    // Every exchange went through CORS: the page saw no CORS errors.
    let console = seen["console"].to_string();
    assert!(!console.contains("CORS"), "{name}: {console}");
    assert!(
        h.origin
            .requests()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("mistral")),
        "the blocked model reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_js_sdk_in_chromium_against_native() {
    sdk_in_chromium(&Native).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_js_sdk_in_chromium_against_the_worker() {
    if let Some(worker) = WORKER.as_ref() {
        sdk_in_chromium(worker).await;
    }
}

/// The key at its limit while another of its requests streams: the SDK's
/// default retries honour `Retry-After` and are served once the slot frees.
async fn sdk_retries_until_served<T: Target>(target: &T) {
    let Some(browser) = BROWSER.as_ref() else {
        return;
    };
    let keys = "[[keys]]\nname = \"solo\"\ntoken = \"solo-token-0006\"\nmax_concurrent = 1\n";
    let h = Harness::start(target, &[("AIG_KEYS", keys)]).await;
    // Holds the key's only slot for half a second.
    let held = {
        let proxy = h.proxy;
        tokio::spawn(async move {
            ollama_proxy_tests::client::call(
                proxy,
                "POST",
                "/api/chat?chunks=5&delay_ms=100",
                &[("cf-aig-authorization", "Bearer solo-token-0006")],
                ollama_proxy_tests::client::full(r#"{"model":"llama3.2:1b","messages":[]}"#),
            )
            .await
        })
    };
    h.origin
        .wait_for_heads(1, std::time::Duration::from_secs(10))
        .await;
    let mut node = std::process::Command::new("node");
    node.arg(browser.dir.join("retry.mjs"))
        .arg(format!("http://{}/v1", h.proxy))
        .arg("solo-token-0006")
        .current_dir(&browser.dir);
    let out = tokio::task::spawn_blocking(move || node.output());
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the SDK finished")
        .unwrap()
        .expect("node runs");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let name = T::NAME;
    assert!(seen.get("error").is_none(), "{name}: {seen}");
    let statuses = seen["statuses"].as_array().unwrap();
    assert_eq!(statuses[0]["status"], 429, "{name}: {seen}");
    assert_eq!(statuses[0]["retryAfter"], "1", "{name}: {seen}");
    assert_eq!(statuses.last().unwrap()["status"], 200, "{name}: {seen}");
    assert!(seen["chunks"].as_u64().unwrap() > 0, "{name}: {seen}");
    assert_eq!(held.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_js_sdk_retries_until_served_by_native() {
    sdk_retries_until_served(&Native).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_js_sdk_retries_until_served_by_the_worker() {
    if let Some(worker) = WORKER.as_ref() {
        sdk_retries_until_served(worker).await;
    }
}
