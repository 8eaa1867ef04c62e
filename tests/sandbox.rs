//! `runbooks/vps01-to-vps.yaml` end to end in the sandbox (the two hosts of seeds 000/001:
//! VPS-01 on the local Docker Engine, VPS on a second engine reached over SSH, with an
//! application enqueueing jobs throughout):
//! the happy path moves every job, and every job the application saw acknowledged is on
//! the new Redis; a fault that the cutover exposes rolls back with every job on the
//! source; a planted `/src` bind mount stops the run in the portability phase before
//! anything changes; `runbooks/queue-to-cluster.yaml` moves the sandbox's queue Redis
//! into a 3+3 Redis Cluster of containers, where the workers then finish every job.
//!
//! The sandbox has fixed names (`fiskai-redis`, `fiskai-worker-*`): these tests run one
//! at a time.

use std::path::Path;
use std::time::Duration;

use redis_move_testbed::browser::{Announced, Browser};
use redis_move_testbed::sandbox::{self, Options};
use redis_move_testbed::{docker, topology::docker_cli};
use serde_json::json;

static SANDBOX: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "Sandbox-Pw-4242";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The runbook with the sandbox vars and a `watch`-long stability watch; gates are
/// approved with `--yes` unless the caller says otherwise.
fn command_without_approvals(state: &Path, watch: &str) -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"));
    command
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env("REDIS_PASSWORD", PASSWORD)
        .args([
            "run",
            "runbooks/vps01-to-vps.yaml",
            "--vars-file",
            "runbooks/vars/vps01-to-vps.sandbox.yaml",
            "--var",
            &format!("stability_watch={watch}"),
            "--no-progress",
            "--state-dir",
        ])
        .arg(state);
    command
}

/// The runbook with the sandbox vars, gates approved, a `watch`-long stability watch.
fn command(state: &Path, watch: &str) -> std::process::Command {
    let mut command = command_without_approvals(state, watch);
    command.arg("--yes");
    command
}

/// Runs the runbook to its end.
fn run(state: &Path) -> std::process::Output {
    command(state, "4s").output().expect("redis-move runs")
}

/// Starts the runbook with a `watch`-long stability watch; the test acts meanwhile.
fn start(state: &Path, watch: &str) -> std::process::Child {
    command(state, watch)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("redis-move starts")
}

