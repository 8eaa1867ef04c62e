//! Redis Cluster targets end to end against a local cluster (3 primaries, 3 replicas,
//! cluster-mode redis-server processes joined by `redis-cli --cluster create`): a copy
//! from a standalone server into the cluster and its verification, the same with a
//! primary killed and slots moved while it runs, and the cluster's health checks.

use std::time::Duration;

use redis_move_testbed::dataset::{self, assert_same, connect, snapshot};
use redis_move_testbed::{LocalCluster, RedisServer, Workspace, signal};

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
    // A key the copy did not make stays through the rollback; the copy's keys go.
    let keep_port = cluster.primary_of_slot(redis_move_testbed::cluster::slot_of(b"kept:1"));
    let keeper = cluster.nodes.iter().find(|n| n.port == keep_port).unwrap();
    keeper.cli(&["SET", "kept:1", "mine"]);
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    assert_eq!(cluster.dbsize(), 1);
    assert_eq!(cluster.snapshot("kept:*").len(), 1);
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
    cluster.wait_ok(Duration::from_secs(30));
    assert_same(&before, &cluster.snapshot("*"), <[u8]>::to_vec, 1000);
    // The lost keys came back: from the ledger's resume when they were written after
    // its last checkpoint, from the check of every key otherwise.
    assert_eq!(ws.value_number("copy", "rechecked"), before.len() as f64);
}

#[test]
fn reads_and_writes_span_every_shard_and_the_cluster_check_fails_on_unserved_slots() {
    let cluster = LocalCluster::start(3, 1);
    let source = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_bullmq(&mut src, 4, 8_000);
    let total = snapshot(&mut src, "*").len();
    let queue1 = snapshot(&mut src, "bull:queue1:*").len();
    let queue2 = snapshot(&mut src, "bull:queue2:*").len();
    let ws = Workspace::new(&runbook(
        "reads",
        &source,
        &cluster,
        &format!(
            "      - id: healthy\n        redis.cluster_check: {{ target: shards }}\n        expect: {{ primaries: 3, replicas: 3, slots_ok: 16384 }}\n\
             \x20     - id: copy\n        redis.copy: {{ source: src, target: shards }}\n\
             \x20     - id: keys\n        redis.dbsize: {{ target: shards }}\n        expect: \"== {total}\"\n\
             \x20     - id: queue1\n        redis.scan_count: {{ target: shards, match: \"bull:queue1:*\" }}\n        expect: \"== {queue1}\"\n\
             \x20     - id: biggest\n        redis.dbsize: {{ target: shards, nodes: max }}\n        expect: \"< {total}\"\n\
             \x20     - id: smallest\n        redis.dbsize: {{ target: shards, nodes: min }}\n        expect: \"> 0\"\n\
             \x20     - id: per-node\n        redis.dbsize: {{ target: shards, nodes: each }}\n\
             \x20     - id: memory\n        redis.info: {{ target: shards, field: memory.used_memory, nodes: max }}\n        expect: \"< 1gb\"\n\
             \x20     - id: keys-info\n        redis.info: {{ target: shards, field: keyspace.db0.keys }}\n        expect: \"== {total}\"\n\
             \x20     - id: depth-before\n        redis.queues: {{ target: src }}\n\
             \x20     - id: depth\n        redis.queues: {{ target: shards }}\n        expect: {{ total: {{ depth: \"== ${{steps.depth-before.value.total.depth}}\" }} }}\n\
             \x20     - id: policy\n        redis.config_set: {{ target: shards, parameter: maxmemory-policy, value: noeviction }}\n\
             \x20     - id: drop-queue2\n        redis.delete: {{ target: shards, match: \"bull:queue2:*\", force: true }}\n        rollback: none\n        expect: {{ deleted: {queue2} }}\n\
             \x20     - id: left\n        redis.dbsize: {{ target: shards }}\n        expect: \"== {}\"\n",
            total - queue2
        ),
    ));
    // The plan's live check says what each target is and allows.
    let checked = ws
        .cmd(&["plan", "runbook.yaml", "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&checked.stdout);
    assert!(
        text.contains("(RDB 10, cluster of 3 shards, ")
            && text.contains("redis.cluster_check, redis.sync into it (a transaction per slot) and out of it (a stream per shard); refuses redis.replicate, redis.promote, redis.snapshot")
            && text.contains("(RDB 10, standalone); allows redis.copy, redis.verify, redis.delete, probes, redis.replicate"),
        "{text}"
    );
    ws.run().success();
    // Each primary's key count, by its address: the three make the whole.
    let journal = ws.journal().unwrap();
    let per_node = journal["steps"]["per-node"]["value"]["object"]
        .as_object()
        .unwrap()
        .clone();
    let primaries: Vec<String> = cluster
        .primaries()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut named: Vec<&String> = per_node.keys().collect();
    named.sort();
    let mut expected: Vec<&String> = primaries.iter().collect();
    expected.sort();
    assert_eq!(named, expected);
    let summed: f64 = per_node
        .values()
        .map(|v| v["number"].as_f64().unwrap())
        .sum();
    assert_eq!(summed, total as f64);
    // CONFIG SET reached every node, replicas too.
    for node in cluster.alive() {
        assert!(
            node.cli(&["CONFIG", "GET", "maxmemory-policy"])
                .contains("noeviction"),
            "port {}",
            node.port
        );
    }
    assert_eq!(cluster.snapshot("bull:queue2:*").len(), 0);
    assert_eq!(cluster.snapshot("bull:queue1:*").len(), queue1);

    // A cluster node reached as one server is refused before anything is written.
    let undeclared = Workspace::new(&format!(
        "version: 1\nname: undeclared\ntargets:\n  src: {{ redis: {{ url: \"{}\" }} }}\n  node: {{ redis: {{ url: \"{}\" }} }}\nphases:\n  - id: main\n    steps:\n      - id: copy\n        redis.copy: {{ source: src, target: node, match: \"bull:queue2:*\" }}\n",
        source.url(),
        cluster.url()
    ));
    let output = undeclared.run().failure().get_output().clone();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("declare it with `cluster: true`"), "{text}");
    assert_eq!(cluster.snapshot("bull:queue2:*").len(), 0);

    // Slots 100..=200 served by nobody: the check fails and says so.
    cluster.drop_slots(100, 200);
    let ws = Workspace::new(&runbook(
        "unserved",
        &source,
        &cluster,
        "      - id: healthy\n        redis.cluster_check: { target: shards }\n",
    ));
    let output = ws.run().failure().get_output().clone();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("101 of 16384 slots are not served"), "{text}");
}

