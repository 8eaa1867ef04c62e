//! `redis.sync` end to end, as runbook steps against real redis-servers: a producer
//! writing all through a sync and its paused stop loses no acknowledged write; a run
//! killed with the sync in the background resumes it with a partial resync and
//! applies every write exactly once; a rollback deletes what the sync created and puts
//! back what it replaced, on one server with a rename.

use std::time::Duration;

use redis::Commands;
use redis_move_testbed::RedisServer;
use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::producer::Producer;
use redis_move_testbed::redis::older_redis_server;
use redis_move_testbed::workspace::Workspace;

fn listed(con: &mut redis::Connection, key: &str) -> Vec<String> {
    con.lrange(key, 0, -1).unwrap()
}

/// Every `job:*` key of the source is on the target as `step:*`, content, type and TTL.
fn assert_renamed(src: &mut redis::Connection, dst: &mut redis::Connection) {
    assert_same(
        &snapshot(src, "job:*"),
        &snapshot(dst, "step:*"),
        |k| [b"step:".as_slice(), &k[4..]].concat(),
        1000,
    );
}

/// Waits until the sync's full sync reached the target (the loaded `job:1`).
fn wait_for_the_sync(dst: &mut redis::Connection) {
    Workspace::wait_for("the sync to follow", Duration::from_secs(60), || {
        dst.exists::<_, bool>("step:1").unwrap_or(false)
    });
}

#[test]
fn a_paused_stop_loses_no_acknowledged_write_of_a_live_producer() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 2000);
    let _: () = src.set("other:key", "stays home").unwrap();
    let mut producer = Producer::start(vec![source.url()], "job:queue", "j", None);
    producer.wait_for_more(200, Duration::from_secs(20));
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-pause",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" } }
      - id: close
        redis.sync_status: { sync: sync }
        until: { lag_bytes: "< 1MiB", commands: "> 100" }
        timeout: 60s
      - id: stop
        redis.sync_stop: { sync: sync, pause: 3s }
"#,
    ));
    ws.run().success();
    // The source is fenced: the producer's writes are refused from the stop on.
    producer.wait_for_more(0, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(500));
    let acked = producer.stop();
    assert!(producer.rejected() > 0, "the fence refused no write");
    let mut dst = connect(&target.url());
    let moved = listed(&mut dst, "step:queue");
    let missing: Vec<&str> = acked
        .iter()
        .map(|a| a.id.as_str())
        .filter(|id| !moved.iter().any(|m| m == id))
        .collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert_eq!(
        moved,
        listed(&mut src, "job:queue"),
        "in the source's order"
    );
    assert_renamed(&mut src, &mut dst);
    assert!(!dst.exists::<_, bool>("other:key").unwrap());
    let commands = ws.value_number("stop", "commands");
    assert!(commands >= 200.0, "{commands}");
    // The marker is gone with the stop.
    let markers: Vec<String> = dst.keys("redis-move:*").unwrap();
    assert!(markers.is_empty(), "{markers:?}");
}

