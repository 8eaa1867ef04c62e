//! Syncs running in the background of a run: each `redis.sync` step leaves its sync
//! here, applying the source's writes until a `redis.sync_stop` drains it, the run rolls
//! back, or the run ends. Its state (lag, counters, a failure) is published for
//! `redis.sync_status`, so that checks, `until` and triggers can read it.
//!
//! A link that breaks (the source restarted, the network dropped) is opened again from
//! the target's marker, for up to [`RECONNECT_FOR`]: a partial resync when the source
//! still has the backlog, a full one otherwise.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Applied, Sync, SyncPlan, SyncStats};
use crate::backend::BackendError;
use crate::backend::rdb::replica::SyncStart;
use crate::backend::redis::{RedisBackend, RedisEndpoint};
use crate::value::Value;

/// How long a broken link is tried again before the sync fails.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// How often the source's offset is read for the lag.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Where a background sync is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Applying the source's writes.
    Running,
    /// Its link broke; opening it again.
    Reconnecting,
    /// Drained and stopped by `redis.sync_stop`.
    Stopped,
    /// Stopped without a drain (a rollback, the end of the run).
    Halted,
    /// Failed; the error says why.
    Failed(String),
}

impl SyncState {
    fn name(&self) -> &'static str {
        match self {
            SyncState::Running => "running",
            SyncState::Reconnecting => "reconnecting",
            SyncState::Stopped => "stopped",
            SyncState::Halted => "halted",
            SyncState::Failed(_) => "failed",
        }
    }
}

/// What a background sync publishes.
#[derive(Clone, Debug)]
pub struct SyncStatus {
    /// Where it is.
    pub state: SyncState,
    /// How its last link started.
    pub start: SyncStart,
    /// Its counters (of this process: a resumed sync counts from its resume).
    pub stats: SyncStats,
    /// The source's `master_repl_offset` when last read.
    pub source_offset: i64,
    /// How long the oldest write not applied yet has waited (zero when none waits).
    pub lag: Duration,
}

impl SyncStatus {
    /// Bytes of the source's stream not applied yet.
    pub fn lag_bytes(&self) -> i64 {
        (self.source_offset - self.stats.offset).max(0)
    }

    /// The status as a step value.
    pub fn value(&self) -> Value {
        let mut fields = std::collections::BTreeMap::new();
        let number = |n: f64| Value::Number(n);
        fields.insert("state".into(), Value::Text(self.state.name().into()));
        fields.insert(
            "start".into(),
            Value::Text(
                match self.start {
                    SyncStart::Full => "full",
                    SyncStart::Partial => "partial",
                }
                .into(),
            ),
        );
        fields.insert("lag_bytes".into(), number(self.lag_bytes() as f64));
        fields.insert("lag_seconds".into(), Value::Duration(self.lag));
        fields.insert("keys".into(), number(self.stats.keys as f64));
        fields.insert("replaced".into(), number(self.stats.replaced as f64));
        fields.insert("commands".into(), number(self.stats.commands as f64));
        fields.insert("skipped".into(), number(self.stats.skipped as f64));
        fields.insert("reapplied".into(), number(self.stats.reapplied as f64));
        fields.insert("offset".into(), number(self.stats.offset as f64));
        fields.insert(
            "error".into(),
            Value::Text(match &self.state {
                SyncState::Failed(e) => e.clone(),
                _ => String::new(),
            }),
        );
        Value::Object(fields)
    }
}

/// Everything needed to open a sync's link again.
#[derive(Clone)]
pub struct Starter {
    /// The source as redis-move dials it.
    pub source_endpoint: RedisEndpoint,
    /// A connection to the source (COMMAND, INFO, the pause).
    pub source: RedisBackend,
    /// The connection that writes to the target (the sync's own).
    pub target: RedisBackend,
    /// What moves.
    pub plan: SyncPlan,
    /// The sync's ledger.
    pub ledger: std::path::PathBuf,
    /// The target is on the source's server (any database).
    pub same_server: bool,
    /// A shard of a cluster source (`source` is then the cluster): the shard's first
    /// slot. Its primary is asked of the cluster at each start, so that a failover of
    /// the source is followed (the promoted replica continues the stream).
    pub shard: Option<u16>,
}

