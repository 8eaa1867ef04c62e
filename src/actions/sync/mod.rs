//! Live migration as a replica (`redis.sync`, issue 13): the source's RDB, then its
//! stream of writes, applied to a target with key filters and renames, the replication
//! offset acknowledged as it is applied. [`step`] runs it in the background of a
//! runbook; [`background`] keeps it running between steps.
//!
//! - RDB keys are written with `RESTORE ... ABSTTL` from their own bytes, pipelined by
//!   the batch the stream delivers; to a target older than the source (which refuses
//!   its payloads), decoded and written as commands
//!   ([`crate::backend::rdb::values`]). A key that already exists on the target and is not
//!   the sync's own stops the sync (`existing: fail`) or is overwritten with its value
//!   kept in the ledger (`existing: replace`).
//! - Stream writes are applied in order with their keys renamed where the source's key
//!   specs put them; a write whose keys are all outside the filter (or in another db) is
//!   skipped, one that mixes keys inside and outside is refused, and so are keyless
//!   writes that would reach beyond the filter (`FLUSHALL`, `FLUSHDB`, `SWAPDB`).
//! - Each batch of stream writes is applied inside one `MULTI`/`EXEC` together with the
//!   sync's marker key, which holds the replication id and offset applied: a sync killed
//!   at any point continues from exactly the write after the last batch applied (a
//!   partial resync), never applying a write twice nor skipping one. A source
//!   transaction is never split across batches.
//! - Every key the sync creates or overwrites is in its ledger (the copy's ledger
//!   format) before it is written, so that its rollback deletes exactly what it created
//!   and puts back what it replaced. The sync remembers a 64-bit hash per key it wrote
//!   (8 bytes a key) to tell its own keys from others'.

pub mod background;
mod slots;
pub mod step;

pub use slots::remove_markers;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::Duration;

use super::copy::KeyRename;
use super::copy::ledger::{Change, LedgerState, LedgerWriter, Replaced};
use crate::backend::BackendError;
use crate::backend::command_keys::CommandKeys;
use crate::backend::keyspace::{display_key, glob_match};
use crate::backend::rdb::entries::RdbEntry;
use crate::backend::rdb::primary::{RdbPrimary, RdbWriter};
use crate::backend::rdb::replica::{ReplicaLink, StreamCommand, SyncStart};
use crate::backend::rdb::values::{self, Dialect, Existing};
use crate::backend::redis::{RedisBackend, RedisEndpoint};
use crate::runbook::action::SyncExisting;

/// Stream writes applied in one `MULTI`/`EXEC` at most.
const BATCH: usize = 512;
/// How long one call applies before it hands back (to report, to take orders).
pub const ROUND: Duration = Duration::from_millis(200);
/// How long a sync waits for the `EXEC` of a source transaction it has begun reading.
const TRANSACTION_WAIT: Duration = Duration::from_secs(10);
/// Keys of checked namespaces remembered as reached lately, at most.
const RECENT: usize = 65_536;

/// One family of keys a sync moves.
#[derive(Clone, Debug)]
pub struct SyncRule {
    /// Glob of the keys (their source names).
    pub pattern: String,
    /// Rename on the way.
    pub rename: Option<KeyRename>,
    /// A glob of every name the rule can write (`step:*` for `job:*` renamed `job:` ->
    /// `step:`), when one exists: that namespace is checked before the sync starts, so
    /// that a key found in it later is the sync's own (or kept in its ledger). `None`
    /// (a regex rename): the sync remembers the keys it wrote instead.
    pub destination: Option<String>,
}

impl SyncRule {
    /// The rule for keys matching `pattern`, renamed by `rename`.
    pub fn new(pattern: String, rename: Option<KeyRename>) -> SyncRule {
        let destination = match &rename {
            None => Some(pattern.clone()),
            Some(KeyRename::Prefix { from, to }) => {
                let literal = |b: &[u8]| !b.iter().any(|c| b"*?[]\\".contains(c));
                match pattern.as_bytes().strip_prefix(from.as_slice()) {
                    Some(rest) if literal(from) => {
                        let mut glob = Vec::new();
                        for &c in to {
                            if b"*?[]\\".contains(&c) {
                                glob.push(b'\\');
                            }
                            glob.push(c);
                        }
                        glob.extend_from_slice(rest);
                        String::from_utf8(glob).ok()
                    }
                    _ => None,
                }
            }
            Some(KeyRename::Regex { .. }) => None,
        };
        SyncRule {
            pattern,
            rename,
            destination,
        }
    }
}

/// What a sync moves, and how.
#[derive(Clone, Debug)]
pub struct SyncPlan {
    /// The families of keys; the first whose pattern matches a key takes it.
    pub rules: Vec<SyncRule>,
    /// The source database whose keys move (the target connection's own db receives).
    pub db: u64,
    /// What happens to a key that exists on the target and is not the sync's.
    pub existing: SyncExisting,
    /// The key on the target that holds the replication id and offset applied.
    pub marker: Vec<u8>,
    /// The target is the source's server and database (the sync sees its own writes
    /// come back in the stream: a renamed key must not match a pattern again).
    pub same_keyspace: bool,
    /// The full sync is loaded by the target as redis-move's replica (`load:
    /// replication`), not with `RESTORE`.
    pub served: Option<ServedLoad>,
    /// The destination namespaces were checked by another sync of the same step (a
    /// shard of a cluster source started before this one): not checked again.
    pub namespaces_checked: bool,
}

/// Where the target of a served full sync finds redis-move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedLoad {
    /// The address redis-move listens on.
    pub listen: String,
    /// The `host:port` the target connects to (default: the listening address).
    pub announce: Option<String>,
}

impl SyncPlan {
    /// The target name of source key `key`, or `None` when no rule takes it.
    pub fn target_key(&self, key: &[u8]) -> Option<Vec<u8>> {
        let rule = self
            .rules
            .iter()
            .find(|r| glob_match(r.pattern.as_bytes(), key))?;
        Some(match &rule.rename {
            Some(rename) => rename.apply(key),
            None => key.to_vec(),
        })
    }

    /// The checked namespaces (destination globs) of the rules that have one.
    fn namespaces(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|r| r.destination.clone())
            .collect()
    }

    fn takes(&self, key: &[u8]) -> bool {
        self.rules
            .iter()
            .any(|r| glob_match(r.pattern.as_bytes(), key))
    }

    fn patterns(&self) -> String {
        self.rules
            .iter()
            .map(|r| format!("`{}`", r.pattern))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// On one server, a renamed key that a pattern takes again would be followed
    /// forever (each write the sync makes comes back in the stream).
    fn check_loop(&self, source_key: &[u8], target_key: &[u8]) -> Result<(), BackendError> {
        if self.same_keyspace && (self.takes(target_key) || target_key == self.marker.as_slice()) {
            return Err(BackendError::Config(format!(
                "`{}` is renamed to `{}`, which {} takes again: on one server the sync would follow its own writes; rename into names outside the patterns",
                display_key(source_key),
                display_key(target_key),
                self.patterns()
            )));
        }
        Ok(())
    }
}

