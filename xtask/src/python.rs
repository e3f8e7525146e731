//! The Python clients the HTTPS tests drive (the OpenAI, Ollama and Anthropic SDKs,
//! pinned in tests/python/requirements.txt), in a virtualenv at
//! tests/python/.venv: made when missing (Debian's python3-venv from apt
//! if need be), packages from PyPI, reused when they import.

use std::path::PathBuf;
use std::process::Command;

use crate::bench::ensure_apt;
use crate::tasks::{output, root, run};

fn python_dir() -> PathBuf {
    root().join("tests/python")
}

/// Makes the virtualenv and installs the pinned clients, unless they are
/// there already.
pub(crate) fn prepare() -> Result<(), String> {
    let dir = python_dir();
    let python = dir.join(".venv/bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import openai, ollama, anthropic"])
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return Ok(());
    }
    ensure_apt(&[("python3", "python3")]);
    let venv_works = output("python3", &["-m", "venv", "--help"]).is_some()
        && Command::new("python3")
            .args(["-c", "import ensurepip"])
            .status()
            .is_ok_and(|s| s.success());
    if !venv_works {
        // `venv` needs Debian's python3-venv (ensurepip).
        let version = output(
            "python3",
            &[
                "-c",
                "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
            ],
        )
        .unwrap_or_default();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "python3-venv"])
            .arg(format!("python{}-venv", version.trim()))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv", "--clear"]).arg(dir.join(".venv"));
    run(venv)?;
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-r",
    ])
    .arg(dir.join("requirements.txt"));
    run(pip)
}
