use super::*;

fn list(entries: &[&str]) -> ModelList {
    let mut list = ModelList::default();
    for entry in entries {
        list.push(entry).unwrap();
    }
    list
}

fn shown(name: &str) -> Option<(String, bool)> {
    ModelName::resolve(name).map(|n| (n.display, n.cloud))
}

#[test]
fn names_resolve_as_ollama_does() {
    for same in [
        "llama3.2",
        "llama3.2:latest",
        "LLAMA3.2",
        " llama3.2 ",
        "\u{a0}llama3.2\t",
        "library/llama3.2",
        "registry.ollama.ai/library/llama3.2:latest",
        "https://registry.ollama.ai/library/llama3.2",
        "Registry.Ollama.AI/Library/Llama3.2:LATEST",
        "llama3.2:local",
        "llama3.2: LOCAL",
    ] {
        assert_eq!(
            shown(same),
            Some(("llama3.2:latest".to_owned(), false)),
            "{same}"
        );
    }
    assert_eq!(shown("me/m"), Some(("me/m:latest".into(), false)));
    assert_eq!(
        shown("hf.co/Org/Model-GGUF:Q4_K_M"),
        Some(("hf.co/org/model-gguf:q4_k_m".into(), false))
    );
    assert_eq!(
        shown("localhost:5000/team/m:v1"),
        Some(("localhost:5000/team/m:v1".into(), false))
    );
}

#[test]
fn cloud_references_as_ollama_reads_them() {
    for cloud in [
        "gpt-oss:120b-cloud",
        "gpt-oss:120b:cloud",
        "gpt-oss:120b: cloud",
        "gpt-oss:120b:\tCLOUD",
        "gpt-oss:120b:\u{a0}cloud",
        "gpt-oss:120b-CLOUD",
    ] {
        assert_eq!(
            shown(cloud),
            Some(("gpt-oss:120b".to_owned(), true)),
            "{cloud}"
        );
    }
    assert_eq!(
        shown("gpt-oss:cloud"),
        Some(("gpt-oss:latest".into(), true))
    );
    // A model merely named `…-cloud` (no tag) is local.
    assert_eq!(shown("my-cloud"), Some(("my-cloud:latest".into(), false)));
}

#[test]
fn names_ollama_refuses_are_never_allowed() {
    for bad in [
        "",
        "  ",
        "llama3.2:",
        "llama3.2:1b:cloud:local",
        "x:cloud:cloud",
        "lläma",
        "-llama",
        "a/b.c/d",
        "llama 3",
        "a//b",
        "llama3.",
        "llama3.2:1b.",
        &"m".repeat(81),
    ] {
        assert_eq!(shown(bad), None, "{bad:?}");
        assert!(!list(&["**", "**:cloud"]).allows(bad), "{bad:?}");
    }
}

#[test]
fn exact_entries_mean_latest_when_untagged() {
    let l = list(&["llama3.2", "qwen3:8b"]);
    assert!(l.allows("llama3.2"));
    assert!(l.allows("llama3.2:latest"));
    assert!(l.allows("Llama3.2"));
    assert!(!l.allows("llama3.2:1b"));
    assert!(l.allows("qwen3:8b"));
    assert!(!l.allows("qwen3"));
    assert!(!l.allows("qwen3:8b-instruct"));
    assert!(!l.allows("me/llama3.2"));
}

#[test]
fn globs_cover_tags_and_names_within_a_namespace() {
    let l = list(&["llama3.2:*", "qwen3*", "hf.co/*/*"]);
    for ok in [
        "llama3.2",
        "llama3.2:1b",
        "LLAMA3.2:3B",
        "qwen3",
        "qwen3:8b",
        "qwen3-coder:30b",
        "hf.co/org/model:q4",
    ] {
        assert!(l.allows(ok), "{ok}");
    }
    for refused in [
        "llama3.1",
        "llama3.2-vision",
        "qwen2.5",
        "me/qwen3",
        // `*` stops at `/`: another host or namespace is not a library model.
        "qwen3.attacker.tld/ns/m:tag",
        "hf.co/model:q4",
    ] {
        assert!(!l.allows(refused), "{refused}");
    }
    assert!(list(&["llama3.?:1b"]).allows("llama3.2:1b"));
}

#[test]
fn a_literal_default_namespace_stays_anchored() {
    for entry in [
        "*",
        "library/*",
        "registry.ollama.ai/library/*",
        "library/*:*",
    ] {
        let l = list(&[entry]);
        assert!(l.allows("llama3.2:1b"), "{entry}");
        assert!(!l.allows("someone/model"), "{entry}");
        assert!(!l.allows("hf.co/evil/model:q4"), "{entry}");
    }
    let team = list(&["team/*"]);
    assert!(team.allows("team/coder") && team.allows("TEAM/coder:v2"));
    assert!(!team.allows("coder") && !team.allows("x.io/team/coder"));
    let everything = list(&["**"]);
    for name in ["llama3.2", "me/m", "hf.co/org/m:q4"] {
        assert!(everything.allows(name), "{name}");
    }
}

#[test]
fn cloud_models_need_cloud_entries() {
    let everything = list(&["**"]);
    for cloud in ["gpt-oss:120b-cloud", "gpt-oss:cloud", "gpt-oss:120b: cloud"] {
        assert!(!everything.allows(cloud), "{cloud}");
    }
    let cloud = list(&["gpt-oss:120b-cloud"]);
    assert!(cloud.allows("gpt-oss:120b-cloud"));
    assert!(cloud.allows("gpt-oss:120b:cloud"));
    assert!(!cloud.allows("gpt-oss:120b"));
    assert!(!cloud.allows("gpt-oss:20b-cloud"));
    assert!(list(&["*:cloud"]).allows("deepseek-v3.1:671b-cloud"));
}

#[test]
fn bad_entries_are_refused() {
    let mut l = ModelList::default();
    assert_eq!(l.push(" "), Err(PatternProblem::Empty));
    assert_eq!(l.push("llama[3]"), Err(PatternProblem::BadChar('[')));
    assert_eq!(l.push("llama 3"), Err(PatternProblem::BadChar(' ')));
    assert_eq!(l.push("lläma"), Err(PatternProblem::BadChar('ä')));
    assert_eq!(l.push("x:local:cloud"), Err(PatternProblem::TwoSources));
}

#[test]
fn glob_is_linear_in_its_inputs() {
    assert!(glob(b"a*b*c", b"axxbyyc"));
    assert!(glob(b"*:latest", b"m:latest"));
    assert!(!glob(b"a*b", b"axxbx"));
    assert!(glob(b"**", b""));
    assert!(!glob(b"?", b""));
    assert!(!glob(b"*", b"a/b"));
    assert!(glob(b"**", b"a/b"));
    assert!(glob(b"a/**/z", b"a/b/c/z"));
    assert!(!glob(b"?", b"/"));
    // Many wildcards against a long name: quick, and no match.
    let text = vec![b'a'; 500];
    assert!(!glob(b"*a*a*a*a*a*a*a*a*b", &text));
}
