use proptest::prelude::*;

use super::*;

const SECOND: u64 = 1_000_000;

fn tags(names: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = names
        .iter()
        .map(|n| format!(r#"{{"name":"{n}","model":"{n}","size":1}}"#))
        .collect();
    format!(r#"{{"models":[{}]}}"#, entries.join(",")).into_bytes()
}

/// Three backends: 0 has llama and qwen, with llama loaded; 1 has llama;
/// 2 has mistral.
fn three() -> Backends {
    let mut b = Backends::new(3, HealthPolicy::default());
    b.learnt(0, Probe::Models, &tags(&["llama3.2:1b", "qwen3:8b"]), 0);
    b.learnt(0, Probe::Loaded, &tags(&["llama3.2:1b"]), 0);
    b.learnt(1, Probe::Models, &tags(&["llama3.2:1b"]), 0);
    b.learnt(1, Probe::Loaded, &tags(&[]), 0);
    b.learnt(2, Probe::Models, &tags(&["mistral:latest"]), 0);
    b.learnt(2, Probe::Loaded, &tags(&[]), 0);
    b
}

#[test]
fn a_model_goes_where_it_is_loaded_then_where_it_is() {
    let mut b = three();
    let route = b.route(Some("llama3.2:1b"), 0).unwrap();
    assert_eq!(
        (route.candidates.clone(), route.reason),
        (vec![0, 1], Reason::Loaded)
    );
    // Ollama's own spellings name the same model.
    assert_eq!(b.route(Some("LLAMA3.2:1B"), 0).unwrap().candidates[0], 0);
    assert_eq!(
        b.route(Some("library/mistral"), 0).unwrap().candidates,
        vec![2]
    );
    assert_eq!(
        b.route(Some("qwen3:8b"), 0).unwrap().reason,
        Reason::HasModel
    );
    // Busy, the loaded box is still first: a load costs more than a wait.
    for _ in 0..5 {
        b.started(0);
    }
    assert_eq!(b.route(Some("llama3.2:1b"), 0).unwrap().candidates[0], 0);
    // Nobody has it.
    assert_eq!(b.route(Some("phi4"), 0), Err(NoRoute::ModelNotFound));
    // No model: least in flight first.
    let route = b.route(None, 0).unwrap();
    assert_eq!(route.reason, Reason::Any);
    assert_eq!(route.candidates[2], 0);
}

#[test]
fn a_generation_that_answered_marks_its_model_loaded() {
    let mut b = three();
    assert_eq!(
        b.route(Some("qwen3:8b"), 0).unwrap().reason,
        Reason::HasModel
    );
    b.answered(0, Some("qwen3:8b"), SECOND);
    assert_eq!(
        b.route(Some("qwen3:8b"), SECOND).unwrap().reason,
        Reason::Loaded
    );
}

#[test]
fn backends_not_known_yet_come_after_those_that_have_the_model() {
    let mut b = Backends::new(2, HealthPolicy::default());
    b.learnt(1, Probe::Models, &tags(&["llama3.2:1b"]), 0);
    assert_eq!(
        b.route(Some("llama3.2:1b"), 0).unwrap().candidates,
        vec![1, 0]
    );
    assert_eq!(b.route(Some("phi4"), 0).unwrap().candidates, vec![0]);
}

#[test]
fn a_failing_backend_is_skipped_with_a_growing_backoff() {
    let mut b = three();
    b.failed(0, 0);
    let route = b.route(Some("llama3.2:1b"), 0).unwrap();
    assert_eq!(
        (route.candidates.clone(), route.reason),
        (vec![1], Reason::HasModel)
    );
    assert!(!b.is_up(0, 0));
    // Its backoff is over: tried again (and probed).
    assert_eq!(
        b.route(Some("llama3.2:1b"), SECOND).unwrap().candidates[0],
        0
    );
    assert!(b.due(SECOND).contains(&(0, Probe::Models)));
    // A second failure in a row: twice as long.
    b.failed(0, SECOND);
    assert_eq!(
        b.route(Some("llama3.2:1b"), 2 * SECOND).unwrap().candidates,
        vec![1]
    );
    assert_eq!(
        b.route(Some("llama3.2:1b"), 3 * SECOND).unwrap().candidates[0],
        0
    );
    // An answer closes the breaker.
    b.answered(0, None, 3 * SECOND);
    assert!(b.is_up(0, 3 * SECOND));
    b.failed(0, 4 * SECOND);
    assert_eq!(
        b.route(Some("llama3.2:1b"), 5 * SECOND).unwrap().candidates[0],
        0,
        "the backoff started over"
    );
}

#[test]
fn with_every_backend_failing_they_are_tried_anyway() {
    let mut b = Backends::new(1, HealthPolicy::default());
    for i in 0..30 {
        b.failed(0, i * SECOND);
    }
    let route = b.route(None, 30 * SECOND).unwrap();
    assert_eq!(
        (route.candidates, route.reason),
        (vec![0], Reason::LastResort)
    );
    // The backoff is capped at a minute.
    assert_eq!(
        b.route(None, 88 * SECOND).unwrap().reason,
        Reason::LastResort
    );
    assert_eq!(b.route(None, 89 * SECOND).unwrap().reason, Reason::Any);
}

#[test]
fn only_a_request_not_yet_sent_goes_to_the_next_candidate() {
    let route = Route {
        candidates: vec![2, 0, 1],
        reason: Reason::Loaded,
    };
    assert_eq!(Backends::retry(&route, 0, Failure::BeforeSent), Some(0));
    assert_eq!(Backends::retry(&route, 1, Failure::BeforeSent), Some(1));
    assert_eq!(Backends::retry(&route, 2, Failure::BeforeSent), None);
    assert_eq!(Backends::retry(&route, 0, Failure::AfterSent), None);
}

#[test]
fn listings_are_refreshed_when_stale() {
    let mut b = Backends::new(1, HealthPolicy::default());
    assert_eq!(b.due(0), vec![(0, Probe::Models), (0, Probe::Loaded)]);
    b.learnt(0, Probe::Models, &tags(&["a"]), 0);
    b.learnt(0, Probe::Loaded, &tags(&[]), 0);
    assert!(b.due(SECOND).is_empty());
    assert_eq!(b.due(5 * SECOND), vec![(0, Probe::Loaded)]);
    assert_eq!(b.due(30 * SECOND).len(), 2);
    // What is not a listing teaches nothing.
    b.learnt(0, Probe::Models, b"<html>", 31 * SECOND);
    b.learnt(0, Probe::Models, br#"{"models":null}"#, 31 * SECOND);
    assert_eq!(
        b.route(Some("a"), 31 * SECOND).unwrap().reason,
        Reason::HasModel
    );
}

fn universe() -> [&'static str; 4] {
    ["llama3.2:1b", "qwen3:8b", "mistral:latest", "phi4:latest"]
}

#[derive(Clone, Debug)]
struct State {
    models: Option<Vec<bool>>,
    loaded: Option<Vec<bool>>,
    failures: u8,
    in_flight: u8,
}

fn state() -> impl Strategy<Value = State> {
    (
        prop::option::weighted(0.8, prop::collection::vec(any::<bool>(), 4)),
        prop::option::weighted(0.8, prop::collection::vec(any::<bool>(), 4)),
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
        0u8..4,
    )
        .prop_map(|(models, loaded, failures, in_flight)| State {
            models,
            loaded,
            failures,
            in_flight,
        })
}

fn build(states: &[State]) -> Backends {
    let mut b = Backends::new(states.len(), HealthPolicy::default());
    let names = universe();
    for (i, s) in states.iter().enumerate() {
        let pick = |flags: &Vec<bool>| -> Vec<&str> {
            names
                .iter()
                .zip(flags)
                .filter(|(_, f)| **f)
                .map(|(n, _)| *n)
                .collect()
        };
        if let Some(m) = &s.models {
            b.learnt(i, Probe::Models, &tags(&pick(m)), 0);
        }
        if let Some(l) = &s.loaded {
            // Loaded models are among its models.
            let l: Vec<bool> = match &s.models {
                Some(m) => l.iter().zip(m).map(|(a, b)| *a && *b).collect(),
                None => l.clone(),
            };
            b.learnt(i, Probe::Loaded, &tags(&pick(&l)), 0);
        }
        for _ in 0..s.failures {
            b.failed(i, 0);
        }
        for _ in 0..s.in_flight {
            b.started(i);
        }
    }
    b
}

proptest! {
    /// Never routes to a backend without the model while a healthy one has
    /// it; to one without it loaded while a healthy one has it loaded; and
    /// never lists as a candidate a backend known not to have it.
    #[test]
    fn the_model_decides_before_the_load(
        states in prop::collection::vec(state(), 1..5),
        model in 0usize..5,
    ) {
        let b = build(&states);
        let names = universe();
        let wanted = names.get(model).copied();
        let now = 0;
        // Whether backend i is known to have the model loaded (or to have
        // it at all); `None`: not known.
        let knows = |i: usize, loaded: bool| -> Option<bool> {
            let s = &states[i];
            let m = wanted.map(|w| names.iter().position(|n| *n == w).unwrap())?;
            let in_models = s.models.as_ref().map(|models| models[m]);
            let in_loaded = s.loaded.as_ref().map(|l| l[m] && in_models.unwrap_or(true));
            if loaded {
                in_loaded
            } else if in_loaded == Some(true) {
                Some(true)
            } else {
                in_models
            }
        };
        let healthy: Vec<usize> = (0..states.len()).filter(|&i| states[i].failures == 0).collect();
        match b.route(wanted, now) {
            Err(NoRoute::ModelNotFound) => {
                prop_assert!(wanted.is_some());
                prop_assert!((0..states.len()).all(|i| knows(i, false) == Some(false)));
            }
            Ok(route) => {
                let first = route.candidates[0];
                if wanted.is_some() {
                    if healthy.iter().any(|&i| knows(i, true) == Some(true)) {
                        prop_assert_eq!(knows(first, true), Some(true), "{:?}", route);
                    }
                    if healthy.iter().any(|&i| knows(i, false) == Some(true)) {
                        prop_assert_eq!(knows(first, false), Some(true), "{:?}", route);
                    }
                    for &c in &route.candidates {
                        prop_assert_ne!(knows(c, false), Some(false), "{:?}", route);
                    }
                }
                if route.reason != Reason::LastResort {
                    for &c in &route.candidates {
                        prop_assert_eq!(states[c].failures, 0);
                    }
                }
                // Each backend at most once.
                let mut seen = route.candidates.clone();
                seen.sort_unstable();
                seen.dedup();
                prop_assert_eq!(seen.len(), route.candidates.len());
            }
        }
    }

    /// Once a byte of the request went out it is never tried again, and a
    /// request not sent is tried on each candidate at most once.
    #[test]
    fn never_retried_after_it_started(
        states in prop::collection::vec(state(), 1..5),
        failures in prop::collection::vec(any::<bool>(), 0..6),
    ) {
        let b = build(&states);
        let Ok(route) = b.route(None, 0) else { return Ok(()) };
        let mut attempt = 0;
        let mut tried = vec![route.candidates[0]];
        for sent in failures {
            let failure = if sent { Failure::AfterSent } else { Failure::BeforeSent };
            match Backends::retry(&route, attempt, failure) {
                Some(next) => {
                    prop_assert!(!sent, "retried after it was sent");
                    prop_assert!(!tried.contains(&next));
                    tried.push(next);
                    attempt += 1;
                }
                None => break,
            }
        }
    }
}

#[test]
fn an_answer_says_whether_the_box_is_up_and_what_it_loaded() {
    let mut b = three();
    // A gateway's 502: the box is out.
    b.observed(1, 502, Some("llama3.2:1b"), 0);
    assert!(!b.is_up(1, 0));
    // Ollama's own 404 or 500 is an answer: the box is back, nothing loaded.
    b.observed(1, 500, Some("llama3.2:1b"), 2 * SECOND);
    assert!(b.is_up(1, 2 * SECOND));
    assert_eq!(
        b.route(Some("llama3.2:1b"), 2 * SECOND).unwrap().candidates[0],
        0
    );
    // A success for a model: loaded there.
    b.observed(2, 200, Some("mistral"), 2 * SECOND);
    let route = b.route(Some("mistral"), 2 * SECOND).unwrap();
    assert_eq!((route.candidates[0], route.reason), (2, Reason::Loaded));
}
