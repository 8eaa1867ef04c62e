//! `runbooks/job-keys-to-step-keys.yaml` (seed 004) end to end: a real redis-server
//! holding job:* and jobs:* keys, two service containers whose flags the runbook flips
//! (dual-write, dual-read, primary pattern), the verified copy, and the cleanup that
//! deletes the old keys only after a backup. The step:* keys must equal the job:* keys
//! they came from, and nothing else may be touched.

use redis::Commands;
use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::topology::docker_cli;
use redis_move_testbed::{ContainerGuard, RedisServer, docker, unique_name};

fn env_of(container: &str) -> String {
    docker_cli(&["inspect", container, "--format", "{{json .Config.Env}}"])
}

#[tokio::test]
async fn job_keys_move_to_step_keys_phase_by_phase() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    dataset::load_job_keys(&mut con, 3000);
    let jobs_before = snapshot(&mut con, "job:*");
    let lists_before = snapshot(&mut con, "jobs:*");
    let workers_before = snapshot(&mut con, "worker*");
    // The API and a worker: any long-running container will do for their flags.
    let image = docker::redis_image(&engine).await;
    let prefix = unique_name("keys");
    let services = [format!("{prefix}-api"), format!("{prefix}-worker")];
    let _guard = ContainerGuard::new(services.clone());
    for name in &services {
        docker_cli(&[
            "run",
            "-d",
            "--init",
            "--name",
            name,
            &image.reference,
            "/usr/bin/redis-server",
            "--port",
            "7000",
            "--save",
            "",
        ]);
    }
    let state = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .args([
            "run",
            "runbooks/job-keys-to-step-keys.yaml",
            "--yes",
            "--no-progress",
        ])
        .args(["--var", &format!("redis_url={}", server.url())])
        .args(["--var", &format!("services=^{prefix}-(api|worker)$")])
        .args(["--var", "probe_interval=1s"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The copy is exact, the old keys are gone, nothing else changed.
    let steps = snapshot(&mut con, "step:*");
    assert_same(
        &jobs_before,
        &steps,
        |k| [b"step:".as_slice(), &k[4..]].concat(),
        2000,
    );
    assert_same(
        &lists_before,
        &snapshot(&mut con, "steps:*"),
        |k| [b"steps:".as_slice(), &k[5..]].concat(),
        2000,
    );
    let old: Vec<String> = con.keys("job*").unwrap();
    assert!(old.is_empty(), "old keys left: {old:?}");
    assert_eq!(snapshot(&mut con, "worker*"), workers_before);
    // The services carry every flag the phases set.
    for name in &services {
        let env = env_of(name);
        for flag in [
            "ENABLE_DUAL_WRITE_STEPS=true",
            "READ_STEP_KEYS=true",
            "PRIMARY_KEY_PATTERN=step",
        ] {
            assert!(env.contains(flag), "{name}: {env}");
        }
    }
    // The backup ran before the delete.
    let lastsave: i64 = redis::cmd("LASTSAVE").query(&mut con).unwrap();
    assert!(lastsave > 0);
    assert!(stderr.contains("ok backup"), "{stderr}");
}
