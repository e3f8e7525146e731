//! Command-line flags and their same-named environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ollama_proxy_core::{Config, ConfigError, ConfigVar, Proxy, DEFAULT_ORIGIN};

use crate::live::Live;
use crate::server::Settings;

/// An authenticating reverse proxy for Ollama.
///
/// Every flag can also be set by the environment variable named beside it;
/// prefer the environment for tokens, since flags show up in `ps`.
#[derive(Clone, Parser)]
#[command(name = "ollama-proxy", version, about, long_about = None)]
pub struct Args {
    /// What to do; without one, serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// PEM certificate chain: with TLS_KEY_FILE, the listener speaks HTTPS
    /// (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1).
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, RSA or EC) for TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificate(s): with HTTPS, clients must also present a
    /// certificate signed by one of them (mutual TLS, besides the token).
    #[arg(long, env = "TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Ollama origin URL (http or https, optionally with a base path).
    /// Its value from the environment is not shown in `--help`: a URL with
    /// `user:password@` (refused at start) would be printed whole.
    #[arg(
        long,
        env = "OLLAMA_ORIGIN",
        default_value = DEFAULT_ORIGIN,
        hide_env_values = true
    )]
    pub ollama_origin: String,

    /// The token clients must present as `Bearer <token>`.
    #[arg(long, env = "AIG_AUTH_TOKEN", hide_env_values = true)]
    pub aig_auth_token: Option<String>,

    /// More tokens, comma-separated, each `name:token` or a bare token.
    #[arg(long, env = "AIG_AUTH_TOKENS", hide_env_values = true)]
    pub aig_auth_tokens: Option<String>,

    /// A keys document (TOML): keys with hashed tokens, expiry, model lists.
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "KEYS_FILE")]
    pub keys_file: Option<PathBuf>,

    /// The keys document itself, inline (as the Worker's secret of the same
    /// name); natively prefer KEYS_FILE, which can be reloaded.
    #[arg(long, env = "AIG_KEYS", hide_env_values = true)]
    pub aig_keys: Option<String>,

    /// `*` or a comma-separated list of exact browser origins. [default: *]
    #[arg(long, env = "CORS_ALLOWED_ORIGINS")]
    pub cors_allowed_origins: Option<String>,

    /// Also accept the token from `Authorization: Bearer`. [default: true]
    #[arg(long, env = "ALLOW_AUTHORIZATION_HEADER", num_args = 0..=1, default_missing_value = "true")]
    pub allow_authorization_header: Option<String>,

    /// Forward /api/pull, push, create, delete, copy and blobs. [default: false]
    #[arg(long, env = "ALLOW_MODEL_MANAGEMENT", num_args = 0..=1, default_missing_value = "true")]
    pub allow_model_management: Option<String>,

    /// Cloudflare Access service-token id sent to the origin.
    #[arg(long, env = "CF_ACCESS_CLIENT_ID")]
    pub cf_access_client_id: Option<String>,

    /// Cloudflare Access service-token secret sent to the origin.
    #[arg(long, env = "CF_ACCESS_CLIENT_SECRET", hide_env_values = true)]
    pub cf_access_client_secret: Option<String>,

    /// Request body limit: bytes, or with a KiB/MiB/GiB suffix. [default: 100MiB]
    #[arg(long, env = "MAX_BODY_BYTES")]
    pub max_body_bytes: Option<String>,

    /// Generation and embedding requests in flight at once; above it they
    /// wait their turn, each freed slot going to the key served least
    /// recently. [default: no limit]
    #[arg(long, env = "MAX_CONCURRENT")]
    pub max_concurrent: Option<String>,

    /// Requests that may wait for a turn under MAX_CONCURRENT; more are
    /// refused with 503. [default: 100]
    #[arg(long, env = "MAX_QUEUE")]
    pub max_queue: Option<String>,

    /// How long a request may wait for its turn before a 503. [default: 60s]
    #[arg(long, env = "QUEUE_TIMEOUT")]
    pub queue_timeout: Option<String>,

    /// With several Ollama boxes: how old a box's list of models may get
    /// before it is asked again (GET /api/tags). [default: 30s]
    #[arg(long, env = "MODELS_REFRESH")]
    pub models_refresh: Option<String>,

    /// With several Ollama boxes: how old a box's list of loaded models may
    /// get before it is asked again (GET /api/ps). [default: 5s]
    #[arg(long, env = "LOADED_REFRESH")]
    pub loaded_refresh: Option<String>,

    /// Time allowed to connect to the origin.
    #[arg(long, env = "CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for the origin's response head (Ollama may be loading a model).
    #[arg(long, env = "RESPONSE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub response_timeout: Duration,

    /// Longest pause allowed between body chunks, in either direction (a
    /// client that takes none of its answer for this long is cut).
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Time allowed for a client to send a whole request head (slow-header
    /// clients are disconnected after it).
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Admin listener for `/metrics`, `/readyz` and `/healthz`; `off` disables it.
    /// Keep it off the public port and unexposed: it has no authentication.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_admin_addr)]
    pub metrics_addr: AdminAddr,

    /// Log format on stderr: `text` (one human-readable line per event) or
    /// `json` (one JSON object per line, for log shippers).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl fmt::Debug for Args {
    /// Nothing: the arguments hold tokens and the Access secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args").finish_non_exhaustive()
    }
}

