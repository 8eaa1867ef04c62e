//! `redis.replicate` and `redis.promote`: move a whole instance by replication, tuned for
//! the sync and restored afterwards; promote once offsets match, optionally keeping the
//! old primary in sync from the new one (reverse replication) so that a rollback loses
//! no write made after the cutover.

pub mod switch;

use crate::exec::event::{Measure, MeasureUnit};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::act::Act;
use super::captured::Captured;
use super::runner::ActionError;
use crate::actions::vault;
use crate::backend::BackendError;
use crate::backend::redis::RedisBackend;
use crate::runbook::action::{Action, PromoteParams, ReplicateParams};
use crate::runbook::units::{format_duration, format_size};
use crate::value::Value;

/// Settings of the source tuned for a fast full sync.
const SOURCE_TUNING: &[&str] = &[
    "repl-diskless-sync",
    "repl-diskless-sync-delay",
    "client-output-buffer-limit",
];
/// Settings of the target tuned for a fast full sync, and its credentials to the source.
const TARGET_SETTINGS: &[&str] = &["repl-diskless-load", "masterauth", "masteruser"];
/// Settings a promotion changes on either server: credentials for the reverse
/// replication, and the fence of [`switch`].
const PROMOTE_SETTINGS: &[&str] = &["masterauth", "masteruser", "min-replicas-to-write"];

/// Reads `names` from `redis` (the ones it knows), as they are: a step that journals
/// them keeps the passwords in the vault ([`crate::actions::vault`]).
pub async fn read_settings(
    redis: &RedisBackend,
    names: &[&str],
) -> Result<Vec<(String, String)>, BackendError> {
    let mut out = Vec::new();
    for name in names {
        if let Ok(value) = redis.config_text(name).await {
            out.push(((*name).to_owned(), value));
        }
    }
    Ok(out)
}

/// The replication settings of both servers before `redis.replicate` changes them.
pub async fn capture_settings(
    source: &RedisBackend,
    target: &RedisBackend,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>), BackendError> {
    Ok((
        read_settings(source, SOURCE_TUNING).await?,
        read_settings(target, TARGET_SETTINGS).await?,
    ))
}

/// What `redis.replicate` and `redis.promote` capture before acting: both servers'
/// replication settings.
pub async fn capture(act: &Act<'_>) -> Result<Option<Captured>, ActionError> {
    let (source, target) = match &act.step.action {
        Action::RedisReplicate(p) => {
            let (source, target) = act.pair(&p.source.value).await?;
            capture_settings(&source, &target).await?
        }
        Action::RedisPromote(p) => {
            let (source, target) = act.pair(&p.source.value).await?;
            (
                read_settings(&source, PROMOTE_SETTINGS).await?,
                read_settings(&target, PROMOTE_SETTINGS).await?,
            )
        }
        _ => return Ok(None),
    };
    let keep = |side: &str, settings| {
        vault::keep_settings(
            act.ctx.run_dir,
            act.ctx.redactor,
            &format!("{}/{side}", act.step.id),
            settings,
        )
    };
    Ok(Some(Captured::Replication {
        source: keep("source", source)?,
        target: keep("target", target)?,
    }))
}

/// Refuses a source and a target that are one server under two names (its `run_id`):
/// `REPLICAOF` itself would leave it a replica refusing every write.
async fn distinct_servers(source: &RedisBackend, target: &RedisBackend) -> Result<(), ActionError> {
    let (mine, theirs) = tokio::try_join!(source.keyspace_identity(), target.keyspace_identity())?;
    if !mine.0.is_empty() && mine.0 == theirs.0 {
        return Err(ActionError::config(format!(
            "the source and the target are the same server (run_id {}): nothing was changed",
            mine.0
        )));
    }
    Ok(())
}

/// Runs `redis.replicate` as a step.
pub async fn perform_replicate(act: &Act<'_>, p: &ReplicateParams) -> Result<Value, ActionError> {
    let (source, target) = act.pair(&p.source.value).await?;
    distinct_servers(&source, &target).await?;
    let address = match act.resolver().resolve_opt(p.source_address.as_ref())? {
        Some(address) => address,
        None => source.address.clone().ok_or_else(|| {
            ActionError::config(
                "give `source_address` (host:port of the source as the target reaches it)",
            )
        })?,
    };
    let (source_settings, target_settings) = match act.captured {
        Some(Captured::Replication { source, target }) => (
            vault::reveal_settings(act.ctx.run_dir, source)?,
            vault::reveal_settings(act.ctx.run_dir, target)?,
        ),
        _ => capture_settings(&source, &target).await?,
    };
    let timeout = p.timeout.map_or(Duration::from_secs(3600), |t| t.0);
    let progress =
        |message: String, remaining: Option<Duration>, measure: Option<Measure>| match measure {
            Some(measure) => act.progress_of(message, remaining, measure),
            None => act.progress(message, remaining),
        };
    Ok(replicate(
        &source,
        &target,
        &address,
        p.tune,
        (&source_settings, &target_settings),
        timeout,
        &progress,
    )
    .await?)
}