/// Waits until the run has started `step` (its journal says so), or has ended.
fn wait_for_step(state: &Path, child: &mut std::process::Child, step: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let started = std::panic::catch_unwind(|| journal(state))
            .ok()
            .is_some_and(|j| {
                j["steps"][step]["status"]
                    .as_str()
                    .is_some_and(|s| s != "pending")
            });
        if started {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before step {step} started");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "step {step} never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The run's exit code and standard error.
fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().expect("redis-move ends");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The new Redis, from the host.
fn new_redis() -> redis::Connection {
    let url = format!("redis://:{PASSWORD}@{}", sandbox::TARGET_ADDRESS);
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("the new Redis answers")
}

/// After a rollback: every worker on the old Redis, which is a primary again.
fn assert_back_on_the_old_redis() {
    for url in worker_urls() {
        assert_eq!(url, "redis://fiskai-redis:6379");
    }
    let role = docker_cli(&["exec", sandbox::SOURCE, "redis-cli", "ROLE"]);
    assert!(role.starts_with("master"), "{role}");
}

fn journal(state: &Path) -> serde_json::Value {
    redis_move_testbed::workspace::read_journal(
        &redis_move_testbed::workspace::latest_run(&state.join("runs")).unwrap(),
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
    // The go gate is decided on the live page, in a browser, when there is one.
    let (code, stderr) = match Browser::launch(1100, 1500) {
        Some(browser) => run_deciding_go_on_the_page(state.path(), browser),
        None => {
            let output = run(state.path());
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    assert_eq!(code, Some(0), "{stderr}");
    // Every job is on the new Redis: waiting, active or done; those the application
    // enqueued during the run too (every one a server acknowledged).
    let target_url = format!("redis://:{PASSWORD}@{}", sandbox::TARGET_ADDRESS);
    let (acked, rejected) = sandbox::stop_app();
    assert!(acked.len() > 100, "the application kept enqueueing");
    assert_eq!(
        sandbox::missing_jobs(&target_url, &acked),
        Vec::<String>::new(),
        "acknowledged jobs lost ({rejected} writes were refused, which is fine)"
    );
    assert_jobs_accounted_for(sandbox::job_count(&target_url), jobs, acked.len(), rejected);
    for url in worker_urls() {
        assert!(
            url.contains(&format!("@{}", sandbox::TARGET_ADDRESS)),
            "{url}"
        );
    }
    // The new Redis runs on the VPS host's engine, which redis-move reached only over
    // SSH, and not on VPS-01's.
    assert!(
        sandbox::vps_docker(&["ps", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == "fiskai-redis-vps")
    );
    assert!(
        !docker_cli(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == "fiskai-redis-vps")
    );
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
    // The growth trigger compared with the rate before the workers stopped.
    let baseline = &journal["baselines"]["queues-growing"];
    assert!(baseline["rate"].is_number(), "{baseline}");
    let run_dir = state
        .path()
        .join("runs")
        .join(journal["run_id"].as_str().unwrap());
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("Sign-off"), "{report}");
    for text in [
        report.as_str(),
        &redis_move_testbed::workspace::journal_text(&run_dir),
        &stderr,
    ] {
        assert!(!text.contains(PASSWORD), "the password leaked");
    }
}

/// Runs the cutover with its live page open in `browser`: the page shows the steps as
/// they finish (within a second), refuses a wrong token at the go gate, and the right
/// one continues the run. Every other decision is approved on the command line.
fn run_deciding_go_on_the_page(state: &Path, mut browser: Browser) -> (Option<i32>, String) {
    let mut command = command_without_approvals(state, "4s");
    for id in [
        "pr-merged",
        "app-redis-url",
        "app-redeployed",
        "producers",
        "cleanup-gate",
    ] {
        command.args(["--approve", id]);
    }
    let mut child = command
        .args(["--serve", "127.0.0.1:0"])
        .env("REDIS_MOVE_OPERATOR", "ana@ops-laptop")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("redis-move starts");
    let page = Announced::read(&mut child);
    let token = page.token.clone().expect("the token printed");
    browser.open(&page.url);
    let opened = jiff::Timestamp::now();
    browser.wait_for(
        "the cutover's steps",
        "!!window.redisMove.state && document.querySelectorAll('tr[data-step]').length > 20",
        Duration::from_secs(60),
    );
    browser.wait_for(
        "the go gate",
        "!!(window.redisMove.state.gate && window.redisMove.state.gate.id === 'go')",
        Duration::from_secs(900),
    );
    // Each step that finished while the page was open showed within a second.
    let journal = journal(state);
    let mut measured = 0;
    for (id, step) in journal["steps"].as_object().unwrap() {
        let Some(finished) = step["finished_at"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        if finished <= opened.checked_add(Duration::from_millis(500)).unwrap() {
            continue;
        }
        let seen = browser.eval(&format!("window.redisMove.finishedSeen[{}]", json!(id)));
        let late = seen.as_i64().expect("seen on the page") - finished.as_millisecond();
        eprintln!("`{id}` finished, and the page showed it {late} ms later");
        assert!(
            late < 1000,
            "`{id}` showed on the page {late} ms after it finished"
        );
        measured += 1;
    }
    assert!(measured >= 3, "steps finished while the page was open");
    assert!(
        browser
            .eval("window.redisMove.state.gate.evidence.length")
            .as_u64()
            .is_some_and(|n| n > 0),
        "the gate shows its evidence"
    );
    browser.fill("#who", "Ana Operator");
    browser.fill("#token", "0123456789abcdef-wrong");
    browser.click("#go");
    browser.wait_for(
        "the wrong token refused",
        "document.getElementById('answer').textContent.includes('wrong token')",
        Duration::from_secs(30),
    );
    assert!(child.try_wait().unwrap().is_none(), "the run waits on");
    assert!(
        crate::journal(state)["gates"]
            .as_array()
            .is_none_or(|g| !g.iter().any(|d| d["gate"] == "go"))
    );
    if let Some(dir) = std::env::var_os("REDIS_MOVE_SCREENSHOTS") {
        browser.fill("#token", &token);
        browser.eval("document.getElementById('answer').textContent = ''");
        browser.screenshot(&Path::new(&dir).join("live-page.png"));
    }
    browser.fill("#token", &token);
    browser.click("#go");
    browser.wait_for(
        "the cutover going on",
        "window.redisMove.state.gate === null",
        Duration::from_secs(60),
    );
    let code = child.wait().unwrap().code();
    let gates = crate::journal(state)["gates"].clone();
    let go = gates
        .as_array()
        .and_then(|g| g.iter().find(|d| d["gate"] == "go"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(go["who"], "Ana Operator", "{gates}");
    assert_eq!(go["how"], "live page from 127.0.0.1");
    let stderr = page.stderr.lock().unwrap().clone();
    (code, stderr)
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
    // Caught by the post-cutover check or by a trigger, whichever looks first: the
    // worker that cannot find its module logs it, exits and is restarted.
    assert!(
        stderr.contains("ROLLBACK: step `no-module-errors-after` failed")
            || stderr.contains("ROLLBACK: trigger `module-errors` fired")
            || stderr.contains("ROLLBACK: trigger `workers-restarting` fired"),
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
    let (acked, rejected) = sandbox::stop_app();
    assert_eq!(
        sandbox::missing_jobs(&source_url, &acked),
        Vec::<String>::new(),
        "acknowledged jobs lost"
    );
    assert_jobs_accounted_for(sandbox::job_count(&source_url), jobs, acked.len(), rejected);
    // The park -> rename -> restore of the workers left no stale endpoint behind.
    assert_eq!(sandbox::stale_endpoints(), Vec::<String>::new());
    // The new Redis is gone from the VPS host.
    assert!(
        !sandbox::vps_docker(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == "fiskai-redis-vps")
    );
}

/// A runbook a newcomer writes with `redis-move init docker-move`, given the sandbox's
/// hosts, runs the move end to end: the new Redis on the VPS host (reached over SSH)
/// with every job the application saw acknowledged, and the workers pointed at it.
#[tokio::test]
async fn a_runbook_from_init_docker_move_moves_the_sandbox_redis() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    sandbox::up(&engine, &with_app(Options::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let target = sandbox::TARGET_ADDRESS;
    let new_url = format!("redis://:${{secrets.redis_password}}@{target}");
    let ssh = Path::new(sandbox::STATE_DIR).join("ssh");
    let vars = [
        "old_docker=unix:///var/run/docker.sock".to_owned(),
        format!("new_docker=ssh://root@127.0.0.1:{}", sandbox::SSH_PORT),
        format!("new_ssh_identity={}", ssh.join("id_client").display()),
        format!("new_ssh_known_hosts={}", ssh.join("known_hosts").display()),
        format!("old_redis_container={}", sandbox::SOURCE),
        "new_redis_container=fiskai-redis-vps".to_owned(),
        format!("redis_image={}", sandbox::REDIS_IMAGE),
        format!("old_redis_url=redis://127.0.0.1:{}", sandbox::SOURCE_PORT),
        format!("new_redis_url={new_url}"),
        format!(
            "old_redis_address={}:{}",
            sandbox::VPS_SUBNET.1,
            sandbox::SOURCE_PORT
        ),
        format!("new_redis_address={target}"),
        format!("new_redis_publish={target}:6379"),
        format!("new_redis_data={}", sandbox::VOLUMES[1]),
        format!("network={}", sandbox::NETWORK),
        "app=^fiskai-worker".to_owned(),
        format!("app_redis_url={new_url}"),
        "watch=5s".to_owned(),
        "probe_interval=1s".to_owned(),
    ];
    let redis_move = || {
        let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"));
        command
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("REDIS_PASSWORD", PASSWORD)
            .stdin(std::process::Stdio::null());
        command
    };
    let mut init = redis_move();
    init.args(["init", "docker-move", "--no-input", "--out", "move.yaml"]);
    for var in &vars {
        init.args(["--var", var]);
    }
    let written = init.output().unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let output = redis_move()
        .args([
            "run",
            "move.yaml",
            "--vars-file",
            "move.vars.yaml",
            "--yes",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let target_url = format!("redis://:{PASSWORD}@{target}");
    let (acked, rejected) = sandbox::stop_app();
    assert_eq!(
        sandbox::missing_jobs(&target_url, &acked),
        Vec::<String>::new(),
        "acknowledged jobs lost ({rejected} writes were refused, which is fine)"
    );
    for url in worker_urls() {
        assert!(url.contains(&format!("@{target}")), "{url}");
    }
    assert!(
        sandbox::vps_docker(&["ps", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == "fiskai-redis-vps")
    );
    assert!(!stderr.contains(PASSWORD), "the password leaked");
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

// Each check of the runbook fails on the fault it exists for (issue 10): a worker not
// connected, a consumer left on the old Redis, connection errors after the switch, a
// write refused for memory, queue growth beyond the rate before the cutover.

#[tokio::test]
async fn a_worker_that_never_connected_stops_the_run_before_anything_changes() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = Options {
        unconnected_worker: true,
        jobs: 1400,
        ..Options::default()
    };
    sandbox::up(&engine, &options).await;
    let state = tempfile::tempdir().unwrap();
    let output = run(state.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let journal = journal(state.path());
    assert_eq!(journal["steps"]["workers-started"]["status"], "failed");
    // Its container runs: only its missing connection tells.
    let running = docker_cli(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(
        running
            .lines()
            .filter(|n| n.starts_with("fiskai-worker"))
            .count(),
        sandbox::WORKERS.len(),
        "{running}"
    );
    assert_eq!(journal["steps"]["start-new-redis"]["status"], "pending");
}

#[tokio::test]
async fn a_consumer_left_on_the_old_redis_rolls_back() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = with_app(Options {
        forgotten_consumer: true,
        jobs: 14_000,
        ..Options::default()
    });
    sandbox::up(&engine, &options).await;
    let state = tempfile::tempdir().unwrap();
    let output = run(state.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("ROLLBACK: step `old-redis-no-workers` failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains(sandbox::FORGOTTEN) || stderr.contains("bull:reports:w"),
        "the client left behind is named: {stderr}"
    );
    assert_back_on_the_old_redis();
}

#[tokio::test]
async fn connection_errors_after_the_switch_roll_back() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = with_app(Options {
        wrong_password_after_cutover: true,
        jobs: 14_000,
        ..Options::default()
    });
    sandbox::up(&engine, &options).await;
    let state = tempfile::tempdir().unwrap();
    let output = run(state.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    // The worker keeps running (its container never restarts): only its logs tell.
    assert!(
        stderr.contains("ROLLBACK: step `no-connection-errors` failed")
            || stderr.contains("ROLLBACK: trigger `workers-cannot-connect` fired"),
        "{stderr}"
    );
    assert!(
        stderr.contains("WRONGPASS"),
        "the log line is shown: {stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "the password leaked");
    assert_back_on_the_old_redis();
}

#[tokio::test]
async fn a_write_refused_for_memory_fails_the_check_at_the_end_of_the_watch() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = with_app(Options {
        jobs: 14_000,
        ..Options::default()
    });
    sandbox::up(&engine, &options).await;
    let state = tempfile::tempdir().unwrap();
    let mut child = start(state.path(), "10s");
    wait_for_step(state.path(), &mut child, "stability-watch");
    // Memory runs out during the watch: the server refuses writes (noeviction), it
    // evicts nothing.
    let mut con = new_redis();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query::<()>(&mut con)
        .unwrap();
    let refused = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query::<()>(&mut con);
    assert!(
        refused.is_err_and(|e| e.to_string().contains("OOM")),
        "the write is refused"
    );
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("ROLLBACK: step `no-rejected-writes` failed"),
        "{stderr}"
    );
    let journal = journal(state.path());
    assert_eq!(journal["steps"]["memory-stable"]["status"], "succeeded");
    assert_back_on_the_old_redis();
}

#[tokio::test]
async fn queue_growth_beyond_the_rate_before_the_cutover_rolls_back() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    let options = with_app(Options {
        jobs: 14_000,
        ..Options::default()
    });
    sandbox::up(&engine, &options).await;
    let state = tempfile::tempdir().unwrap();
    let mut child = start(state.path(), "60s");
    wait_for_step(state.path(), &mut child, "stability-watch");
    // A queue nobody consumes starts growing 200 jobs a second on the new Redis.
    let mut con = new_redis();
    let mut flooded = 0u32;
    while child.try_wait().unwrap().is_none() && flooded < 12_000 {
        let mut pipe = redis::pipe();
        for _ in 0..20 {
            flooded += 1;
            pipe.cmd("RPUSH")
                .arg("bull:flood:wait")
                .arg(flooded)
                .ignore();
        }
        let _ = pipe.query::<()>(&mut con);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, stderr) = finish(child);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("ROLLBACK: trigger `queues-growing` fired"),
        "{stderr}"
    );
    // Against the rate measured on the old Redis before the workers stopped.
    let journal = journal(state.path());
    let baseline = &journal["baselines"]["queues-growing"];
    assert_eq!(baseline["before"], "stop-workers", "{baseline}");
    assert!(baseline["rate"].is_number(), "{baseline}");
    assert!(
        stderr.contains("trigger queues-growing: baseline"),
        "{stderr}"
    );
    assert_back_on_the_old_redis();
}

/// The jobs a server holds at the end: every loaded and every acknowledged one (none
/// lost), and beyond those at most the application's writes whose answer it never got
/// (refused or failed, logged `rejected`: a write that timed out may still have been
/// applied) and the one in flight when it was stopped.
fn assert_jobs_accounted_for(held: usize, loaded: usize, acked: usize, unanswered: usize) {
    assert!(
        held >= loaded + acked,
        "jobs lost: {held} held, {loaded} loaded + {acked} acknowledged"
    );
    assert!(
        held <= loaded + acked + unanswered + 1,
        "jobs from nowhere: {held} held, {loaded} loaded + {acked} acknowledged + {unanswered} unanswered + 1 in flight"
    );
}

#[tokio::test]
async fn the_queues_move_into_a_cluster_and_the_workers_finish_them_there() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let _one = SANDBOX.lock().await;
    let _down = Down;
    // Slow workers until they are stopped: most jobs are still waiting for the move.
    let options = Options {
        jobs: 14_000,
        job_ms: 1000,
        produce: 0,
        ..Options::default()
    };
    sandbox::up(&engine, &options).await;
    sandbox::cluster_up(&engine).await;
    // The runbook's first manual step: the operator stops every worker.
    sandbox::stop_workers();
    let source_url = format!("redis://127.0.0.1:{}", sandbox::SOURCE_PORT);
    let before = sandbox::queue_counts(&source_url, "bull");
    let state = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env("SOURCE_REDIS_URL", &source_url)
        .env("CLUSTER_REDIS_URL", sandbox::cluster_url())
        .args([
            "run",
            "runbooks/queue-to-cluster.yaml",
            "--var",
            "writers_timeout=60s",
            "--var",
            "probe_interval=1s",
            "--yes",
            "--no-progress",
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .expect("redis-move runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let journal = journal(state.path());
    let copied = journal["steps"]["copy"]["value"]["object"]["copied"]["number"]
        .as_f64()
        .unwrap();
    assert!(copied >= 14_000.0, "{copied} keys copied");
    // Every queue's keys share the slot of `{bull}`: one primary holds them all.
    let slot = redis_move_testbed::cluster::slot_of(b"{bull}");
    let holder = redis_move_testbed::cluster::primary_of_slot_at(sandbox::CLUSTER_NODES[0], slot)
        .expect("a primary serves {bull}");
    let holder_url = format!("redis://{holder}");
    assert_eq!(sandbox::queue_counts(&holder_url, "{bull}"), before);
    // The cutover's manual step: the workers on the cluster, under `{bull}`. They finish
    // every waiting job there, each once.
    sandbox::workers_to_cluster(1);
    // (A job a stopped worker had taken stays in active: BullMQ's stalled-job check
    // would put it back in wait; the sandbox's worker has none.)
    let waiting: usize = before.iter().map(|q| q[0]).sum();
    assert!(waiting > 5_000, "{waiting} jobs waiting");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let now = sandbox::queue_counts(&holder_url, "{bull}");
        if now.iter().all(|q| q[0] == 0) {
            for (queue, (after, was)) in now.iter().zip(&before).enumerate() {
                assert_eq!(
                    after[2],
                    was[2] + was[0],
                    "queue {}: completed",
                    sandbox::WORKERS[queue]
                );
                assert_eq!((after[1], after[3], after[4]), (was[1], was[3], was[4]));
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workers left jobs on the cluster: {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The old Redis was never modified: its queues are as they were.
    assert_eq!(sandbox::queue_counts(&source_url, "bull"), before);
}
