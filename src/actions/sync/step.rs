//! `redis.sync`, `redis.sync_status` and `redis.sync_stop` as runbook steps: the sync's
//! plan from the step's parameters, its ledger and marker (named in what the step
//! captured), its start in the background, its drain, and its rollback.

use std::path::PathBuf;
use std::time::Duration;

use super::background::{Starter, SyncStatus, source_offset};
use super::{ServedLoad, SyncPlan, SyncRule};
use crate::actions::act::Act;
use crate::actions::captured::Captured;
use crate::actions::copy::KeyRename;
use crate::actions::probe::ProbeContext;
use crate::actions::replication::switch::{FENCE, PRE_DRAIN_LAG};
use crate::actions::runner::ActionError;
use crate::backend::BackendError;
use crate::backend::rdb::replica::SyncStart;
use crate::runbook::action::{SyncLoad, SyncParams, SyncStatusParams, SyncStopParams};
use crate::runbook::units::format_size;
use crate::value::Value;

/// How long a drain may take when the step gives no `timeout`.
const DEFAULT_DRAIN: Duration = Duration::from_secs(300);

/// What a sync captures before acting: where its ledger is and its marker's name.
pub fn capture(act: &Act<'_>) -> Captured {
    let run = act
        .ctx
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Captured::Sync {
        ledger: format!("sync-{}.ledger", act.step.id),
        marker: format!("redis-move:sync:{run}:{}", act.step.id),
    }
}

fn captured(act: &Act<'_>) -> (PathBuf, String) {
    let (ledger, marker) = match act.captured {
        Some(Captured::Sync { ledger, marker }) => (ledger.clone(), marker.clone()),
        _ => match capture(act) {
            Captured::Sync { ledger, marker } => (ledger, marker),
            _ => unreachable!("capture gives a sync"),
        },
    };
    (act.ctx.run_dir.join(ledger), marker)
}

/// The file that says a sync was drained and stopped (a resume leaves it stopped).
fn stopped_file(act: &Act<'_>, sync: &str) -> PathBuf {
    act.ctx.run_dir.join(format!("sync-{sync}.stopped"))
}

async fn starter(act: &Act<'_>, p: &SyncParams) -> Result<Starter, ActionError> {
    let r = act.resolver();
    let mut rules = Vec::new();
    for (pattern, rename) in p.families() {
        rules.push(SyncRule::new(
            match pattern {
                Some(pattern) => r.resolve(pattern)?,
                None => "*".into(),
            },
            KeyRename::of(rename)?,
        ));
    }
    let source_name = &p.source.value;
    let target_name = act.redis_target()?;
    let source_endpoint = act.connections.endpoint_of(source_name, r).await?;
    let source = act.connections.redis_dedicated(source_name, r).await?;
    let target = act.connections.redis_dedicated(target_name, r).await?;
    let (source_id, source_db) = source.keyspace_identity().await?;
    let (target_id, target_db) = target.keyspace_identity().await?;
    let db = p.db.unwrap_or(u64::from(source_db));
    let (ledger, marker) = captured(act);
    Ok(Starter {
        source_endpoint,
        source,
        target,
        plan: SyncPlan {
            rules,
            db,
            existing: p.existing,
            marker: marker.into_bytes(),
            same_keyspace: source_id == target_id && u64::from(target_db) == db,
            served: match p.load {
                SyncLoad::Restore => None,
                SyncLoad::Replication => Some(ServedLoad {
                    listen: match &p.listen {
                        Some(listen) => r.resolve(listen)?,
                        None => "127.0.0.1:0".into(),
                    },
                    announce: p.announce.as_ref().map(|a| r.resolve(a)).transpose()?,
                }),
            },
        },
        ledger,
        same_server: source_id == target_id,
    })
}

/// Starts the sync (its full sync happens within the step) and leaves it running in
/// the background.
pub async fn perform(act: &Act<'_>, p: &SyncParams) -> Result<Value, ActionError> {
    act.connections.syncs.halt(&act.step.id).await;
    let _ = std::fs::remove_file(stopped_file(act, &act.step.id));
    act.progress(
        format!("connecting to `{}` as a replica", p.source.value),
        None,
    );
    let status = start_in_background(act, p).await?;
    act.progress(started_line(&status), None);
    Ok(status.value())
}

/// Opens the sync's link (continuing from the target's marker, or with a full sync),
/// and leaves it running in the background; its status then.
async fn start_in_background(act: &Act<'_>, p: &SyncParams) -> Result<SyncStatus, ActionError> {
    let starter = starter(act, p).await?;
    let (sync, start) = starter
        .start(None, &|keys| {
            act.progress(format!("full sync: {keys} keys written"), None)
        })
        .await?;
    let status = SyncStatus {
        state: super::background::SyncState::Running,
        start: start.clone(),
        stats: sync.stats().clone(),
        source_offset: sync.stats().offset,
        lag: Duration::ZERO,
    };
    act.connections.syncs.spawn(
        &act.step.id,
        &p.source.value,
        sync,
        start,
        starter,
        act.ctx.cancel.clone(),
    );
    Ok(status)
}

fn started_line(status: &SyncStatus) -> String {
    match status.start {
        SyncStart::Full => format!(
            "full sync: {} keys written from the RDB ({} replaced), following the stream from offset {}",
            status.stats.keys, status.stats.replaced, status.stats.offset
        ),
        SyncStart::Partial => format!(
            "partial resync: continuing from offset {} (the source still had the backlog)",
            status.stats.offset
        ),
    }
}

