//! Configuration: parsed from named variables, the same names on both targets.
//!
//! Parsing is pure. Each adapter supplies a lookup (environment and flags
//! natively, vars and secrets on the Worker) and gets a validated [`Config`]
//! or an error that names the variable. Secret values never appear in errors
//! or in `Debug` output.

use std::fmt;

use http::HeaderValue;

use crate::auth::{Key, KeyName, Token};
use crate::cors::AllowOrigin;
use crate::origin::{Origin, OriginProblem};

/// Ollama's own default address, the native target's default origin.
pub const DEFAULT_ORIGIN: &str = "http://127.0.0.1:11434";
/// Default request body limit: 100 MiB, the Workers plan limit.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;

/// A configuration variable, by its environment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigVar {
    /// `OLLAMA_ORIGIN`: the origin URL.
    OllamaOrigin,
    /// `AIG_AUTH_TOKEN`: the main token.
    AigAuthToken,
    /// `AIG_AUTH_TOKENS`: more tokens, `name:token` or bare, comma-separated.
    AigAuthTokens,
    /// `CORS_ALLOWED_ORIGINS`: `*` or a list of origins.
    CorsAllowedOrigins,
    /// `ALLOW_AUTHORIZATION_HEADER`: accept `Authorization: Bearer` too.
    AllowAuthorizationHeader,
    /// `ALLOW_MODEL_MANAGEMENT`: forward pull/push/create/delete/copy/blobs.
    AllowModelManagement,
    /// `CF_ACCESS_CLIENT_ID`: Cloudflare Access service-token id.
    CfAccessClientId,
    /// `CF_ACCESS_CLIENT_SECRET`: Cloudflare Access service-token secret.
    CfAccessClientSecret,
    /// `MAX_BODY_BYTES`: request body limit.
    MaxBodyBytes,
}

impl ConfigVar {
    /// Every variable, in documentation order.
    pub const ALL: [ConfigVar; 9] = [
        Self::OllamaOrigin,
        Self::AigAuthToken,
        Self::AigAuthTokens,
        Self::CorsAllowedOrigins,
        Self::AllowAuthorizationHeader,
        Self::AllowModelManagement,
        Self::CfAccessClientId,
        Self::CfAccessClientSecret,
        Self::MaxBodyBytes,
    ];

    /// The environment variable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OllamaOrigin => "OLLAMA_ORIGIN",
            Self::AigAuthToken => "AIG_AUTH_TOKEN",
            Self::AigAuthTokens => "AIG_AUTH_TOKENS",
            Self::CorsAllowedOrigins => "CORS_ALLOWED_ORIGINS",
            Self::AllowAuthorizationHeader => "ALLOW_AUTHORIZATION_HEADER",
            Self::AllowModelManagement => "ALLOW_MODEL_MANAGEMENT",
            Self::CfAccessClientId => "CF_ACCESS_CLIENT_ID",
            Self::CfAccessClientSecret => "CF_ACCESS_CLIENT_SECRET",
            Self::MaxBodyBytes => "MAX_BODY_BYTES",
        }
    }
}

impl fmt::Display for ConfigVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An invalid configuration: which variable, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    var: ConfigVar,
    problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Problem {
    Missing,
    Empty,
    Origin(OriginProblem),
    NotBool,
    NotSize,
    BadCorsEntry(String),
    BadTokenEntry(usize),
    BadTokenChars(Option<usize>),
    DuplicateName(String),
    DuplicateToken(usize),
    AccessPairIncomplete,
}

impl ConfigError {
    fn new(var: ConfigVar, problem: Problem) -> Self {
        Self { var, problem }
    }

