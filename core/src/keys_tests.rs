use super::*;
use crate::time::UnixTime;

const ALICE_TOKEN: &str = "alice-token-0001";

fn digest_hex(token: &str) -> String {
    Digest::of(token.as_bytes()).to_hex()
}

fn problem(text: &str) -> String {
    parse(text, &[]).unwrap_err().to_string()
}

#[test]
fn reads_every_field() {
    let doc = format!(
        r#"
        # a comment
        [[keys]]
        name = "alice"
        token_sha256 = "{}"
        expires = 2027-01-31
        models = ["llama3.2:*", "qwen3*"]

        [[keys]]
        name = "admin"
        token = "admin-token-9"
        model_management = true
        disabled = false
        expires = "2027-01-31T18:00:00+01:00"
        max_concurrent = 2
        requests_per_minute = 0x3c
        "#,
        digest_hex(ALICE_TOKEN).to_uppercase()
    );
    let keys = parse(&doc, &[]).unwrap();
    assert_eq!(keys.len(), 2);
    let alice = &keys[0];
    assert_eq!(alice.name.as_str(), "alice");
    assert_eq!(alice.digest, Digest::of(ALICE_TOKEN.as_bytes()));
    assert!(alice.policy.hashed);
    assert_eq!(alice.policy.expires, UnixTime::parse("2027-01-31").ok());
    let models = alice.policy.models.as_ref().unwrap();
    assert!(models.allows("llama3.2:1b") && models.allows("qwen3:8b"));
    assert!(!models.allows("mistral"));
    assert_eq!(alice.policy.model_management, None);

    let admin = &keys[1];
    assert!(!admin.policy.hashed);
    assert_eq!(admin.digest, Digest::of(b"admin-token-9"));
    assert!(admin.policy.models.is_none());
    assert_eq!(admin.policy.model_management, Some(true));
    assert_eq!(
        admin.policy.expires,
        UnixTime::parse("2027-01-31T17:00:00Z").ok()
    );
    assert_eq!(admin.policy.max_concurrent, Some(2));
    assert_eq!(admin.policy.requests_per_minute, Some(60));
    assert_eq!(alice.policy.max_concurrent, None);
}

#[test]
fn limits_are_whole_numbers_from_one() {
    for (value, expected) in [
        ("0", "must be a whole number from 1 to 1000000000"),
        ("-3", "must be a whole number from 1 to 1000000000"),
        ("1000000001", "must be a whole number from 1 to 1000000000"),
        ("2.5", "must be a whole number"),
        ("\"4\"", "must be a whole number"),
    ] {
        for field in ["max_concurrent", "requests_per_minute"] {
            let doc = format!("[[keys]]\nname = \"a\"\ntoken = \"t\"\n{field} = {value}\n");
            let got = problem(&doc);
            assert!(
                got.starts_with(&format!("key \"a\": {field}: {expected}")),
                "{doc}: {got}"
            );
        }
    }
}

#[test]
fn inline_tables_and_an_empty_document() {
    let keys = parse(
        r#"keys = [{ name = "a", token = "t-1" }, { name = "b", token = "t-2", models = [] }]"#,
        &[],
    )
    .unwrap();
    assert_eq!(keys.len(), 2);
    // An empty list allows nothing.
    assert!(!keys[1].policy.models.as_ref().unwrap().allows("llama3.2"));
    assert!(parse("", &[]).unwrap().is_empty());
    assert!(parse("# only comments\n", &[]).unwrap().is_empty());
}

