//! Docker actions run for real against the Docker Engine, with a locally built image:
//! run (with an uploaded file, health check, network), wait_healthy, exec, one-off runs,
//! stop, recreate with a new environment, and the rollback that restores each exactly.

use std::path::Path;

use assert_cmd::Command;
use redis_move_testbed::{ContainerGuard, docker, unique_name};

fn inspect(name: &str, format: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", name, "--format", format])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

#[tokio::test]
async fn docker_actions_and_their_rollbacks() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let image = docker::redis_image(&engine).await.reference;
    let network = unique_name("net");
    let redis = unique_name("redis");
    let workers: Vec<String> = (0..2).map(|i| unique_name(&format!("worker{i}"))).collect();
    let mut guard = ContainerGuard::new(workers.clone());
    guard.add(redis.clone());
    docker_cli(&["network", "create", &network]);
    let _network = NetworkGuard(network.clone());
    for worker in &workers {
        docker_cli(&[
            "run",
            "-d",
            "--name",
            worker,
            "--network",
            &network,
            "--label",
            "role=worker",
            "-e",
            "REDIS_URL=redis://:Old-Pw-77@old:6379",
            "-e",
            "KEEP=1",
            &image,
            "/usr/bin/redis-server",
            "--port",
            "7000",
            "--save",
            "",
        ]);
    }
    let prefix = format!("^rmtest-{}-[0-9]+-worker", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let runbook = format!(
        r#"version: 1
name: docker-actions
secrets:
  pw: {{ env: DOCKER_TEST_PW }}
targets:
  local: {{ docker: {{}} }}
phases:
  - id: provision
    steps:
      - id: start-redis
        docker.run:
          image: "{image}"
          name: "{redis}"
          cmd: [/usr/bin/redis-server, /usr/local/etc/redis/redis.conf]
          networks: ["{network}"]
          files:
            /usr/local/etc/redis/redis.conf: "port 6379\nrequirepass ${{secrets.pw}}\nsave \"\"\n"
          healthcheck: {{ test: [/usr/bin/redis-cli, -a, "${{secrets.pw}}", ping], interval: 1s, retries: 30 }}
          pull: never
      - id: healthy
        docker.wait_healthy: {{ name: "^{redis}$", timeout: 30s }}
      - id: set-key
        docker.exec: {{ container: "{redis}", cmd: [/usr/bin/redis-cli, -a, "${{secrets.pw}}", --no-auth-warning, SET, k, v] }}
        expect: {{ exit_code: 0, stdout: {{ contains: OK }} }}
        rollback: none
      - id: one-off
        docker.run: {{ image: "{image}", rm: true, cmd: [/bin/sh, -c, "echo hello-$((1+1)); exit 3"], pull: never }}
        expect: {{ exit_code: 3, output: {{ contains: hello-2 }} }}
  - id: cutover
    on_failure: rollback
    steps:
      - id: stop-one
        docker.stop: {{ name: "{w1}$", timeout: 2s }}
      - id: switch
        docker.recreate: {{ name: "{prefix}", env: {{ REDIS_URL: "redis://new:6379" }}, timeout: 2s }}
      - id: switched
        docker.containers: {{ name: "{prefix}" }}
        expect: {{ count: "== 2", each: {{ env: {{ contains: "REDIS_URL=redis://new:6379" }} }} }}
      - id: boom
        assert: {{ value: "${{env.DOCKER_TEST_BOOM}}" }}
        expect: "== no"
"#,
        w1 = workers[1],
    );
    std::fs::write(dir.path().join("runbook.yaml"), &runbook).unwrap();
    let ids_before: Vec<String> = workers.iter().map(|w| inspect(w, "{{.Id}}")).collect();
    let assert = Command::cargo_bin("redis-move")
        .unwrap()
        .current_dir(dir.path())
        .env("DOCKER_TEST_PW", "Docker-Pw-31")
        .env("DOCKER_TEST_BOOM", "yes")
        .args(["run", "runbook.yaml", "--yes"])
        .assert();
    let output = assert.get_output();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("Docker-Pw-31"));
    assert!(!stderr.contains("Old-Pw-77"));
    // Every change of the run is undone, provisioning included: the container it ran is gone.
    let exists = std::process::Command::new("docker")
        .args(["inspect", &redis])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        !exists,
        "the provisioned container was removed by the rollback"
    );
    // The workers are back exactly as they were: old env, same labels, network, and both running.
    for (worker, id_before) in workers.iter().zip(&ids_before) {
        let env = inspect(worker, "{{json .Config.Env}}");
        assert!(
            env.contains("REDIS_URL=redis://:Old-Pw-77@old:6379") && env.contains("KEEP=1"),
            "{worker}: {env}"
        );
        assert_eq!(
            inspect(worker, "{{index .Config.Labels \"role\"}}"),
            "worker"
        );
        assert!(inspect(worker, "{{json .NetworkSettings.Networks}}").contains(&network));
        assert_eq!(
            inspect(worker, "{{.State.Running}}"),
            "true",
            "{worker} runs again"
        );
        assert_eq!(
            &inspect(worker, "{{.Id}}"),
            id_before,
            "{worker}: the original container itself is back"
        );
    }
    let leftovers = docker_cli(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={}", workers[0]),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(
        leftovers.lines().count(),
        1,
        "no parked copy is left: {leftovers}"
    );
    let journal_dir = dir.path().join(".redis-move/docker-actions/runs");
    let run = std::fs::read_dir(&journal_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let journal = redis_move_testbed::workspace::journal_text(&run);
    assert!(
        !journal.contains("Docker-Pw-31"),
        "the secret is in the journal"
    );
    assert!(
        !journal.contains("Old-Pw-77"),
        "the workers' old password is in the journal"
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("recreate with the previous configuration"),
        "{report}"
    );
    let _ = Path::new(".");
    drop(guard);
}

