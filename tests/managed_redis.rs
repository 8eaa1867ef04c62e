//! The managed-Redis runbooks (seeds 002 and 003) end to end in their sandbox, with the
//! committed sandbox vars files: local stand-ins on fixed ports (a redis-server, over TLS
//! with a test CA for Upstash, and a small HTTP(S) server for the REST ping, the health
//! endpoint and the APIs). Their manual steps and sign-offs are confirmed
//! non-interactively (`--yes`).

use std::path::Path;

use redis_move_testbed::managed;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn redis_move(state: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"));
    cmd.current_dir(repo())
        .env("NO_COLOR", "1")
        .args(["--color", "never"])
        .arg("run")
        .args(["--yes", "--no-progress", "--state-dir"])
        .arg(state);
    cmd
}

fn assert_clean_success(output: &std::process::Output, secrets: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for secret in secrets {
        assert!(!stderr.contains(secret), "a secret leaked: {stderr}");
    }
    stderr
}

#[test]
fn render_redis_runs_in_its_sandbox_with_its_manual_steps_confirmed() {
    let render = managed::render();
    let state = tempfile::tempdir().unwrap();
    let output = redis_move(state.path())
        .arg("runbooks/render-redis.yaml")
        .args(["--vars-file", "runbooks/vars/render-redis.sandbox.yaml"])
        .env("RENDER_REDIS_URL", render.redis.url())
        .env("API_TOKEN", "Api-Token-31")
        .output()
        .unwrap();
    let stderr = assert_clean_success(&output, &[managed::PASSWORD, "Api-Token-31"]);
    assert!(stderr.contains("gate sign-off: GO"), "{stderr}");
    // The data checks cleaned up after themselves; the API got its test message.
    assert_eq!(
        render.redis.cli(&["EXISTS", "redis-move:check"]).trim(),
        "0"
    );
    let requests = render.api.requests.lock().unwrap().clone();
    assert_eq!(requests, vec!["POST /api/messages/send".to_owned()]);
}

#[test]
fn upstash_redis_runs_in_its_sandbox_over_tls_with_rest_ping_and_health() {
    let upstash = managed::upstash();
    let state = tempfile::tempdir().unwrap();
    let output = redis_move(state.path())
        .arg("runbooks/upstash-redis.yaml")
        .args(["--vars-file", "runbooks/vars/upstash-redis.sandbox.yaml"])
        .env("UPSTASH_REDIS_TOKEN", "Rest-Token-12")
        .env("UPSTASH_REDIS_PASSWORD", managed::PASSWORD)
        .env("ADMIN_TOKEN", "Admin-Token-34")
        .output()
        .unwrap();
    let stderr = assert_clean_success(
        &output,
        &["Rest-Token-12", managed::PASSWORD, "Admin-Token-34"],
    );
    assert!(stderr.contains("gate production-ready: GO"), "{stderr}");
    assert!(stderr.contains("ok hit-ratio"), "{stderr}");
    let requests = upstash.https.requests.lock().unwrap().clone();
    assert!(requests.contains(&"GET /ping".to_owned()), "{requests:?}");
    assert!(
        requests.contains(&"GET /api/v1/admin/redis-metrics".to_owned()),
        "{requests:?}"
    );
}

/// Render's Internal URL only resolves inside Render: the run stops at the first check,
/// with the hint, before anything changes.
#[test]
fn render_redis_refuses_the_internal_url() {
    let state = tempfile::tempdir().unwrap();
    let output = redis_move(state.path())
        .arg("runbooks/render-redis.yaml")
        .args(["--vars-file", "runbooks/vars/render-redis.sandbox.yaml"])
        .env("RENDER_REDIS_URL", "redis://red-cabc123xyz:6379")
        .env("API_TOKEN", "Api-Token-31")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED external-url"), "{stderr}");
    assert!(stderr.contains("use the External URL"), "{stderr}");
    assert!(!stderr.contains("start ping"), "{stderr}");
}
