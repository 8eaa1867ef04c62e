//! The engine of a live migration as a replica (`redis.sync`, issue 13): the source's
//! RDB, then its stream of writes, applied to a target with a key filter and a rename,
//! the replication offset acknowledged as it is applied. The step that runs it in the
//! background of a runbook comes on top of this.
//!
//! - RDB keys are written with `RESTORE ... ABSTTL REPLACE` from their own bytes,
//!   pipelined by the batch the stream delivers.
//! - Stream writes are applied in order with their keys renamed where the source's key
//!   specs put them; a write whose keys are all outside the filter (or in another db) is
//!   skipped, one that mixes keys inside and outside is refused, and so are keyless
//!   writes that would reach beyond the filter (`FLUSHALL`, `FLUSHDB`, `SWAPDB`).

use std::time::Duration;

use super::copy::KeyRename;
use crate::backend::BackendError;
use crate::backend::command_keys::CommandKeys;
use crate::backend::keyspace::{display_key, glob_match};
use crate::backend::rdb::replica::{ReplicaLink, StreamCommand, SyncStart};
use crate::backend::redis::{RedisBackend, RedisEndpoint};

/// What a sync moves.
#[derive(Clone, Debug)]
pub struct SyncPlan {
    /// Glob of the keys (their source names).
    pub pattern: String,
    /// Rename on the way.
    pub rename: Option<KeyRename>,
    /// The source database whose keys move (the target connection's own db receives).
    pub db: u64,
}

/// How far a sync has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Keys written from the RDB.
    pub keys: u64,
    /// Writes of the stream applied.
    pub commands: u64,
    /// Writes of the stream skipped (outside the filter or the db).
    pub skipped: u64,
    /// The source's replication id.
    pub replid: String,
    /// The replication offset applied up to.
    pub offset: i64,
}

/// A running sync.
pub struct Sync {
    link: ReplicaLink,
    target: RedisBackend,
    plan: SyncPlan,
    keys: CommandKeys,
    current_db: u64,
    stats: SyncStats,
}

impl Sync {
    /// Connects to the source as a replica (continuing from `resume` when the source
    /// still has that backlog) and, for a full sync, writes every key of its RDB that the
    /// plan takes. `source` answers `COMMAND` (the key specs of its commands).
    pub async fn start(
        source_endpoint: &RedisEndpoint,
        source: &RedisBackend,
        target: RedisBackend,
        plan: SyncPlan,
        resume: Option<(&str, i64)>,
    ) -> Result<(Sync, SyncStart), BackendError> {
        let reply = source.raw(&redis::cmd("COMMAND")).await?;
        let keys = CommandKeys::from_reply(&reply);
        if keys.is_empty() {
            return Err(BackendError::Unexpected(
                "the source's COMMAND gave no key specs (Redis 7 or newer is needed)".into(),
            ));
        }
        let (mut link, start) = ReplicaLink::open(source_endpoint, resume).await?;
        let mut stats = SyncStats::default();
        if start == SyncStart::Full {
            let (plan_ref, target_ref) = (&plan, &target);
            let mut written = 0u64;
            link.read_rdb(|batch, version| {
                let mut pipe = redis::pipe();
                let mut count = 0u64;
                for entry in batch {
                    if entry.db != plan_ref.db
                        || !glob_match(plan_ref.pattern.as_bytes(), &entry.key)
                    {
                        continue;
                    }
                    let name = renamed(plan_ref, &entry.key);
                    pipe.cmd("RESTORE")
                        .arg(name)
                        .arg(entry.expires_at_ms.unwrap_or(0))
                        .arg(entry.dump_payload(version))
                        .arg("ABSTTL")
                        .arg("REPLACE");
                    count += 1;
                }
                written += count;
                async move {
                    if count == 0 {
                        return Ok(());
                    }
                    let replies = target_ref.pipeline(pipe).await?;
                    match replies
                        .iter()
                        .find(|r| matches!(r, redis::Value::ServerError(_)))
                    {
                        Some(refused) => Err(BackendError::Command(format!(
                            "the target refused a key of the RDB: {refused:?}"
                        ))),
                        None => Ok(()),
                    }
                }
            })
            .await?;
            stats.keys = written;
        }
        stats.replid = link.replid.clone();
        stats.offset = link.offset;
        Ok((
            Sync {
                link,
                target,
                plan,
                keys,
                current_db: 0,
                stats,
            },
            start,
        ))
    }

