//! Read-only actions against the live systems: what `plan --check` runs, what trigger
//! probes and `skip_if` run. Connections are opened lazily, once per target.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Mutex;

use super::resolve::Resolver;
use crate::backend::BackendError;
use crate::backend::docker::{DockerBackend, Selection};
use crate::backend::net::{self, HttpRequest};
use crate::backend::redis::RedisBackend;
use crate::redact::Redactor;
use crate::runbook::action::{Action, ContainerState, Effect, LogSince};
use crate::runbook::expect::compile_regex;
use crate::runbook::model::{Runbook, Target};
use crate::runbook::spec::TargetSpec;
use crate::runbook::template::Template;
use crate::value::Value;

/// Time limit of a probe whose step sets none.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Lazily opened connections to a runbook's targets.
pub struct Connections {
    targets: HashMap<String, Target>,
    base_dir: PathBuf,
    redis: Mutex<HashMap<String, RedisBackend>>,
    docker: Mutex<HashMap<Option<String>, DockerBackend>>,
}

impl Connections {
    /// Connections for `runbook`'s targets (nothing is opened yet).
    pub fn new(runbook: &Runbook) -> Self {
        Connections {
            targets: runbook
                .targets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            base_dir: runbook
                .source
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            redis: Mutex::new(HashMap::new()),
            docker: Mutex::new(HashMap::new()),
        }
    }

    /// The kind of a target.
    pub fn kind(&self, target: &str) -> Option<crate::runbook::action::TargetKind> {
        self.targets.get(target).map(|t| t.kind)
    }

    /// The runbook's directory (relative paths in the runbook are relative to it).
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The Redis connection of `target`.
    pub async fn redis(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
    ) -> Result<RedisBackend, BackendError> {
        if let Some(existing) = self.redis.lock().await.get(target) {
            return Ok(existing.clone());
        }
        let Some(TargetSpec::Redis(spec)) = self.targets.get(target).map(|t| &t.spec) else {
            return Err(BackendError::Config(format!(
                "`{target}` is not a redis target"
            )));
        };
        let backend = RedisBackend::connect(spec, resolver, &self.base_dir).await?;
        self.redis
            .lock()
            .await
            .insert(target.to_owned(), backend.clone());
        Ok(backend)
    }

    /// `count` separate connections to `target` (the shared one first), for work that
    /// spreads over several connections (a key copy).
    pub async fn redis_pool(
        &self,
        target: &str,
        resolver: &Resolver<'_>,
        count: usize,
    ) -> Result<Vec<RedisBackend>, BackendError> {
        let mut pool = vec![self.redis(target, resolver).await?];
        let Some(TargetSpec::Redis(spec)) = self.targets.get(target).map(|t| &t.spec) else {
            return Err(BackendError::Config(format!(
                "`{target}` is not a redis target"
            )));
        };
        for _ in 1..count.max(1) {
            pool.push(RedisBackend::connect(spec, resolver, &self.base_dir).await?);
        }
        Ok(pool)
    }

    /// The Docker client of `target` (`None`: the default endpoint).
    pub async fn docker(
        &self,
        target: Option<&str>,
        resolver: &Resolver<'_>,
    ) -> Result<DockerBackend, BackendError> {
        let key = target.map(str::to_owned);
        if let Some(existing) = self.docker.lock().await.get(&key) {
            return Ok(existing.clone());
        }
        let spec = match target {
            Some(name) => match self.targets.get(name).map(|t| &t.spec) {
                Some(TargetSpec::Docker(spec)) => Some(spec),
                _ => {
                    return Err(BackendError::Config(format!(
                        "`{name}` is not a docker target"
                    )));
                }
            },
            None => None,
        };
        let backend = DockerBackend::connect(spec, resolver, &self.base_dir).await?;
        self.docker.lock().await.insert(key, backend.clone());
        Ok(backend)
    }
}

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

fn regex(
    template: Option<&Template>,
    resolver: &Resolver<'_>,
) -> Result<Option<regex::Regex>, BackendError> {
    match resolver.resolve_opt(template)? {
        Some(text) => compile_regex(&text).map(Some).map_err(BackendError::Config),
        None => Ok(None),
    }
}

fn selection(
    name: Option<&Template>,
    labels: &indexmap::IndexMap<String, String>,
    state: Option<ContainerState>,
    resolver: &Resolver<'_>,
) -> Result<Selection, BackendError> {
    Ok(Selection {
        name: regex(name, resolver)?,
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        state: state.map(|s| s.to_string()),
    })
}

/// Runs a read-only action; its value, or why it could not be taken. Mutating actions
/// are refused.
pub async fn probe(
    action: &Action,
    target: Option<&str>,
    timeout: Option<Duration>,
    ctx: &ProbeContext<'_>,
) -> Result<Value, BackendError> {
    if action.params().effect() != Effect::ReadOnly {
        return Err(BackendError::Config(format!(
            "`{}` is not read-only",
            action.name()
        )));
    }
    let limit = timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
    match tokio::time::timeout(limit, probe_inner(action, target, limit, ctx)).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Timeout(format!(
            "`{}` took longer than {}",
            action.name(),
            crate::runbook::units::format_duration(limit)
        ))),
    }
}