/// How far a sync has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Keys written from the RDB (this start's full sync, if it had one).
    pub keys: u64,
    /// Keys that existed on the target and were overwritten (kept in the ledger).
    pub replaced: u64,
    /// Writes of the stream applied.
    pub commands: u64,
    /// Writes of the stream skipped (outside the filter or the db).
    pub skipped: u64,
    /// Writes applied a second time because the target had lost them: a cluster primary
    /// that acknowledged them died before its replica had them (their slot's marker went
    /// with them).
    pub reapplied: u64,
    /// The source's replication id.
    pub replid: String,
    /// The replication offset applied up to.
    pub offset: i64,
}

/// Where a sync stands on the target: its marker key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The source's replication id.
    pub replid: String,
    /// The offset of the last byte of the stream applied.
    pub offset: i64,
    /// The database the stream had selected there (a partial resync continues in it:
    /// the server sends no SELECT).
    pub db: u64,
}

/// Reads the marker of a sync from the target (`None`: none there yet).
pub async fn applied(
    target: &RedisBackend,
    marker: &[u8],
) -> Result<Option<Applied>, BackendError> {
    let reply = target.raw(redis::cmd("GET").arg(marker)).await?;
    let redis::Value::BulkString(bytes) = reply else {
        return Ok(None);
    };
    parse_marker(&bytes, marker).map(Some)
}

/// What marker `key` holds (`replid offset db`).
fn parse_marker(bytes: &[u8], key: &[u8]) -> Result<Applied, BackendError> {
    let text = String::from_utf8_lossy(bytes);
    let mut words = text.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|o| o.parse().ok()),
        words.next().and_then(|d| d.parse().ok()),
    ) {
        (Some(replid), Some(offset), Some(db)) => Ok(Applied {
            replid: replid.to_owned(),
            offset,
            db,
        }),
        _ => Err(BackendError::Unexpected(format!(
            "the sync marker `{}` holds `{text}`",
            display_key(key)
        ))),
    }
}

fn marker_value(replid: &str, offset: i64, db: u64) -> String {
    format!("{replid} {offset} {db}")
}

/// A key's hash, keyed at random per process (crafted key names cannot collide on
/// purpose); the ledger keeps the names, so hashes are never stored.
fn key_hash(key: &[u8]) -> u64 {
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(std::hash::RandomState::new).hash_one(key)
}

/// Hashes a key's hash as itself (it is one already).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of key hashes.
type KeySet = HashSet<u64, std::hash::BuildHasherDefault<Prehashed>>;

/// A value's DUMP payload as a command argument, written into the command in place.
struct Payload<'a>(&'a RdbEntry, u16);

impl redis::ToRedisArgs for Payload<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        self.0
            .write_dump_payload(self.1, &mut out.writer_for_next_arg());
    }
}

/// The ledger of a sync, and what tells its keys from others': a key in a checked
/// namespace is its own (or kept in the ledger); other keys it wrote are remembered by a
/// 64-bit hash.
struct Ledger {
    writer: LedgerWriter,
    seq: u64,
    namespaces: Vec<String>,
    ours: KeySet,
    /// It holds changes of an earlier start.
    earlier: bool,
}

impl Ledger {
    fn open(path: &Path, plan: &SyncPlan) -> Result<Ledger, BackendError> {
        let state = LedgerState::read(path)?;
        let mut ledger = Ledger {
            writer: LedgerWriter::open(path, &state)?,
            seq: state.changes.len() as u64 + 1,
            namespaces: plan.namespaces(),
            ours: KeySet::default(),
            earlier: !state.changes.is_empty(),
        };
        for change in &state.changes {
            let key = match change {
                Change::Created(key) | Change::Temporary(key) => key,
                Change::Unconfirmed { key, .. } => key,
                Change::Replaced(r) => &r.key,
                Change::Merged { before, .. } => &before.key,
            };
            ledger.remember(key);
        }
        Ok(ledger)
    }

    /// Whether `key` is in a namespace checked before the sync started.
    fn checked(&self, key: &[u8]) -> bool {
        self.namespaces
            .iter()
            .any(|glob| glob_match(glob.as_bytes(), key))
    }

    fn remember(&mut self, key: &[u8]) {
        if !self.checked(key) {
            self.ours.insert(key_hash(key));
        }
    }

    /// Whether `key`, when it exists on the target, is the sync's (or kept).
    fn is_ours(&self, key: &[u8]) -> bool {
        self.checked(key) || self.ours.contains(&key_hash(key))
    }

    /// Whether writing `key` must be recorded first: a key of a checked namespace always
    /// (the intent is cheap; whether it exists is not asked), another only once.
    fn needs_intent(&self, key: &[u8]) -> bool {
        self.checked(key) || !self.ours.contains(&key_hash(key))
    }

    /// Records that `keys` (target, source) are about to be created (flushed first);
    /// the intent's number, for [`Ledger::created`].
    fn creating(&mut self, keys: &[(&[u8], &[u8])]) -> Result<u64, BackendError> {
        self.seq += 1;
        if keys.is_empty() {
            return Ok(self.seq);
        }
        self.writer.intent(self.seq, keys)?;
        for (key, _) in keys {
            self.remember(key);
        }
        Ok(self.seq)
    }

    /// Records which keys of intent `seq` were created (`false`: it existed, and is
    /// recorded as replaced instead).
    fn created(&mut self, seq: u64, created: &[bool]) -> Result<(), BackendError> {
        if created.is_empty() {
            return Ok(());
        }
        self.writer.created(seq, created)?;
        self.writer.flush()
    }

    /// Keeps `key`'s value before it is overwritten (synced first).
    async fn replacing(&mut self, target: &RedisBackend, key: &[u8]) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
        let replies = target.pipeline(pipe).await?;
        if let [redis::Value::BulkString(payload), ttl] = replies.as_slice() {
            let ttl = match ttl {
                redis::Value::Int(ms) if *ms > 0 => *ms as u64,
                _ => 0,
            };
            self.writer.replaced(&Replaced {
                key: key.to_vec(),
                payload: payload.clone(),
                ttl_ms: ttl,
            })?;
        }
        self.remember(key);
        Ok(())
    }
}

/// A running sync.
pub struct Sync {
    link: ReplicaLink,
    /// The server it follows (a cluster source's shard: that shard's primary).
    source: RedisBackend,
    target: RedisBackend,
    plan: SyncPlan,
    keys: CommandKeys,
    ledger: Ledger,
    /// Keys of checked namespaces the stream reached lately (bounded).
    recent: KeySet,
    current_db: u64,
    stats: SyncStats,
    format: TargetFormat,
    /// On a cluster target: how far each slot is applied ([`slots`]).
    slots: Option<slots::SlotMarkers>,
    /// The offset this process had applied up to before this link (0: none): a write up
    /// to it that is applied again had been lost by the target.
    reached: i64,
}

/// The first server error among `replies`.
fn refusal(replies: &[redis::Value]) -> Option<String> {
    replies.iter().find_map(|r| match r {
        redis::Value::ServerError(e) => Some(format!("{e:?}")),
        _ => None,
    })
}

