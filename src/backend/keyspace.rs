//! Type-aware work on single keys: reading a key's whole value as a canonical digest
//! (to compare two servers without trusting DUMP bytes, whose hash-table encodings
//! serialise in a per-process order), copying a key too large for one DUMP in chunks
//! with the commands of its type, and reading (and rebuilding) what a stream holds
//! besides its entries: consumer groups, consumers and pending entries.

use sha2::{Digest, Sha256};

use super::BackendError;
use super::redis::{RedisBackend, to_value};

/// Elements fetched or written per command when a key is copied in chunks.
pub const CHUNK_ELEMENTS: usize = 1000;
/// Bytes per GETRANGE/APPEND when a string is copied in chunks.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The Redis types redis-move can read element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// A string.
    String,
    /// A list.
    List,
    /// A hash.
    Hash,
    /// A set.
    Set,
    /// A sorted set.
    ZSet,
    /// A stream.
    Stream,
}

impl KeyType {
    /// The type TYPE reported; `None` for `none` (no such key) and module types.
    pub fn parse(reply: &str) -> Option<KeyType> {
        Some(match reply {
            "string" => KeyType::String,
            "list" => KeyType::List,
            "hash" => KeyType::Hash,
            "set" => KeyType::Set,
            "zset" => KeyType::ZSet,
            "stream" => KeyType::Stream,
            _ => return None,
        })
    }
}

/// Text of a simple reply (TYPE, status).
pub fn reply_text(reply: &redis::Value) -> String {
    match reply {
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Okay => "OK".into(),
        other => to_value(other.clone()).as_text(),
    }
}

