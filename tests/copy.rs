//! `redis.copy` end to end against real redis-server processes: every type (small and
//! large encodings, binary names and values, TTLs, keys above the chunk threshold),
//! renaming, the existing-key policies, keys expiring during the copy, kill -9 mid-copy
//! then resume, and rollback deleting exactly the keys the copy created.

use std::time::Duration;

use redis::Commands;
use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::{RedisServer, Workspace};

fn runbook(name: &str, source: &RedisServer, target: &RedisServer, copy: &str) -> String {
    Workspace::two_redis_runbook(
        name,
        source.port,
        target.port,
        &format!("      - id: copy\n        redis.copy: {{ target: dst, source: src, {copy} }}\n"),
    )
}

/// A number of the copy step's value, as journaled.
fn counter(ws: &Workspace, field: &str) -> f64 {
    ws.value_number("copy", field)
}

#[test]
fn every_type_is_copied_identically_small_and_in_chunks() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_every_type(&mut src, "t:");
    let before = snapshot(&mut src, "*");
    assert_eq!(before.len(), dataset::EVERY_TYPE_KEYS);
    // 64 KB: the big string, hash, list, set and zset go in chunks.
    let ws = Workspace::new(&runbook(
        "types",
        &source,
        &target,
        "chunk_above: 64kb, batch: 4, connections: 2",
    ));
    ws.run().success();
    let mut dst = connect(&target.url());
    assert_same(&before, &snapshot(&mut dst, "*"), <[u8]>::to_vec, 1000);
    // The source is never modified.
    assert_same(&before, &snapshot(&mut src, "*"), <[u8]>::to_vec, 50);
    assert_eq!(counter(&ws, "copied"), dataset::EVERY_TYPE_KEYS as f64);
    assert_eq!(counter(&ws, "chunked"), 5.0);
    assert_eq!(counter(&ws, "skipped"), 0.0);
    // No temporary key is left behind.
    let leftovers: Vec<String> = dst.keys("redis-move:*").unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Calls of `command` (`memory|usage`) the server counted (INFO commandstats).
fn calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sizes_are_checked_key_by_key_only_when_a_key_could_be_above_the_limit() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_every_type(&mut src, "t:");
    let before = snapshot(&mut src, "*");
    // The whole source uses less than 1 GB: no key can be larger, nothing to check.
    let ws = Workspace::new(&runbook("below", &source, &target, "chunk_above: 1gb"));
    ws.run().success();
    assert_same(
        &before,
        &snapshot(&mut connect(&target.url()), "*"),
        <[u8]>::to_vec,
        1000,
    );
    assert_eq!(calls(&mut src, "memory|usage"), 0);
    assert_eq!(counter(&ws, "chunked"), 0.0);
    // Above the source's memory, every key is checked.
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut connect(&target.url()))
        .unwrap();
    let ws = Workspace::new(&runbook("above", &source, &target, "chunk_above: 64kb"));
    ws.run().success();
    assert_eq!(
        calls(&mut src, "memory|usage"),
        dataset::EVERY_TYPE_KEYS as u64
    );
    assert_eq!(counter(&ws, "chunked"), 5.0);
}

#[test]
fn an_empty_source_copies_nothing() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let ws = Workspace::new(&runbook("empty", &source, &target, "match: \"*\""));
    ws.run().success();
    assert_eq!(counter(&ws, "copied"), 0.0);
    assert_eq!(target.cli(&["DBSIZE"]).trim(), "0");
}

