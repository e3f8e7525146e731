//! The packaging files in the repository, checked as far as this machine
//! allows: the systemd unit with `systemd-analyze verify` (when systemd's
//! tools are installed), the Dockerfile's shape by reading it (no Docker
//! daemon or Dockerfile linter is available here; see the README).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn systemd_unit_verifies() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(root().join("ops/ollama-proxy.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/ollama-proxy\n"));
    // Verified as installed, with the binary this build produced in place
    // of /usr/local/bin/ollama-proxy (verify checks that it is executable).
    let dir = std::env::temp_dir().join(format!("ollama-proxy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("env");
    std::fs::write(&env_file, "AIG_AUTH_TOKEN=x\n").unwrap();
    let unit = unit
        .replace(
            "ExecStart=/usr/local/bin/ollama-proxy",
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_ollama-proxy")),
        )
        .replace(
            "EnvironmentFile=/etc/ollama-proxy/env",
            &format!("EnvironmentFile={}", env_file.display()),
        );
    let path = dir.join("ollama-proxy.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{stderr}");
    // Unknown or misspelt settings are only warned about: fail on any.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze warned:\n{stderr}"
    );
}

#[test]
fn dockerfile_builds_the_binary_into_a_non_root_image() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].ends_with(" AS build"));
    assert!(
        dockerfile.contains("cargo build --release --locked -p ollama-proxy-native"),
        "the build stage builds the native binary from the lockfile"
    );
    let runtime: Vec<&&str> = instructions
        .iter()
        .skip_while(|l| !l.starts_with("FROM ") || l.ends_with(" AS build"))
        .collect();
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(runtime
        .iter()
        .any(|l| l.starts_with("COPY --from=build /ollama-proxy ")));
    assert!(runtime.contains(&&r#"ENTRYPOINT ["/usr/local/bin/ollama-proxy"]"#));
    // Every variable the image sets is one the binary reads.
    let help = Command::new(env!("CARGO_BIN_EXE_ollama-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for var in ["LISTEN_ADDR", "METRICS_ADDR", "OLLAMA_ORIGIN"] {
        assert!(
            dockerfile.contains(&format!("{var}=")) && help.contains(var),
            "{var}"
        );
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for path in ["target", "worker-target/node_modules"] {
        assert!(
            ignore.lines().any(|l| l == path),
            ".dockerignore lacks {path}"
        );
    }
}