    /// How far it has come.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Applies the writes that arrive within `wait` of each other (at least one is
    /// waited for that long), then acknowledges the offset. How many it applied.
    pub async fn apply_available(&mut self, wait: Duration) -> Result<u64, BackendError> {
        let mut applied = 0;
        let mut next = self.link.next_command(wait).await?;
        while let Some(command) = next {
            if self.apply(command).await? {
                applied += 1;
            }
            next = self.link.next_command(Duration::ZERO).await?;
        }
        self.stats.offset = self.link.offset;
        self.link.ack().await?;
        Ok(applied)
    }

    /// How many bytes of the source's stream are not applied yet (the source's
    /// `master_repl_offset` minus the offset applied).
    pub async fn lag_bytes(&self, source: &RedisBackend) -> Result<i64, BackendError> {
        let replication = source.replication().await?;
        let offset = replication
            .get("master_repl_offset")
            .and_then(|v| v.as_text().parse::<i64>().ok())
            .ok_or_else(|| BackendError::Unexpected("no master_repl_offset".into()))?;
        Ok(offset - self.stats.offset)
    }

    async fn apply(&mut self, command: StreamCommand) -> Result<bool, BackendError> {
        let mut args = command.args;
        let name = args[0].to_ascii_uppercase();
        match name.as_slice() {
            b"PING" | b"REPLCONF" => return Ok(false),
            b"SELECT" => {
                self.current_db = args
                    .get(1)
                    .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
                    .ok_or_else(|| BackendError::Unexpected("SELECT without a db".into()))?;
                return Ok(false);
            }
            b"FLUSHALL" | b"FLUSHDB" | b"SWAPDB" => {
                return Err(BackendError::Command(format!(
                    "the source ran {}: redis-move does not apply it to the target (it would reach beyond the keys the sync moves)",
                    String::from_utf8_lossy(&name)
                )));
            }
            _ => {}
        }
        if self.current_db != self.plan.db {
            self.stats.skipped += 1;
            return Ok(false);
        }
        let transaction = matches!(name.as_slice(), b"MULTI" | b"EXEC" | b"DISCARD");
        if !transaction {
            let positions = self
                .keys
                .positions(&args)
                .map_err(|e| BackendError::Command(format!("the source's stream: {e}")))?;
            let inside = positions
                .iter()
                .filter(|&&p| glob_match(self.plan.pattern.as_bytes(), &args[p]))
                .count();
            if positions.is_empty() || inside == 0 {
                self.stats.skipped += 1;
                return Ok(false);
            }
            if inside < positions.len() {
                let outside = positions
                    .iter()
                    .find(|&&p| !glob_match(self.plan.pattern.as_bytes(), &args[p]))
                    .map(|&p| display_key(&args[p]))
                    .unwrap_or_default();
                return Err(BackendError::Command(format!(
                    "the source's stream has a {} with keys inside and outside `{}` ({outside}): it cannot be applied to the moved keys alone",
                    String::from_utf8_lossy(&name),
                    self.plan.pattern
                )));
            }
            for &p in &positions {
                args[p] = renamed(&self.plan, &args[p]);
            }
        }
        let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
        for arg in &args[1..] {
            cmd.arg(arg.as_slice());
        }
        self.target.raw(&cmd).await?;
        if !transaction {
            self.stats.commands += 1;
        }
        Ok(true)
    }
}

fn renamed(plan: &SyncPlan, key: &[u8]) -> Vec<u8> {
    match &plan.rename {
        Some(rename) => rename.apply(key),
        None => key.to_vec(),
    }
}
