//! The managed-Redis runbooks (seeds 002 and 003) end to end against local stand-ins:
//! a redis-server (over TLS with a test CA for Upstash) and a small HTTP(S) server for the
//! REST ping, the health endpoint and the APIs. Their manual steps and sign-offs are
//! confirmed non-interactively (`--yes`).

use std::path::Path;

use redis_move_testbed::RedisServer;
use redis_move_testbed::http::{HttpStub, Route};
use redis_move_testbed::tls::make_certs;

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
fn render_redis_runs_with_its_manual_steps_confirmed() {
    let redis = RedisServer::start_with(Some("Render-Pw-77"), &[]);
    let api = HttpStub::start(
        vec![Route::new("/api/messages/send", 202, r#"{"queued":true}"#)],
        None,
    );
    let state = tempfile::tempdir().unwrap();
    let output = redis_move(state.path())
        .arg("runbooks/render-redis.yaml")
        .args(["--var", &format!("api_url={}", api.url(false))])
        .env("RENDER_REDIS_URL", redis.url())
        .env("API_TOKEN", "Api-Token-31")
        .output()
        .unwrap();
    let stderr = assert_clean_success(&output, &["Render-Pw-77", "Api-Token-31"]);
    assert!(stderr.contains("gate sign-off: GO"), "{stderr}");
    // The data checks cleaned up after themselves; the API got its test message.
    assert_eq!(redis.cli(&["EXISTS", "redis-move:check"]).trim(), "0");
    let requests = api.requests.lock().unwrap().clone();
    assert_eq!(requests, vec!["POST /api/messages/send".to_owned()]);
}

#[test]
fn upstash_redis_runs_over_tls_with_rest_ping_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let redis = RedisServer::start_tls_with(&certs, Some("Upstash-Pw-55"));
    let app = HttpStub::start(
        vec![
            Route::new("/ping", 200, r#"{"result":"PONG"}"#),
            Route::new("/api/v1/health/redis", 200, r#"{"redis":"connected"}"#),
            Route::new("/api/v1/admin/redis-metrics", 200, r#"{"hits":1}"#),
        ],
        Some(&certs),
    );
    // Some cache traffic, so that the hit rate means something.
    let client = redis::Client::open(format!(
        "rediss://default:Upstash-Pw-55@127.0.0.1:{}/#insecure",
        redis.port
    ))
    .unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("ws:1:cache")
        .arg("v")
        .query(&mut con)
        .unwrap();
    for _ in 0..9 {
        let _: String = redis::cmd("GET").arg("ws:1:cache").query(&mut con).unwrap();
    }
    let _: Option<String> = redis::cmd("GET").arg("ws:1:miss").query(&mut con).unwrap();
    let state = tempfile::tempdir().unwrap();
    let ca = certs.ca.display().to_string();
    let output = redis_move(state.path())
        .arg("runbooks/upstash-redis.yaml")
        .args(["--var", &format!("rest_url={}", app.url(true))])
        .args(["--var", &format!("app_url={}", app.url(true))])
        .args(["--var", "redis_host=127.0.0.1"])
        .args(["--var", &format!("redis_port={}", redis.port)])
        .args(["--var", &format!("redis_ca={ca}")])
        .args(["--var", &format!("http_ca={ca}")])
        .env("UPSTASH_REDIS_TOKEN", "Rest-Token-12")
        .env("UPSTASH_REDIS_PASSWORD", "Upstash-Pw-55")
        .env("ADMIN_TOKEN", "Admin-Token-34")
        .output()
        .unwrap();
    let stderr = assert_clean_success(
        &output,
        &["Rest-Token-12", "Upstash-Pw-55", "Admin-Token-34"],
    );
    assert!(stderr.contains("gate production-ready: GO"), "{stderr}");
    let requests = app.requests.lock().unwrap().clone();
    assert!(requests.contains(&"GET /ping".to_owned()), "{requests:?}");
    assert!(
        requests.contains(&"GET /api/v1/admin/redis-metrics".to_owned()),
        "{requests:?}"
    );
}
