//! redis-move as a replica of real servers. The keys of an RDB stream (received over the
//! replication protocol), each written to another real server with RESTORE from its
//! re-wrapped value bytes: every type and encoding (small and big: listpack, ziplist,
//! intset, quicklist, skiplist, hash table, LZF strings, streams with consumer groups and
//! pending entries), several databases, expiries to the millisecond; from Redis 7.0
//! (RDB 10) and 6.2 (RDB 9). And a `PSYNC` link: the RDB of a full sync, then every
//! write after it in order, the offset acknowledged as the server sees it, and a partial
//! resync from a saved id and offset.

use std::io::BufReader;

use redis_move::actions::copy::KeyRename;
use redis_move::actions::sync::background::source_offset;
use redis_move::actions::sync::{Sync, SyncPlan, SyncRule};
use redis_move::backend::command_keys::{CommandKeys, KeysError};
use redis_move::backend::rdb::entries::RdbReader;
use redis_move::backend::rdb::receive;
use redis_move::backend::rdb::replica::{ReplicaLink, SyncStart};
use redis_move::backend::redis::RedisBackend;
use redis_move::backend::redis::RedisEndpoint;
use redis_move::runbook::action::SyncExisting;
use redis_move_testbed::RedisServer;
use redis_move_testbed::dataset::{self, load_every_type};
use redis_move_testbed::redis::{older_redis_server, redis_server_binary};

/// An absolute expiry far away, with milliseconds, that must arrive exactly.
const EXPIRES_AT_MS: i64 = 4_102_444_800_123;

fn digest(con: &mut redis::Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(con).unwrap()
}

fn load(con: &mut redis::Connection) {
    load_every_type(con, "t:");
    // A pending entry and a consumer in the stream's group.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP", "workers", "w1", "COUNT", "3", "STREAMS", "t:stream", ">",
        ])
        .query(con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("t:int")
        .arg("12345")
        .query(con)
        .unwrap();
    let _: () = redis::cmd("SET").arg("t:neg").arg("-7").query(con).unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg("t:list:small")
        .arg(EXPIRES_AT_MS)
        .query(con)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("in-db-3")
        .arg("three")
        .query(con)
        .unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg("in-db-3")
        .arg(EXPIRES_AT_MS + 1)
        .query(con)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(con).unwrap();
}

async fn moves_every_key(source: &RedisServer, compare_encodings: bool) {
    let target = RedisServer::start_with(None, &["--enable-debug-command", "local"]);
    let mut from = dataset::connect(&source.url());
    let mut to = dataset::connect(&target.url());
    load(&mut from);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.rdb");
    receive(&RedisEndpoint::new(source.url()), &file, &|_, _| {})
        .await
        .expect("the RDB stream");
    let reader = RdbReader::new(BufReader::new(std::fs::File::open(&file).unwrap())).unwrap();
    let version = reader.version();
    let mut restored = 0;
    let mut db = 0;
    for entry in reader {
        let entry = entry.expect("an entry");
        if entry.db != db {
            db = entry.db;
            let _: () = redis::cmd("SELECT").arg(db).query(&mut to).unwrap();
        }
        let _: () = redis::cmd("RESTORE")
            .arg(&entry.key)
            .arg(entry.expires_at_ms.unwrap_or(0))
            .arg(entry.dump_payload(version))
            .arg("ABSTTL")
            .query(&mut to)
            .unwrap_or_else(|e| panic!("RESTORE {:?}: {e}", String::from_utf8_lossy(&entry.key)));
        restored += 1;
    }
    let _: () = redis::cmd("SELECT").arg(0).query(&mut to).unwrap();
    let keys: usize = redis::cmd("DBSIZE").query(&mut from).unwrap();
    assert_eq!(restored, keys + 1, "every key of db 0 and the one of db 3");
    assert_eq!(digest(&mut from), digest(&mut to), "the datasets differ");
    // Expiries to the millisecond, in both databases.
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg("t:list:small")
        .query(&mut to)
        .unwrap();
    assert_eq!(at, EXPIRES_AT_MS);
    let _: () = redis::cmd("SELECT").arg(3).query(&mut to).unwrap();
    let at: i64 = redis::cmd("PEXPIRETIME")
        .arg("in-db-3")
        .query(&mut to)
        .unwrap();
    assert_eq!(at, EXPIRES_AT_MS + 1);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut to).unwrap();
    // The consumer group kept its pending entries and consumer.
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&["t:stream", "workers"])
        .query(&mut to)
        .unwrap();
    match pending {
        redis::Value::Array(items) => assert_eq!(items.first(), Some(&redis::Value::Int(3))),
        other => panic!("XPENDING: {other:?}"),
    }
    if compare_encodings {
        let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut from).unwrap();
        for key in all {
            let encoding = |con: &mut redis::Connection| -> String {
                redis::cmd("OBJECT")
                    .arg("ENCODING")
                    .arg(&key)
                    .query(con)
                    .unwrap()
            };
            assert_eq!(
                encoding(&mut from),
                encoding(&mut to),
                "{}",
                String::from_utf8_lossy(&key)
            );
        }
    }
}

