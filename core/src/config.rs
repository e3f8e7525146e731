//! Configuration: parsed from named variables, the same names on both targets.
//!
//! Parsing is pure. Each adapter supplies a lookup (environment and flags
//! natively, vars and secrets on the Worker) and gets a validated [`Config`]
//! or an error that names the variable. Secret values never appear in errors
//! or in `Debug` output.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

use crate::auth::{Digest, Key, KeyName, KeyPolicy};
use crate::backends::HealthPolicy;
use crate::cors::AllowOrigin;
use crate::keys::{self, is_key_name, is_token};
use crate::origin::Origin;
use crate::time::UnixTime;
use crate::turns::{TurnLimits, DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT_SECS};

#[path = "config_error.rs"]
mod error;
use error::Problem;
pub use error::{ConfigError, ConfigVar};

/// Ollama's own default address, the native target's default origin.
pub const DEFAULT_ORIGIN: &str = "http://127.0.0.1:11434";
/// The most Ollama boxes `OLLAMA_ORIGIN` may list.
pub const MAX_ORIGINS: usize = 16;
/// Default request body limit: 100 MiB, the Workers plan limit.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;

/// Cloudflare Access service-token headers sent to the origin.
#[derive(Clone)]
pub(crate) struct AccessHeaders {
    pub(crate) client_id: HeaderValue,
    pub(crate) client_secret: HeaderValue,
}

impl fmt::Debug for AccessHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessHeaders")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// One configured key as `check-config` shows it. There is no token here,
/// hashed or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySummary {
    /// The key's name.
    pub name: String,
    /// The keys document gave only the token's SHA-256.
    pub hashed: bool,
    /// When the key stops working, if it does.
    pub expires: Option<UnixTime>,
    /// Refused while set.
    pub disabled: bool,
    /// The allowlist as written; `None` for every model.
    pub models: Option<Vec<String>>,
    /// Its generation and embedding requests in flight or waiting, at most.
    pub max_concurrent: Option<u32>,
    /// Its requests a minute, at most.
    pub requests_per_minute: Option<u32>,
    /// Whether model management is allowed for this key (its own setting,
    /// else `ALLOW_MODEL_MANAGEMENT`).
    pub model_management: bool,
}

/// The validated configuration shared by both targets.
#[derive(Clone, Debug)]
pub struct Config {
    /// One or more Ollama boxes, in the order configured.
    pub(crate) origins: Vec<Origin>,
    pub(crate) keys: Vec<Arc<Key>>,
    pub(crate) allow_origin: AllowOrigin,
    pub(crate) allow_authorization_header: bool,
    pub(crate) allow_model_management: bool,
    pub(crate) access: Option<AccessHeaders>,
    pub(crate) max_body_bytes: u64,
    pub(crate) turn_limits: TurnLimits,
    pub(crate) health: HealthPolicy,
}

/// `OLLAMA_ORIGIN`: one URL, or several comma-separated (empty entries,
/// as a trailing comma leaves, are skipped).
fn parse_origins(raw: &str) -> Result<Vec<Origin>, ConfigError> {
    let var = ConfigVar::OllamaOrigin;
    let entries: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > MAX_ORIGINS {
        return Err(ConfigError::new(var, Problem::TooManyOrigins));
    }
    let several = entries.len() > 1;
    let mut origins: Vec<Origin> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let origin = Origin::parse(entry).map_err(|p| {
            let problem = if several {
                Problem::OriginEntry(i + 1, p)
            } else {
                Problem::Origin(p)
            };
            ConfigError::new(var, problem)
        })?;
        if origins.contains(&origin) {
            return Err(ConfigError::new(var, Problem::DuplicateOrigin(i + 1)));
        }
        origins.push(origin);
    }
    if origins.is_empty() {
        return Err(ConfigError::new(var, Problem::Empty));
    }
    Ok(origins)
}