#[test]
fn a_run_killed_with_its_sync_running_resumes_it_exactly_once() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 1000);
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-resume",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" } }
      - id: meanwhile
        wait: { duration: 4s }
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let mut dst = connect(&target.url());
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    // Writes while the first process follows the source: counters catch a write
    // applied twice, a list catches one applied twice or lost.
    wait_for_the_sync(&mut dst);
    for n in 0..300 {
        let _: () = src.incr("job:counter", 1).unwrap();
        let _: () = src.rpush("job:log", n).unwrap();
    }
    Workspace::wait_for("the writes to arrive", Duration::from_secs(30), || {
        dst.get::<_, Option<i64>>("step:counter").unwrap_or(None) == Some(300)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // Written while no process follows: the source keeps them in its backlog.
    for n in 300..500 {
        let _: () = src.incr("job:counter", 1).unwrap();
        let _: () = src.rpush("job:log", n).unwrap();
    }
    let _: () = src.del("job:2").unwrap();
    let resumed = ws.cmd(&["resume", "--no-progress"]).assert().success();
    let stderr = String::from_utf8_lossy(&resumed.get_output().stderr).into_owned();
    assert!(stderr.contains("partial resync"), "{stderr}");
    assert_eq!(dst.get::<_, i64>("step:counter").unwrap(), 500);
    let log: Vec<i64> = dst.lrange("step:log", 0, -1).unwrap();
    assert_eq!(log, (0..500).collect::<Vec<_>>());
    assert!(!dst.exists::<_, bool>("step:2").unwrap());
    assert_renamed(&mut src, &mut dst);
}

#[test]
fn a_rollback_on_one_server_deletes_what_the_sync_created_and_restores_what_it_replaced() {
    let server = RedisServer::start();
    let mut con = connect(&server.url());
    dataset::load_job_keys(&mut con, 500);
    let _: () = con.set("job:taken", "new value").unwrap();
    let _: () = con.set("step:taken", "the target's own").unwrap();
    let _: () = con.set("step:unrelated", "untouched").unwrap();
    let before = snapshot(&mut con, "*");
    let ws = Workspace::new(&format!(
        "version: 1\nname: sync-rollback\ntargets:\n  redis: {{ redis: {{ url: \"{}\" }} }}\nphases:\n  - id: main\n    steps:\n{}",
        server.url(),
        r#"      - id: sync
        redis.sync: { source: redis, target: redis, match: "job:*", rename: { from: "job:", to: "step:" }, existing: replace }
      - id: writes
        redis.command: { target: redis, args: [SET, "job:late", "after the RDB"] }
        rollback: none
      - id: applied
        redis.sync_status: { sync: sync }
        until: { lag_bytes: "== 0", commands: ">= 1" }
        timeout: 30s
      - id: broken
        assert: { value: "1" }
        expect: "== 2"
        on_failure: rollback
      - id: stop
        redis.sync_stop: { sync: sync }
"#
    ));
    let out = ws.run().code(3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("rolled back"), "{stderr}");
    // Only the step's own write stays (`redis.command` has no inverse).
    let _: () = con.del("job:late").unwrap();
    assert_same(&before, &snapshot(&mut con, "*"), <[u8]>::to_vec, 1000);
}

#[test]
fn a_source_restarted_mid_sync_is_followed_again_from_where_it_was() {
    let mut source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 500);
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-restart",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" } }
      - id: meanwhile
        wait: { duration: 6s }
      - id: back
        redis.sync_status: { sync: sync }
        until: { state: running, lag_bytes: "== 0", commands: ">= 200" }
        timeout: 60s
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let mut dst = connect(&target.url());
    let child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    wait_for_the_sync(&mut dst);
    // Writes before, inside a transaction (applied as one), and after a restart.
    for n in 0..100 {
        let _: () = src.rpush("job:log", n).unwrap();
    }
    let _: () = redis::pipe()
        .atomic()
        .cmd("INCRBY")
        .arg("job:counter")
        .arg(7)
        .cmd("SET")
        .arg("other:key")
        .arg("stays home")
        .cmd("HSET")
        .arg("job:tx")
        .arg("f")
        .arg("v")
        .query::<()>(&mut src)
        .unwrap();
    source.restart();
    let mut src = connect(&source.url());
    for n in 100..200 {
        let _: () = src.rpush("job:log", n).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The restarted source kept its replication id (in its RDB): a partial resync.
    let journal = ws.journal().unwrap();
    assert_eq!(
        journal["steps"]["back"]["value"]["object"]["start"],
        serde_json::json!({"text": "partial"}),
        "{}",
        journal["steps"]["back"]["value"]
    );
    let log: Vec<i64> = dst.lrange("step:log", 0, -1).unwrap();
    assert_eq!(log, (0..200).collect::<Vec<_>>());
    assert_eq!(dst.get::<_, i64>("step:counter").unwrap(), 7);
    assert!(!dst.exists::<_, bool>("other:key").unwrap());
    assert_renamed(&mut src, &mut dst);
}

#[test]
fn a_key_already_in_the_destination_stops_the_sync_before_it_writes_anything() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 50);
    let mut dst = connect(&target.url());
    // Not a key of the source's: a later write of `job:999` would land on it.
    let _: () = dst.set("step:999", "the target's own").unwrap();
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-existing",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" } }
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("`step:999` already exists on the target"),
        "{stderr}"
    );
    let keys: Vec<String> = dst.keys("*").unwrap();
    assert_eq!(keys, ["step:999"]);
}

#[test]
fn a_key_moved_across_databases_stops_the_sync_and_says_why() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 20);
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-move",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" } }
      - id: move
        redis.command: { target: src, args: [MOVE, "job:1", "3"] }
        rollback: none
      - id: stopped
        redis.sync_status: { sync: sync }
        until: { state: failed }
        timeout: 30s
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let out = ws.run().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("ok stopped"), "{stderr}");
    assert!(
        stderr.contains("MOVE of `job:1` between db 0 and db 3"),
        "{stderr}"
    );
    // Nothing moved on the target: its key stays in the sync's db.
    let mut dst = connect(&target.url());
    assert!(dst.exists::<_, bool>("step:1").unwrap());
}

