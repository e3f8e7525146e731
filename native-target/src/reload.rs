//! Reloading the keys document (`KEYS_FILE`) without a restart: on SIGHUP,
//! and when the file's content changes (looked at every [`POLL`]).
//!
//! The new configuration is built and validated whole, then put in force in
//! one step ([`Live::replace`]): connections and streams carry on, requests
//! that already started keep the key they were decided with, and the next
//! request sees the new keys (so a revoked key fails at once). A document
//! that does not validate changes nothing: the keys in force stay, never
//! none, and the log says why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ollama_proxy_core::Proxy;

use crate::cli::Args;
use crate::live::Live;
use crate::metrics::Metrics;

/// How often the file is read to see whether it changed.
pub const POLL: Duration = Duration::from_secs(1);

/// Watches the keys file. Create it before serving, so that a SIGHUP from
/// then on reloads instead of ending the process (without `KEYS_FILE` a
/// SIGHUP is logged and changes nothing: `systemctl reload` never stops the
/// proxy).
pub struct Watcher {
    args: Args,
    path: Option<PathBuf>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Watcher {
    /// Listens for SIGHUP.
    pub fn new(args: &Args) -> Self {
        let path = args.keys_file.clone();
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; the keys file is reloaded when it changes");
                None
            }
        };
        Self {
            args: args.clone(),
            path,
            #[cfg(unix)]
            hangup,
        }
    }

    /// Reloads into `live` on each trigger, until dropped.
    pub async fn run(mut self, live: Live, metrics: Arc<Metrics>) {
        if self.path.is_none() {
            loop {
                self.hangup().await;
                tracing::info!("SIGHUP: no KEYS_FILE is set, so there is nothing to reload");
            }
        }
        let mut last = self.read();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reason = tokio::select! {
                () = self.hangup() => "SIGHUP",
                _ = tick.tick() => {
                    if self.read() == last {
                        continue;
                    }
                    "the file changed"
                }
            };
            last = self.read();
            self.reload(&live, &metrics, reason);
        }
    }

    fn read(&self) -> Option<Vec<u8>> {
        std::fs::read(self.path.as_ref()?).ok()
    }

    async fn hangup(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.hangup.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    fn reload(&self, live: &Live, metrics: &Metrics, reason: &str) {
        match self.args.config() {
            Ok(config) => {
                let keys = config
                    .key_names()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                // In force before it is said to be: a request sent on
                // reading the line must be decided with the new keys.
                live.replace(Proxy::new(config));
                metrics.reloaded(true);
                tracing::info!(reason, keys = %keys, "keys reloaded");
            }
            Err(error) => {
                tracing::warn!(reason, %error, "keys reload failed; the keys in force are kept");
                metrics.reloaded(false);
            }
        }
    }
}
