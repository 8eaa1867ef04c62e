//! `redis.copy`: copies keys from one server to another (or onto itself under new
//! names) without ever modifying the source, fast and resumable.
//!
//! One task SCANs the source (MATCH, COUNT, TYPE; never KEYS) into batches; several
//! dump workers, each on its own source connection, read each batch with one pipeline
//! of PTTL + DUMP; several restore workers, each on its own target connection, write
//! it with one pipeline of RESTORE. Bounded channels join the stages, so memory stays
//! bounded whatever the dataset, and several batches are in flight on both servers.
//! Keys larger than `chunk_above` are copied element by element into a temporary key
//! that is renamed into place, with the TTL applied last.
//!
//! The [`ledger`] records each batch's keys before it is written and which were
//! created after, so a rollback deletes exactly those; a checkpoint of the SCAN cursor
//! every second lets a killed copy resume where it stopped.

pub mod ledger;
pub mod references;
pub mod step;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::TryFutureExt;
use tokio::sync::mpsc;

use crate::backend::BackendError;
use crate::backend::keyspace::{
    KeyType, canonical_digest, copy_in_chunks, display_key, read_command, reply_int, reply_text,
};
use crate::backend::rdb::values::{self, Decoded, Dialect};
use crate::backend::redis::RedisBackend;
use crate::runbook::action::{ExistingKeys, References, Rename};
use crate::value::Value;
use ledger::{Change, Checkpoint, Counters, LedgerState, LedgerWriter, Replaced};

/// Keys per batch when the step sets none.
pub const DEFAULT_BATCH: usize = 1000;
/// Connections to each server when the step sets none.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Keys above this many bytes (MEMORY USAGE) are copied in chunks, when the step sets
/// no `chunk_above`.
pub const DEFAULT_CHUNK_ABOVE: u64 = 64 * 1024 * 1024;
/// How often the ledger gets a checkpoint and the operator a progress line.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How keys are renamed on the way.
#[derive(Clone, Debug)]
pub enum KeyRename {
    /// Keys starting with `from` get `to` instead.
    Prefix {
        /// The prefix replaced.
        from: Vec<u8>,
        /// Its replacement.
        to: Vec<u8>,
    },
    /// Keys matching `regex` are rewritten with `replace` (`$1` groups).
    Regex {
        /// Matched against the whole key.
        regex: regex::bytes::Regex,
        /// The replacement.
        replace: Vec<u8>,
    },
}

impl KeyRename {
    /// The rename a runbook asks for, compiled (a regex matches the whole key).
    pub fn of(rename: Option<&Rename>) -> Result<Option<KeyRename>, BackendError> {
        Ok(match rename {
            None => None,
            Some(Rename {
                from: Some(from),
                to: Some(to),
                ..
            }) => Some(KeyRename::Prefix {
                from: from.as_bytes().to_vec(),
                to: to.as_bytes().to_vec(),
            }),
            Some(Rename {
                regex: Some(regex),
                replace: Some(replace),
                ..
            }) => Some(KeyRename::Regex {
                regex: regex::bytes::RegexBuilder::new(&format!("^(?:{regex})$"))
                    .size_limit(crate::runbook::expect::REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| BackendError::Config(format!("rename regex: {e}")))?,
                replace: replace.as_bytes().to_vec(),
            }),
            Some(_) => {
                return Err(BackendError::Config(
                    "`rename` takes `from` + `to` or `regex` + `replace`".into(),
                ));
            }
        })
    }

    /// The target name of `key` (unchanged when the rename does not match it).
    pub fn apply(&self, key: &[u8]) -> Vec<u8> {
        match self {
            KeyRename::Prefix { from, to } => match key.strip_prefix(from.as_slice()) {
                Some(rest) => [to.as_slice(), rest].concat(),
                None => key.to_vec(),
            },
            KeyRename::Regex { regex, replace } => {
                regex.replace(key, replace.as_slice()).into_owned()
            }
        }
    }
}

/// What to copy and how.
#[derive(Clone, Debug)]
pub struct CopyPlan {
    /// Glob of the keys.
    pub pattern: String,
    /// Only keys of this type.
    pub key_type: Option<String>,
    /// Rename on the way.
    pub rename: Option<KeyRename>,
    /// Keys that exist on the target.
    pub existing: ExistingKeys,
    /// Keys per batch.
    pub batch: usize,
    /// Keys above this many bytes are copied in chunks (`None`: never).
    pub chunk_above: Option<u64>,
    /// Source and target are the same keyspace (found out at the start of the copy): a
    /// key the rename leaves unchanged would be written onto itself.
    pub same_keyspace: bool,
    /// With a rename: key names inside values (BullMQ flows).
    pub references: References,
}

impl CopyPlan {
    fn target_key(&self, key: &[u8]) -> Vec<u8> {
        match &self.rename {
            Some(rename) => rename.apply(key),
            None => key.to_vec(),
        }
    }
}

/// Progress as the copy goes.
#[derive(Clone, Copy, Debug)]
pub struct CopyProgress {
    /// Counters so far (including before a resume).
    pub counters: Counters,
    /// Time spent by this process.
    pub elapsed: Duration,
    /// Keys copied by this process (for its rate).
    pub copied_here: u64,
    /// Bytes moved by this process.
    pub bytes_here: u64,
    /// Keys on the source, when the whole keyspace is copied.
    pub total: Option<u64>,
}

impl CopyProgress {
    /// Keys done of the source's keys, when the whole keyspace is copied.
    pub fn measure(&self) -> Option<crate::exec::event::Measure> {
        let c = &self.counters;
        let done = c.copied + c.skipped + c.replaced + c.merged + c.vanished;
        self.total.map(|total| {
            crate::exec::event::Measure::of(
                done as f64,
                total as f64,
                crate::exec::event::MeasureUnit::Keys,
            )
        })
    }

    /// One line for the operator.
    pub fn line(&self) -> String {
        let seconds = self.elapsed.as_secs_f64().max(0.001);
        let c = &self.counters;
        let done = c.copied + c.skipped + c.replaced + c.merged + c.vanished;
        let of = self.total.map(|t| format!(" of ~{t}")).unwrap_or_default();
        format!(
            "{done}{of} keys ({} copied, {} merged, {} skipped), {:.1} MB, {:.0} keys/s, {:.1} MB/s",
            c.copied + c.replaced,
            c.merged,
            c.skipped,
            c.bytes as f64 / 1e6,
            self.copied_here as f64 / seconds,
            self.bytes_here as f64 / 1e6 / seconds,
        )
    }
}

