//! Datasets to move and a way to compare two servers: keys of every type (small and
//! large encodings, binary names and values, with and without TTL), BullMQ-shaped
//! queues, and a snapshot of a keyspace read independently of redis-move's own code.

use std::collections::BTreeMap;

use redis::{Commands, Connection};

/// A synchronous connection to `url`.
pub fn connect(url: &str) -> Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// How many keys [`load_every_type`] writes.
pub const EVERY_TYPE_KEYS: usize = 14;

/// Writes keys of every type under `prefix`: strings (small, binary, 300 KB), hashes
/// (small listpack and 5,000 fields), lists (small and 20,000 items), sets (intset,
/// small, 5,000 members), sorted sets (small and 5,000 members), streams (with a
/// consumer group), TTLs on some, and a key whose name and value are binary. The large
/// ones are above a 64 KB `chunk_above`.
pub fn load_every_type(con: &mut Connection, prefix: &str) {
    let k = |name: &str| format!("{prefix}{name}");
    let _: () = con.set(k("str"), "hello").unwrap();
    let _: () = con.set_ex(k("str:ttl"), "expiring", 3600).unwrap();
    let binary_key: Vec<u8> = [prefix.as_bytes(), b"bin:\x00\xff\n"].concat();
    let _: () = con
        .set(&binary_key, b"\x00\x01\xfe\xff value".as_slice())
        .unwrap();
    let _: () = con.set(k("str:big"), "x".repeat(300_000)).unwrap();
    let _: () = con
        .hset_multiple(k("hash:small"), &[("name", "mail"), ("attempts", "3")])
        .unwrap();
    let fields: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("f{i}"), format!("v{i}-{}", "y".repeat(20))))
        .collect();
    let _: () = con.hset_multiple(k("hash:big"), &fields).unwrap();
    let _: () = con.expire(k("hash:big"), 7200).unwrap();
    let _: () = con.rpush(k("list:small"), &["a", "b", "c"]).unwrap();
    let items: Vec<String> = (0..20_000).map(|i| format!("job-{i}")).collect();
    let _: () = con.rpush(k("list:big"), &items).unwrap();
    let _: () = con.sadd(k("set:ints"), &[1, 2, 3]).unwrap();
    let _: () = con.sadd(k("set:small"), &["x", "y"]).unwrap();
    let members: Vec<String> = (0..5000)
        .map(|i| format!("member-{i}-{}", "z".repeat(16)))
        .collect();
    let _: () = con.sadd(k("set:big"), &members).unwrap();
    let _: () = con
        .zadd_multiple(k("zset:small"), &[(1.5, "a"), (-2.0, "b")])
        .unwrap();
    let scored: Vec<(f64, String)> = (0..5000)
        .map(|i| (i as f64 * 0.25, format!("m{i}-{}", "w".repeat(16))))
        .collect();
    let _: () = con.zadd_multiple(k("zset:big"), &scored).unwrap();
    for i in 0..50 {
        let _: String = redis::cmd("XADD")
            .arg(k("stream"))
            .arg("*")
            .arg("event")
            .arg(format!("e{i}"))
            .query(con)
            .unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(k("stream"))
        .arg("workers")
        .arg("0")
        .query(con)
        .unwrap();
}

/// How many keys [`load_every_encoding`] writes.
pub const EVERY_ENCODING_KEYS: usize = EVERY_TYPE_KEYS + 10;

