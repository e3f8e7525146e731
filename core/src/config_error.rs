//! What configuration there is and what can be wrong with it: the
//! variables by name, and the errors that name the variable at fault and
//! say what is wrong, never showing a secret's value.

use std::fmt;

use super::MAX_ORIGINS;
use crate::keys::KeysProblem;
use crate::origin::OriginProblem;

/// A configuration variable, by its environment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigVar {
    /// `OLLAMA_ORIGIN`: the origin URL, or several comma-separated.
    OllamaOrigin,
    /// `AIG_AUTH_TOKEN`: the main token.
    AigAuthToken,
    /// `AIG_AUTH_TOKENS`: more tokens, `name:token` or bare, comma-separated.
    AigAuthTokens,
    /// `AIG_KEYS`: a keys document (TOML) with per-key policy.
    AigKeys,
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
    /// `MAX_CONCURRENT`: generation and embedding requests in flight at once.
    MaxConcurrent,
    /// `MAX_QUEUE`: requests that may wait for a turn under `MAX_CONCURRENT`.
    MaxQueue,
    /// `QUEUE_TIMEOUT`: how long a request may wait for its turn.
    QueueTimeout,
    /// `MODELS_REFRESH`: with several Ollama boxes, how old a box's list of
    /// models may get before it is asked again.
    ModelsRefresh,
    /// `LOADED_REFRESH`: the same for its loaded models.
    LoadedRefresh,
}

impl ConfigVar {
    /// Every variable, in documentation order.
    pub const ALL: [ConfigVar; 15] = [
        Self::OllamaOrigin,
        Self::AigAuthToken,
        Self::AigAuthTokens,
        Self::AigKeys,
        Self::CorsAllowedOrigins,
        Self::AllowAuthorizationHeader,
        Self::AllowModelManagement,
        Self::CfAccessClientId,
        Self::CfAccessClientSecret,
        Self::MaxBodyBytes,
        Self::MaxConcurrent,
        Self::MaxQueue,
        Self::QueueTimeout,
        Self::ModelsRefresh,
        Self::LoadedRefresh,
    ];

    /// The environment variable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OllamaOrigin => "OLLAMA_ORIGIN",
            Self::AigAuthToken => "AIG_AUTH_TOKEN",
            Self::AigAuthTokens => "AIG_AUTH_TOKENS",
            Self::AigKeys => "AIG_KEYS",
            Self::CorsAllowedOrigins => "CORS_ALLOWED_ORIGINS",
            Self::AllowAuthorizationHeader => "ALLOW_AUTHORIZATION_HEADER",
            Self::AllowModelManagement => "ALLOW_MODEL_MANAGEMENT",
            Self::CfAccessClientId => "CF_ACCESS_CLIENT_ID",
            Self::CfAccessClientSecret => "CF_ACCESS_CLIENT_SECRET",
            Self::MaxBodyBytes => "MAX_BODY_BYTES",
            Self::MaxConcurrent => "MAX_CONCURRENT",
            Self::MaxQueue => "MAX_QUEUE",
            Self::QueueTimeout => "QUEUE_TIMEOUT",
            Self::ModelsRefresh => "MODELS_REFRESH",
            Self::LoadedRefresh => "LOADED_REFRESH",
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
pub(super) enum Problem {
    Missing,
    Empty,
    Origin(OriginProblem),
    /// Entry n (1-based) of several origins is wrong.
    OriginEntry(usize, OriginProblem),
    DuplicateOrigin(usize),
    TooManyOrigins,
    NotBool,
    NotSize,
    NotCount(u32),
    NotDuration,
    BadCorsEntry(String),
    BadTokenEntry(usize),
    BadTokenChars(Option<usize>),
    DuplicateName(String),
    DuplicateToken(usize),
    AccessPairIncomplete,
    Keys(KeysProblem),
}

impl ConfigError {
    pub(super) fn new(var: ConfigVar, problem: Problem) -> Self {
        Self { var, problem }
    }

    /// The variable at fault.
    pub fn var(&self) -> ConfigVar {
        self.var
    }

    /// What is wrong, without the variable's name in front: for an adapter
    /// that names the source itself (a keys document read from a file).
    pub fn detail(&self) -> String {
        Detail(&self.problem, self.var).to_string()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, Detail(&self.problem, self.var))
    }
}

struct Detail<'p>(&'p Problem, ConfigVar);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Problem::Missing if self.1 == ConfigVar::AigAuthToken => {
                f.write_str("is required (set AIG_AUTH_TOKEN, AIG_AUTH_TOKENS, or a keys document with at least one key)")
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
            Problem::OriginEntry(n, problem) => {
                write!(f, "entry {n}: ")?;
                Detail(&Problem::Origin(*problem), self.1).fmt(f)
            }
            Problem::DuplicateOrigin(n) => write!(f, "entry {n} repeats an earlier origin"),
            Problem::TooManyOrigins => write!(f, "at most {MAX_ORIGINS} origins"),
            Problem::NotBool => f.write_str("must be true or false (also 1/0, yes/no, on/off)"),
            Problem::NotSize => f.write_str("must be a byte count such as 104857600, 512KiB, 100MiB or 1GiB"),
            Problem::NotCount(min) => write!(f, "must be a whole number from {min} to 1000000"),
            Problem::NotDuration => f.write_str("must be a duration such as 500ms, 30s, 5m or 1h"),
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
            Problem::Keys(problem) => write!(f, "{problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}