impl Config {
    /// Builds the configuration from a lookup of variable values. A variable
    /// the lookup returns `None` for is unset and takes its default.
    ///
    /// # Errors
    /// The first invalid or missing variable, by name. `OLLAMA_ORIGIN` has
    /// no default here: a target that has one supplies it through the lookup.
    pub fn from_lookup(lookup: impl Fn(ConfigVar) -> Option<String>) -> Result<Self, ConfigError> {
        use ConfigVar as V;
        let get = |var: V| -> Result<Option<String>, ConfigError> {
            match lookup(var) {
                Some(v) if v.trim().is_empty() => Err(ConfigError::new(var, Problem::Empty)),
                other => Ok(other),
            }
        };

        let origin_raw =
            get(V::OllamaOrigin)?.ok_or(ConfigError::new(V::OllamaOrigin, Problem::Missing))?;
        let origins = parse_origins(&origin_raw)?;

        let keys = parse_keys(
            get(V::AigAuthToken)?,
            get(V::AigAuthTokens)?,
            lookup(V::AigKeys),
        )?;

        let allow_origin = match get(V::CorsAllowedOrigins)? {
            None => AllowOrigin::Any,
            Some(raw) => AllowOrigin::parse(&raw).map_err(|bad| {
                ConfigError::new(V::CorsAllowedOrigins, Problem::BadCorsEntry(bad.0))
            })?,
        };

        let allow_authorization_header = parse_bool(
            V::AllowAuthorizationHeader,
            get(V::AllowAuthorizationHeader)?,
            true,
        )?;
        let allow_model_management = parse_bool(
            V::AllowModelManagement,
            get(V::AllowModelManagement)?,
            false,
        )?;

        let access = match (get(V::CfAccessClientId)?, get(V::CfAccessClientSecret)?) {
            (None, None) => None,
            (Some(id), Some(secret)) => Some(AccessHeaders {
                client_id: header_value(V::CfAccessClientId, id.trim(), false)?,
                client_secret: header_value(V::CfAccessClientSecret, secret.trim(), true)?,
            }),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    V::CfAccessClientSecret,
                    Problem::AccessPairIncomplete,
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    V::CfAccessClientId,
                    Problem::AccessPairIncomplete,
                ))
            }
        };

        let max_body_bytes = match get(V::MaxBodyBytes)? {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(raw) => {
                parse_size(&raw).ok_or(ConfigError::new(V::MaxBodyBytes, Problem::NotSize))?
            }
        };

        let count = |var: V, min: u32| -> Result<Option<u32>, ConfigError> {
            get(var)?
                .map(|raw| {
                    raw.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (min..=1_000_000).contains(n))
                        .ok_or(ConfigError::new(var, Problem::NotCount(min)))
                })
                .transpose()
        };
        let turn_limits = TurnLimits {
            max_concurrent: count(V::MaxConcurrent, 1)?,
            max_queue: count(V::MaxQueue, 0)?.unwrap_or(DEFAULT_MAX_QUEUE),
            queue_timeout_us: match get(V::QueueTimeout)? {
                None => DEFAULT_QUEUE_TIMEOUT_SECS * 1_000_000,
                Some(raw) => parse_duration_ms(&raw)
                    .filter(|&ms| ms > 0)
                    .ok_or(ConfigError::new(V::QueueTimeout, Problem::NotDuration))?
                    .saturating_mul(1_000),
            },
        };

        let refresh = |var: V, default: u64| -> Result<u64, ConfigError> {
            match get(var)? {
                None => Ok(default),
                Some(raw) => Ok(parse_duration_ms(&raw)
                    .filter(|&ms| ms > 0)
                    .ok_or(ConfigError::new(var, Problem::NotDuration))?
                    .saturating_mul(1_000)),
            }
        };
        let defaults = HealthPolicy::default();
        let health = HealthPolicy {
            models_refresh_us: refresh(V::ModelsRefresh, defaults.models_refresh_us)?,
            loaded_refresh_us: refresh(V::LoadedRefresh, defaults.loaded_refresh_us)?,
            ..defaults
        };

        Ok(Self {
            origins,
            keys,
            allow_origin,
            allow_authorization_header,
            allow_model_management,
            access,
            max_body_bytes,
            turn_limits,
            health,
        })
    }

    /// The (first) origin requests are forwarded to.
    pub fn origin(&self) -> &Origin {
        &self.origins[0]
    }

    /// Every origin, in the order configured: the Ollama boxes requests are
    /// spread over (see [`Backends`](crate::Backends)), by index.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// The names of the configured keys, in order.
    pub fn key_names(&self) -> impl Iterator<Item = &KeyName> {
        self.keys.iter().map(|k| &k.name)
    }

    /// The request body limit in bytes.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// How the Ollama boxes are watched (`MODELS_REFRESH`,
    /// `LOADED_REFRESH`), for [`Backends`](crate::Backends).
    pub fn health_policy(&self) -> HealthPolicy {
        self.health
    }

    /// `MAX_CONCURRENT`, `MAX_QUEUE` and `QUEUE_TIMEOUT`, for the doorman.
    pub fn turn_limits(&self) -> TurnLimits {
        self.turn_limits
    }

    /// Every key as `check-config` lists it: name, policy, never a token.
    pub fn key_summaries(&self) -> Vec<KeySummary> {
        self.keys
            .iter()
            .map(|key| {
                let p = &key.policy;
                KeySummary {
                    name: key.name.to_string(),
                    hashed: p.hashed,
                    expires: p.expires,
                    disabled: p.disabled,
                    models: p
                        .models
                        .as_ref()
                        .map(|m| m.entries().map(str::to_owned).collect()),
                    model_management: p.model_management.unwrap_or(self.allow_model_management),
                    max_concurrent: p.max_concurrent,
                    requests_per_minute: p.requests_per_minute,
                }
            })
            .collect()
    }

    /// The effective configuration as `NAME=value` lines, secrets redacted.
    pub fn redacted_summary(&self) -> Vec<(ConfigVar, String)> {
        let names: Vec<&str> = self.key_names().map(KeyName::as_str).collect();
        let cors = match &self.allow_origin {
            AllowOrigin::Any => "*".to_owned(),
            AllowOrigin::List(list) => list.join(","),
        };
        let access = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        vec![
            (
                ConfigVar::OllamaOrigin,
                self.origins
                    .iter()
                    .map(Origin::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                ConfigVar::AigAuthToken,
                format!("<{} key(s): {}>", names.len(), names.join(", ")),
            ),
            (ConfigVar::CorsAllowedOrigins, cors),
            (
                ConfigVar::AllowAuthorizationHeader,
                self.allow_authorization_header.to_string(),
            ),
            (
                ConfigVar::AllowModelManagement,
                self.allow_model_management.to_string(),
            ),
            (
                ConfigVar::CfAccessClientId,
                self.access
                    .as_ref()
                    .map_or_else(|| "<unset>".to_owned(), |a| access(&a.client_id)),
            ),
            (
                ConfigVar::CfAccessClientSecret,
                if self.access.is_some() {
                    "<redacted>"
                } else {
                    "<unset>"
                }
                .to_owned(),
            ),
            (ConfigVar::MaxBodyBytes, self.max_body_bytes.to_string()),
            (
                ConfigVar::MaxConcurrent,
                self.turn_limits
                    .max_concurrent
                    .map_or_else(|| "<unset>".to_owned(), |n| n.to_string()),
            ),
            (ConfigVar::MaxQueue, self.turn_limits.max_queue.to_string()),
            (
                ConfigVar::QueueTimeout,
                format!("{}ms", self.turn_limits.queue_timeout_us / 1_000),
            ),
            (
                ConfigVar::ModelsRefresh,
                format!("{}ms", self.health.models_refresh_us / 1_000),
            ),
            (
                ConfigVar::LoadedRefresh,
                format!("{}ms", self.health.loaded_refresh_us / 1_000),
            ),
        ]
    }
}