/// The value a copy records.
pub fn counters_value(counters: &Counters, elapsed: Duration, copied_here: u64) -> Value {
    let seconds = elapsed.as_secs_f64().max(0.001);
    Value::Object(
        [
            ("copied", counters.copied + counters.replaced),
            ("created", counters.copied),
            ("replaced", counters.replaced),
            ("skipped", counters.skipped),
            ("vanished", counters.vanished),
            ("merged", counters.merged),
            ("chunked", counters.chunked),
            ("bytes", counters.bytes),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Number(v as f64)))
        .chain([(
            "keys_per_second".to_owned(),
            Value::Number((copied_here as f64 / seconds).round()),
        )])
        .collect(),
    )
}

struct Scanned {
    seq: u64,
    cursor_after: u64,
    keys: Vec<Vec<u8>>,
}

struct Item {
    key: Vec<u8>,
    target_key: Vec<u8>,
    payload: Vec<u8>,
    /// Remaining TTL when read, in ms (`None`: persistent).
    ttl_ms: Option<u64>,
    /// The value with the key names in it renamed, written as commands instead of
    /// the payload (`references: rewrite`).
    rewritten: Option<Decoded>,
}

struct Dumped {
    seq: u64,
    cursor_after: u64,
    items: Vec<Item>,
    /// Keys to copy in chunks: (source key, target key).
    large: Vec<(Vec<u8>, Vec<u8>)>,
    vanished: u64,
    /// When the PTTLs were read (remaining TTLs count from here).
    read_at: Instant,
}

struct Done {
    seq: u64,
    cursor_after: u64,
    counters: Counters,
}

/// Keys an interrupted run created (or may have) after its last checkpoint.
struct Inherited {
    created: HashSet<Vec<u8>>,
    unconfirmed: HashSet<Vec<u8>>,
}

/// What the workers share.
struct Shared<'a> {
    plan: &'a CopyPlan,
    /// The target's clock, for expiries written as absolute times.
    clock: TargetClock,
    ledger: Mutex<LedgerWriter>,
    inherited: Inherited,
    /// Where temporary keys of chunked copies are named from.
    temporary_prefix: String,
}

impl Shared<'_> {
    fn ledger<T>(
        &self,
        write: impl FnOnce(&mut LedgerWriter) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut ledger = self
            .ledger
            .lock()
            .map_err(|_| BackendError::Local("the copy ledger writer panicked".into()))?;
        write(&mut ledger)
    }
}