/// An integer reply.
pub fn reply_int(reply: &redis::Value) -> Option<i64> {
    match reply {
        redis::Value::Int(n) => Some(*n),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A key as text for messages: printable ASCII as is, other bytes escaped.
pub fn display_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// The command that reads a whole value of `key_type` (for [`canonical_digest`]).
pub fn read_command(key_type: KeyType, key: &[u8]) -> redis::Cmd {
    match key_type {
        KeyType::String => redis::cmd("GET").arg(key).clone(),
        KeyType::List => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone(),
        KeyType::Hash => redis::cmd("HGETALL").arg(key).clone(),
        KeyType::Set => redis::cmd("SMEMBERS").arg(key).clone(),
        KeyType::ZSet => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .clone(),
        KeyType::Stream => redis::cmd("XRANGE").arg(key).arg("-").arg("+").clone(),
    }
}

/// Whether `text` matches the Redis glob `pattern` (`*`, `?`, `[abc]`, `[a-z]`, `[^a]`,
/// `\x`), as SCAN MATCH does.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // The common `prefix*` (a family of keys): a prefix test.
    if let Some(prefix) = pattern.strip_suffix(b"*")
        && !prefix.iter().any(|c| b"*?[\\".contains(c))
    {
        return text.starts_with(prefix);
    }
    let (mut p, mut t) = (0usize, 0usize);
    let (mut star, mut resume) = (None::<usize>, 0usize);
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some(p);
                    resume = t;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                c if c != b'\\' && c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some(s) => {
                p = s + 1;
                resume += 1;
                t = resume;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pattern[start]`: whether `c` is in it, and where the pattern goes on.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() && (first || pattern[i] != b']') {
        first = false;
        let mut low = pattern[i];
        if low == b'\\' && i + 1 < pattern.len() {
            i += 1;
            low = pattern[i];
        }
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let high = pattern[i + 2];
            if (low.min(high)..=low.max(high)).contains(&c) {
                matched = true;
            }
            i += 3;
        } else {
            if low == c {
                matched = true;
            }
            i += 1;
        }
    }
    (i < pattern.len()).then_some((matched != negate, i + 1))
}

/// A digest of a value read with [`read_command`] that does not depend on how the
/// server stores it: hash fields and set members are sorted first, scores compared as
/// numbers. `None` when the reply is not a value of that type (the key vanished).
pub fn canonical_digest(key_type: KeyType, reply: &redis::Value) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    feed(format!("{key_type:?}").as_bytes());
    match (key_type, reply) {
        (KeyType::String, redis::Value::BulkString(bytes)) => feed(bytes),
        (KeyType::List, redis::Value::Array(items)) => {
            for item in items {
                feed(&bulk(item)?);
            }
        }
        (KeyType::Hash, redis::Value::Array(items)) => {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = items
                .chunks(2)
                .map(|pair| Some((bulk(pair.first()?)?, bulk(pair.get(1)?)?)))
                .collect::<Option<_>>()?;
            pairs.sort();
            for (field, value) in pairs {
                feed(&field);
                feed(&value);
            }
        }
        (KeyType::Hash, redis::Value::Map(items)) => {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = items
                .iter()
                .map(|(f, v)| Some((bulk(f)?, bulk(v)?)))
                .collect::<Option<_>>()?;
            pairs.sort();
            for (field, value) in pairs {
                feed(&field);
                feed(&value);
            }
        }
        (KeyType::Set, redis::Value::Array(items) | redis::Value::Set(items)) => {
            let mut members: Vec<Vec<u8>> = items.iter().map(bulk).collect::<Option<_>>()?;
            members.sort();
            for member in members {
                feed(&member);
            }
        }
        (KeyType::ZSet, redis::Value::Array(items)) => {
            for pair in items.chunks(2) {
                feed(&bulk(pair.first()?)?);
                let score: f64 = String::from_utf8(bulk(pair.get(1)?)?).ok()?.parse().ok()?;
                feed(&score.to_bits().to_le_bytes());
            }
        }
        (KeyType::Stream, redis::Value::Array(entries)) => {
            for entry in entries {
                let redis::Value::Array(parts) = entry else {
                    return None;
                };
                feed(&bulk(parts.first()?)?);
                let redis::Value::Array(fields) = parts.get(1)? else {
                    return None;
                };
                for field in fields {
                    feed(&bulk(field)?);
                }
            }
        }
        _ => return None,
    }
    Some(hasher.finalize().into())
}

fn bulk(value: &redis::Value) -> Option<Vec<u8>> {
    match value {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        redis::Value::Int(n) => Some(n.to_string().into_bytes()),
        redis::Value::Double(d) => Some(d.to_string().into_bytes()),
        _ => None,
    }
}

/// Appends every item as an argument of `cmd`; the bytes appended.
fn add_all(cmd: &mut redis::Cmd, items: &[redis::Value]) -> u64 {
    let mut moved = 0;
    for item in items {
        let b = bulk(item).unwrap_or_default();
        moved += b.len() as u64;
        cmd.arg(b);
    }
    moved
}

fn items(reply: redis::Value, what: &str) -> Result<Vec<redis::Value>, BackendError> {
    match reply {
        redis::Value::Array(items) | redis::Value::Set(items) => Ok(items),
        redis::Value::Nil => Ok(Vec::new()),
        other => Err(BackendError::Unexpected(format!(
            "{what} answered {}",
            to_value(other)
        ))),
    }
}

/// A SCAN-family page: the next cursor and the items.
fn scan_reply(reply: redis::Value, what: &str) -> Result<(u64, Vec<redis::Value>), BackendError> {
    let mut parts = items(reply, what)?;
    if parts.len() != 2 {
        return Err(BackendError::Unexpected(format!(
            "{what} answered a bad page"
        )));
    }
    let page = items(parts.pop().unwrap_or(redis::Value::Nil), what)?;
    let cursor = reply_text(&parts[0])
        .parse()
        .map_err(|_| BackendError::Unexpected(format!("{what} answered a bad cursor")))?;
    Ok((cursor, page))
}

/// Copies the value of `key` on `source` into `into` on `target` (which must not exist)
/// in chunks of the type's own commands, so that neither server serialises the whole
/// value at once and redis-move holds one chunk at a time. No TTL is set. Returns the
/// bytes moved, or `None` if the key vanished. The copy of a key written to meanwhile
/// may mix old and new elements: stop the writers first.
pub async fn copy_in_chunks(
    source: &RedisBackend,
    key: &[u8],
    target: &RedisBackend,
    into: &[u8],
) -> Result<Option<u64>, BackendError> {
    let key_type = reply_text(&source.raw(redis::cmd("TYPE").arg(key)).await?);
    let Some(key_type) = KeyType::parse(&key_type) else {
        return match key_type.as_str() {
            "none" => Ok(None),
            other => Err(BackendError::Command(format!(
                "`{}` is of type {other}, which cannot be copied in chunks",
                display_key(key)
            ))),
        };
    };
    let mut bytes = 0u64;
    match key_type {
        KeyType::String => {
            let mut offset = 0usize;
            loop {
                let chunk = match source
                    .raw(
                        redis::cmd("GETRANGE")
                            .arg(key)
                            .arg(offset)
                            .arg(offset + CHUNK_BYTES - 1),
                    )
                    .await?
                {
                    redis::Value::BulkString(b) => b,
                    _ => Vec::new(),
                };
                if chunk.is_empty() && offset > 0 {
                    break;
                }
                let len = chunk.len();
                bytes += len as u64;
                target
                    .raw(redis::cmd("APPEND").arg(into).arg(&chunk))
                    .await?;
                if len < CHUNK_BYTES {
                    break;
                }
                offset += len;
            }
        }
        KeyType::List => {
            let mut start = 0usize;
            loop {
                let page = items(
                    source
                        .raw(
                            redis::cmd("LRANGE")
                                .arg(key)
                                .arg(start)
                                .arg(start + CHUNK_ELEMENTS - 1),
                        )
                        .await?,
                    "LRANGE",
                )?;
                if page.is_empty() {
                    break;
                }
                let mut cmd = redis::cmd("RPUSH");
                cmd.arg(into);
                bytes += add_all(&mut cmd, &page);
                target.raw(&cmd).await?;
                if page.len() < CHUNK_ELEMENTS {
                    break;
                }
                start += page.len();
            }
        }
        KeyType::Hash | KeyType::Set | KeyType::ZSet => {
            let (scan, add, pairs) = match key_type {
                KeyType::Hash => ("HSCAN", "HSET", true),
                KeyType::Set => ("SSCAN", "SADD", false),
                _ => ("ZSCAN", "ZADD", true),
            };
            let mut cursor = 0u64;
            loop {
                let (next, page) = scan_reply(
                    source
                        .raw(
                            redis::cmd(scan)
                                .arg(key)
                                .arg(cursor)
                                .arg("COUNT")
                                .arg(CHUNK_ELEMENTS),
                        )
                        .await?,
                    scan,
                )?;
                if !page.is_empty() {
                    let mut cmd = redis::cmd(add);
                    cmd.arg(into);
                    let mut moved = 0;
                    if pairs {
                        for pair in page.chunks(2) {
                            let (a, b) = (
                                bulk(&pair[0]).unwrap_or_default(),
                                pair.get(1).and_then(bulk).unwrap_or_default(),
                            );
                            moved += (a.len() + b.len()) as u64;
                            // ZSCAN gives member, score; ZADD takes score, member.
                            if key_type == KeyType::ZSet {
                                cmd.arg(b).arg(a);
                            } else {
                                cmd.arg(a).arg(b);
                            }
                        }
                    } else {
                        moved += add_all(&mut cmd, &page);
                    }
                    bytes += moved;
                    target.raw(&cmd).await?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        KeyType::Stream => {
            let mut from = "-".to_owned();
            loop {
                let page = items(
                    source
                        .raw(
                            redis::cmd("XRANGE")
                                .arg(key)
                                .arg(&from)
                                .arg("+")
                                .arg("COUNT")
                                .arg(CHUNK_ELEMENTS),
                        )
                        .await?,
                    "XRANGE",
                )?;
                if page.is_empty() {
                    break;
                }
                let mut pipe = redis::pipe();
                let mut moved = 0u64;
                let mut last = String::new();
                for entry in &page {
                    let redis::Value::Array(parts) = entry else {
                        continue;
                    };
                    let (Some(id), Some(redis::Value::Array(fields))) =
                        (parts.first(), parts.get(1))
                    else {
                        continue;
                    };
                    last = reply_text(id);
                    let cmd = pipe.cmd("XADD").arg(into).arg(&last);
                    for field in fields {
                        let b = bulk(field).unwrap_or_default();
                        moved += b.len() as u64;
                        cmd.arg(b);
                    }
                }
                bytes += moved;
                for reply in target.pipeline(pipe).await? {
                    if let redis::Value::ServerError(e) = reply {
                        return Err(BackendError::Command(format!("XADD: {e}")));
                    }
                }
                if page.len() < CHUNK_ELEMENTS {
                    break;
                }
                from = format!("({last}");
            }
            copy_stream_state(source, key, target, into).await?;
        }
    }
    // A key that vanished between TYPE and the reads leaves nothing behind.
    let exists = reply_int(&target.raw(redis::cmd("EXISTS").arg(into)).await?).unwrap_or(0);
    Ok((exists > 0).then_some(bytes))
}

/// Pending entries read or claimed per command.
const PENDING_PAGE: usize = 1000;

/// What a stream holds besides its entries: its counters and consumer groups, each with
/// its consumers and its pending entries (delivered, not acknowledged).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamState {
    /// The last id generated.
    pub last_id: String,
    /// Entries ever added (Redis 7+).
    pub entries_added: Option<i64>,
    /// The highest id deleted (Redis 7+).
    pub max_deleted_id: Option<String>,
    /// Its consumer groups, by name.
    pub groups: Vec<GroupState>,
}

/// One consumer group of a stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupState {
    /// Its name.
    pub name: Vec<u8>,
    /// The last id delivered to it.
    pub last_delivered: String,
    /// Entries it has read (Redis 7+).
    pub entries_read: Option<i64>,
    /// Its consumers, sorted.
    pub consumers: Vec<Vec<u8>>,
    /// Its pending entries, by id.
    pub pending: Vec<PendingEntry>,
}

/// An entry delivered to a consumer and not acknowledged yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PendingEntry {
    /// The entry's id.
    pub id: String,
    /// The consumer it was delivered to.
    pub consumer: Vec<u8>,
    /// Milliseconds since it was last delivered.
    pub idle_ms: i64,
    /// How many times it was delivered.
    pub deliveries: i64,
}

fn optional_int(reply: Option<redis::Value>) -> Option<i64> {
    reply.as_ref().and_then(reply_int)
}

/// Reads the counters, groups, consumers and pending entries of the stream `key`.
pub async fn stream_state(redis: &RedisBackend, key: &[u8]) -> Result<StreamState, BackendError> {
    let info = redis
        .raw(redis::cmd("XINFO").arg("STREAM").arg(key))
        .await?;
    let mut state = StreamState {
        last_id: field_of(&info, "last-generated-id")
            .map(|v| reply_text(&v))
            .unwrap_or_default(),
        entries_added: optional_int(field_of(&info, "entries-added")),
        max_deleted_id: field_of(&info, "max-deleted-entry-id").map(|v| reply_text(&v)),
        groups: Vec::new(),
    };
    let groups = items(
        redis
            .raw(redis::cmd("XINFO").arg("GROUPS").arg(key))
            .await?,
        "XINFO GROUPS",
    )?;
    for group in groups {
        let Some(name) = field_of(&group, "name").and_then(|n| bulk(&n)) else {
            continue;
        };
        let consumers = items(
            redis
                .raw(redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name))
                .await?,
            "XINFO CONSUMERS",
        )?;
        let mut consumers: Vec<Vec<u8>> = consumers
            .iter()
            .filter_map(|c| field_of(c, "name").and_then(|n| bulk(&n)))
            .collect();
        consumers.sort();
        let mut pending = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let page = items(
                redis
                    .raw(
                        redis::cmd("XPENDING")
                            .arg(key)
                            .arg(&name)
                            .arg(&from)
                            .arg("+")
                            .arg(PENDING_PAGE),
                    )
                    .await?,
                "XPENDING",
            )?;
            let count = page.len();
            for entry in page {
                let redis::Value::Array(parts) = entry else {
                    continue;
                };
                if parts.len() < 4 {
                    continue;
                }
                pending.push(PendingEntry {
                    id: reply_text(&parts[0]),
                    consumer: bulk(&parts[1]).unwrap_or_default(),
                    idle_ms: reply_int(&parts[2]).unwrap_or(0),
                    deliveries: reply_int(&parts[3]).unwrap_or(0),
                });
            }
            match pending.last() {
                Some(last) if count == PENDING_PAGE => from = format!("({}", last.id),
                _ => break,
            }
        }
        state.groups.push(GroupState {
            name,
            last_delivered: field_of(&group, "last-delivered-id")
                .map(|v| reply_text(&v))
                .unwrap_or_default(),
            entries_read: optional_int(field_of(&group, "entries-read")),
            consumers,
            pending,
        });
    }
    state.groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(state)
}

/// Gives the stream `into` on `target` the counters, groups, consumers and pending
/// entries of `key` on `source` (after its entries were copied): the last id, the
/// groups at their last delivered id, each consumer, and each pending entry claimed by
/// its consumer with its delivery count and idle time (`XCLAIM ... FORCE`). Counters a
/// target older than Redis 7 does not keep are left out.
async fn copy_stream_state(
    source: &RedisBackend,
    key: &[u8],
    target: &RedisBackend,
    into: &[u8],
) -> Result<(), BackendError> {
    let state = stream_state(source, key).await?;
    let mut xsetid = redis::cmd("XSETID");
    xsetid.arg(into).arg(&state.last_id);
    if let (Some(added), Some(deleted)) = (state.entries_added, &state.max_deleted_id) {
        xsetid
            .arg("ENTRIESADDED")
            .arg(added)
            .arg("MAXDELETEDID")
            .arg(deleted);
    }
    if target.raw(&xsetid).await.is_err() {
        target
            .raw(redis::cmd("XSETID").arg(into).arg(&state.last_id))
            .await?;
    }
    for group in &state.groups {
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(into)
            .arg(&group.name)
            .arg(&group.last_delivered);
        if let Some(read) = group.entries_read {
            create.arg("ENTRIESREAD").arg(read);
        }
        if target.raw(&create).await.is_err() {
            target
                .raw(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(into)
                        .arg(&group.name)
                        .arg(&group.last_delivered),
                )
                .await?;
        }
        let mut pipe = redis::pipe();
        for consumer in &group.consumers {
            pipe.cmd("XGROUP")
                .arg("CREATECONSUMER")
                .arg(into)
                .arg(&group.name)
                .arg(consumer);
        }
        if !group.consumers.is_empty() {
            for reply in target.pipeline(pipe).await? {
                if let redis::Value::ServerError(e) = reply {
                    return Err(BackendError::Command(format!("XGROUP CREATECONSUMER: {e}")));
                }
            }
        }
        for page in group.pending.chunks(PENDING_PAGE) {
            let mut pipe = redis::pipe();
            for entry in page {
                pipe.cmd("XCLAIM")
                    .arg(into)
                    .arg(&group.name)
                    .arg(&entry.consumer)
                    .arg(0)
                    .arg(&entry.id)
                    .arg("IDLE")
                    .arg(entry.idle_ms)
                    .arg("RETRYCOUNT")
                    .arg(entry.deliveries)
                    .arg("FORCE")
                    .arg("JUSTID");
            }
            for reply in target.pipeline(pipe).await? {
                if let redis::Value::ServerError(e) = reply {
                    return Err(BackendError::Command(format!("XCLAIM: {e}")));
                }
            }
        }
    }
    Ok(())
}

/// How two streams' states differ (`None`: the same, idle times within `idle_tolerance`
/// milliseconds), in words.
pub fn stream_difference(
    expected: &StreamState,
    actual: &StreamState,
    idle_tolerance: i64,
) -> Option<String> {
    if actual.last_id != expected.last_id {
        return Some(format!(
            "stream last id {}, expected {}",
            actual.last_id, expected.last_id
        ));
    }
    let names = |s: &StreamState| {
        s.groups
            .iter()
            .map(|g| display_key(&g.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if actual.groups.len() != expected.groups.len()
        || actual
            .groups
            .iter()
            .zip(&expected.groups)
            .any(|(a, e)| a.name != e.name)
    {
        return Some(format!(
            "consumer groups [{}], expected [{}]",
            names(actual),
            names(expected)
        ));
    }
    for (a, e) in actual.groups.iter().zip(&expected.groups) {
        let group = display_key(&e.name);
        if a.last_delivered != e.last_delivered {
            return Some(format!(
                "group `{group}` last delivered id {}, expected {}",
                a.last_delivered, e.last_delivered
            ));
        }
        if let (Some(read), Some(expected_read)) = (a.entries_read, e.entries_read)
            && read != expected_read
        {
            return Some(format!(
                "group `{group}` entries read {read}, expected {expected_read}"
            ));
        }
        if a.consumers != e.consumers {
            return Some(format!(
                "group `{group}` has {} consumers, expected {}",
                a.consumers.len(),
                e.consumers.len()
            ));
        }
        if a.pending.len() != e.pending.len() {
            return Some(format!(
                "group `{group}` has {} pending entries, expected {}",
                a.pending.len(),
                e.pending.len()
            ));
        }
        for (p, q) in a.pending.iter().zip(&e.pending) {
            let differs = if p.id != q.id {
                Some(format!("pending entry {}, expected {}", p.id, q.id))
            } else if p.consumer != q.consumer {
                Some(format!(
                    "pending entry {} owned by `{}`, expected `{}`",
                    q.id,
                    display_key(&p.consumer),
                    display_key(&q.consumer)
                ))
            } else if p.deliveries != q.deliveries {
                Some(format!(
                    "pending entry {} delivered {} times, expected {}",
                    q.id, p.deliveries, q.deliveries
                ))
            } else if (p.idle_ms - q.idle_ms).abs() > idle_tolerance {
                Some(format!(
                    "pending entry {} idle {} ms, expected {} ms",
                    q.id, p.idle_ms, q.idle_ms
                ))
            } else {
                None
            };
            if let Some(why) = differs {
                return Some(format!("group `{group}`: {why}"));
            }
        }
    }
    None
}

/// A field of a RESP2 flat array or RESP3 map reply (XINFO).
fn field_of(reply: &redis::Value, name: &str) -> Option<redis::Value> {
    match reply {
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|pair| reply_text(&pair[0]) == name)
            .and_then(|pair| pair.get(1).cloned()),
        redis::Value::Map(items) => items
            .iter()
            .find(|(k, _)| reply_text(k) == name)
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod glob_tests {
    use super::glob_match;

    #[test]
    fn globs_match_as_scan_does() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", "anything"));
        assert!(m("job:*", "job:1"));
        assert!(!m("job:*", "jobs:1"));
        assert!(m("worker:*:jobs", "worker:w1:jobs"));
        assert!(!m("worker:*:jobs", "worker:w1:steps"));
        assert!(m("job?*", "job:*"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*:jobs", "worker:*:jobs"));
        assert!(m("", ""));
        assert!(!m("", "x"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_array(items: &[&str]) -> redis::Value {
        redis::Value::Array(
            items
                .iter()
                .map(|s| redis::Value::BulkString(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn hash_and_set_digests_do_not_depend_on_order() {
        let a = canonical_digest(KeyType::Hash, &bulk_array(&["f1", "v1", "f2", "v2"]));
        let b = canonical_digest(KeyType::Hash, &bulk_array(&["f2", "v2", "f1", "v1"]));
        assert_eq!(a, b);
        assert!(a.is_some());
        let c = canonical_digest(KeyType::Hash, &bulk_array(&["f1", "v2", "f2", "v1"]));
        assert_ne!(a, c, "values swapped between fields must differ");
        let s1 = canonical_digest(KeyType::Set, &bulk_array(&["a", "b"]));
        let s2 = canonical_digest(KeyType::Set, &bulk_array(&["b", "a"]));
        assert_eq!(s1, s2);
    }

    #[test]
    fn list_order_and_types_matter() {
        let l1 = canonical_digest(KeyType::List, &bulk_array(&["a", "b"]));
        let l2 = canonical_digest(KeyType::List, &bulk_array(&["b", "a"]));
        assert_ne!(l1, l2);
        let set = canonical_digest(KeyType::Set, &bulk_array(&["a", "b"]));
        assert_ne!(l1, set, "a list and a set with the same members differ");
        // Element boundaries count: ["ab"] is not ["a", "b"].
        assert_ne!(canonical_digest(KeyType::List, &bulk_array(&["ab"])), l1);
    }

    #[test]
    fn scores_compare_as_numbers() {
        let a = canonical_digest(KeyType::ZSet, &bulk_array(&["m", "1.5"]));
        let b = canonical_digest(KeyType::ZSet, &bulk_array(&["m", "1.50"]));
        assert_eq!(a, b);
        assert_ne!(a, canonical_digest(KeyType::ZSet, &bulk_array(&["m", "2"])));
    }

    #[test]
    fn a_vanished_key_has_no_digest() {
        assert_eq!(canonical_digest(KeyType::Hash, &redis::Value::Nil), None);
        assert_eq!(canonical_digest(KeyType::String, &redis::Value::Nil), None);
    }
}
