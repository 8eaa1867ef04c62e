//! Switching which of two servers is the primary without losing an acknowledged write:
//! `redis.promote` and the rollback that promotes the old primary back.
//!
//! Writers may still be writing to the old primary when the switch starts. A write it
//! acknowledges after the replica's last offset and before it stops taking writes would
//! exist nowhere else (and reverse replication would even discard it with a full
//! resync). So the switch drains the old primary first:
//!
//! 1. wait until the replica is close (less than [`PRE_DRAIN_LAG`] behind);
//! 2. pause writers on the old primary (`CLIENT PAUSE <budget> WRITE`: writes wait,
//!    reads go on, and the server stops generating its own writes, so its offset holds);
//! 3. wait until the replica's offset equals the old primary's `master_repl_offset`
//!    (at most half the budget; otherwise unpause and fail with nothing switched);
//! 4. fence the old primary (`min-replicas-to-write` set beyond any replica count: a
//!    write that reaches it from now on is refused with `NOREPLICAS` instead of being
//!    acknowledged), so that the pause running out cannot let a write slip through;
//! 5. promote the replica (`REPLICAOF NO ONE`);
//! 6. with reverse replication, make the old primary a replica of the new one (a partial
//!    resync: both hold the same history up to the drained offset) and lift its fence
//!    (a replica refuses writes with `READONLY` anyway); without, it stays fenced;
//! 7. unpause. Writers that waited get `READONLY` or `NOREPLICAS`: refused, never
//!    acknowledged and lost. Their count is the step's `rejected_writes`.
//!
//! A failure before step 5 lifts the fence, unpauses and leaves the pair as it was (the
//! old primary still the primary, the replica still following it). A failure after step
//! 5 unpauses and leaves the new primary in charge with the old one fenced or following;
//! the step's rollback switches back.
//!
//! Where `CLIENT PAUSE ... WRITE` is not available (Redis before 6.2, or a service that
//! refuses it) the switch fences first instead: writers get `NOREPLICAS` during the
//! drain rather than waiting. Where `CONFIG SET` is refused as well, the switch refuses
//! to start; `drain: false` switches without either, as earlier versions did (a write in
//! flight at the switch can then be lost).

use std::time::{Duration, Instant};

use super::{credentials, number, text};
use crate::backend::BackendError;
use crate::backend::redis::RedisBackend;
use crate::runbook::units::{format_duration, format_size};
use crate::value::Value;

/// How close the replica must be before writers are paused.
pub const PRE_DRAIN_LAG: f64 = 64.0 * 1024.0;
/// The pause budget when the step gives none.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// `min-replicas-to-write` while fenced: more replicas than any server has.
pub const FENCE: &str = "2147483647";
/// Settings the switch changes on either server, captured for the rollback.
pub const FENCE_SETTINGS: &[&str] = &["min-replicas-to-write"];

/// What a progress callback looks like.
pub type ProgressFn<'a> = &'a (dyn Fn(String, Option<Duration>) + Send + Sync);

/// One switch of primaries.
pub struct Switch<'a> {
    /// The primary now.
    pub old: &'a RedisBackend,
    /// Its replica, the primary after the switch.
    pub new: &'a RedisBackend,
    /// `host:port` of `new` as `old` reaches it: `old` becomes its replica. `None`:
    /// `old` stays fenced.
    pub old_follows: Option<&'a str>,
    /// Wait until `old` has its link to `new` up (a promote, whose lossless rollback
    /// depends on it); otherwise only report the link (a rollback, which is done once
    /// the old primary is back in charge).
    pub wait_follow: bool,
    /// The pause budget; `None`: no drain (the replica must catch up on its own).
    pub drain: Option<Duration>,
    /// How long the whole switch may take.
    pub timeout: Duration,
}

/// How writers were held off during the drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// `CLIENT PAUSE WRITE`: writers waited.
    Pause,
    /// Fenced only: writers were refused.
    Fence,
}

