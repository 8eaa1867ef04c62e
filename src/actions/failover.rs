//! `redis.failover`: a Sentinel-managed primary moved to a chosen replica with no
//! acknowledged write lost ([`crate::backend::sentinel::failover`]), and back on rollback.

use std::time::Duration;

use super::act::Act;
use super::captured::Captured;
use super::runner::ActionError;
use crate::backend::BackendError;
use crate::backend::redis::RedisBackend;
use crate::backend::sentinel::{FailoverDone, Sentinels, failover};
use crate::runbook::action::{Action, FailoverParams};
use crate::value::Value;

/// Default longest write pause.
const DEFAULT_PAUSE: Duration = Duration::from_secs(10);
/// Default time limit of a failover.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

fn params<'a>(act: &'a Act<'_>) -> Result<&'a FailoverParams, ActionError> {
    match &act.step.action {
        Action::RedisFailover(p) => Ok(p),
        other => Err(ActionError::config(format!(
            "`{}` is not redis.failover",
            other.name()
        ))),
    }
}

/// The target's Sentinels, and a way to reach its data nodes by address.
async fn sentinels_of(
    act: &Act<'_>,
) -> Result<(Sentinels, crate::backend::redis::RedisEndpoint), ActionError> {
    let endpoint = act
        .connections
        .endpoint_of(act.redis_target()?, act.resolver())
        .await?;
    let Some(settings) = &endpoint.sentinel else {
        return Err(ActionError::config(
            "`redis.failover` needs a target with `sentinel:` (the Sentinels and the master name)",
        ));
    };
    let sentinels = Sentinels::connect(settings, endpoint.connect_timeout).await?;
    Ok((sentinels, endpoint))
}

/// Keeps the primary before the failover, for the rollback.
pub async fn capture(act: &Act<'_>) -> Result<Option<Captured>, ActionError> {
    let (sentinels, _) = sentinels_of(act).await?;
    Ok(Some(Captured::Primary {
        address: sentinels.primary().await?,
    }))
}

async fn fail_over_to(act: &Act<'_>, to: &str) -> Result<Value, ActionError> {
    let p = params(act)?;
    let (sentinels, endpoint) = sentinels_of(act).await?;
    let node = |address: String| {
        let endpoint = endpoint.at(&address);
        async move { RedisBackend::connect_node(&endpoint?).await }
    };
    let done = failover(
        &sentinels,
        to,
        node,
        p.pause.map_or(DEFAULT_PAUSE, |d| d.0),
        p.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
    )
    .await?;
    Ok(value(&done))
}

/// Fails over to the step's `to`.
pub async fn perform(act: &Act<'_>) -> Result<Value, ActionError> {
    let to = act.resolver().resolve(&params(act)?.to)?;
    fail_over_to(act, &to).await
}

/// Fails back to the primary before.
pub async fn undo(act: &Act<'_>) -> Result<Value, ActionError> {
    let Some(Captured::Primary { address }) = act.captured else {
        return Err(BackendError::Unexpected("the primary before was not captured".into()).into());
    };
    fail_over_to(act, address).await
}

fn value(done: &FailoverDone) -> Value {
    Value::Object(
        [
            ("from".to_owned(), Value::Text(done.from.clone())),
            ("to".to_owned(), Value::Text(done.to.clone())),
            ("paused".to_owned(), Value::Duration(done.paused)),
            ("sentinels".to_owned(), Value::Number(done.agreeing as f64)),
        ]
        .into_iter()
        .collect(),
    )
}
