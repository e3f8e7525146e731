//! The keys document: who may use the proxy, and what each key may do.
//!
//! One TOML document on both targets (natively a file, `KEYS_FILE`; on the
//! Worker the secret `AIG_KEYS`), read into the core's own types here. A
//! problem names the key and the field, never a value:
//!
//! ```toml
//! [[keys]]
//! name = "alice"
//! token_sha256 = "…"          # or token = "…"
//! expires = 2027-01-31        # or "2027-01-31T18:00:00Z"
//! models = ["llama3.2:*", "qwen3*"]
//! model_management = false    # overrides ALLOW_MODEL_MANAGEMENT
//! max_concurrent = 2           # generation/embedding requests in flight or waiting
//! requests_per_minute = 60     # a bucket of 60 requests refilling continuously
//! disabled = false
//! ```

use std::fmt;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::auth::{Digest, Key, KeyName, KeyPolicy};
use crate::models::{ModelList, PatternProblem};
use crate::time::{TimeProblem, UnixTime};

/// The fields a key may have, in documentation order.
const FIELDS: [&str; 9] = [
    "name",
    "token",
    "token_sha256",
    "expires",
    "disabled",
    "models",
    "model_management",
    "max_concurrent",
    "requests_per_minute",
];
/// The most a count (`max_concurrent`, `requests_per_minute`) may say.
const MAX_COUNT: i64 = 1_000_000_000;
/// The longest key name: it shows in logs and metric labels.
const MAX_NAME: usize = 64;

/// What is wrong with a keys document. Its `Debug` is its `Display`, which
/// never repeats a value (nor a field name that does not read like one).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeysProblem {
    /// Not TOML: where, and what the parser expected (never the text).
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A top-level field other than `keys`.
    UnknownTopLevel(String),
    /// `keys` is not an array of tables (`[[keys]]`).
    NotKeyTables,
    /// One key is wrong.
    Key {
        /// 1-based position in the document.
        index: usize,
        /// Its name, when it has a usable one.
        name: Option<String>,
        /// The field at fault (`models[2]`), if one is.
        field: Option<String>,
        problem: FieldProblem,
    },
}

/// What is wrong with one field of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldProblem {
    Unknown,
    WrongType(&'static str),
    MissingName,
    BadName,
    NoToken,
    TwoTokens,
    BadToken,
    BadDigest,
    Time(TimeProblem),
    Pattern(PatternProblem),
    DuplicateName,
    DuplicateToken,
    /// Not a whole number from 1 to [`MAX_COUNT`].
    BadCount,
}

impl fmt::Debug for KeysProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KeysProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax {
                line,
                column,
                message,
            } => write!(f, "line {line}, column {column}: not valid TOML: {message}"),
            Self::UnknownTopLevel(field) => write!(
                f,
                "unknown top-level field {}; the document holds [[keys]] tables",
                Shown(field)
            ),
            Self::NotKeyTables => {
                f.write_str("`keys` must be an array of tables, written [[keys]]")
            }
            Self::Key {
                index,
                name,
                field,
                problem,
            } => {
                match name {
                    Some(name) => write!(f, "key {name:?}")?,
                    None => write!(f, "key #{index}")?,
                }
                if let Some(field) = field {
                    write!(f, ": {}", Shown(field))?;
                }
                write!(f, ": {problem}")
            }
        }
    }
}

/// A field name as written when it reads like one (a known field, an entry
/// of `models`, or lowercase letters and `_`); anything else might be a
/// misplaced secret, so it is not repeated.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    /// A field the document may have is shown; any other name could be
    /// anything pasted there (a token on a line of its own), so it is not:
    /// only the known field it is closest to, when it is a near miss.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0;
        if name == "keys" || FIELDS.contains(&name) || name.starts_with("models[") {
            return f.write_str(name);
        }
        let near = std::iter::once("keys")
            .chain(FIELDS)
            .map(|known| (edit_distance(name, known), known))
            .filter(|&(d, known)| d <= 1 + known.len() / 4)
            .min();
        match near {
            Some((_, known)) => write!(f, "a misspelt field (did you mean {known}?)"),
            None => f.write_str("(a field whose name is not shown)"),
        }
    }
}