/// Performs the switch; the value records the window (see the module's documentation).
pub async fn switch(plan: &Switch<'_>, progress: ProgressFn<'_>) -> Result<Value, BackendError> {
    let deadline = Instant::now() + plan.timeout;
    wait_loaded(plan.new, deadline, progress).await?;
    follows(plan.new, plan.old).await?;
    let Some(budget) = plan.drain else {
        let offset = wait_lag(plan.old, plan.new, 0.0, deadline, progress).await?;
        plan.new.replicaof(None).await?;
        let mut value = Fields::default();
        value.number("offset", offset);
        value.number("lag_bytes", 0.0);
        value.bool("drained", false);
        match plan.old_follows {
            Some(address) if plan.wait_follow => {
                follow(plan.old, plan.new, address, deadline, progress).await?;
                value.text("old_primary", "replica");
            }
            Some(address) => {
                credentials(plan.old, plan.new).await?;
                plan.old.replicaof(Some(address)).await?;
                value.text("old_primary", "replica");
                let link = text(&plan.old.replication().await?, "master_link_status");
                value.text("link", &link);
            }
            None => value.text("old_primary", "primary"),
        }
        return Ok(value.into());
    };
    wait_lag(plan.old, plan.new, PRE_DRAIN_LAG, deadline, progress).await?;
    let rejected_before = rejected_writes(plan.old).await;
    let fence_before = plan.old.config_text("min-replicas-to-write").await.ok();
    let full_syncs_before = full_syncs(plan.new).await;
    let (hold, note) = hold_writers(plan.old, budget).await?;
    let held_at = Instant::now();
    progress(
        match hold {
            Hold::Pause => "writes paused on the old primary: draining".into(),
            Hold::Fence => "writes refused on the old primary (fenced): draining".into(),
        },
        Some(budget),
    );
    let switched = switch_held(
        plan,
        hold,
        budget,
        held_at,
        fence_before.as_deref(),
        deadline,
    )
    .await;
    let resumed = match hold {
        Hold::Pause => plan.old.command(&["CLIENT".into(), "UNPAUSE".into()]).await,
        Hold::Fence => Ok(Value::Null),
    };
    let held = held_at.elapsed();
    let offset = match switched {
        Ok(offset) => offset,
        Err(e) => {
            return Err(match resumed {
                Ok(_) => e,
                Err(u) => BackendError::Command(format!(
                    "{e}; and CLIENT UNPAUSE failed ({u}): writers wait until the pause budget ends"
                )),
            });
        }
    };
    progress("switched; writers resumed".into(), None);
    let mut value = Fields::default();
    value.number("offset", offset);
    value.number("lag_bytes", 0.0);
    value.bool("drained", true);
    value.text(
        "hold",
        match hold {
            Hold::Pause => "pause",
            Hold::Fence => "fence",
        },
    );
    value.duration("held", held);
    value.duration("budget", budget);
    if let Some(note) = note {
        value.text("note", &note);
    }
    if plan.old_follows.is_some() && !plan.wait_follow {
        value.text("old_primary", "replica");
        let link = text(&plan.old.replication().await?, "master_link_status");
        value.text("link", &link);
    } else if let Some(address) = plan.old_follows {
        follow(plan.old, plan.new, address, deadline, progress).await?;
        value.text("old_primary", "replica");
        let resync = match (full_syncs_before, full_syncs(plan.new).await) {
            (Some(before), Some(after)) if after > before => "full",
            (Some(_), Some(_)) => "partial",
            _ => "unknown",
        };
        value.text("resync", resync);
    } else {
        value.text("old_primary", "fenced");
    }
    if let (Some(before), Some(after)) = (rejected_before, rejected_writes(plan.old).await) {
        value.number("rejected_writes", after.saturating_sub(before) as f64);
    }
    Ok(value.into())
}