#[tokio::test]
async fn every_key_of_a_redis_7_rdb_restores_from_its_own_bytes() {
    let _ = redis_server_binary();
    let source = RedisServer::start_with(None, &["--enable-debug-command", "local"]);
    moves_every_key(&source, true).await;
}

#[tokio::test]
async fn every_key_of_a_redis_6_2_rdb_restores_into_redis_7() {
    let source = RedisServer::start_binary(&older_redis_server(), None, &[]);
    moves_every_key(&source, false).await;
}

/// The commands of the stream until `last` arrives (PINGs left out).
async fn commands_until(link: &mut ReplicaLink, last: &[u8]) -> Vec<Vec<String>> {
    let mut seen = Vec::new();
    loop {
        let command = link
            .next_command(std::time::Duration::from_secs(30))
            .await
            .expect("the stream")
            .expect("a command within 30s");
        let args: Vec<String> = command
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args[0].eq_ignore_ascii_case("PING") {
            continue;
        }
        let done = command.args[0].eq_ignore_ascii_case(last);
        seen.push(args);
        if done {
            return seen;
        }
    }
}

/// `offset=` of the server's one replica, as its INFO shows it.
fn replica_offset(con: &mut redis::Connection) -> Option<i64> {
    let info: String = redis::cmd("INFO").arg("replication").query(con).unwrap();
    info.lines()
        .find(|l| l.starts_with("slave0:"))?
        .split(',')
        .find_map(|f| f.strip_prefix("offset="))?
        .parse()
        .ok()
}

