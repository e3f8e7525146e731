//! Bearer-token authentication against the configured keys, in constant time.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::error::ProxyError;
use crate::models::ModelList;
use crate::time::UnixTime;

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

/// By name: the doorman keeps keys in order.
impl Ord for KeyName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for KeyName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
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

/// The SHA-256 digest of a token: all the proxy keeps of it. Comparing
/// digests takes the same time whatever the token's length, and a keys
/// document can hold digests instead of secrets. Its `Debug` shows nothing.
/// Held as four words, folded into one for a comparison (see `ct_eq`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest([u64; 4]);

impl Digest {
    fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
        }
        Self(words)
    }

    /// The digest of a presented or configured token.
    pub(crate) fn of(token: &[u8]) -> Self {
        Self::from_bytes(Sha256::digest(token).into())
    }

    /// Reads 64 hex digits (either case).
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
            let text = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(text, 16).ok()?;
        }
        Some(Self::from_bytes(out))
    }

    /// 64 lowercase hex digits.
    pub(crate) fn to_hex(self) -> String {
        self.0.iter().map(|w| format!("{w:016x}")).collect()
    }

    /// Equal or not, in constant time: the words' differences are folded
    /// into one word first, so a key costs one constant-time comparison
    /// (one optimisation barrier) instead of four.
    fn ct_eq(&self, other: &Self) -> Choice {
        let diff = (self.0[0] ^ other.0[0])
            | (self.0[1] ^ other.0[1])
            | (self.0[2] ^ other.0[2])
            | (self.0[3] ^ other.0[3]);
        diff.ct_eq(&0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The SHA-256 of `token` as 64 lowercase hex digits: what a keys
/// document's `token_sha256` holds (`ollama-proxy gen-token` prints it).
pub fn token_sha256_hex(token: &str) -> String {
    Digest::of(token.as_bytes()).to_hex()
}

/// What a key may do besides authenticate.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyPolicy {
    /// The document gave `token_sha256` rather than the token.
    pub(crate) hashed: bool,
    /// From this instant on, the key is refused (`expired_api_key`).
    pub(crate) expires: Option<UnixTime>,
    /// Refused while set (`disabled_api_key`).
    pub(crate) disabled: bool,
    /// The models the key may use and see; `None` for every model.
    pub(crate) models: Option<ModelList>,
    /// Overrides `ALLOW_MODEL_MANAGEMENT` for this key.
    pub(crate) model_management: Option<bool>,
    /// Its generation and embedding requests in flight or waiting, at most.
    pub(crate) max_concurrent: Option<u32>,
    /// Its requests a minute, at most (a bucket refilling continuously).
    pub(crate) requests_per_minute: Option<u32>,
}

/// One configured key: a name for logs, its token's digest, its policy.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub(crate) name: KeyName,
    pub(crate) digest: Digest,
    pub(crate) policy: KeyPolicy,
}

impl Key {
    /// Why the key may not be used at `now`, if it may not.
    pub(crate) fn refusal(&self, now: UnixTime) -> Option<ProxyError> {
        if self.policy.disabled {
            Some(ProxyError::DisabledToken)
        } else if self.policy.expires.is_some_and(|at| now >= at) {
            Some(ProxyError::ExpiredToken)
        } else {
            None
        }
    }
}

/// The outcome of checking a request's credentials.
#[derive(Clone, Debug)]
pub(crate) enum AuthOutcome {
    /// A configured token was presented.
    Accepted(Arc<Key>),
    /// No bearer credential in an accepted header.
    Missing,
    /// A credential was presented but matched no configured token.
    Rejected,
}