/// Levenshtein distance in bytes, bounded work: names longer than 64 bytes
/// are never near a known field.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > 64 {
        return usize::MAX;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(x != y);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => write!(f, "unknown field; a key has {}", FIELDS.join(", ")),
            Self::WrongType(expected) => write!(f, "must be {expected}"),
            Self::MissingName => f.write_str("needs a `name`"),
            Self::BadName => write!(
                f,
                "must be 1 to {MAX_NAME} printable ASCII characters without spaces"
            ),
            Self::NoToken => f.write_str("needs `token` or `token_sha256`"),
            Self::TwoTokens => f.write_str("has both `token` and `token_sha256`; keep one"),
            Self::BadToken => f.write_str("must be printable ASCII without spaces or commas"),
            Self::BadDigest => f.write_str(
                "must be the token's SHA-256 as 64 hex digits (ollama-proxy gen-token prints it)",
            ),
            Self::Time(problem) => write!(f, "{problem}"),
            Self::Pattern(problem) => write!(f, "{problem}"),
            Self::DuplicateName => f.write_str("this name is already used by another key"),
            Self::DuplicateToken => f.write_str("this token is already used by another key"),
            Self::BadCount => write!(f, "must be a whole number from 1 to {MAX_COUNT}"),
        }
    }
}

/// Printable ASCII without spaces or commas: what fits in `Bearer <token>`
/// and in the comma-separated `AIG_AUTH_TOKENS`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Whether `name` can name a key in logs and metrics.
pub(crate) fn is_key_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads a keys document into keys, in document order. Duplicates among
/// them (and against `existing`, the keys from the variables) are refused.
pub(crate) fn parse(text: &str, existing: &[Key]) -> Result<Vec<Key>, KeysProblem> {
    let root = DeTable::parse(text).map_err(|e| syntax(text, &e))?;
    let root = root.get_ref();
    let mut keys: Vec<Key> = Vec::new();
    for (field, value) in root.iter() {
        if field.get_ref() != "keys" {
            return Err(KeysProblem::UnknownTopLevel(field.get_ref().to_string()));
        }
        let DeValue::Array(tables) = value.get_ref() else {
            return Err(KeysProblem::NotKeyTables);
        };
        for (i, table) in tables.iter().enumerate() {
            let DeValue::Table(table) = table.get_ref() else {
                return Err(KeysProblem::NotKeyTables);
            };
            let key = parse_key(i + 1, table)?;
            let clash = |k: &&Key| k.name == key.name || k.digest == key.digest;
            if let Some(other) = existing.iter().chain(&keys).find(clash) {
                let problem = if other.name == key.name {
                    FieldProblem::DuplicateName
                } else {
                    FieldProblem::DuplicateToken
                };
                let field = match problem {
                    FieldProblem::DuplicateName => "name",
                    _ if key.policy.hashed => "token_sha256",
                    _ => "token",
                };
                return Err(KeysProblem::Key {
                    index: i + 1,
                    name: Some(key.name.to_string()),
                    field: Some(field.to_owned()),
                    problem,
                });
            }
            keys.push(key);
        }
    }
    Ok(keys)
}

fn syntax(text: &str, error: &toml::de::Error) -> KeysProblem {
    let at = error.span().map_or(0, |s| s.start).min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    KeysProblem::Syntax {
        line,
        column,
        message: error.message().to_owned(),
    }
}

type Table<'i> = DeTable<'i>;

