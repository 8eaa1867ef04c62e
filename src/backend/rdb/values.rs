//! Values of an RDB decoded, and written as the commands that build them: for a target
//! older than the source, which refuses the source's DUMP payloads (`RESTORE` checks the
//! RDB version), the value is read (every encoding: listpack, ziplist, intset,
//! quicklist, skiplist, hash table, streams with their consumer groups and pending
//! entries) and written with `SET`, `RPUSH`, `SADD`, `ZADD`, `HSET`, `XADD`, `XSETID`,
//! `XGROUP` and `XCLAIM`, as the source's own AOF rewrite would write it, in commands of
//! at most [`CHUNK`] elements.
//!
//! A key's commands go to the target in `EVAL` calls of a small script: the first call
//! refuses a key that exists (`BUSYKEY`, as `RESTORE` without `REPLACE` does) or deletes
//! it (`replace`), then runs its commands; a big value's later calls append. The expiry
//! comes last, so a value is never seen complete without it.

use super::entries::{RdbEntry, RdbError, RdbReader};

/// Elements in one command (list items, set members, hash or sorted-set pairs).
pub const CHUNK: usize = 512;

/// Bytes of arguments in one `EVAL` call before the next call takes over.
const CALL_BYTES: usize = 1 << 20;

/// A value as its elements.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A string.
    String(Vec<u8>),
    /// A list's items, in order.
    List(Vec<Vec<u8>>),
    /// A set's members.
    Set(Vec<Vec<u8>>),
    /// A sorted set's members with their scores.
    SortedSet(Vec<(Vec<u8>, f64)>),
    /// A hash's fields and values.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// A stream.
    Stream(Stream),
}

/// A stream entry ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    fn from_raw(raw: &[u8]) -> Result<StreamId, RdbError> {
        let raw: &[u8; 16] = raw
            .try_into()
            .map_err(|_| corrupt("a stream ID of other than 16 bytes"))?;
        let (ms, seq) = raw.split_at(8);
        Ok(StreamId {
            ms: u64::from_be_bytes(ms.try_into().expect("8 bytes")),
            seq: u64::from_be_bytes(seq.try_into().expect("8 bytes")),
        })
    }

    fn arg(&self) -> Vec<u8> {
        format!("{}-{}", self.ms, self.seq).into_bytes()
    }
}

/// A stream entry: its ID and its fields with their values.
pub type StreamEntry = (StreamId, Vec<(Vec<u8>, Vec<u8>)>);

/// A stream: entries, IDs and consumer groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stream {
    /// Its entries (deleted ones left out), in ID order.
    pub entries: Vec<StreamEntry>,
    /// Entries deleted but still in its nodes (a pending entry may name one).
    pub deleted: Vec<StreamEntry>,
    /// The last ID it gave.
    pub last_id: StreamId,
    /// The greatest ID deleted (RDB 10+).
    pub max_deleted: Option<StreamId>,
    /// How many entries were ever added (RDB 10+).
    pub entries_added: Option<u64>,
    /// Its consumer groups.
    pub groups: Vec<ConsumerGroup>,
}

/// A consumer group of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerGroup {
    /// Its name.
    pub name: Vec<u8>,
    /// The last ID delivered to it.
    pub last_id: StreamId,
    /// How many entries it read (RDB 10+; unknown is left out).
    pub entries_read: Option<u64>,
    /// Its consumers.
    pub consumers: Vec<Consumer>,
    /// Its pending entries: ID, last delivery (Unix ms), deliveries.
    pub pending: Vec<(StreamId, u64, u64)>,
}

/// A consumer of a group, with the IDs pending for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Consumer {
    /// Its name.
    pub name: Vec<u8>,
    /// The IDs delivered to it and not acknowledged.
    pub pending: Vec<StreamId>,
}

fn corrupt(what: &str) -> RdbError {
    RdbError::Format(format!("a corrupt value: {what}"))
}

/// No more room is reserved ahead than this many elements: a count read from the value
/// is checked by the elements that follow it, not trusted for an allocation.
fn capacity(count: u64) -> usize {
    count.min(4096) as usize
}

