//! Python programs the tests run against the real systems, e.g. the BullMQ library
//! itself (the Python `bullmq` package, which `scripts/test` installs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether `python3` can import `module`; `false` with a loud message when it cannot. With
/// `REDIS_MOVE_REQUIRE_DOCKER=1` (CI, where nothing may be skipped) a missing module fails
/// the test instead.
pub fn has_module(module: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    if std::env::var("REDIS_MOVE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!(
            "REDIS_MOVE_REQUIRE_DOCKER=1 but python3 cannot import {module} (scripts/test installs it)"
        );
    }
    eprintln!(
        "\n!!!! SKIPPED: this test needs the Python package `{module}` (pip install {module}) !!!!\n"
    );
    false
}

/// A script under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

/// Runs `python3 SCRIPT ARGS...` and returns its standard output; panics with its
/// standard error when it fails.
pub fn run(script: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "python3 {} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