async fn probe_inner(
    action: &Action,
    target: Option<&str>,
    limit: Duration,
    ctx: &ProbeContext<'_>,
) -> Result<Value, BackendError> {
    let r = &ctx.resolver;
    let redis_target = || {
        target
            .ok_or_else(|| BackendError::Config(format!("`{}` has no redis target", action.name())))
    };
    match action {
        Action::RedisPing(_) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            redis.ping().await.map(Value::Duration)
        }
        Action::RedisInfo(p) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            let (section, field) = p.section_and_field();
            redis.info(section, field).await
        }
        Action::RedisDbsize(_) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            redis.dbsize().await.map(|n| Value::Number(n as f64))
        }
        Action::RedisScanCount(p) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            let pattern = r.resolve(&p.pattern)?;
            let key_type = p.key_type.map(|t| t.to_string());
            redis
                .scan_count(&pattern, key_type.as_deref(), p.count.unwrap_or(1000))
                .await
                .map(|n| Value::Number(n as f64))
        }
        Action::RedisCommand(p) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            redis.command(&r.resolve_all(&p.args)?).await
        }
        Action::RedisConfigGet(p) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            redis.config_get(&p.parameter).await
        }
        Action::RedisVerify(p) => {
            let source = ctx.connections.redis(&p.source.value, r).await?;
            let target = ctx.connections.redis(redis_target()?, r).await?;
            let plan = super::verify::VerifyPlan::of(p, r)?;
            super::verify::verify(&source, &target, &plan, &|_, _| {}).await
        }
        Action::RedisQueues(p) => {
            let redis = ctx.connections.redis(redis_target()?, r).await?;
            redis
                .queues(p.prefix.as_deref().unwrap_or("bull"), &p.queues)
                .await
        }
        Action::DockerContainers(p) => {
            let docker = ctx.connections.docker(target, r).await?;
            docker
                .containers(
                    &selection(p.name.as_ref(), &p.labels, p.state, r)?,
                    ctx.redactor,
                )
                .await
        }
        Action::DockerLogs(p) => {
            let docker = ctx.connections.docker(target, r).await?;
            let since = match &p.since {
                Some(LogSince::Ago(d)) => {
                    Some(jiff::Timestamp::now().as_second() - d.0.as_secs() as i64)
                }
                Some(LogSince::RunStart) => Some(ctx.run_started.as_second()),
                None => None,
            };
            let pattern = regex(p.pattern.as_ref(), r)?;
            docker
                .logs(
                    &selection(p.name.as_ref(), &p.labels, p.state, r)?,
                    pattern.as_ref(),
                    since,
                    p.tail,
                    ctx.redactor,
                )
                .await
        }
        Action::DockerImages(p) => {
            let docker = ctx.connections.docker(target, r).await?;
            docker.images(regex(p.name.as_ref(), r)?.as_ref()).await
        }
        Action::DockerVolumes(p) => {
            let docker = ctx.connections.docker(target, r).await?;
            docker.volumes(regex(p.name.as_ref(), r)?.as_ref()).await
        }
        Action::DockerWaitHealthy(p) => {
            let docker = ctx.connections.docker(target, r).await?;
            let wait = p
                .timeout
                .map(|t| t.0)
                .unwrap_or(Duration::from_secs(60))
                .min(limit);
            docker
                .wait_healthy(
                    &selection(p.name.as_ref(), &p.labels, p.state, r)?,
                    wait,
                    ctx.redactor,
                )
                .await
        }
        Action::Tcp(p) => net::tcp_connect(&r.resolve(&p.address)?, limit)
            .await
            .map(Value::Duration),
        Action::Http(p) => {
            let ca = match p.tls.as_ref().and_then(|t| t.ca.as_ref()) {
                Some(path) => Some(
                    std::fs::read(ctx.connections.base_dir().join(path)).map_err(|e| {
                        BackendError::Config(format!("cannot read CA `{path}`: {e}"))
                    })?,
                ),
                None => None,
            };
            let request = HttpRequest {
                method: format!("{:?}", p.method).to_uppercase(),
                url: r.resolve(&p.url)?,
                headers: r.resolve_map(&p.headers)?,
                body: r.resolve_opt(p.body.as_ref())?,
                status: p.status,
                ca,
                insecure: p.tls.as_ref().is_some_and(|t| t.insecure),
                timeout: limit,
            };
            net::http(&request).await
        }
        Action::Assert(p) => Ok(Value::Text(r.resolve(&p.value)?)),
        other => Err(BackendError::Config(format!(
            "`{}` cannot be probed yet (it needs the executor)",
            other.name()
        ))),
    }
}
