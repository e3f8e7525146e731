//! The browser test's set-up: Debian's Chromium (apt; no browser download),
//! the pinned npm tools in tests/browser (puppeteer-core, the OpenAI JS
//! SDK, esbuild), and the test page bundled with esbuild.

use std::path::PathBuf;
use std::process::Command;

use crate::bench::ensure_apt;
use crate::tasks::{output, root, run};

fn browser_dir() -> PathBuf {
    root().join("tests/browser")
}

/// Installs what the browser test needs, reusing what is there, and
/// bundles the page.
pub(crate) fn prepare() -> Result<(), String> {
    ensure_apt(&[("chromium", "chromium")]);
    if output("which", &["chromium"]).is_none() {
        return Err("chromium is not installed and `apt-get install chromium` failed".into());
    }
    let dir = browser_dir();
    let installed = dir.join("node_modules/.bin/esbuild").exists()
        && dir.join("node_modules/puppeteer-core").exists()
        && dir.join("node_modules/openai").exists();
    if !installed {
        let mut npm = Command::new("npm");
        npm.current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]);
        run(npm)?;
    }
    let mut esbuild = Command::new(dir.join("node_modules/.bin/esbuild"));
    esbuild.current_dir(&dir).args([
        "page.js",
        "--bundle",
        "--format=esm",
        "--log-level=warning",
        "--outfile=build/page.js",
    ]);
    run(esbuild)
}
