//! `runbooks/job-keys-to-step-keys.yaml` (seed 004) end to end: a real redis-server
//! holding job:*, jobs:* and worker:*:jobs keys, and two services (the API and a worker)
//! that keep submitting jobs through the whole migration, writing job:* and step:* as
//! their flags say (dual-write, dual-read, primary pattern), which the runbook flips
//! phase by phase. At the end every job ever acknowledged is under step:*, every old key
//! is in its new key, the old keys are gone and stay gone, nothing else is touched.

use redis::Commands;
use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::topology::{docker_cli, worker_image};
use redis_move_testbed::{ContainerGuard, RedisServer, docker, unique_name};

fn env_of(container: &str) -> String {
    docker_cli(&["inspect", container, "--format", "{{json .Config.Env}}"])
}

#[tokio::test]
async fn job_keys_move_to_step_keys_phase_by_phase_under_dual_write_traffic() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    dataset::load_job_keys(&mut con, 3000);
    let jobs_before = snapshot(&mut con, "job:*");
    let lists_before = snapshot(&mut con, "jobs:*");
    let workers_before = snapshot(&mut con, "workers:*");
    // The API and a worker: seed 004's services, writing jobs all along.
    let image = worker_image(&engine).await;
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
            "--network",
            "host",
            "-e",
            "ROLE=keys-app",
            "-e",
            "RATE=40",
            "-e",
            &format!("REDIS_URL={}", server.url()),
            &image.reference,
            "/usr/local/bin/worker",
        ]);
    }
    let backups = tempfile::tempdir().unwrap();
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
        .args(["--var", &format!("backup_dir={}", backups.path().display())])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The services went on writing; the old keys stay gone (dual-write is off).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let old: Vec<String> = con.keys("job*").unwrap();
    assert!(old.is_empty(), "old keys left or back: {old:?}");
    // Every job a service ever had acknowledged is under step:* (nothing lost), and in
    // steps:pending.
    let written: Vec<String> = con.smembers("app:written").unwrap();
    assert!(
        written.len() > 100,
        "the services kept writing: {}",
        written.len()
    );
    let mut lost = Vec::new();
    for id in &written {
        let exists: bool = con.exists(format!("step:{id}")).unwrap();
        let pending: Option<f64> = con.zscore("steps:pending", id).unwrap();
        if !exists || pending.is_none() {
            lost.push(id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} jobs lost: {:?}",
        lost.len(),
        written.len(),
        &lost[..lost.len().min(5)]
    );
    // Every old key is in its new key: the loaded jobs exactly (nobody touched them).
    let mut loaded_steps = snapshot(&mut con, "step:*");
    loaded_steps.retain(|k, _| !k.starts_with(b"step:app-"));
    assert_same(
        &jobs_before,
        &loaded_steps,
        |k| [b"step:".as_slice(), &k[4..]].concat(),
        2000,
    );
    // The old lists in the new ones, with what dual-write added on top.
    for (key, state) in &lists_before {
        let new_key = [b"steps:".as_slice(), &key[5..]].concat();
        let members: Vec<Vec<u8>> = match state.key_type.as_str() {
            "zset" => con.zrange(&new_key, 0, -1).unwrap(),
            _ => con.smembers(&new_key).unwrap(),
        };
        let old_members: Vec<&Vec<u8>> = match state.key_type.as_str() {
            "zset" => state.value.iter().step_by(2).collect(),
            _ => state.value.iter().collect(),
        };
        for member in old_members {
            assert!(
                members.contains(member),
                "{} lacks {}",
                new_key.escape_ascii(),
                member.escape_ascii()
            );
        }
    }
    let mut steps_of_w1: Vec<String> = con.smembers("worker:w1:steps").unwrap();
    steps_of_w1.sort();
    assert_eq!(steps_of_w1, ["1", "2"]);
    let old_worker_keys: Vec<String> = con.keys("worker:*:jobs").unwrap();
    assert!(old_worker_keys.is_empty(), "{old_worker_keys:?}");
    assert_eq!(snapshot(&mut con, "workers:*"), workers_before);
    // The services carry the flags of the last phase.
    for name in &services {
        let env = env_of(name);
        for flag in [
            "ENABLE_DUAL_WRITE_STEPS=false",
            "READ_STEP_KEYS=true",
            "PRIMARY_KEY_PATTERN=step",
        ] {
            assert!(env.contains(flag), "{name}: {env}");
        }
    }
    // The backup is a verified snapshot on disk, taken before the delete.
    assert!(stderr.contains("ok backup"), "{stderr}");
    let files: Vec<_> = std::fs::read_dir(backups.path()).unwrap().collect();
    assert!(!files.is_empty(), "no snapshot file");
}
