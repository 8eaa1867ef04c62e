//! The rollback scenario of the fault-injection tests and of `scripts/bench-rollback`:
//! workers consume from a source Redis; a runbook replicates the source to a target,
//! stops the workers, promotes the target with reverse replication (the source follows
//! it), moves the workers to the target and watches; jobs are enqueued on the target;
//! the target is killed; the unreachable trigger fires and the rollback brings the
//! workers back to the source, which holds every job.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::topology::{RedisNode, Topology, docker_cli};
use crate::workspace::Workspace;

/// What one pass of the scenario measured.
pub struct RollbackScenario {
    /// The target was killed -> the trigger fired.
    pub detection: Duration,
    /// The trigger fired -> a job enqueued on the source was done again.
    pub rollback: Duration,
    /// Jobs enqueued (on the source before, on the target after the cutover) that the
    /// source does not hold as done at the end.
    pub lost: usize,
    /// The run's exit code.
    pub exit_code: i32,
    /// Its stderr.
    pub stderr: String,
    /// The workspace (journal, report).
    pub workspace: Workspace,
    /// The topology, still up.
    pub topology: Topology,
}

fn runbook(topo: &Topology) -> String {
    let pattern = topo.worker_pattern();
    format!(
        r#"version: 1
name: rollback-scenario
targets:
  local: {{ docker: {{}} }}
  source: {{ redis: {{ url: "{source}", timeout: 1s, connect_timeout: 1s }} }}
  target: {{ redis: {{ url: "{target}", timeout: 1s, connect_timeout: 1s }} }}
phases:
  - id: sync
    steps:
      - id: replicate
        redis.replicate: {{ target: target, source: source, source_address: "{source_name}:6379", timeout: 1min }}
  - id: cutover
    rollback_targets: [source, local]
    steps:
      - {{ id: stop-workers, docker.stop: {{ target: local, name: "{pattern}", timeout: 1s }} }}
      - id: promote
        redis.promote: {{ target: target, source: source, reverse: true, target_address: "{target_name}:6379", timeout: 30s }}
      - id: switch
        docker.recreate: {{ target: local, name: "{pattern}", env: {{ REDIS_URL: "{target_net}" }}, timeout: 1s }}
      - {{ id: start-workers, docker.start: {{ target: local, name: "{pattern}" }} }}
  - id: watch
    steps:
      - {{ id: stability, wait: {{ duration: 2min }} }}
triggers:
  - {{ id: target-unreachable, during: [watch], probe: {{ redis.ping: {{ target: target }} }}, every: 1s, timeout: 500ms, fire: {{ consecutive: 1 }} }}
rollback: []
"#,
        source = topo.source.host_url(),
        target = topo.target.host_url(),
        source_name = topo.source.name,
        target_name = topo.target.name,
        target_net = topo.target.network_url(),
    )
}

fn done_set(node: &RedisNode) -> BTreeSet<String> {
    node.cli(&["SMEMBERS", "jobs:done"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the scenario once with `workers` workers.
pub async fn target_killed_during_the_watch(docker: &Docker, workers: usize) -> RollbackScenario {
    let topology = Topology::start(docker, workers).await;
    let (source, target) = (topology.source.clone(), topology.target.clone());
    Topology::enqueue(&source, 0, 30);
    assert!(
        Topology::wait_done(&source, 30, Duration::from_secs(30)),
        "workers consume from the source"
    );
    let workspace = Workspace::new(&runbook(&topology));
    let child = workspace.spawn(&["run", "runbook.yaml", "--yes", "--no-progress"]);
    Workspace::wait_for("the watch", Duration::from_secs(120), || {
        workspace
            .journal()
            .is_some_and(|j| j["steps"]["stability"]["status"] == "running")
    });
    // The workers now consume from the target (which holds the source's 30 done jobs).
    Topology::enqueue(&target, 100, 130);
    assert!(
        Topology::wait_done(&target, 60, Duration::from_secs(30)),
        "workers consume from the target after the cutover"
    );
    let killed = Instant::now();
    let killed_at = jiff::Timestamp::now();
    docker_cli(&["kill", &target.name]);
    // Keep offering a job to the source until a worker does one: the workers are back.
    let back = Arc::new(AtomicBool::new(false));
    let prober = {
        let back = back.clone();
        let source = source.clone();
        std::thread::spawn(move || {
            let baseline = done_set(&source).len();
            let mut n = 0;
            while !back.load(Ordering::Relaxed) && killed.elapsed() < Duration::from_secs(90) {
                // Refused (READONLY) while the source is still a replica.
                source.cli(&["RPUSH", "jobs:wait", &format!("probe-{n}")]);
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
                let done = done_set(&source);
                if done.len() > baseline && done.iter().any(|j| j.starts_with("probe-")) {
                    return Some(killed.elapsed());
                }
            }
            None
        })
    };
    let output = child.wait_with_output().expect("the run ends");
    let exit_code = output.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let back_after = prober.join().expect("the prober");
    back.store(true, Ordering::Relaxed);
    let journal = workspace.journal().unwrap_or_default();
    let fired_at: Option<jiff::Timestamp> = journal["triggers"]
        .as_array()
        .and_then(|t| t.iter().find(|r| r["trigger"] == "target-unreachable"))
        .and_then(|r| r["at"].as_str())
        .and_then(|at| at.parse().ok());
    let detection = fired_at
        .map(|at| at.duration_since(killed_at).unsigned_abs())
        .unwrap_or(Duration::MAX);
    let rollback = match back_after {
        Some(back) => back.saturating_sub(detection),
        None => Duration::MAX,
    };
    // Every job enqueued before the kill must end up done on the source.
    let expected: BTreeSet<String> = (0..30)
        .chain(100..130)
        .map(|i| format!("job-{i}"))
        .collect();
    let start = Instant::now();
    let mut lost = expected.len();
    while start.elapsed() < Duration::from_secs(20) {
        let done = done_set(&source);
        lost = expected.difference(&done).count();
        if lost == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    RollbackScenario {
        detection,
        rollback,
        lost,
        exit_code,
        stderr,
        workspace,
        topology,
    }
}