/// A write to the source, its reply ignored.
fn write(con: &mut redis::Connection, args: &[&str]) {
    let _: redis::Value = redis::cmd(args[0])
        .arg(&args[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

#[test]
fn an_older_target_gets_every_type_as_commands_and_every_write_after_it() {
    // Redis 7.0 to 6.2: the target refuses the source's DUMP payloads.
    let source = RedisServer::start();
    let target = RedisServer::start_binary(&older_redis_server(), None, &[]);
    let mut src = connect(&source.url());
    dataset::load_every_encoding(&mut src, "job:");
    dataset::load_job_keys(&mut src, 3000);
    let mut producer = Producer::start(vec![source.url()], "job:queue", "j", None);
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-older",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" } }
      - id: written
        redis.command: { target: src, args: [GET, "ctl:done"], read_only: true }
        until: "== yes"
        timeout: 120s
      - id: close
        redis.sync_status: { sync: sync }
        until: { lag_bytes: "< 1MiB" }
        timeout: 60s
      - id: stop
        redis.sync_stop: { sync: sync, pause: 3s }
"#,
    ));
    let mut dst = connect(&target.url());
    let child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    wait_for_the_sync(&mut dst);
    // Writes after the RDB, of every family, including what Redis 7 replicates in its
    // own dialect (XREADGROUP as XCLAIM and XGROUP SETID ... ENTRIESREAD) and RESTOREs
    // of 7.0 payloads.
    for n in 0..100 {
        write(
            &mut src,
            &[
                "XADD",
                "job:stream:busy",
                "*",
                "kind",
                "c",
                "n",
                &n.to_string(),
            ],
        );
    }
    write(
        &mut src,
        &[
            "XREADGROUP",
            "GROUP",
            "mailers",
            "alice",
            "COUNT",
            "10",
            "STREAMS",
            "job:stream:busy",
            ">",
        ],
    );
    write(
        &mut src,
        &[
            "XREADGROUP",
            "GROUP",
            "auditors",
            "frank",
            "NOACK",
            "COUNT",
            "3",
            "STREAMS",
            "job:stream:busy",
            ">",
        ],
    );
    write(
        &mut src,
        &[
            "XGROUP",
            "CREATECONSUMER",
            "job:stream:busy",
            "mailers",
            "gina",
        ],
    );
    write(
        &mut src,
        &[
            "XSETID",
            "job:stream:drained",
            "99999999999999-0",
            "ENTRIESADDED",
            "5",
            "MAXDELETEDID",
            "0-1",
        ],
    );
    write(
        &mut src,
        &[
            "XGROUP",
            "SETID",
            "job:stream:empty",
            "idle",
            "0",
            "ENTRIESREAD",
            "0",
        ],
    );
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("job:hash:big")
        .query(&mut src)
        .unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("job:restored")
        .arg(0)
        .arg(&payload)
        .query(&mut src)
        .unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("job:set:big")
        .query(&mut src)
        .unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("job:list:ints")
        .arg(4_102_444_800_000u64)
        .arg(&payload)
        .arg("REPLACE")
        .arg("ABSTTL")
        .query(&mut src)
        .unwrap();
    write(
        &mut src,
        &["LMPOP", "1", "job:list:big", "LEFT", "COUNT", "3"],
    );
    write(&mut src, &["GETEX", "job:str", "PX", "9000000"]);
    write(&mut src, &["COPY", "job:hash:small", "job:hash:copied"]);
    write(&mut src, &["ZADD", "job:zset:big", "-inf", "floor"]);
    write(&mut src, &["DEL", "job:str:big"]);
    write(&mut src, &["EXPIRE", "job:set:small", "5000", "NX"]);
    // Claims of a pending entry whose message is deleted: Redis 7 drops it from the
    // pending entries, and replicates that as an XCLAIM.
    for key in ["job:claimed:auto", "job:claimed:by-id"] {
        write(&mut src, &["XADD", key, "1-0", "a", "1"]);
        write(&mut src, &["XADD", key, "2-0", "a", "2"]);
        write(&mut src, &["XGROUP", "CREATE", key, "g", "0"]);
        write(
            &mut src,
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", key, ">"],
        );
        write(&mut src, &["XDEL", key, "1-0"]);
    }
    write(
        &mut src,
        &["XAUTOCLAIM", "job:claimed:auto", "g", "c2", "0", "0-0"],
    );
    write(
        &mut src,
        &["XCLAIM", "job:claimed:by-id", "g", "c3", "0", "1-0", "2-0"],
    );
    write(&mut src, &["SET", "ctl:done", "yes"]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked = producer.stop();
    let moved: std::collections::HashSet<String> =
        listed(&mut dst, "step:queue").into_iter().collect();
    assert!(
        acked.iter().all(|a| moved.contains(&a.id)),
        "acknowledged writes lost"
    );
    assert_renamed(&mut src, &mut dst);
    let restored: usize = dst.hlen("step:restored").unwrap();
    assert_eq!(restored, 5000);
}

