//! `redis.sync`, `redis.sync_status` and `redis.sync_stop` as runbook steps: the sync's
//! plan from the step's parameters, its ledger and marker (named in what the step
//! captured), its start in the background, its drain, and its rollback.

use std::path::PathBuf;
use std::time::Duration;

use super::background::{Starter, SyncStatus, Syncs, shard_name, source_offset, summed};
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

/// The sync's starters: one, or one per shard of a cluster source (named
/// [`shard_name`], with their own marker and ledger), each with the name it runs under.
/// Also how many keys of others the destination had (kept) before a cluster source's
/// shards started.
async fn starters(
    act: &Act<'_>,
    p: &SyncParams,
) -> Result<(Vec<(String, Starter)>, u64), ActionError> {
    let one = starter(act, p).await?;
    let Some(cluster) = one.source.cluster() else {
        return Ok((vec![(act.step.id.clone(), one)], 0));
    };
    cluster.refresh().await?;
    let slots: Vec<u16> = cluster
        .slot_map()
        .shards
        .iter()
        .map(|s| s.first_slot())
        .collect();
    // The destination is checked once, before any shard writes (not again on a resume).
    let checked = check_ledger(&one.ledger);
    let mut replaced = 0;
    if !checked.exists() && shard_slots(&one.ledger).is_empty() {
        replaced = super::check_destination(&one.target, &one.plan, &checked).await?;
    }
    let target_name = act.redis_target()?;
    let mut starters = Vec::new();
    for slot in slots {
        let mut shard = one.clone();
        shard.shard = Some(slot);
        shard.ledger = shard_ledger(&one.ledger, slot);
        shard.plan.marker = [one.plan.marker.as_slice(), format!("@{slot}").as_bytes()].concat();
        shard.plan.namespaces_checked = true;
        // Its own connection to the target: the shards apply in parallel.
        shard.target = act
            .connections
            .redis_dedicated(target_name, act.resolver())
            .await?;
        starters.push((shard_name(&act.step.id, slot), shard));
    }
    Ok((starters, replaced))
}

/// The ledger of the keys a sync out of a cluster found in its destination before it
/// started (kept with `existing: replace`), beside the sync's own.
fn check_ledger(ledger: &std::path::Path) -> PathBuf {
    let stem = ledger
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ledger.with_file_name(format!("{stem}@check.ledger"))
}

/// The ledger of the shard whose first slot is `slot`, beside the sync's own.
fn shard_ledger(ledger: &std::path::Path, slot: u16) -> PathBuf {
    let stem = ledger
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ledger.with_file_name(format!("{stem}@{slot}.ledger"))
}

