//! The real [`ActionRunner`]: hands each step to its action family ([`super::docker`],
//! [`super::redis`], [`super::replication`], [`super::copy`], [`super::verify`],
//! [`super::delete`], [`super::local`]), read-only steps to [`super::probe`].

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::act::Act;
use super::captured::Captured;
use super::connections::Connections;
use super::probe::probe;
use super::runner::Preflight;
use super::runner::{ActionError, ActionRunner, RunContext};
use super::{
    compat, copy, delete, docker, failover, local, redis, replication, snapshot, sync, verify,
};
use crate::runbook::action::{Action, Effect, TargetKind};
use crate::runbook::model::Step;
use crate::value::Value;

/// Runs actions for real.
pub struct LiveRunner {
    connections: Connections,
}

impl LiveRunner {
    /// A runner for the targets of `connections`.
    pub fn new(connections: Connections) -> Self {
        LiveRunner { connections }
    }

    fn act<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> Act<'a> {
        Act {
            connections: &self.connections,
            step,
            captured,
            ctx,
        }
    }
}

/// Read-only actions that a step runs as a probe (the others that only read, like
/// `redis.command` or `docker.exec`, may still change the world or report progress).
fn runs_as_probe(action: &Action) -> bool {
    action.params().effect() == Effect::ReadOnly
        && !matches!(
            action,
            Action::DockerRun(_)
                | Action::Shell(_)
                | Action::DockerExec(_)
                | Action::RedisCommand(_)
                | Action::RedisVerify(_)
        )
}