#[test]
fn problems_name_the_key_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nmodel = [\"x\"]\n",
            "key \"a\": a misspelt field (did you mean models?): unknown field",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nmodels = [\"ok\", \"bad[glob]\"]\n",
            "key \"a\": models[2]: has '['",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nexpires = \"next week\"\n",
            "key \"a\": expires: is not an RFC 3339 date",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nexpires = 2027-01-31T10:00:00\n",
            "key \"a\": expires: has a time but no UTC offset",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nexpires = 10:00:00\n",
            "key \"a\": expires: is a time of day without a date",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\ndisabled = \"yes\"\n",
            "key \"a\": disabled: must be true or false",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nmodels = \"llama3\"\n",
            "key \"a\": models: must be an array",
        ),
        (
            "[[keys]]\nname = \"a\"\n",
            "key \"a\": token: needs `token` or `token_sha256`",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\ntoken_sha256 = \"00\"\n",
            "key \"a\": token_sha256: has both",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n",
            "key \"a\": token_sha256: must be the token's SHA-256",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"has space\"\n",
            "key \"a\": token: must be printable ASCII",
        ),
        ("[[keys]]\ntoken = \"t\"\n", "key #1: needs a `name`"),
        (
            "[[keys]]\nname = \"two words\"\ntoken = \"t\"\n",
            "key #1: name: must be 1 to 64",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t1\"\n[[keys]]\nname = \"a\"\ntoken = \"t2\"\n",
            "key \"a\": name: this name is already used",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t1\"\n[[keys]]\nname = \"b\"\ntoken = \"t1\"\n",
            "key \"b\": token: this token is already used",
        ),
        (
            "[limits]\nx = 1\n",
            "unknown top-level field (a field whose name is not shown);",
        ),
        (
            "[key]\nx = 1\n",
            "unknown top-level field a misspelt field (did you mean keys?);",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nmax_concurent = 2\n",
            "key \"a\": a misspelt field (did you mean max_concurrent?): unknown field",
        ),
        (
            "[[keys]]\nname = \"a\"\ntoken = \"t\"\nskaaaaaaaaaaaaaa = 2\n",
            "key \"a\": (a field whose name is not shown): unknown field",
        ),
        (
            "sk0123abcd = 1\n",
            "unknown top-level field (a field whose name is not shown)",
        ),
        ("keys = 3\n", "`keys` must be an array of tables"),
        ("[[keys]\nname = 1", "line 1, column"),
    ];
    for (doc, expected) in cases {
        let got = problem(doc);
        assert!(
            got.starts_with(expected),
            "{doc:?}\n  got: {got}\n  want: {expected}"
        );
    }
}

#[test]
fn a_plain_and_a_hashed_token_for_the_same_secret_clash() {
    let doc = format!(
        "[[keys]]\nname = \"a\"\ntoken = \"{ALICE_TOKEN}\"\n[[keys]]\nname = \"b\"\ntoken_sha256 = \"{}\"\n",
        digest_hex(ALICE_TOKEN)
    );
    assert!(problem(&doc).starts_with("key \"b\": token_sha256: this token is already used"));
}

#[test]
fn problems_never_show_a_value() {
    let secret = "s3cr3t-value-777";
    for doc in [
        format!("[[keys]]\nname = \"a\"\ntoken = \"{secret}\"\ntoken_sha256 = \"{secret}\"\n"),
        format!("[[keys]]\nname = \"a\"\ntoken = \"{secret} x\"\n"),
        format!("[[keys]]\nname = \"a\"\ntoken = \"{secret}\"\nbogus = \"{secret}\"\n"),
        format!("[[keys]]\nname = \"a\"\ntoken = \"{secret}\n"),
        format!("[[keys]]\nname = \"a\"\ntoken = {secret}\n"),
        format!("[[keys]]\nname = \"a\"\ntoken_sha256 = \"{secret}\"\n"),
        format!("[[keys]]\nname = \"a\"\ntoken = \"{secret}\"\nexpires = \"{secret}\"\n"),
    ] {
        let got = problem(&doc);
        assert!(!got.contains(secret), "{got}");
    }
}

#[test]
fn clashes_with_the_variables_are_refused() {
    let existing = [Key {
        name: KeyName::new("default"),
        digest: Digest::of(b"main-token"),
        policy: KeyPolicy::default(),
    }];
    let clash = parse(
        "[[keys]]\nname = \"default\"\ntoken = \"other\"\n",
        &existing,
    );
    assert!(clash
        .unwrap_err()
        .to_string()
        .starts_with("key \"default\": name: this name is already used"));
    let clash = parse(
        "[[keys]]\nname = \"x\"\ntoken = \"main-token\"\n",
        &existing,
    );
    assert!(clash
        .unwrap_err()
        .to_string()
        .starts_with("key \"x\": token: this token is already used"));
}