#[test]
fn rename_onto_the_same_server_then_roll_back() {
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    for i in 0..2500 {
        let _: () = con
            .hset_multiple(
                format!("job:{i}"),
                &[("state", "queued"), ("n", &i.to_string())],
            )
            .unwrap();
    }
    let _: () = con.set("step:existing", "keep me").unwrap();
    let _: () = con.set("unrelated", "untouched").unwrap();
    let jobs = snapshot(&mut con, "job:*");
    let ws = Workspace::new(&format!(
        r#"version: 1
name: rename
targets:
  r: {{ redis: {{ url: "redis://127.0.0.1:{p}" }} }}
phases:
  - id: move
    steps:
      - id: copy
        redis.copy: {{ target: r, source: r, match: "job:*", rename: {{ from: "job:", to: "step:" }}, batch: 100 }}
"#,
        p = server.port
    ));
    ws.run().success();
    let mut steps = snapshot(&mut con, "step:*");
    steps.remove(b"step:existing".as_slice());
    assert_same(
        &jobs,
        &steps,
        |k| [b"step:".as_slice(), &k[4..]].concat(),
        0,
    );
    assert_eq!(snapshot(&mut con, "job:*"), jobs, "the source keys stay");
    // Rolling back deletes exactly what the copy created.
    let run = ws.journal().unwrap()["run_id"].as_str().unwrap().to_owned();
    ws.cmd(&["rollback", &run, "--yes", "--no-progress"])
        .assert()
        .code(3);
    let left: Vec<String> = con.keys("step:*").unwrap();
    assert_eq!(left, vec!["step:existing".to_owned()]);
    let kept: String = con.get("step:existing").unwrap();
    assert_eq!(kept, "keep me");
    assert_eq!(snapshot(&mut con, "job:*"), jobs);
    let unrelated: String = con.get("unrelated").unwrap();
    assert_eq!(unrelated, "untouched");
}

/// Source `a`, `b`, `c`; the target already has `b` with another value.
fn collision() -> (RedisServer, RedisServer) {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    for key in ["a", "b", "c"] {
        let _: () = src.set(key, format!("from source {key}")).unwrap();
    }
    let mut dst = connect(&target.url());
    let _: () = dst.set_ex("b", "the target's own", 5000).unwrap();
    (source, target)
}

#[test]
fn existing_keys_are_skipped_by_default() {
    let (source, target) = collision();
    let ws = Workspace::new(&runbook("skip", &source, &target, "batch: 2"));
    ws.run().success();
    let mut dst = connect(&target.url());
    let b: String = dst.get("b").unwrap();
    assert_eq!(b, "the target's own");
    assert_eq!(
        (counter(&ws, "copied"), counter(&ws, "skipped")),
        (2.0, 1.0)
    );
    // Rollback removes a and c, never b.
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    let keys: Vec<String> = dst.keys("*").unwrap();
    assert_eq!(keys, vec!["b".to_owned()]);
}

#[test]
fn existing_keys_replaced_come_back_on_rollback() {
    let (source, target) = collision();
    let ws = Workspace::new(&runbook("replace", &source, &target, "existing: replace"));
    ws.run().success();
    let mut dst = connect(&target.url());
    let b: String = dst.get("b").unwrap();
    assert_eq!(b, "from source b");
    let ttl: i64 = dst.ttl("b").unwrap();
    assert_eq!(ttl, -1, "the source's b has no TTL");
    assert_eq!(counter(&ws, "replaced"), 1.0);
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    let b: String = dst.get("b").unwrap();
    assert_eq!(b, "the target's own");
    let ttl: i64 = dst.ttl("b").unwrap();
    assert!(
        (4000..=5000).contains(&ttl),
        "the old TTL comes back: {ttl}"
    );
    let keys: Vec<String> = dst.keys("*").unwrap();
    assert_eq!(keys, vec!["b".to_owned()]);
}

#[test]
fn existing_keys_fail_the_copy_when_asked() {
    let (source, target) = collision();
    let ws = Workspace::new(&runbook(
        "fail",
        &source,
        &target,
        "existing: fail, batch: 1",
    ));
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("`b` already exists on the target"),
        "{stderr}"
    );
    let mut dst = connect(&target.url());
    let b: String = dst.get("b").unwrap();
    assert_eq!(b, "the target's own");
}

