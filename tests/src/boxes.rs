//! Several Ollama boxes behind one proxy, on both targets: a model goes to
//! the box that has it loaded, else one that has it; nobody has it → 404
//! `model_not_found`; listings are every box's, merged (and filtered per
//! key); a box that dies is left, its streams end with the in-stream error
//! record, and nothing is sent twice.

use http_body_util::BodyExt;

use crate::client::{call, empty, full, request, send, Got};
use crate::origin::MockOrigin;
use crate::target::{Target, Vars, AUTH, TOKEN};

/// A proxy in front of several mock origins.
pub struct Boxes {
    /// The proxy's address.
    pub proxy: std::net::SocketAddr,
    /// The boxes, in `OLLAMA_ORIGIN` order.
    pub origins: Vec<MockOrigin>,
    _running: Box<dyn Send>,
}

impl Boxes {
    /// Starts `n` mock origins and the target in front of them all.
    pub async fn start<T: Target>(target: &T, n: usize, extra: &[(&str, &str)]) -> Self {
        let mut origins = Vec::with_capacity(n);
        for _ in 0..n {
            origins.push(MockOrigin::start().await);
        }
        let list: Vec<String> = origins.iter().map(MockOrigin::url).collect();
        let mut vars: Vars = vec![
            ("OLLAMA_ORIGIN".into(), list.join(",")),
            ("AIG_AUTH_TOKEN".into(), TOKEN.into()),
        ];
        for (name, value) in extra {
            vars.retain(|(n, _)| n != name);
            vars.push(((*name).into(), (*value).into()));
        }
        let (proxy, running) = target.launch(&vars).await;
        Self {
            proxy,
            origins,
            _running: running,
        }
    }

    /// Which boxes got requests on `path` (listing probes aside), in order.
    pub fn hits(&self, path: &str) -> Vec<usize> {
        self.origins
            .iter()
            .map(|o| {
                o.requests()
                    .iter()
                    .filter(|r| r.target.split('?').next() == Some(path))
                    .count()
            })
            .collect()
    }

