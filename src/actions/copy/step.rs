//! `redis.copy` as a runbook step: its plan from the step's parameters, its connections,
//! and its ledger in the run directory (named in what the step captured).

use std::path::PathBuf;

use super::{CopyPlan, CopyProgress, KeyRename};
use crate::actions::act::Act;
use crate::actions::captured::Captured;
use crate::actions::runner::ActionError;
use crate::runbook::action::CopyParams;
use crate::value::Value;

/// What a copy captures before acting: where its ledger will be.
pub fn capture(act: &Act<'_>) -> Captured {
    Captured::Copy {
        ledger: format!("copy-{}.ledger", act.step.id),
    }
}

/// Where the ledger of a copy step is.
fn ledger_path(act: &Act<'_>) -> PathBuf {
    match act.captured {
        Some(Captured::Copy { ledger }) => act.ctx.run_dir.join(ledger),
        _ => act.ctx.run_dir.join(format!("copy-{}.ledger", act.step.id)),
    }
}

/// Copies the step's keys, resuming from its ledger when an earlier attempt was cut.
pub async fn perform(act: &Act<'_>, p: &CopyParams) -> Result<Value, ActionError> {
    let r = act.resolver();
    let plan = CopyPlan {
        pattern: match &p.pattern {
            Some(pattern) => r.resolve(pattern)?,
            None => "*".into(),
        },
        key_type: p.key_type.map(|t| t.to_string()),
        rename: KeyRename::of(p.rename.as_ref())?,
        existing: p.existing,
        references: p.references,
        batch: p.batch.map_or(super::DEFAULT_BATCH, |b| b.max(1) as usize),
        chunk_above: match p.chunk_above {
            Some(size) if size.0 == 0 => None,
            Some(size) => Some(size.0),
            None => Some(super::DEFAULT_CHUNK_ABOVE),
        },
        same_keyspace: false,
    };
    let connections = p.connections.map_or(super::DEFAULT_CONNECTIONS, |c| {
        c.clamp(1, crate::runbook::action::MAX_COPY_CONNECTIONS) as usize
    });
    let sources = act
        .connections
        .redis_pool(&p.source.value, r, connections)
        .await?;
    let targets = act
        .connections
        .redis_pool(act.redis_target()?, r, connections)
        .await?;
    let progress = |p: &CopyProgress| match p.measure() {
        Some(measure) => act.progress_of(p.line(), None, measure),
        None => act.progress(p.line(), None),
    };
    Ok(super::copy(
        &sources,
        &targets,
        &plan,
        &ledger_path(act),
        act.ctx.cancel,
        &progress,
    )
    .await?)
}

/// Deletes what the copy created and puts back what it replaced, from its ledger.
pub async fn undo(act: &Act<'_>, p: &CopyParams) -> Result<Value, ActionError> {
    let target = act.target_redis().await?;
    let source = act.reachable(&p.source.value).await;
    Ok(super::undo(&target, source.as_ref(), &ledger_path(act)).await?)
}