impl Sync {
    /// Connects to the source as a replica and, for a full sync, writes every key of its
    /// RDB that the plan takes. Continues from `from` (a link of this process that broke)
    /// or else from the target's marker, when the source still has the backlog after
    /// it. `source` answers `COMMAND` (the key specs of its commands); the ledger at
    /// `ledger_path` records every key written; `progress` hears how many keys a full
    /// sync has written, about once a second.
    pub async fn start(
        source_endpoint: &RedisEndpoint,
        source: &RedisBackend,
        target: RedisBackend,
        plan: SyncPlan,
        ledger_path: &Path,
        from: Option<Applied>,
        progress: &(dyn Fn(u64) + std::marker::Sync),
    ) -> Result<(Sync, SyncStart), BackendError> {
        let reply = source.raw(&redis::cmd("COMMAND")).await?;
        let keys = CommandKeys::from_reply(&reply);
        if keys.is_empty() {
            return Err(BackendError::Unexpected(
                "the source's COMMAND gave no key specs (Redis 7 or newer is needed)".into(),
            ));
        }
        let mut ledger = Ledger::open(ledger_path, &plan)?;
        let serving = serving_note(ledger_path);
        release_served(&target, &serving).await?;
        // Keys of an earlier start: a full sync now must drop those the source deleted.
        let again = ledger.earlier;
        let mut stats = SyncStats::default();
        if !again && !plan.namespaces_checked {
            stats.replaced = check_namespaces(&target, &plan, &mut ledger).await?;
        }
        // The marker may lag the stream by writes that were all skipped (they move no
        // marker): a broken link of this process continues from what it read.
        // A batch whose EXEC was applied but whose reply was lost (the target's link
        // broke) moved the marker past the position read: the marker wins then.
        let marker = applied(&target, &plan.marker).await?;
        // On a cluster, the markers alone say what was applied: a primary that failed
        // over may have lost writes this process saw acknowledged.
        let mut slots = match target.cluster() {
            Some(_) => {
                Some(slots::SlotMarkers::read(&target, &plan.marker, marker.as_ref()).await?)
            }
            None => None,
        };
        let reached = from.as_ref().map_or(0, |f| f.offset);
        let resume = match (from, marker) {
            (_, marker) if slots.is_some() => marker,
            (Some(from), Some(marker))
                if marker.replid == from.replid && marker.offset > from.offset =>
            {
                Some(marker)
            }
            (Some(from), _) => Some(from),
            (None, marker) => marker,
        };
        let (mut link, start) = ReplicaLink::open(
            source_endpoint,
            resume.as_ref().map(|a| (a.replid.as_str(), a.offset)),
        )
        .await?;
        let format = TargetFormat::of(&target).await?;
        // A served load needs an empty target: a later full sync (keys of the sync's
        // own on the target) writes with RESTORE.
        let served = plan.served.clone().filter(|_| !again);
        if let (SyncStart::Full, Some(slots)) = (&start, slots.as_mut()) {
            slots.start_over(&target).await?;
        }
        if let (SyncStart::Full, Some(served)) = (&start, served) {
            stats.keys = serve_rdb(
                &mut link,
                source,
                &target,
                &format,
                &plan,
                &served,
                &serving,
                &mut ledger,
                progress,
            )
            .await?;
            target
                .raw(redis::cmd("SET").arg(&plan.marker).arg(marker_value(
                    &link.replid,
                    link.offset,
                    0,
                )))
                .await?;
        } else if start == SyncStart::Full {
            let (loaded, replaced) = load_rdb(
                &mut link,
                &target,
                &format,
                &plan,
                &mut ledger,
                ledger_path,
                again,
                progress,
            )
            .await?;
            stats.keys = loaded;
            stats.replaced += replaced;
            // The keys are on a replica of each primary before the marker says so.
            if let Some(cluster) = target.cluster()
                && !cluster.wait_replicated(slots::LOAD_CONFIRM_WAIT).await?
            {
                tracing::warn!(
                    "a primary of the target cluster had the full sync's keys unacknowledged by its replicas after {}s",
                    slots::LOAD_CONFIRM_WAIT.as_secs()
                );
            }
            target
                .raw(redis::cmd("SET").arg(&plan.marker).arg(marker_value(
                    &link.replid,
                    link.offset,
                    0,
                )))
                .await?;
        }
        stats.replid = link.replid.clone();
        stats.offset = link.offset;
        Ok((
            Sync {
                link,
                source: source.clone(),
                target,
                plan,
                keys,
                ledger,
                recent: KeySet::default(),
                current_db: match (&start, &resume) {
                    (SyncStart::Partial, Some(resume)) => resume.db,
                    _ => 0,
                },
                stats,
                format,
                slots,
                reached,
            },
            start,
        ))
    }

    /// Waits until the stream has something to read (cancel-safe: nothing is consumed).
    pub async fn readable(&mut self) -> Result<(), BackendError> {
        self.link.readable().await
    }

    /// Acknowledges the offset applied to the source.
    pub async fn ack(&mut self) -> Result<(), BackendError> {
        self.link.ack().await
    }

    /// Where it stands in the source's stream (everything up to it applied or skipped).
    pub fn position(&self) -> Applied {
        Applied {
            replid: self.link.replid.clone(),
            offset: self.stats.offset,
            db: self.current_db,
        }
    }

    /// The server it follows.
    pub fn source(&self) -> &RedisBackend {
        &self.source
    }

    /// How far it has come.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Applies the writes that have arrived (waiting up to `wait` for the first), in
    /// batches, for at most [`ROUND`], then acknowledges the offset. How many it applied.
    pub async fn apply_available(&mut self, wait: Duration) -> Result<u64, BackendError> {
        let mut applied = 0;
        let round = tokio::time::Instant::now();
        let mut next = self.link.next_command(wait).await?;
        while next.is_some() {
            let mut batch = Vec::new();
            let mut in_transaction = false;
            while let Some(command) = next.take() {
                let name = command.args[0].to_ascii_uppercase();
                match name.as_slice() {
                    b"MULTI" => in_transaction = true,
                    b"EXEC" | b"DISCARD" => in_transaction = false,
                    _ => {}
                }
                batch.push(command);
                if batch.len() < BATCH || in_transaction {
                    let wait = if in_transaction {
                        TRANSACTION_WAIT
                    } else {
                        Duration::ZERO
                    };
                    next = self.link.next_command(wait).await?;
                    if next.is_none() && in_transaction {
                        return Err(BackendError::Unexpected(format!(
                            "the source began a transaction and sent no EXEC within {}s",
                            TRANSACTION_WAIT.as_secs()
                        )));
                    }
                }
            }
            applied += self.apply_batch(batch).await?;
            if round.elapsed() >= ROUND {
                break;
            }
            next = self.link.next_command(Duration::ZERO).await?;
        }
        // Everything read is applied or skipped, up to what the link consumed itself
        // (a GETACK, which a shutting-down server sends): a resume starts after it.
        self.stats.offset = self.link.offset;
        let position = self.position();
        if let Some(slots) = self.slots.as_mut() {
            slots.confirm(&self.target, &position).await?;
        }
        self.link.ack().await?;
        Ok(applied)
    }

