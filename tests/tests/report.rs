//! `docs/reliability.md` must match what the tests check: its generated
//! part is rendered from the hostile-request list and the rows naming their
//! tests. `UPDATE_RELIABILITY_REPORT=1 cargo test -p ollama-proxy-tests
//! --test report` rewrites it after a change.

use std::path::Path;

use ollama_proxy_tests::report;

#[test]
fn reliability_report_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let missing = report::missing_tests(root);
    assert!(
        missing.is_empty(),
        "the report names tests that do not exist: {missing:?}"
    );
    let path = root.join("docs/reliability.md");
    let doc = std::fs::read_to_string(&path).expect("docs/reliability.md");
    let rendered = report::render();
    let updated = report::splice(&doc, &rendered).expect("the generated-part markers");
    if std::env::var_os("UPDATE_RELIABILITY_REPORT").is_some() {
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        updated == doc,
        "docs/reliability.md is stale; run UPDATE_RELIABILITY_REPORT=1 cargo test -p ollama-proxy-tests --test report"
    );
}