impl PartialEq for AuthOutcome {
    /// Outcomes are equal when they accepted keys of the same name.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Accepted(a), Self::Accepted(b)) => a.name == b.name,
            (Self::Missing, Self::Missing) | (Self::Rejected, Self::Rejected) => true,
            _ => false,
        }
    }
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
/// Each candidate is hashed once and its digest compared with every key's,
/// without stopping at the first match, so the time taken says neither
/// which key matched nor how long the token is. The same pass tells whether
/// `Authorization` is the proxy's to drop (see [`Authentication`]): an
/// OpenAI client's token was hashed and compared twice per request before.
pub(crate) fn authenticate(
    keys: &[Arc<Key>],
    headers: &HeaderMap,
    sources: AuthSources,
) -> Authentication {
    let mut pieces = credential_pieces(headers, &CF_AIG_AUTHORIZATION);
    let first = pieces.next();
    let mut presented = first.is_some();
    let mut matched = match (first, pieces.next()) {
        (Some(piece), None) => bearer_token(piece).and_then(|token| match_key(keys, token)),
        _ => None, // none, or ambiguous
    };
    // `Authorization` is read whole whether or not it may authenticate: a
    // configured token anywhere in it makes the header the proxy's, not to
    // be forwarded — as `Bearer <token>` (hashed once, for both questions)
    // or in another spelling a client may use by mistake (`<token>`,
    // `Token <token>`), which never authenticates. A header with more
    // pieces than any client sends is dropped unread: hashing each would
    // let one request cost the proxy thousands of hashes.
    let mut count = 0usize;
    let mut only = None;
    let mut ours = false;
    for piece in credential_pieces(headers, &AUTHORIZATION) {
        count += 1;
        if count > MAX_PIECES {
            ours = true;
            break;
        }
        let key = match bearer_token(piece) {
            Some(token) => match_key(keys, token),
            None => {
                ours |= carried_key(keys, piece).1.is_some();
                None
            }
        };
        ours |= key.is_some();
        only = key;
    }
    // Anthropic's SDKs (and Claude Code's `ANTHROPIC_API_KEY`) send the key
    // bare in `x-api-key`: one value, the token exactly, authenticates where
    // `Authorization` may (hashed once, for both questions). Azure's
    // `api-key` never does; either is dropped when it carries a token.
    let mut api_key = None;
    let mut api_key_values = 0usize;
    let mut others = [false; 2];
    for (at, name) in API_KEY_HEADERS.iter().enumerate() {
        for value in headers.get_all(name).iter().take(MAX_PIECES) {
            let value = value.as_bytes();
            let (exact, key) = match bearer_token(value) {
                Some(token) => (None, match_key(keys, token)),
                None => carried_key(keys, value),
            };
            others[at] |= key.is_some();
            if at == 0 {
                api_key_values += 1;
                api_key = exact;
            }
        }
    }
    if sources.authorization_header {
        presented |= count > 0 || api_key_values > 0;
        if count == 1 {
            matched = matched.or(only);
        }
        if api_key_values == 1 {
            matched = matched.or(api_key);
        }
    }
    let outcome = match (matched, presented) {
        (Some(key), _) => AuthOutcome::Accepted(Arc::clone(key)),
        (None, true) => AuthOutcome::Rejected,
        (None, false) => AuthOutcome::Missing,
    };
    Authentication {
        outcome,
        ours: Ours {
            authorization: ours,
            api_keys: others,
        },
    }
}

/// The most credential pieces read in one header.
const MAX_PIECES: usize = 8;

/// Headers other SDKs put an API key in (Anthropic's `x-api-key`, Azure
/// OpenAI's `api-key`): one carrying a proxy token is not forwarded, and a
/// bare token in `x-api-key` authenticates where `Authorization` may.
pub(crate) const API_KEY_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("api-key"),
];

/// The key a credential carries other than as `Bearer <token>`: `.0` when
/// the value is the token itself (one bare word), `.1` when it carries one
/// in any spelling (also `Token <token>`, quoted, `key=<token>`, `<token>;`).
/// Each candidate is hashed once.
fn carried_key<'k>(
    keys: &'k [Arc<Key>],
    value: &[u8],
) -> (Option<&'k Arc<Key>>, Option<&'k Arc<Key>>) {
    let value = value.trim_ascii();
    let bare = is_bare(value);
    let exact = if bare { match_key(keys, value) } else { None };
    let spelled = exact.or_else(|| {
        let word = last_word(value)?;
        if bare && word == value {
            None // hashed above
        } else {
            match_key(keys, word)
        }
    });
    (exact, spelled)
}

/// A value that is one bare word, as a token is written (no whitespace or
/// comma): how Anthropic's SDKs send `x-api-key`.
fn is_bare(value: &[u8]) -> bool {
    !value.is_empty() && !value.iter().any(|b| b.is_ascii_whitespace() || *b == b',')
}

/// The last word of a credential, unquoted (`<token>`, `Token <token>`,
/// `"<token>"`, `<token>;`).
fn last_word(piece: &[u8]) -> Option<&[u8]> {
    let word = piece
        .split(|b| b.is_ascii_whitespace() || *b == b'=')
        .rfind(|w| !w.is_empty())?;
    let word = word.strip_suffix(b";").unwrap_or(word);
    let word = word
        .strip_prefix(b"\"")
        .and_then(|w| w.strip_suffix(b"\""))
        .unwrap_or(word);
    (!word.is_empty()).then_some(word)
}

/// What [`authenticate`] found.
#[derive(Clone, Debug)]
pub(crate) struct Authentication {
    pub(crate) outcome: AuthOutcome,
    /// Which credential headers carry a configured token.
    pub(crate) ours: Ours,
}

/// Credential headers that carry a configured token, whether or not they
/// may authenticate: each is the proxy's and must not be forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ours {
    /// Some credential in `Authorization` (in any value, or any
    /// comma-separated piece of one) is a configured token.
    pub(crate) authorization: bool,
    /// The same for each of [`API_KEY_HEADERS`].
    pub(crate) api_keys: [bool; 2],
}

/// The comma-separated, non-blank pieces of every value of header `name`.
fn credential_pieces<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter(|piece| !piece.trim_ascii().is_empty())
}

/// The first key whose digest is the token's. Every key is compared, and
/// the match is picked without a branch on any comparison, so the time
/// taken depends on neither which key matched nor whether one did.
fn match_key<'k>(keys: &'k [Arc<Key>], token: &[u8]) -> Option<&'k Arc<Key>> {
    let presented = Digest::of(token);
    // One more than the matching key's index; 0 for none. Walked from the
    // end, so the first match is the one left.
    let mut found = 0u64;
    for (at, key) in keys.iter().enumerate().rev() {
        found.conditional_assign(&(at as u64 + 1), key.digest.ct_eq(&presented));
    }
    let at = usize::try_from(found.checked_sub(1)?).ok()?;
    keys.get(at)
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
