//! `redis.verify`: proves a copy complete and faithful. Counts first (keys per pattern
//! on both sides, BullMQ queue depths), then per key: type, TTL within a tolerance, and
//! a content digest, `DEBUG DIGEST-VALUE` where the servers allow it, else a canonical
//! client-side digest per type (never DUMP bytes, whose hash-table encodings serialise
//! in a per-process order), and for a stream what the digest does not see: its last id,
//! consumer groups, consumers and pending entries (owner, delivery count, idle time
//! within the TTL tolerance). Every key, or a uniform random sample.

use std::time::{Duration, Instant};

use super::act::Act;
use super::probe::ProbeContext;
use super::resolve::Resolver;
use super::runner::ActionError;
use crate::backend::BackendError;
use crate::backend::keyspace::{
    KeyType, canonical_digest, display_key, read_command, reply_int, reply_text, stream_difference,
    stream_state,
};
use crate::backend::rdb::entries::RdbEntry;
use crate::backend::rdb::values;
use crate::backend::redis::RedisBackend;
use crate::runbook::action::{DigestMode, References, VerifyParams};
use crate::value::Value;

use super::copy::{KeyRename, references};

/// Mismatches listed in the value (all are counted).
const LISTED: usize = 20;
/// Keys compared per pipelined round.
const BATCH: usize = 500;

/// What to verify and how.
#[derive(Clone, Debug)]
pub struct VerifyPlan {
    /// Glob of the keys on the source.
    pub pattern: String,
    /// The rename the copy applied.
    pub rename: Option<KeyRename>,
    /// Check this many keys chosen at random (`None`: all).
    pub sample: Option<u64>,
    /// Allowed difference between TTLs.
    pub ttl_tolerance: Duration,
    /// How values are compared.
    pub digest: DigestMode,
    /// The target need only contain the source's content (after a merge).
    pub contains: bool,
    /// With a rename: key names inside values were renamed too (`rewrite`).
    pub references: References,
}

impl VerifyPlan {
    /// The plan of a `redis.verify` step.
    pub fn of(params: &VerifyParams, resolver: &Resolver<'_>) -> Result<VerifyPlan, ActionError> {
        Ok(VerifyPlan {
            pattern: match &params.pattern {
                Some(pattern) => resolver.resolve(pattern)?,
                None => "*".into(),
            },
            rename: KeyRename::of(params.rename.as_ref())?,
            sample: params.sample,
            ttl_tolerance: params.ttl_tolerance.map_or(Duration::from_secs(2), |t| t.0),
            digest: params.digest,
            contains: params.contains,
            references: params.references,
        })
    }

    fn target_key(&self, key: &[u8]) -> Vec<u8> {
        match &self.rename {
            Some(rename) => rename.apply(key),
            None => key.to_vec(),
        }
    }

    /// The target's pattern, when it can be told (no rename, or a prefix rename of a
    /// pattern that starts with that prefix).
    fn target_pattern(&self) -> Option<String> {
        match &self.rename {
            None => Some(self.pattern.clone()),
            Some(KeyRename::Prefix { from, to }) => {
                let from = std::str::from_utf8(from).ok()?;
                let to = std::str::from_utf8(to).ok()?;
                self.pattern
                    .strip_prefix(from)
                    .map(|rest| format!("{to}{rest}"))
            }
            Some(KeyRename::Regex { .. }) => None,
        }
    }
}

/// A small xorshift generator for sampling (no cryptographic needs).
struct Sampler(u64);