#[tokio::test]
async fn as_a_replica_it_gets_the_rdb_then_every_write_in_order_and_acks_its_offset() {
    let source = RedisServer::start();
    let mut con = dataset::connect(&source.url());
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let endpoint = RedisEndpoint::new(source.url());
    let (mut link, start) = ReplicaLink::open(&endpoint, None).await.unwrap();
    assert_eq!(start, SyncStart::Full);
    let mut keys = Vec::new();
    link.read_rdb(|batch, _| {
        keys.extend(batch.into_iter().map(|e| e.key));
        async { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(keys.len(), 100);
    // Writes after the sync: in order, transactions whole.
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("l")
        .arg("a")
        .arg("b")
        .query(&mut con)
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .cmd("INCR")
        .arg("n")
        .query(&mut con)
        .unwrap();
    let seen = commands_until(&mut link, b"EXEC").await;
    let names: Vec<String> = seen.iter().map(|c| c[0].to_uppercase()).collect();
    let writes: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "SELECT")
        .collect();
    assert_eq!(
        writes,
        ["SET", "RPUSH", "MULTI", "INCR", "INCR", "EXEC"],
        "{seen:?}"
    );
    assert_eq!(
        seen[names.iter().position(|n| n == "RPUSH").unwrap()],
        ["RPUSH", "l", "a", "b"]
    );
    // The server sees the offset redis-move acknowledged: its view of the lag is true.
    link.ack().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while replica_offset(&mut con) != Some(link.offset) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never saw offset {}",
            link.offset
        );
        // A PING of the server may have moved the stream on: read it, acknowledge again.
        while link
            .next_command(std::time::Duration::from_millis(100))
            .await
            .unwrap()
            .is_some()
        {}
        link.ack().await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A link that stops and comes back continues where it stopped (partial resync),
    // with what was written meanwhile.
    let (replid, offset) = (link.replid.clone(), link.offset);
    drop(link);
    let _: () = redis::cmd("SET")
        .arg("while-away")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    let (mut link, start) = ReplicaLink::open(&endpoint, Some((&replid, offset)))
        .await
        .unwrap();
    assert_eq!(start, SyncStart::Partial);
    let seen = commands_until(&mut link, b"SET").await;
    assert_eq!(seen.last().unwrap(), &["SET", "while-away", "yes"]);
    // An id the server does not know: a full sync again.
    let (_, start) = ReplicaLink::open(&endpoint, Some(("0".repeat(40).as_str(), 1)))
        .await
        .unwrap();
    assert_eq!(start, SyncStart::Full);
}

fn to_args(text: &str) -> Vec<Vec<u8>> {
    text.split_whitespace()
        .map(|a| a.as_bytes().to_vec())
        .collect()
}

#[tokio::test]
async fn the_stream_renamed_by_the_servers_key_specs_rebuilds_the_keys_under_new_names() {
    let source = RedisServer::start_with(None, &["--enable-debug-command", "local"]);
    let target = RedisServer::start_with(None, &["--enable-debug-command", "local"]);
    let mut con = dataset::connect(&source.url());
    let mut to = dataset::connect(&target.url());
    let reply: redis::Value = redis::cmd("COMMAND").query(&mut con).unwrap();
    let keys = CommandKeys::from_reply(&reply);
    assert!(keys.len() > 200, "{} commands", keys.len());
    // The server's own specs, for commands whose keys sit in every kind of place.
    for (command, expected) in [
        ("SET a 1", vec![1]),
        ("MSET a 1 b 2", vec![1, 3]),
        ("LMOVE a b LEFT RIGHT", vec![1, 2]),
        ("ZUNIONSTORE d 2 a b WEIGHTS 1 2", vec![1, 3, 4]),
        ("EVAL return 2 a b x", vec![3, 4]),
        ("XGROUP CREATE s g $", vec![2]),
        ("BITOP AND d a b", vec![2, 3, 4]),
        ("GEORADIUS g 1 2 3 km STORE dest", vec![1, 7]),
        ("OBJECT ENCODING k", vec![2]),
    ] {
        assert_eq!(
            keys.positions(&to_args(command)).unwrap(),
            expected,
            "{command}"
        );
    }
    assert!(matches!(
        keys.positions(&to_args("MIGRATE h 6379 k 0 5000")),
        Err(KeysError::Incomplete(_))
    ));
    // A live stream, renamed `job:` -> `step:`, applied to another server.
    let endpoint = RedisEndpoint::new(source.url());
    let (mut link, _) = ReplicaLink::open(&endpoint, None).await.unwrap();
    link.read_rdb(|_, _| async { Ok(()) }).await.unwrap();
    for command in [
        "SET job:1 a",
        "MSET job:2 b job:3 c",
        "RPUSH job:list x y z",
        "LMOVE job:list job:list2 LEFT RIGHT",
        "ZADD job:z1 1 m 2 n",
        "ZADD job:z2 5 n",
        "ZUNIONSTORE job:union 2 job:z1 job:z2",
        "XADD job:stream 1-1 f v",
        "XGROUP CREATE job:stream workers 0",
        "HSET job:h f1 v1 f2 v2",
        "PEXPIREAT job:1 4102444800123",
        "RENAME job:3 job:4",
        "DEL job:2",
        "SET other:1 untouched",
    ] {
        let _: redis::Value = redis::cmd(command.split_whitespace().next().unwrap())
            .arg(command.split_whitespace().skip(1).collect::<Vec<_>>())
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("job:last")
        .arg("end")
        .query(&mut con)
        .unwrap();
    let rename = |key: &[u8]| {
        key.strip_prefix(b"job:")
            .map(|rest| [b"step:".as_slice(), rest].concat())
    };
    loop {
        let command = link
            .next_command(std::time::Duration::from_secs(30))
            .await
            .unwrap()
            .expect("a command within 30s");
        let mut args = command.args;
        if args[0].eq_ignore_ascii_case(b"PING") {
            continue;
        }
        let last = args.get(1).is_some_and(|k| k == b"job:last");
        keys.rename(&mut args, rename).unwrap();
        let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
        for arg in &args[1..] {
            cmd.arg(arg.as_slice());
        }
        let _: redis::Value = cmd.query(&mut to).unwrap();
        if last {
            break;
        }
    }
    // Every `job:` key of the source is a `step:` key of the target, equal in value and
    // expiry; nothing else was renamed.
    let source_keys: Vec<String> = redis::cmd("KEYS").arg("job:*").query(&mut con).unwrap();
    let target_keys: Vec<String> = redis::cmd("KEYS").arg("step:*").query(&mut to).unwrap();
    assert_eq!(
        source_keys.len(),
        target_keys.len(),
        "{source_keys:?} {target_keys:?}"
    );
    for key in &source_keys {
        let new = key.replacen("job:", "step:", 1);
        let digest = |con: &mut redis::Connection, k: &str| -> String {
            redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg(k)
                .query::<Vec<String>>(con)
                .unwrap()
                .remove(0)
        };
        assert_eq!(digest(&mut con, key), digest(&mut to, &new), "{key}");
        let expiry = |con: &mut redis::Connection, k: &str| -> i64 {
            redis::cmd("PEXPIRETIME").arg(k).query(con).unwrap()
        };
        assert_eq!(expiry(&mut con, key), expiry(&mut to, &new), "{key}");
    }
    let other: Option<String> = redis::cmd("GET").arg("other:1").query(&mut to).unwrap();
    assert_eq!(other.as_deref(), Some("untouched"));
}

/// `job:` keys of `from` against `step:` keys of `to`: the same set, each with the same
/// value digest and expiry.
fn assert_moved(from: &mut redis::Connection, to: &mut redis::Connection) -> usize {
    let mut source_keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("job:*").query(from).unwrap();
    let mut target_keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(to).unwrap();
    source_keys.sort();
    target_keys.sort();
    let renamed = |k: &[u8]| [b"step:".as_slice(), &k[4..]].concat();
    let mut expected: Vec<Vec<u8>> = source_keys.iter().map(|k| renamed(k)).collect();
    expected.sort();
    assert_eq!(target_keys, expected, "the target's keys");
    for key in &source_keys {
        let new = renamed(key);
        let digest = |con: &mut redis::Connection, k: &[u8]| -> String {
            redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg(k)
                .query::<Vec<String>>(con)
                .unwrap()
                .remove(0)
        };
        assert_eq!(
            digest(from, key),
            digest(to, &new),
            "{}",
            String::from_utf8_lossy(key)
        );
        let expiry = |con: &mut redis::Connection, k: &[u8]| -> i64 {
            redis::cmd("PEXPIRETIME").arg(k).query(con).unwrap()
        };
        assert_eq!(
            expiry(from, key),
            expiry(to, &new),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    source_keys.len()
}

#[tokio::test]
async fn a_sync_under_live_writes_drains_to_the_same_keys_under_new_names() {
    let source = RedisServer::start_with(
        None,
        // The fork at once (not after Redis's 5 s wait for more replicas): the producer
        // is still writing during the RDB and after it.
        &[
            "--enable-debug-command",
            "local",
            "--repl-diskless-sync-delay",
            "0",
        ],
    );
    let target = RedisServer::start_with(None, &["--enable-debug-command", "local"]);
    let mut from = dataset::connect(&source.url());
    let mut to = dataset::connect(&target.url());
    load_every_type(&mut from, "job:");
    load_every_type(&mut from, "other:");
    // A producer writes throughout: inside the filter and outside it.
    let url = source.url();
    let producer = std::thread::spawn(move || {
        let mut con = dataset::connect(&url);
        for i in 0..3000 {
            let _: () = redis::cmd("SET")
                .arg(format!("job:p:{i}"))
                .arg(i)
                .query(&mut con)
                .unwrap();
            let _: i64 = redis::cmd("INCR")
                .arg("job:counter")
                .query(&mut con)
                .unwrap();
            let _: i64 = redis::cmd("RPUSH")
                .arg("job:log")
                .arg(i)
                .query(&mut con)
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg(format!("other:p:{i}"))
                .arg(i)
                .query(&mut con)
                .unwrap();
            if i % 500 == 0 {
                let _: () = redis::pipe()
                    .atomic()
                    .cmd("HSET")
                    .arg("job:h")
                    .arg(i)
                    .arg("x")
                    .cmd("PEXPIRE")
                    .arg("job:p:0")
                    .arg(3_600_000)
                    .query(&mut con)
                    .unwrap();
            }
        }
    });
    let endpoint = RedisEndpoint::new(source.url());
    let source_backend = RedisBackend::connect(&endpoint).await.unwrap();
    let target_backend = RedisBackend::connect(&RedisEndpoint::new(target.url()))
        .await
        .unwrap();
    let plan = SyncPlan {
        rules: vec![SyncRule::new(
            "job:*".into(),
            Some(KeyRename::Prefix {
                from: b"job:".to_vec(),
                to: b"step:".to_vec(),
            }),
        )],
        db: 0,
        existing: SyncExisting::Fail,
        marker: b"redis-move:sync:test".to_vec(),
        same_keyspace: false,
        served: None,
        namespaces_checked: false,
    };
    let ledger = tempfile::tempdir().unwrap();
    let (mut sync, _) = Sync::start(
        &endpoint,
        &source_backend,
        target_backend,
        plan,
        &ledger.path().join("sync.ledger"),
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert!(sync.stats().keys >= 12, "{:?}", sync.stats());
    while !producer.is_finished() {
        sync.apply_available(std::time::Duration::from_millis(100))
            .await
            .unwrap();
    }
    producer.join().unwrap();
    // Drained: nothing of the stream is left unapplied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while source_offset(&source_backend).await.unwrap() > sync.stats().offset {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync never caught up"
        );
        sync.apply_available(std::time::Duration::from_millis(100))
            .await
            .unwrap();
    }
    // The sync's marker (replication id and offset applied) is its own, not a moved key.
    let marker: String = redis::cmd("GET")
        .arg("redis-move:sync:test")
        .query(&mut to)
        .unwrap();
    assert_eq!(
        marker,
        format!("{} {} 0", sync.stats().replid, sync.stats().offset)
    );
    let _: () = redis::cmd("DEL")
        .arg("redis-move:sync:test")
        .query(&mut to)
        .unwrap();
    let moved = assert_moved(&mut from, &mut to);
    assert!(moved > 3000, "{moved} keys");
    // Writes came both ways: in the RDB and through the stream, outside the filter too.
    let stats = sync.stats().clone();
    assert!(
        stats.keys > 0 && stats.commands > 0 && stats.skipped > 0,
        "{stats:?}"
    );
    // A write that mixes moved and unmoved keys cannot be applied to the moved ones alone.
    let _: () = redis::cmd("MSET")
        .arg("job:x")
        .arg(1)
        .arg("other:y")
        .arg(2)
        .query(&mut from)
        .unwrap();
    let refused = loop {
        match sync
            .apply_available(std::time::Duration::from_secs(30))
            .await
        {
            Ok(0) => panic!("the MSET never came"),
            Ok(_) => continue,
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        refused.contains("inside and outside") && refused.contains("other:y"),
        "{refused}"
    );
}