impl Starter {
    /// Opens the link: continues from `from` (a link of this process that broke) or the
    /// target's marker, or loads the RDB.
    pub async fn start(
        &self,
        from: Option<Applied>,
        progress: &(dyn Fn(u64) + std::marker::Sync),
    ) -> Result<(Sync, SyncStart), BackendError> {
        let (endpoint, source) = match (self.shard, self.source.cluster()) {
            (Some(slot), Some(cluster)) => {
                cluster.refresh().await?;
                let primary = cluster
                    .slot_map()
                    .owner(slot)
                    .map(|s| s.primary.clone())
                    .ok_or_else(|| {
                        BackendError::Unreachable(format!(
                            "no primary of the source cluster serves slot {slot}"
                        ))
                    })?;
                (
                    self.source_endpoint.at(&primary)?,
                    cluster.node(&primary).await?,
                )
            }
            _ => (self.source_endpoint.clone(), self.source.clone()),
        };
        Sync::start(
            &endpoint,
            &source,
            self.target.clone(),
            self.plan.clone(),
            &self.ledger,
            from,
            progress,
        )
        .await
    }
}

enum Order {
    /// Apply up to this offset, then stop (removing the marker).
    Drain {
        offset: i64,
        timeout: Duration,
        reply: oneshot::Sender<Result<SyncStats, BackendError>>,
    },
    /// Stop now.
    Halt { reply: oneshot::Sender<()> },
}

struct Handle {
    status: watch::Receiver<SyncStatus>,
    orders: mpsc::Sender<Order>,
    source: RedisBackend,
    source_target: String,
    same_server: bool,
}

/// The syncs of one step whose source is a cluster: one per shard.
struct Group {
    members: Vec<String>,
    source: RedisBackend,
    source_target: String,
    /// Keys of others found in the destination before the shards started (kept).
    replaced: u64,
}

/// The syncs of a run, by step id (a cluster source's shards as `step@slot`, grouped
/// under the step).
#[derive(Default)]
pub struct Syncs {
    running: Mutex<HashMap<String, Handle>>,
    failed_to_resume: Mutex<HashMap<String, String>>,
    groups: Mutex<HashMap<String, Group>>,
}

/// The name of the sync of a cluster source's shard whose first slot is `slot`.
pub fn shard_name(step: &str, slot: u16) -> String {
    format!("{step}@{slot}")
}

/// The status of several syncs as one: counters and offsets summed (so that the lag in
/// bytes is the sum of theirs), the longest lag, the worst state.
fn combine(statuses: Vec<SyncStatus>) -> SyncStatus {
    let mut all = SyncStatus {
        state: SyncState::Running,
        start: SyncStart::Partial,
        stats: SyncStats::default(),
        source_offset: 0,
        lag: Duration::ZERO,
    };
    let rank = |state: &SyncState| match state {
        SyncState::Failed(_) => 4,
        SyncState::Halted => 3,
        SyncState::Reconnecting => 2,
        SyncState::Running => 1,
        SyncState::Stopped => 0,
    };
    for (i, status) in statuses.into_iter().enumerate() {
        if i == 0 || rank(&status.state) > rank(&all.state) {
            all.state = status.state.clone();
        }
        if status.start == SyncStart::Full {
            all.start = SyncStart::Full;
        }
        all.stats = summed(&all.stats, &status.stats);
        all.source_offset += status.source_offset;
        all.lag = all.lag.max(status.lag);
    }
    all
}