async fn capture(act: &Act<'_>) -> Result<Option<Captured>, ActionError> {
    // Nothing changes before the two servers are known to fit the step.
    match compat::check_step(act.connections, act.step, act.resolver()).await {
        Some(Ok((true, why))) => return Err(ActionError::config(format!("pre-flight: {why}"))),
        Some(Ok((false, line))) => act.progress(line, None),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    match &act.step.action {
        Action::DockerRecreate(_)
        | Action::DockerStop(_)
        | Action::DockerStart(_)
        | Action::DockerRun(_) => docker::capture(act).await,
        Action::RedisReplicate(_) | Action::RedisPromote(_) => replication::capture(act).await,
        Action::RedisCopy(_) => Ok(Some(copy::step::capture(act))),
        Action::RedisSync(_) => Ok(Some(sync::step::capture(act))),
        Action::RedisSyncStop(p) => sync::step::capture_stop(act, p).await,
        Action::RedisConfigSet(_) => redis::capture(act).await,
        Action::RedisFailover(_) => failover::capture(act).await,
        _ => Ok(None),
    }
}

async fn perform(act: &Act<'_>) -> Result<Value, ActionError> {
    let step = act.step;
    match &step.action {
        action if runs_as_probe(action) => {
            probe(
                action,
                step.target.as_deref(),
                step.timeout,
                &act.probe_context(),
            )
            .await
        }
        Action::Wait(p) => local::wait(act, p).await,
        Action::Shell(_) => local::shell(act).await,
        Action::Http(p) => local::http(act, p).await,
        Action::DockerStop(_)
        | Action::DockerStart(_)
        | Action::DockerRestart(_)
        | Action::DockerRecreate(_)
        | Action::DockerRemove(_)
        | Action::DockerRemoveVolume(_)
        | Action::DockerExec(_)
        | Action::DockerRun(_) => docker::perform(act).await,
        Action::RedisCommand(_) | Action::RedisConfigSet(_) => redis::perform(act).await,
        Action::RedisReplicate(p) => replication::perform_replicate(act, p).await,
        Action::RedisPromote(p) => replication::perform_promote(act, p).await,
        Action::RedisCopy(p) => copy::step::perform(act, p).await,
        Action::RedisSync(p) => sync::step::perform(act, p).await,
        Action::RedisSyncStop(p) => sync::step::stop(act, p).await,
        Action::RedisVerify(p) => verify::perform(act, p).await,
        Action::RedisDelete(p) => delete::perform(act, p).await,
        Action::RedisSnapshot(p) => snapshot::perform(act, p).await,
        Action::RedisFailover(_) => failover::perform(act).await,
        other => Err(ActionError::config(format!(
            "`{}` is not supported by this version of redis-move",
            other.name()
        ))),
    }
}

async fn undo(act: &Act<'_>) -> Result<Value, ActionError> {
    match &act.step.action {
        Action::DockerRecreate(_)
        | Action::DockerStop(_)
        | Action::DockerStart(_)
        | Action::DockerRun(_) => docker::undo(act).await,
        Action::RedisConfigSet(_) => redis::undo(act).await,
        Action::RedisFailover(_) => failover::undo(act).await,
        Action::RedisReplicate(p) => replication::rollback_replicate(act, p).await,
        Action::RedisPromote(p) => replication::rollback_promote(act, p).await,
        Action::RedisCopy(p) => copy::step::undo(act, p).await,
        Action::RedisSync(p) => sync::step::undo(act, p).await,
        Action::RedisSyncStop(_) => sync::step::undo_stop(act).await,
        other => Err(ActionError::config(format!(
            "`{}` has no built-in rollback",
            other.name()
        ))),
    }
}

impl ActionRunner for LiveRunner {
    fn resume<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Option<String>, ActionError>> {
        Box::pin(async move {
            match &step.action {
                Action::RedisSync(p) if matches!(captured, Some(Captured::Sync { .. })) => {
                    sync::step::resume(&self.act(step, captured, ctx), p).await
                }
                _ => Ok(None),
            }
        })
    }

    fn discard<'a>(
        &'a self,
        step: &'a Step,
        captured: &'a Captured,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async move { docker::discard(&self.act(step, Some(captured), ctx)).await })
    }

    fn capture<'a>(
        &'a self,
        step: &'a Step,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Option<Captured>, ActionError>> {
        Box::pin(async move { capture(&self.act(step, None, ctx)).await })
    }

    fn perform<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move { perform(&self.act(step, captured, ctx)).await })
    }

    fn undo<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move { undo(&self.act(step, captured, ctx)).await })
    }

    fn preflight<'a>(
        &'a self,
        steps: &'a [Step],
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Vec<Preflight>> {
        Box::pin(async move {
            let checks = steps.iter().map(|step| async move {
                let checked = tokio::time::timeout(
                    Duration::from_secs(15),
                    compat::check_step(&self.connections, step, &ctx.resolver),
                )
                .await;
                let (passed, detail) = match checked {
                    Ok(None) => return None,
                    Ok(Some(Ok((failed, line)))) => (Some(!failed), line),
                    Ok(Some(Err(e))) => (
                        None,
                        format!("checked again before it acts: a server does not answer yet ({e})"),
                    ),
                    Err(_) => (
                        None,
                        "checked again before it acts: a server did not answer within 15s".into(),
                    ),
                };
                Some(Preflight {
                    step: step.id.clone(),
                    passed,
                    detail,
                })
            });
            futures_util::future::join_all(checks)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }

    fn check_target<'a>(
        &'a self,
        target: &'a str,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async move {
            let check = async {
                match self.connections.kind(target) {
                    Some(TargetKind::Redis) => {
                        self.connections
                            .redis(target, &ctx.resolver)
                            .await?
                            .ping()
                            .await?;
                        Ok(())
                    }
                    Some(TargetKind::Docker) => Ok(self
                        .connections
                        .docker(Some(target), &ctx.resolver)
                        .await?
                        .ping()
                        .await?),
                    None => Err(ActionError::config(format!("unknown target `{target}`"))),
                }
            };
            tokio::time::timeout(Duration::from_secs(10), check)
                .await
                .unwrap_or_else(|_| {
                    Err(ActionError::timeout(format!(
                        "`{target}` did not answer within 10s"
                    )))
                })
        })
    }
}