fn parse_key(index: usize, table: &Table<'_>) -> Result<Key, KeysProblem> {
    let name = match table.get("name").map(Spanned::get_ref) {
        Some(DeValue::String(name)) if is_key_name(name) => Some(name.to_string()),
        Some(DeValue::String(_)) => {
            return Err(key_problem(index, None, "name", FieldProblem::BadName))
        }
        Some(_) => {
            return Err(key_problem(
                index,
                None,
                "name",
                FieldProblem::WrongType("a string"),
            ))
        }
        None => None,
    };
    let fail =
        |field: &str, problem: FieldProblem| key_problem(index, name.clone(), field, problem);
    for field in table.keys() {
        if !FIELDS.contains(&field.get_ref().as_ref()) {
            return Err(fail(field.get_ref(), FieldProblem::Unknown));
        }
    }
    let Some(name) = name.clone() else {
        return Err(KeysProblem::Key {
            index,
            name: None,
            field: None,
            problem: FieldProblem::MissingName,
        });
    };
    let string = |field: &str| -> Result<Option<&str>, KeysProblem> {
        match table.get(field).map(Spanned::get_ref) {
            None => Ok(None),
            Some(DeValue::String(s)) => Ok(Some(s.as_ref())),
            Some(_) => Err(fail(field, FieldProblem::WrongType("a string"))),
        }
    };
    let boolean = |field: &str| -> Result<Option<bool>, KeysProblem> {
        match table.get(field).map(Spanned::get_ref) {
            None => Ok(None),
            Some(DeValue::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(fail(field, FieldProblem::WrongType("true or false"))),
        }
    };

    let (digest, hashed) = match (string("token")?, string("token_sha256")?) {
        (Some(_), Some(_)) => return Err(fail("token_sha256", FieldProblem::TwoTokens)),
        (None, None) => return Err(fail("token", FieldProblem::NoToken)),
        (Some(token), None) if is_token(token) => (Digest::of(token.as_bytes()), false),
        (Some(_), None) => return Err(fail("token", FieldProblem::BadToken)),
        (None, Some(hex)) => (
            Digest::from_hex(hex.trim())
                .ok_or_else(|| fail("token_sha256", FieldProblem::BadDigest))?,
            true,
        ),
    };

    let expires = match table.get("expires").map(Spanned::get_ref) {
        None => None,
        Some(DeValue::Datetime(datetime)) => Some(
            UnixTime::from_datetime(datetime)
                .map_err(|p| fail("expires", FieldProblem::Time(p)))?,
        ),
        Some(DeValue::String(text)) => {
            Some(UnixTime::parse(text).map_err(|p| fail("expires", FieldProblem::Time(p)))?)
        }
        Some(_) => {
            return Err(fail(
                "expires",
                FieldProblem::WrongType("a date (2027-01-31) or date-time (2027-01-31T18:00:00Z)"),
            ))
        }
    };

    let models = match table.get("models").map(Spanned::get_ref) {
        None => None,
        Some(DeValue::Array(entries)) => {
            let mut list = ModelList::default();
            for (i, entry) in entries.iter().enumerate() {
                let field = format!("models[{}]", i + 1);
                let DeValue::String(entry) = entry.get_ref() else {
                    return Err(fail(&field, FieldProblem::WrongType("a string")));
                };
                list.push(entry)
                    .map_err(|p| fail(&field, FieldProblem::Pattern(p)))?;
            }
            Some(list)
        }
        Some(_) => {
            return Err(fail(
                "models",
                FieldProblem::WrongType("an array of model names or globs"),
            ))
        }
    };

    let count = |field: &str| -> Result<Option<u32>, KeysProblem> {
        match table.get(field).map(Spanned::get_ref) {
            None => Ok(None),
            Some(DeValue::Integer(n)) => i64::from_str_radix(n.as_str(), n.radix())
                .ok()
                .filter(|n| (1..=MAX_COUNT).contains(n))
                .map(|n| Some(n as u32))
                .ok_or_else(|| fail(field, FieldProblem::BadCount)),
            Some(_) => Err(fail(field, FieldProblem::WrongType("a whole number"))),
        }
    };

    Ok(Key {
        name: KeyName::new(&name),
        digest,
        policy: KeyPolicy {
            hashed,
            expires,
            disabled: boolean("disabled")?.unwrap_or(false),
            models,
            model_management: boolean("model_management")?,
            max_concurrent: count("max_concurrent")?,
            requests_per_minute: count("requests_per_minute")?,
        },
    })
}

fn key_problem(
    index: usize,
    name: Option<String>,
    field: &str,
    problem: FieldProblem,
) -> KeysProblem {
    KeysProblem::Key {
        index,
        name,
        field: Some(field.to_owned()),
        problem,
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