/// Where the admin listener binds, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminAddr(pub Option<SocketAddr>);

/// Parses `METRICS_ADDR`: an address, or `off`/`none`/empty to disable.
///
/// # Errors
/// A message naming the expected forms.
pub fn parse_admin_addr(raw: &str) -> Result<AdminAddr, String> {
    match raw.trim() {
        "" | "off" | "none" | "false" => Ok(AdminAddr(None)),
        addr => addr
            .parse()
            .map(|a| AdminAddr(Some(a)))
            .map_err(|_| format!("`{raw}` is not an address such as 127.0.0.1:9464, or `off`")),
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-… INFO request request_id=… method=GET …`
    Text,
    /// `{"timestamp":"…","level":"INFO","message":"request","request_id":"…",…}`
    Json,
}

/// Commands besides serving.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Print a new random token (32 bytes as hex, like `openssl rand -hex
    /// 32`) on standard output, and on standard error the `token_sha256`
    /// line for a keys document, which then holds no secret.
    GenToken,
    /// Validate the configuration (flags and environment) and print it with
    /// secrets redacted; exit 2 naming the variable at fault if invalid.
    CheckConfig,
    /// Write a self-signed certificate and key for HTTPS on a LAN box
    /// (cert.pem, key.pem) and print how to use and trust them.
    SelfSigned {
        /// The names and IP addresses clients use to reach this box,
        /// comma-separated (e.g. spark.lan,192.168.1.20).
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// The directory to write cert.pem and key.pem into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// A new random token: 32 bytes from the operating system, as 64 hex digits.
///
/// # Errors
/// When the operating system's random source fails.
pub fn gen_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why the settings are invalid: the core's configuration error (naming
/// the variable, or for a keys file the file), or a keys file that cannot
/// be read.
#[derive(Debug)]
pub enum SettingsError {
    /// The configuration is invalid.
    Config {
        /// The core's error.
        error: ConfigError,
        /// The keys file the document came from, if it was one.
        keys_file: Option<PathBuf>,
    },
    /// `KEYS_FILE` cannot be read.
    KeysFile(PathBuf, std::io::Error),
    /// Both `KEYS_FILE` and `AIG_KEYS` are set.
    TwoKeysDocuments,
    /// One of `TLS_CERT_FILE` and `TLS_KEY_FILE` without the other (the
    /// one missing).
    TlsPairIncomplete(&'static str),
    /// The certificate or key cannot be used.
    Tls(crate::tls::TlsError),
    /// `TLS_CLIENT_CA_FILE` without HTTPS.
    ClientCaWithoutTls,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config {
                error,
                keys_file: Some(path),
            } if error.var() == ConfigVar::AigKeys => {
                write!(f, "KEYS_FILE ({}): {}", path.display(), error.detail())
            }
            Self::Config { error, .. } => write!(f, "{error}"),
            Self::KeysFile(path, error) => {
                write!(f, "KEYS_FILE ({}): cannot read it: {error}", path.display())
            }
            Self::TwoKeysDocuments => {
                f.write_str("KEYS_FILE and AIG_KEYS are both set; use one keys document")
            }
            Self::TlsPairIncomplete(missing) => write!(
                f,
                "{missing}: is required when the other of TLS_CERT_FILE and TLS_KEY_FILE is set"
            ),
            Self::Tls(error) => write!(f, "{error}"),
            Self::ClientCaWithoutTls => f.write_str(
                "TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE and TLS_KEY_FILE (client certificates are part of HTTPS)",
            ),
        }
    }
}

impl std::error::Error for SettingsError {}

impl Args {
    /// The effective settings as `NAME=value` lines, secrets redacted, then
    /// one line per key: name, hashed or not, expiry, models, management.
    pub fn redacted_lines(&self, settings: &Settings) -> Vec<String> {
        let proxy = settings.proxy.load();
        let config = proxy.config();
        let mut lines: Vec<String> = config
            .redacted_summary()
            .into_iter()
            .map(|(var, value)| format!("{}={value}", var.name()))
            .collect();
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        lines.extend([
            format!("LISTEN_ADDR={}", self.listen_addr),
            format!(
                "TLS_CERT_FILE={}",
                self.tls_cert_file
                    .as_ref()
                    .map_or("<unset: plain HTTP>".to_owned(), |p| p
                        .display()
                        .to_string())
            ),
            format!(
                "TLS_KEY_FILE={}",
                self.tls_key_file
                    .as_ref()
                    .map_or("<unset>".to_owned(), |p| p.display().to_string())
            ),
            format!(
                "TLS_CLIENT_CA_FILE={}",
                self.tls_client_ca_file
                    .as_ref()
                    .map_or("<unset>".to_owned(), |p| p.display().to_string())
            ),
            format!(
                "METRICS_ADDR={}",
                self.metrics_addr
                    .0
                    .map_or("off".to_owned(), |a| a.to_string())
            ),
            format!("CONNECT_TIMEOUT={}", secs(self.connect_timeout)),
            format!("RESPONSE_TIMEOUT={}", secs(self.response_timeout)),
            format!("IDLE_TIMEOUT={}", secs(self.idle_timeout)),
            format!("HEADER_TIMEOUT={}", secs(self.header_timeout)),
            format!(
                "LOG_FORMAT={}",
                match self.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
            ),
            format!("SHUTDOWN_GRACE={}", secs(self.shutdown_grace)),
            format!(
                "KEYS_FILE={}",
                self.keys_file
                    .as_ref()
                    .map_or("<unset>".to_owned(), |p| p.display().to_string())
            ),
        ]);
        for key in config.key_summaries() {
            let models = key
                .models
                .map_or_else(|| "*".to_owned(), |m| format!("[{}]", m.join(", ")));
            let limit = |n: Option<u32>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
            lines.push(format!(
                "key {}: token={} expires={} disabled={} models={models} model_management={} max_concurrent={} requests_per_minute={}",
                key.name,
                if key.hashed { "sha256" } else { "plain" },
                key.expires
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                key.disabled,
                key.model_management,
                limit(key.max_concurrent),
                limit(key.requests_per_minute),
            ));
        }
        lines
    }

    /// The value given for a core variable, by flag or environment.
    fn lookup(&self, var: ConfigVar) -> Option<String> {
        match var {
            ConfigVar::OllamaOrigin => Some(self.ollama_origin.clone()),
            ConfigVar::AigAuthToken => self.aig_auth_token.clone(),
            ConfigVar::AigAuthTokens => self.aig_auth_tokens.clone(),
            ConfigVar::AigKeys => self.aig_keys.clone(),
            ConfigVar::CorsAllowedOrigins => self.cors_allowed_origins.clone(),
            ConfigVar::AllowAuthorizationHeader => self.allow_authorization_header.clone(),
            ConfigVar::AllowModelManagement => self.allow_model_management.clone(),
            ConfigVar::CfAccessClientId => self.cf_access_client_id.clone(),
            ConfigVar::CfAccessClientSecret => self.cf_access_client_secret.clone(),
            ConfigVar::MaxBodyBytes => self.max_body_bytes.clone(),
            ConfigVar::MaxConcurrent => self.max_concurrent.clone(),
            ConfigVar::MaxQueue => self.max_queue.clone(),
            ConfigVar::QueueTimeout => self.queue_timeout.clone(),
            ConfigVar::ModelsRefresh => self.models_refresh.clone(),
            ConfigVar::LoadedRefresh => self.loaded_refresh.clone(),
        }
    }

    /// Validates the arguments into server settings.
    ///
    /// # Errors
    /// See [`Args::config`].
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let config = self.config()?;
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) if self.tls_client_ca_file.is_some() => {
                return Err(SettingsError::ClientCaWithoutTls)
            }
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                crate::tls::Tls::load(cert, key, self.tls_client_ca_file.as_deref())
                    .map_err(SettingsError::Tls)?,
            ),
            (Some(_), None) => return Err(SettingsError::TlsPairIncomplete("TLS_KEY_FILE")),
            (None, Some(_)) => return Err(SettingsError::TlsPairIncomplete("TLS_CERT_FILE")),
        };
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        Ok(Settings {
            turns: crate::turns::Turns::new(config.turn_limits(), std::sync::Arc::clone(&metrics)),
            tls,
            pool: crate::backends::Pool::new(
                config.origins(),
                config.health_policy(),
                std::sync::Arc::clone(&metrics),
            ),
            metrics,
            proxy: Live::new(Proxy::new(config)),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            shutdown_grace: self.shutdown_grace,
        })
    }

    /// The core's configuration from the arguments, with the keys document
    /// read from `KEYS_FILE` now (this is what a reload calls again).
    ///
    /// # Errors
    /// The core's [`ConfigError`], which names the variable (or the keys
    /// file) at fault; a keys file that cannot be read.
    pub fn config(&self) -> Result<Config, SettingsError> {
        let document = match (&self.keys_file, &self.aig_keys) {
            (Some(_), Some(_)) => return Err(SettingsError::TwoKeysDocuments),
            (Some(path), None) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| SettingsError::KeysFile(path.clone(), e))?,
            ),
            (None, inline) => inline.clone(),
        };
        Config::from_lookup(|var| match var {
            ConfigVar::AigKeys => document.clone(),
            other => self.lookup(other),
        })
        .map_err(|error| SettingsError::Config {
            error,
            keys_file: self.keys_file.clone(),
        })
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
///
/// # Errors
/// A message for values that are not a whole number with one of those units.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    ollama_proxy_core::parse_duration_ms(raw)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{}` is not a duration such as 500ms, 10s, 5m", raw.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn flags_feed_the_core_config() {
        let args = Args::try_parse_from([
            "ollama-proxy",
            "--aig-auth-token",
            "t0k",
            "--allow-model-management",
            "--ollama-origin",
            "http://gpu-box:11434",
        ])
        .unwrap();
        let settings = args.settings().unwrap();
        assert_eq!(
            settings.proxy.load().config().origin().to_string(),
            "http://gpu-box:11434"
        );
        let err = Args::try_parse_from(["ollama-proxy", "--ollama-origin", "http://h"])
            .unwrap()
            .settings();
        assert!(err.unwrap_err().to_string().starts_with("AIG_AUTH_TOKEN"));
    }
}
