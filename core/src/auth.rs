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

/// Checks the bearer credential in each accepted header against every key.
///
/// A header counts only when it carries exactly one credential. Repeated
/// fields and comma-joined values are the same thing to HTTP (RFC 9110 §5.3),
/// and runtimes differ in which form they hand over (the Workers runtime
/// joins repeated fields with ", "), so a header with several credentials is
/// ambiguous in either form and never authenticates. Tokens cannot contain
/// commas, so no valid token is split.
///
/// Each candidate is compared with every key, without stopping at the first
/// match, so the time taken does not say which key (or how much of one)
/// matched. Only a token's length can show, as with any comparison.
pub(crate) fn authenticate(keys: &[Key], headers: &HeaderMap, sources: AuthSources) -> AuthOutcome {
    let mut presented = false;
    let mut matched: Option<&KeyName> = None;
    let mut names = vec![CF_AIG_AUTHORIZATION];
    if sources.authorization_header {
        names.push(AUTHORIZATION);
    }
    for name in names {
        let pieces = credential_pieces(headers, &name);
        presented |= !pieces.is_empty();
        let [piece] = pieces.as_slice() else {
            continue; // none, or ambiguous
        };
        if let Some(name) = bearer_token(piece).and_then(|token| match_key(keys, token)) {
            matched.get_or_insert(name);
        }
    }
    match (matched, presented) {
        (Some(name), _) => AuthOutcome::Accepted(name.clone()),
        (None, true) => AuthOutcome::Rejected,
        (None, false) => AuthOutcome::Missing,
    }
}

/// The comma-separated, non-blank pieces of every value of header `name`.
fn credential_pieces<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Vec<&'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter(|piece| !piece.trim_ascii().is_empty())
        .collect()
}

/// True when any credential in the `Authorization` header (in any value, or
/// any comma-separated piece of one) is `Bearer <token>` for a configured
/// token: then the whole header is the proxy's and must not be forwarded.
pub(crate) fn authorization_carries_configured_token(keys: &[Key], headers: &HeaderMap) -> bool {
    credential_pieces(headers, &AUTHORIZATION)
        .into_iter()
        .any(|piece| bearer_token(piece).is_some_and(|token| match_key(keys, token).is_some()))
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