/// Decodes the value of `entry`.
pub fn decode(entry: &RdbEntry) -> Result<Decoded, RdbError> {
    let mut rdb = RdbReader::value(entry.value.as_slice());
    let decoded = match entry.value_type {
        0 => Decoded::String(rdb.string()?),
        1 | 2 => {
            let count = rdb.length()?;
            let mut items = Vec::with_capacity(capacity(count));
            for _ in 0..count {
                items.push(rdb.string()?);
            }
            if entry.value_type == 1 {
                Decoded::List(items)
            } else {
                Decoded::Set(items)
            }
        }
        3 | 5 => {
            let count = rdb.length()?;
            let mut pairs = Vec::with_capacity(capacity(count));
            for _ in 0..count {
                let member = rdb.string()?;
                let score = if entry.value_type == 5 {
                    let mut b = [0u8; 8];
                    rdb.bytes(&mut b)?;
                    f64::from_le_bytes(b)
                } else {
                    text_score(&mut rdb)?
                };
                pairs.push((member, score));
            }
            Decoded::SortedSet(pairs)
        }
        4 => {
            let count = rdb.length()?;
            let mut pairs = Vec::with_capacity(capacity(count));
            for _ in 0..count {
                pairs.push((rdb.string()?, rdb.string()?));
            }
            Decoded::Hash(pairs)
        }
        9 => {
            return Err(RdbError::Format(
                "a zipmap hash (Redis 2.4): not supported".into(),
            ));
        }
        10 => Decoded::List(ziplist(&rdb.string()?)?),
        11 => Decoded::Set(intset(&rdb.string()?)?),
        12 | 17 => {
            let blob = rdb.string()?;
            let items = if entry.value_type == 12 {
                ziplist(&blob)?
            } else {
                listpack(&blob)?
            };
            Decoded::SortedSet(
                pairs(items, "a sorted set")?
                    .map(score_pair)
                    .collect::<Result<_, _>>()?,
            )
        }
        13 | 16 => {
            let blob = rdb.string()?;
            let items = if entry.value_type == 13 {
                ziplist(&blob)?
            } else {
                listpack(&blob)?
            };
            Decoded::Hash(pairs(items, "a hash")?.collect())
        }
        14 | 18 => {
            let nodes = rdb.length()?;
            let mut items = Vec::new();
            for _ in 0..nodes {
                if entry.value_type == 14 {
                    items.extend(ziplist(&rdb.string()?)?);
                    continue;
                }
                match rdb.length()? {
                    // A plain node: one big item as it is.
                    1 => items.push(rdb.string()?),
                    2 => items.extend(listpack(&rdb.string()?)?),
                    other => return Err(corrupt(&format!("a quicklist node of kind {other}"))),
                }
            }
            Decoded::List(items)
        }
        20 => Decoded::Set(listpack(&rdb.string()?)?),
        15 | 19 | 21 => Decoded::Stream(stream(&mut rdb, entry.value_type)?),
        6 | 7 => {
            return Err(RdbError::Format(
                "a module's data type (a key of a Redis module): redis-move cannot move it".into(),
            ));
        }
        other => {
            return Err(RdbError::Format(format!(
                "value type {other}: not supported"
            )));
        }
    };
    Ok(decoded)
}

/// A score written as text: a length byte (253, 254, 255: NaN, +inf, -inf) and digits.
fn text_score(rdb: &mut RdbReader<&[u8]>) -> Result<f64, RdbError> {
    Ok(match rdb.byte()? {
        253 => f64::NAN,
        254 => f64::INFINITY,
        255 => f64::NEG_INFINITY,
        len => number(&rdb.exact(u64::from(len))?)?,
    })
}

fn number(text: &[u8]) -> Result<f64, RdbError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| corrupt("a score that is not a number"))
}

fn score_pair((member, score): (Vec<u8>, Vec<u8>)) -> Result<(Vec<u8>, f64), RdbError> {
    Ok((member, number(&score)?))
}

fn pairs(
    items: Vec<Vec<u8>>,
    what: &str,
) -> Result<impl Iterator<Item = (Vec<u8>, Vec<u8>)>, RdbError> {
    if !items.len().is_multiple_of(2) {
        return Err(corrupt(&format!("{what} with an odd count of items")));
    }
    let mut items = items.into_iter();
    Ok(std::iter::from_fn(move || {
        Some((items.next()?, items.next()?))
    }))
}