/// [`load_every_type`], and the encodings and stream states it leaves out: integers of
/// every width in lists, sets (16- and 64-bit intsets) and hashes, strings stored as
/// integers, scores of +-inf and extreme magnitudes, list items above a listpack node's
/// size, a stream with deleted entries, entries of differing fields, two groups, several
/// consumers, pending entries delivered more than once, an empty stream with a group,
/// and expiries on big values. Redis 6.2 and 7 alike.
pub fn load_every_encoding(con: &mut Connection, prefix: &str) {
    load_every_type(con, prefix);
    let k = |name: &str| format!("{prefix}{name}");
    let ints: Vec<i64> = vec![
        0,
        5,
        -100,
        4095,
        -4096,
        30000,
        -8_000_000,
        1 << 40,
        i64::MIN,
        i64::MAX,
    ];
    let _: () = con.rpush(k("list:ints"), &ints).unwrap();
    let _: () = con.sadd(k("set:int16"), &[1i64, -7, 300]).unwrap();
    let _: () = con
        .sadd(k("set:int64"), &[1i64 << 50, -(1i64 << 60), 3])
        .unwrap();
    let pairs: Vec<(String, i64)> = ints
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("f{i}"), *v))
        .collect();
    let _: () = con.hset_multiple(k("hash:ints"), &pairs).unwrap();
    let _: () = con.set(k("str:int"), -1234567).unwrap();
    let _: () = con
        .zadd_multiple(
            k("zset:extremes"),
            &[
                (f64::INFINITY, "top"),
                (f64::NEG_INFINITY, "bottom"),
                (1e300, "huge"),
                (-2.5e-300, "tiny"),
                (0.1, "tenth"),
            ],
        )
        .unwrap();
    let long_items: Vec<String> = (0..40)
        .map(|i| format!("{i}:{}", "L".repeat(9000)))
        .collect();
    let _: () = con.rpush(k("list:long-items"), &long_items).unwrap();
    let _: () = con.pexpire(k("list:long-items"), 5_400_000).unwrap();
    let xadd = |con: &mut Connection, key: &str, fields: &[(&str, String)]| -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("*");
        for (f, v) in fields {
            cmd.arg(*f).arg(v);
        }
        cmd.query(con).unwrap()
    };
    let stream = k("stream:busy");
    // Delivers `count` new entries of the stream to `consumer` of `group`.
    let read_group = |con: &mut Connection, group: &str, consumer: &str, count: usize| {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg(&["GROUP", group, consumer, "COUNT", &count.to_string()])
            .arg(&["STREAMS", &stream, ">"])
            .query(con)
            .unwrap();
    };
    let mut ids = Vec::new();
    for i in 0..1200 {
        let id = if i % 3 == 0 {
            xadd(
                con,
                &stream,
                &[
                    ("kind", "a".into()),
                    ("n", i.to_string()),
                    ("extra", "x".repeat(i % 50)),
                ],
            )
        } else {
            xadd(con, &stream, &[("kind", "b".into()), ("n", i.to_string())])
        };
        ids.push(id);
    }
    let _: () = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&ids[5])
        .arg(&ids[600])
        .arg(ids.last().unwrap())
        .query(con)
        .unwrap();
    for (group, start) in [("mailers", "0"), ("auditors", ids[1000].as_str())] {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(group)
            .arg(start)
            .query(con)
            .unwrap();
    }
    for (consumer, count) in [("alice", 30), ("bob", 7)] {
        read_group(con, "mailers", consumer, count);
    }
    let _: () = redis::cmd("XACK")
        .arg(&stream)
        .arg("mailers")
        .arg(&ids[0])
        .arg(&ids[1])
        .query(con)
        .unwrap();
    // Delivered again to another consumer: two deliveries.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("mailers")
        .arg("carol")
        .arg(0)
        .arg(&ids[2])
        .arg(&ids[3])
        .query(con)
        .unwrap();
    read_group(con, "auditors", "dave", 5);
    // A pending entry whose message is deleted: still pending for alice.
    let _: () = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&ids[10])
        .query(con)
        .unwrap();
    // A consumer with nothing pending: the entry after dave's five, acknowledged.
    read_group(con, "auditors", "erin", 1);
    let _: () = redis::cmd("XACK")
        .arg(&stream)
        .arg("auditors")
        .arg(&ids[1006])
        .query(con)
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(k("stream:empty"))
        .arg("idle")
        .arg("$")
        .arg("MKSTREAM")
        .query(con)
        .unwrap();
    let drained = k("stream:drained");
    let id = xadd(con, &drained, &[("gone", "soon".into())]);
    let _: () = redis::cmd("XDEL")
        .arg(&drained)
        .arg(&id)
        .query(con)
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&drained)
        .arg("late")
        .arg("$")
        .query(con)
        .unwrap();
}