/// Dual-write already wrote some step keys: the copy merges job keys into them (union,
/// the target winning where both have a value), verification with `contains` sees every
/// source member in the target, and the rollback puts the target keys back as they were.
#[test]
fn existing_keys_merged_by_type_verified_by_containment_and_rolled_back() {
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    // The job keys (source) ...
    let _: () = con.sadd("job:1:tags", &["a", "b"]).unwrap();
    let _: () = con
        .hset_multiple("job:1", &[("state", "queued"), ("n", "1")])
        .unwrap();
    let _: () = con
        .zadd_multiple("jobs:pending", &[(1, "x"), (2, "y")])
        .unwrap();
    let _: () = con.rpush("jobs:log", &["1", "2", "3"]).unwrap();
    let _: () = con.set("job:2", "old").unwrap();
    let _: () = con.hset_multiple("job:3", &[("state", "done")]).unwrap();
    // ... and what dual-write already wrote under the new names (and a TTL of its own).
    let _: () = con.sadd("step:1:tags", &["b", "c"]).unwrap();
    let _: () = con
        .hset_multiple("step:1", &[("state", "queued"), ("owner", "w7")])
        .unwrap();
    let _: () = con.expire("step:1", 3600).unwrap();
    let _: () = con
        .zadd_multiple("steps:pending", &[(5, "y"), (3, "z")])
        .unwrap();
    let _: () = con.rpush("steps:log", &["2", "4"]).unwrap();
    let _: () = con.set("step:2", "new").unwrap();
    let before = snapshot(&mut con, "step*");
    let ws = Workspace::new(&format!(
        r#"version: 1
name: merge
targets:
  r: {{ redis: {{ url: "redis://127.0.0.1:{p}" }} }}
phases:
  - id: move
    steps:
      - id: copy
        redis.copy: {{ target: r, source: r, match: "job*", rename: {{ regex: "job(.*)", replace: "step$1" }}, existing: merge, batch: 2 }}
      - id: verify
        redis.verify: {{ target: r, source: r, match: "job*", rename: {{ regex: "job(.*)", replace: "step$1" }}, contains: true }}
"#,
        p = server.port
    ));
    // Verification by containment passes: every source member and field is in the
    // target (step:2 keeps the target's string, as the merge decided).
    ws.run().success();
    let mut tags: Vec<String> = con.smembers("step:1:tags").unwrap();
    tags.sort();
    assert_eq!(tags, ["a", "b", "c"]);
    let step: std::collections::BTreeMap<String, String> = con.hgetall("step:1").unwrap();
    assert_eq!(step["n"], "1", "a field only the source had");
    assert_eq!(step["owner"], "w7", "a field only the target had");
    let ttl: i64 = con.ttl("step:1").unwrap();
    assert!(ttl > 3000, "the target keeps its TTL: {ttl}");
    let pending: Vec<(String, f64)> = con.zrange_withscores("steps:pending", 0, -1).unwrap();
    assert_eq!(
        pending,
        [
            ("x".to_owned(), 1.0),
            ("z".to_owned(), 3.0),
            ("y".to_owned(), 5.0)
        ],
        "the target's score wins"
    );
    let log: Vec<String> = con.lrange("steps:log", 0, -1).unwrap();
    assert_eq!(
        log,
        ["2", "4", "1", "3"],
        "missing elements appended in order"
    );
    let kept: String = con.get("step:2").unwrap();
    assert_eq!(kept, "new", "a string keeps the target's value");
    let created: std::collections::BTreeMap<String, String> = con.hgetall("step:3").unwrap();
    assert_eq!(created["state"], "done");
    assert_eq!(counter(&ws, "merged"), 4.0);
    assert_eq!(counter(&ws, "created"), 1.0);
    // Rollback: what the merge added is taken out, the created key deleted; what was
    // written since (dual-write goes on) stays.
    let _: () = con.sadd("step:1:tags", "written-after").unwrap();
    let _: () = con.hset("step:1", "f9", "after").unwrap();
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    let removed: i64 = con.srem("step:1:tags", "written-after").unwrap();
    assert_eq!(removed, 1, "a member added after the merge stays");
    let kept: Option<String> = con.hget("step:1", "f9").unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("after"),
        "a write made after the merge stays"
    );
    let _: () = con.hdel("step:1", "f9").unwrap();
    assert_same(&before, &snapshot(&mut con, "step*"), <[u8]>::to_vec, 1000);
}