/// The items of a listpack (integers as their decimal text).
pub fn listpack(lp: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    let bad = || corrupt("a listpack that ends early");
    if lp.len() < 7 || u32::from_le_bytes(lp[..4].try_into().expect("4 bytes")) as usize != lp.len()
    {
        return Err(corrupt("a listpack whose size is not its length"));
    }
    let at = |from: usize, len: usize| lp.get(from..from + len).ok_or_else(bad);
    let int = |v: i64| v.to_string().into_bytes();
    let mut items = Vec::new();
    let mut i = 6;
    loop {
        let first = *lp.get(i).ok_or_else(bad)?;
        if first == 0xFF {
            break;
        }
        let (item, len) = match first {
            b if b & 0x80 == 0 => (int(i64::from(b)), 1),
            b if b & 0xC0 == 0x80 => {
                let n = usize::from(b & 0x3F);
                (at(i + 1, n)?.to_vec(), 1 + n)
            }
            b if b & 0xE0 == 0xC0 => {
                let v = (i64::from(b & 0x1F) << 8) | i64::from(at(i + 1, 1)?[0]);
                (int(if v >= 1 << 12 { v - (1 << 13) } else { v }), 2)
            }
            b if b & 0xF0 == 0xE0 => {
                let n = (usize::from(b & 0x0F) << 8) | usize::from(at(i + 1, 1)?[0]);
                (at(i + 2, n)?.to_vec(), 2 + n)
            }
            0xF0 => {
                let n = u32::from_le_bytes(at(i + 1, 4)?.try_into().expect("4 bytes")) as usize;
                (at(i + 5, n)?.to_vec(), 5 + n)
            }
            0xF1 => {
                let v = i16::from_le_bytes(at(i + 1, 2)?.try_into().expect("2 bytes"));
                (int(i64::from(v)), 3)
            }
            0xF2 => {
                let b = at(i + 1, 3)?;
                let v = i64::from(b[0]) | (i64::from(b[1]) << 8) | (i64::from(b[2]) << 16);
                (int(if v >= 1 << 23 { v - (1 << 24) } else { v }), 4)
            }
            0xF3 => {
                let v = i32::from_le_bytes(at(i + 1, 4)?.try_into().expect("4 bytes"));
                (int(i64::from(v)), 5)
            }
            0xF4 => {
                let v = i64::from_le_bytes(at(i + 1, 8)?.try_into().expect("8 bytes"));
                (int(v), 9)
            }
            other => return Err(corrupt(&format!("listpack encoding 0x{other:02x}"))),
        };
        // Each item is followed by its own length, for walking backwards.
        let back = match len {
            0..=127 => 1,
            128..16383 => 2,
            16383..2097151 => 3,
            2097151..268435455 => 4,
            _ => 5,
        };
        items.push(item);
        i += len + back;
    }
    Ok(items)
}

/// The items of a ziplist (integers as their decimal text).
pub fn ziplist(zl: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    let bad = || corrupt("a ziplist that ends early");
    if zl.len() < 11
        || u32::from_le_bytes(zl[..4].try_into().expect("4 bytes")) as usize != zl.len()
    {
        return Err(corrupt("a ziplist whose size is not its length"));
    }
    let at = |from: usize, len: usize| zl.get(from..from + len).ok_or_else(bad);
    let int = |v: i64| v.to_string().into_bytes();
    let mut items = Vec::new();
    let mut i = 10;
    loop {
        let prev = *zl.get(i).ok_or_else(bad)?;
        if prev == 0xFF {
            break;
        }
        // The previous entry's length: one byte, or 0xFE and four.
        i += if prev == 0xFE { 5 } else { 1 };
        let enc = *zl.get(i).ok_or_else(bad)?;
        let (item, len) = match enc >> 6 {
            0 => {
                let n = usize::from(enc & 0x3F);
                (at(i + 1, n)?.to_vec(), 1 + n)
            }
            1 => {
                let n = (usize::from(enc & 0x3F) << 8) | usize::from(at(i + 1, 1)?[0]);
                (at(i + 2, n)?.to_vec(), 2 + n)
            }
            2 => {
                let n = u32::from_be_bytes(at(i + 1, 4)?.try_into().expect("4 bytes")) as usize;
                (at(i + 5, n)?.to_vec(), 5 + n)
            }
            _ => match enc {
                0xC0 => {
                    let v = i16::from_le_bytes(at(i + 1, 2)?.try_into().expect("2 bytes"));
                    (int(i64::from(v)), 3)
                }
                0xD0 => {
                    let v = i32::from_le_bytes(at(i + 1, 4)?.try_into().expect("4 bytes"));
                    (int(i64::from(v)), 5)
                }
                0xE0 => {
                    let v = i64::from_le_bytes(at(i + 1, 8)?.try_into().expect("8 bytes"));
                    (int(v), 9)
                }
                0xF0 => {
                    let b = at(i + 1, 3)?;
                    let v = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
                    (int(i64::from(v)), 4)
                }
                0xFE => (int(i64::from(at(i + 1, 1)?[0] as i8)), 2),
                0xF1..=0xFD => (int(i64::from(enc & 0x0F) - 1), 1),
                other => return Err(corrupt(&format!("ziplist encoding 0x{other:02x}"))),
            },
        };
        items.push(item);
        i += len;
    }
    Ok(items)
}