    /// Applies what comes until `offset` of the stream is applied (or `timeout` passes).
    pub async fn drain_to(&mut self, offset: i64, timeout: Duration) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.stats.offset < offset {
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Timeout(format!(
                    "the sync applied up to offset {} of {offset} within {}s",
                    self.stats.offset,
                    timeout.as_secs()
                )));
            }
            self.apply_available(Duration::from_millis(100)).await?;
        }
        Ok(())
    }

    /// Removes the marker (the sync is over: a later start is a new sync).
    pub async fn finish(self) -> Result<SyncStats, BackendError> {
        remove_markers(&self.target, &self.plan.marker).await?;
        Ok(self.stats)
    }

    /// Turns the batch into target writes, records new keys in the ledger, and applies
    /// them with the marker in one transaction. How many writes it applied.
    async fn apply_batch(&mut self, batch: Vec<StreamCommand>) -> Result<u64, BackendError> {
        // A batch that fails leaves the position where it was, the db included (its
        // SELECTs were read, not applied).
        let db = self.current_db;
        let applied = self.apply_batch_inner(batch).await;
        if applied.is_err() {
            self.current_db = db;
        }
        applied
    }

    async fn apply_batch_inner(&mut self, batch: Vec<StreamCommand>) -> Result<u64, BackendError> {
        let Some(last) = batch.last() else {
            return Ok(0);
        };
        let offset = last.offset;
        // Each write with its slot on a cluster target.
        let mut writes: Vec<(u16, Vec<Vec<u8>>)> = Vec::new();
        let mut applied = 0;
        let mut touched: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for command in batch {
            let at = command.offset;
            if let Some((args, keys)) = self.translate(command.args)? {
                let parts = match &self.slots {
                    Some(slots) => {
                        let mut parts = slots::split_by_slot(&self.keys, args)?;
                        parts.retain(|(slot, _)| !slots.applied_already(*slot, at));
                        if parts.is_empty() {
                            continue;
                        }
                        if at <= self.reached {
                            self.stats.reapplied += 1;
                        }
                        parts
                    }
                    None => vec![(0, args)],
                };
                for (target_key, source_key) in keys {
                    // A key seen lately exists or was recorded: not asked again.
                    let hash = key_hash(&target_key);
                    if self.ledger.needs_intent(&target_key)
                        && !self.recent.contains(&hash)
                        && !touched.iter().any(|(t, _)| *t == target_key)
                    {
                        touched.push((target_key, source_key));
                    }
                }
                for (slot, args) in parts {
                    for write in self.format.adapt(args)? {
                        writes.push((slot, write));
                    }
                }
                applied += 1;
            }
        }
        // Nothing to write: the offset moves in memory only (a marker write would come
        // back in the stream of a sync on one server, and be followed forever).
        if writes.is_empty() {
            self.stats.offset = offset;
            return Ok(0);
        }
        // Keys this batch reaches for the first time: new ones are recorded as created,
        // existing ones are another's (kept, or the sync stops).
        let mut new_keys = Vec::new();
        if !touched.is_empty() {
            let mut pipe = redis::pipe();
            for (key, _) in &touched {
                pipe.cmd("EXISTS").arg(key);
            }
            let exists = self.target.pipeline(pipe).await?;
            if self.recent.len() > RECENT {
                self.recent.clear();
            }
            for ((key, source_key), exists) in touched.into_iter().zip(exists) {
                self.recent.insert(key_hash(&key));
                if exists == redis::Value::Int(1) {
                    if !self.ledger.is_ours(&key) {
                        self.existing(&key).await?;
                    }
                } else {
                    new_keys.push((key, source_key));
                }
            }
        }
        let pairs: Vec<(&[u8], &[u8])> = new_keys
            .iter()
            .map(|(t, s)| (t.as_slice(), s.as_slice()))
            .collect();
        let seq = self.ledger.creating(&pairs)?;
        let position = Applied {
            replid: self.link.replid.clone(),
            offset,
            db: self.current_db,
        };
        if let Some(slots) = self.slots.as_mut() {
            let execs = slots.apply(&self.target, writes, &position).await?;
            self.ledger.created(seq, &vec![true; new_keys.len()])?;
            for exec in &execs {
                let refused = match exec {
                    redis::Value::Array(results) => refusal(results),
                    other => Some(format!("{other:?}")),
                };
                if let Some(refused) = refused {
                    return Err(BackendError::Command(format!(
                        "the target refused a write of the source's stream: {refused}"
                    )));
                }
            }
            self.stats.offset = offset;
            self.stats.commands += applied;
            return Ok(applied);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI");
        for (_, args) in &writes {
            pipe.add_command(values::to_cmd(args));
        }
        pipe.cmd("SET").arg(&self.plan.marker).arg(marker_value(
            &position.replid,
            position.offset,
            position.db,
        ));
        pipe.cmd("EXEC");
        let replies = self.target.pipeline(pipe).await?;
        let exec = replies.last().cloned().unwrap_or(redis::Value::Nil);
        match exec {
            redis::Value::Array(results) => {
                self.ledger.created(seq, &vec![true; new_keys.len()])?;
                if let Some(refused) = refusal(&results) {
                    return Err(BackendError::Command(format!(
                        "the target refused a write of the source's stream: {refused}"
                    )));
                }
            }
            other => {
                let why = refusal(&replies).unwrap_or_else(|| format!("{other:?}"));
                return Err(BackendError::Command(format!(
                    "the target refused a batch of the source's stream (nothing of it applied): {why}"
                )));
            }
        }
        self.stats.offset = offset;
        self.stats.commands += applied;
        Ok(applied)
    }

    /// A key the sync reaches that exists on the target and is not its own.
    async fn existing(&mut self, key: &[u8]) -> Result<(), BackendError> {
        match self.plan.existing {
            SyncExisting::Fail => Err(taken(key)),
            SyncExisting::Replace => {
                self.ledger.replacing(&self.target, key).await?;
                self.stats.replaced += 1;
                Ok(())
            }
        }
    }

    /// The target write for a stream command with its (target, source) keys, or `None`
    /// when it is skipped.
    #[allow(clippy::type_complexity)]
    fn translate(
        &mut self,
        mut args: Vec<Vec<u8>>,
    ) -> Result<Option<(Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>)>, BackendError> {
        let name = args[0].to_ascii_uppercase();
        match name.as_slice() {
            // Transactions of the source are applied inside the batch's own.
            b"PING" | b"REPLCONF" | b"MULTI" | b"EXEC" | b"DISCARD" => return Ok(None),
            // A cluster source moving a key into this shard: the other shard's stream
            // deletes it, in an order the sync cannot know.
            b"RESTORE-ASKING" => {
                return Err(BackendError::Command(format!(
                    "the source cluster moved `{}` between shards (a resharding): a sync out of a cluster cannot order the two shards' streams; let the resharding finish before the sync starts",
                    args.get(1).map(|k| display_key(k)).unwrap_or_default()
                )));
            }
            b"SELECT" => {
                self.current_db = args
                    .get(1)
                    .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
                    .ok_or_else(|| BackendError::Unexpected("SELECT without a db".into()))?;
                return Ok(None);
            }
            b"FLUSHALL" | b"FLUSHDB" | b"SWAPDB" => {
                return Err(BackendError::Command(format!(
                    "the source ran {}: redis-move does not apply it to the target (it would reach beyond the keys the sync moves)",
                    String::from_utf8_lossy(&name)
                )));
            }
            _ => {}
        }
        if let Some(db) = cross_db(&name, &args)
            && db != self.current_db
            && (db == self.plan.db || self.current_db == self.plan.db)
            && args.iter().skip(1).take(2).any(|a| self.plan.takes(a))
        {
            return Err(BackendError::Command(format!(
                "the source ran {} of `{}` between db {} and db {db}: redis-move does not move keys across databases (the key would leave the sync's db, or enter it unseen)",
                String::from_utf8_lossy(&name),
                display_key(&args[1]),
                self.current_db
            )));
        }
        if self.current_db != self.plan.db {
            self.stats.skipped += 1;
            return Ok(None);
        }
        let positions = self
            .keys
            .positions(&args)
            .map_err(|e| BackendError::Command(format!("the source's stream: {e}")))?;
        let inside = positions
            .iter()
            .filter(|&&p| self.plan.takes(&args[p]))
            .count();
        if positions.is_empty() || inside == 0 {
            self.stats.skipped += 1;
            return Ok(None);
        }
        if inside < positions.len() {
            let outside = positions
                .iter()
                .find(|&&p| !self.plan.takes(&args[p]))
                .map(|&p| display_key(&args[p]))
                .unwrap_or_default();
            return Err(BackendError::Command(format!(
                "the source's stream has a {} with keys inside and outside {} ({outside}): it cannot be applied to the moved keys alone",
                String::from_utf8_lossy(&name),
                self.plan.patterns()
            )));
        }
        let mut keys = Vec::with_capacity(positions.len());
        for &p in &positions {
            let target_key = self.plan.target_key(&args[p]).unwrap_or_default();
            self.plan.check_loop(&args[p], &target_key)?;
            let source_key = std::mem::replace(&mut args[p], target_key.clone());
            keys.push((target_key, source_key));
        }
        Ok(Some((args, keys)))
    }
}

