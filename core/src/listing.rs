//! Model listings filtered to a key's models: `/api/tags` and `/api/ps`
//! (`{"models": [{"name": …, "model": …}, …]}`) and `/v1/models`
//! (`{"data": [{"id": …}, …]}`). The answer is small JSON, read whole
//! (up to [`MAX_LISTING_BYTES`]); entries the key may not use are cut out
//! and every other byte is kept as Ollama sent it.

use bytes::Bytes;

use crate::endpoint::Listing;
use crate::gojson::unquote;
use crate::json_scan::{Kind, Progress, Scanner, Visitor};
use crate::models::ModelList;

/// The largest listing read for filtering (a box with a thousand models
/// answers `/api/tags` with well under 1 MiB).
pub const MAX_LISTING_BYTES: usize = 8 * 1024 * 1024;

/// Why a listing could not be filtered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unreadable;

/// One entry of the listed array, by byte range.
struct Entry {
    start: usize,
    end: usize,
    names: u8,
    allowed: bool,
    /// Its first name, as listed.
    name: Option<String>,
}

/// Finds the entries of the top-level array member and their names.
struct Entries<'l> {
    array_member: &'static str,
    name_members: &'static [&'static str],
    /// The key's list; `None` to read the entries only.
    list: Option<&'l ModelList>,
    in_member: bool,
    seen_member: bool,
    array: Option<(usize, usize)>,
    entries: Vec<Entry>,
    name_next: bool,
    broken: bool,
}

impl Visitor for Entries<'_> {
    fn open(&mut self, kind: Kind, depth: u32, at: u64) {
        match depth {
            2 if self.in_member => {
                if kind == Kind::Array {
                    self.array = Some((at as usize, at as usize));
                } else {
                    self.broken = true;
                }
            }
            3 if self.in_member && self.array.is_some() => self.entries.push(Entry {
                start: at as usize,
                end: at as usize,
                names: 0,
                // Not an object: nothing says which model it is.
                allowed: kind == Kind::Object,
                name: None,
            }),
            _ => {}
        }
    }

    fn close(&mut self, _kind: Kind, depth: u32, end: u64) {
        match depth {
            2 if self.in_member => {
                if let Some((start, _)) = self.array {
                    self.array = Some((start, end as usize));
                }
                self.in_member = false;
            }
            3 if self.in_member => {
                if let Some(entry) = self.entries.last_mut() {
                    entry.end = end as usize;
                    entry.allowed &= entry.names > 0;
                }
            }
            _ => {}
        }
    }

    fn key(&mut self, depth: u32, raw: Option<&[u8]>) {
        let name = raw.map(unquote);
        match depth {
            1 => {
                self.in_member = name.as_deref() == Some(self.array_member);
                if self.in_member {
                    self.broken |= self.seen_member;
                    self.seen_member = true;
                }
            }
            3 if self.in_member => {
                self.name_next = name
                    .as_deref()
                    .is_some_and(|n| self.name_members.contains(&n));
            }
            _ => {}
        }
    }

    fn scalar(&mut self, kind: Kind, depth: u32, raw: Option<&[u8]>) {
        match depth {
            1 if self.in_member => {
                // `"data": null` lists nothing; anything else is not a list.
                self.broken |= kind != Kind::Null;
                self.in_member = false;
            }
            2 if self.in_member => self.entries.push(Entry {
                start: 0,
                end: 0,
                names: 0,
                allowed: false,
                name: None,
            }),
            3 if self.in_member && std::mem::take(&mut self.name_next) => {
                if let Some(entry) = self.entries.last_mut() {
                    entry.names += 1;
                    let name = (kind == Kind::String).then(|| raw.map(unquote)).flatten();
                    let allowed = name
                        .as_deref()
                        .is_some_and(|n| self.list.is_none_or(|list| list.allows(n)));
                    entry.allowed &= allowed;
                    if entry.name.is_none() {
                        entry.name = name;
                    }
                }
            }
            _ => {}
        }
    }
}

/// A listing read: the array's brackets (`[` at `.0`, `]` just before
/// `.1`) and its entries.
struct Read {
    array: Option<(usize, usize)>,
    entries: Vec<Entry>,
}

fn read(kind: Listing, list: Option<&ModelList>, body: &[u8]) -> Result<Read, Unreadable> {
    let (array_member, name_members): (&str, &[&str]) = match kind {
        Listing::Ollama => ("models", &["name", "model"]),
        Listing::OpenAi => ("data", &["id"]),
    };
    let mut entries = Entries {
        array_member,
        name_members,
        list,
        in_member: false,
        seen_member: false,
        array: None,
        entries: Vec::new(),
        name_next: false,
        broken: false,
    };
    let mut scanner = Scanner::new(3);
    let mut progress = scanner.feed(body, &mut entries);
    if progress == Progress::NeedMore {
        progress = scanner.finish(&mut entries);
    }
    if !matches!(progress, Progress::Done(_)) || entries.broken {
        return Err(Unreadable);
    }
    Ok(Read {
        array: entries.array,
        entries: entries.entries,
    })
}

/// The listing without the entries `list` does not allow.
pub(crate) fn filter(kind: Listing, list: &ModelList, body: &[u8]) -> Result<Bytes, Unreadable> {
    let read = read(kind, Some(list), body)?;
    let Some((open, close)) = read.array else {
        return Ok(Bytes::copy_from_slice(body));
    };
    if read.entries.iter().all(|e| e.allowed) {
        return Ok(Bytes::copy_from_slice(body));
    }
    // `[` … `]`: keep the allowed entries, comma-separated.
    let kept = read
        .entries
        .iter()
        .filter(|e| e.allowed)
        .map(|e| &body[e.start..e.end]);
    Ok(rebuild(body, open, close, kept))
}