/// The members of an intset.
pub fn intset(blob: &[u8]) -> Result<Vec<Vec<u8>>, RdbError> {
    let (head, body) = blob
        .split_at_checked(8)
        .ok_or_else(|| corrupt("an intset without its header"))?;
    let width = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let count = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    if !matches!(width, 2 | 4 | 8) || body.len() != width * count {
        return Err(corrupt("an intset whose size is not its length"));
    }
    Ok(body
        .chunks_exact(width)
        .map(|b| {
            let v = match width {
                2 => i64::from(i16::from_le_bytes(b.try_into().expect("2 bytes"))),
                4 => i64::from(i32::from_le_bytes(b.try_into().expect("4 bytes"))),
                _ => i64::from_le_bytes(b.try_into().expect("8 bytes")),
            };
            v.to_string().into_bytes()
        })
        .collect())
}

fn integer(item: Option<&Vec<u8>>) -> Result<i64, RdbError> {
    item.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
        .ok_or_else(|| corrupt("a stream node without the number it needs"))
}

/// A stream's entry flags: deleted, and "same fields as the node's master entry".
const STREAM_DELETED: i64 = 1;
const STREAM_SAME_FIELDS: i64 = 2;

fn stream(rdb: &mut RdbReader<&[u8]>, value_type: u8) -> Result<Stream, RdbError> {
    let mut out = Stream::default();
    for _ in 0..rdb.length()? {
        let master = StreamId::from_raw(&rdb.string()?)?;
        let items = listpack(&rdb.string()?)?;
        stream_node(master, &items, &mut out.entries, &mut out.deleted)?;
    }
    let id = |rdb: &mut RdbReader<&[u8]>| -> Result<StreamId, RdbError> {
        Ok(StreamId {
            ms: rdb.length()?,
            seq: rdb.length()?,
        })
    };
    let _length = rdb.length()?;
    out.last_id = id(rdb)?;
    if value_type >= 19 {
        let _first = id(rdb)?;
        out.max_deleted = Some(id(rdb)?);
        out.entries_added = Some(rdb.length()?);
    }
    for _ in 0..rdb.length()? {
        let name = rdb.string()?;
        let last_id = id(rdb)?;
        // An unknown count is saved as -1.
        let entries_read = if value_type >= 19 {
            Some(rdb.length()?).filter(|n| *n != u64::MAX)
        } else {
            None
        };
        let mut pending = Vec::new();
        for _ in 0..rdb.length()? {
            let mut raw = [0u8; 16];
            rdb.bytes(&mut raw)?;
            let mut time = [0u8; 8];
            rdb.bytes(&mut time)?;
            pending.push((
                StreamId::from_raw(&raw)?,
                u64::from_le_bytes(time),
                rdb.length()?,
            ));
        }
        let mut consumers = Vec::new();
        for _ in 0..rdb.length()? {
            let name = rdb.string()?;
            let mut time = [0u8; 8];
            rdb.bytes(&mut time)?; // seen
            if value_type >= 21 {
                rdb.bytes(&mut time)?; // active
            }
            let mut ids = Vec::new();
            for _ in 0..rdb.length()? {
                let mut raw = [0u8; 16];
                rdb.bytes(&mut raw)?;
                ids.push(StreamId::from_raw(&raw)?);
            }
            consumers.push(Consumer { name, pending: ids });
        }
        out.groups.push(ConsumerGroup {
            name,
            last_id,
            entries_read,
            consumers,
            pending,
        });
    }
    Ok(out)
}

/// The entries of one stream node: a master entry (its fields), then entries as
/// differences from the master ID, each with its fields or the master's.
fn stream_node(
    master: StreamId,
    items: &[Vec<u8>],
    out: &mut Vec<StreamEntry>,
    deleted: &mut Vec<StreamEntry>,
) -> Result<(), RdbError> {
    let mut at = 0;
    let mut next = || {
        at += 1;
        items.get(at - 1)
    };
    let _count = integer(next())?;
    let _deleted = integer(next())?;
    let fields_count = integer(next())?;
    let master_fields: Vec<&Vec<u8>> = (0..fields_count)
        .map(|_| next().ok_or_else(|| corrupt("a stream node's master fields")))
        .collect::<Result<_, _>>()?;
    integer(next())?; // the master entry's terminator
    while let Some(flags) = next() {
        let flags = integer(Some(flags))?;
        let ms = master.ms.wrapping_add(integer(next())? as u64);
        let seq = master.seq.wrapping_add(integer(next())? as u64);
        let mut fields = Vec::new();
        if flags & STREAM_SAME_FIELDS != 0 {
            for field in &master_fields {
                let value = next().ok_or_else(|| corrupt("a stream entry's values"))?;
                fields.push(((*field).clone(), value.clone()));
            }
        } else {
            for _ in 0..integer(next())? {
                let field = next().ok_or_else(|| corrupt("a stream entry's fields"))?;
                let value = next().ok_or_else(|| corrupt("a stream entry's values"))?;
                fields.push((field.clone(), value.clone()));
            }
        }
        integer(next())?; // the entry's item count, for walking backwards
        if flags & STREAM_DELETED == 0 {
            out.push((StreamId { ms, seq }, fields));
        } else {
            deleted.push((StreamId { ms, seq }, fields));
        }
    }
    Ok(())
}