/// Runs `redis.promote` as a step: a drained switch (see [`switch`]).
pub async fn perform_promote(act: &Act<'_>, p: &PromoteParams) -> Result<Value, ActionError> {
    let (source, target) = act.pair(&p.source.value).await?;
    distinct_servers(&source, &target).await?;
    let reverse = match (
        p.reverse,
        act.resolver().resolve_opt(p.target_address.as_ref())?,
    ) {
        (false, _) => None,
        (true, Some(address)) => Some(address),
        (true, None) => Some(target.address.clone().ok_or_else(|| {
            ActionError::config(
                "give `target_address` (host:port of the target as the source reaches it)",
            )
        })?),
    };
    let progress = |message: String, remaining: Option<Duration>| act.progress(message, remaining);
    let plan = switch::Switch {
        old: &source,
        new: &target,
        old_follows: reverse.as_deref(),
        wait_follow: true,
        drain: p.drain_budget(),
        timeout: p.timeout.map_or(Duration::from_secs(300), |t| t.0),
    };
    Ok(switch::switch(&plan, &progress).await?)
}

/// Rolls back `redis.replicate`, going on without a server that is gone.
pub async fn rollback_replicate(act: &Act<'_>, p: &ReplicateParams) -> Result<Value, ActionError> {
    let Some(Captured::Replication { source, target }) = act.captured else {
        return Ok(Value::Null);
    };
    let source_backend = act.reachable(&p.source.value).await;
    let target_backend = match act.step.target.as_deref() {
        Some(t) => act.reachable(t).await,
        None => None,
    };
    let note = undo_replicate(
        source_backend.as_ref(),
        target_backend.as_ref(),
        &vault::reveal_settings(act.ctx.run_dir, source)?,
        &vault::reveal_settings(act.ctx.run_dir, target)?,
    )
    .await?;
    Ok(Value::Text(note))
}

/// Rolls back `redis.promote`: the old primary becomes the primary again (drained,
/// when it follows the new one).
pub async fn rollback_promote(act: &Act<'_>, p: &PromoteParams) -> Result<Value, ActionError> {
    let source = act.redis(&p.source.value).await?;
    let target = match act.step.target.as_deref() {
        Some(t) => act.reachable(t).await,
        None => None,
    };
    let source_address = match act.resolver().resolve_opt(p.source_address.as_ref())? {
        Some(address) => Some(address),
        None => source.address.clone(),
    };
    let settings = match act.captured {
        Some(Captured::Replication { source, .. }) => {
            vault::reveal_settings(act.ctx.run_dir, source)?
        }
        _ => Vec::new(),
    };
    let timeout = p.timeout.map_or(Duration::from_secs(60), |t| t.0);
    let progress = |message: String, remaining: Option<Duration>| act.progress(message, remaining);
    let note = switch::undo_promote(
        &source,
        target.as_ref(),
        source_address.as_deref(),
        &settings,
        p.drain_budget(),
        timeout,
        &progress,
    )
    .await?;
    Ok(Value::Text(note))
}

/// A number field of an INFO section (0 when absent).
fn number(map: &BTreeMap<String, Value>, key: &str) -> f64 {
    match map.get(key) {
        Some(Value::Number(n)) => *n,
        Some(other) => other.as_text().parse().unwrap_or(0.0),
        None => 0.0,
    }
}

/// A text field of an INFO section (empty when absent).
fn text(map: &BTreeMap<String, Value>, key: &str) -> String {
    map.get(key).map(Value::as_text).unwrap_or_default()
}

/// Gives `replica` the credentials of `primary` (masterauth, masteruser).
async fn credentials(replica: &RedisBackend, primary: &RedisBackend) -> Result<(), BackendError> {
    let mut settings = Vec::new();
    if let Some(password) = &primary.password {
        settings.push(("masterauth".to_owned(), password.clone()));
    }
    if let Some(user) = primary.username.as_ref().filter(|u| *u != "default") {
        settings.push(("masteruser".to_owned(), user.clone()));
    }
    replica.config_set_all(&settings).await
}

/// Configuration parameters and values, as captured or to be set.
type ConfigSettings = [(String, String)];