/// After a resume, starts again a sync that was running when the run stopped: what it
/// did, or `None` when it had been stopped.
pub async fn resume(act: &Act<'_>, p: &SyncParams) -> Result<Option<String>, ActionError> {
    if stopped_file(act, &act.step.id).exists() {
        return Ok(None);
    }
    let started = start_in_background(act, p)
        .await
        .map(|status| started_line(&status));
    match started {
        Ok(line) => Ok(Some(format!("sync resumed: {line}"))),
        Err(e) => {
            act.connections
                .syncs
                .resume_failed(&act.step.id, e.to_string());
            Err(e)
        }
    }
}

/// Stops the sync and undoes what it wrote, from its ledger.
pub async fn undo(act: &Act<'_>, p: &SyncParams) -> Result<Value, ActionError> {
    act.connections.syncs.halt(&act.step.id).await;
    let target = act.target_redis().await?;
    let source = act.reachable(&p.source.value).await;
    let (ledger, marker) = captured(act);
    // A run killed in a served load left the target following redis-move: it takes
    // writes again before the sync's keys are taken out.
    super::release_served(&target, &super::serving_note(&ledger)).await?;
    let value = crate::actions::copy::undo(&target, source.as_ref(), &ledger).await?;
    super::remove_markers(&target, marker.as_bytes()).await?;
    Ok(value)
}

/// The state of a running sync.
pub fn status(p: &SyncStatusParams, ctx: &ProbeContext<'_>) -> Result<Value, ActionError> {
    Ok(ctx.connections.syncs.status(&p.sync.value)?.value())
}

/// What a stop with a pause captures: the source's fence setting.
pub async fn capture_stop(
    act: &Act<'_>,
    p: &SyncStopParams,
) -> Result<Option<Captured>, ActionError> {
    if p.pause.is_none() {
        return Ok(None);
    }
    let (source, source_target, _) = act.connections.syncs.source(&p.sync.value)?;
    Ok(Some(Captured::SyncFence {
        source: source_target,
        previous: source.config_text("min-replicas-to-write").await?,
    }))
}

/// Drains the sync and stops it: waits until it is close, then (with a pause) holds
/// writers off on the source, applies every write up to the source's offset, fences
/// the source and lets writers go (they are refused from then on).
pub async fn stop(act: &Act<'_>, p: &SyncStopParams) -> Result<Value, ActionError> {
    let syncs = &act.connections.syncs;
    let name = &p.sync.value;
    let (source, _, same_server) = syncs.source(name)?;
    let timeout = p.timeout.map_or(DEFAULT_DRAIN, |t| t.0);
    let deadline = tokio::time::Instant::now() + timeout;
    if p.pause.is_some() && same_server {
        return Err(ActionError::config(format!(
            "sync `{name}` writes to its source's own server: a pause would hold its writes too; stop the writers before `redis.sync_stop` and leave out `pause`"
        )));
    }
    // Close first, so that a pause is short.
    loop {
        let status = syncs.status(name)?;
        if let super::background::SyncState::Failed(why) = &status.state {
            return Err(ActionError::Backend(BackendError::Command(format!(
                "sync `{name}` failed: {why}"
            ))));
        }
        if (status.lag_bytes() as f64) < PRE_DRAIN_LAG {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ActionError::timeout(format!(
                "sync `{name}` stayed {} behind for {}s",
                format_size(status.lag_bytes() as f64),
                timeout.as_secs()
            )));
        }
        act.progress(
            format!(
                "catching up: {} behind",
                format_size(status.lag_bytes() as f64)
            ),
            Some(deadline - tokio::time::Instant::now()),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = syncs.status(name)?.start;
    let stats = match p.pause {
        None => {
            let offset = source_offset(&source).await?;
            syncs.drain(name, offset, timeout).await?
        }
        Some(pause) => {
            let budget = pause.0;
            let started = tokio::time::Instant::now();
            source
                .raw(
                    redis::cmd("CLIENT")
                        .arg("PAUSE")
                        .arg(budget.as_millis() as u64)
                        .arg("WRITE"),
                )
                .await?;
            let drained = async {
                let offset = source_offset(&source).await?;
                let stats = syncs.drain(name, offset, budget / 2).await?;
                source.config_set("min-replicas-to-write", FENCE).await?;
                Ok::<_, BackendError>(stats)
            }
            .await;
            let unpaused = source.raw(redis::cmd("CLIENT").arg("UNPAUSE")).await;
            let stats = drained?;
            unpaused?;
            act.progress(
                format!(
                    "writers held {}ms; the source is fenced (it refuses writes)",
                    started.elapsed().as_millis()
                ),
                None,
            );
            stats
        }
    };
    std::fs::write(stopped_file(act, name), b"stopped\n")
        .map_err(|e| ActionError::Backend(BackendError::Local(e.to_string())))?;
    Ok(SyncStatus {
        state: super::background::SyncState::Stopped,
        start,
        source_offset: stats.offset,
        stats,
        lag: Duration::ZERO,
    }
    .value())
}

/// Lifts the fence a stop with a pause put on the source.
pub async fn undo_stop(act: &Act<'_>) -> Result<Value, ActionError> {
    let Some(Captured::SyncFence { source, previous }) = act.captured else {
        return Ok(Value::Null);
    };
    let redis = act.redis(source).await?;
    redis.config_set("min-replicas-to-write", previous).await?;
    Ok(Value::Text(format!(
        "`{source}` takes writes again (min-replicas-to-write {previous})"
    )))
}
