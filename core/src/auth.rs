//! Bearer-token authentication against the configured keys, in constant time.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use subtle::{Choice, ConstantTimeEq};

/// The proxy's own credential header, as Cloudflare AI Gateway names it.
pub(crate) const CF_AIG_AUTHORIZATION: HeaderName = HeaderName::from_static("cf-aig-authorization");

/// The name of a configured key, safe to log (never the token itself).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyName(Arc<str>);

impl KeyName {
    pub(crate) fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret token. Its `Debug` never shows the value.
#[derive(Clone)]
pub(crate) struct Token(Box<[u8]>);

impl Token {
    pub(crate) fn new(value: &str) -> Self {
        Self(value.as_bytes().into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// One configured key: a name for logs and the token it stands for.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub(crate) name: KeyName,
    pub(crate) token: Token,
}

/// The outcome of checking a request's credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// A configured token was presented.
    Accepted(KeyName),
    /// No bearer credential in an accepted header.
    Missing,
    /// A credential was presented but matched no configured token.
    Rejected,
}

/// Where the token may come from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AuthSources {
    pub(crate) authorization_header: bool,
}

/// Checks every bearer credential in the accepted headers against every key.
///
/// Each candidate is compared with every key, without stopping at the first
/// match, so the time taken does not say which key (or how much of one)
/// matched. Only a token's length can show, as with any comparison.
pub(crate) fn authenticate(keys: &[Key], headers: &HeaderMap, sources: AuthSources) -> AuthOutcome {
    let mut presented = false;
    let mut matched: Option<&KeyName> = None;
    let mut candidates = headers
        .get_all(CF_AIG_AUTHORIZATION)
        .iter()
        .collect::<Vec<_>>();
    if sources.authorization_header {
        candidates.extend(headers.get_all(AUTHORIZATION).iter());
    }
    for value in candidates {
        let Some(token) = bearer_token(value.as_bytes()) else {
            presented |= !value.as_bytes().iter().all(u8::is_ascii_whitespace);
            continue;
        };
        presented = true;
        if let Some(name) = match_key(keys, token) {
            matched.get_or_insert(name);
        }
    }
    match (matched, presented) {
        (Some(name), _) => AuthOutcome::Accepted(name.clone()),
        (None, true) => AuthOutcome::Rejected,
        (None, false) => AuthOutcome::Missing,
    }
}

/// True when `value` is `Bearer <token>` for one of the configured tokens.
/// Used to decide whether an `Authorization` header is the proxy's to drop.
pub(crate) fn carries_configured_token(keys: &[Key], value: &[u8]) -> bool {
    bearer_token(value).is_some_and(|token| match_key(keys, token).is_some())
}

fn match_key<'k>(keys: &'k [Key], token: &[u8]) -> Option<&'k KeyName> {
    let mut found: Option<&KeyName> = None;
    for key in keys {
        let hit: Choice = key.token.0.ct_eq(token);
        if bool::from(hit) && found.is_none() {
            found = Some(&key.name);
        }
    }
    found
}

/// Extracts the token from `Bearer <token>`: scheme case-insensitive, one or
/// more spaces or tabs after it, surrounding whitespace ignored, token exact.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    if token.len() == rest.len() || token.is_empty() {
        return None; // no separator, or nothing after it
    }
    if token.iter().any(u8::is_ascii_whitespace) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