/// Batches of RDB keys sent to the target before the oldest one's replies are read.
const IN_FLIGHT: usize = 8;

/// A batch of RDB keys sent to the target, its replies to come.
struct Sent {
    seq: u64,
    entries: Vec<(Vec<u8>, RdbEntry)>,
    /// Which entries are new keys (in the intent, in order).
    new: Vec<bool>,
    /// The calls that finish each entry after its first command was applied (a big
    /// value written as commands).
    rest: Vec<Vec<redis::Cmd>>,
    replies: tokio::task::JoinHandle<Result<Vec<redis::Value>, BackendError>>,
}

/// What loading an RDB keeps between batches.
struct Load<'a> {
    ledger: &'a mut Ledger,
    /// With `again`: the keys this RDB has.
    seen: Option<KeySet>,
    written: u64,
    replaced: u64,
    in_flight: std::collections::VecDeque<Sent>,
}

/// What the target reads: the RDB format of its DUMP payloads, and its commands.
#[derive(Clone, Copy, Debug)]
struct TargetFormat {
    /// Its RDB version (unknown for a release newer than redis-move knows).
    rdb: Option<u32>,
    dialect: Dialect,
}

impl TargetFormat {
    async fn of(target: &RedisBackend) -> Result<TargetFormat, BackendError> {
        let (flavor, version) = target.server_version().await?;
        Ok(TargetFormat {
            rdb: crate::actions::compat::rdb_version(&flavor, &version),
            // Valkey speaks Redis 7.2's commands.
            dialect: Dialect::of_version(if flavor == "valkey" { "7.2" } else { &version }),
        })
    }

    /// Whether it takes DUMP payloads of RDB `version` (an unknown, newer, release does).
    fn restores(&self, version: u16) -> bool {
        self.rdb.is_none_or(|rdb| rdb >= u32::from(version))
    }

    /// A write of the source's stream as the target takes it: Redis 7's stream counters
    /// left out for an older target, and a `RESTORE` of a payload it refuses written as
    /// commands.
    fn adapt(&self, args: Vec<Vec<u8>>) -> Result<Vec<Vec<Vec<u8>>>, BackendError> {
        if args[0].eq_ignore_ascii_case(b"RESTORE")
            && let Some(calls) = self.restore_as_commands(&args)?
        {
            return Ok(calls);
        }
        Ok(vec![self.dialect.adapt(args)])
    }