#[test]
fn a_served_load_is_loaded_by_the_target_as_a_replica_and_the_writes_follow() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_every_encoding(&mut src, "job:");
    dataset::load_job_keys(&mut src, 3000);
    let _: () = src.set("other:key", "stays home").unwrap();
    let mut producer = Producer::start(vec![source.url()], "job:queue", "j", None);
    producer.wait_for_more(100, Duration::from_secs(20));
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-served",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" }, load: replication }
      - id: close
        redis.sync_status: { sync: sync }
        until: { lag_bytes: "< 1MiB", commands: "> 100" }
        timeout: 60s
      - id: stop
        redis.sync_stop: { sync: sync, pause: 3s }
"#,
    ));
    ws.run().success();
    let acked = producer.stop();
    let mut dst = connect(&target.url());
    let moved: std::collections::HashSet<String> =
        listed(&mut dst, "step:queue").into_iter().collect();
    let missing = acked.iter().filter(|a| !moved.contains(&a.id)).count();
    assert_eq!(missing, 0, "acknowledged writes lost");
    assert_renamed(&mut src, &mut dst);
    assert!(!dst.exists::<_, bool>("other:key").unwrap());
    // The target follows no one, and its setting is as it was.
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut dst)
        .unwrap();
    assert!(info.contains("role:master"), "{info}");
    let diskless: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("repl-diskless-load")
        .query(&mut dst)
        .unwrap();
    assert_eq!(diskless[1], "disabled");
    assert!(ws.value_number("sync", "keys") > 3000.0);
}

#[test]
fn a_served_load_into_a_target_with_keys_is_refused_before_it_changes_anything() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 100);
    let mut dst = connect(&target.url());
    let _: () = dst.set("theirs", "kept").unwrap();
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-served-busy",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", load: replication }
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let out = ws.run().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("load: restore"), "{stderr}");
    let keys: Vec<String> = dst.keys("*").unwrap();
    assert_eq!(keys, ["theirs"]);
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut dst)
        .unwrap();
    assert!(info.contains("role:master"), "{info}");
}

#[test]
fn a_served_load_told_an_address_that_leads_elsewhere_is_refused_before_the_target_follows_it() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 100);
    // The source's own address: a target told it would take the source's whole dataset.
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-served-elsewhere",
        source.port,
        target.port,
        &format!(
            r#"      - id: sync
        redis.sync: {{ source: src, target: dst, match: "job:*", rename: {{ from: "job:", to: "step:" }}, load: replication, announce: "127.0.0.1:{}" }}
      - id: stop
        redis.sync_stop: {{ sync: sync }}
"#,
            source.port
        ),
    ));
    let out = ws.run().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("does not lead to redis-move"), "{stderr}");
    let mut dst = connect(&target.url());
    let size: i64 = redis::cmd("DBSIZE").query(&mut dst).unwrap();
    assert_eq!(size, 0);
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut dst)
        .unwrap();
    assert!(info.contains("role:master"), "{info}");
    // Functions are a dataset too: a target with a library is not empty.
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=kept\nredis.register_function('kept', function() return 1 end)")
        .query(&mut dst)
        .unwrap();
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-served-functions",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" }, load: replication }
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let out = ws.run().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("function libraries"), "{stderr}");
    let kept: i64 = redis::cmd("FCALL")
        .arg("kept")
        .arg(0)
        .query(&mut dst)
        .unwrap();
    assert_eq!(kept, 1);
}

#[test]
fn a_run_killed_in_a_served_load_is_rolled_back_with_its_target_released() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = connect(&source.url());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-diskless-sync-delay")
        .arg(0)
        .query(&mut src)
        .unwrap();
    dataset::load_job_keys(&mut src, 100_000);
    let ws = Workspace::new(&Workspace::two_redis_runbook(
        "sync-served-killed",
        source.port,
        target.port,
        r#"      - id: sync
        redis.sync: { source: src, target: dst, match: "job:*", rename: { from: "job:", to: "step:" }, load: replication }
      - id: stop
        redis.sync_stop: { sync: sync }
"#,
    ));
    let mut dst = connect(&target.url());
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    // Killed while the target follows redis-move.
    Workspace::wait_for(
        "the target to follow redis-move",
        Duration::from_secs(60),
        || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut dst)
                .unwrap_or_default();
            info.contains("role:slave")
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // A completed rollback exits 3 (rolled back).
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut dst)
        .unwrap();
    assert!(info.contains("role:master"), "{info}");
    let diskless: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("repl-diskless-load")
        .query(&mut dst)
        .unwrap();
    assert_eq!(diskless[1], "disabled");
    let left: Vec<String> = dst.keys("step:*").unwrap();
    assert!(left.is_empty(), "{} keys left", left.len());
    // It takes writes again.
    let _: () = dst.set("after", "rollback").unwrap();
}