/// What the target's commands accept, by its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    /// Redis 7.0+: `XSETID ... ENTRIESADDED ... MAXDELETEDID`, `XGROUP CREATE ... ENTRIESREAD`.
    pub stream_counters: bool,
    /// Redis 6.2+: `XGROUP CREATECONSUMER`.
    pub create_consumer: bool,
    /// Redis 7.0+: `EXPIRE key seconds NX|XX|GT|LT` (and the other expiry commands).
    pub expire_conditions: bool,
}

impl Dialect {
    /// The dialect of Redis `version` (`7.0.15`; Valkey speaks Redis 7.2's).
    pub fn of_version(version: &str) -> Dialect {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let release = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Dialect {
            stream_counters: release >= (7, 0),
            create_consumer: release >= (6, 2),
            expire_conditions: release >= (7, 0),
        }
    }
}

/// One command: its name and arguments.
pub type Command = Vec<Vec<u8>>;

fn command(name: &str, key: &[u8], args: impl IntoIterator<Item = Vec<u8>>) -> Command {
    let mut out = vec![name.as_bytes().to_vec(), key.to_vec()];
    out.extend(args);
    out
}

fn float(f: f64) -> Vec<u8> {
    // Rust prints the shortest text that reads back as the same double.
    if f == f64::INFINITY {
        b"+inf".to_vec()
    } else if f == f64::NEG_INFINITY {
        b"-inf".to_vec()
    } else if f != 0.0 && !(1e-4..1e16).contains(&f.abs()) {
        format!("{f:e}").into_bytes()
    } else {
        f.to_string().into_bytes()
    }
}

/// The commands that build `value` at `key` (on an empty key), in chunks of [`CHUNK`]
/// elements.
pub fn commands(key: &[u8], value: &Decoded, dialect: Dialect) -> Vec<Command> {
    let chunked = |name: &str, items: Vec<Vec<u8>>, width: usize| -> Vec<Command> {
        items
            .chunks(CHUNK * width)
            .map(|chunk| command(name, key, chunk.iter().cloned()))
            .collect()
    };
    match value {
        Decoded::String(s) => vec![command("SET", key, [s.clone()])],
        Decoded::List(items) => chunked("RPUSH", items.clone(), 1),
        Decoded::Set(members) => chunked("SADD", members.clone(), 1),
        Decoded::SortedSet(pairs) => chunked(
            "ZADD",
            pairs
                .iter()
                .flat_map(|(m, s)| [float(*s), m.clone()])
                .collect(),
            2,
        ),
        Decoded::Hash(pairs) => chunked(
            "HSET",
            pairs
                .iter()
                .flat_map(|(f, v)| [f.clone(), v.clone()])
                .collect(),
            2,
        ),
        Decoded::Stream(stream) => stream_commands(key, stream, dialect),
    }
}

