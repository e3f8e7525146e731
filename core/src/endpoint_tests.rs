use super::*;

fn management(path: &str) -> bool {
    classify(path).management
}

#[test]
fn refuses_management_endpoints_however_spelled() {
    for path in [
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/delete",
        "/api/copy",
        "/api/blobs/sha256:abc",
        "/api/me",
        "/api/signout",
        "/api/user/keys/abc",
        "/api/pull/",
        "//api//pull",
        "/API/Pull",
        "/api/%70ull",
        "/api/%2570ull",
        "/v1/../api/delete",
        "/api/./copy",
        "/x/../api%2fpull",
    ] {
        assert!(management(path), "{path} not refused");
    }
}

#[test]
fn allows_inference_and_listing() {
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/tags",
        "/api/show",
        "/api/ps",
        "/v1/models",
        "/api/pulls",
        "/pull",
        "/",
        "/api",
    ] {
        assert!(!management(path), "{path} refused");
    }
}

#[test]
fn truncated_escapes_are_kept_literally() {
    assert_eq!(percent_decode(b"/a%2"), b"/a%2");
    assert_eq!(percent_decode(b"%41%"), b"A%");
    assert_eq!(percent_decode(b"%zz"), b"%zz");
}

#[test]
fn every_route_that_takes_a_model_reads_it() {
    let required = |path: &str| match classify(path).model {
        ModelSource::Body {
            required: true,
            watched,
        } => watched.models,
        other => panic!("{path}: {other:?}"),
    };
    let spellings = ["/API/%63hat", "//api/chat/", "/v1/../api/generate"];
    for path in GENERATIONS.into_iter().chain(spellings) {
        assert_eq!(required(path), ["model"], "{path}");
    }
    for path in ["/api/show", "/api/pull", "/api/push", "/api/delete"] {
        assert_eq!(required(path), ["model", "name"], "{path}");
    }
    assert_eq!(required("/api/create"), ["model", "name", "from"]);
    assert!(matches!(
        classify("/api/create").model,
        ModelSource::Body { watched, .. } if watched.forbidden == ["files", "adapters", "draft_files", "remote_host"]
    ));
    assert_eq!(required("/api/copy"), ["source", "destination"]);
    assert_eq!(
        classify("/api/experimental/web_search").model,
        ModelSource::Body {
            watched: MODEL,
            required: false
        }
    );
}

#[test]
fn listings_paths_and_forms() {
    assert_eq!(
        classify("/api/tags").model,
        ModelSource::Listing(Listing::Ollama)
    );
    assert_eq!(
        classify("/api/ps").model,
        ModelSource::Listing(Listing::Ollama)
    );
    assert_eq!(
        classify("/v1/models/").model,
        ModelSource::Listing(Listing::OpenAi)
    );
    assert_eq!(
        classify("/v1/models/llama3.2%3A1b").model,
        ModelSource::Path("llama3.2:1b".into())
    );
    assert_eq!(
        classify("/v1/models/llama3.2/").model,
        ModelSource::Path("llama3.2".into())
    );
    assert_eq!(
        classify("/v1/audio/transcriptions").model,
        ModelSource::Query
    );
    assert_eq!(classify("/api/blobs/sha256:00").model, ModelSource::Blobs);
}

/// The routes that run a model and whose answers count tokens.
const GENERATIONS: [&str; 9] = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
];

#[test]
fn generation_routes_are_metered_and_take_a_slot() {
    for path in GENERATIONS {
        let e = classify(path);
        assert!(e.llm && e.slot, "{path}");
    }
    // Ollama runs a model for these too, but their answers count no tokens.
    for path in [
        "/v1/audio/transcriptions",
        "/v1/images/generations",
        "/v1/images/edits",
    ] {
        let e = classify(path);
        assert!(!e.llm && e.slot, "{path}");
    }
    for path in ["/api/tags", "/api/show", "/api/version", "/v1/models"] {
        let e = classify(path);
        assert!(!e.llm && !e.slot, "{path}");
    }
}
