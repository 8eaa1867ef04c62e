//! Values written as commands, for a target older than the source (which refuses the
//! source's DUMP payloads): every type and encoding that Redis 7.0 (RDB 10: listpacks,
//! quicklist 2, streams v2) and 6.2 (RDB 9: ziplists, quicklist of ziplists, streams v1)
//! write, read from real DUMP payloads, decoded, written to a real server of the other
//! version with the commands redis-move sends, and read back the same: elements,
//! scores, stream entries, IDs, groups, consumers, pending entries and their delivery
//! counts, expiries.

use redis_move::backend::rdb::entries::RdbEntry;
use redis_move::backend::rdb::values::{self, Dialect, Existing};
use redis_move_testbed::RedisServer;
use redis_move_testbed::dataset::{
    EVERY_ENCODING_KEYS, assert_same, connect, load_every_encoding, snapshot,
};
use redis_move_testbed::redis::older_redis_server;

fn version(con: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("server").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Moves every key of `from` to `to` as redis-move writes values for an older target;
/// the RDB value types that the source's payloads had.
fn move_as_commands(from: &RedisServer, to: &RedisServer) -> std::collections::BTreeSet<u8> {
    let mut src = connect(&from.url());
    let mut dst = connect(&to.url());
    load_every_encoding(&mut src, "e:");
    let dialect = Dialect::of_version(&version(&mut dst));
    let original = snapshot(&mut src, "e:*");
    let mut types = std::collections::BTreeSet::new();
    assert_eq!(original.len(), EVERY_ENCODING_KEYS);
    for (key, state) in &original {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut src).unwrap();
        let (entry, _) = RdbEntry::from_dump(key, &payload).unwrap();
        types.insert(entry.value_type);
        let value =
            values::decode(&entry).unwrap_or_else(|e| panic!("{}: {e}", key.escape_ascii()));
        let calls = values::calls(key, &value, state.expires_at_ms, Existing::Refuse, dialect);
        for call in calls {
            let reply: redis::Value = call.query(&mut dst).unwrap();
            assert_eq!(reply, redis::Value::Okay, "{}", key.escape_ascii());
        }
    }
    let copy = snapshot(&mut dst, "e:*");
    assert_same(&original, &copy, |k| k.to_vec(), 0);
    // A key that exists is refused, and left as it was.
    let key = b"e:list:small".as_slice();
    let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut src).unwrap();
    let value = values::decode(&RdbEntry::from_dump(key, &payload).unwrap().0).unwrap();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("theirs")
        .query(&mut dst)
        .unwrap();
    let refused = values::calls(key, &value, None, Existing::Refuse, dialect)[0]
        .query::<()>(&mut dst)
        .unwrap_err();
    assert_eq!(refused.code(), Some("BUSYKEY"), "{refused}");
    let kept: String = redis::cmd("GET").arg(key).query(&mut dst).unwrap();
    assert_eq!(kept, "theirs");
    types
}

#[test]
fn every_encoding_of_redis_7_is_written_as_commands_to_redis_6_and_reads_back_the_same() {
    let source = RedisServer::start();
    let target = RedisServer::start_binary(&older_redis_server(), None, &[]);
    // The reason for commands: 6.2 refuses a 7.0 payload.
    let mut src = connect(&source.url());
    let _: () = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query(&mut src)
        .unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("probe").query(&mut src).unwrap();
    let refused = redis::cmd("RESTORE")
        .arg("probe")
        .arg(0)
        .arg(payload)
        .query::<()>(&mut connect(&target.url()))
        .unwrap_err();
    assert!(refused.to_string().contains("payload version"), "{refused}");
    // String, set, hash, skiplist, intset; listpack hash and sorted set, quicklist 2,
    // stream v2.
    let types = move_as_commands(&source, &target);
    assert_eq!(types, [0, 2, 4, 5, 11, 16, 17, 18, 19].into());
}

#[test]
fn every_encoding_of_redis_6_is_written_as_commands_to_redis_7_and_reads_back_the_same() {
    let source = RedisServer::start_binary(&older_redis_server(), None, &[]);
    let target = RedisServer::start();
    // String, set, hash, skiplist, intset; ziplist sorted set and hash, quicklist of
    // ziplists, stream v1.
    let types = move_as_commands(&source, &target);
    assert_eq!(types, [0, 2, 4, 5, 11, 12, 13, 14, 15].into());
}