/// A rename that leaves a key's name as it is (a regex must match the whole key) would
/// write the key onto itself on the same server: refused before anything is written.
#[test]
fn a_rename_that_changes_nothing_on_the_same_server_is_refused() {
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    let _: () = con.sadd("job:1:tags", &["a", "b"]).unwrap();
    let ws = Workspace::new(&format!(
        r#"version: 1
name: onto-itself
targets:
  r: {{ redis: {{ url: "redis://127.0.0.1:{p}" }} }}
phases:
  - id: move
    steps:
      - id: copy
        redis.copy: {{ target: r, source: r, match: "job*", rename: {{ regex: "^job", replace: "step" }}, existing: replace }}
"#,
        p = server.port
    ));
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("would write `job:1:tags` onto itself"),
        "{stderr}"
    );
    let keys: Vec<String> = con.keys("*").unwrap();
    assert_eq!(keys, ["job:1:tags"]);
    // New names that the pattern matches too would be read back and copied again.
    for i in 0..3000 {
        let _: () = con.set(format!("k{i}"), i).unwrap();
    }
    let ws = Workspace::new(&format!(
        r#"version: 1
name: read-back
targets:
  r: {{ redis: {{ url: "redis://127.0.0.1:{p}" }} }}
phases:
  - id: move
    steps:
      - id: copy
        redis.copy: {{ target: r, source: r, match: "*", rename: {{ from: "", to: "n:" }} }}
"#,
        p = server.port
    ));
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("would read back its own copies"),
        "{stderr}"
    );
    let copies: Vec<String> = con.keys("n:*").unwrap();
    assert!(
        copies.is_empty(),
        "nothing was written: {} copies",
        copies.len()
    );
}

#[test]
fn keys_expiring_during_the_copy_never_come_back_without_a_ttl() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("SET")
            .arg(format!("short:{i}"))
            .arg(i)
            .arg("PX")
            .arg(300 + i % 200)
            .ignore();
        pipe.cmd("SET").arg(format!("long:{i}")).arg(i).ignore();
    }
    let () = pipe.query(&mut src).unwrap();
    let ws = Workspace::new(&runbook(
        "expiring",
        &source,
        &target,
        "batch: 500, connections: 1",
    ));
    ws.run().success();
    std::thread::sleep(Duration::from_millis(600));
    let mut dst = connect(&target.url());
    let short: Vec<String> = dst.keys("short:*").unwrap();
    assert!(
        short.is_empty(),
        "{} expiring keys outlived their TTL",
        short.len()
    );
    let long: usize = dst.keys::<_, Vec<String>>("long:*").unwrap().len();
    assert_eq!(long, 20_000);
    // Keys that expired before SCAN reached them are not seen at all; the others were
    // copied with what was left of their TTL, or counted as vanished.
    let copied = counter(&ws, "copied");
    assert!((20_000.0..=40_000.0).contains(&copied), "{copied}");
}