/// A stream as its source's AOF rewrite writes it.
fn stream_commands(key: &[u8], stream: &Stream, dialect: Dialect) -> Vec<Command> {
    let mut out = Vec::new();
    // A pending entry whose message was deleted (or trimmed) is still pending: it is
    // added back (its fields when the node still has them), claimed, and deleted again,
    // as XCLAIM cannot make a pending entry of an ID the stream does not have.
    let live: std::collections::HashSet<StreamId> =
        stream.entries.iter().map(|(id, _)| *id).collect();
    let mut revived: Vec<StreamEntry> = stream
        .groups
        .iter()
        .flat_map(|g| g.pending.iter().map(|(id, _, _)| *id))
        .filter(|id| !live.contains(id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|id| {
            let fields = stream
                .deleted
                .iter()
                .find(|(d, _)| *d == id)
                .map(|(_, f)| f.clone())
                .unwrap_or_else(|| vec![(b"x".to_vec(), b"y".to_vec())]);
            (id, fields)
        })
        .collect();
    let mut all: Vec<&StreamEntry> = stream.entries.iter().chain(&revived).collect();
    all.sort_by_key(|(id, _)| *id);
    for (id, fields) in all {
        out.push(command(
            "XADD",
            key,
            std::iter::once(id.arg())
                .chain(fields.iter().flat_map(|(f, v)| [f.clone(), v.clone()])),
        ));
    }
    if stream.entries.is_empty() && revived.is_empty() {
        // An empty stream: one entry added and trimmed away at once.
        out.push(command(
            "XADD",
            key,
            [
                b"MAXLEN".to_vec(),
                b"0".to_vec(),
                b"0-1".to_vec(),
                b"x".to_vec(),
                b"y".to_vec(),
            ],
        ));
    }
    let mut setid = vec![stream.last_id.arg()];
    if dialect.stream_counters
        && let (Some(added), Some(deleted)) = (stream.entries_added, stream.max_deleted)
    {
        setid.extend([
            b"ENTRIESADDED".to_vec(),
            added.to_string().into_bytes(),
            b"MAXDELETEDID".to_vec(),
            deleted.arg(),
        ]);
    }
    out.push(command("XSETID", key, setid));
    for group in &stream.groups {
        let mut create = vec![
            b"XGROUP".to_vec(),
            b"CREATE".to_vec(),
            key.to_vec(),
            group.name.clone(),
            group.last_id.arg(),
        ];
        if dialect.stream_counters
            && let Some(read) = group.entries_read
        {
            create.extend([b"ENTRIESREAD".to_vec(), read.to_string().into_bytes()]);
        }
        out.push(create);
        let deliveries: std::collections::HashMap<StreamId, (u64, u64)> = group
            .pending
            .iter()
            .map(|(id, time, count)| (*id, (*time, *count)))
            .collect();
        for consumer in &group.consumers {
            if dialect.create_consumer {
                out.push(vec![
                    b"XGROUP".to_vec(),
                    b"CREATECONSUMER".to_vec(),
                    key.to_vec(),
                    group.name.clone(),
                    consumer.name.clone(),
                ]);
            }
            for id in &consumer.pending {
                let Some((time, count)) = deliveries.get(id) else {
                    continue;
                };
                out.push(command(
                    "XCLAIM",
                    key,
                    [
                        group.name.clone(),
                        consumer.name.clone(),
                        b"0".to_vec(),
                        id.arg(),
                        b"TIME".to_vec(),
                        time.to_string().into_bytes(),
                        b"RETRYCOUNT".to_vec(),
                        count.to_string().into_bytes(),
                        b"JUSTID".to_vec(),
                        b"FORCE".to_vec(),
                    ],
                ));
            }
        }
    }
    if !revived.is_empty() {
        out.push(command(
            "XDEL",
            key,
            revived.drain(..).map(|(id, _)| id.arg()),
        ));
    }
    out
}

/// `XCLAIM` as Redis 7 applies it (`ARGV`: its arguments, key first): an ID the stream
/// no longer has leaves the group's pending entries; the others are claimed.
const CLAIM_SCRIPT: &str = r"
local key, group = KEYS[1], ARGV[2]
local options = {IDLE = 1, TIME = 1, RETRYCOUNT = 1, FORCE = 1, JUSTID = 1, LASTID = 1}
local claim = {ARGV[1], ARGV[2], ARGV[3], ARGV[4]}
local i = 5
while i <= #ARGV and not options[string.upper(ARGV[i])] do
  if #redis.call('XRANGE', key, ARGV[i], ARGV[i]) == 0 then
    redis.call('XACK', key, group, ARGV[i])
  else
    table.insert(claim, ARGV[i])
  end
  i = i + 1
end
if #claim == 4 then
  return {}
end
for j = i, #ARGV do
  table.insert(claim, ARGV[j])
end
return redis.call('XCLAIM', unpack(claim))
";

/// How the first call of a key treats one that exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse it with `BUSYKEY`, writing nothing.
    Refuse,
    /// Delete it first.
    Replace,
}

/// Runs a key's commands: `ARGV[1]` is `refuse`, `replace` or `append`, then each command
/// as its argument count and its arguments.
const SCRIPT: &str = r"
local key = KEYS[1]
local mode = ARGV[1]
if mode == 'refuse' and redis.call('EXISTS', key) == 1 then
  return redis.error_reply('BUSYKEY Target key name already exists.')
elseif mode == 'replace' then
  redis.call('DEL', key)
end
local i = 2
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return redis.status_reply('OK')
";

/// The `EVAL` calls that write `value` at `key` with its absolute expiry: the first
/// refuses or replaces an existing key, the others append, the expiry is set last. A
/// reply other than `OK` to the first means nothing was written.
pub fn calls(
    key: &[u8],
    value: &Decoded,
    expires_at_ms: Option<i64>,
    existing: Existing,
    dialect: Dialect,
) -> Vec<redis::Cmd> {
    call_args(key, value, expires_at_ms, existing, dialect)
        .iter()
        .map(|args| to_cmd(args))
        .collect()
}

/// A command of `args` (its name first).
pub fn to_cmd(args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
    for arg in &args[1..] {
        cmd.arg(arg.as_slice());
    }
    cmd
}