/// Copies per `plan` from `sources` to `targets` (one connection each per worker),
/// journaling in the ledger at `ledger_path`; resumes from it when it holds an earlier
/// attempt. Stops at a checkpoint, with an error, when `cancel` fires.
///
/// Into or out of a Redis Cluster, a write whose node went away (a failover, a slot
/// moving) leaves its batch uncertain: the copy then resumes from its own ledger, as a
/// `resume` after a crash would (keys it may have written are claimed only when they
/// hold the source's value), for as long as the cluster's `settle` time allows.
pub async fn copy(
    sources: &[RedisBackend],
    targets: &[RedisBackend],
    plan: &CopyPlan,
    ledger_path: &Path,
    cancel: &tokio_util::sync::CancellationToken,
    progress: &(dyn Fn(&CopyProgress) + Send + Sync),
) -> Result<Value, BackendError> {
    let settle = sources
        .iter()
        .take(1)
        .chain(targets.iter().take(1))
        .filter_map(|r| r.cluster().map(|c| c.settle()))
        .max();
    let mut failing_since: Option<Instant> = None;
    loop {
        let attempt_started = Instant::now();
        match copy_once(sources, targets, plan, ledger_path, cancel, progress).await {
            Err(e @ (BackendError::Unreachable(_) | BackendError::Timeout(_)))
                if settle.is_some() && !cancel.is_cancelled() =>
            {
                // A failure after a while of progress starts a new wait.
                if attempt_started.elapsed() > Duration::from_secs(5) {
                    failing_since = None;
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                if settle.is_some_and(|settle| since.elapsed() > settle) {
                    return Err(e);
                }
                tracing::warn!(
                    "the cluster changed under the copy ({e}): resuming from its ledger"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

/// One attempt of [`copy`], from the ledger's last checkpoint.
async fn copy_once(
    sources: &[RedisBackend],
    targets: &[RedisBackend],
    plan: &CopyPlan,
    ledger_path: &Path,
    cancel: &tokio_util::sync::CancellationToken,
    progress: &(dyn Fn(&CopyProgress) + Send + Sync),
) -> Result<Value, BackendError> {
    let started = Instant::now();
    let (Some(first_source), Some(first_target)) = (sources.first(), targets.first()) else {
        return Err(BackendError::Config("a copy needs connections".into()));
    };
    let same_keyspace =
        first_source.keyspace_identity().await? == first_target.keyspace_identity().await?;
    // No key can be larger than all the memory the source uses: below the limit, sizes
    // need not be checked key by key (that check costs the single-threaded source about
    // a fifth of the copy).
    let chunk_above = match plan.chunk_above {
        Some(limit) => match first_source.info(Some("memory"), "used_memory").await {
            Ok(Value::Number(used)) if used >= 0.0 && (used as u64) <= limit => None,
            _ => Some(limit),
        },
        None => None,
    };
    let plan = &CopyPlan {
        same_keyspace,
        chunk_above,
        ..plan.clone()
    };
    if same_keyspace {
        onto_itself(first_source, plan).await?;
    }
    let state = LedgerState::read(ledger_path)?;
    if let Some(done) = state.finished {
        return Ok(counters_value(&done, started.elapsed(), 0));
    }
    let writer = LedgerWriter::open(ledger_path, &state)?;
    // Temporary keys of chunked copies the interrupted run left.
    for change in &state.changes {
        if let Change::Temporary(key) = change {
            first_target.raw(redis::cmd("UNLINK").arg(key)).await?;
        }
    }
    let checkpoint = state.checkpoint.unwrap_or(Checkpoint {
        seq: 0,
        cursor: 0,
        counters: Counters::default(),
    });
    // The scan was complete; only the final record is missing (and on a cluster, the
    // check of every key).
    let scanned_all = state.checkpoint.is_some() && checkpoint.cursor == 0;
    let total = if plan.pattern == "*" && plan.key_type.is_none() {
        first_source.dbsize().await.ok()
    } else {
        None
    };
    let shared = Shared {
        plan,
        ledger: Mutex::new(writer),
        inherited: Inherited {
            created: state.created_after_checkpoint,
            unconfirmed: state.unconfirmed_after_checkpoint,
        },
        clock: TargetClock::read(first_target).await,
        temporary_prefix: format!(
            "redis-move:tmp:{}:{}:",
            std::process::id(),
            jiff::Timestamp::now().as_millisecond()
        ),
    };
    let on_cluster = first_source.cluster().is_some() || first_target.cluster().is_some();
    if scanned_all {
        let rechecked = match on_cluster {
            true => {
                Some(recheck(first_source, first_target, &shared, checkpoint.seq, cancel).await?)
            }
            false => None,
        };
        shared.ledger(|l| l.finished(&checkpoint.counters))?;
        return Ok(with_recheck(
            counters_value(&checkpoint.counters, started.elapsed(), 0),
            rechecked,
        ));
    }
    let workers = sources.len().min(targets.len()).max(1);
    let (scan_tx, scan_rx) = mpsc::channel::<Scanned>(workers);
    let (dump_tx, dump_rx) = mpsc::channel::<Dumped>(workers);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(workers * 4);
    let scan_rx = tokio::sync::Mutex::new(scan_rx);
    let dump_rx = tokio::sync::Mutex::new(dump_rx);

    let scanner = scan(first_source, plan, checkpoint, scan_tx, cancel);
    let dumpers = futures_util::future::try_join_all(sources.iter().take(workers).map(|source| {
        let dump_tx = dump_tx.clone();
        let scan_rx = &scan_rx;
        async move {
            loop {
                let Some(batch) = scan_rx.lock().await.recv().await else {
                    return Ok::<_, BackendError>(());
                };
                let dumped = dump(source, plan, batch).await?;
                if dump_tx.send(dumped).await.is_err() {
                    return Ok(());
                }
            }
        }
    }));
    drop(dump_tx);
    let restorers = futures_util::future::try_join_all(
        targets.iter().take(workers).enumerate().map(|(i, target)| {
            let done_tx = done_tx.clone();
            let dump_rx = &dump_rx;
            let shared = &shared;
            let source = &sources[i % sources.len()];
            async move {
                loop {
                    let Some(batch) = dump_rx.lock().await.recv().await else {
                        return Ok::<_, BackendError>(());
                    };
                    let done = restore(source, target, shared, batch).await?;
                    if done_tx.send(done).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }),
    );
    drop(done_tx);
    let shared_ref = &shared;
    let report = |at: &Checkpoint, here: &Counters| {
        progress(&CopyProgress {
            counters: at.counters,
            elapsed: started.elapsed(),
            copied_here: here.copied + here.replaced,
            bytes_here: here.bytes,
            total,
        })
    };
    let recorder = async move {
        let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
        let mut at = checkpoint;
        let mut here = Counters::default();
        let mut last_checkpoint = Instant::now();
        while let Some(done) = done_rx.recv().await {
            here.add(&done.counters);
            pending.insert(done.seq, done);
            let before = at.seq;
            while let Some(next) = pending.remove(&(at.seq + 1)) {
                at.seq = next.seq;
                at.cursor = next.cursor_after;
                at.counters.add(&next.counters);
            }
            if at.seq != before && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = Instant::now();
                shared_ref.ledger(|l| l.checkpoint(&at))?;
                report(&at, &here);
            }
        }
        Ok::<_, BackendError>((at, here))
    };
    let (scanned, (), (), (at, here)) = tokio::try_join!(
        scanner,
        dumpers.map_ok(drop),
        restorers.map_ok(drop),
        recorder
    )?;
    shared.ledger(|l| l.checkpoint(&at))?;
    if !scanned {
        return Err(BackendError::Command(format!(
            "interrupted at {} keys; resuming continues from the checkpoint",
            at.counters.copied + at.counters.skipped + at.counters.replaced
        )));
    }
    // On a cluster, a primary that died during the copy may have taken writes it had
    // acknowledged with it, and a slot that moved during a SCAN of the source may have
    // hidden keys: every key of the source is looked for on the target again.
    let rechecked = match on_cluster {
        true => Some(recheck(first_source, first_target, &shared, at.seq, cancel).await?),
        false => None,
    };
    shared.ledger(|l| l.finished(&at.counters))?;
    report(&at, &here);
    Ok(with_recheck(
        counters_value(&at.counters, started.elapsed(), here.copied + here.replaced),
        rechecked,
    ))
}

/// The copy's value with what the check of every key found (`rechecked`, `recopied`).
fn with_recheck(mut value: Value, rechecked: Option<(u64, Counters)>) -> Value {
    if let (Some((checked, again)), Value::Object(fields)) = (rechecked, &mut value) {
        fields.insert("rechecked".into(), Value::Number(checked as f64));
        fields.insert("recopied".into(), Value::Number(again.copied as f64));
    }
    value
}

/// Looks for every source key on the target and copies those missing (batches numbered
/// after `seq`, journaled like the others); returns the keys checked and what the
/// copies of the missing ones counted.
async fn recheck(
    source: &RedisBackend,
    target: &RedisBackend,
    shared: &Shared<'_>,
    mut seq: u64,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(u64, Counters), BackendError> {
    let plan = shared.plan;
    let count = u32::try_from(plan.batch).unwrap_or(u32::MAX);
    let (mut cursor, mut checked, mut counters) = (0, 0, Counters::default());
    loop {
        if cancel.is_cancelled() {
            return Err(BackendError::Command(
                "interrupted while checking the copied keys; resuming checks them again".into(),
            ));
        }
        let (next, keys) = source
            .scan_page(cursor, &plan.pattern, plan.key_type.as_deref(), count)
            .await?;
        checked += keys.len() as u64;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("EXISTS").arg(plan.target_key(key));
            }
            let present = target.pipeline(pipe).await?;
            let missing: Vec<Vec<u8>> = keys
                .into_iter()
                .zip(present)
                .filter(|(_, reply)| reply_int(reply) == Some(0))
                .map(|(key, _)| key)
                .collect();
            if !missing.is_empty() {
                tracing::info!(
                    keys = missing.len(),
                    "keys missing on the target: copied again"
                );
                seq += 1;
                let batch = Scanned {
                    seq,
                    cursor_after: 0,
                    keys: missing,
                };
                let done =
                    restore(source, target, shared, dump(source, plan, batch).await?).await?;
                counters.add(&done.counters);
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok((checked, counters));
        }
    }
}

/// SCANs from the checkpoint's cursor, cutting batches at SCAN replies so that each
/// batch ends at a cursor. `true` when the scan completed, `false` when cancelled.
async fn scan(
    source: &RedisBackend,
    plan: &CopyPlan,
    from: Checkpoint,
    out: mpsc::Sender<Scanned>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<bool, BackendError> {
    let mut cursor = from.cursor;
    let mut seq = from.seq;
    let mut keys = Vec::new();
    let mut last_sent = Instant::now();
    let count = u32::try_from(plan.batch).unwrap_or(u32::MAX);
    loop {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        let (next, found) = source
            .scan_page(cursor, &plan.pattern, plan.key_type.as_deref(), count)
            .await?;
        keys.extend(found);
        cursor = next;
        if keys.len() >= plan.batch || cursor == 0 || last_sent.elapsed() >= CHECKPOINT_EVERY {
            seq += 1;
            last_sent = Instant::now();
            let batch = Scanned {
                seq,
                cursor_after: cursor,
                keys: std::mem::take(&mut keys),
            };
            if out.send(batch).await.is_err() {
                return Ok(false);
            }
        }
        if cursor == 0 {
            return Ok(true);
        }
    }
}

/// On one server, every key's new name is checked before anything is written: a name the
/// rename leaves as it is would be written onto itself, and a new name the pattern also
/// matches would be read back and copied again.
async fn onto_itself(source: &RedisBackend, plan: &CopyPlan) -> Result<(), BackendError> {
    let mut cursor = 0;
    loop {
        let (next, keys) = source
            .scan_page(cursor, &plan.pattern, plan.key_type.as_deref(), 1000)
            .await?;
        for key in keys {
            let target = plan.target_key(&key);
            if target == key {
                return Err(BackendError::Config(format!(
                    "the copy would write `{}` onto itself: source and target are the same server and database, and the rename leaves this key's name unchanged (a `regex` must match the whole key); nothing was written",
                    display_key(&key)
                )));
            }
            if crate::backend::keyspace::glob_match(plan.pattern.as_bytes(), &target) {
                return Err(BackendError::Config(format!(
                    "the copy would read back its own copies: `{}` becomes `{}`, which `{}` matches too (same server); narrow `match:`; nothing was written",
                    display_key(&key),
                    display_key(&target),
                    plan.pattern
                )));
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Reads a batch: sizes first when large keys go in chunks, then PTTL + DUMP.
async fn dump(
    source: &RedisBackend,
    plan: &CopyPlan,
    batch: Scanned,
) -> Result<Dumped, BackendError> {
    if plan.same_keyspace
        && let Some(key) = batch.keys.iter().find(|k| plan.target_key(k) == **k)
    {
        return Err(BackendError::Config(format!(
            "the copy would write `{}` onto itself: source and target are the same server and database, and the rename leaves this key's name unchanged (a `regex` must match the whole key)",
            display_key(key)
        )));
    }
    let mut vanished = 0;
    let mut large = Vec::new();
    let small: Vec<Vec<u8>> = match plan.chunk_above {
        Some(limit) if !batch.keys.is_empty() => {
            let mut pipe = redis::pipe();
            for key in &batch.keys {
                pipe.cmd("MEMORY").arg("USAGE").arg(key);
            }
            let sizes = source.pipeline(pipe).await?;
            let mut small = Vec::with_capacity(batch.keys.len());
            for (key, size) in batch.keys.into_iter().zip(sizes) {
                match size {
                    redis::Value::Nil => vanished += 1,
                    size if reply_int(&size).is_some_and(|s| s as u64 > limit) => {
                        let target_key = plan.target_key(&key);
                        large.push((key, target_key));
                    }
                    _ => small.push(key),
                }
            }
            small
        }
        _ => batch.keys,
    };
    let read_at = Instant::now();
    let mut items = Vec::with_capacity(small.len());
    if !small.is_empty() {
        let mut pipe = redis::pipe();
        for key in &small {
            pipe.cmd("PTTL").arg(key).cmd("DUMP").arg(key);
        }
        let replies = source.pipeline(pipe).await?;
        let mut replies = replies.into_iter();
        for key in small {
            let (Some(ttl), Some(payload)) = (replies.next(), replies.next()) else {
                return Err(BackendError::Unexpected(
                    "DUMP answered too few replies".into(),
                ));
            };
            let ttl = reply_int(&ttl).unwrap_or(-2);
            let payload = match payload {
                redis::Value::BulkString(bytes) => bytes,
                redis::Value::Nil => {
                    vanished += 1;
                    continue;
                }
                redis::Value::ServerError(e) => {
                    return Err(BackendError::Command(format!(
                        "DUMP `{}`: {e}",
                        display_key(&key)
                    )));
                }
                other => {
                    return Err(BackendError::Unexpected(format!(
                        "DUMP answered {}",
                        crate::backend::redis::to_value(other)
                    )));
                }
            };
            if ttl == -2 {
                vanished += 1;
                continue;
            }
            let target_key = plan.target_key(&key);
            let rewritten = match (&plan.rename, plan.references) {
                (Some(rename), References::Refuse | References::Rewrite)
                    if references::may_refer(&key, &payload) =>
                {
                    referring_value(&key, &payload, rename, plan.references)?
                }
                _ => None,
            };
            items.push(Item {
                key,
                target_key,
                payload,
                ttl_ms: u64::try_from(ttl).ok(),
                rewritten,
            });
        }
    }
    let read_at = reread_ttls(source, &mut items, read_at).await?;
    Ok(Dumped {
        seq: batch.seq,
        cursor_after: batch.cursor_after,
        items,
        large,
        vanished,
        read_at,
    })
}

/// The value of `key` (its DUMP `payload`) with the key names in it renamed, when it
/// holds any the rename changes; with `references: refuse`, that is an error naming it.
fn referring_value(
    key: &[u8],
    payload: &[u8],
    rename: &KeyRename,
    policy: References,
) -> Result<Option<Decoded>, BackendError> {
    let unreadable = |e: String| {
        BackendError::Unexpected(format!(
            "cannot read the value of `{}` to rename the key names in it: {e}",
            display_key(key)
        ))
    };
    let (entry, _) = crate::backend::rdb::entries::RdbEntry::from_dump(key, payload)
        .map_err(|e| unreadable(e.to_string()))?;
    let value = values::decode(&entry).map_err(|e| unreadable(e.to_string()))?;
    let Some(rewritten) = references::rewrite(key, &value, &|k| rename.apply(k)) else {
        return Ok(None);
    };
    match policy {
        References::Rewrite => Ok(Some(rewritten)),
        _ => Err(BackendError::Config(format!(
            "`{}` holds names of keys the rename changes (a BullMQ flow: a child's `parentKey`, a parent's `:dependencies`); copied as they are, they would name the old keys and the flow would never finish: set `references: rewrite` (rename them too) or `references: keep`",
            display_key(key)
        ))),
    }
}

/// The `EVAL` calls that write `decoded` as `key` with `expiry` ([`TargetClock::expiry`]).
fn rewritten_calls(
    key: &[u8],
    decoded: &Decoded,
    (ttl, absolute): (u64, bool),
    existing: values::Existing,
) -> Vec<redis::Cmd> {
    let expires_at = match (ttl, absolute) {
        (0, _) => None,
        (at, true) => Some(at as i64),
        (left, false) => Some(unix_ms() + left as i64),
    };
    values::calls(
        key,
        decoded,
        expires_at,
        existing,
        Dialect::of_version("7.0.0"),
    )
}

/// Sends the calls after the first of a value written as commands.
async fn finish_calls(target: &RedisBackend, rest: Vec<redis::Cmd>) -> Result<(), BackendError> {
    for call in rest {
        target.raw(&call).await?;
    }
    Ok(())
}

/// Longest wait for the source's PTTL replies that still dates them well enough.
const TTL_WINDOW: Duration = Duration::from_millis(250);

/// A TTL is only known to have been read between sending PTTL (`read_at`) and its reply:
/// when that took longer than [`TTL_WINDOW`] (the process or the network stalled), the
/// TTLs of `items` are read again (up to 3 times) and the new `read_at` returned. A key
/// gone meanwhile gets a TTL of 0 (counted as vanished when written).
async fn reread_ttls(
    source: &RedisBackend,
    items: &mut [Item],
    mut read_at: Instant,
) -> Result<Instant, BackendError> {
    for _ in 0..3 {
        if read_at.elapsed() <= TTL_WINDOW || items.iter().all(|i| i.ttl_ms.is_none()) {
            break;
        }
        let expiring: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].ttl_ms.is_some())
            .collect();
        let mut pipe = redis::pipe();
        for &i in &expiring {
            pipe.cmd("PTTL").arg(&items[i].key);
        }
        read_at = Instant::now();
        for (&i, ttl) in expiring.iter().zip(source.pipeline(pipe).await?) {
            items[i].ttl_ms = match reply_int(&ttl) {
                Some(ttl) if ttl >= 0 => Some(ttl as u64),
                // Made persistent meanwhile: its value may have changed too; the TTL
                // the dump was read with stays the best known.
                Some(-1) => items[i].ttl_ms,
                _ => Some(0),
            };
        }
    }
    Ok(read_at)
}

/// A temporary key's name that lands in the slot of `key` (on a Redis Cluster, a script
/// or RENAME may only touch keys of one slot): `name` ended by that slot's hash tag.
fn beside(name: String, key: &[u8]) -> Vec<u8> {
    let tag = crate::backend::cluster::slot_tag(crate::backend::cluster::key_slot(key));
    format!("{name}:{{{tag}}}").into_bytes()
}

/// How far the target's clock is from this machine's, so that a key's expiry is written
/// as the absolute time it had on the source (`RESTORE ... ABSTTL`): a relative TTL
/// would be stretched by any wait between reading it and the target applying it (a
/// cluster settling after a failover, a stalled network, a paused process).
#[derive(Clone, Copy, Debug, Default)]
struct TargetClock {
    /// Target time minus local time, in ms (`None`: TIME is not allowed; relative TTLs).
    offset_ms: Option<i64>,
}

impl TargetClock {
    /// Reads the target's clock with `TIME` (the middle of the round trip as the local
    /// moment it answered for).
    async fn read(target: &RedisBackend) -> TargetClock {
        let before = unix_ms();
        let reply = target.raw(&redis::cmd("TIME")).await;
        let after = unix_ms();
        let offset_ms = match reply {
            Ok(redis::Value::Array(parts)) if parts.len() == 2 => {
                let number = |v: &redis::Value| reply_text(v).parse::<i64>().ok();
                match (number(&parts[0]), number(&parts[1])) {
                    (Some(seconds), Some(micros)) => {
                        Some(seconds * 1000 + micros / 1000 - (before + after) / 2)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        TargetClock { offset_ms }
    }

    /// The expiry argument of a RESTORE for a key read at `read_at` with `ttl_ms` left:
    /// `None` when it expired meanwhile, `(0, false)` for no expiry, `(when, true)` an
    /// absolute time in the target's clock (ABSTTL), or `(left, false)` a relative TTL.
    fn expiry(&self, ttl_ms: Option<u64>, read_at: Instant) -> Option<(u64, bool)> {
        let Some(ttl) = ttl_ms else {
            return Some((0, false));
        };
        let left = remaining(Some(ttl), read_at)?;
        if left == 0 {
            return None;
        }
        Some(match self.offset_ms {
            Some(offset) => {
                let read_unix = unix_ms() - read_at.elapsed().as_millis() as i64;
                ((read_unix + ttl as i64 + offset).max(1) as u64, true)
            }
            None => (left, false),
        })
    }
}

fn unix_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A RESTORE of `payload` as `key` with `expiry` ([`TargetClock::expiry`]).
fn restore_command(key: &[u8], (ttl, absolute): (u64, bool), payload: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("RESTORE");
    cmd.arg(key).arg(ttl).arg(payload);
    if absolute {
        cmd.arg("ABSTTL");
    }
    cmd
}

/// The TTL left, counted from `since` (`Some(0)`: expired meanwhile).
fn remaining(ttl_ms: Option<u64>, since: Instant) -> Option<u64> {
    ttl_ms.map(|ttl| ttl.saturating_sub(since.elapsed().as_millis() as u64))
}

/// What to do with a key the target already has.
enum Existing {
    /// The copy made it (before an interruption): count it as copied.
    Ours,
    /// Leave it.
    Skip,
    /// Overwrite it, keeping its value in the ledger.
    Replace,
    /// Merge the source's content into it, keeping its value in the ledger.
    Merge,
}

/// Merges KEYS[2] (a temporary copy of the source key) into KEYS[1] and deletes KEYS[2]:
/// union of members and fields, the target's value winning where both have one; list
/// elements the target lacks appended in the source's order; a string or stream kept.
/// Returns `merged`, `kept` or `created` (the target vanished meanwhile), or an error
/// when the types differ.
const MERGE_SCRIPT: &str = r#"
local target, source = KEYS[1], KEYS[2]
local tt = redis.call('TYPE', target).ok
local st = redis.call('TYPE', source).ok
if st == 'none' then return 'kept' end
if tt == 'none' then
  redis.call('RENAME', source, target)
  return 'created'
end
if tt ~= st then
  redis.call('DEL', source)
  return redis.error_reply('WRONGTYPE the target is a ' .. tt .. ', the source a ' .. st)
end
local function each_chunk(items, step, size, f)
  local i = 1
  while i <= #items do
    local chunk = {}
    for j = i, math.min(i + size * step - 1, #items) do chunk[#chunk + 1] = items[j] end
    f(chunk)
    i = i + size * step
  end
end
if st == 'set' then
  each_chunk(redis.call('SMEMBERS', source), 1, 500, function(c) redis.call('SADD', target, unpack(c)) end)
elseif st == 'hash' then
  local pairs = redis.call('HGETALL', source)
  for i = 1, #pairs, 2 do redis.call('HSETNX', target, pairs[i], pairs[i + 1]) end
elseif st == 'zset' then
  local pairs = redis.call('ZRANGE', source, 0, -1, 'WITHSCORES')
  local swapped = {}
  for i = 1, #pairs, 2 do
    swapped[#swapped + 1] = pairs[i + 1]
    swapped[#swapped + 1] = pairs[i]
  end
  each_chunk(swapped, 2, 250, function(c) redis.call('ZADD', target, 'NX', unpack(c)) end)
elseif st == 'list' then
  local present = {}
  for _, v in ipairs(redis.call('LRANGE', target, 0, -1)) do present[v] = true end
  local missing = {}
  for _, v in ipairs(redis.call('LRANGE', source, 0, -1)) do
    if not present[v] then missing[#missing + 1] = v end
  end
  each_chunk(missing, 1, 500, function(c) redis.call('RPUSH', target, unpack(c)) end)
else
  redis.call('DEL', source)
  return 'kept'
end
redis.call('DEL', source)
return 'merged'
"#;

/// Merges `temporary` (holding the source's value) into `target_key`; counts it.
async fn merge_into(
    target: &RedisBackend,
    target_key: &[u8],
    temporary: &[u8],
    counters: &mut Counters,
) -> Result<bool, BackendError> {
    let reply = target
        .raw(
            redis::cmd("EVAL")
                .arg(MERGE_SCRIPT)
                .arg(2)
                .arg(target_key)
                .arg(temporary),
        )
        .await
        .map_err(|e| {
            BackendError::Command(format!(
                "cannot merge into `{}`: {e}",
                display_key(target_key)
            ))
        })?;
    if let redis::Value::ServerError(e) = &reply {
        return Err(BackendError::Command(format!(
            "cannot merge into `{}`: {e}",
            display_key(target_key)
        )));
    }
    match reply_text(&reply).as_str() {
        "created" => {
            counters.copied += 1;
            Ok(true)
        }
        "merged" => {
            counters.merged += 1;
            Ok(false)
        }
        _ => {
            counters.skipped += 1;
            Ok(false)
        }
    }
}

/// Decides about `target_key`, which exists on the target.
async fn existing(
    shared: &Shared<'_>,
    source: &RedisBackend,
    key: &[u8],
    target: &RedisBackend,
    target_key: &[u8],
    rewritten: Option<&Decoded>,
) -> Result<Existing, BackendError> {
    let inherited = &shared.inherited;
    if inherited.created.contains(target_key) {
        // Created before the interruption, or possibly: claimed only if it holds
        // exactly the source's value (with its key names renamed, when they were).
        let holds_ours = match rewritten {
            Some(value) => holds(target, target_key, value).await?,
            None => same_value(source, key, target, target_key).await?,
        };
        if !inherited.unconfirmed.contains(target_key) || holds_ours {
            return Ok(Existing::Ours);
        }
    }
    match shared.plan.existing {
        ExistingKeys::Skip => Ok(Existing::Skip),
        ExistingKeys::Replace => Ok(Existing::Replace),
        ExistingKeys::Merge => Ok(Existing::Merge),
        ExistingKeys::Fail => Err(BackendError::Command(format!(
            "`{}` already exists on the target (existing: fail)",
            display_key(target_key)
        ))),
    }
}

/// Whether `key` on `target` holds `value`.
async fn holds(target: &RedisBackend, key: &[u8], value: &Decoded) -> Result<bool, BackendError> {
    let key_type = reply_text(&target.raw(redis::cmd("TYPE").arg(key)).await?);
    let Some(key_type) = KeyType::parse(&key_type) else {
        return Ok(false);
    };
    let there = target.raw(&read_command(key_type, key)).await?;
    Ok(canonical_digest(key_type, &there).is_some()
        && canonical_digest(key_type, &there)
            == canonical_digest(key_type, &references::as_reply(value)))
}

/// Whether `key` on `source` and `target_key` on `target` hold the same value.
pub async fn same_value(
    source: &RedisBackend,
    key: &[u8],
    target: &RedisBackend,
    target_key: &[u8],
) -> Result<bool, BackendError> {
    let digest = |redis: &RedisBackend, key: &[u8]| {
        let redis = redis.clone();
        let key = key.to_vec();
        async move {
            let key_type = reply_text(&redis.raw(redis::cmd("TYPE").arg(&key)).await?);
            let Some(key_type) = KeyType::parse(&key_type) else {
                return Ok::<_, BackendError>(None);
            };
            let value = redis.raw(&read_command(key_type, &key)).await?;
            Ok(canonical_digest(key_type, &value))
        }
    };
    let (a, b) = tokio::try_join!(digest(source, key), digest(target, target_key))?;
    Ok(a.is_some() && a == b)
}

/// Keeps `target_key`'s current value in the ledger before `source_key` is merged into
/// it: the rollback removes what the merge added, and nothing written since.
async fn back_up_merge(
    shared: &Shared<'_>,
    target: &RedisBackend,
    target_key: &[u8],
    source_key: &[u8],
) -> Result<(), BackendError> {
    let mut pipe = redis::pipe();
    pipe.cmd("PTTL").arg(target_key).cmd("DUMP").arg(target_key);
    let replies = target.pipeline(pipe).await?;
    if let [ttl, redis::Value::BulkString(payload)] = replies.as_slice() {
        let ttl_ms = reply_int(ttl)
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0);
        shared.ledger(|l| {
            l.merged(
                &Replaced {
                    key: target_key.to_vec(),
                    payload: payload.clone(),
                    ttl_ms,
                },
                source_key,
            )
        })?;
    }
    Ok(())
}

/// Removes from KEYS[1] what merging KEYS[3] (the source's value) into KEYS[2] (the
/// value before) added: members, fields and list elements the source has and the value
/// before did not. What was written since, and the TTL, stay. Deletes KEYS[2], KEYS[3].
const UNMERGE_SCRIPT: &str = r#"
local target, before, source = KEYS[1], KEYS[2], KEYS[3]
local tt = redis.call('TYPE', target).ok
local removed = 0
if tt == 'set' then
  for _, m in ipairs(redis.call('SMEMBERS', source)) do
    if redis.call('SISMEMBER', before, m) == 0 then removed = removed + redis.call('SREM', target, m) end
  end
elseif tt == 'hash' then
  for _, f in ipairs(redis.call('HKEYS', source)) do
    if redis.call('HEXISTS', before, f) == 0 then removed = removed + redis.call('HDEL', target, f) end
  end
elseif tt == 'zset' then
  for _, m in ipairs(redis.call('ZRANGE', source, 0, -1)) do
    if not redis.call('ZSCORE', before, m) then removed = removed + redis.call('ZREM', target, m) end
  end
elseif tt == 'list' then
  local had = {}
  if redis.call('EXISTS', before) == 1 then
    for _, v in ipairs(redis.call('LRANGE', before, 0, -1)) do had[v] = true end
  end
  for _, v in ipairs(redis.call('LRANGE', source, 0, -1)) do
    if not had[v] then removed = removed + redis.call('LREM', target, -1, v) end
  end
end
redis.call('DEL', before, source)
return removed
"#;

/// Overwrites `target_key` on `target` with `payload` after keeping its current value
/// in the ledger.
async fn back_up(
    shared: &Shared<'_>,
    target: &RedisBackend,
    target_key: &[u8],
) -> Result<(), BackendError> {
    let mut pipe = redis::pipe();
    pipe.cmd("PTTL").arg(target_key).cmd("DUMP").arg(target_key);
    let replies = target.pipeline(pipe).await?;
    if let [ttl, redis::Value::BulkString(payload)] = replies.as_slice() {
        let ttl_ms = reply_int(ttl)
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0);
        shared.ledger(|l| {
            l.replaced(&Replaced {
                key: target_key.to_vec(),
                payload: payload.clone(),
                ttl_ms,
            })
        })?;
    }
    Ok(())
}

/// Writes a batch: records the intent, RESTOREs, settles the keys that existed, copies
/// the large keys in chunks, records what was created.
async fn restore(
    source: &RedisBackend,
    target: &RedisBackend,
    shared: &Shared<'_>,
    batch: Dumped,
) -> Result<Done, BackendError> {
    let mut counters = Counters {
        vanished: batch.vanished,
        ..Counters::default()
    };
    let keys: Vec<(&[u8], &[u8])> = batch
        .items
        .iter()
        .map(|i| (i.target_key.as_slice(), i.key.as_slice()))
        .chain(
            batch
                .large
                .iter()
                .map(|(k, t)| (t.as_slice(), k.as_slice())),
        )
        .collect();
    shared.ledger(|l| l.intent(batch.seq, &keys))?;
    let mut created = vec![false; keys.len()];

    let mut pipe = redis::pipe();
    let mut sent = Vec::with_capacity(batch.items.len());
    // The rest of the calls of values written as commands, sent once the first made
    // the key.
    let mut later: Vec<(usize, Vec<redis::Cmd>)> = Vec::new();
    for (i, item) in batch.items.iter().enumerate() {
        let Some(expiry) = shared.clock.expiry(item.ttl_ms, batch.read_at) else {
            counters.vanished += 1;
            continue;
        };
        match &item.rewritten {
            Some(decoded) => {
                let mut calls =
                    rewritten_calls(&item.target_key, decoded, expiry, values::Existing::Refuse);
                pipe.add_command(calls.remove(0));
                later.push((i, calls));
            }
            None => {
                pipe.add_command(restore_command(&item.target_key, expiry, &item.payload));
            }
        }
        sent.push(i);
    }
    let replies = if sent.is_empty() {
        Vec::new()
    } else {
        target.pipeline(pipe).await?
    };
    let mut to_replace = Vec::new();
    let mut to_merge = Vec::new();
    for (&i, reply) in sent.iter().zip(replies) {
        let item = &batch.items[i];
        match reply {
            redis::Value::ServerError(e) if e.code() == "BUSYKEY" => {
                match existing(
                    shared,
                    source,
                    &item.key,
                    target,
                    &item.target_key,
                    item.rewritten.as_ref(),
                )
                .await?
                {
                    Existing::Ours => {
                        created[i] = true;
                        counters.copied += 1;
                        counters.bytes += item.payload.len() as u64;
                    }
                    Existing::Skip => counters.skipped += 1,
                    Existing::Replace => to_replace.push(i),
                    Existing::Merge => to_merge.push(i),
                }
            }
            redis::Value::ServerError(e) => {
                return Err(BackendError::Command(format!(
                    "RESTORE `{}`: {e}",
                    display_key(&item.target_key)
                )));
            }
            _ => {
                created[i] = true;
                counters.copied += 1;
                counters.bytes += item.payload.len() as u64;
            }
        }
    }
    for (i, rest) in later {
        if created[i] {
            finish_calls(target, rest).await?;
        }
    }
    if !to_replace.is_empty() {
        for &i in &to_replace {
            back_up(shared, target, &batch.items[i].target_key).await?;
        }
        let mut pipe = redis::pipe();
        let mut replace_later = Vec::new();
        for &i in &to_replace {
            let item = &batch.items[i];
            let expiry = shared
                .clock
                .expiry(item.ttl_ms, batch.read_at)
                .unwrap_or((1, false));
            match &item.rewritten {
                Some(decoded) => {
                    let mut calls = rewritten_calls(
                        &item.target_key,
                        decoded,
                        expiry,
                        values::Existing::Replace,
                    );
                    pipe.add_command(calls.remove(0));
                    replace_later.push((i, calls));
                }
                None => {
                    let mut cmd = restore_command(&item.target_key, expiry, &item.payload);
                    cmd.arg("REPLACE");
                    pipe.add_command(cmd);
                }
            }
        }
        for (&i, reply) in to_replace.iter().zip(target.pipeline(pipe).await?) {
            let item = &batch.items[i];
            if let redis::Value::ServerError(e) = reply {
                return Err(BackendError::Command(format!(
                    "RESTORE REPLACE `{}`: {e}",
                    display_key(&item.target_key)
                )));
            }
            counters.replaced += 1;
            counters.bytes += item.payload.len() as u64;
        }
        for (_, rest) in replace_later {
            finish_calls(target, rest).await?;
        }
    }
    for &i in &to_merge {
        let item = &batch.items[i];
        back_up_merge(shared, target, &item.target_key, &item.key).await?;
        let temporary = beside(
            format!("{}{}:m{i}", shared.temporary_prefix, batch.seq),
            &item.target_key,
        );
        shared.ledger(|l| l.temporary(&temporary))?;
        match &item.rewritten {
            Some(decoded) => {
                let calls =
                    rewritten_calls(&temporary, decoded, (0, false), values::Existing::Replace);
                finish_calls(target, calls).await?;
            }
            None => {
                target
                    .raw(
                        redis::cmd("RESTORE")
                            .arg(&temporary)
                            .arg(0)
                            .arg(&item.payload)
                            .arg("REPLACE"),
                    )
                    .await?;
            }
        }
        if merge_into(target, &item.target_key, &temporary, &mut counters).await? {
            created[i] = true;
        }
        counters.bytes += item.payload.len() as u64;
    }
    let offset = batch.items.len();
    for (j, (key, target_key)) in batch.large.iter().enumerate() {
        let temporary = beside(
            format!("{}{}:{j}", shared.temporary_prefix, batch.seq),
            target_key,
        );
        if copy_large(
            shared,
            source,
            key,
            target,
            target_key,
            &temporary,
            &mut counters,
        )
        .await?
        {
            created[offset + j] = true;
        }
    }
    shared.ledger(|l| l.created(batch.seq, &created))?;
    Ok(Done {
        seq: batch.seq,
        cursor_after: batch.cursor_after,
        counters,
    })
}

/// Copies one large key in chunks through `temporary`; `true` if it created the key.
async fn copy_large(
    shared: &Shared<'_>,
    source: &RedisBackend,
    key: &[u8],
    target: &RedisBackend,
    target_key: &[u8],
    temporary: &[u8],
    counters: &mut Counters,
) -> Result<bool, BackendError> {
    let ttl = reply_int(&source.raw(redis::cmd("PTTL").arg(key)).await?).unwrap_or(-2);
    let read_at = Instant::now();
    if ttl == -2 {
        counters.vanished += 1;
        return Ok(false);
    }
    shared.ledger(|l| l.temporary(temporary))?;
    target.raw(redis::cmd("UNLINK").arg(temporary)).await?;
    let Some(bytes) = copy_in_chunks(source, key, target, temporary).await? else {
        counters.vanished += 1;
        return Ok(false);
    };
    let Some((expiry, absolute)) = shared.clock.expiry(u64::try_from(ttl).ok(), read_at) else {
        target.raw(redis::cmd("UNLINK").arg(temporary)).await?;
        counters.vanished += 1;
        return Ok(false);
    };
    let renamed = reply_int(
        &target
            .raw(redis::cmd("RENAMENX").arg(temporary).arg(target_key))
            .await?,
    ) == Some(1);
    let created = if renamed {
        counters.copied += 1;
        true
    } else {
        match existing(shared, source, key, target, target_key, None).await {
            Ok(Existing::Ours) => {
                target.raw(redis::cmd("UNLINK").arg(temporary)).await?;
                counters.copied += 1;
                return Ok(true);
            }
            Ok(Existing::Skip) => {
                target.raw(redis::cmd("UNLINK").arg(temporary)).await?;
                counters.skipped += 1;
                return Ok(false);
            }
            Ok(Existing::Replace) => {
                back_up(shared, target, target_key).await?;
                target
                    .raw(redis::cmd("RENAME").arg(temporary).arg(target_key))
                    .await?;
                counters.replaced += 1;
                false
            }
            Ok(Existing::Merge) => {
                back_up_merge(shared, target, target_key, key).await?;
                counters.chunked += 1;
                counters.bytes += bytes;
                // The target keeps its own TTL.
                return merge_into(target, target_key, temporary, counters).await;
            }
            Err(e) => {
                target.raw(redis::cmd("UNLINK").arg(temporary)).await?;
                return Err(e);
            }
        }
    };
    if expiry > 0 {
        let command = if absolute { "PEXPIREAT" } else { "PEXPIRE" };
        target
            .raw(redis::cmd(command).arg(target_key).arg(expiry))
            .await?;
    }
    counters.chunked += 1;
    counters.bytes += bytes;
    Ok(created)
}

/// Takes out of `before.key` what merging `source_key` added (see [`UNMERGE_SCRIPT`]);
/// `false` (the key left as it is) when the source key cannot be read any more.
async fn unmerge(
    target: &RedisBackend,
    source: Option<&RedisBackend>,
    before: &Replaced,
    source_key: &[u8],
) -> Result<bool, BackendError> {
    let Some(source) = source else {
        return Ok(false);
    };
    let redis::Value::BulkString(source_value) =
        source.raw(redis::cmd("DUMP").arg(source_key)).await?
    else {
        return Ok(false);
    };
    let stamp = jiff::Timestamp::now().as_nanosecond();
    let (before_key, source_copy) = (
        beside(
            format!("redis-move:tmp:unmerge:{stamp}:before"),
            &before.key,
        ),
        beside(
            format!("redis-move:tmp:unmerge:{stamp}:source"),
            &before.key,
        ),
    );
    for (key, payload) in [
        (&before_key, &before.payload),
        (&source_copy, &source_value),
    ] {
        target
            .raw(
                redis::cmd("RESTORE")
                    .arg(key)
                    .arg(0)
                    .arg(payload)
                    .arg("REPLACE"),
            )
            .await?;
    }
    target
        .raw(
            redis::cmd("EVAL")
                .arg(UNMERGE_SCRIPT)
                .arg(3)
                .arg(&before.key)
                .arg(&before_key)
                .arg(&source_copy),
        )
        .await?;
    Ok(true)
}

/// Undoes a copy from its ledger, newest change first: deletes the keys it created,
/// puts back the values it overwrote, drops its temporary keys. A key whose creation
/// was never confirmed is deleted only if it holds exactly the source's value (when
/// `source` is reachable); otherwise it is left and counted.
pub async fn undo(
    target: &RedisBackend,
    source: Option<&RedisBackend>,
    ledger_path: &Path,
) -> Result<Value, BackendError> {
    let state = LedgerState::read(ledger_path)?;
    let mut deleted = 0u64;
    let mut restored = 0u64;
    let mut left = 0u64;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    async fn unlink(target: &RedisBackend, keys: &mut Vec<Vec<u8>>) -> Result<u64, BackendError> {
        let mut removed = 0;
        for chunk in keys.chunks(DEFAULT_BATCH) {
            removed += target.unlink(chunk).await?;
        }
        keys.clear();
        Ok(removed)
    }
    for change in state.changes.into_iter().rev() {
        match change {
            Change::Created(key) | Change::Temporary(key) => {
                pending.push(key);
                if pending.len() >= DEFAULT_BATCH {
                    deleted += unlink(target, &mut pending).await?;
                }
            }
            Change::Unconfirmed { key, source_key } => {
                let ours = match source {
                    Some(source) => same_value(source, &source_key, target, &key).await?,
                    None => false,
                };
                let exists =
                    reply_int(&target.raw(redis::cmd("EXISTS").arg(&key)).await?) == Some(1);
                if ours {
                    pending.push(key);
                } else if exists {
                    left += 1;
                }
            }
            Change::Merged { before, source_key } => {
                deleted += unlink(target, &mut pending).await?;
                if unmerge(target, source, &before, &source_key).await? {
                    restored += 1;
                } else {
                    left += 1;
                }
            }
            Change::Replaced(replaced) => {
                deleted += unlink(target, &mut pending).await?;
                target
                    .raw(
                        redis::cmd("RESTORE")
                            .arg(&replaced.key)
                            .arg(replaced.ttl_ms)
                            .arg(&replaced.payload)
                            .arg("REPLACE"),
                    )
                    .await?;
                restored += 1;
            }
        }
    }
    deleted += unlink(target, &mut pending).await?;
    Ok(Value::Object(
        [("deleted", deleted), ("restored", restored), ("left", left)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::Number(v as f64)))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_by_prefix_and_by_regex() {
        let prefix = KeyRename::Prefix {
            from: b"job:".to_vec(),
            to: b"step:".to_vec(),
        };
        assert_eq!(prefix.apply(b"job:42"), b"step:42");
        assert_eq!(prefix.apply(b"other:42"), b"other:42");
        let regex = KeyRename::Regex {
            regex: regex::bytes::Regex::new(r"^bull:(\w+):(\d+)$").unwrap(),
            replace: b"q:$1:job:$2".to_vec(),
        };
        assert_eq!(regex.apply(b"bull:mail:7"), b"q:mail:job:7");
        assert_eq!(regex.apply(b"bull:mail:wait"), b"bull:mail:wait");
    }

    #[test]
    fn remaining_ttl_counts_down_and_never_extends() {
        let read_at = Instant::now() - Duration::from_millis(300);
        assert_eq!(remaining(None, read_at), None);
        assert!(remaining(Some(1000), read_at).unwrap() <= 700);
        assert_eq!(remaining(Some(100), read_at), Some(0));
    }
}