    /// Asks for the listings through the proxy (which learns from them what
    /// each box has and has loaded) and returns `/api/tags`'s names.
    pub async fn learn(&self) -> Vec<String> {
        let ps = call(self.proxy, "GET", "/api/ps", &[AUTH], empty()).await;
        assert_eq!(ps.status, 200, "{:?}", ps.body);
        let tags = call(self.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
        assert_eq!(tags.status, 200, "{:?}", tags.body);
        names(&tags, "models", "name")
    }
}

fn names(got: &Got, array: &str, field: &str) -> Vec<String> {
    got.json()[array]
        .as_array()
        .unwrap_or_else(|| panic!("no {array} in {}", got.json()))
        .iter()
        .map(|e| e[field].as_str().unwrap().to_owned())
        .collect()
}

fn chat_body(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
}

async fn chat(proxy: std::net::SocketAddr, model: &str) -> Got {
    call(proxy, "POST", "/api/chat", &[AUTH], full(chat_body(model))).await
}

/// Three boxes: a has llama and qwen, b has qwen (loaded) and mistral, c
/// has phi4. Each request lands where its model is best served.
pub async fn a_model_goes_where_it_is_loaded<T: Target>(t: &T) {
    let keys = "[[keys]]\nname = \"phi\"\ntoken = \"phi-token-0000000001\"\nmodels = [\"phi4*\", \"mistral\"]\n";
    let boxes = Boxes::start(t, 3, &[("AIG_KEYS", keys)]).await;
    let [a, b, c] = &boxes.origins[..] else {
        unreachable!()
    };
    a.set_models(&["llama3.2:1b", "qwen3:8b"], &[]);
    b.set_models(&["qwen3:8b", "mistral:latest"], &["qwen3:8b"]);
    c.set_models(&["phi4:latest"], &[]);

    // Listings: every box's, once each.
    assert_eq!(
        boxes.learn().await,
        ["llama3.2:1b", "qwen3:8b", "mistral:latest", "phi4:latest"]
    );
    let ps = call(boxes.proxy, "GET", "/api/ps", &[AUTH], empty()).await;
    assert_eq!(names(&ps, "models", "name"), ["qwen3:8b"]);
    let models = call(boxes.proxy, "GET", "/v1/models", &[AUTH], empty()).await;
    assert_eq!(
        names(&models, "data", "id"),
        ["llama3.2:1b", "qwen3:8b", "mistral:latest", "phi4:latest"]
    );
    // ... filtered for a key with a list.
    let phi = ("cf-aig-authorization", "Bearer phi-token-0000000001");
    let tags = call(boxes.proxy, "GET", "/api/tags", &[phi], empty()).await;
    assert_eq!(
        names(&tags, "models", "name"),
        ["mistral:latest", "phi4:latest"]
    );

    // Loaded first: qwen3 is on a and b, loaded on b.
    for _ in 0..3 {
        assert_eq!(chat(boxes.proxy, "qwen3:8b").await.status, 200);
    }
    assert_eq!(boxes.hits("/api/chat"), [0, 3, 0]);
    // Where it is: llama only on a, phi4 (Ollama's short name) only on c.
    assert_eq!(chat(boxes.proxy, "llama3.2:1b").await.status, 200);
    assert_eq!(chat(boxes.proxy, "phi4").await.status, 200);
    assert_eq!(boxes.hits("/api/chat"), [1, 3, 1]);
    // The OpenAI routes and the path's model too.
    let got = call(
        boxes.proxy,
        "POST",
        "/v1/chat/completions",
        &[AUTH],
        full(r#"{"messages":[],"stream":true,"model":"mistral"}"#),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(boxes.hits("/v1/chat/completions"), [0, 1, 0]);
    call(
        boxes.proxy,
        "GET",
        "/v1/models/phi4:latest",
        &[AUTH],
        empty(),
    )
    .await;
    assert_eq!(boxes.hits("/v1/models/phi4:latest"), [0, 0, 1]);

    // Nobody has it: OpenAI's 404, and no box asked.
    let got = chat(boxes.proxy, "gemma3:27b").await;
    assert_eq!(got.status, 404, "{:?}", got.body);
    let error = &got.json()["error"];
    assert_eq!(error["code"], "model_not_found", "{error}");
    assert_eq!(error["param"], "model");
    assert!(error["message"].as_str().unwrap().contains("`gemma3:27b`"));
    assert_eq!(boxes.hits("/api/chat"), [1, 3, 1]);
    // A key's list still comes first: a model it may not use is 403 even
    // where no box has it.
    let got = call(
        boxes.proxy,
        "POST",
        "/api/chat",
        &[phi],
        full(chat_body("gemma3:27b")),
    )
    .await;
    assert_eq!(got.json()["error"]["code"], "model_not_allowed");
}

/// A box that dies mid-stream: the stream ends with the error record, new
/// requests go to the next box that has the model, and nothing is sent
/// twice. A box found dead when connecting (nothing sent yet) is skipped
/// for the next.
pub async fn a_dead_box_is_left_and_nothing_is_sent_twice<T: Target>(t: &T) {
    let boxes = Boxes::start(t, 3, &[]).await;
    let [a, b, c] = &boxes.origins[..] else {
        unreachable!()
    };
    a.set_models(&["qwen3:8b"], &[]);
    b.set_models(&["qwen3:8b"], &["qwen3:8b"]);
    c.set_models(&["mistral:latest"], &["mistral:latest"]);
    boxes.learn().await;

    // A long stream on b (qwen3 is loaded there).
    let response = send(request(
        boxes.proxy,
        "POST",
        "/api/chat?chunks=50&delay_ms=100",
        &[AUTH],
        full(chat_body("qwen3:8b")),
    ))
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a first chunk").expect("a chunk");
    assert!(first.is_data());
    b.kill();
    let mut rest = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            rest.extend_from_slice(&data);
        }
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.lines()
            .last()
            .is_some_and(|l| l.contains(r#""error":"The Ollama origin's stream broke off"#)),
        "the cut stream did not end with the error record: {rest}"
    );

    // New requests for qwen3 go to a (the broken stream took b out), each
    // once.
    for _ in 0..2 {
        let got = chat(boxes.proxy, "qwen3:8b").await;
        assert_eq!(got.status, 200, "{:?}", got.body);
    }
    assert_eq!(boxes.hits("/api/chat"), [2, 1, 0]);

    // c dies while nobody is talking to it: the next request for its
    // model finds it dead when connecting, before anything is sent. Only c
    // has mistral, so that request fails; nothing reached a or b.
    c.kill();
    let got = chat(boxes.proxy, "mistral").await;
    assert_eq!(got.status, 502, "{:?}", got.body);
    assert_eq!(got.json()["error"]["code"], "origin_unreachable");
    assert_eq!(boxes.hits("/api/chat"), [2, 1, 0]);
    // A listing leaves the dead boxes out.
    let tags = call(boxes.proxy, "GET", "/api/tags", &[AUTH], empty()).await;
    assert_eq!(tags.status, 200);
    assert_eq!(names(&tags, "models", "name"), ["qwen3:8b"]);
}

/// Three boxes that all have qwen3, loaded on the first; the proxy has
/// learnt so.
async fn three_with_qwen<T: Target>(t: &T) -> Boxes {
    let boxes = Boxes::start(t, 3, &[]).await;
    for (i, origin) in boxes.origins.iter().enumerate() {
        let loaded: &[&str] = if i == 0 { &["qwen3:8b"] } else { &[] };
        origin.set_models(&["qwen3:8b"], loaded);
    }
    boxes.learn().await;
    boxes
}

/// A box found dead when connecting, before any byte of the request went
/// out: the request goes to the next box that has the model, once. (At the
/// edge only a `GET` or `HEAD` is: see the quirk.)
pub async fn a_request_that_could_not_connect_goes_to_the_next_box<T: Target>(t: &T) {
    let boxes = three_with_qwen(t).await;
    let [a, b, _] = &boxes.origins[..] else {
        unreachable!()
    };
    a.kill();
    let got = chat(boxes.proxy, "qwen3:8b").await;
    if t.quirks().cannot_tell_refused_from_lost {
        // Not sent to b; a is known to be down from now on.
        assert_eq!(got.status, 502, "{:?}", got.body);
        assert_eq!(boxes.hits("/api/chat"), [0, 0, 0]);
    } else {
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(boxes.hits("/api/chat"), [0, 1, 0]);
    }
    // b dies too: a GET for the model goes to c, once.
    b.kill();
    let path = "/v1/models/qwen3:8b";
    call(boxes.proxy, "GET", path, &[AUTH], empty()).await;
    assert_eq!(boxes.hits(path), [0, 0, 1]);
    let got = chat(boxes.proxy, "qwen3:8b").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(boxes.hits("/api/chat")[2], 1);

    // Two boxes die before anyone notices: a request with a body is
    // refused by both in turn and still reaches the third, whole, once.
    let boxes = three_with_qwen(t).await;
    let [a, b, c] = &boxes.origins[..] else {
        unreachable!()
    };
    a.kill();
    b.kill();
    let got = chat(boxes.proxy, "qwen3:8b").await;
    if t.quirks().cannot_tell_refused_from_lost {
        assert_eq!(got.status, 502, "{:?}", got.body);
        assert_eq!(boxes.hits("/api/chat"), [0, 0, 0]);
    } else {
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(boxes.hits("/api/chat"), [0, 0, 1]);
        let sent = c.requests();
        let last = sent.last().expect("c saw the request");
        assert_eq!(
            &last.body[..],
            chat_body("qwen3:8b").as_bytes(),
            "the body arrived whole"
        );
    }
}

/// A client whose upload breaks mid-body (chunked or of declared length;
/// its connection's write side closed) gets 400 `bad_request`, and the box
/// it was going to is not held responsible: the next request for the model
/// goes there again.
pub async fn an_upload_its_client_breaks_is_not_the_boxs_failure<T: Target>(t: &T) {
    let boxes = Boxes::start(t, 2, &[]).await;
    let [a, b] = &boxes.origins[..] else {
        unreachable!()
    };
    a.set_models(&["qwen3:8b"], &["qwen3:8b"]);
    b.set_models(&["qwen3:8b"], &[]);
    boxes.learn().await;
    for framing in crate::scenarios::broken_bodies() {
        crate::scenarios::broken_body_gets_400(boxes.proxy, &framing).await;
        let got = chat(boxes.proxy, "qwen3:8b").await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(
            boxes.hits("/api/chat")[1],
            0,
            "{framing:?}: the box was taken out"
        );
    }
}
