use super::*;
use http::HeaderValue;

fn key(name: &str, token: &str) -> Arc<Key> {
    Arc::new(Key {
        name: KeyName::new(name),
        digest: Digest::of(token.as_bytes()),
        policy: KeyPolicy::default(),
    })
}

fn keys() -> Vec<Arc<Key>> {
    vec![key("default", "s3cret-token"), key("laptop", "other-token")]
}

/// An outcome that accepted the key named `name` (compared by name).
fn accepted(name: &str) -> AuthOutcome {
    AuthOutcome::Accepted(key(name, "unused"))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_str(value).unwrap());
    }
    h
}

const BOTH: AuthSources = AuthSources {
    authorization_header: true,
};
const AIG_ONLY: AuthSources = AuthSources {
    authorization_header: false,
};

#[test]
fn bearer_parsing() {
    assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
    assert_eq!(bearer_token(b"bEaReR \t abc  "), Some(&b"abc"[..]));
    assert_eq!(bearer_token(b"Bearerabc"), None);
    assert_eq!(bearer_token(b"Bearer "), None);
    assert_eq!(bearer_token(b"Basic abc"), None);
    assert_eq!(bearer_token(b"Bearer a b"), None);
    assert_eq!(bearer_token(b""), None);
}

#[test]
fn accepts_each_key_by_name() {
    let h = headers(&[("cf-aig-authorization", "Bearer s3cret-token")]);
    assert_eq!(authenticate(&keys(), &h, BOTH).outcome, accepted("default"));
    let h = headers(&[("authorization", "bearer other-token")]);
    assert_eq!(authenticate(&keys(), &h, BOTH).outcome, accepted("laptop"));
}

#[test]
fn the_matching_key_is_found_among_many_and_the_first_of_equals() {
    let many: Vec<Arc<Key>> = (0..40)
        .map(|i| key(&format!("k{i}"), &format!("token-{i}")))
        .chain([key("again", "token-7")])
        .collect();
    for i in [0, 7, 23, 39] {
        let found = match_key(&many, format!("token-{i}").as_bytes()).map(|k| k.name.as_str());
        assert_eq!(found, Some(format!("k{i}").as_str()));
    }
    assert!(match_key(&many, b"token-40").is_none());
    assert!(match_key(&[], b"token-0").is_none());
    // Digests that differ in one word only still differ.
    let a = Digest([1, 2, 3, 4]);
    for word in 0..4 {
        let mut b = a;
        b.0[word] ^= 1 << 63;
        assert!(!bool::from(a.ct_eq(&b)));
    }
    assert!(bool::from(a.ct_eq(&a)));
}

#[test]
fn authorization_header_only_when_allowed() {
    let h = headers(&[("authorization", "Bearer s3cret-token")]);
    assert_eq!(
        authenticate(&keys(), &h, AIG_ONLY).outcome,
        AuthOutcome::Missing
    );
}

#[test]
fn near_misses_are_rejected() {
    for bad in [
        "Bearer s3cret-toke",
        "Bearer s3cret-token2",
        "Bearer S3CRET-TOKEN",
        "Basic s3cret-token",
    ] {
        let h = headers(&[("cf-aig-authorization", bad)]);
        assert_eq!(
            authenticate(&keys(), &h, BOTH).outcome,
            AuthOutcome::Rejected,
            "{bad}"
        );
    }
    assert_eq!(
        authenticate(&keys(), &HeaderMap::new(), BOTH).outcome,
        AuthOutcome::Missing
    );
}

#[test]
fn several_credentials_in_one_header_never_authenticate() {
    // As separate fields (native) or joined (the Workers runtime): the same.
    let separate = headers(&[
        ("cf-aig-authorization", "Bearer s3cret-token"),
        ("cf-aig-authorization", "Bearer x"),
    ]);
    let joined = headers(&[("cf-aig-authorization", "Bearer s3cret-token, Bearer x")]);
    assert_eq!(
        authenticate(&keys(), &separate, BOTH).outcome,
        AuthOutcome::Rejected
    );
    assert_eq!(
        authenticate(&keys(), &joined, BOTH).outcome,
        AuthOutcome::Rejected
    );
    let twice = headers(&[
        ("cf-aig-authorization", "Bearer s3cret-token"),
        ("cf-aig-authorization", "Bearer s3cret-token"),
    ]);
    assert_eq!(
        authenticate(&keys(), &twice, BOTH).outcome,
        AuthOutcome::Rejected
    );
}

#[test]
fn authorization_is_dropped_whole_when_it_carries_a_token() {
    // Whether or not the header may authenticate, and in any piece of it.
    let ours = |h: &HeaderMap| {
        let both = authenticate(&keys(), h, BOTH).ours.authorization;
        let aig_only = authenticate(&keys(), h, AIG_ONLY).ours.authorization;
        assert_eq!(both, aig_only);
        both
    };
    let joined = headers(&[("authorization", "Bearer for-origin, Bearer s3cret-token")]);
    assert!(ours(&joined));
    let separate = headers(&[
        ("authorization", "Bearer for-origin"),
        ("authorization", "Bearer other-token"),
    ]);
    assert!(ours(&separate));
    let alone = headers(&[("authorization", "Bearer s3cret-token")]);
    assert!(ours(&alone));
    let foreign = headers(&[
        ("cf-aig-authorization", "Bearer s3cret-token"),
        ("authorization", "Bearer for-origin"),
    ]);
    assert!(!ours(&foreign));
    assert!(!ours(&HeaderMap::new()));
}