/// Checks that `replica` replicates `primary` (same replication id): offsets of two
/// unrelated streams mean nothing, and promoting a replica of another server would make
/// the old primary throw its dataset away to follow it. Nothing is changed otherwise.
async fn follows(replica: &RedisBackend, primary: &RedisBackend) -> Result<(), BackendError> {
    let (mine, theirs) = (replica.replication().await?, primary.replication().await?);
    let role = text(&mine, "role");
    let (replica_id, primary_id) = (text(&mine, "master_replid"), text(&theirs, "master_replid"));
    if role != "slave" || replica_id.is_empty() || replica_id != primary_id {
        return Err(BackendError::Command(format!(
            "the server to promote does not replicate the source (role {role}, following {}:{}, replication id {} where the source's is {}); nothing was changed: run `redis.replicate` first",
            text(&mine, "master_host"),
            text(&mine, "master_port"),
            short_id(&replica_id),
            short_id(&primary_id)
        )));
    }
    Ok(())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Steps 3 to 6, with writers held off; the offset both servers agreed on.
async fn switch_held(
    plan: &Switch<'_>,
    hold: Hold,
    budget: Duration,
    held_at: Instant,
    fence_before: Option<&str>,
    deadline: Instant,
) -> Result<f64, BackendError> {
    let unfence = || async {
        if let Some(previous) = fence_before {
            let _ = set(plan.old, "min-replicas-to-write", previous).await;
        }
    };
    let drain_deadline = (held_at + budget / 2).min(deadline);
    let drained = drain(plan.old, plan.new, drain_deadline).await;
    tracing::debug!(elapsed = ?held_at.elapsed(), ?drained, "drained");
    if let Err(e) = drained {
        if hold == Hold::Fence {
            unfence().await;
        }
        return Err(e);
    }
    if hold == Hold::Pause
        && let Err(e) = set(plan.old, "min-replicas-to-write", FENCE).await
    {
        return Err(BackendError::Command(format!(
            "cannot fence the old primary ({e}); nothing was switched"
        )));
    }
    // Fenced now: the old primary's offset cannot move any more. A write that slipped in
    // between the drain and the fence (a pause that ran out) is waited for.
    let offset = match drain(plan.old, plan.new, deadline).await {
        Ok(offset) => offset,
        Err(e) => {
            unfence().await;
            return Err(e);
        }
    };
    tracing::debug!(elapsed = ?held_at.elapsed(), offset, "fenced and drained again");
    if let Err(e) = plan.new.replicaof(None).await {
        unfence().await;
        return Err(BackendError::Command(format!(
            "could not promote the replica ({e}); nothing was switched"
        )));
    }
    tracing::debug!(elapsed = ?held_at.elapsed(), "promoted");
    if let Some(address) = plan.old_follows {
        credentials(plan.old, plan.new).await?;
        plan.old.replicaof(Some(address)).await?;
        tracing::debug!(elapsed = ?held_at.elapsed(), "the old primary follows");
        if let Some(previous) = fence_before {
            set(plan.old, "min-replicas-to-write", previous).await?;
        }
    }
    Ok(offset)
}

/// Holds writers off on `old`: a write pause where the server has one, else the fence.
async fn hold_writers(
    old: &RedisBackend,
    budget: Duration,
) -> Result<(Hold, Option<String>), BackendError> {
    let pause = old
        .command(&[
            "CLIENT".into(),
            "PAUSE".into(),
            budget.as_millis().max(1).to_string(),
            "WRITE".into(),
        ])
        .await;
    let refused = match pause {
        Ok(_) => return Ok((Hold::Pause, None)),
        Err(BackendError::Command(msg)) => msg,
        Err(e) => return Err(e),
    };
    match set(old, "min-replicas-to-write", FENCE).await {
        Ok(()) => Ok((
            Hold::Fence,
            Some(format!(
                "CLIENT PAUSE WRITE was refused ({refused}): writers were refused (NOREPLICAS) during the drain instead"
            )),
        )),
        Err(e) => Err(BackendError::Command(format!(
            "cannot hold writers off on the old primary: CLIENT PAUSE WRITE was refused ({refused}) and so was CONFIG SET ({e}); nothing was switched. Stop every writer and give `drain: false`"
        ))),
    }
}

async fn set(redis: &RedisBackend, parameter: &str, value: &str) -> Result<(), BackendError> {
    redis
        .command(&[
            "CONFIG".into(),
            "SET".into(),
            parameter.into(),
            value.into(),
        ])
        .await
        .map(|_| ())
}

/// The replica's offset: what it has processed of its primary's stream.
fn replica_offset(info: &std::collections::BTreeMap<String, Value>) -> f64 {
    match info.get("slave_repl_offset") {
        Some(_) => number(info, "slave_repl_offset"),
        None => number(info, "master_repl_offset"),
    }
}

/// Waits until `replica` has processed every byte `primary` has written, polling fast
/// (writers are held off meanwhile); the offset.
async fn drain(
    primary: &RedisBackend,
    replica: &RedisBackend,
    until: Instant,
) -> Result<f64, BackendError> {
    loop {
        let target = number(&primary.replication().await?, "master_repl_offset");
        let info = replica.replication().await?;
        let reached = replica_offset(&info);
        let link = text(&info, "master_link_status");
        if link == "up" && reached >= target {
            return Ok(target);
        }
        if Instant::now() >= until {
            return Err(BackendError::Timeout(format!(
                "the replica was still {} behind (link {link}) when the time for the drain ran out; nothing was switched",
                format_size((target - reached).max(0.0))
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `replica` is at most `lag` bytes behind `primary` with its link up; the
/// primary's offset then.
async fn wait_lag(
    primary: &RedisBackend,
    replica: &RedisBackend,
    lag: f64,
    deadline: Instant,
    progress: ProgressFn<'_>,
) -> Result<f64, BackendError> {
    loop {
        let offset = number(&primary.replication().await?, "master_repl_offset");
        let info = replica.replication().await?;
        let behind = (offset - replica_offset(&info)).max(0.0);
        let link = text(&info, "master_link_status");
        if link == "up" && behind <= lag {
            return Ok(offset);
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Timeout(format!(
                "the replica is still {} behind (link {link}): are the writers too fast for it?",
                format_size(behind)
            )));
        }
        progress(
            format!(
                "waiting for the replica to catch up: {} behind",
                format_size(behind)
            ),
            Some(deadline.saturating_duration_since(Instant::now())),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes `old` a replica of `new` (if it is not yet) and waits for the link.
async fn follow(
    old: &RedisBackend,
    new: &RedisBackend,
    address: &str,
    deadline: Instant,
    progress: ProgressFn<'_>,
) -> Result<(), BackendError> {
    if text(&old.replication().await?, "role") != "slave" {
        credentials(old, new).await?;
        old.replicaof(Some(address)).await?;
    }
    loop {
        let replication = old.replication().await?;
        if text(&replication, "master_link_status") == "up"
            && number(&replication, "master_sync_in_progress") == 0.0
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Timeout(
                "the old primary did not start replicating from the new one in time".into(),
            ));
        }
        progress(
            "reverse replication: the old primary follows the new one".into(),
            None,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits while `redis` is loading its dataset (a restart, a full sync being applied).
pub async fn wait_loaded(
    redis: &RedisBackend,
    deadline: Instant,
    progress: ProgressFn<'_>,
) -> Result<(), BackendError> {
    loop {
        let loading = match redis.info_sections(Some("persistence")).await {
            Ok(sections) => sections
                .get("persistence")
                .is_some_and(|p| number(p, "loading") > 0.0),
            Err(BackendError::Command(msg)) if msg.contains("LOADING") => true,
            Err(e) => return Err(e),
        };
        if !loading {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Timeout(
                "the server is still loading its dataset".into(),
            ));
        }
        progress("the server is loading its dataset".into(), None);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes refused so far (`READONLY`, `NOREPLICAS`), from INFO errorstats.
async fn rejected_writes(redis: &RedisBackend) -> Option<u64> {
    let sections = redis.info_sections(Some("errorstats")).await.ok()?;
    let stats = sections.get("errorstats").cloned().unwrap_or_default();
    Some(
        ["errorstat_READONLY", "errorstat_NOREPLICAS"]
            .iter()
            .filter_map(|name| stats.get(*name))
            .filter_map(|v| {
                v.as_text()
                    .split(',')
                    .find_map(|part| part.strip_prefix("count="))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum(),
    )
}

/// Full syncs a primary has served (INFO stats `sync_full`).
async fn full_syncs(redis: &RedisBackend) -> Option<u64> {
    let sections = redis.info_sections(Some("stats")).await.ok()?;
    Some(number(sections.get("stats")?, "sync_full") as u64)
}

/// Undoes a promotion from what the servers say now:
/// - the target was never promoted: nothing to switch;
/// - the old primary follows the target with its link up (reverse replication): a
///   drained switch back, after which the target follows the old primary again;
/// - otherwise the old primary becomes the primary again as it is (writes made on the
///   target since the cutover are not on it) and the target follows it.
///
/// Either way the old primary's own settings (credentials, fence) are put back. A target
/// that is gone leaves the old primary with what it replicated until then.
pub async fn undo_promote(
    source: &RedisBackend,
    target: Option<&RedisBackend>,
    source_address: Option<&str>,
    source_settings: &[(String, String)],
    drain: Option<Duration>,
    timeout: Duration,
    progress: ProgressFn<'_>,
) -> Result<String, BackendError> {
    let mut notes = Vec::new();
    // A promote cut short (killed mid-drain) may have left the source paused: its
    // writers wait no longer. Its fence is lifted with its settings below.
    if source
        .command(&["CLIENT".into(), "UNPAUSE".into()])
        .await
        .is_ok()
    {
        tracing::debug!("CLIENT UNPAUSE sent to the old primary");
    }
    let source_info = source.replication().await?;
    let source_follows =
        text(&source_info, "role") == "slave" && text(&source_info, "master_link_status") == "up";
    match target {
        Some(target) if text(&target.replication().await?, "role") == "slave" => {
            notes.push("the target was never promoted".to_owned());
        }
        Some(target) if source_follows => {
            let value = switch(
                &Switch {
                    old: target,
                    new: source,
                    old_follows: source_address,
                    wait_follow: false,
                    drain,
                    timeout,
                },
                progress,
            )
            .await?;
            match value.field("held") {
                Some(Value::Duration(held)) => notes.push(format!(
                    "switched back with writes held off for {}",
                    format_duration(*held)
                )),
                _ => notes.push("switched back".to_owned()),
            }
            if let Some(address) = source_address {
                let link = value.field("link").map(Value::as_text).unwrap_or_default();
                notes.push(format!(
                    "the new server replicates the old one again from `{address}` (link {link})"
                ));
            } else {
                notes.push("the new server is fenced (it refuses writes)".into());
            }
        }
        Some(target) => {
            if text(&source_info, "role") == "slave" {
                source.replicaof(None).await?;
            }
            if let Some(address) = source_address {
                credentials(target, source).await?;
                target.replicaof(Some(address)).await?;
                notes.push(
                    "the new server replicates the old one again (writes made on it since the cutover are not on the old one)"
                        .into(),
                );
            }
        }
        None => {
            if text(&source_info, "role") == "slave" {
                source.replicaof(None).await?;
            }
            notes.push(
                "the new primary is unreachable: the old one keeps what it replicated until then"
                    .to_owned(),
            );
        }
    }
    let restore: Vec<_> = source_settings
        .iter()
        .filter(|(k, _)| {
            k == "masterauth" || k == "masteruser" || FENCE_SETTINGS.contains(&k.as_str())
        })
        .cloned()
        .collect();
    source.config_set_all(&restore).await?;
    Ok(notes.join("; "))
}

/// A value's fields, built up.
#[derive(Default)]
struct Fields(std::collections::BTreeMap<String, Value>);

impl Fields {
    fn number(&mut self, name: &str, n: f64) {
        self.0.insert(name.into(), Value::Number(n));
    }
    fn text(&mut self, name: &str, t: &str) {
        self.0.insert(name.into(), Value::Text(t.into()));
    }
    fn bool(&mut self, name: &str, b: bool) {
        self.0.insert(name.into(), Value::Bool(b));
    }
    fn duration(&mut self, name: &str, d: Duration) {
        self.0.insert(name.into(), Value::Duration(d));
    }
}

impl From<Fields> for Value {
    fn from(fields: Fields) -> Value {
        Value::Object(fields.0)
    }
}
