//! One step's action with everything it may use: the step, what it captured before
//! acting, the run's context and the connections to the targets. Each action family
//! takes an [`Act`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::captured::Captured;
use super::connections::Connections;
use super::probe::ProbeContext;
use super::resolve::Resolver;
use super::runner::{ActionError, RunContext};
use crate::backend::docker::DockerBackend;
use crate::backend::docker::change::CommandOutput;
use crate::backend::redis::RedisBackend;
use crate::redact::Redactor;
use crate::runbook::model::Step;
use crate::value::Value;

/// A step's action about to be captured, performed or undone.
pub struct Act<'a> {
    /// Connections to the runbook's targets.
    pub connections: &'a Connections,
    /// The step.
    pub step: &'a Step,
    /// What it captured before acting, if anything.
    pub captured: Option<&'a Captured>,
    /// The run's context.
    pub ctx: &'a RunContext<'a>,
}

impl<'a> Act<'a> {
    /// Resolves the step's templates.
    pub fn resolver(&self) -> &Resolver<'a> {
        &self.ctx.resolver
    }

    /// Reports progress of the step.
    pub fn progress(&self, message: impl Into<String>, remaining: Option<Duration>) {
        self.ctx.progress(&self.step.id, message, remaining, None);
    }

    /// Reports progress of the step in its own measure (a bar where it is shown).
    pub fn progress_of(
        &self,
        message: impl Into<String>,
        remaining: Option<Duration>,
        measure: crate::exec::event::Measure,
    ) {
        self.ctx
            .progress(&self.step.id, message, remaining, Some(measure));
    }

    /// The same context for a read-only action.
    pub fn probe_context(&self) -> ProbeContext<'a> {
        ProbeContext {
            connections: self.connections,
            resolver: self.ctx.resolver,
            redactor: self.ctx.redactor,
            run_started: self.ctx.run_started,
        }
    }

    /// The Docker Engine of the step's target (the default one when it names none).
    pub async fn docker(&self) -> Result<DockerBackend, ActionError> {
        self.connections
            .docker(self.step.target.as_deref(), &self.ctx.resolver)
            .await
    }

    /// The name of the step's Redis target.
    pub fn redis_target(&self) -> Result<&'a str, ActionError> {
        self.step.target.as_deref().ok_or_else(|| {
            ActionError::config(format!("`{}` has no redis target", self.step.action.name()))
        })
    }

    /// The Redis connection of `target`.
    pub async fn redis(&self, target: &str) -> Result<RedisBackend, ActionError> {
        self.connections.redis(target, &self.ctx.resolver).await
    }

    /// The Redis connection of the step's target.
    pub async fn target_redis(&self) -> Result<RedisBackend, ActionError> {
        self.redis(self.redis_target()?).await
    }

    /// The source (named by the step) and the step's target.
    pub async fn pair(&self, source: &str) -> Result<(RedisBackend, RedisBackend), ActionError> {
        Ok((self.redis(source).await?, self.target_redis().await?))
    }

    /// A Redis target that answers a PING within 2 s, or `None` (rollbacks go on
    /// without a server that is gone).
    pub async fn reachable(&self, target: &str) -> Option<RedisBackend> {
        let redis = tokio::time::timeout(Duration::from_secs(3), self.redis(target))
            .await
            .ok()?
            .ok()?;
        match tokio::time::timeout(Duration::from_secs(2), redis.ping()).await {
            Ok(Ok(_)) => Some(redis),
            _ => None,
        }
    }
}

/// The value of a command that ran (`docker.exec`, `docker.run` with `rm`, `shell`):
/// exit code and output, secrets masked.
pub fn command_value(output: CommandOutput, redactor: &Redactor) -> Value {
    let mut fields = BTreeMap::new();
    let stdout = redactor.redact(&output.stdout);
    let stderr = redactor.redact(&output.stderr);
    fields.insert("exit_code".into(), Value::Number(output.exit_code as f64));
    fields.insert("output".into(), Value::Text(format!("{stdout}{stderr}")));
    fields.insert("stdout".into(), Value::Text(stdout));
    fields.insert("stderr".into(), Value::Text(stderr));
    Value::Object(fields)
}