#[tokio::test]
async fn a_successful_recreate_removes_the_parked_originals() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let image = docker::redis_image(&engine).await.reference;
    let worker = unique_name("solo");
    let _guard = ContainerGuard::new([worker.clone()]);
    docker_cli(&[
        "run",
        "-d",
        "--name",
        &worker,
        "-e",
        "REDIS_URL=redis://old:6379",
        &image,
        "/usr/bin/redis-server",
        "--port",
        "7001",
        "--save",
        "",
    ]);
    let id_before = inspect(&worker, "{{.Id}}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runbook.yaml"),
        format!("version: 1\nname: solo\nphases:\n  - id: p\n    steps:\n      - {{ id: switch, docker.recreate: {{ name: \"^{worker}$\", env: {{ REDIS_URL: \"redis://new:6379\" }}, timeout: 1s }} }}\n"),
    )
    .unwrap();
    Command::cargo_bin("redis-move")
        .unwrap()
        .current_dir(dir.path())
        .args(["run", "runbook.yaml", "--yes"])
        .assert()
        .success();
    assert_ne!(inspect(&worker, "{{.Id}}"), id_before);
    assert!(inspect(&worker, "{{json .Config.Env}}").contains("REDIS_URL=redis://new:6379"));
    let leftovers = docker_cli(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={worker}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(
        leftovers, worker,
        "the parked original was removed once the run succeeded"
    );
    // Running it again changes nothing: the container already has that environment.
    let id_after = inspect(&worker, "{{.Id}}");
    Command::cargo_bin("redis-move")
        .unwrap()
        .current_dir(dir.path())
        .args(["run", "runbook.yaml", "--yes"])
        .assert()
        .success();
    assert_eq!(
        inspect(&worker, "{{.Id}}"),
        id_after,
        "recreating with the env a container already has is a no-op"
    );
}

#[tokio::test]
async fn plan_check_lists_the_containers_a_change_would_act_on() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = redis_move_testbed::topology::Topology::start(&engine, 2).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runbook.yaml"),
        format!(
            "version: 1\nname: sel\nvars:\n  workers: \"{}\"\ntargets:\n  host: {{ docker: {{}} }}\nphases:\n  - id: p\n    steps:\n      - id: stop\n        docker.stop: {{ name: \"${{vars.workers}}\" }}\n",
            topo.worker_pattern()
        ),
    )
    .unwrap();
    let out = Command::cargo_bin("redis-move")
        .unwrap()
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .args(["plan", "runbook.yaml", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("would act on 2 containers now:"), "{text}");
    for worker in &topo.workers {
        assert!(text.contains(worker.as_str()), "{text}");
    }
    // Nothing was stopped.
    for worker in &topo.workers {
        assert_eq!(inspect(worker, "{{.State.Running}}"), "true");
    }
}