    /// `RESTORE key ttl payload [REPLACE] [ABSTTL] ...` as commands, when the target
    /// refuses the payload's version (`None`: it takes it as it is).
    fn restore_as_commands(
        &self,
        args: &[Vec<u8>],
    ) -> Result<Option<Vec<Vec<Vec<u8>>>>, BackendError> {
        let (Some(key), Some(ttl), Some(payload)) = (args.get(1), args.get(2), args.get(3)) else {
            return Ok(None);
        };
        // Not a payload redis-move reads: the target says what is wrong with it.
        let Ok((entry, version)) = RdbEntry::from_dump(key, payload) else {
            return Ok(None);
        };
        if self.restores(version) {
            return Ok(None);
        }
        let option = |name: &[u8]| args[4..].iter().any(|a| a.eq_ignore_ascii_case(name));
        let ttl: i64 = std::str::from_utf8(ttl)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| BackendError::Unexpected("a RESTORE without its TTL".into()))?;
        let expires_at_ms = match ttl {
            0 => None,
            at if option(b"ABSTTL") => Some(at),
            ttl => Some(now_ms() + ttl),
        };
        let value = values::decode(&entry).map_err(|e| {
            BackendError::Unexpected(format!(
                "reading the value of a RESTORE of `{}`: {e}",
                display_key(key)
            ))
        })?;
        let existing = if option(b"REPLACE") {
            Existing::Replace
        } else {
            Existing::Refuse
        };
        Ok(Some(values::call_args(
            key,
            &value,
            expires_at_ms,
            existing,
            self.dialect,
        )))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How one key of the RDB is written: a command whose reply says whether the key was
/// written (`BUSYKEY`: it exists and is not replaced), and the calls that finish it once
/// it was (a big value written as commands).
/// A renamed key whose value holds names of keys the sync renames (a BullMQ flow's
/// `parentKey`, `:dependencies`) stops the sync: it does not rename names inside values
/// (the live writes would bring the old names back), and copied as they are, the flow
/// would never finish.
fn refuse_references(plan: &SyncPlan, entry: &RdbEntry, name: &[u8]) -> Result<(), BackendError> {
    if name == entry.key.as_slice()
        || !crate::actions::copy::references::may_refer(&entry.key, &entry.value)
    {
        return Ok(());
    }
    let Ok(value) = values::decode(entry) else {
        return Ok(());
    };
    let rename = |key: &[u8]| plan.target_key(key).unwrap_or_else(|| key.to_vec());
    match crate::actions::copy::references::rewrite(&entry.key, &value, &rename) {
        Some(_) => Err(BackendError::Config(format!(
            "`{}` holds names of keys the sync renames (a BullMQ flow: a child's `parentKey`, a parent's `:dependencies`); a sync does not rename names inside values, and the flow would never finish: move these keys with `redis.copy` and `references: rewrite` (writers stopped), or sync without renaming them",
            display_key(&entry.key)
        ))),
        None => Ok(()),
    }
}

fn key_write(
    name: &[u8],
    entry: &RdbEntry,
    version: u16,
    replace: bool,
    format: &TargetFormat,
) -> Result<(redis::Cmd, Vec<redis::Cmd>), BackendError> {
    if format.restores(version) {
        let mut cmd = redis::cmd("RESTORE");
        cmd.arg(name)
            .arg(entry.expires_at_ms.unwrap_or(0))
            .arg(Payload(entry, version))
            .arg("ABSTTL");
        if replace {
            cmd.arg("REPLACE");
        }
        return Ok((cmd, Vec::new()));
    }
    // An older target refuses the payload: the value is written as commands.
    let value = values::decode(entry).map_err(|e| {
        BackendError::Unexpected(format!(
            "reading the value of `{}` from the RDB: {e}",
            display_key(&entry.key)
        ))
    })?;
    let existing = if replace {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    let mut calls = values::calls(name, &value, entry.expires_at_ms, existing, format.dialect);
    let first = calls.remove(0);
    Ok((first, calls))
}

impl Load<'_> {
    /// Reads the replies of the oldest batch in flight: records what it created, and
    /// keeps (or refuses) the keys of others it met.
    async fn settle_oldest(
        &mut self,
        target: &RedisBackend,
        plan: &SyncPlan,
        version: u16,
        format: &TargetFormat,
    ) -> Result<(), BackendError> {
        let Some(sent) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let replies = sent
            .replies
            .await
            .map_err(|e| BackendError::Local(format!("a RESTORE batch stopped: {e}")))??;
        let busy = |reply: &redis::Value| matches!(reply, redis::Value::ServerError(e) if e.code() == "BUSYKEY");
        // A new key that refused (BUSYKEY) was not created: it is another's, kept
        // below as replaced.
        let created: Vec<bool> = sent
            .new
            .iter()
            .zip(&replies)
            .filter(|(new, _)| **new)
            .map(|(_, reply)| !busy(reply))
            .collect();
        self.ledger.created(sent.seq, &created)?;
        for (((name, entry), reply), rest) in sent.entries.iter().zip(&replies).zip(&sent.rest) {
            if let Some(seen) = self.seen.as_mut() {
                seen.insert(key_hash(name));
            }
            let refused = |e: &dyn std::fmt::Debug| {
                BackendError::Command(format!(
                    "the target refused `{}` of the RDB: {e:?}",
                    display_key(name)
                ))
            };
            let finish = match reply {
                reply if busy(reply) => match plan.existing {
                    SyncExisting::Fail => return Err(taken(name)),
                    SyncExisting::Replace => {
                        self.ledger.replacing(target, name).await?;
                        let (first, rest) = key_write(name, entry, version, true, format)?;
                        target.raw(&first).await?;
                        self.replaced += 1;
                        rest
                    }
                },
                redis::Value::ServerError(e) => return Err(refused(e)),
                _ => rest.clone(),
            };
            for call in &finish {
                target.raw(call).await.map_err(|e| refused(&e))?;
            }
            self.written += 1;
        }
        Ok(())
    }
}

/// The other database a command reaches (`MOVE key db`, `COPY src dst DB db`).
fn cross_db(name: &[u8], args: &[Vec<u8>]) -> Option<u64> {
    let number = |a: &Vec<u8>| std::str::from_utf8(a).ok()?.parse().ok();
    match name {
        b"MOVE" => args.get(2).and_then(number),
        b"COPY" => args
            .iter()
            .position(|a| a.eq_ignore_ascii_case(b"DB"))
            .and_then(|i| args.get(i + 1))
            .and_then(number),
        _ => None,
    }
}

/// Writes the RDB's keys that the plan takes: (keys written, keys replaced), with up to
/// [`IN_FLIGHT`] batches of RESTOREs sent before the oldest one's replies are read.
/// After an earlier start (`again`), those of the sync's keys that the new RDB no longer
/// has are deleted (the source deleted them meanwhile).
#[allow(clippy::too_many_arguments)]
async fn load_rdb(
    link: &mut ReplicaLink,
    target: &RedisBackend,
    format: &TargetFormat,
    plan: &SyncPlan,
    ledger: &mut Ledger,
    ledger_path: &Path,
    again: bool,
    progress: &(dyn Fn(u64) + std::marker::Sync),
) -> Result<(u64, u64), BackendError> {
    let reported = std::sync::Mutex::new(std::time::Instant::now());
    let load = tokio::sync::Mutex::new(Load {
        ledger,
        seen: again.then(KeySet::default),
        written: 0,
        replaced: 0,
        in_flight: Default::default(),
    });
    let mut rdb_version = 0;
    let loaded = link
        .read_rdb(|batch, version| {
            rdb_version = version;
            let mut entries = Vec::new();
            let mut failure = None;
            for entry in batch {
                if entry.db != plan.db {
                    continue;
                }
                let Some(name) = plan.target_key(&entry.key) else {
                    continue;
                };
                if let Err(e) = plan.check_loop(&entry.key, &name) {
                    failure = Some(e);
                    break;
                }
                if let Err(e) = refuse_references(plan, &entry, &name) {
                    failure = Some(e);
                    break;
                }
                entries.push((name, entry));
            }
            let (load, reported) = (&load, &reported);
            async move {
                if let Some(e) = failure {
                    return Err(e);
                }
                if entries.is_empty() {
                    return Ok(());
                }
                let mut load = load.lock().await;
                let new: Vec<bool> = entries
                    .iter()
                    .map(|(name, _)| load.ledger.needs_intent(name))
                    .collect();
                let pairs: Vec<(&[u8], &[u8])> = entries
                    .iter()
                    .zip(&new)
                    .filter(|(_, new)| **new)
                    .map(|((name, entry), _)| (name.as_slice(), entry.key.as_slice()))
                    .collect();
                let mut pipe = redis::pipe();
                let mut rest = Vec::with_capacity(entries.len());
                for (name, entry) in &entries {
                    // The sync's own keys (and a checked namespace's) are written over;
                    // one it has not written yet refuses with BUSYKEY when it exists
                    // (another's key).
                    let replace = load.ledger.is_ours(name);
                    let (first, finish) = key_write(name, entry, version, replace, format)?;
                    pipe.add_command(first);
                    rest.push(finish);
                }
                let seq = load.ledger.creating(&pairs)?;
                let sender = target.clone();
                load.in_flight.push_back(Sent {
                    seq,
                    entries,
                    new,
                    rest,
                    replies: tokio::spawn(async move { sender.pipeline(pipe).await }),
                });
                while load.in_flight.len() > IN_FLIGHT {
                    load.settle_oldest(target, plan, version, format).await?;
                }
                let mut last = reported.lock().expect("not poisoned");
                if last.elapsed() >= Duration::from_secs(1) {
                    *last = std::time::Instant::now();
                    progress(load.written);
                }
                Ok(())
            }
        })
        .await;
    let mut load = load.into_inner();
    // Every batch sent is settled, even after a failure: what it created is recorded.
    let mut settled = Ok(());
    while !load.in_flight.is_empty() {
        if let Err(e) = load.settle_oldest(target, plan, rdb_version, format).await
            && settled.is_ok()
        {
            settled = Err(e);
        }
    }
    loaded?;
    settled?;
    if again {
        load.ledger.writer.flush()?;
        let stale: Vec<Vec<u8>> = LedgerState::read(ledger_path)?
            .changes
            .into_iter()
            .filter_map(|change| match change {
                Change::Created(key) | Change::Unconfirmed { key, .. } => Some(key),
                Change::Replaced(r) => Some(r.key),
                _ => None,
            })
            .filter(|key| {
                !load
                    .seen
                    .as_ref()
                    .is_some_and(|s| s.contains(&key_hash(key)))
            })
            .collect();
        for chunk in stale.chunks(BATCH) {
            target.unlink(chunk).await?;
        }
    }
    Ok((load.written, load.replaced))
}

/// The full sync's keys loaded by the target as redis-move's replica: the target is told
/// `REPLICAOF` redis-move, is sent an RDB of the keys the plan takes under their new
/// names (their value bytes as the source wrote them), loads it at its own speed, and is
/// told `REPLICAOF NO ONE`. Only for an empty target that reads the source's RDB
/// version. How many keys it loaded.
#[allow(clippy::too_many_arguments)]
async fn serve_rdb(
    link: &mut ReplicaLink,
    source: &RedisBackend,
    target: &RedisBackend,
    format: &TargetFormat,
    plan: &SyncPlan,
    served: &ServedLoad,
    serving: &Path,
    ledger: &mut Ledger,
    progress: &(dyn Fn(u64) + std::marker::Sync),
) -> Result<u64, BackendError> {
    let refuse = |why: String| {
        BackendError::Config(format!("`load: replication` {why}; use `load: restore`"))
    };
    if target.cluster().is_some() {
        return Err(refuse(
            "makes the target a replica of redis-move, and a cluster's nodes each follow their own primary".into(),
        ));
    }
    if let Some(what) = target_holds(target).await? {
        return Err(refuse(format!(
            "replaces the target's whole dataset, and the target has {what}"
        )));
    }
    if target
        .replication()
        .await?
        .get("role")
        .is_some_and(|r| r.as_text() != "master")
    {
        return Err(refuse(
            "needs a target that is a primary, not a replica".into(),
        ));
    }
    if target
        .config_text("tls-replication")
        .await
        .is_ok_and(|tls| tls == "yes")
    {
        return Err(refuse(
            "serves the RDB over plain TCP, and the target replicates over TLS (`tls-replication yes`)".into(),
        ));
    }
    let (source_flavor, source_version) = source.server_version().await?;
    let source_rdb = crate::actions::compat::rdb_version(&source_flavor, &source_version);
    if let (Some(source_rdb), Some(target_rdb)) = (source_rdb, format.rdb)
        && source_rdb > target_rdb
    {
        return Err(refuse(format!(
            "needs a target that reads the source's RDB version {source_rdb} (the target writes {target_rdb})"
        )));
    }
    let (_, target_db) = target.keyspace_identity().await?;
    let primary = RdbPrimary::bind(&served.listen).await?;
    let announce = match &served.announce {
        Some(announce) => announce.clone(),
        None => {
            let host = served
                .listen
                .rsplit_once(':')
                .map_or(served.listen.as_str(), |(h, _)| h);
            if matches!(host, "0.0.0.0" | "[::]" | "::" | "") {
                return Err(BackendError::Config(format!(
                    "listening on `{}`: give `announce:`, the host:port the target connects to",
                    served.listen
                )));
            }
            format!("{host}:{}", primary.port()?)
        }
    };
    // The target is told this address: it must lead to redis-move (another server
    // there would give the target its whole dataset).
    primary.check_reaches(&announce).await?;
    // A diskless load (the target reads the RDB off the socket, nothing written to its
    // disk first), as for a tuned replica; the setting is put back after.
    let diskless = target.config_text("repl-diskless-load").await.ok();
    // Noted first: a run killed while the target follows redis-move releases it (and
    // puts its setting back) when it resumes or rolls back.
    std::fs::write(
        serving,
        format!("{announce}\n{}", diskless.as_deref().unwrap_or_default()),
    )
    .map_err(|e| BackendError::Local(format!("{}: {e}", serving.display())))?;
    if diskless.is_some() {
        target
            .config_set("repl-diskless-load", "on-empty-db")
            .await?;
    }
    let mut seqs = Vec::new();
    let loaded = async {
        // Writers held while the target is checked empty and told to follow: a write
        // in between would be acknowledged, then dropped by the full sync; held, it is
        // refused (READONLY) once the target follows.
        let paused = target
            .raw(redis::cmd("CLIENT").arg("PAUSE").arg(10_000).arg("WRITE"))
            .await
            .is_ok();
        let following = async {
            if let Some(what) = target_holds(target).await? {
                return Err(refuse(format!(
                    "replaces the target's whole dataset, and the target has {what} (written since the check)"
                )));
            }
            target.replicaof(Some(&announce)).await
        }
        .await;
        if paused {
            target.raw(redis::cmd("CLIENT").arg("UNPAUSE")).await.ok();
        }
        following?;
        let writer = primary.accept(Duration::from_secs(30)).await?;
        struct Serving {
            writer: RdbWriter,
            header: bool,
            written: u64,
            buf: Vec<u8>,
            reported: std::time::Instant,
        }
        let state = tokio::sync::Mutex::new(Serving {
            writer,
            header: false,
            written: 0,
            buf: Vec::new(),
            reported: std::time::Instant::now(),
        });
        let ledger = tokio::sync::Mutex::new(&mut *ledger);
        let seqs = tokio::sync::Mutex::new(&mut seqs);
        let version = link
            .read_rdb(|batch, version| {
                let (state, ledger, seqs) = (&state, &ledger, &seqs);
                async move {
                    let mut keys = Vec::new();
                    for entry in batch {
                        if entry.db != plan.db {
                            continue;
                        }
                        if let Some(name) = plan.target_key(&entry.key) {
                            keys.push((name, entry));
                        }
                    }
                    let pairs: Vec<(&[u8], &[u8])> = keys
                        .iter()
                        .map(|(name, entry)| (name.as_slice(), entry.key.as_slice()))
                        .collect();
                    let seq = ledger.lock().await.creating(&pairs)?;
                    seqs.lock().await.push((seq, keys.len()));
                    let mut state = state.lock().await;
                    let state = &mut *state;
                    if !state.header {
                        state.writer.header(version).await?;
                        state.header = true;
                    }
                    for (name, entry) in &keys {
                        state
                            .writer
                            .key(name, entry, u64::from(target_db), &mut state.buf)
                            .await?;
                    }
                    state.written += keys.len() as u64;
                    if state.reported.elapsed() >= Duration::from_secs(1) {
                        state.reported = std::time::Instant::now();
                        progress(state.written);
                    }
                    Ok(())
                }
            })
            .await?;
        let mut state = state.into_inner();
        if !state.header {
            state.writer.header(version).await?;
        }
        let _served = state.writer.finish().await?;
        wait_loaded(target).await?;
        Ok::<u64, BackendError>(state.written)
    }
    .await;
    // Whatever happened: the target follows no one, its setting is back.
    let released = release_served(target, serving).await;
    let written = loaded?;
    released?;
    for (seq, count) in seqs {
        ledger.created(seq, &vec![true; count])?;
    }
    Ok(written)
}

/// A target left following redis-move by a run killed in a served load (`serving`
/// names the address it was told) is told `REPLICAOF NO ONE`; a target that follows
/// another primary is left alone.
pub(crate) async fn release_served(
    target: &RedisBackend,
    serving: &Path,
) -> Result<(), BackendError> {
    let Ok(note) = std::fs::read_to_string(serving) else {
        return Ok(());
    };
    let (address, diskless) = note.split_once('\n').unwrap_or((&note, ""));
    let replication = target.replication().await?;
    let field = |name: &str| replication.get(name).map(crate::value::Value::as_text);
    let following = format!(
        "{}:{}",
        field("master_host").unwrap_or_default(),
        field("master_port").unwrap_or_default()
    );
    if field("role").as_deref() == Some("slave") && following == address {
        target.replicaof(None).await?;
    }
    if !diskless.is_empty() {
        target.config_set("repl-diskless-load", diskless).await?;
    }
    std::fs::remove_file(serving).ok();
    Ok(())
}

/// Where a served load notes the address its target follows and the setting to put
/// back (beside the sync's ledger).
pub(crate) fn serving_note(ledger_path: &Path) -> std::path::PathBuf {
    ledger_path.with_extension("serving")
}

/// What the target holds that a replica's full sync would replace: keys (in any db) or
/// functions; `None` when it is empty.
async fn target_holds(target: &RedisBackend) -> Result<Option<String>, BackendError> {
    let keyspace = target.info_sections(Some("keyspace")).await?;
    if let Some(dbs) = keyspace.get("keyspace").filter(|dbs| !dbs.is_empty()) {
        let names: Vec<&str> = dbs.keys().map(String::as_str).collect();
        return Ok(Some(format!("keys ({})", names.join(", "))));
    }
    // Functions (Redis 7): a server without them answers an error.
    if let Ok(redis::Value::Array(libraries)) = target.raw(redis::cmd("FUNCTION").arg("LIST")).await
        && !libraries.is_empty()
    {
        return Ok(Some(format!("{} function libraries", libraries.len())));
    }
    Ok(None)
}

/// Waits until the target, sent its RDB, has loaded it (its link to redis-move up, no
/// sync in progress); an error when it dropped the link without loading it.
async fn wait_loaded(target: &RedisBackend) -> Result<(), BackendError> {
    let mut down_since = None;
    loop {
        let replication = target.replication().await?;
        let field = |name: &str| replication.get(name).map(crate::value::Value::as_text);
        let in_progress = field("master_sync_in_progress").as_deref() == Some("1");
        if field("master_link_status").as_deref() == Some("up") && !in_progress {
            return Ok(());
        }
        if in_progress {
            down_since = None;
        } else if down_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            > Duration::from_secs(5)
        {
            return Err(BackendError::Command(
                "the target did not load the RDB redis-move sent it (its log says why)".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Before a first start: a key already in a rule's destination namespace is another's;
/// the sync stops (`existing: fail`) or keeps its value in the ledger (`replace`). How
/// many were kept.
/// Checks the destination namespaces once for the syncs of every shard of a cluster
/// source, before any starts: keys of others there stop the sync (`existing: fail`) or
/// are kept in the ledger at `ledger_path` (`existing: replace`), apart from the shards'
/// own ledgers (a shard's full sync again removes the keys of its ledger its source no
/// longer has, which would take other shards' keys). How many were kept.
pub async fn check_destination(
    target: &RedisBackend,
    plan: &SyncPlan,
    ledger_path: &Path,
) -> Result<u64, BackendError> {
    let mut ledger = Ledger::open(ledger_path, plan)?;
    let kept = check_namespaces(target, plan, &mut ledger).await?;
    ledger.writer.flush()?;
    Ok(kept)
}

async fn check_namespaces(
    target: &RedisBackend,
    plan: &SyncPlan,
    ledger: &mut Ledger,
) -> Result<u64, BackendError> {
    let mut kept = 0;
    for glob in plan.namespaces() {
        let mut cursor = 0u64;
        loop {
            let (next, keys) = target.scan_page(cursor, &glob, None, 1000).await?;
            for key in keys {
                if key == plan.marker {
                    continue;
                }
                match plan.existing {
                    SyncExisting::Fail => return Err(taken(&key)),
                    SyncExisting::Replace => {
                        ledger.replacing(target, &key).await?;
                        kept += 1;
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(kept)
}

/// The error for a key of another on the target, with `existing: fail`.
fn taken(key: &[u8]) -> BackendError {
    BackendError::Command(format!(
        "`{}` already exists on the target and is not the sync's (`existing: replace` overwrites it, keeping its value for the rollback)",
        display_key(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(from: &str, to: &str) -> Option<KeyRename> {
        Some(KeyRename::Prefix {
            from: from.as_bytes().to_vec(),
            to: to.as_bytes().to_vec(),
        })
    }

    #[test]
    fn a_rule_knows_the_namespace_it_writes_when_a_glob_can_say_it() {
        let rule = |pattern: &str, rename| SyncRule::new(pattern.into(), rename).destination;
        assert_eq!(
            rule("job:*", prefix("job:", "step:")),
            Some("step:*".into())
        );
        assert_eq!(
            rule("job:*:x", prefix("job:", "st*p:")),
            Some("st\\*p:*:x".into())
        );
        assert_eq!(rule("job:*", None), Some("job:*".into()));
        // Keys the prefix does not cover keep their names: no single glob.
        assert_eq!(rule("*", prefix("job:", "step:")), None);
        assert_eq!(rule("j*", prefix("j*", "s")), None);
        let regex = KeyRename::Regex {
            regex: regex::bytes::Regex::new("^worker:(.*):jobs$").unwrap(),
            replace: b"worker:$1:steps".to_vec(),
        };
        assert_eq!(rule("worker:*:jobs", Some(regex)), None);
    }

    #[test]
    fn on_one_server_a_rename_back_into_a_pattern_is_refused() {
        let plan = SyncPlan {
            rules: vec![SyncRule::new("job:*".into(), prefix("job:", "job:v2:"))],
            db: 0,
            existing: SyncExisting::Fail,
            marker: b"redis-move:sync:r:s".to_vec(),
            same_keyspace: true,
            served: None,
            namespaces_checked: false,
        };
        let target = plan.target_key(b"job:1").unwrap();
        assert_eq!(target, b"job:v2:1");
        let refused = plan.check_loop(b"job:1", &target).unwrap_err().to_string();
        assert!(refused.contains("follow its own writes"), "{refused}");
        assert_eq!(plan.target_key(b"other"), None);
    }
}
