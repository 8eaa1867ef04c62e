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

/// The API and a worker: seed 004's services, writing jobs all along (job keys first).
async fn keys_app(
    engine: &bollard::Docker,
    server: &RedisServer,
) -> ([String; 2], ContainerGuard, String) {
    let image = worker_image(engine).await;
    let prefix = unique_name("keys");
    let services = [format!("{prefix}-api"), format!("{prefix}-worker")];
    let guard = ContainerGuard::new(services.clone());
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
    (services, guard, prefix)
}

/// Runs `runbook` against `server` and the services named `<prefix>-*`, approving its
/// gates.
fn run_runbook(
    runbook: &str,
    server: &RedisServer,
    prefix: &str,
    backups: &tempfile::TempDir,
) -> std::process::Output {
    let state = tempfile::tempdir().unwrap();
    std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .args(["run", runbook, "--yes", "--no-progress"])
        .args(["--var", &format!("redis_url={}", server.url())])
        .args(["--var", &format!("services=^{prefix}-(api|worker)$")])
        .args(["--var", "probe_interval=1s"])
        .args(["--var", &format!("backup_dir={}", backups.path().display())])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap()
}

/// Ids of the jobs a service had acknowledged that are not under step:* (the key and
/// its place in steps:pending), and how many were acknowledged.
fn lost_jobs(con: &mut redis::Connection) -> (Vec<String>, usize) {
    let written: Vec<String> = con.smembers("app:written").unwrap();
    let mut lost = Vec::new();
    for id in &written {
        let exists: bool = con.exists(format!("step:{id}")).unwrap();
        let pending: Option<f64> = con.zscore("steps:pending", id).unwrap();
        if !exists || pending.is_none() {
            lost.push(id.clone());
        }
    }
    (lost, written.len())
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
    let (services, _guard, prefix) = keys_app(&engine, &server).await;
    let backups = tempfile::tempdir().unwrap();
    let output = run_runbook(
        "runbooks/job-keys-to-step-keys.yaml",
        &server,
        &prefix,
        &backups,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The services went on writing; the old keys stay gone (dual-write is off).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let old: Vec<String> = con.keys("job*").unwrap();
    assert!(old.is_empty(), "old keys left or back: {old:?}");
    // Every job a service ever had acknowledged is under step:* (nothing lost), and in
    // steps:pending.
    let (lost, written) = lost_jobs(&mut con);
    assert!(written > 100, "the services kept writing: {written}");
    assert!(
        lost.is_empty(),
        "{} of {written} jobs lost: {:?}",
        lost.len(),
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

/// `runbooks/job-keys-sync.yaml`: the same move with `redis.sync` instead of dual-write.
/// The services write only job keys until the switch; every job they had acknowledged is
/// under step:* after it, the loaded keys exactly, and the services then write step keys
/// only.
#[tokio::test]
async fn job_keys_follow_as_step_keys_through_a_live_sync_and_a_drained_switch() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    dataset::load_job_keys(&mut con, 3000);
    let jobs_before = snapshot(&mut con, "job:*");
    let workers_before = snapshot(&mut con, "workers:*");
    let (services, _guard, prefix) = keys_app(&engine, &server).await;
    let backups = tempfile::tempdir().unwrap();
    let output = run_runbook("runbooks/job-keys-sync.yaml", &server, &prefix, &backups);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("ok drain"), "{stderr}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let old: Vec<String> = con.keys("job*").unwrap();
    assert!(old.is_empty(), "old keys left or back: {old:?}");
    let (lost, written) = lost_jobs(&mut con);
    assert!(written > 40, "the services kept writing: {written}");
    assert!(
        lost.is_empty(),
        "{} of {written} jobs lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let mut loaded_steps = snapshot(&mut con, "step:*");
    loaded_steps.retain(|k, _| !k.starts_with(b"step:app-"));
    assert_same(
        &jobs_before,
        &loaded_steps,
        |k| [b"step:".as_slice(), &k[4..]].concat(),
        2000,
    );
    let mut steps_of_w1: Vec<String> = con.smembers("worker:w1:steps").unwrap();
    steps_of_w1.sort();
    assert_eq!(steps_of_w1, ["1", "2"]);
    assert_eq!(snapshot(&mut con, "workers:*"), workers_before);
    // No marker or ledger key of the sync is left on the server.
    let markers: Vec<String> = con.keys("redis-move:*").unwrap();
    assert!(markers.is_empty(), "{markers:?}");
    for name in &services {
        assert!(env_of(name).contains("PRIMARY_KEY_PATTERN=step"), "{name}");
    }
}
