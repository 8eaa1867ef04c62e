//! Compatibility and capacity pre-flight against real servers of two versions (Debian's
//! redis-server 7.0, RDB 10, and a 6.2.14, RDB 9, built locally by the testbed): a pair
//! that cannot replicate the way the runbook needs stops the run before anything
//! changes, with a hint, and `plan --check` says so first.

use redis_move_testbed::redis::older_redis_server;
use redis_move_testbed::{RedisServer, Workspace};

fn cutover(source: &RedisServer, target: &RedisServer) -> String {
    Workspace::two_redis_runbook(
        "compat",
        source.port,
        target.port,
        "      - id: mark\n        redis.command: { target: src, args: [SET, touched, yes] }\n      - id: replicate\n        redis.replicate: { target: dst, source: src, timeout: 1min }\n      - id: promote\n        redis.promote: { target: dst, source: src, reverse: true, timeout: 1min }\n",
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_newer_target_cannot_feed_its_older_source_so_the_run_stops_before_any_change() {
    let source = RedisServer::start_binary(&older_redis_server(), None, &[]);
    let target = RedisServer::start();
    assert!(
        source
            .cli(&["INFO", "server"])
            .contains("redis_version:6.2.14")
    );
    let ws = Workspace::new(&cutover(&source, &target));
    // plan --check says it first.
    let plan = ws
        .cmd(&["plan", "runbook.yaml", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(1), "{text}{}", stderr(&plan));
    assert!(
        text.contains("cannot follow the new one") && text.contains("pin the target's image"),
        "{text}"
    );
    // The run stops in its pre-flight: nothing was done, not even the first step.
    let out = ws.run().code(1).get_output().clone();
    let err = stderr(&out);
    assert!(err.contains("pre-flight"), "{err}");
    assert!(err.contains("RDB 9") && err.contains("RDB 10"), "{err}");
    assert_eq!(source.cli(&["EXISTS", "touched"]).trim(), "0", "{err}");
    assert!(target.cli(&["INFO", "replication"]).contains("role:master"));
    let journal = ws.journal().unwrap();
    assert_eq!(journal["steps"]["promote"]["status"], "failed");
    assert_eq!(journal["steps"]["replicate"]["status"], "pending");
    assert_eq!(journal["steps"]["mark"]["status"], "pending");
}

#[test]
fn an_older_target_cannot_load_a_newer_source_and_a_matching_pair_passes() {
    let older = RedisServer::start_binary(&older_redis_server(), None, &[]);
    let newer = RedisServer::start();
    let ws = Workspace::new(&cutover(&newer, &older));
    let out = ws.run().code(1).get_output().clone();
    let err = stderr(&out);
    assert!(err.contains("cannot load the source's full sync"), "{err}");
    assert_eq!(newer.cli(&["EXISTS", "touched"]).trim(), "0");
    // Same version both ways: the pre-flight passes and says what it found.
    let other = RedisServer::start();
    let ws = Workspace::new(&cutover(&newer, &other));
    let plan = ws
        .cmd(&["plan", "runbook.yaml", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(text.contains("compatible: source redis 7.0"), "{text}");
}

#[tokio::test]
async fn a_target_in_a_container_has_its_hosts_memory_and_free_disk_checked() {
    let Some(engine) = redis_move_testbed::docker::engine().await else {
        return;
    };
    let topo = redis_move_testbed::topology::Topology::start(&engine, 0).await;
    let ws = Workspace::new(&format!(
        "version: 1\nname: capacity\ntargets:\n  engine: {{ docker: {{}} }}\n  src: {{ redis: {{ url: \"{}\" }} }}\n  dst: {{ redis: {{ url: \"{}\", container: {{ docker: engine, name: \"{}\" }} }} }}\nphases:\n  - id: main\n    steps:\n      - id: replicate\n        redis.replicate: {{ target: dst, source: src, source_address: \"{}:6379\", timeout: 1min }}\n",
        topo.source.host_url(),
        topo.target.host_url(),
        topo.target.name,
        topo.source.name
    ));
    let plan = ws
        .cmd(&["plan", "runbook.yaml", "--check", "--format", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(0), "{text}");
    // The run records every finding in its journal, before it changes anything.
    ws.run().success();
    let journal = ws.journal().unwrap();
    let found = journal["preflight"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(found.starts_with("compatible"), "{journal}");
    assert!(text.contains("compatible"), "{text}");
    // The findings line lists only what could not be told; with `df` in the image and
    // the engine answering, nothing is left untold.
    assert!(!found.contains("cannot tell"), "{found}");
    assert!(
        found.contains("Engine MemTotal") && found.contains(" free in `/`"),
        "{found}"
    );
}

/// A source that refuses replicas (a managed service's ACL: PSYNC and REPLCONF denied to
/// the user redis-move has) cannot be synced: `plan --check` says so and points to
/// `redis.copy`, and the run stops before writing anything.
#[test]
fn a_source_that_refuses_replicas_is_named_before_a_sync_and_points_to_the_copy() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    source.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-pass",
        "~*",
        "&*",
        "+@all",
        "-psync",
        "-sync",
        "-replconf",
    ]);
    source.cli(&["SET", "job:1", "x"]);
    let ws = Workspace::new(&format!(
        "version: 1\nname: compat-sync\ntargets:\n  src: {{ redis: {{ url: \"redis://app:app-pass@127.0.0.1:{}\" }} }}\n  dst: {{ redis: {{ url: \"redis://127.0.0.1:{}\" }} }}\nphases:\n  - id: main\n    steps:\n      - id: sync\n        redis.sync: {{ source: src, target: dst, match: \"job:*\" }}\n      - id: stop\n        redis.sync_stop: {{ sync: sync }}\n",
        source.port, target.port
    ));
    let plan = ws
        .cmd(&["plan", "runbook.yaml", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(1), "{text}{}", stderr(&plan));
    assert!(
        text.contains("refuses PSYNC or REPLCONF") && text.contains("use `redis.copy`"),
        "{text}"
    );
    assert!(!text.contains("app-pass"), "{text}");
    let out = ws.run().code(1).get_output().clone();
    let err = stderr(&out);
    assert!(
        err.contains("pre-flight") && err.contains("redis.copy"),
        "{err}"
    );
    assert_eq!(target.cli(&["DBSIZE"]).trim(), "0");
}