#[test]
fn a_valid_token_in_either_header_wins() {
    let h = headers(&[
        ("cf-aig-authorization", "Bearer wrong"),
        ("authorization", "Bearer s3cret-token"),
    ]);
    assert_eq!(authenticate(&keys(), &h, BOTH).outcome, accepted("default"));
}

#[test]
fn token_debug_is_redacted() {
    let printed = format!("{:?}", keys());
    assert!(!printed.contains("s3cret"), "{printed}");
}

/// A configured token in a spelling that never authenticates — bare,
/// another scheme, quoted, in an SDK's own API-key header — still marks the
/// header as the proxy's (found in review: each reached the origin).
#[test]
fn our_token_in_other_spellings_is_ours_but_never_authenticates() {
    for value in [
        "s3cret-token",
        "Token s3cret-token",
        "\"s3cret-token\"",
        "Bearer=s3cret-token",
        "s3cret-token;",
    ] {
        let h = headers(&[("authorization", value)]);
        let checked = authenticate(&keys(), &h, BOTH);
        assert!(checked.ours.authorization, "{value}");
        assert_eq!(checked.outcome, AuthOutcome::Rejected, "{value}");
    }
    for (name, at) in [("x-api-key", 0), ("api-key", 1)] {
        for value in ["s3cret-token", "Bearer s3cret-token"] {
            let h = headers(&[
                ("cf-aig-authorization", "Bearer other-token"),
                (name, value),
            ]);
            let checked = authenticate(&keys(), &h, BOTH);
            assert!(checked.ours.api_keys[at], "{name}: {value}");
            assert_eq!(checked.outcome, accepted("laptop"));
        }
        let h = headers(&[(name, "sk-ant-for-the-origin")]);
        assert!(!authenticate(&keys(), &h, BOTH).ours.api_keys[at]);
    }
    let foreign = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
    assert_eq!(authenticate(&keys(), &foreign, BOTH).ours, Ours::default());
}

/// A header with more credentials than any client sends is dropped
/// without hashing each one (a request must not cost thousands of hashes).
#[test]
fn a_header_with_too_many_credentials_is_dropped_unread() {
    let many = ["Bearer x"; MAX_PIECES + 1].join(", ");
    let h = headers(&[("authorization", many.as_str())]);
    let checked = authenticate(&keys(), &h, BOTH);
    assert!(checked.ours.authorization);
    assert_eq!(checked.outcome, AuthOutcome::Rejected);
    let few = ["Bearer x"; MAX_PIECES].join(", ");
    let h = headers(&[("authorization", few.as_str())]);
    assert!(!authenticate(&keys(), &h, BOTH).ours.authorization);
}

/// Anthropic's SDKs (and Claude Code's `ANTHROPIC_API_KEY`) send the key
/// bare in `x-api-key`: it authenticates where `Authorization` may, only
/// as the exact token and only alone; it is the proxy's (never forwarded)
/// either way.
#[test]
fn a_bare_token_in_x_api_key_authenticates_where_authorization_may() {
    let h = headers(&[("x-api-key", "other-token")]);
    let checked = authenticate(&keys(), &h, BOTH);
    assert_eq!(checked.outcome, accepted("laptop"));
    assert!(checked.ours.api_keys[0]);
    let off = authenticate(&keys(), &h, AIG_ONLY);
    assert_eq!(off.outcome, AuthOutcome::Missing);
    assert!(off.ours.api_keys[0], "dropped with the fallback off too");
    for value in ["Bearer other-token", "Token other-token", "\"other-token\""] {
        let checked = authenticate(&keys(), &headers(&[("x-api-key", value)]), BOTH);
        assert_eq!(checked.outcome, AuthOutcome::Rejected, "{value}");
        assert!(checked.ours.api_keys[0], "{value}");
    }
    let twice = headers(&[("x-api-key", "other-token"), ("x-api-key", "other-token")]);
    assert_eq!(
        authenticate(&keys(), &twice, BOTH).outcome,
        AuthOutcome::Rejected
    );
    let wrong = headers(&[("x-api-key", "sk-ant-not-ours")]);
    let checked = authenticate(&keys(), &wrong, BOTH);
    assert_eq!(checked.outcome, AuthOutcome::Rejected);
    assert!(!checked.ours.api_keys[0], "another key is the origin's");
    // Azure's `api-key` is dropped when it carries a token, never read as one.
    let azure = authenticate(&keys(), &headers(&[("api-key", "other-token")]), BOTH);
    assert_eq!(azure.outcome, AuthOutcome::Missing);
    assert!(azure.ours.api_keys[1]);
    // A token with `=` (base64 padding) is matched whole, not cut at it;
    // bare in `Authorization` (a client's mistake) it is still the proxy's.
    let padded = vec![key("padded", "dG9rZW4=")];
    let checked = authenticate(&padded, &headers(&[("x-api-key", "dG9rZW4=")]), BOTH);
    assert_eq!(checked.outcome, accepted("padded"));
    let checked = authenticate(&padded, &headers(&[("authorization", "dG9rZW4=")]), BOTH);
    assert!(checked.ours.authorization);
    assert_eq!(checked.outcome, AuthOutcome::Rejected);
    // `cf-aig-authorization` comes first.
    let both = headers(&[
        ("cf-aig-authorization", "Bearer s3cret-token"),
        ("x-api-key", "other-token"),
    ]);
    assert_eq!(
        authenticate(&keys(), &both, BOTH).outcome,
        accepted("default")
    );
}
