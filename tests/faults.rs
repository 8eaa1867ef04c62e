//! Fault injection against a real topology in containers (source Redis, target Redis,
//! queue workers of ours): the run is cut over, a fault is injected during the watch,
//! and the trigger must fire and the rollback must bring the workers back.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use redis_move_testbed::topology::{Topology, docker_cli};
use redis_move_testbed::{docker, scenario};

struct Run {
    dir: tempfile::TempDir,
    name: String,
}

impl Run {
    fn new(name: &str, runbook: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runbook.yaml"), runbook).unwrap();
        Run {
            dir,
            name: name.to_owned(),
        }
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .args(["run", "runbook.yaml", "--yes", "--no-progress"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn runs(&self) -> PathBuf {
        self.dir
            .path()
            .join(".redis-move")
            .join(&self.name)
            .join("runs")
    }

    fn journal(&self) -> Option<serde_json::Value> {
        let mut ids: Vec<PathBuf> = std::fs::read_dir(self.runs())
            .ok()?
            .map(|e| e.unwrap().path())
            .collect();
        ids.sort();
        redis_move_testbed::workspace::read_journal(ids.last()?)
    }

    fn wait_for_step(&self, step: &str, status: &str) {
        let start = Instant::now();
        while self
            .journal()
            .is_none_or(|j| j["steps"][step]["status"] != status)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "step {step} never became {status}: {:?}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn report(&self) -> String {
        let mut ids: Vec<PathBuf> = std::fs::read_dir(self.runs())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        ids.sort();
        std::fs::read_to_string(ids.last().unwrap().join("report.md")).unwrap_or_default()
    }
}

fn finish(child: Child) -> (i32, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn fired_at(journal: &serde_json::Value, trigger: &str) -> jiff::Timestamp {
    let record = journal["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trigger"] == trigger)
        .unwrap_or_else(|| panic!("{trigger} did not fire: {journal}"));
    record["at"].as_str().unwrap().parse().unwrap()
}

/// A cutover of the topology's workers from source to target, a watch phase, and the
/// triggers given.
fn cutover_runbook(
    name: &str,
    topo: &Topology,
    watch: &str,
    triggers: &str,
    rollback: &str,
) -> String {
    format!(
        r#"version: 1
name: {name}
targets:
  local: {{ docker: {{}} }}
  source: {{ redis: {{ url: "{source}", timeout: 1s, connect_timeout: 1s }} }}
  target: {{ redis: {{ url: "{target}", timeout: 1s, connect_timeout: 1s }} }}
phases:
  - id: cutover
    rollback_targets: [source, local]
    steps:
      - id: switch
        docker.recreate: {{ target: local, name: "{workers}", env: {{ REDIS_URL: "{target_net}" }}, timeout: 1s }}
  - id: watch
    steps:
      - {{ id: stability, wait: {{ duration: {watch} }} }}
triggers:
{triggers}
rollback:
{rollback}"#,
        source = topo.source.host_url(),
        target = topo.target.host_url(),
        workers = topo.worker_pattern(),
        target_net = topo.target.network_url(),
    )
}

const NO_ROLLBACK_STEPS: &str = "  []\n";

fn worker_env(topo: &Topology) -> Vec<String> {
    topo.workers
        .iter()
        .map(|w| docker_cli(&["inspect", w, "--format", "{{json .Config.Env}}"]))
        .collect()
}

#[tokio::test]
async fn target_killed_during_the_watch_fires_within_the_interval_and_workers_return_to_the_source()
{
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = Topology::start(&engine, 3).await;
    Topology::enqueue(&topo.source, 0, 30);
    assert!(
        Topology::wait_done(&topo.source, 30, Duration::from_secs(20)),
        "workers consume from the source"
    );
    let run = Run::new(
        "fault-kill",
        &cutover_runbook(
            "fault-kill",
            &topo,
            "60s",
            "  - { id: target-unreachable, during: [watch], probe: { redis.ping: { target: target } }, every: 1s, timeout: 500ms, fire: { consecutive: 1 } }\n",
            "  - { id: back-on-source, redis.info: { target: source, field: clients.connected_clients }, until: \">= 3\", timeout: 20s }\n",
        ),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    // The workers now consume from the target.
    Topology::enqueue(&topo.target, 100, 120);
    assert!(
        Topology::wait_done(&topo.target, 20, Duration::from_secs(20)),
        "workers consume from the target after the cutover"
    );
    let killed = jiff::Timestamp::now();
    docker_cli(&["kill", &topo.target.name]);
    let (code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    let journal = run.journal().unwrap();
    let detection = fired_at(&journal, "target-unreachable").duration_since(killed);
    assert!(
        detection.as_secs_f64() <= 2.0,
        "detected after {detection:?} (interval 1s + 1s)"
    );
    assert_eq!(journal["steps"]["switch"]["status"], "compensated");
    for env in worker_env(&topo) {
        assert!(
            env.contains(&format!("REDIS_URL={}", topo.source.network_url())),
            "{env}"
        );
    }
    // Workers consume from the source again: asserted on the queue, not on logs.
    Topology::enqueue(&topo.source, 200, 230);
    assert!(
        Topology::wait_done(&topo.source, 60, Duration::from_secs(20)),
        "workers are back on the source"
    );
    let report = run.report();
    assert!(
        report.contains("Rollback triggers") && report.contains("target-unreachable"),
        "{report}"
    );
}

#[tokio::test]
async fn a_paused_target_hangs_the_probe_and_the_timeout_makes_it_fire() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = Topology::start(&engine, 1).await;
    let run = Run::new(
        "fault-pause",
        &cutover_runbook(
            "fault-pause",
            &topo,
            "60s",
            "  - { id: target-hangs, during: [watch], probe: { redis.ping: { target: target } }, every: 1s, timeout: 400ms, fire: { failing_for: 1s } }\n",
            NO_ROLLBACK_STEPS,
        ),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    let paused = jiff::Timestamp::now();
    docker_cli(&["pause", &topo.target.name]);
    let (code, stderr) = finish(child);
    let _ = std::process::Command::new("docker")
        .args(["unpause", &topo.target.name])
        .output();
    assert_eq!(code, 3, "{stderr}");
    let journal = run.journal().unwrap();
    let detection = fired_at(&journal, "target-hangs").duration_since(paused);
    assert!(detection.as_secs_f64() <= 3.0, "{detection:?}");
    let reason = journal["triggers"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 400ms"), "{reason}");
}

#[tokio::test]
async fn a_worker_logging_a_module_error_fires_the_log_trigger() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let mut topo = Topology::start(&engine, 2).await;
    let run = Run::new(
        "fault-module",
        &cutover_runbook(
            "fault-module",
            &topo,
            "60s",
            &format!(
                "  - {{ id: module-errors, during: [watch], probe: {{ docker.logs: {{ target: local, name: \"{}\", match: \"Cannot find module|ERR_MODULE_NOT_FOUND\", since: run }} }}, every: 1s, fire: {{ when: \"not empty\" }} }}\n",
                topo.worker_pattern()
            ),
            NO_ROLLBACK_STEPS,
        ),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    // A new worker whose image lost its modules.
    let broken = format!("{}-worker9", topo.prefix);
    topo.adopt(&broken);
    docker_cli(&[
        "run",
        "-d",
        "--name",
        &broken,
        "-e",
        "FAIL_MODULE=1",
        "-e",
        "REDIS_URL=redis://x:6379",
        &topo.worker_image.reference,
        "/usr/local/bin/worker",
    ]);
    let (code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    let journal = run.journal().unwrap();
    let reason = journal["triggers"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("Cannot find module"), "{reason}");
}

#[tokio::test]
async fn memory_threshold_increase_and_rate_triggers_fire_on_real_redis() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = Topology::start(&engine, 1).await;
    let triggers = "  - { id: memory, during: [watch], probe: { redis.info: { target: target, field: memory.used_memory } }, every: 500ms, fire: { when: \"> 3mb\" } }\n";
    let run = Run::new(
        "fault-memory",
        &cutover_runbook("fault-memory", &topo, "60s", triggers, NO_ROLLBACK_STEPS),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    for i in 0..4 {
        topo.target
            .cli(&["SETRANGE", &format!("big{i}"), "1048575", "x"]);
    }
    let (code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        run.journal().unwrap()["triggers"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("matches")
    );

    // Increase within a window, on a growing failed set; then growth against a baseline.
    let topo = Topology::start(&engine, 1).await;
    let triggers = "  - { id: failures, during: [watch], probe: { redis.command: { target: target, args: [ZCARD, \"jobs:failed\"], read_only: true } }, every: 300ms, fire: { increase: \"> 100\", within: 1min } }\n";
    let run = Run::new(
        "fault-increase",
        &cutover_runbook("fault-increase", &topo, "60s", triggers, NO_ROLLBACK_STEPS),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    std::thread::sleep(Duration::from_millis(700));
    let mut args = vec!["ZADD".to_owned(), "jobs:failed".to_owned()];
    for i in 0..150 {
        args.push(i.to_string());
        args.push(format!("f{i}"));
    }
    topo.target
        .cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        run.journal().unwrap()["triggers"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("grew by 150")
    );

    let topo = Topology::start(&engine, 1).await;
    let triggers = "  - { id: growth, during: [watch], probe: { redis.command: { target: target, args: [LLEN, \"stuck:wait\"], read_only: true } }, every: 200ms, fire: { rate: \"> 10x\", baseline_window: 2s } }\n";
    let run = Run::new(
        "fault-rate",
        &cutover_runbook("fault-rate", &topo, "60s", triggers, NO_ROLLBACK_STEPS),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    // Normal growth during the baseline window: 1 job every 200 ms.
    for _ in 0..12 {
        topo.target.cli(&["RPUSH", "stuck:wait", "j"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Then a flood.
    for _ in 0..20 {
        let mut args = vec!["RPUSH", "stuck:wait"];
        args.extend(std::iter::repeat_n("j", 200));
        topo.target.cli(&args);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        run.journal().unwrap()["triggers"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("the baseline")
    );
}

#[tokio::test]
async fn a_closed_window_does_not_fire_and_a_failing_rollback_exits_5() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = Topology::start(&engine, 1).await;
    // The trigger watches only the cutover; the target dies during the watch: no fire.
    let run = Run::new(
        "fault-window",
        &cutover_runbook(
            "fault-window",
            &topo,
            "3s",
            "  - { id: unreachable, during: [cutover], probe: { redis.ping: { target: target } }, every: 300ms, fire: { consecutive: 1 } }\n",
            NO_ROLLBACK_STEPS,
        ),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    docker_cli(&["kill", &topo.target.name]);
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        run.journal().unwrap()["triggers"]
            .as_array()
            .is_none_or(|t| t.is_empty())
    );

    // A rollback step that fails: exit 5, and the journal and report say so.
    let topo = Topology::start(&engine, 1).await;
    let run = Run::new(
        "fault-rollback",
        &cutover_runbook(
            "fault-rollback",
            &topo,
            "60s",
            "  - { id: unreachable, during: [watch], probe: { redis.ping: { target: target } }, every: 300ms, fire: { consecutive: 1 } }\n",
            "  - { id: verify-target, redis.ping: { target: target }, retry: { attempts: 2, interval: 100ms } }\n",
        ),
    );
    let child = run.spawn(&[]);
    run.wait_for_step("stability", "running");
    docker_cli(&["kill", &topo.target.name]);
    let (code, stderr) = finish(child);
    assert_eq!(code, 5, "{stderr}");
    let journal = run.journal().unwrap();
    assert_eq!(journal["status"], "rollback_failed");
    let failed: Vec<_> = journal["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{journal}");
    assert_eq!(
        journal["steps"]["switch"]["status"], "compensated",
        "the workers were still restored"
    );
    assert!(run.report().contains("ROLLBACK FAILED"));
}

#[tokio::test]
async fn an_unreachable_docker_engine_is_a_clear_resumable_failure() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let topo = Topology::start(&engine, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gone.sock");
    let runbook = format!(
        "version: 1\nname: fault-engine\ntargets:\n  remote: {{ docker: {{ host: \"unix://{}\" }} }}\nphases:\n  - id: p\n    steps:\n      - {{ id: list, docker.containers: {{ target: remote, name: \"{}\" }} }}\n",
        socket.display(),
        topo.worker_pattern()
    );
    let run = Run::new("fault-engine", &runbook);
    let (code, stderr) = finish(run.spawn(&[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("gone.sock"), "{stderr}");
    assert!(stderr.contains("resumable"), "{stderr}");
    assert_eq!(run.journal().unwrap()["steps"]["list"]["status"], "failed");
    // The engine comes back (the endpoint points at the real one): resume finishes.
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .current_dir(Path::new(run.dir.path()))
        .args(["resume"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn target_killed_after_a_replicated_cutover_loses_no_job() {
    let Some(engine) = docker::engine().await else {
        return;
    };
    let scenario = scenario::target_killed_during_the_watch(&engine, 3).await;
    assert_eq!(scenario.exit_code, 3, "{}", scenario.stderr);
    assert!(
        scenario.detection <= Duration::from_secs(2),
        "detected after {:?} (interval 1s + 1s)",
        scenario.detection
    );
    assert!(
        scenario.rollback < Duration::from_secs(120),
        "the workers never all consumed from the source again"
    );
    assert_eq!(
        scenario.lost, 0,
        "every job acknowledged (to the source, the target, the source again) is on the source"
    );
    assert!(scenario.acknowledged > 100, "the producer kept producing");
    eprintln!(
        "acknowledged {}, in flight {}, refused {}, unconfirmed {}",
        scenario.acknowledged, scenario.in_flight, scenario.rejected, scenario.unconfirmed
    );
    let journal = scenario.workspace.journal().unwrap();
    for step in ["switch", "promote", "stop-workers", "start-workers"] {
        assert_eq!(journal["steps"][step]["status"], "compensated", "{step}");
    }
    // The source is a primary again, the workers point at it.
    let role = scenario.topology.source.cli(&["ROLE"]);
    assert!(role.starts_with("master"), "{role}");
    for env in worker_env(&scenario.topology) {
        assert!(
            env.contains(&format!(
                "REDIS_URL={}",
                scenario.topology.source.network_url()
            )),
            "{env}"
        );
    }
}
