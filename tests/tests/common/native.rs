//! The native proxy as a [`Target`], started in-process. Variables become
//! the flags of the same name (`MAX_BODY_BYTES` → `--max-body-bytes`), so the
//! CLI mapping is exercised too.

use std::net::SocketAddr;

use clap::Parser;
use ollama_proxy_native::cli::Args;
use ollama_proxy_tests::{Target, Vars};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct Native;

impl Target for Native {
    const NAME: &'static str = "native";

    async fn launch(&self, vars: &Vars) -> (SocketAddr, Box<dyn Send>) {
        let mut argv = vec!["ollama-proxy".to_owned()];
        for (name, value) in vars {
            argv.push(format!(
                "--{}={value}",
                name.to_ascii_lowercase().replace('_', "-")
            ));
        }
        let args = Args::try_parse_from(argv).expect("flags parse");
        let settings = args.settings().expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(ollama_proxy_native::serve(listener, settings, async move {
            let _ = stopped.await;
        }));
        (addr, Box::new(stop))
    }
}