/// `body` with its array's entries replaced by `entries`, comma-separated.
fn rebuild<'b>(
    body: &[u8],
    open: usize,
    close: usize,
    entries: impl Iterator<Item = &'b [u8]>,
) -> Bytes {
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..=open]);
    for (i, entry) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(entry);
    }
    out.extend_from_slice(&body[close - 1..]);
    Bytes::from(out)
}

/// Several boxes' listings as one: the first's envelope, with every entry
/// of each in order, a model listed by an earlier box (by its first name,
/// as Ollama spells it) left out after. A listing that cannot be read is
/// [`Unreadable`] (the caller leaves that box out, or fails).
pub(crate) fn merge(kind: Listing, bodies: &[&[u8]]) -> Result<Bytes, Unreadable> {
    let reads = bodies
        .iter()
        .map(|body| read(kind, None, body))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((first_body, first)) = bodies.first().zip(reads.first()) else {
        return Err(Unreadable);
    };
    let Some((open, close)) = first.array else {
        // The first lists nothing (`null`): the next that does, if any.
        return match bodies.get(1) {
            Some(_) => merge(kind, &bodies[1..]),
            None => Ok(Bytes::copy_from_slice(first_body)),
        };
    };
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&[u8]> = Vec::new();
    for (body, read) in bodies.iter().zip(&reads) {
        for entry in &read.entries {
            if entry.start == entry.end {
                continue;
            }
            let name = entry.name.as_deref().map(|n| {
                crate::models::ModelName::resolve(n)
                    .map_or_else(|| n.to_ascii_lowercase(), |m| m.display().to_owned())
            });
            if name.is_none_or(|n| seen.insert(n)) {
                kept.push(&body[entry.start..entry.end]);
            }
        }
    }
    Ok(rebuild(first_body, open, close, kept.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_of_several_boxes_are_one_without_repeats() {
        let a = br#"{"models":[{"name":"llama3.2:1b","size":1},{"name":"qwen3:8b"}]}"#;
        let b = br#"{"models":[{"name":"Qwen3:8b","size":2},{"name":"mistral"}]}"#;
        let c = br#"{"models":[]}"#;
        let out = merge(Listing::Ollama, &[a, c, b]).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"models":[{"name":"llama3.2:1b","size":1},{"name":"qwen3:8b"},{"name":"mistral"}]}"#
        );
        let out = merge(Listing::Ollama, &[c, a]).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"models":[{"name":"llama3.2:1b","size":1},{"name":"qwen3:8b"}]}"#
        );
        let x = br#"{"object":"list","data":[{"id":"a"}]}"#;
        let y = br#"{"object":"list","data":null}"#;
        let z = br#"{"object":"list","data":[{"id":"b"},{"id":"a"}]}"#;
        assert_eq!(
            &merge(Listing::OpenAi, &[y, x, z]).unwrap()[..],
            br#"{"object":"list","data":[{"id":"a"},{"id":"b"}]}"#
        );
        assert_eq!(merge(Listing::Ollama, &[a, b"nope"]), Err(Unreadable));
    }

    fn list(entries: &[&str]) -> ModelList {
        let mut list = ModelList::default();
        for entry in entries {
            list.push(entry).unwrap();
        }
        list
    }

    fn filtered(kind: Listing, allowed: &[&str], body: &str) -> String {
        let out = filter(kind, &list(allowed), body.as_bytes()).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn tags_keep_only_allowed_models() {
        let body = r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","size":1},
            {"name":"qwen3:8b","model":"qwen3:8b","details":{"name":"x"}} ,
            {"name":"llama3.2:1b","model":"llama3.2:1b"}]}"#;
        let out = filtered(Listing::Ollama, &["llama3.2:*"], body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let names: Vec<&str> = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["llama3.2:latest", "llama3.2:1b"]);
        assert_eq!(
            filtered(Listing::Ollama, &["nothing"], body),
            r#"{"models":[]}"#
        );
        assert_eq!(filtered(Listing::Ollama, &["*"], body), body);
    }

    #[test]
    fn an_entry_must_be_allowed_by_every_name_it_carries() {
        let body =
            r#"{"models":[{"name":"llama3.2:latest","model":"secret:latest"},{"size":1},7]}"#;
        assert_eq!(
            filtered(Listing::Ollama, &["llama3.2"], body),
            r#"{"models":[]}"#
        );
    }

    #[test]
    fn openai_models_and_empty_lists() {
        let body = r#"{"object":"list","data":[{"id":"llama3.2:latest","object":"model"},{"id":"qwen3:8b","object":"model"}]}"#;
        assert_eq!(
            filtered(Listing::OpenAi, &["qwen3:8b"], body),
            r#"{"object":"list","data":[{"id":"qwen3:8b","object":"model"}]}"#
        );
        let empty = r#"{"object":"list","data":null}"#;
        assert_eq!(filtered(Listing::OpenAi, &["x"], empty), empty);
    }

    #[test]
    fn what_cannot_be_read_is_not_passed_on() {
        let l = list(&["*"]);
        for bad in [
            "",
            "not json",
            r#"{"models":[{"name":"a"}"#,
            r#"{"models":{"name":"a"}}"#,
            r#"{"models":[],"models":[{"name":"b"}]}"#,
            r#"{"models":"everything"}"#,
        ] {
            assert_eq!(
                filter(Listing::Ollama, &l, bad.as_bytes()),
                Err(Unreadable),
                "{bad}"
            );
        }
    }
}