#[test]
fn a_cluster_is_copied_back_to_one_server_while_a_source_primary_fails_over() {
    let mut cluster = LocalCluster::start(3, 1);
    let origin = RedisServer::start();
    let mut con = connect(&origin.url());
    dataset::load_bullmq(&mut con, 10, 120_000);
    dataset::load_every_type(&mut con, "t:");
    let before = snapshot(&mut con, "*");
    Workspace::new(&runbook(
        "into",
        &origin,
        &cluster,
        "      - id: copy\n        redis.copy: { source: src, target: shards }\n",
    ))
    .run()
    .success();
    let back = RedisServer::start();
    let ws = Workspace::new(&runbook(
        "back",
        &back,
        &cluster,
        "      - id: copy\n        redis.copy: { source: shards, target: src, batch: 500, chunk_above: 64kb }\n      - id: check\n        redis.verify: { source: shards, target: src }\n",
    ));
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    let mut dst = connect(&back.url());
    Workspace::wait_for("the copy to be under way", Duration::from_secs(120), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the failover"
        );
        redis::cmd("DBSIZE").query::<u64>(&mut dst).unwrap() >= 10_000
    });
    signal(child.id(), "-STOP");
    cluster.kill_primary_of_slot(16383);
    signal(child.id(), "-CONT");
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same(&before, &snapshot(&mut dst, "*"), <[u8]>::to_vec, 1000);
    assert_eq!(ws.value_number("copy", "recopied"), 0.0);
}

/// Runs `round(0)`, `round(1)`, ... on a thread until `stop` is set; how many rounds.
fn rounds_until(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mut round: impl FnMut(u64) + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n: u64 = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            round(n);
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        n
    })
}

/// Writes to `source` until `stop` is set: counters and lists over 64 keys (a write
/// applied twice or lost shows in them), and now and then an `MSET` and a `DEL` whose
/// keys are in different slots. How many rounds it wrote.
fn write_until(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let mut con = connect(&url);
    rounds_until(stop, move |n| {
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(format!("c:{}", n % 64))
            .ignore()
            .cmd("RPUSH")
            .arg(format!("l:{}", n % 64))
            .arg(n)
            .ignore();
        if n.is_multiple_of(50) {
            pipe.cmd("MSET")
                .arg(format!("m:{n}"))
                .arg(n)
                .arg(format!("m:{}", n + 1))
                .arg(n)
                .ignore();
            if n >= 100 {
                pipe.cmd("DEL")
                    .arg(format!("m:{}", n - 100))
                    .arg(format!("m:{}", n - 99))
                    .ignore();
            }
        }
        pipe.query::<()>(&mut con).unwrap();
    })
}