/// Makes `target` a replica of `source` (reached at `source_address`) and waits for the
/// full sync. Reports progress through `progress`. Restores the tuned settings after.
pub async fn replicate(
    source: &RedisBackend,
    target: &RedisBackend,
    source_address: &str,
    tune: bool,
    captured: (&ConfigSettings, &ConfigSettings),
    timeout: Duration,
    progress: &(dyn Fn(String, Option<Duration>, Option<Measure>) + Send + Sync),
) -> Result<Value, BackendError> {
    let started = Instant::now();
    let deadline = started + timeout;
    // A target still loading (restarted, or mid-sync when an earlier attempt was killed)
    // refuses REPLICAOF and some settings with LOADING: wait it out. One already
    // following the source goes on with that sync.
    let current = target.replication().await?;
    let following = text(&current, "role") == "slave"
        && format!(
            "{}:{}",
            text(&current, "master_host"),
            text(&current, "master_port")
        ) == source_address;
    if !following {
        switch::wait_loaded(target, deadline, &|m, r| progress(m, r, None)).await?;
    }
    credentials(target, source).await?;
    if tune {
        source
            .config_set_all(&[
                ("repl-diskless-sync".into(), "yes".into()),
                ("repl-diskless-sync-delay".into(), "0".into()),
                ("client-output-buffer-limit".into(), "replica 0 0 0".into()),
            ])
            .await?;
        if !following {
            target
                .config_set_all(&[("repl-diskless-load".into(), "on-empty-db".into())])
                .await?;
        }
    }
    if !following {
        target.replicaof(Some(source_address)).await?;
    }
    loop {
        let replication = target.replication().await?;
        let link = text(&replication, "master_link_status");
        let syncing = number(&replication, "master_sync_in_progress") > 0.0;
        if link == "up" && !syncing {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Timeout(format!(
                "the replica is not in sync after {} (link {link}{})",
                format_duration(timeout),
                if syncing {
                    ", full sync in progress"
                } else {
                    ""
                }
            )));
        }
        let total = number(&replication, "master_sync_total_bytes");
        let read = number(&replication, "master_sync_read_bytes");
        let message = if syncing && total > 0.0 {
            format!("full sync: {} of {}", format_size(read), format_size(total))
        } else if syncing {
            format!("full sync: {} received", format_size(read))
        } else {
            format!("replication link {link}")
        };
        progress(
            message,
            Some(deadline.saturating_duration_since(Instant::now())),
            (syncing && total > 0.0).then(|| Measure::of(read, total, MeasureUnit::Bytes)),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sync_duration = started.elapsed();
    if tune {
        // The operator's own settings again, now that the full sync is done.
        source.config_set_all(captured.0).await?;
        let diskless_load: Vec<_> = captured
            .1
            .iter()
            .filter(|(k, _)| k == "repl-diskless-load")
            .cloned()
            .collect();
        target.config_set_all(&diskless_load).await?;
    }
    switch::wait_loaded(target, deadline, &|m, r| progress(m, r, None)).await?;
    let keys = target.dbsize().await?;
    let lag = lag_bytes(source, target).await.unwrap_or(0.0);
    let mut value = BTreeMap::new();
    value.insert("master_link_status".to_owned(), Value::Text("up".into()));
    value.insert("lag_bytes".to_owned(), Value::Number(lag));
    value.insert("keys".to_owned(), Value::Number(keys as f64));
    value.insert("sync_duration".to_owned(), Value::Duration(sync_duration));
    Ok(Value::Object(value))
}

/// How many bytes of the primary's stream the replica has not processed.
pub async fn lag_bytes(
    primary: &RedisBackend,
    replica: &RedisBackend,
) -> Result<f64, BackendError> {
    let primary_offset = number(&primary.replication().await?, "master_repl_offset");
    let replica_info = replica.replication().await?;
    let replica_offset = match replica_info.get("slave_repl_offset") {
        Some(_) => number(&replica_info, "slave_repl_offset"),
        None => number(&replica_info, "master_repl_offset"),
    };
    Ok((primary_offset - replica_offset).max(0.0))
}

/// Undoes `redis.replicate`: the target stops replicating and gets its settings back;
/// the source gets its tuning back. A target that is gone replicates nothing.
pub async fn undo_replicate(
    source: Option<&RedisBackend>,
    target: Option<&RedisBackend>,
    source_settings: &[(String, String)],
    target_settings: &[(String, String)],
) -> Result<String, BackendError> {
    let mut notes = Vec::new();
    match target {
        Some(target) => {
            target.replicaof(None).await?;
            target.config_set_all(target_settings).await?;
        }
        None => notes.push("the target is unreachable, so it replicates nothing".to_owned()),
    }
    if let Some(source) = source {
        source.config_set_all(source_settings).await?;
    }
    Ok(notes.join("; "))
}