impl Syncs {
    /// Runs `sync` in the background as step `step`'s (replacing one it had). It stops
    /// when `cancel` is cancelled.
    pub fn spawn(
        &self,
        step: &str,
        source_target: &str,
        sync: Sync,
        start: SyncStart,
        starter: Starter,
        cancel: CancellationToken,
    ) {
        let (status_tx, status_rx) = watch::channel(SyncStatus {
            state: SyncState::Running,
            start: start.clone(),
            stats: sync.stats().clone(),
            source_offset: sync.stats().offset,
            lag: Duration::ZERO,
        });
        let (orders_tx, orders_rx) = mpsc::channel(4);
        let source = starter.source.clone();
        let same_server = starter.same_server;
        tokio::spawn(follow(sync, start, starter, status_tx, orders_rx, cancel));
        self.failed_to_resume
            .lock()
            .expect("not poisoned")
            .remove(step);
        self.running.lock().expect("not poisoned").insert(
            step.to_owned(),
            Handle {
                status: status_rx,
                orders: orders_tx,
                source,
                source_target: source_target.to_owned(),
                same_server,
            },
        );
    }

    /// Removes the grouping of step `step`'s shards (they were drained).
    pub fn ungroup(&self, step: &str) {
        self.groups.lock().expect("not poisoned").remove(step);
    }

    /// Records that step `step`'s sync could not be resumed (its status says why).
    pub fn resume_failed(&self, step: &str, why: String) {
        self.failed_to_resume
            .lock()
            .expect("not poisoned")
            .insert(step.to_owned(), why);
    }

    /// The status of step `step`'s sync.
    pub fn status(&self, step: &str) -> Result<SyncStatus, BackendError> {
        let members = self.members(step);
        let replaced_before = self
            .groups
            .lock()
            .expect("not poisoned")
            .get(step)
            .map_or(0, |g| g.replaced);
        let running = self.running.lock().expect("not poisoned");
        let statuses: Vec<SyncStatus> = members
            .iter()
            .filter_map(|m| running.get(m).map(|h| h.status.borrow().clone()))
            .collect();
        drop(running);
        match statuses.len() {
            0 => Err(self.not_running(step)),
            1 if members.len() == 1 => Ok(statuses.into_iter().next().expect("one")),
            _ => {
                let mut all = combine(statuses);
                all.stats.replaced += replaced_before;
                Ok(all)
            }
        }
    }

    /// The syncs that make step `step`'s: a cluster source's shards, or the step's own.
    pub fn members(&self, step: &str) -> Vec<String> {
        match self.groups.lock().expect("not poisoned").get(step) {
            Some(group) => group.members.clone(),
            None => vec![step.to_owned()],
        }
    }

    /// Records that step `step`'s sync is the syncs `members` (one per shard of the
    /// cluster `source`, Redis target `source_target`), which found `replaced` keys of
    /// others in their destination before they started.
    pub fn group(
        &self,
        step: &str,
        source_target: &str,
        source: RedisBackend,
        members: Vec<String>,
        replaced: u64,
    ) {
        self.groups.lock().expect("not poisoned").insert(
            step.to_owned(),
            Group {
                members,
                source,
                source_target: source_target.to_owned(),
                replaced,
            },
        );
    }

    fn not_running(&self, step: &str) -> BackendError {
        match self
            .failed_to_resume
            .lock()
            .expect("not poisoned")
            .get(step)
        {
            Some(why) => {
                BackendError::Command(format!("sync `{step}` could not be resumed: {why}"))
            }
            None => BackendError::Command(format!(
                "sync `{step}` is not running in this run (its step did not run, or it was stopped)"
            )),
        }
    }

    /// The source of step `step`'s sync: a connection, its target name, and whether it
    /// is the target's server too.
    pub fn source(&self, step: &str) -> Result<(RedisBackend, String, bool), BackendError> {
        if let Some(group) = self.groups.lock().expect("not poisoned").get(step) {
            return Ok((group.source.clone(), group.source_target.clone(), false));
        }
        match self.running.lock().expect("not poisoned").get(step) {
            Some(handle) => Ok((
                handle.source.clone(),
                handle.source_target.clone(),
                handle.same_server,
            )),
            None => Err(self.not_running(step)),
        }
    }