    /// The variable at fault.
    pub fn var(&self) -> ConfigVar {
        self.var
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.var)?;
        match &self.problem {
            Problem::Missing if self.var == ConfigVar::AigAuthToken => {
                f.write_str("is required (set AIG_AUTH_TOKEN, or AIG_AUTH_TOKENS with at least one token)")
            }
            Problem::Missing => f.write_str("is required"),
            Problem::Empty => f.write_str("is set but empty"),
            Problem::Origin(OriginProblem::NotAbsoluteHttp) => {
                f.write_str("must be an absolute http:// or https:// URL, e.g. http://127.0.0.1:11434")
            }
            Problem::Origin(OriginProblem::HasUserInfo) => {
                f.write_str("must not contain user:password@ (use CF_ACCESS_CLIENT_ID/SECRET for Access)")
            }
            Problem::Origin(OriginProblem::HasQuery) => f.write_str("must not contain a query string"),
            Problem::NotBool => f.write_str("must be true or false (also 1/0, yes/no, on/off)"),
            Problem::NotSize => f.write_str("must be a byte count such as 104857600, 512KiB, 100MiB or 1GiB"),
            Problem::BadCorsEntry(entry) => write!(
                f,
                "`{entry}` is not an origin; use * or comma-separated scheme://host[:port] values without a path"
            ),
            Problem::BadTokenEntry(n) => write!(f, "entry {n} is empty or has an empty name or token"),
            Problem::BadTokenChars(None) => {
                f.write_str("the token must be printable ASCII without spaces or commas")
            }
            Problem::BadTokenChars(Some(n)) => {
                write!(f, "entry {n}: the token must be printable ASCII without spaces or commas")
            }
            Problem::DuplicateName(name) => write!(f, "the key name `{name}` is used twice"),
            Problem::DuplicateToken(n) => write!(f, "entry {n} repeats a token that is already configured"),
            Problem::AccessPairIncomplete => {
                f.write_str("CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET must be set together")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

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

/// The validated configuration shared by both targets.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) origin: Origin,
    pub(crate) keys: Vec<Key>,
    pub(crate) allow_origin: AllowOrigin,
    pub(crate) allow_authorization_header: bool,
    pub(crate) allow_model_management: bool,
    pub(crate) access: Option<AccessHeaders>,
    pub(crate) max_body_bytes: u64,
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
        let origin = Origin::parse(&origin_raw)
            .map_err(|p| ConfigError::new(V::OllamaOrigin, Problem::Origin(p)))?;

        let keys = parse_keys(get(V::AigAuthToken)?, get(V::AigAuthTokens)?)?;

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

        Ok(Self {
            origin,
            keys,
            allow_origin,
            allow_authorization_header,
            allow_model_management,
            access,
            max_body_bytes,
        })
    }

    /// The origin requests are forwarded to.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The names of the configured keys, in order.
    pub fn key_names(&self) -> impl Iterator<Item = &KeyName> {
        self.keys.iter().map(|k| &k.name)
    }

    /// The request body limit in bytes.
    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
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
            (ConfigVar::OllamaOrigin, self.origin.to_string()),
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
        ]
    }
}

fn parse_keys(main: Option<String>, more: Option<String>) -> Result<Vec<Key>, ConfigError> {
    use ConfigVar as V;
    let mut keys: Vec<Key> = Vec::new();
    if let Some(token) = main {
        let token = token.trim();
        if !is_token(token) {
            return Err(ConfigError::new(
                V::AigAuthToken,
                Problem::BadTokenChars(None),
            ));
        }
        keys.push(Key {
            name: KeyName::new("default"),
            token: Token::new(token),
        });
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
        if !is_token(token) || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::BadTokenChars(Some(n)),
            ));
        }
        let candidate = Token::new(token);
        if keys.iter().any(|k| k.name.as_str() == name) {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::DuplicateName(name),
            ));
        }
        if keys.iter().any(|k| k.token == candidate) {
            return Err(ConfigError::new(
                V::AigAuthTokens,
                Problem::DuplicateToken(n),
            ));
        }
        keys.push(Key {
            name: KeyName::new(&name),
            token: candidate,
        });
    }
    if keys.is_empty() {
        return Err(ConfigError::new(V::AigAuthToken, Problem::Missing));
    }
    Ok(keys)
}

/// Printable ASCII without spaces or commas: what fits in `Bearer <token>`
/// and in the comma-separated `AIG_AUTH_TOKENS`.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

fn parse_bool(var: ConfigVar, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(var, Problem::NotBool)),
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