#[test]
fn a_copy_killed_mid_way_resumes_to_an_identical_target_and_rolls_back_exactly() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_bullmq(&mut src, 4, 120_000);
    let before = snapshot(&mut src, "*");
    let mut dst = connect(&target.url());
    let _: () = dst.set("pre-existing", "stays").unwrap();
    let ws = Workspace::new(&runbook(
        "resume",
        &source,
        &target,
        "batch: 200, connections: 2",
    ));
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    // Kill -9 once the ledger has a checkpoint and keys are on the target.
    Workspace::wait_for("the copy to be under way", Duration::from_secs(60), || {
        let copied: u64 = redis::cmd("DBSIZE").query(&mut dst).unwrap_or(0);
        copied > 20_000
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let copied_before: u64 = redis::cmd("DBSIZE").query(&mut dst).unwrap();
    assert!(
        (copied_before as usize) < before.len(),
        "the copy finished before it was killed; make the dataset larger"
    );
    assert!(ws.run_dir().unwrap().join("copy-copy.ledger").exists());
    ws.cmd(&["resume", "--no-progress"]).assert().success();
    let mut after = snapshot(&mut dst, "*");
    assert_eq!(
        after.remove(b"pre-existing".as_slice()).map(|s| s.value),
        Some(vec![b"stays".to_vec()])
    );
    assert_same(&before, &after, <[u8]>::to_vec, 1000);
    assert_eq!(counter(&ws, "copied"), before.len() as f64);
    assert_eq!(
        counter(&ws, "skipped"),
        0.0,
        "keys the killed run created are its own"
    );
    // Rollback deletes every key the copy created, across both processes, and only them.
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    let keys: Vec<String> = dst.keys("*").unwrap();
    assert_eq!(keys, vec!["pre-existing".to_owned()]);
    assert_eq!(snapshot(&mut src, "*").len(), before.len());
}

/// Stream entries delivered to consumers and not acknowledged, as XPENDING lists them:
/// (id, consumer, delivery count) and the idle time apart.
fn pending(con: &mut redis::Connection, key: &str, group: &str) -> Vec<(String, String, i64, i64)> {
    let reply: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query(con)
        .unwrap();
    reply
        .into_iter()
        .map(|(id, consumer, idle, count)| (id, consumer, count, idle))
        .collect()
}

#[test]
fn streams_keep_their_consumer_groups_and_pending_entries_and_verify_sees_them() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    // A big stream (copied in chunks above 64kb) and a small one (DUMP/RESTORE), each
    // with a consumer group whose consumers hold pending entries, some delivered twice.
    for (key, entries, read) in [("q:big", 20_000, 700), ("q:small", 50, 10)] {
        let mut pipe = redis::pipe();
        for i in 0..entries {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("job")
                .arg(i)
                .arg("payload")
                .arg("x".repeat(16))
                .ignore();
        }
        pipe.query::<()>(&mut src).unwrap();
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg("workers")
            .arg("0")
            .query(&mut src)
            .unwrap();
        for consumer in ["w1", "w2"] {
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg(consumer)
                .arg("COUNT")
                .arg(read / 2)
                .arg("STREAMS")
                .arg(key)
                .arg(">")
                .query(&mut src)
                .unwrap();
        }
        // A consumer with nothing pending, and entries handed over (delivered twice).
        let _: () = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(key)
            .arg("workers")
            .arg("idle-one")
            .query(&mut src)
            .unwrap();
        let _: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg("workers")
            .arg("w2")
            .arg(0)
            .arg("0")
            .arg("COUNT")
            .arg(3)
            .query(&mut src)
            .unwrap();
    }
    let before_big = pending(&mut src, "q:big", "workers");
    let before_small = pending(&mut src, "q:small", "workers");
    assert_eq!(before_big.len(), 700);
    assert!(
        before_big.iter().any(|p| p.2 == 2),
        "some entries were delivered twice"
    );
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "streams",
        source.port,
        target.port,
        "      - id: copy\n        redis.copy: { target: dst, source: src, match: \"q:*\", chunk_above: 64kb }\n      - id: check\n        redis.verify: { target: dst, source: src, match: \"q:*\" }\n",
    ));
    ws.run().success();
    assert_eq!(
        ws.value_number("copy", "chunked"),
        1.0,
        "the big stream went in chunks"
    );
    assert_eq!(ws.value_number("check", "mismatched"), 0.0);
    let mut dst = connect(&target.url());
    for (key, before) in [("q:big", &before_big), ("q:small", &before_small)] {
        let after = pending(&mut dst, key, "workers");
        assert_eq!(after.len(), before.len(), "{key}");
        for (a, b) in after.iter().zip(before.iter()) {
            assert_eq!(
                (&a.0, &a.1, a.2),
                (&b.0, &b.1, b.2),
                "{key}: id, owner, deliveries"
            );
            assert!((a.3 - b.3).abs() < 5_000, "{key}: idle {} vs {}", a.3, b.3);
        }
        let consumers: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg("workers")
            .query(&mut dst)
            .unwrap();
        assert_eq!(consumers.len(), 3, "{key}: w1, w2 and idle-one");
    }
    // One pending entry lost on the target: the verification says so.
    let lost = &before_big[0].0;
    let _: i64 = redis::cmd("XACK")
        .arg("q:big")
        .arg("workers")
        .arg(lost)
        .query(&mut dst)
        .unwrap();
    let again = Workspace::new(&Workspace::two_redis_runbook(
        "streams-again",
        source.port,
        target.port,
        "      - id: check\n        redis.verify: { target: dst, source: src, match: \"q:*\" }\n",
    ));
    let out = again.run().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("699 pending entries, expected 700"),
        "{stderr}"
    );
}
