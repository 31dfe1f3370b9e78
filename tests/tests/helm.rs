//! The Helm chart's checks as part of `cargo test --workspace`: runs
//! `helm/ci/check`, which lints and renders `helm/nudge` and the example
//! application chart with Helm's own code for every value set in
//! `helm/ci/`, validates the manifests against the Kubernetes schemas,
//! and checks that the chart sets every environment variable the programs
//! read (so the chart cannot fall behind `config.rs` unnoticed).
//!
//! Needs the venv and promtool that `scripts/test` installs; fails (never
//! skips) without them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn helm_chart_lints_renders_and_validates() {
    let root = workspace_dir();
    let python = std::env::var_os("NUDGE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} not found: run `scripts/test` (it installs helm-python-sdk and kubernetes-validate) or set NUDGE_TEST_PYTHON",
        python.display()
    );
    let output = Command::new(root.join("helm/ci/check"))
        .env("NUDGE_TEST_PYTHON", &python)
        .output()
        .expect("run helm/ci/check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "helm/ci/check failed ({}):\n{stdout}{stderr}",
        output.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "helm/ci/check printed no summary:\n{stdout}{stderr}"
    );
}
