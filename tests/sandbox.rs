//! `runbooks/vps01-to-vps.yaml` end to end in the sandbox (the VPS-01 side of seeds
//! 000/001 on the local Docker Engine, with an application enqueueing jobs throughout):
//! the happy path moves every job, and every job the application saw acknowledged is on
//! the new Redis; a fault that the cutover exposes rolls back with every job on the
//! source; a planted `/src` bind mount stops the run in the portability phase before
//! anything changes.
//!
//! The sandbox has fixed names (`fiskai-redis`, `fiskai-worker-*`): these tests run one
//! at a time.

use std::path::Path;

use redis_move_testbed::sandbox::{self, Options};
use redis_move_testbed::{docker, topology::docker_cli};

static SANDBOX: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "Sandbox-Pw-4242";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the runbook with the sandbox vars, gates approved, a short watch.
fn run(state: &Path) -> std::process::Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env("REDIS_PASSWORD", PASSWORD)
        .args([
            "run",
            "runbooks/vps01-to-vps.yaml",
            "--vars-file",
            "runbooks/vars/vps01-to-vps.sandbox.yaml",
            "--var",
            "stability_watch=4s",
            "--yes",
            "--no-progress",
            "--state-dir",
        ])
        .arg(state)
        .output()
        .expect("redis-move runs")
}

fn journal(state: &Path) -> serde_json::Value {
    let runs = state.join("runs");
    let mut ids: Vec<_> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ids.sort();
    serde_json::from_str(
        &std::fs::read_to_string(ids.last().unwrap().join("journal.json")).unwrap(),
    )
    .unwrap()
}

fn worker_urls() -> Vec<String> {
    sandbox::WORKERS
        .iter()
        .map(|w| {
            docker_cli(&[
                "inspect",
                &sandbox::worker_name(w),
                "--format",
                "{{range .Config.Env}}{{println .}}{{end}}",
            ])
            .lines()
            .find_map(|l| l.strip_prefix("REDIS_URL=").map(str::to_owned))
            .unwrap_or_default()
        })
        .collect()
}

/// The sandbox with its application writing to the new Redis with the runbook's password.
fn with_app(options: Options) -> Options {
    Options {
        password: Some(PASSWORD.to_owned()),
        ..options
    }
}

/// Removes the sandbox even when the test fails.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        sandbox::down();
    }
}

#[tokio::test]
async fn the_cutover_moves_every_job_to_the_new_redis() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    sandbox::up(&engine, &with_app(Options::default())).await;
    let source_url = format!("redis://127.0.0.1:{}", sandbox::SOURCE_PORT);
    // The loaded jobs; the application's come on top (it is already producing).
    let jobs = Options::default().jobs;
    assert!(sandbox::job_count(&source_url) >= jobs);
    let state = tempfile::tempdir().unwrap();
    let output = run(state.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // Every job is on the new Redis: waiting, active or done; those the application
    // enqueued during the run too (every one a server acknowledged).
    let target_url = format!("redis://:{PASSWORD}@127.0.0.1:{}", sandbox::TARGET_PORT);
    let (acked, rejected) = sandbox::stop_app();
    assert!(acked.len() > 100, "the application kept enqueueing");
    assert_eq!(
        sandbox::missing_jobs(&target_url, &acked),
        Vec::<String>::new(),
        "acknowledged jobs lost ({rejected} writes were refused, which is fine)"
    );
    assert_eq!(
        sandbox::job_count(&target_url),
        jobs + acked.len(),
        "no job was lost"
    );
    for url in worker_urls() {
        assert!(url.contains("@fiskai-redis-vps:6379"), "{url}");
    }
    // The cleanup removed the old Redis and kept its volume.
    assert!(
        !docker_cli(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == sandbox::SOURCE)
    );
    assert!(
        docker_cli(&["volume", "ls", "--format", "{{.Name}}"])
            .lines()
            .any(|v| v == sandbox::VOLUMES[0])
    );
    // The report is the filled-in sign-off sheet; no secret anywhere.
    let journal = journal(state.path());
    assert_eq!(journal["status"], "succeeded");
    let run_dir = state
        .path()
        .join("runs")
        .join(journal["run_id"].as_str().unwrap());
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("Sign-off"), "{report}");
    for text in [
        report.as_str(),
        &std::fs::read_to_string(run_dir.join("journal.json")).unwrap(),
        &stderr,
    ] {
        assert!(!text.contains(PASSWORD), "the password leaked");
    }
}

#[tokio::test]
async fn a_fault_the_cutover_exposes_rolls_back_with_every_job_on_the_source() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = with_app(Options {
        module_error_after_cutover: true,
        ..Options::default()
    });
    sandbox::up(&engine, &options).await;
    let source_url = format!("redis://127.0.0.1:{}", sandbox::SOURCE_PORT);
    let jobs = options.jobs;
    let state = tempfile::tempdir().unwrap();
    let output = run(state.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    // Caught by the post-cutover check or by the trigger, whichever looks first.
    assert!(
        stderr.contains("ROLLBACK: step `no-module-errors-after` failed")
            || stderr.contains("ROLLBACK: trigger `module-errors` fired"),
        "{stderr}"
    );
    let journal = journal(state.path());
    assert_eq!(journal["status"], "rolled_back");
    for step in [
        "switch-workers",
        "promote",
        "stop-workers",
        "start-new-redis",
    ] {
        assert_eq!(journal["steps"][step]["status"], "compensated", "{step}");
    }
    // Workers are back on the old Redis, which is a primary again with every job
    // (those done on the new Redis meanwhile came back through reverse replication).
    for url in worker_urls() {
        assert_eq!(url, "redis://fiskai-redis:6379");
    }
    let role = docker_cli(&["exec", sandbox::SOURCE, "redis-cli", "ROLE"]);
    assert!(role.starts_with("master"), "{role}");
    let (acked, _) = sandbox::stop_app();
    assert_eq!(
        sandbox::missing_jobs(&source_url, &acked),
        Vec::<String>::new(),
        "acknowledged jobs lost"
    );
    assert_eq!(
        sandbox::job_count(&source_url),
        jobs + acked.len(),
        "no job was lost"
    );
    // The park -> rename -> restore of the workers left no stale endpoint behind.
    assert_eq!(sandbox::stale_endpoints(), Vec::<String>::new());
    // The new Redis is gone.
    assert!(
        !docker_cli(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == "fiskai-redis-vps")
    );
}

#[tokio::test]
async fn a_src_bind_mount_stops_the_run_before_anything_changes() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = Options {
        src_mount: true,
        jobs: 1400,
        ..Options::default()
    };
    sandbox::up(&engine, &options).await;
    let state = tempfile::tempdir().unwrap();
    let output = run(state.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-src-mounts"), "{stderr}");
    assert!(stderr.contains("PR #1384"), "the hint is shown: {stderr}");
    let journal = journal(state.path());
    assert_eq!(journal["steps"]["start-new-redis"]["status"], "pending");
    for url in worker_urls() {
        assert_eq!(url, "redis://fiskai-redis:6379");
    }
}