impl Sampler {
    fn new() -> Sampler {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64 | 1;
        Sampler(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The keys to check: every key matching, or a reservoir sample of `sample` of them.
async fn keys_to_check(
    source: &RedisBackend,
    plan: &VerifyPlan,
) -> Result<(Vec<Vec<u8>>, u64), BackendError> {
    let mut cursor = 0;
    let mut seen = 0u64;
    let mut keys = Vec::new();
    let mut sampler = Sampler::new();
    loop {
        let (next, page) = source.scan_page(cursor, &plan.pattern, None, 1000).await?;
        for key in page {
            seen += 1;
            match plan.sample {
                Some(n) if keys.len() as u64 >= n => {
                    let slot = sampler.below(seen);
                    if slot < n {
                        keys[slot as usize] = key;
                    }
                }
                _ => keys.push(key),
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok((keys, seen));
        }
    }
}

/// Whether both servers answer `DEBUG DIGEST-VALUE` (often disabled: Redis 7 default,
/// managed services).
async fn debug_digest_allowed(source: &RedisBackend, target: &RedisBackend) -> bool {
    let probe = || {
        redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg("redis-move:probe")
            .clone()
    };
    source.raw(&probe()).await.is_ok() && target.raw(&probe()).await.is_ok()
}

/// Type, PTTL and digest of each key on one server.
async fn read_side(
    redis: &RedisBackend,
    keys: &[Vec<u8>],
    debug: bool,
) -> Result<Vec<Option<(String, i64, Vec<u8>)>>, BackendError> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
    }
    let replies = redis.pipeline(pipe).await?;
    let types: Vec<(String, i64)> = replies
        .chunks(2)
        .map(|pair| {
            (
                reply_text(&pair[0]),
                pair.get(1).and_then(reply_int).unwrap_or(-2),
            )
        })
        .collect();
    let mut pipe = redis::pipe();
    for (key, (key_type, _)) in keys.iter().zip(&types) {
        match (debug, KeyType::parse(key_type)) {
            (true, _) => {
                pipe.cmd("DEBUG").arg("DIGEST-VALUE").arg(key);
            }
            (false, Some(t)) => {
                pipe.add_command(read_command(t, key));
            }
            (false, None) => {
                pipe.cmd("TYPE").arg(key);
            }
        }
    }
    let values = redis.pipeline(pipe).await?;
    Ok(keys
        .iter()
        .zip(types)
        .zip(values)
        .map(|((_, (key_type, ttl)), value)| {
            if key_type == "none" {
                return None;
            }
            let digest = if debug {
                match value {
                    redis::Value::Array(mut parts) if !parts.is_empty() => {
                        reply_text(&parts.remove(0)).into_bytes()
                    }
                    other => reply_text(&other).into_bytes(),
                }
            } else {
                KeyType::parse(&key_type)
                    .and_then(|t| canonical_digest(t, &value))
                    .map(|d| d.to_vec())
                    .unwrap_or_default()
            };
            Some((key_type, ttl, digest))
        })
        .collect())
}

/// For each source key of `keys` whose value holds key names the rename changes, the
/// digest the target's value should have: that of the value with those names renamed.
async fn expect_renamed_references(
    source: &RedisBackend,
    keys: &[Vec<u8>],
    ours: &mut [Option<(String, i64, Vec<u8>)>],
    rename: &KeyRename,
) -> Result<(), BackendError> {
    let candidates: Vec<usize> = (0..keys.len())
        .filter(|&i| {
            matches!(&ours[i], Some((t, _, _)) if matches!(t.as_str(), "hash" | "set" | "zset"))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for &i in &candidates {
        pipe.cmd("DUMP").arg(&keys[i]);
    }
    for (&i, payload) in candidates.iter().zip(source.pipeline(pipe).await?) {
        let redis::Value::BulkString(payload) = payload else {
            continue;
        };
        if !references::may_refer(&keys[i], &payload) {
            continue;
        }
        let Ok((entry, _)) = RdbEntry::from_dump(&keys[i], &payload) else {
            continue;
        };
        let Ok(value) = values::decode(&entry) else {
            continue;
        };
        if let (Some(rewritten), Some((key_type, _, digest))) = (
            references::rewrite(&keys[i], &value, &|k| rename.apply(k)),
            ours[i].as_mut(),
        ) && let Some(t) = KeyType::parse(key_type)
        {
            *digest = canonical_digest(t, &references::as_reply(&rewritten))
                .map(|d| d.to_vec())
                .unwrap_or_default();
        }
    }
    Ok(())
}

/// How far apart two expiries are at least, in ms: each side's TTL was read at some
/// moment between its `(sent, answered)` times.
fn expiry_gap(
    (ttl, (sent, answered)): (i64, (i64, i64)),
    (other_ttl, (other_sent, other_answered)): (i64, (i64, i64)),
) -> i64 {
    let (earliest, latest) = (sent + ttl, answered + ttl);
    let (other_earliest, other_latest) = (other_sent + other_ttl, other_answered + other_ttl);
    (earliest - other_latest)
        .max(other_earliest - latest)
        .max(0)
}

/// Compares source and target per `plan`. `progress` gets (checked, total) now and then.
pub async fn verify(
    source: &RedisBackend,
    target: &RedisBackend,
    plan: &VerifyPlan,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Value, BackendError> {
    let started = Instant::now();
    let (keys, source_keys) = keys_to_check(source, plan).await?;
    let target_keys = match plan.target_pattern() {
        Some(pattern) => Some(target.scan_count(&pattern, None, 1000).await?),
        None => None,
    };
    let rewrites = match (&plan.rename, plan.references) {
        (Some(rename), References::Rewrite) => Some(rename),
        _ => None,
    };
    let debug = match plan.digest {
        // A value whose key names were renamed is compared by redis-move's own digest.
        _ if rewrites.is_some() => false,
        DigestMode::Client => false,
        DigestMode::Debug => {
            if !debug_digest_allowed(source, target).await {
                return Err(BackendError::Command(
                    "DEBUG DIGEST-VALUE is not allowed on both servers (digest: debug); use digest: client".into(),
                ));
            }
            true
        }
        DigestMode::Auto => debug_digest_allowed(source, target).await,
    };
    // BullMQ queue depths, when the keys compared are the queues' own.
    let depth = |queues: Value| match queues.field("total").and_then(|t| t.field("depth")) {
        Some(Value::Number(n)) => *n as u64,
        _ => 0,
    };
    let queue_depths =
        if plan.rename.is_none() && (plan.pattern == "*" || plan.pattern.starts_with("bull")) {
            let (mine, theirs) =
                tokio::try_join!(source.queues("bull", &[]), target.queues("bull", &[]))?;
            Some((depth(mine), depth(theirs)))
        } else {
            None
        };
    let tolerance = plan.ttl_tolerance.as_millis() as i64;
    let mut checked = 0u64;
    let mut missing = 0u64;
    let mut mismatched = 0u64;
    let mut listed: Vec<Value> = Vec::new();
    let note = |listed: &mut Vec<Value>, key: &[u8], why: String| {
        if listed.len() < LISTED {
            listed.push(Value::Text(format!("{}: {why}", display_key(key))));
        }
    };
    if let Some((mine, theirs)) = queue_depths
        && mine != theirs
    {
        mismatched += 1;
        note(
            &mut listed,
            b"bull:*",
            format!("queue depth {theirs}, expected {mine}"),
        );
    }
    let mut last_progress = Instant::now();
    for chunk in keys.chunks(BATCH) {
        let renamed: Vec<Vec<u8>> = chunk.iter().map(|k| plan.target_key(k)).collect();
        // When each side was read: a TTL is compared as the moment the key expires, so
        // that a side answering later (a cluster settling) does not look different.
        let timed = |side, keys| async move {
            let sent = started.elapsed().as_millis() as i64;
            let read = read_side(side, keys, debug).await?;
            Ok::<_, BackendError>(((sent, started.elapsed().as_millis() as i64), read))
        };
        let ((our_time, mut ours), (their_time, theirs)) =
            tokio::try_join!(timed(source, chunk), timed(target, &renamed))?;
        if let Some(rename) = rewrites {
            expect_renamed_references(source, chunk, &mut ours, rename).await?;
        }
        for (((source_key, key), mine), copy) in chunk.iter().zip(&renamed).zip(ours).zip(theirs) {
            let Some((key_type, ttl, digest)) = mine else {
                continue; // gone from the source meanwhile
            };
            checked += 1;
            let Some((copy_type, copy_ttl, copy_digest)) = copy else {
                missing += 1;
                note(&mut listed, key, "missing".into());
                continue;
            };
            let why = if copy_type != key_type {
                Some(format!("type {copy_type}, expected {key_type}"))
            } else if plan.contains {
                if !digest.is_empty() && copy_digest == digest {
                    None
                } else {
                    contained(source, source_key, target, key, &key_type).await?
                }
            } else if (ttl < 0) != (copy_ttl < 0)
                || (ttl >= 0 && expiry_gap((ttl, our_time), (copy_ttl, their_time)) > tolerance)
            {
                let show = |t: i64| {
                    if t < 0 {
                        "none".to_owned()
                    } else {
                        crate::runbook::units::format_duration(Duration::from_millis(t as u64))
                    }
                };
                Some(format!("TTL {}, expected {}", show(copy_ttl), show(ttl)))
            } else if digest.is_empty() || copy_digest != digest {
                Some("value differs".into())
            } else {
                None
            };
            let why = match why {
                None if key_type == "stream" => {
                    let (expected, actual) = tokio::try_join!(
                        stream_state(source, source_key),
                        stream_state(target, key)
                    )?;
                    stream_difference(&expected, &actual, tolerance)
                }
                other => other,
            };
            if let Some(why) = why {
                mismatched += 1;
                note(&mut listed, key, why);
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(checked, keys.len() as u64);
        }
    }
    let number = |n: u64| Value::Number(n as f64);
    let mut fields = vec![
        ("checked", number(checked)),
        ("missing", number(missing)),
        ("mismatched", number(mismatched)),
        ("mismatches", Value::List(listed)),
        ("source_keys", number(source_keys)),
        (
            "digest",
            Value::Text(if debug { "debug" } else { "client" }.into()),
        ),
        ("duration", Value::Duration(started.elapsed())),
    ];
    if let Some(n) = target_keys {
        fields.push(("target_keys", number(n)));
    }
    if let Some((mine, theirs)) = queue_depths {
        fields.push(("source_queue_depth", number(mine)));
        fields.push(("target_queue_depth", number(theirs)));
    }
    Ok(Value::Object(
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    ))
}

/// Whether `target_key` holds everything `key` holds (`None`), or what it lacks.
async fn contained(
    source: &RedisBackend,
    key: &[u8],
    target: &RedisBackend,
    target_key: &[u8],
    key_type: &str,
) -> Result<Option<String>, BackendError> {
    let Some(parsed) = KeyType::parse(key_type) else {
        return Ok(Some(format!("cannot compare a {key_type}")));
    };
    let (read_mine, read_theirs) = (read_command(parsed, key), read_command(parsed, target_key));
    let (mine, theirs) = tokio::try_join!(source.raw(&read_mine), target.raw(&read_theirs))?;
    Ok(lacks(parsed, &mine, &theirs))
}

/// What `theirs` lacks of `mine` (values read with `read_command`), or `None`.
fn lacks(key_type: KeyType, mine: &redis::Value, theirs: &redis::Value) -> Option<String> {
    let items = |v: &redis::Value| -> Vec<Vec<u8>> {
        match v {
            redis::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    redis::Value::BulkString(b) => b.clone(),
                    other => reply_text(other).into_bytes(),
                })
                .collect(),
            redis::Value::Set(items) => items
                .iter()
                .map(|i| match i {
                    redis::Value::BulkString(b) => b.clone(),
                    other => reply_text(other).into_bytes(),
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let (a, b) = (items(mine), items(theirs));
    let first_missing = match key_type {
        KeyType::Set | KeyType::List => {
            let present: std::collections::HashSet<&Vec<u8>> = b.iter().collect();
            a.iter().find(|m| !present.contains(m)).cloned()
        }
        // A merge keeps the target's value where both have one: the field must be
        // there, its value may differ.
        KeyType::Hash => {
            let present: std::collections::HashSet<&Vec<u8>> = b.chunks(2).map(|p| &p[0]).collect();
            a.chunks(2)
                .find(|p| !present.contains(&p[0]))
                .map(|p| p[0].clone())
        }
        KeyType::ZSet => {
            let present: std::collections::HashSet<&Vec<u8>> = b.chunks(2).map(|p| &p[0]).collect();
            a.chunks(2)
                .find(|p| !present.contains(&p[0]))
                .map(|p| p[0].clone())
        }
        // A merge keeps the target's string or stream: it exists, with the same type.
        KeyType::String | KeyType::Stream => None,
    };
    first_missing.map(|m| format!("lacks `{}` of the source", display_key(&m)))
}

/// Why a verification failed, in a sentence (`None`: source and target agree).
pub fn failure(value: &Value) -> Option<String> {
    let count = |name: &str| match value.field(name) {
        Some(Value::Number(n)) => *n as u64,
        _ => 0,
    };
    let (missing, mismatched) = (count("missing"), count("mismatched"));
    if missing + mismatched == 0 {
        return None;
    }
    let listed = match value.field("mismatches") {
        Some(Value::List(items)) => items
            .iter()
            .take(5)
            .map(Value::as_text)
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::new(),
    };
    Some(format!(
        "{missing} missing and {mismatched} different on the target, of {} keys checked: {listed}",
        count("checked")
    ))
}

/// Runs `redis.verify` as a step, with progress.
pub async fn perform(act: &Act<'_>, params: &VerifyParams) -> Result<Value, ActionError> {
    let (source, target) = act.pair(&params.source.value).await?;
    let plan = VerifyPlan::of(params, act.resolver())?;
    let progress = |checked: u64, total: u64| {
        act.progress_of(
            format!("{checked} of {total} keys checked"),
            None,
            crate::exec::event::Measure::of(
                checked as f64,
                total as f64,
                crate::exec::event::MeasureUnit::Keys,
            ),
        )
    };
    Ok(verify(&source, &target, &plan, &progress).await?)
}

/// Runs `redis.verify` as a probe (`plan --check`, `skip_if`, a trigger), without progress.
pub async fn probe(
    params: &VerifyParams,
    target: Option<&str>,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    let r = &ctx.resolver;
    let target = target.ok_or_else(|| ActionError::config("`redis.verify` has no redis target"))?;
    let source = ctx.connections.redis(&params.source.value, r).await?;
    let target = ctx.connections.redis(target, r).await?;
    let plan = VerifyPlan::of(params, r)?;
    Ok(verify(&source, &target, &plan, &|_, _| {}).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_read_at_different_moments_compare_by_when_they_fall() {
        // The target answered 2 s later: its TTL is 2 s shorter for the same expiry.
        assert_eq!(expiry_gap((10_000, (0, 5)), (8_000, (2_000, 2_005))), 0);
        // Read together, 3 s apart.
        assert_eq!(expiry_gap((10_000, (0, 5)), (13_000, (0, 5))), 2_995);
        assert_eq!(expiry_gap((13_000, (0, 5)), (10_000, (0, 5))), 2_995);
    }

    fn plan(pattern: &str, rename: Option<KeyRename>) -> VerifyPlan {
        VerifyPlan {
            pattern: pattern.into(),
            rename,
            sample: None,
            ttl_tolerance: Duration::from_secs(2),
            digest: DigestMode::Auto,
            contains: false,
            references: Default::default(),
        }
    }

    #[test]
    fn the_target_pattern_follows_a_prefix_rename() {
        assert_eq!(
            plan("job:*", None).target_pattern().as_deref(),
            Some("job:*")
        );
        let prefix = KeyRename::Prefix {
            from: b"job:".to_vec(),
            to: b"step:".to_vec(),
        };
        assert_eq!(
            plan("job:*", Some(prefix.clone()))
                .target_pattern()
                .as_deref(),
            Some("step:*")
        );
        assert_eq!(plan("*", Some(prefix)).target_pattern(), None);
    }

    #[test]
    fn failure_names_the_first_mismatches() {
        let value = Value::Object(
            [
                ("missing".to_owned(), Value::Number(1.0)),
                ("mismatched".to_owned(), Value::Number(1.0)),
                (
                    "mismatches".to_owned(),
                    Value::List(vec![
                        Value::Text("a: missing".into()),
                        Value::Text("b: value differs".into()),
                    ]),
                ),
            ]
            .into_iter()
            .collect(),
        );
        let text = failure(&value).unwrap();
        assert!(
            text.contains("1 missing and 1 different on the target"),
            "{text}"
        );
        assert!(text.contains("b: value differs"), "{text}");
        let clean = Value::Object(
            [("missing".to_owned(), Value::Number(0.0))]
                .into_iter()
                .collect(),
        );
        assert_eq!(failure(&clean), None);
    }

    #[test]
    fn containment_by_type() {
        let bulk = |items: &[&str]| {
            redis::Value::Array(
                items
                    .iter()
                    .map(|s| redis::Value::BulkString(s.as_bytes().to_vec()))
                    .collect(),
            )
        };
        assert_eq!(
            lacks(KeyType::Set, &bulk(&["a", "b"]), &bulk(&["b", "a", "c"])),
            None
        );
        assert!(
            lacks(KeyType::Set, &bulk(&["a", "d"]), &bulk(&["a", "c"]))
                .unwrap()
                .contains("`d`")
        );
        // A hash field must be there; the merge may have kept the target's value.
        assert_eq!(
            lacks(
                KeyType::Hash,
                &bulk(&["f", "1"]),
                &bulk(&["g", "2", "f", "1"])
            ),
            None
        );
        assert_eq!(
            lacks(KeyType::Hash, &bulk(&["f", "1"]), &bulk(&["f", "2"])),
            None
        );
        assert!(lacks(KeyType::Hash, &bulk(&["f", "1"]), &bulk(&["g", "2"])).is_some());
        assert_eq!(
            lacks(
                KeyType::ZSet,
                &bulk(&["m", "1"]),
                &bulk(&["m", "5", "n", "2"])
            ),
            None
        );
        assert_eq!(
            lacks(
                KeyType::String,
                &redis::Value::BulkString(b"x".to_vec()),
                &redis::Value::BulkString(b"y".to_vec())
            ),
            None
        );
    }

    #[test]
    fn sampling_stays_in_range() {
        let mut sampler = Sampler::new();
        for n in 1..200 {
            assert!(sampler.below(n) < n);
        }
    }
}
