//! The single-server `redis.*` actions: ping, info, dbsize, scan_count, queues,
//! config_get, command, and config_set with the previous value kept for its rollback.
//! Moving data between servers is [`super::replication`], [`super::copy`],
//! [`super::verify`] and [`super::delete`].

use super::act::Act;
use super::captured::Captured;
use super::probe::ProbeContext;
use super::runner::ActionError;
use crate::backend::BackendError;
use crate::runbook::action::Action;
use crate::value::Value;

/// Runs a read-only single-server Redis action on `target`.
pub async fn probe(
    action: &Action,
    target: Option<&str>,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    let r = &ctx.resolver;
    let target = target
        .ok_or_else(|| ActionError::config(format!("`{}` has no redis target", action.name())))?;
    let redis = ctx.connections.redis(target, r).await?;
    Ok(match action {
        Action::RedisPing(_) => Value::Duration(redis.ping().await?),
        Action::RedisInfo(p) => {
            let (section, field) = p.section_and_field();
            redis.info(section, field).await?
        }
        Action::RedisDbsize(_) => Value::Number(redis.dbsize().await? as f64),
        Action::RedisScanCount(p) => {
            let pattern = r.resolve(&p.pattern)?;
            let key_type = p.key_type.map(|t| t.to_string());
            let count = redis
                .scan_count(&pattern, key_type.as_deref(), p.count.unwrap_or(1000))
                .await?;
            Value::Number(count as f64)
        }
        Action::RedisCommand(p) => redis.command(&r.resolve_all(&p.args)?).await?,
        Action::RedisConfigGet(p) => redis.config_get(&p.parameter).await?,
        Action::RedisQueues(p) => {
            redis
                .queues(p.prefix.as_deref().unwrap_or("bull"), &p.queues)
                .await?
        }
        other => {
            return Err(ActionError::config(format!(
                "`{}` is not a read-only redis action",
                other.name()
            )));
        }
    })
}

/// What `redis.config_set` captures: the parameter's value before.
pub async fn capture(act: &Act<'_>) -> Result<Option<Captured>, ActionError> {
    let Action::RedisConfigSet(p) = &act.step.action else {
        return Ok(None);
    };
    let previous = act
        .target_redis()
        .await?
        .config_get(&p.parameter)
        .await?
        .as_text();
    Ok(Some(Captured::ConfigValue {
        parameter: p.parameter.clone(),
        previous,
    }))
}

/// Performs `redis.command` (one that writes) or `redis.config_set`.
pub async fn perform(act: &Act<'_>) -> Result<Value, ActionError> {
    let r = act.resolver();
    let redis = act.target_redis().await?;
    match &act.step.action {
        Action::RedisCommand(p) => Ok(redis.command(&r.resolve_all(&p.args)?).await?),
        Action::RedisConfigSet(p) => {
            redis
                .config_set(&p.parameter, &r.resolve(&p.value)?)
                .await?;
            Ok(redis.config_get(&p.parameter).await?)
        }
        other => Err(ActionError::config(format!(
            "`{}` is not a redis command",
            other.name()
        ))),
    }
}

/// Puts back the value `redis.config_set` replaced.
pub async fn undo(act: &Act<'_>) -> Result<Value, ActionError> {
    let Some(Captured::ConfigValue {
        parameter,
        previous,
    }) = act.captured
    else {
        return Err(BackendError::Unexpected("the previous value was not captured".into()).into());
    };
    let redis = act.target_redis().await?;
    Ok(redis
        .command(&[
            "CONFIG".into(),
            "SET".into(),
            parameter.clone(),
            previous.clone(),
        ])
        .await?)
}