    /// Applies everything up to the source's `offset` and stops the sync.
    pub async fn drain(
        &self,
        step: &str,
        offset: i64,
        timeout: Duration,
    ) -> Result<SyncStats, BackendError> {
        let orders = match self.running.lock().expect("not poisoned").get(step) {
            Some(handle) => handle.orders.clone(),
            None => return Err(self.not_running(step)),
        };
        let (reply, answer) = oneshot::channel();
        let gone = || self.failure_of(step);
        orders
            .send(Order::Drain {
                offset,
                timeout,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        let stats = answer.await.map_err(|_| gone())??;
        self.running.lock().expect("not poisoned").remove(step);
        Ok(stats)
    }

    /// Why a sync whose task ended did so.
    fn failure_of(&self, step: &str) -> BackendError {
        match self.status(step) {
            Ok(SyncStatus {
                state: SyncState::Failed(why),
                ..
            }) => BackendError::Command(format!("sync `{step}` failed: {why}")),
            _ => BackendError::Command(format!("sync `{step}` stopped")),
        }
    }

    /// Stops step `step`'s sync (every shard's) without a drain (nothing happens when
    /// none runs).
    pub async fn halt(&self, step: &str) {
        let members = self.members(step);
        self.groups.lock().expect("not poisoned").remove(step);
        for member in members {
            self.halt_one(&member).await;
        }
    }

    async fn halt_one(&self, step: &str) {
        let handle = self.running.lock().expect("not poisoned").remove(step);
        if let Some(handle) = handle {
            let (reply, answer) = oneshot::channel();
            // A sync stuck on a dead link ends on its own; the rollback does not wait.
            if handle.orders.send(Order::Halt { reply }).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
            }
        }
    }
}

/// What wakes the background loop.
enum Wake {
    Cancelled,
    Order(Option<Order>),
    Readable(Result<(), BackendError>),
    Tick,
}

/// The background loop of one sync: applies the stream as it comes, samples the
/// source's offset for the lag, and takes orders (drain, halt) the moment they come.
async fn follow(
    mut sync: Sync,
    start: SyncStart,
    starter: Starter,
    status: watch::Sender<SyncStatus>,
    mut orders: mpsc::Receiver<Order>,
    cancel: CancellationToken,
) {
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut next_sample = Instant::now();
    let mut start = start;
    let mut base = SyncStats::default();
    let publish = |state: SyncState,
                   stats: &SyncStats,
                   start: &SyncStart,
                   samples: &VecDeque<(Instant, i64)>| {
        let source_offset = samples.back().map_or(stats.offset, |s| s.1);
        let lag = samples
            .iter()
            .find(|(_, offset)| *offset > stats.offset)
            .map_or(Duration::ZERO, |(at, _)| at.elapsed());
        status.send_replace(SyncStatus {
            state,
            start: start.clone(),
            stats: stats.clone(),
            source_offset,
            lag,
        });
    };
    loop {
        let wake = tokio::select! {
            _ = cancel.cancelled() => Wake::Cancelled,
            order = orders.recv() => Wake::Order(order),
            ready = sync.readable() => Wake::Readable(ready),
            _ = tokio::time::sleep_until(next_sample) => Wake::Tick,
        };
        let outcome = match wake {
            Wake::Cancelled | Wake::Order(None) => {
                publish(
                    SyncState::Halted,
                    &totals(&base, sync.stats()),
                    &start,
                    &samples,
                );
                return;
            }
            Wake::Order(Some(Order::Halt { reply })) => {
                publish(
                    SyncState::Halted,
                    &totals(&base, sync.stats()),
                    &start,
                    &samples,
                );
                let _ = reply.send(());
                return;
            }
            Wake::Order(Some(Order::Drain {
                offset,
                timeout,
                reply,
            })) => {
                let drained = sync.drain_to(offset, timeout).await;
                let stats = totals(&base, sync.stats());
                match drained {
                    // Not drained in time: the sync goes on, the stop step fails.
                    Err(e @ BackendError::Timeout(_)) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    Err(e) => {
                        publish(SyncState::Failed(e.to_string()), &stats, &start, &samples);
                        let _ = reply.send(Err(e));
                        return;
                    }
                    Ok(()) => {}
                }
                let result = sync.finish().await.map(|s| totals(&base, &s));
                match &result {
                    Ok(_) => publish(SyncState::Stopped, &stats, &start, &samples),
                    Err(e) => publish(SyncState::Failed(e.to_string()), &stats, &start, &samples),
                }
                let _ = reply.send(result);
                return;
            }
            Wake::Tick => {
                next_sample = Instant::now() + SAMPLE_EVERY;
                if let Ok(offset) = source_offset(sync.source()).await {
                    samples.push_back((Instant::now(), offset));
                    // Samples the sync has passed are no longer needed for the lag.
                    while samples.len() > 1 && samples[1].1 <= sync.stats().offset {
                        samples.pop_front();
                    }
                    while samples.len() > 4096 {
                        samples.pop_front();
                    }
                }
                // Acknowledged while idle too, as a replica does.
                sync.ack().await
            }
            Wake::Readable(Ok(())) => sync.apply_available(Duration::ZERO).await.map(|_| ()),
            Wake::Readable(Err(e)) => Err(e),
        };
        match outcome {
            Ok(()) => publish(
                SyncState::Running,
                &totals(&base, sync.stats()),
                &start,
                &samples,
            ),
            Err(BackendError::Unreachable(why)) => {
                base = totals(&base, sync.stats());
                publish(SyncState::Reconnecting, &base, &start, &samples);
                tracing::warn!("sync: {why}; opening the link again from the target's marker");
                match reconnect(&starter, &cancel, &why, sync.position()).await {
                    Ok((again, how)) => {
                        sync = again;
                        start = how;
                    }
                    Err(e) => {
                        publish(SyncState::Failed(e.to_string()), &base, &start, &samples);
                        tracing::warn!("sync stopped: {e}");
                        return;
                    }
                }
            }
            Err(e) => {
                publish(
                    SyncState::Failed(e.to_string()),
                    &totals(&base, sync.stats()),
                    &start,
                    &samples,
                );
                tracing::warn!("sync stopped: {e}");
                return;
            }
        }
    }
}

/// The counters of two syncs (two shards of a cluster source), offsets summed.
pub fn summed(a: &SyncStats, b: &SyncStats) -> SyncStats {
    SyncStats {
        offset: a.offset + b.offset,
        ..totals(a, b)
    }
}

/// Counters of earlier links plus the current one's.
fn totals(base: &SyncStats, current: &SyncStats) -> SyncStats {
    SyncStats {
        keys: base.keys + current.keys,
        replaced: base.replaced + current.replaced,
        commands: base.commands + current.commands,
        skipped: base.skipped + current.skipped,
        reapplied: base.reapplied + current.reapplied,
        replid: current.replid.clone(),
        offset: current.offset,
    }
}

/// Opens a broken link again, for up to [`RECONNECT_FOR`].
async fn reconnect(
    starter: &Starter,
    cancel: &CancellationToken,
    why: &str,
    from: Applied,
) -> Result<(Sync, SyncStart), BackendError> {
    let deadline = Instant::now() + RECONNECT_FOR;
    let mut last = why.to_owned();
    while Instant::now() < deadline {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        match starter.start(Some(from.clone()), &|_| {}).await {
            Ok(started) => return Ok(started),
            Err(e) => last = e.to_string(),
        }
    }
    Err(BackendError::Unreachable(format!(
        "the replication link broke and could not be opened again within {}s: {last}",
        RECONNECT_FOR.as_secs()
    )))
}

/// The source's `master_repl_offset`.
pub async fn source_offset(source: &RedisBackend) -> Result<i64, BackendError> {
    source
        .replication()
        .await?
        .get("master_repl_offset")
        .and_then(|v| v.as_text().parse::<i64>().ok())
        .ok_or_else(|| {
            BackendError::Unexpected("INFO replication has no master_repl_offset".into())
        })
}
