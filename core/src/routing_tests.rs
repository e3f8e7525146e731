//! Several Ollama boxes, through the decision: the model a request names
//! (in its body or path) picks the box, listings are merged then filtered,
//! forwarded heads are aimed at the chosen box.

use std::sync::Arc;

use bytes::Bytes;
use http::{request, Request};
use proptest::prelude::*;

use crate::backends::{Backends, HealthPolicy, Probe, Reason};
use crate::decision::{Action, Proxy};
use crate::model_gate::GateStep;
use crate::Config;

const TOKEN: &str = "tok-abc123";
const ORIGINS: &str = "http://a.internal:11434/base, http://b.internal:11434,https://c.internal";

fn proxy(origins: &str, keys: Option<&str>) -> Proxy {
    let keys = keys.map(str::to_owned);
    let config = Config::from_lookup(|var| match var.name() {
        "OLLAMA_ORIGIN" => Some(origins.to_owned()),
        "AIG_AUTH_TOKEN" if keys.is_none() => Some(TOKEN.to_owned()),
        "AIG_KEYS" => keys.clone(),
        _ => None,
    });
    Proxy::new(config.unwrap())
}

fn head(method: &str, target: &str, token: &str) -> request::Parts {
    Request::builder()
        .method(method)
        .uri(target)
        .header("cf-aig-authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn tags(names: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"name":"{n}","model":"{n}"}}"#))
        .collect();
    format!(r#"{{"models":[{}]}}"#, entries.join(",")).into_bytes()
}

/// a has llama (loaded), b has llama and qwen, c has mistral (loaded).
fn known() -> Backends {
    let mut b = Backends::new(3, HealthPolicy::default());
    b.learnt(0, Probe::Models, &tags(&["llama3.2:1b"]), 0);
    b.learnt(0, Probe::Loaded, &tags(&["llama3.2:1b"]), 0);
    b.learnt(1, Probe::Models, &tags(&["llama3.2:1b", "qwen3:8b"]), 0);
    b.learnt(1, Probe::Loaded, &tags(&[]), 0);
    b.learnt(2, Probe::Models, &tags(&["mistral:latest"]), 0);
    b.learnt(2, Probe::Loaded, &tags(&["mistral"]), 0);
    b
}

#[test]
fn one_origin_is_as_before_and_several_are_listed_in_order() {
    let one = proxy("http://127.0.0.1:11434", None);
    assert_eq!(one.config().origins().len(), 1);
    let several = proxy(ORIGINS, None);
    let shown: Vec<String> = several
        .config()
        .origins()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "http://a.internal:11434/base",
            "http://b.internal:11434",
            "https://c.internal"
        ]
    );
    for (bad, says) in [
        ("http://a,http://a", "entry 2 repeats"),
        ("http://a,ftp://b", "entry 2: must be an absolute"),
        (",", "is set but empty"),
    ] {
        let err = Config::from_lookup(|var| match var.name() {
            "OLLAMA_ORIGIN" => Some(bad.to_owned()),
            "AIG_AUTH_TOKEN" => Some(TOKEN.to_owned()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let many = vec!["http://h"; 17]
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{h}{i}"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(Config::from_lookup(|var| match var.name() {
        "OLLAMA_ORIGIN" => Some(many.clone()),
        "AIG_AUTH_TOKEN" => Some(TOKEN.to_owned()),
        _ => None,
    })
    .is_err());
}

#[test]
fn how_often_boxes_are_asked_is_configurable() {
    let with = |var: &str, value: &str| {
        let (var, value) = (var.to_owned(), value.to_owned());
        Config::from_lookup(move |v| match v.name() {
            "OLLAMA_ORIGIN" => Some(ORIGINS.to_owned()),
            "AIG_AUTH_TOKEN" => Some(TOKEN.to_owned()),
            name if name == var => Some(value.clone()),
            _ => None,
        })
    };
    let defaults = HealthPolicy::default();
    let c = with("MODELS_REFRESH", "2m").unwrap();
    assert_eq!(c.health_policy().models_refresh_us, 120_000_000);
    assert_eq!(
        c.health_policy().loaded_refresh_us,
        defaults.loaded_refresh_us
    );
    let c = with("LOADED_REFRESH", "500ms").unwrap();
    assert_eq!(c.health_policy().loaded_refresh_us, 500_000);
    for bad in ["0s", "soon", "-1s"] {
        let err = with("LOADED_REFRESH", bad).unwrap_err().to_string();
        assert!(
            err.starts_with("LOADED_REFRESH: must be a duration"),
            "{err}"
        );
    }
}

#[test]
fn a_forwarded_head_is_aimed_at_the_chosen_box() {
    let p = proxy(ORIGINS, None);
    let Action::Forward(mut h) = p.decide(head("GET", "/api/version?x=1", TOKEN)).action else {
        panic!("not forwarded")
    };
    assert_eq!(
        h.uri.to_string(),
        "http://a.internal:11434/base/api/version?x=1"
    );
    p.aim(&mut h, 2);
    assert_eq!(h.uri.to_string(), "https://c.internal/api/version?x=1");
    assert_eq!(h.headers["host"], "c.internal");
    p.aim(&mut h, 0);
    assert_eq!(h.uri.to_string(), "https://c.internal/api/version?x=1");
    let probe = p.probe_request(1, Probe::Loaded);
    assert_eq!(probe.uri.to_string(), "http://b.internal:11434/api/ps");
    assert_eq!(probe.headers["host"], "b.internal:11434");
}

/// Feeds `body` through the exchange's gate in one chunk.
fn gated(
    p: &Proxy,
    target: &str,
    token: &str,
    body: &str,
) -> (crate::Exchange, Option<crate::ModelGate>) {
    let d = p.decide(head("POST", target, token));
    assert!(matches!(d.action, Action::Forward(_)), "{target}");
    let mut gate = d.exchange.model_gate();
    if let Some(g) = gate.as_mut() {
        let step = g.push(body.as_bytes());
        let step = if step == GateStep::Hold {
            g.finish()
        } else {
            step
        };
        assert!(
            !matches!(step, GateStep::Hold | GateStep::Refuse(_)),
            "{step:?}"
        );
    }
    (d.exchange, gate)
}

#[test]
fn the_body_names_the_box() {
    let p = proxy(ORIGINS, None);
    let b = known();
    for (target, body, first, reason) in [
        (
            "/api/chat",
            r#"{"model":"qwen3:8b","messages":[]}"#,
            1,
            Reason::HasModel,
        ),
        (
            "/api/generate",
            r#"{"prompt":"hi","MODEL":"llama3.2:1b"}"#,
            0,
            Reason::Loaded,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"mistral","stream":true}"#,
            2,
            Reason::Loaded,
        ),
        ("/api/embed", r#"{"input":"x"}"#, 0, Reason::Any),
    ] {
        let (mut exchange, gate) = gated(&p, target, TOKEN, body);
        assert!(
            gate.is_some(),
            "{target}: every key's body is read to route"
        );
        let route = exchange
            .choose_backends(&b, gate.as_ref().and_then(crate::ModelGate::model), 0)
            .unwrap();
        assert_eq!(
            (route.candidates[0], route.reason),
            (first, reason),
            "{body}"
        );
    }
    // Nobody has it: 404 model_not_found, OpenAI-shaped, naming it.
    let (mut exchange, gate) = gated(&p, "/api/chat", TOKEN, r#"{"model":"phi4"}"#);
    let answer = exchange
        .choose_backends(&b, gate.as_ref().and_then(crate::ModelGate::model), 0)
        .unwrap_err();
    assert_eq!(answer.status(), 404);
    let v: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    assert!(v["error"]["message"].as_str().unwrap().contains("`phi4`"));
    assert_eq!(exchange.rejection(), Some(crate::ProxyError::ModelNotFound));
    // In the path too.
    let mut exchange = p.decide(head("GET", "/v1/models/phi4", TOKEN)).exchange;
    assert!(exchange.choose_backends(&b, None, 0).is_err());
    let mut exchange = p.decide(head("GET", "/v1/models/qwen3:8b", TOKEN)).exchange;
    assert_eq!(
        exchange.choose_backends(&b, None, 0).unwrap().candidates,
        [1]
    );
    // A pull of a model nobody has goes to the first box, not a 404.
    let p = proxy(
        ORIGINS,
        Some("[[keys]]\nname=\"ops\"\ntoken=\"tok-abc123\"\nmodel_management=true\n"),
    );
    let (mut exchange, gate) = gated(&p, "/api/pull", TOKEN, r#"{"model":"phi4"}"#);
    assert_eq!(
        exchange
            .choose_backends(&b, gate.as_ref().and_then(crate::ModelGate::model), 0)
            .unwrap()
            .candidates[0],
        0
    );
    let (mut exchange, gate) = gated(&p, "/api/pull", TOKEN, r#"{"model":"mistral"}"#);
    assert_eq!(
        exchange
            .choose_backends(&b, gate.as_ref().and_then(crate::ModelGate::model), 0)
            .unwrap()
            .candidates[0],
        2
    );
}

#[test]
fn one_box_reads_no_body_and_never_says_not_found() {
    let p = proxy("http://127.0.0.1:11434", None);
    let d = p.decide(head("POST", "/api/chat", TOKEN));
    assert!(d.exchange.model_gate().is_none());
    let mut exchange = d.exchange;
    let mut b = Backends::new(1, HealthPolicy::default());
    b.learnt(0, Probe::Models, &tags(&["x"]), 0);
    assert_eq!(
        exchange.choose_backends(&b, None, 0).unwrap().candidates,
        [0]
    );
    assert!(!exchange.fans_out());
}

#[test]
fn listings_fan_out_and_merge() {
    let p = proxy(ORIGINS, None);
    let exchange = p.decide(head("GET", "/api/ps", TOKEN)).exchange;
    assert!(exchange.fans_out());
    assert_eq!(exchange.probe(), Some(Probe::Loaded));
    assert!(exchange.filters_listing(http::StatusCode::OK));
    let merged = exchange
        .merge_listings(&[
            Bytes::from(tags(&["a:1"])),
            Bytes::from(tags(&["b:1", "a:1"])),
        ])
        .unwrap();
    assert_eq!(
        &merged[..],
        br#"{"models":[{"name":"a:1","model":"a:1"},{"name":"b:1","model":"b:1"}]}"#
    );
    let exchange = p.decide(head("GET", "/api/tags", TOKEN)).exchange;
    assert_eq!(exchange.probe(), Some(Probe::Models));
    let exchange = p.decide(head("GET", "/api/version", TOKEN)).exchange;
    assert!(!exchange.fans_out());
    // Only a GET or HEAD asks every box, and without a body.
    let exchange = p.decide(head("POST", "/v1/models", TOKEN)).exchange;
    assert!(!exchange.fans_out());
    let mut get = head("GET", "/api/tags", TOKEN);
    get.headers.insert("content-length", "15".parse().unwrap());
    let Action::Forward(sent) = p.decide(get).action else {
        panic!("not forwarded")
    };
    assert!(!sent.headers.contains_key("content-length"));
}

fn keys_doc(lists: &[Vec<usize>], models: &[&str]) -> String {
    let mut doc = String::new();
    for (i, list) in lists.iter().enumerate() {
        let names: Vec<String> = list.iter().map(|&m| format!("\"{}\"", models[m])).collect();
        doc.push_str(&format!(
            "[[keys]]\nname = \"k{i}\"\ntoken = \"token-{i}-abcdefgh\"\nmodels = [{}]\n",
            names.join(",")
        ));
    }
    doc
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::test_cases::cases(128), ..ProptestConfig::default() })]

    /// Whatever the boxes list and whatever the keys may use, the merged
    /// listing a key gets holds only models of its own list, each at most
    /// once, and every allowed model some box lists.
    #[test]
    fn listings_never_show_another_keys_models(
        boxes in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..6), 1..4),
        lists in proptest::collection::vec(proptest::collection::vec(0usize..6, 0..4), 1..4),
        openai in any::<bool>(),
    ) {
        const MODELS: [&str; 6] = ["llama3.2:1b", "qwen3:8b", "mistral:latest", "phi4:latest", "gemma3:4b", "granite:2b"];
        let origins: Vec<String> = (0..3).map(|i| format!("http://box{i}.internal")).collect();
        let p = proxy(&origins.join(","), Some(&keys_doc(&lists, &MODELS)));
        let bodies: Vec<Bytes> = boxes.iter().map(|listed| {
            if openai {
                let entries: Vec<String> = listed.iter().map(|&m| format!(r#"{{"id":"{}","object":"model"}}"#, MODELS[m])).collect();
                Bytes::from(format!(r#"{{"object":"list","data":[{}]}}"#, entries.join(",")))
            } else {
                let names: Vec<&str> = listed.iter().map(|&m| MODELS[m]).collect();
                Bytes::from(tags(&names))
            }
        }).collect();
        for (i, list) in lists.iter().enumerate() {
            let target = if openai { "/v1/models" } else { "/api/tags" };
            let exchange = p.decide(head("GET", target, &format!("token-{i}-abcdefgh"))).exchange;
            prop_assert!(exchange.fans_out());
            let merged = exchange.merge_listings(&bodies).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
            let entries = if openai { &v["data"] } else { &v["models"] };
            let shown: Vec<String> = entries.as_array().unwrap().iter()
                .map(|e| e[if openai { "id" } else { "name" }].as_str().unwrap().to_owned())
                .collect();
            let allowed: std::collections::HashSet<&str> = list.iter().map(|&m| MODELS[m]).collect();
            let listed: std::collections::HashSet<&str> = boxes.iter().flatten().map(|&m| MODELS[m]).collect();
            let unique: std::collections::HashSet<&String> = shown.iter().collect();
            prop_assert_eq!(unique.len(), shown.len(), "a model twice: {:?}", shown);
            for name in &shown {
                prop_assert!(allowed.contains(name.as_str()), "{} shown to k{}", name, i);
            }
            for name in allowed.intersection(&listed) {
                prop_assert!(shown.iter().any(|s| s == name), "{} missing for k{}", name, i);
            }
        }
        let _ = Arc::new(());
    }
}

#[test]
fn a_listing_from_every_box_is_one_answer() {
    let p = proxy(ORIGINS, None);
    let exchange = p.decide(head("GET", "/api/tags", TOKEN)).exchange;
    let answer = |status: u16, body: &[u8]| {
        let mut head = http::Response::new(()).into_parts().0;
        head.status = http::StatusCode::from_u16(status).unwrap();
        head.headers.insert("content-length", body.len().into());
        Ok((head, Bytes::copy_from_slice(body)))
    };
    // The successful ones merged; a box that failed left out.
    let (response, error) = exchange.fan_in(vec![
        Err(crate::ProxyError::OriginUnreachable),
        answer(200, &tags(&["a:1"])),
        answer(500, b"{}"),
        answer(200, &tags(&["b:1", "a:1"])),
    ]);
    assert_eq!((response.status(), error), (http::StatusCode::OK, None));
    assert!(!response.headers().contains_key("content-length"));
    assert_eq!(
        &response.body()[..],
        br#"{"models":[{"name":"a:1","model":"a:1"},{"name":"b:1","model":"b:1"}]}"#
    );
    // None successful: the first box's own answer.
    let (response, error) = exchange.fan_in(vec![
        Err(crate::ProxyError::OriginUnreachable),
        answer(500, br#"{"error":"x"}"#),
    ]);
    assert_eq!((response.status().as_u16(), error), (500, None));
    assert_eq!(&response.body()[..], br#"{"error":"x"}"#);
    // None at all: the proxy's 502.
    let (response, error) = exchange.fan_in(vec![Err(crate::ProxyError::OriginUnreachable)]);
    assert_eq!(response.status().as_u16(), 502);
    assert_eq!(error, Some(crate::ProxyError::OriginUnreachable));
}
