//! `redis.delete`: the cleanup of a key migration (seed 004, phase 5). SCAN + UNLINK in
//! batches (never KEYS, never a blocking DEL of a large key), at most `rate` keys a
//! second so that the server keeps serving. Validation refuses it without a backup step
//! or `force: true`; `plan --check` shows how many keys it would delete.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::act::Act;
use super::runner::ActionError;
use crate::backend::BackendError;
use crate::backend::redis::RedisBackend;
use crate::runbook::action::DeleteParams;
use crate::value::Value;

/// Keys per SCAN and UNLINK when no rate limits them further.
const BATCH: usize = 1000;

/// Runs `redis.delete` as a step, with progress.
pub async fn perform(act: &Act<'_>, p: &DeleteParams) -> Result<Value, ActionError> {
    let target = act.target_redis().await?;
    let progress = |deleted: u64| act.progress(format!("{deleted} keys deleted"), None);
    Ok(delete(
        &target,
        &act.resolver().resolve(&p.pattern)?,
        p.key_type.map(|t| t.to_string()).as_deref(),
        p.rate,
        act.ctx.cancel,
        &progress,
    )
    .await?)
}

/// Deletes the keys matching `pattern` (and `key_type`) on `target`; the value counts
/// them. Stops with an error when `cancel` fires (a resume deletes what is left).
pub async fn delete(
    target: &RedisBackend,
    pattern: &str,
    key_type: Option<&str>,
    rate: Option<u32>,
    cancel: &CancellationToken,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Value, BackendError> {
    let started = Instant::now();
    let batch = rate.map_or(BATCH, |r| (r as usize).clamp(1, BATCH));
    let mut cursor = 0u64;
    let mut deleted = 0u64;
    let mut last_progress = Instant::now();
    loop {
        if cancel.is_cancelled() {
            return Err(BackendError::Command(format!(
                "interrupted after deleting {deleted} keys; resuming deletes the rest"
            )));
        }
        let (next, keys) = target
            .scan_page(cursor, pattern, key_type, batch as u32)
            .await?;
        for chunk in keys.chunks(batch) {
            deleted += target.unlink(chunk).await?;
            if let Some(rate) = rate {
                // Keep the average at or below `rate` keys a second.
                let due = Duration::from_secs_f64(deleted as f64 / f64::from(rate.max(1)));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(deleted);
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(Value::Object(
        [
            ("deleted".to_owned(), Value::Number(deleted as f64)),
            ("duration".to_owned(), Value::Duration(started.elapsed())),
        ]
        .into_iter()
        .collect(),
    ))
}
