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