fn parse_keys(
    main: Option<String>,
    more: Option<String>,
    document: Option<String>,
) -> Result<Vec<Arc<Key>>, ConfigError> {
    use ConfigVar as V;
    let mut keys: Vec<Key> = Vec::new();
    let plain = |name: &str, token: &str| Key {
        name: KeyName::new(name),
        digest: Digest::of(token.as_bytes()),
        policy: KeyPolicy::default(),
    };
    if let Some(token) = main {
        let token = token.trim();
        if !is_token(token) {
            return Err(ConfigError::new(
                V::AigAuthToken,
                Problem::BadTokenChars(None),
            ));
        }
        keys.push(plain("default", token));
    }
    for (i, entry) in more.iter().flat_map(|m| m.split(',')).enumerate() {
        let n = i + 1;
        let entry = entry.trim();
        let (name, token) = match entry.split_once(':') {
            Some((name, token)) => (name.trim().to_owned(), token.trim()),
            None => (format!("token-{n}"), entry),
        };
        if name.is_empty() || token.is_empty() {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::BadTokenEntry(n),
            ));
        }
        if !is_token(token) || !is_key_name(&name) {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::BadTokenChars(Some(n)),
            ));
        }
        let candidate = plain(&name, token);
        if keys.iter().any(|k| k.name == candidate.name) {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::DuplicateName(name),
            ));
        }
        if keys.iter().any(|k| k.digest == candidate.digest) {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::DuplicateToken(n),
            ));
        }
        keys.push(candidate);
    }
    // An empty document is a document with no keys, not an unset variable.
    if let Some(document) = document {
        let more = keys::parse(&document, &keys)
            .map_err(|problem| ConfigError::new(V::AigKeys, Problem::Keys(problem)))?;
        keys.extend(more);
    }
    if keys.is_empty() {
        return Err(ConfigError::new(V::AigAuthToken, Problem::Missing));
    }
    Ok(keys.into_iter().map(Arc::new).collect())
}

fn parse_bool(var: ConfigVar, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(var, Problem::NotBool)),
    }
}

/// A duration in milliseconds: `500ms`, `10s`, `5m`, `1h`, or a bare
/// number of seconds.
pub fn parse_duration_ms(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
}

/// A byte count, optionally with a binary suffix (`KiB`, `MiB`, `GiB`).
fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let digits_end = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, suffix) = raw.split_at(digits_end);
    let n: u64 = digits.parse().ok()?;
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn header_value(var: ConfigVar, raw: &str, sensitive: bool) -> Result<HeaderValue, ConfigError> {
    let mut value = HeaderValue::from_str(raw)
        .ok()
        .filter(|_| is_token(raw))
        .ok_or(ConfigError::new(var, Problem::BadTokenChars(None)))?;
    value.set_sensitive(sensitive);
    Ok(value)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
