//! Redis Cluster targets end to end against a local cluster (3 primaries, 3 replicas,
//! cluster-mode redis-server processes joined by `redis-cli --cluster create`): a copy
//! from a standalone server into the cluster and its verification, the same with a
//! primary killed and slots moved while it runs, and the cluster's health checks.

use std::time::Duration;

use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::{LocalCluster, RedisServer, Workspace};

/// A runbook with a standalone source `src` and the cluster target `shards`.
fn runbook(name: &str, source: &RedisServer, cluster: &LocalCluster, steps: &str) -> String {
    format!(
        "version: 1\nname: {name}\ntargets:\n  src: {{ redis: {{ url: \"{}\" }} }}\n  shards:\n    redis:\n      url: \"{}\"\n      cluster: {{ settle: 60s }}\nphases:\n  - id: main\n    steps:\n{steps}",
        source.url(),
        cluster.url()
    )
}

#[test]
fn a_standalone_server_is_copied_into_a_cluster_and_verified() {
    let cluster = LocalCluster::start(3, 1);
    let source = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_bullmq(&mut src, 20, 100_000);
    dataset::load_every_type(&mut src, "t:");
    let before = snapshot(&mut src, "*");
    assert!(before.len() > 90_000, "{} keys", before.len());
    let ws = Workspace::new(&runbook(
        "into-cluster",
        &source,
        &cluster,
        "      - id: copy\n        redis.copy: { source: src, target: shards, chunk_above: 64kb }\n      - id: check\n        redis.verify: { source: src, target: shards }\n      - id: keys\n        redis.dbsize: { target: shards }\n        expect: \"== ${steps.copy.value.copied}\"\n",
    ));
    ws.run().success();
    assert_same(&before, &cluster.snapshot("*"), <[u8]>::to_vec, 1000);
    assert_eq!(ws.value_number("copy", "copied"), before.len() as f64);
    assert_eq!(ws.value_number("copy", "rechecked"), before.len() as f64);
    assert_eq!(ws.value_number("copy", "recopied"), 0.0);
    // Every shard holds a part.
    for node in cluster.primaries() {
        let keys: u64 = node.cli(&["DBSIZE"]).trim().parse().unwrap();
        assert!(keys > 10_000, "a primary holds only {keys} keys");
    }
    // No temporary key of the chunked copies is left behind.
    assert_eq!(cluster.snapshot("redis-move:*").len(), 0);
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

#[test]
fn a_copy_survives_a_failover_lost_writes_and_slots_moving() {
    let mut cluster = LocalCluster::start(3, 1);
    let source = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_bullmq(&mut src, 20, 150_000);
    let before = snapshot(&mut src, "*");
    let ws = Workspace::new(&runbook(
        "failover",
        &source,
        &cluster,
        "      - id: copy\n        redis.copy: { source: src, target: shards, batch: 500 }\n      - id: check\n        redis.verify: { source: src, target: shards }\n",
    ));
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    Workspace::wait_for("the copy to be under way", Duration::from_secs(120), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the faults"
        );
        cluster.dbsize() >= 10_000
    });
    // Frozen mid-copy: the primary of slot 0 dies and its replica takes over, having
    // lost some writes the primary had acknowledged (deleted here, to be certain).
    signal(child.id(), "-STOP");
    let killed = cluster.kill_primary_of_slot(0);
    let promoted = cluster.primary_of_slot(0);
    let mut lost = 0;
    let mut promoted_con = connect(&format!("redis://127.0.0.1:{promoted}"));
    for (key, _) in before.iter().take(20_000) {
        if redis_move_testbed::cluster::slot_of(key) <= 100 {
            let n: u64 = redis::cmd("DEL").arg(key).query(&mut promoted_con).unwrap();
            lost += n;
        }
    }
    assert!(lost > 0, "no copied key was in slots 0..=100");
    signal(child.id(), "-CONT");
    // While the copy goes on, 300 slots move between the two other primaries.
    let (from, to) = (
        cluster.primary_of_slot(6000),
        cluster.primary_of_slot(12000),
    );
    assert!(from != killed && to != killed && from != to);
    let reshard = cluster.reshard(from, to, 300);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the run failed:\n{stderr}\n{reshard}"
    );
    assert!(
        reshard.contains("Moving slot"),
        "the reshard moved nothing:\n{reshard}"
    );
    eprintln!(
        "{stderr}\nlost {lost}, recopied {}",
        ws.value_number("copy", "recopied")
    );
    cluster.wait_ok(Duration::from_secs(30));
    assert_same(&before, &cluster.snapshot("*"), <[u8]>::to_vec, 1000);
    assert!(
        ws.value_number("copy", "recopied") >= lost as f64,
        "{lost} keys were lost, {} copied again",
        ws.value_number("copy", "recopied")
    );
}