/// [`calls`], as the arguments of each.
pub fn call_args(
    key: &[u8],
    value: &Decoded,
    expires_at_ms: Option<i64>,
    existing: Existing,
    dialect: Dialect,
) -> Vec<Command> {
    let mut commands = commands(key, value, dialect);
    if let Some(at) = expires_at_ms {
        commands.push(command("PEXPIREAT", key, [at.to_string().into_bytes()]));
    }
    let mut calls = Vec::new();
    let mut call = None::<(Command, usize)>;
    for cmd in commands {
        let size: usize = cmd.iter().map(Vec::len).sum();
        if call
            .as_ref()
            .is_some_and(|(_, bytes)| bytes + size > CALL_BYTES)
        {
            calls.extend(call.take().map(|(c, _)| c));
        }
        let (eval, bytes) = call.get_or_insert_with(|| {
            let mode = match (calls.is_empty(), existing) {
                (false, _) => "append",
                (true, Existing::Refuse) => "refuse",
                (true, Existing::Replace) => "replace",
            };
            let eval = vec![
                b"EVAL".to_vec(),
                SCRIPT.as_bytes().to_vec(),
                b"1".to_vec(),
                key.to_vec(),
                mode.as_bytes().to_vec(),
            ];
            (eval, 0)
        });
        eval.push(cmd.len().to_string().into_bytes());
        eval.extend(cmd);
        *bytes += size;
    }
    calls.extend(call.map(|(c, _)| c));
    calls
}

