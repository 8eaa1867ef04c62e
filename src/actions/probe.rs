//! Read-only actions against the live systems: what `plan --check` runs, what trigger
//! probes and `skip_if` run, and the read-only steps of a run. Each family runs its own;
//! this module only bounds them in time and refuses anything that changes the world.

use std::time::Duration;

use super::connections::Connections;
use super::resolve::Resolver;
use super::runner::ActionError;
use super::{docker, local, redis, verify};
use crate::redact::Redactor;
use crate::runbook::action::{Action, Effect};
use crate::runbook::units::format_duration;
use crate::value::Value;

/// Time limit of a probe whose step sets none.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a probe needs besides the action.
pub struct ProbeContext<'a> {
    /// Connections to the targets.
    pub connections: &'a Connections,
    /// Resolves templates.
    pub resolver: Resolver<'a>,
    /// Masks secrets in values (container environments, log lines).
    pub redactor: &'a Redactor,
    /// When the run started (for `since: run`).
    pub run_started: jiff::Timestamp,
}

/// Runs a read-only action; its value, or why it could not be taken. Mutating actions
/// are refused.
pub async fn probe(
    action: &Action,
    target: Option<&str>,
    timeout: Option<Duration>,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    if action.params().effect() != Effect::ReadOnly {
        return Err(ActionError::config(format!(
            "`{}` is not read-only",
            action.name()
        )));
    }
    let limit = timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
    match tokio::time::timeout(limit, dispatch(action, target, limit, ctx)).await {
        Ok(result) => result,
        Err(_) => Err(ActionError::timeout(format!(
            "`{}` took longer than {}",
            action.name(),
            format_duration(limit)
        ))),
    }
}

async fn dispatch(
    action: &Action,
    target: Option<&str>,
    limit: Duration,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    match action {
        Action::RedisPing(_)
        | Action::RedisInfo(_)
        | Action::RedisDbsize(_)
        | Action::RedisClusterCheck(_)
        | Action::RedisScanCount(_)
        | Action::RedisCommand(_)
        | Action::RedisConfigGet(_)
        | Action::RedisQueues(_)
        | Action::RedisClients(_) => redis::probe(action, target, ctx).await,
        Action::RedisVerify(p) => verify::probe(p, target, ctx).await,
        Action::RedisSyncStatus(p) => super::sync::step::status(p, ctx),
        Action::DockerContainers(_)
        | Action::DockerLogs(_)
        | Action::DockerImages(_)
        | Action::DockerVolumes(_)
        | Action::DockerWaitHealthy(_) => docker::probe(action, target, limit, ctx).await,
        Action::Tcp(_) | Action::Http(_) | Action::Assert(_) => {
            local::probe(action, limit, ctx).await
        }
        other => Err(ActionError::config(format!(
            "`{}` cannot be probed (it needs the executor)",
            other.name()
        ))),
    }
}
