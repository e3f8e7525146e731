//! `ollama-proxy`: the native server binary.

use std::process::ExitCode;

use clap::Parser;
use ollama_proxy_native::admin::Admin;
use ollama_proxy_native::cli::{gen_token, Args, Command, LogFormat};
#[cfg(unix)]
use ollama_proxy_native::log_sink::LogSink;
use ollama_proxy_native::reload::Watcher;
use ollama_proxy_native::{bind, serve};

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::GenToken) => {
            return match gen_token() {
                Ok(token) => {
                    // The token alone on stdout, so `$(ollama-proxy gen-token)`
                    // works; the keys-document line (no secret in it) on stderr.
                    println!("{token}");
                    eprintln!(
                        "# For a keys document (KEYS_FILE / AIG_KEYS), which then holds no secret:\ntoken_sha256 = \"{}\"",
                        ollama_proxy_core::token_sha256_hex(&token)
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("ollama-proxy: no random source: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::SelfSigned { hosts, out }) => {
            return match ollama_proxy_native::tls::write_self_signed(&hosts, &out) {
                Ok((cert, key)) => {
                    let (cert, key) = (cert.display(), key.display());
                    println!(
                        "Wrote {cert} and {key} (a self-signed certificate for {}).",
                        hosts.join(", ")
                    );
                    println!();
                    println!("Serve HTTPS with them:");
                    println!("  TLS_CERT_FILE={cert} TLS_KEY_FILE={key} ollama-proxy");
                    println!();
                    println!("Clients must trust {cert}, the certificate itself:");
                    println!(
                        "  curl:                  curl --cacert {cert} https://{}:8080/healthz",
                        hosts[0]
                    );
                    println!("  Python (openai, ollama): SSL_CERT_FILE={cert} python app.py");
                    println!("  Node (openai):         NODE_EXTRA_CA_CERTS={cert} node app.js");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("ollama-proxy: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::CheckConfig) => {
            return match args.settings() {
                Ok(settings) => {
                    for line in args.redacted_lines(&settings) {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("ollama-proxy: config error: {error}");
                    ExitCode::from(2)
                }
            };
        }
        None => {}
    }
    let output = log_output();
    #[cfg(unix)]
    if args.log_format == LogFormat::Text {
        output.carry_request_lines();
    }
    let logs = tracing_subscriber::fmt()
        .with_writer(output)
        .with_timer(ollama_proxy_native::log_sink::Timestamps)
        .with_target(false);
    match args.log_format {
        LogFormat::Text => {
            ollama_proxy_native::render_request_lines();
            logs.init();
        }
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ollama-proxy: config error: {error}");
            return ExitCode::from(2);
        }
    };
    // This runtime only waits for signals; the server runs its own, one per core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ollama-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before serving: from now on SIGHUP reloads the keys file.
        let watcher = Watcher::new(&args);
        tokio::spawn(watcher.run(settings.proxy.clone(), settings.metrics.clone()));
        // And the certificate, when serving HTTPS.
        if let Some(tls) = settings.tls.clone() {
            tokio::spawn(tls.watch());
        }
        let listener = match bind(args.listen_addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "ollama-proxy: cannot listen on {} (LISTEN_ADDR): {error}",
                    args.listen_addr
                );
                return bind_failure(&error);
            }
        };
        // The admin listener: bound before serving, so a taken port fails
        // the start instead of leaving the proxy without metrics.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(addr) = args.metrics_addr.0 {
            let admin = match Admin::new(&settings) {
                Ok(admin) => admin,
                Err(error) => {
                    eprintln!("ollama-proxy: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let admin_listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("ollama-proxy: cannot listen on {addr} (METRICS_ADDR): {error}");
                    return bind_failure(&error);
                }
            };
            tracing::info!(admin = %addr, "admin listener: /metrics /readyz /healthz");
            tokio::spawn(admin.serve(admin_listener, async move {
                let _ = admin_stopped.await;
            }));
        }
        let served = serve(listener, settings, shutdown_signal()).await;
        let _ = admin_stop.send(());
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("ollama-proxy: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Where log lines go: standard error (see [`LogSink`]).
#[cfg(unix)]
fn log_output() -> LogSink {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => LogSink::new(std::fs::File::from(fd)),
        Err(error) => {
            eprintln!("ollama-proxy: cannot use standard error for logs: {error}");
            std::process::exit(1);
        }
    }
}

#[cfg(not(unix))]
fn log_output() -> fn() -> std::io::Stderr {
    std::io::stderr
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// The exit code for an address that cannot be bound: 2, as for any other
/// configuration error, when something already listens there (the operator
/// must pick another address or stop the other process); else 1.
fn bind_failure(error: &std::io::Error) -> ExitCode {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