/// The first slots of the shards a sync out of a cluster kept ledgers for (from the
/// ledgers' names: known after a crash too).
fn shard_slots(ledger: &std::path::Path) -> Vec<u16> {
    let stem = ledger
        .file_stem()
        .map(|s| format!("{}@", s.to_string_lossy()))
        .unwrap_or_default();
    let Some(dir) = ledger.parent() else {
        return Vec::new();
    };
    let mut slots: Vec<u16> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&stem)?
                .strip_suffix(".ledger")?
                .parse()
                .ok()
        })
        .collect();
    slots.sort_unstable();
    slots
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
    // A cluster source has one database and is never the target's server.
    let (source_id, source_db) = match source.cluster() {
        Some(_) => (String::from("cluster"), 0),
        None => source.keyspace_identity().await?,
    };
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
            namespaces_checked: false,
        },
        ledger,
        same_server: source_id == target_id,
        shard: None,
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
/// and leaves it running in the background; its status then. A cluster source: one
/// sync per shard, grouped under the step.
async fn start_in_background(act: &Act<'_>, p: &SyncParams) -> Result<SyncStatus, ActionError> {
    let (starters, replaced) = starters(act, p).await?;
    let syncs = &act.connections.syncs;
    // The shards' full syncs at once (each source waits for its own RDB).
    let started = futures_util::future::join_all(starters.iter().map(|(_, starter)| async move {
        let shard = starter
            .shard
            .map(|slot| format!("shard of slot {slot}: "))
            .unwrap_or_default();
        starter
            .start(None, &|keys| {
                act.progress(format!("{shard}full sync: {keys} keys written"), None)
            })
            .await
    }))
    .await;
    // One that failed fails the step; the others' links close as they are dropped.
    let mut ready = Vec::new();
    for started in started {
        ready.push(started?);
    }
    let mut names: Vec<String> = Vec::new();
    for ((name, starter), (sync, start)) in starters.iter().zip(ready) {
        syncs.spawn(
            name,
            &p.source.value,
            sync,
            start,
            starter.clone(),
            act.ctx.cancel.clone(),
        );
        names.push(name.clone());
    }
    if let Some((_, first)) = starters.first().filter(|(_, s)| s.shard.is_some()) {
        syncs.group(
            &act.step.id,
            &p.source.value,
            first.source.clone(),
            names,
            replaced,
        );
    }
    Ok(syncs.status(&act.step.id)?)
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
    let shards = shard_slots(&ledger);
    let checked = check_ledger(&ledger);
    if shards.is_empty() && !checked.exists() {
        let value = crate::actions::copy::undo(&target, source.as_ref(), &ledger).await?;
        super::remove_markers(&target, marker.as_bytes()).await?;
        return Ok(value);
    }
    // A cluster source: each shard's ledger and markers.
    let mut values = std::collections::BTreeMap::new();
    for slot in shards {
        let value =
            crate::actions::copy::undo(&target, source.as_ref(), &shard_ledger(&ledger, slot))
                .await?;
        super::remove_markers(&target, format!("{marker}@{slot}").as_bytes()).await?;
        values.insert(format!("shard@{slot}"), value);
    }
    // Last: the keys that were there before the sync get their values back.
    if checked.exists() {
        let value = crate::actions::copy::undo(&target, source.as_ref(), &checked).await?;
        values.insert("existing".into(), value);
    }
    Ok(Value::Object(values))
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
    let streams = streams(syncs, name, &source).await?;
    let stats = match p.pause {
        None => drain_all(syncs, &streams, timeout).await?,
        Some(pause) => {
            let budget = pause.0;
            let started = tokio::time::Instant::now();
            for (_, node) in &streams {
                node.raw(
                    redis::cmd("CLIENT")
                        .arg("PAUSE")
                        .arg(budget.as_millis() as u64)
                        .arg("WRITE"),
                )
                .await?;
            }
            let drained = async {
                let stats = drain_all(syncs, &streams, budget / 2).await?;
                // A cluster source: every node fenced.
                source.config_set("min-replicas-to-write", FENCE).await?;
                Ok::<_, BackendError>(stats)
            }
            .await;
            let mut unpaused = Ok(redis::Value::Nil);
            for (_, node) in &streams {
                let done = node.raw(redis::cmd("CLIENT").arg("UNPAUSE")).await;
                if unpaused.is_ok() {
                    unpaused = done;
                }
            }
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
    syncs.ungroup(name);
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

/// The streams step `name`'s sync follows: (the sync's name, the server whose stream
/// it is). A cluster source: each shard's sync and the shard's primary now.
async fn streams(
    syncs: &Syncs,
    name: &str,
    source: &crate::backend::redis::RedisBackend,
) -> Result<Vec<(String, crate::backend::redis::RedisBackend)>, BackendError> {
    let Some(cluster) = source.cluster() else {
        return Ok(vec![(name.to_owned(), source.clone())]);
    };
    cluster.refresh().await?;
    let map = cluster.slot_map();
    let mut streams = Vec::new();
    for member in syncs.members(name) {
        let slot: u16 = member
            .rsplit_once('@')
            .and_then(|(_, slot)| slot.parse().ok())
            .ok_or_else(|| BackendError::Unexpected(format!("`{member}` is not a shard's sync")))?;
        let primary = map.owner(slot).map(|s| s.primary.clone()).ok_or_else(|| {
            BackendError::Unreachable(format!("no primary of the source serves slot {slot}"))
        })?;
        streams.push((member, cluster.node(&primary).await?));
    }
    Ok(streams)
}

/// Drains every stream to its server's offset now (at once) and stops its sync; the
/// counters of all.
async fn drain_all(
    syncs: &Syncs,
    streams: &[(String, crate::backend::redis::RedisBackend)],
    timeout: Duration,
) -> Result<super::SyncStats, BackendError> {
    let drains = streams.iter().map(|(member, node)| async move {
        let offset = source_offset(node).await?;
        syncs.drain(member, offset, timeout).await
    });
    let mut all = super::SyncStats::default();
    for drained in futures_util::future::join_all(drains).await {
        all = summed(&all, &drained?);
    }
    Ok(all)
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
