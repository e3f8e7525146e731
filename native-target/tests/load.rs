//! Load held by the real binary: many slow streams open at once plus a
//! steady trickle of small requests. Every stream must arrive complete and
//! byte-identical to what the origin sent, no small request may hang, and
//! memory must stay proportionate and settle instead of growing round after round.
//!
//! Sizes come from the environment: `cargo xtask test-all` runs the short
//! default; `cargo xtask soak` sets 1,000 streams and several rounds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ollama_proxy_tests::client::{call, collect_noting_first, empty, full, request, send};
use ollama_proxy_tests::MockOrigin;
use tokio::sync::Notify;

mod common;
use common::{start_with, trouble, TOKEN};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_streams_and_small_requests_complete_intact() {
    let streams = env_number("OLLAMA_PROXY_LOAD_STREAMS", 200);
    let rounds = env_number("OLLAMA_PROXY_LOAD_ROUNDS", 2).max(2);
    let chunks = env_number("OLLAMA_PROXY_LOAD_CHUNKS", 20);
    let origin = MockOrigin::start().await;
    let proxy = start_with(&origin.url(), &[]);
    let pid = proxy.child.id();
    let auth = format!("Bearer {TOKEN}");
    let auth = [("cf-aig-authorization", auth.as_str())];
    let path = format!("/api/chat?chunks={chunks}&delay_ms=100");

    // What the origin sends, read directly: every stream must match it.
    let expected = call(origin.addr(), "POST", &path, &[], full("{}"))
        .await
        .body;
    assert_eq!(expected.iter().filter(|&&b| b == b'\n').count(), chunks);
    for _ in 0..20 {
        assert_eq!(
            call(proxy.addr, "GET", "/api/version", &auth, empty())
                .await
                .status,
            200
        );
    }
    let baseline = rss_kib(pid);
    let mut growth_by_round = Vec::with_capacity(rounds);
    let mut small_latencies = Vec::new();

    for round in 0..rounds {
        let flowing = Arc::new(AtomicUsize::new(0));
        let all_flowing = Arc::new(Notify::new());
        let mut tasks = Vec::with_capacity(streams);
        for _ in 0..streams {
            let req = request(proxy.addr, "POST", &path, &auth, full("{}"));
            let (flowing, all_flowing) = (Arc::clone(&flowing), Arc::clone(&all_flowing));
            tasks.push(tokio::spawn(async move {
                let response = send(req).await;
                assert_eq!(response.status(), 200);
                collect_noting_first(response, || {
                    if flowing.fetch_add(1, Ordering::SeqCst) + 1 == streams {
                        all_flowing.notify_one();
                    }
                })
                .await
            }));
        }

        // Small requests, one after another, for as long as the streams run.
        let done = Arc::new(AtomicBool::new(false));
        let small = {
            let (done, addr) = (Arc::clone(&done), proxy.addr);
            let auth = auth.map(|(n, v)| (n, v.to_owned()));
            tokio::spawn(async move {
                let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let mut latencies = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let got = tokio::time::timeout(
                        Duration::from_secs(10),
                        call(addr, "GET", "/api/version", &auth, empty()),
                    )
                    .await
                    .expect("a small request hung for 10 s under load");
                    assert_eq!(got.status, 200);
                    latencies.push(started.elapsed());
                }
                latencies
            })
        };

        tokio::time::timeout(Duration::from_secs(120), all_flowing.notified())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: only {} of {streams} streams flowing after 120 s",
                    flowing.load(Ordering::SeqCst)
                )
            });
        let flowing_rss = rss_kib(pid);

        for task in tasks {
            let body = match task.await {
                Ok(body) => body,
                Err(failed) => panic!(
                    "round {round}: a stream failed ({failed}); {}",
                    trouble(&proxy)
                ),
            };
            assert!(
                body == expected,
                "a stream arrived altered: {} bytes; {}",
                body.len(),
                trouble(&proxy)
            );
        }
        done.store(true, Ordering::SeqCst);
        small_latencies.extend(small.await.expect("small requests"));
        // The round's high-water mark: with the streams open, or at its end.
        growth_by_round.push(flowing_rss.max(rss_kib(pid)).saturating_sub(baseline));
    }

    // Idle again.
    let idle = rss_kib(pid);

    small_latencies.sort();
    let pick = |q: f64| small_latencies[((small_latencies.len() - 1) as f64 * q) as usize];
    let first = growth_by_round[0];
    let per_stream = first / streams as u64;
    eprintln!(
        "load: {rounds} round(s) of {streams} streams x {chunks} chunks, all intact; \
         {} small requests alongside, p50 {:?} p99 {:?} max {:?}; \
         RSS baseline {baseline} KiB, with the streams open +{growth_by_round:?} KiB by round \
         ({per_stream} KiB/stream), idle after {idle} KiB",
        small_latencies.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0),
    );
    // Generous bounds (the bench measures the real figures; this is a debug
    // build). Memory is flat when later rounds reuse what the first one
    // took instead of adding to it. It does not go back to the baseline
    // when idle: glibc's allocator keeps freed memory (GLIBC_TUNABLES trim
    // and arena settings did not change that here), and up to 128 warm origin
    // connections per thread stay pooled.
    assert!(per_stream <= 256, "{per_stream} KiB per open stream");
    // Fragmentation settles (5 rounds of 1,000 streams: +40, +58, +66, +69,
    // +71 MiB); a leak would add about the same every round.
    let last_step = growth_by_round[rounds - 1].saturating_sub(growth_by_round[rounds - 2]);
    assert!(
        last_step <= (first / 2).max(1024),
        "memory grew round after round: {growth_by_round:?} KiB"
    );
}

