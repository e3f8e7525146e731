//! The shared scenarios against the Worker, built by `cargo xtask
//! build-worker` and running in the real Workers runtime (workerd).

use std::sync::LazyLock;

use ollama_proxy_tests::workerd::Workerd;

static WORKER: LazyLock<Option<Workerd>> = LazyLock::new(Workerd::find);

/// The Worker target, or `None` (the test is skipped) when not built.
struct Worker;

impl ollama_proxy_tests::Target for Worker {
    async fn launch(
        &self,
        vars: &ollama_proxy_tests::Vars,
    ) -> (std::net::SocketAddr, Box<dyn Send>) {
        WORKER
            .as_ref()
            .expect("checked by the scenario macro")
            .launch(vars)
            .await
    }

    fn quirks(&self) -> ollama_proxy_tests::target::Quirks {
        WORKER
            .as_ref()
            .expect("checked by the scenario macro")
            .quirks()
    }
}

ollama_proxy_tests::scenario_tests!(Worker, WORKER.is_some());
