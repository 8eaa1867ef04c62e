//! BullMQ keys renamed on the way, with the real BullMQ library (the Python `bullmq`
//! package): flows keep key names inside values (a child's `parentKey`, a parent's
//! `:dependencies`), so a renaming copy must rename those too. Standalone -> standalone
//! under `bullv2:`, and standalone -> a Redis Cluster under the hash-tagged `{bull}:`
//! that BullMQ needs there; every job then completes exactly once under real workers, and
//! the job scheduler is there.

use redis_move_testbed::python;
use redis_move_testbed::{LocalCluster, RedisServer, Workspace};

/// Builds the jobs on `url` with BullMQ; their ids per queue (JSON).
fn build(url: &str) -> String {
    let out = python::run(&python::fixture("bullmq_flows.py"), &["build", url]);
    out.lines().last().expect("the job ids").to_owned()
}

/// Runs BullMQ workers on `url` under `prefix` until the jobs of `ids` completed or
/// `seconds` passed: (each job's state, each queue's processed ids).
fn work(url: &str, prefix: &str, ids: &str, seconds: u32, cluster: bool) -> serde_json::Value {
    let seconds = seconds.to_string();
    let mut args = vec!["work", url, prefix, ids, &seconds];
    if cluster {
        args.push("cluster");
    }
    let out = python::run(&python::fixture("bullmq_flows.py"), &args);
    serde_json::from_str(out.lines().last().expect("a report")).expect("JSON")
}

/// Asserts every job of `ids` completed, each processed exactly once.
fn every_job_completed_once(report: &serde_json::Value, ids: &str) {
    let ids: serde_json::Value = serde_json::from_str(ids).unwrap();
    let mut expected = 0;
    for (queue, jobs) in ids.as_object().unwrap() {
        let processed: Vec<&str> = report["processed"][queue]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for job in jobs.as_array().unwrap() {
            let job = job.as_str().unwrap();
            expected += 1;
            assert_eq!(
                report["states"][format!("{queue}:{job}")],
                "completed",
                "{queue}:{job}: {report}"
            );
            assert_eq!(
                processed.iter().filter(|p| **p == job).count(),
                1,
                "{queue}:{job} processed {:?}",
                processed
            );
        }
    }
    assert!(expected >= 20, "{expected} jobs");
    // The job scheduler came along (its next job is not due).
    assert_eq!(report["schedulers"]["mail"], 1, "{report}");
}

fn runbook(name: &str, source: &RedisServer, target: &str, cluster: bool, steps: &str) -> String {
    format!(
        "version: 1\nname: {name}\ntargets:\n  src: {{ redis: {{ url: \"{}\" }} }}\n  dst: {{ redis: {{ url: \"{target}\", cluster: {cluster} }} }}\nphases:\n  - id: main\n    steps:\n{steps}",
        source.url()
    )
}

fn copy_steps(to: &str, references: &str) -> String {
    format!(
        "      - id: copy\n        redis.copy: {{ source: src, target: dst, match: \"bull:*\", rename: {{ from: \"bull:\", to: \"{to}:\" }}{references} }}\n      - id: check\n        redis.verify: {{ source: src, target: dst, match: \"bull:*\", rename: {{ from: \"bull:\", to: \"{to}:\" }}{references} }}\n"
    )
}

#[test]
fn a_renamed_flow_finishes_only_when_its_key_names_are_renamed_too() {
    if !python::has_module("bullmq") {
        return;
    }
    let source = RedisServer::start();
    let ids = build(&source.url());

    // By default the copy refuses, naming a key that holds key names.
    let refused = RedisServer::start();
    let ws = Workspace::new(&runbook(
        "refused",
        &source,
        &refused.url(),
        false,
        &copy_steps("bullv2", ""),
    ));
    let out = ws.run().failure().get_output().clone();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("references: rewrite"), "{text}");

    // `keep`: every count matches, and the flows never finish (the report).
    let kept = RedisServer::start();
    let ws = Workspace::new(&runbook(
        "kept",
        &source,
        &kept.url(),
        false,
        &copy_steps("bullv2", ", references: keep"),
    ));
    ws.run().success();
    let report = work(&kept.url(), "bullv2", &ids, 8, false);
    let parents: Vec<&serde_json::Value> = report["states"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("reports:"))
        .map(|(_, v)| v)
        .collect();
    assert!(
        parents.iter().all(|s| *s == "waiting-children"),
        "the flow parents finished with their children's key names unchanged: {report}"
    );

    // `rewrite`: verified, and every job completes once.
    let rewritten = RedisServer::start();
    let ws = Workspace::new(&runbook(
        "rewritten",
        &source,
        &rewritten.url(),
        false,
        &copy_steps("bullv2", ", references: rewrite"),
    ));
    ws.run().success();
    every_job_completed_once(&work(&rewritten.url(), "bullv2", &ids, 60, false), &ids);
}

#[test]
fn bullmq_moves_into_a_cluster_under_a_hash_tagged_prefix() {
    if !python::has_module("bullmq") {
        return;
    }
    let source = RedisServer::start();
    let ids = build(&source.url());
    let cluster = LocalCluster::start(3, 1);
    let ws = Workspace::new(&runbook(
        "into-cluster",
        &source,
        &cluster.url(),
        true,
        &copy_steps("{bull}", ", references: rewrite"),
    ));
    ws.run().success();
    every_job_completed_once(&work(&cluster.url(), "{bull}", &ids, 60, true), &ids);
}

#[test]
fn a_renaming_sync_refuses_bullmq_flows() {
    if !python::has_module("bullmq") {
        return;
    }
    let source = RedisServer::start();
    build(&source.url());
    let target = RedisServer::start();
    let ws = Workspace::new(&runbook(
        "sync",
        &source,
        &target.url(),
        false,
        "      - id: follow\n        redis.sync: { source: src, target: dst, match: \"bull:*\", rename: { from: \"bull:\", to: \"bullv2:\" } }\n      - id: stop\n        redis.sync_stop: { sync: follow }\n",
    ));
    let out = ws.run().failure().get_output().clone();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("a sync does not rename names inside values"),
        "{text}"
    );
}

/// `runbooks/queue-to-cluster.yaml` as shipped, end to end: BullMQ jobs made by the real
/// library on one server, moved into a 3+3 cluster under `{bull}` (gates and manual steps
/// approved with `--yes`), then worked off by BullMQ workers on the cluster.
#[test]
fn the_shipped_queue_to_cluster_runbook_moves_bullmq_into_a_cluster() {
    if !python::has_module("bullmq") {
        return;
    }
    let source = RedisServer::start();
    let ids = build(&source.url());
    let cluster = LocalCluster::start(3, 1);
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/queue-to-cluster.yaml"),
    )
    .unwrap();
    let ws = Workspace::new(&shipped)
        .with_env("SOURCE_REDIS_URL", &source.url())
        .with_env("CLUSTER_REDIS_URL", &cluster.url());
    ws.cmd(&["run", "runbook.yaml", "--yes", "--no-progress"])
        .assert()
        .success();
    assert_eq!(
        ws.value_number("verify", "checked"),
        ws.value_number("copy", "copied")
    );
    every_job_completed_once(&work(&cluster.url(), "{bull}", &ids, 60, true), &ids);
    // The old Redis is never modified.
    assert!(source.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap() > 20);
}