/// One key as read back: its type, its value in a canonical form, when it expires.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyState {
    /// TYPE.
    pub key_type: String,
    /// The value: elements in order (hash pairs and set members sorted).
    pub value: Vec<Vec<u8>>,
    /// When it expires, in ms since the epoch (PEXPIRETIME: the server's own absolute
    /// expiry), so that snapshots taken at different times compare exactly.
    pub expires_at_ms: Option<i64>,
    /// How far off `expires_at_ms` may be: 0 from PEXPIRETIME; from a server without
    /// it (Redis 6), the time its PTTL reply took to come back, measured.
    pub expiry_slack_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Whether the server knows `command`.
fn knows(con: &mut Connection, command: &str) -> bool {
    let reply: redis::Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(command)
        .query(con)
        .unwrap();
    matches!(reply, redis::Value::Array(items) if items.first().is_some_and(|i| *i != redis::Value::Nil))
}

/// Every key matching `pattern` (SCAN) with its state, read in pipelined batches.
pub fn snapshot(con: &mut Connection, pattern: &str) -> BTreeMap<Vec<u8>, KeyState> {
    let keys: Vec<Vec<u8>> = con
        .scan_match::<_, Vec<u8>>(pattern)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    let exact_expiry = knows(con, "PEXPIRETIME");
    let expiry = if exact_expiry { "PEXPIRETIME" } else { "PTTL" };
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("TYPE").arg(key);
        }
        let types: Vec<String> = pipe.query(con).unwrap();
        let mut pipe = redis::pipe();
        for (key, key_type) in chunk.iter().zip(&types) {
            match key_type.as_str() {
                "string" => pipe.cmd("GET").arg(key),
                "list" => pipe.cmd("LRANGE").arg(key).arg(0).arg(-1),
                "hash" => pipe.cmd("HGETALL").arg(key),
                "set" => pipe.cmd("SMEMBERS").arg(key),
                "zset" => pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"),
                "stream" => pipe
                    .cmd("XRANGE")
                    .arg(key)
                    .arg("-")
                    .arg("+")
                    .cmd("XINFO")
                    .arg("GROUPS")
                    .arg(key)
                    .cmd("XINFO")
                    .arg("STREAM")
                    .arg(key),
                _ => pipe.cmd("EXISTS").arg(key),
            };
            // The absolute expiry (Redis 7+): exact, however long the reads took.
            pipe.cmd(expiry).arg(key);
        }
        let asked_at = now_ms();
        let replies: Vec<redis::Value> = pipe.query(con).unwrap();
        let answered_at = now_ms();
        let mut replies = replies.into_iter();
        for (key, key_type) in chunk.iter().zip(types) {
            let mut next = || replies.next().expect("a reply per command");
            let value: Vec<Vec<u8>> = match key_type.as_str() {
                "string" => vec![redis::from_redis_value(next()).unwrap()],
                "list" => redis::from_redis_value(next()).unwrap(),
                "hash" => {
                    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                        redis::from_redis_value(next()).unwrap();
                    pairs.sort();
                    pairs.into_iter().flat_map(|(f, v)| [f, v]).collect()
                }
                "set" => {
                    let mut members: Vec<Vec<u8>> = redis::from_redis_value(next()).unwrap();
                    members.sort();
                    members
                }
                "zset" => {
                    let pairs: Vec<(Vec<u8>, f64)> = redis::from_redis_value(next()).unwrap();
                    pairs
                        .into_iter()
                        .flat_map(|(m, s)| [m, s.to_string().into_bytes()])
                        .collect()
                }
                "stream" => {
                    let entries = next();
                    let groups = next();
                    let info = next();
                    let mut value = vec![
                        format!("{entries:?}").into_bytes(),
                        group_names(&groups).into_bytes(),
                        field(&info, "last-generated-id").into_bytes(),
                    ];
                    value.extend(pending(&groups, key, con));
                    value
                }
                "none" => {
                    next();
                    next();
                    continue;
                }
                other => panic!("unexpected type {other}"),
            };
            let expires: i64 = redis::from_redis_value(next()).unwrap();
            if expires == -2 {
                continue; // expired meanwhile
            }
            // PTTL: the time left when the server answered, some time between the
            // asking and the answer.
            let (expires, expiry_slack_ms) = match (exact_expiry, expires) {
                (true, _) | (false, -1) => (expires, 0),
                (false, ttl) => (answered_at + ttl, answered_at - asked_at + 1),
            };
            out.insert(
                key.clone(),
                KeyState {
                    key_type,
                    value,
                    expires_at_ms: (expires >= 0).then_some(expires),
                    expiry_slack_ms,
                },
            );
        }
    }
    out
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A field of a reply that lists names and values (XINFO), as text.
fn field(reply: &redis::Value, name: &str) -> String {
    match reply {
        redis::Value::Array(fields) => fields
            .chunks(2)
            .find(|pair| text(&pair[0]) == name)
            .map(|pair| text(&pair[1]))
            .unwrap_or_default(),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k) == name)
            .map(|(_, v)| text(v))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn groups_of(groups: &redis::Value) -> &[redis::Value] {
    match groups {
        redis::Value::Array(groups) => groups,
        _ => &[],
    }
}