/// Hundreds of slowloris connections (a request line and one header, then
/// nothing), in three waves: each is closed at `HEADER_TIMEOUT`, nothing
/// reaches the origin, the memory they hold is bounded, and the waves after
/// the first settle instead of adding to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_cut_and_memory_stays_flat() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let clients = env_number("OLLAMA_PROXY_LOAD_SLOW_CLIENTS", 300);
    let origin = MockOrigin::start().await;
    let proxy = start_with(&origin.url(), &[("HEADER_TIMEOUT", "1s")]);
    let pid = proxy.child.id();
    let baseline = rss_kib(pid);
    let mut growth = Vec::new();
    for wave in 0..3 {
        let mut open = Vec::with_capacity(clients);
        for _ in 0..clients {
            let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            stream
                .write_all(b"POST /api/chat HTTP/1.1\r\nHost: proxy\r\nX-Slow: 1\r\n")
                .await
                .unwrap();
            open.push(stream);
        }
        growth.push(rss_kib(pid).saturating_sub(baseline));
        // Every connection must be closed by the proxy (EOF or reset).
        let closing = open.into_iter().map(|mut stream| async move {
            let mut buf = [0u8; 256];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), await_each(closing))
            .await
            .unwrap_or_else(|_| panic!("wave {wave}: slow clients still open after 30 s"));
    }
    assert!(
        origin.requests().is_empty(),
        "a slow request reached the origin"
    );
    let per_client = growth[0] * 1024 / clients as u64;
    eprintln!(
        "slowloris: {clients} clients x 3 waves, all cut; RSS +{growth:?} KiB by wave ({per_client} bytes each)"
    );
    assert!(
        per_client <= 64 * 1024,
        "{per_client} bytes per slow client"
    );
    // The allocator's arenas may take a second wave in other places than
    // the first (measured: +5.0, then +8.7 MiB over the start); a leak
    // would add about the first wave's again with every wave.
    let last_step = growth[2].saturating_sub(growth[1]);
    assert!(
        last_step <= (growth[0] / 2).max(1024),
        "memory grew wave over wave: {growth:?} KiB"
    );
}

/// Awaits each in turn: they all end on the proxy's own timer, so this takes
/// as long as the slowest one.
async fn await_each<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    for future in futures {
        future.await;
    }
}