#[test]
fn a_sync_into_a_cluster_applies_every_write_once_through_a_failover_that_lost_writes() {
    let mut cluster = LocalCluster::start(3, 1);
    let source = RedisServer::start();
    let mut src = connect(&source.url());
    dataset::load_job_keys(&mut src, 3000);
    let ws = Workspace::new(&runbook(
        "sync-into",
        &source,
        &cluster,
        r#"      - id: sync
        redis.sync: { source: src, target: shards }
      - id: written
        redis.command: { target: shards, args: [GET, done], read_only: true }
        until: "== yes"
        timeout: 300s
      - id: stop
        redis.sync_stop: { sync: sync, pause: 5s }
      - id: check
        redis.verify: { source: src, target: shards }
"#,
    ));
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    Workspace::wait_for("the full sync", Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        cluster.dbsize() >= 3000
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_until(source.url(), stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    // The primary of c:0's slot acknowledges writes its frozen replica never gets, then
    // dies; the replica takes over without them.
    let slot = redis_move_testbed::cluster::slot_of(b"c:0");
    cluster.kill_primary_of_slot_losing_writes(slot, Duration::from_secs(2));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 500, "only {rounds} rounds written");
    let _: () = redis::cmd("SET")
        .arg("done")
        .arg("yes")
        .query(&mut src)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run failed:\n{stderr}");
    cluster.wait_ok(Duration::from_secs(30));
    // Every counter and list as on the source: nothing lost, nothing applied twice.
    let on_source = snapshot(&mut src, "*");
    let on_cluster = cluster.snapshot("*");
    for key in ["c:0", "l:0", "c:63", "l:63"] {
        assert_eq!(
            on_source.get(key.as_bytes()),
            on_cluster.get(key.as_bytes()),
            "{key}"
        );
    }
    assert_same(&on_source, &on_cluster, <[u8]>::to_vec, 1000);
    // Writes the dead primary had acknowledged were applied again from the stream.
    let reapplied = ws.value_number("stop", "reapplied");
    assert!(
        reapplied > 0.0,
        "no write was lost and applied again:\n{stderr}"
    );
    // No marker is left: neither the sync's nor any slot's.
    assert_eq!(cluster.snapshot("*redis-move*").len(), 0);
}

/// Writes `{tag}:kN = N` for N = 0, 1, ... into each of `tags`' slots of the cluster
/// whose nodes are at `nodes`, through the slot's primary (found again after an
/// error: a failover), until `stop` is set; how many rounds it wrote. A write is
/// repeated until acknowledged (SET is idempotent).
fn write_into_cluster(
    nodes: Vec<String>,
    tags: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let primary_of = move |slot: u16| {
        nodes
            .iter()
            .find_map(|n| redis_move_testbed::cluster::primary_of_slot_at(n, slot))
    };
    let mut connections: Vec<Option<redis::Connection>> = tags.iter().map(|_| None).collect();
    rounds_until(stop, move |n| {
        for (i, tag) in tags.iter().enumerate() {
            loop {
                if connections[i].is_none() {
                    let slot = redis_move_testbed::cluster::slot_of(tag.as_bytes());
                    connections[i] = primary_of(slot).and_then(|address| {
                        redis::Client::open(format!("redis://{address}"))
                            .and_then(|c| c.get_connection())
                            .ok()
                    });
                }
                let written = connections[i].as_mut().map(|con| {
                    redis::cmd("SET")
                        .arg(format!("{{{tag}}}:k{n}"))
                        .arg(n)
                        .query::<()>(con)
                });
                match written {
                    Some(Ok(())) => break,
                    _ => {
                        connections[i] = None;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        }
    })
}

#[test]
fn a_cluster_is_synced_into_one_server_shard_by_shard_through_a_source_failover() {
    let mut cluster = LocalCluster::start(3, 1);
    let target = RedisServer::start();
    let nodes = cluster.addresses();
    // A tag in each shard's first slot range.
    let tags: Vec<String> = "abcdefgh".chars().map(String::from).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_into_cluster(nodes.clone(), tags.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let ws = Workspace::new(&runbook(
        "sync-out",
        &target,
        &cluster,
        r#"      - id: sync
        redis.sync: { source: shards, target: src, existing: replace }
      - id: following
        redis.sync_status: { sync: sync }
        until: { state: running, commands: "> 500" }
        timeout: 120s
      - id: written
        redis.command: { target: src, args: [GET, "{a}:done"], read_only: true }
        until: "== yes"
        timeout: 300s
      - id: stop
        redis.sync_stop: { sync: sync, pause: 5s }
      - id: check
        redis.verify: { source: shards, target: src }
"#,
    ));
    // A key the one server had before, which a shard's sync replaces.
    let mut dst = connect(&target.url());
    let _: () = redis::cmd("SET")
        .arg("{b}:k0")
        .arg("before")
        .query(&mut dst)
        .unwrap();
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    Workspace::wait_for("the sync to follow", Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        ws.journal()
            .is_some_and(|j| j["steps"]["following"]["status"] == "succeeded")
    });
    // The primary of one shard dies; its replica takes over, and that shard's sync
    // follows it.
    cluster.kill_primary_of_slot(redis_move_testbed::cluster::slot_of(b"a"));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 200, "only {rounds} rounds written");
    let done_slot = redis_move_testbed::cluster::slot_of(b"a");
    let owner = cluster.primary_of_slot(done_slot);
    let mut owner_con = connect(&format!("redis://127.0.0.1:{owner}"));
    let _: () = redis::cmd("SET")
        .arg("{a}:done")
        .arg("yes")
        .query(&mut owner_con)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the run failed:\n{stderr}");
    // The one server holds what the cluster holds, every key of every shard (the
    // cluster itself may have lost writes its dead primary had acknowledged).
    let on_cluster = cluster.snapshot("*");
    assert!(on_cluster.len() > 1000, "{} keys", on_cluster.len());
    assert_same(&on_cluster, &snapshot(&mut dst, "*"), <[u8]>::to_vec, 1000);
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg("redis-move:*")
        .query(&mut dst)
        .unwrap();
    assert!(markers.is_empty(), "{markers:?}");
    assert_eq!(ws.value_number("sync", "replaced"), 1.0);
    // The rollback takes out exactly what the sync wrote, every shard's, and puts back
    // the value it replaced.
    let _: () = redis::cmd("SET")
        .arg("mine")
        .arg("kept")
        .query(&mut dst)
        .unwrap();
    ws.cmd(&["rollback", "--yes", "--no-progress"])
        .assert()
        .code(3);
    let mut left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut dst).unwrap();
    left.sort();
    assert_eq!(left, vec!["mine".to_owned(), "{b}:k0".to_owned()]);
    let before: String = redis::cmd("GET").arg("{b}:k0").query(&mut dst).unwrap();
    assert_eq!(before, "before");
}

#[test]
fn a_run_killed_while_it_syncs_a_cluster_resumes_every_shard_where_it_was() {
    let cluster = LocalCluster::start(3, 0);
    let target = RedisServer::start();
    let nodes = cluster.addresses();
    let tags: Vec<String> = "abcd".chars().map(String::from).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_into_cluster(nodes.clone(), tags.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let ws = Workspace::new(&runbook(
        "sync-out-resume",
        &target,
        &cluster,
        r#"      - id: sync
        redis.sync: { source: shards, target: src }
      - id: written
        redis.command: { target: src, args: [GET, "{c}:done"], read_only: true }
        until: "== yes"
        timeout: 300s
      - id: stop
        redis.sync_stop: { sync: sync }
      - id: check
        redis.verify: { source: shards, target: src }
"#,
    ));
    let mut child = ws.spawn(&["run", "runbook.yaml", "--no-progress"]);
    Workspace::wait_for("the sync to follow", Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        ws.journal()
            .is_some_and(|j| j["steps"]["sync"]["status"] == "succeeded")
    });
    std::thread::sleep(Duration::from_secs(1));
    child.kill().unwrap();
    child.wait().unwrap();
    // Written while no process follows: each shard keeps them in its backlog.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let owner = cluster.primary_of_slot(redis_move_testbed::cluster::slot_of(b"c"));
    let _: () = redis::cmd("SET")
        .arg("{c}:done")
        .arg("yes")
        .query(&mut connect(&format!("redis://127.0.0.1:{owner}")))
        .unwrap();
    let resumed = ws.cmd(&["resume", "--no-progress"]).assert().success();
    let stderr = String::from_utf8_lossy(&resumed.get_output().stderr).into_owned();
    assert!(stderr.contains("partial resync"), "{stderr}");
    let mut dst = connect(&target.url());
    assert_same(
        &cluster.snapshot("*"),
        &snapshot(&mut dst, "*"),
        <[u8]>::to_vec,
        1000,
    );
}