/// `name@last-delivered-id/consumers/pending` of each consumer group of an XINFO
/// GROUPS reply.
fn group_names(groups: &redis::Value) -> String {
    let mut names: Vec<String> = groups_of(groups)
        .iter()
        .map(|group| {
            format!(
                "{}@{}/{}/{}",
                field(group, "name"),
                field(group, "last-delivered-id"),
                field(group, "consumers"),
                field(group, "pending")
            )
        })
        .collect();
    names.sort();
    names.join(",")
}

/// The pending entries of each group: `group id consumer deliveries`, each.
fn pending(groups: &redis::Value, key: &[u8], con: &mut Connection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for group in groups_of(groups) {
        let name = field(group, "name");
        let entries: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
            .arg(key)
            .arg(&name)
            .arg("-")
            .arg("+")
            .arg(1_000_000)
            .query(con)
            .unwrap();
        out.extend(
            entries
                .into_iter()
                .map(|(id, consumer, _idle, deliveries)| {
                    format!("{name} {id} {consumer} {deliveries}").into_bytes()
                }),
        );
    }
    out.sort();
    out
}

/// Asserts that `copy` holds exactly the keys of `original` (renamed by `rename`), with
/// equal values and expiry times within `tolerance_ms`.
pub fn assert_same(
    original: &BTreeMap<Vec<u8>, KeyState>,
    copy: &BTreeMap<Vec<u8>, KeyState>,
    rename: impl Fn(&[u8]) -> Vec<u8>,
    tolerance_ms: i64,
) {
    let expected: BTreeMap<Vec<u8>, &KeyState> =
        original.iter().map(|(k, v)| (rename(k), v)).collect();
    let missing: Vec<String> = expected
        .keys()
        .filter(|k| !copy.contains_key(*k))
        .map(|k| k.escape_ascii().to_string())
        .collect();
    let extra: Vec<String> = copy
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .map(|k| k.escape_ascii().to_string())
        .collect();
    assert!(missing.is_empty(), "missing on the copy: {missing:?}");
    assert!(extra.is_empty(), "extra on the copy: {extra:?}");
    for (key, want) in &expected {
        let got = &copy[key];
        let name = key.escape_ascii().to_string();
        assert_eq!(got.key_type, want.key_type, "type of {name}");
        assert!(got.value == want.value, "value of {name} differs");
        match (want.expires_at_ms, got.expires_at_ms) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= tolerance_ms + want.expiry_slack_ms + got.expiry_slack_ms,
                "{name} expires {} ms apart on the original and the copy",
                (a - b).abs()
            ),
            (a, b) => panic!("expiry of {name}: {a:?} on the original, {b:?} on the copy"),
        }
    }
}

/// Loads `jobs` BullMQ-shaped jobs into `queues` queues under `bull:`: a job hash per
/// job, `wait` lists, `delayed`/`completed`/`failed` sorted sets, an `events` stream
/// per queue, `id` counters; about 7% of the job hashes get a TTL. Pipelined.
pub fn load_bullmq(con: &mut Connection, queues: usize, jobs: usize) {
    let names: Vec<String> = (0..queues).map(|q| format!("queue{q}")).collect();
    load_bullmq_queues(con, &names, jobs);
}