impl Dialect {
    /// A write that a Redis 7 source replicated, as a server of this dialect takes it:
    /// for an older one, the stream counters (`ENTRIESADDED`, `MAXDELETEDID`,
    /// `ENTRIESREAD`, which Redis 7 writes in what it replicates for `XREADGROUP`,
    /// `XSETID`, `XGROUP`) are left out, and so is the condition of an expiry (`NX`,
    /// `XX`, `GT`, `LT`: the source replicates the write only when it held).
    pub fn adapt(&self, mut args: Command) -> Command {
        let name = args[0].to_ascii_uppercase();
        // Redis 7 replicates a claim of a deleted entry as XCLAIM (the replica drops
        // the pending entry); Redis 6 would keep it: the script drops it the same way.
        if !self.stream_counters && name == b"XCLAIM" && args.len() > 5 {
            let mut eval = vec![
                b"EVAL".to_vec(),
                CLAIM_SCRIPT.as_bytes().to_vec(),
                b"1".to_vec(),
                args[1].clone(),
            ];
            eval.extend(args.drain(1..));
            return eval;
        }
        if !self.expire_conditions
            && matches!(
                name.as_slice(),
                b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT"
            )
        {
            args.truncate(3);
            return args;
        }
        if self.stream_counters {
            return args;
        }
        let sub = args
            .get(1)
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        // Options come after the fixed arguments (a key may be named like one).
        let (options, from): (&[&[u8]], usize) = match (name.as_slice(), sub.as_slice()) {
            (b"XSETID", _) => (&[b"ENTRIESADDED", b"MAXDELETEDID"], 3),
            (b"XGROUP", b"CREATE" | b"SETID") => (&[b"ENTRIESREAD"], 5),
            _ => return args,
        };
        let mut i = from;
        while i < args.len() {
            if options.iter().any(|o| args[i].eq_ignore_ascii_case(o)) {
                args.drain(i..(i + 2).min(args.len()));
            } else {
                i += 1;
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listpack_items_of_every_encoding() {
        // Built by hand as lpAppend writes them: 7-bit int, 6-bit string, 13-bit
        // negative int, 16-bit int, 24-bit negative int, 32-bit and 64-bit ints.
        let mut body: Vec<u8> = Vec::new();
        let mut push = |entry: &[u8]| {
            body.extend_from_slice(entry);
            body.push(entry.len() as u8);
        };
        push(&[5]);
        push(&[0x80 | 3, b'a', b'b', b'c']);
        push(&[0xC0 | 0x1F, 0xFF]); // -1
        push(&[0xF1, 0x39, 0x30]); // 12345
        push(&[0xF2, 0xFF, 0xFF, 0xFF]); // -1
        push(&[0xF3, 0x00, 0x00, 0x00, 0x40]); // 1 << 30
        push(&[0xF4, 0, 0, 0, 0, 0, 0, 0, 0x80]); // i64::MIN
        let total = (6 + body.len() + 1) as u32;
        let mut lp = total.to_le_bytes().to_vec();
        lp.extend_from_slice(&7u16.to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xFF);
        let items: Vec<String> = listpack(&lp)
            .unwrap()
            .into_iter()
            .map(|i| String::from_utf8(i).unwrap())
            .collect();
        assert_eq!(
            items,
            [
                "5",
                "abc",
                "-1",
                "12345",
                "-1",
                "1073741824",
                &i64::MIN.to_string()
            ]
        );
    }

    #[test]
    fn a_truncated_container_is_corruption_not_a_panic() {
        let lp = [10, 0, 0, 0, 1, 0, 0x80 | 9, b'a', 1, 0xFF];
        assert!(listpack(&lp).is_err());
        assert!(listpack(&[1, 2]).is_err());
        assert!(ziplist(&[11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]).is_err());
        assert!(intset(&[2, 0, 0, 0, 5, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn ziplist_items_of_every_encoding() {
        let mut body: Vec<u8> = Vec::new();
        for entry in [
            &[0x02, b'h', b'i'][..],
            &[0xF1 + 7],               // immediate 7 (4 bits, less one)
            &[0xFE, 0xFB],             // int8 -5
            &[0xC0, 0x39, 0x30],       // int16 12345
            &[0xF0, 0xFF, 0xFF, 0x7F], // int24 8388607
        ] {
            body.push(0); // previous length (not read)
            body.extend_from_slice(entry);
        }
        let total = (10 + body.len() + 1) as u32;
        let mut zl = total.to_le_bytes().to_vec();
        zl.extend_from_slice(&[0; 4]);
        zl.extend_from_slice(&5u16.to_le_bytes());
        zl.extend_from_slice(&body);
        zl.push(0xFF);
        let items: Vec<String> = ziplist(&zl)
            .unwrap()
            .into_iter()
            .map(|i| String::from_utf8(i).unwrap())
            .collect();
        assert_eq!(items, ["hi", "7", "-5", "12345", "8388607"]);
    }

    #[test]
    fn a_big_value_is_written_in_calls_that_append_and_the_expiry_comes_last() {
        let items: Vec<Vec<u8>> = (0..5000).map(|i| vec![b'x'; 300 + i % 7]).collect();
        let calls = calls(
            b"k",
            &Decoded::List(items),
            Some(42),
            Existing::Refuse,
            Dialect::of_version("6.2.14"),
        );
        assert!(calls.len() > 1, "1.5 MB in one call");
        let args = |c: &redis::Cmd| -> Vec<Vec<u8>> {
            c.args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => b.to_vec(),
                    _ => Vec::new(),
                })
                .collect()
        };
        assert_eq!(args(&calls[0])[4], b"refuse");
        assert!(calls[1..].iter().all(|c| args(c)[4] == b"append"));
        let last = args(calls.last().unwrap());
        assert_eq!(
            &last[last.len() - 3..],
            [b"PEXPIREAT".to_vec(), b"k".to_vec(), b"42".to_vec()]
        );
    }

    #[test]
    fn redis_7_stream_counters_are_left_out_for_redis_6() {
        let args =
            |text: &str| -> Command { text.split(' ').map(|a| a.as_bytes().to_vec()).collect() };
        let old = Dialect::of_version("6.2.14");
        assert_eq!(
            old.adapt(args("XSETID k 5-0 ENTRIESADDED 9 MAXDELETEDID 3-0")),
            args("XSETID k 5-0")
        );
        assert_eq!(
            old.adapt(args("XGROUP SETID k g 5-0 entriesread 4")),
            args("XGROUP SETID k g 5-0")
        );
        // A key or group named like an option is not an option.
        assert_eq!(
            old.adapt(args("XGROUP CREATE ENTRIESREAD ENTRIESREAD $ MKSTREAM")),
            args("XGROUP CREATE ENTRIESREAD ENTRIESREAD $ MKSTREAM")
        );
        assert_eq!(
            old.adapt(args("PEXPIREAT k 1700000000000 NX")),
            args("PEXPIREAT k 1700000000000")
        );
        let claim = old.adapt(args("XCLAIM k g c 0 1-0 JUSTID FORCE"));
        assert_eq!(claim[0], b"EVAL");
        assert_eq!(&claim[3..], &args("k k g c 0 1-0 JUSTID FORCE")[..]);
        let new = Dialect::of_version("7.0.15");
        assert_eq!(
            new.adapt(args("XGROUP SETID k g 5-0 ENTRIESREAD 4")),
            args("XGROUP SETID k g 5-0 ENTRIESREAD 4")
        );
    }

    #[test]
    fn scores_are_written_so_they_read_back_the_same() {
        for f in [
            0.1,
            1.0 / 3.0,
            -2.5e-300,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let text = String::from_utf8(float(f)).unwrap();
            let back: f64 = text.replace("inf", "infinity").parse().unwrap();
            assert_eq!(back, f, "{text}");
        }
    }
}
