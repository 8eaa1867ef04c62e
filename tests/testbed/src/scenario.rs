//! The rollback scenario of the fault-injection tests and of `scripts/bench-rollback`:
//! BullMQ-style workers consume from a source Redis while a producer (an application's
//! stand-in, following the primary) keeps enqueueing jobs through everything; a runbook
//! replicates the source to a target, stops the workers, promotes the target with
//! reverse replication (the source follows it, writers drained), moves the workers to
//! the target and watches; the target is killed; the unreachable trigger fires and the
//! rollback brings every worker back to the source.
//!
//! Measured: detection (kill -> trigger fired), rollback (fired -> every worker has
//! finished a job on the source again), jobs lost (acknowledged jobs that are not
//! queued, active or completed on the source at the end) and jobs in flight
//! (acknowledged while the target was down and the rollback ran).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::producer::Producer;
use crate::topology::{RedisNode, Topology, docker_cli};
use crate::workspace::Workspace;

/// The workers' queue.
const QUEUE: &str = "bull:jobs";

/// What one pass of the scenario measured.
pub struct RollbackScenario {
    /// The target was killed -> the trigger fired.
    pub detection: Duration,
    /// The trigger fired -> every worker finished a job on the source again.
    pub rollback: Duration,
    /// Acknowledged jobs that the source does not hold (queued, active or completed) at
    /// the end.
    pub lost: usize,
    /// Jobs acknowledged between the kill and the workers' return.
    pub in_flight: usize,
    /// Jobs acknowledged in all.
    pub acknowledged: usize,
    /// Writes refused (READONLY, NOREPLICAS, no connection) in all.
    pub rejected: u64,
    /// Writes the primary took that no replica confirmed before the answer (the
    /// asynchronous window a primary killed outright can lose): not counted as acknowledged.
    pub unconfirmed: u64,
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

/// Every job `node` holds: queued, active or completed.
fn held(node: &RedisNode) -> BTreeSet<String> {
    let mut jobs = BTreeSet::new();
    for args in [
        vec!["LRANGE", "bull:jobs:wait", "0", "-1"],
        vec!["LRANGE", "bull:jobs:active", "0", "-1"],
        vec!["ZRANGE", "bull:jobs:completed", "0", "-1"],
    ] {
        jobs.extend(node.cli(&args).lines().map(str::to_owned));
    }
    jobs
}

fn completed(node: &RedisNode) -> usize {
    node.cli(&["ZCARD", "bull:jobs:completed"])
        .parse()
        .unwrap_or(0)
}

/// Whether each of `workers` finished a job on `node` after `since` (ms since the epoch).
fn all_back(node: &RedisNode, workers: &[String], since: i64) -> bool {
    let last: Vec<String> = node
        .cli(&["HGETALL", "bull:jobs:workers"])
        .lines()
        .map(str::to_owned)
        .collect();
    workers.iter().all(|w| {
        last.chunks(2).any(|pair| {
            pair[0] == *w && pair.get(1).and_then(|t| t.parse::<i64>().ok()) > Some(since)
        })
    })
}

/// Runs the scenario once with `workers` workers.
pub async fn target_killed_during_the_watch(docker: &Docker, workers: usize) -> RollbackScenario {
    let topology = Topology::start_with_queue(docker, workers, QUEUE).await;
    let (source, target) = (topology.source.clone(), topology.target.clone());
    // The application confirms its writes on a replica (WAIT): the target is killed
    // outright, and Redis replicates asynchronously.
    let mut producer = Producer::start_with(
        vec![source.host_url(), target.host_url()],
        "bull:jobs:wait",
        "job-",
        Some(200),
        true,
    );
    producer.wait_for_more(50, Duration::from_secs(30));
    Workspace::wait_for(
        "workers consume from the source",
        Duration::from_secs(30),
        || completed(&source) >= 20,
    );
    let workspace = Workspace::new(&runbook(&topology));
    let child = workspace.spawn(&["run", "runbook.yaml", "--yes", "--no-progress"]);
    Workspace::wait_for("the watch", Duration::from_secs(120), || {
        workspace
            .journal()
            .is_some_and(|j| j["steps"]["stability"]["status"] == "running")
    });
    // The workers consume from the target now, the producer writes to it.
    let before = completed(&target);
    Workspace::wait_for(
        "workers consume from the target after the cutover",
        Duration::from_secs(30),
        || completed(&target) >= before + 50,
    );
    let killed = Instant::now();
    let killed_at = jiff::Timestamp::now();
    docker_cli(&["kill", &target.name]);
    let back_after = {
        let deadline = Duration::from_secs(120);
        loop {
            let journal = workspace.journal().unwrap_or_default();
            let fired: Option<jiff::Timestamp> = journal["triggers"]
                .as_array()
                .and_then(|t| t.iter().find(|r| r["trigger"] == "target-unreachable"))
                .and_then(|r| r["at"].as_str())
                .and_then(|at| at.parse().ok());
            if let Some(fired) = fired
                && all_back(&source, &topology.workers, fired.as_millisecond())
            {
                break Some(killed.elapsed());
            }
            if killed.elapsed() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let in_flight = producer
        .acked()
        .iter()
        .filter(|a| a.at > killed && back_after.is_none_or(|b| a.at <= killed + b))
        .count();
    let output = child.wait_with_output().expect("the run ends");
    let exit_code = output.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // A moment of normal work on the source, then no more writes.
    producer.wait_for_more(50, Duration::from_secs(60));
    let acked = producer.stop();
    let rejected = producer.rejected();
    let unconfirmed = producer.unconfirmed();
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
    // Every acknowledged job is on the source: queued, being worked on, or done.
    let holds = held(&source);
    let lost = acked.iter().filter(|a| !holds.contains(&a.id)).count();
    RollbackScenario {
        detection,
        rollback,
        lost,
        in_flight,
        acknowledged: acked.len(),
        rejected,
        unconfirmed,
        exit_code,
        stderr,
        workspace,
        topology,
    }
}