/// [`load_bullmq`] into the queues `bull:<name>` of `names`.
pub fn load_bullmq_queues(con: &mut Connection, names: &[String], jobs: usize) {
    let per_queue = jobs.div_ceil(names.len().max(1));
    for name in names {
        let queue = format!("bull:{name}");
        let mut pipe = redis::pipe();
        for j in 0..per_queue {
            let key = format!("{queue}:{j}");
            pipe.cmd("HSET")
                .arg(&key)
                .arg("name")
                .arg("send-mail")
                .arg("data")
                .arg(format!(
                    "{{\"to\":\"user{j}@example.com\",\"template\":\"welcome\",\"n\":{j}}}"
                ))
                .arg("opts")
                .arg("{\"attempts\":3,\"backoff\":{\"type\":\"exponential\",\"delay\":1000}}")
                .arg("timestamp")
                .arg(1_700_000_000_000u64 + j as u64)
                .arg("attemptsMade")
                .arg(j % 3)
                .ignore();
            if j % 14 == 0 {
                pipe.cmd("PEXPIRE").arg(&key).arg(86_400_000).ignore();
            }
            match j % 10 {
                0..=5 => pipe
                    .cmd("RPUSH")
                    .arg(format!("{queue}:wait"))
                    .arg(j)
                    .ignore(),
                6 => pipe
                    .cmd("ZADD")
                    .arg(format!("{queue}:delayed"))
                    .arg(j)
                    .arg(j)
                    .ignore(),
                7 | 8 => pipe
                    .cmd("ZADD")
                    .arg(format!("{queue}:completed"))
                    .arg(j)
                    .arg(j)
                    .ignore(),
                _ => pipe
                    .cmd("ZADD")
                    .arg(format!("{queue}:failed"))
                    .arg(j)
                    .arg(j)
                    .ignore(),
            };
            if j % 100 == 0 {
                pipe.cmd("XADD")
                    .arg(format!("{queue}:events"))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(10_000)
                    .arg("*")
                    .arg("event")
                    .arg("added")
                    .arg("jobId")
                    .arg(j)
                    .ignore();
            }
            if pipe.len() >= 5000 {
                let () = pipe.query(con).unwrap();
                pipe = redis::pipe();
            }
        }
        pipe.cmd("SET")
            .arg(format!("{queue}:id"))
            .arg(per_queue)
            .ignore();
        let () = pipe.query(con).unwrap();
    }
}

/// Keys of seed 004's job model: `job:<id>` hashes (some with `job:<id>:progress`),
/// `jobs:pending` (sorted set), `jobs:active`, `jobs:completed` (with a TTL), `jobs:failed`,
/// and worker keys that a job-key migration must leave alone.
pub fn load_job_keys(con: &mut Connection, jobs: usize) {
    let mut pipe = redis::pipe();
    for id in 0..jobs {
        pipe.cmd("HSET")
            .arg(format!("job:{id}"))
            .arg("type")
            .arg("ocr")
            .arg("state")
            .arg(if id % 3 == 0 { "done" } else { "queued" })
            .arg("payload")
            .arg(format!("{{\"document\":{id}}}"))
            .ignore();
        if id % 10 == 0 {
            pipe.cmd("HSET")
                .arg(format!("job:{id}:progress"))
                .arg("pct")
                .arg(id % 100)
                .ignore();
        }
        pipe.cmd("ZADD")
            .arg("jobs:pending")
            .arg(id)
            .arg(id)
            .ignore();
    }
    pipe.cmd("SADD").arg("jobs:active").arg(1).arg(2).ignore();
    pipe.cmd("SADD").arg("jobs:completed").arg(3).ignore();
    pipe.cmd("EXPIRE")
        .arg("jobs:completed")
        .arg(86_400)
        .ignore();
    pipe.cmd("SADD").arg("jobs:failed").arg(4).ignore();
    pipe.cmd("HSET")
        .arg("worker:w1")
        .arg("caps")
        .arg("ocr")
        .ignore();
    pipe.cmd("SADD").arg("workers:active").arg("w1").ignore();
    // Seed 004: `worker:{id}:jobs` becomes `worker:{id}:steps`.
    pipe.cmd("SADD")
        .arg("worker:w1:jobs")
        .arg(1)
        .arg(2)
        .ignore();
    pipe.cmd("SADD").arg("worker:w2:jobs").arg(5).ignore();
    let () = pipe.query(con).unwrap();
}
