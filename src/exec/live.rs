//! The real [`ActionRunner`]: every action of the format against Docker, Redis, the
//! shell and the network, with the before-state its rollback needs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::journal::Captured;
use super::probe::{Connections, ProbeContext, probe};
use super::replication;
use super::runner::{ActionRunner, RunContext};
use super::{cleanup, copy, verify};
use crate::backend::docker::change::{CommandOutput, HealthSpec, RunSpec};
use crate::backend::docker::{DockerBackend, Selection};
use crate::backend::redis::RedisBackend;
use crate::backend::{BackendError, net, shell};
use crate::redact::Redactor;
use crate::runbook::action::{Action, ContainerState, Effect};
use crate::runbook::expect::compile_regex;
use crate::runbook::model::Step;
use crate::runbook::template::Template;
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
}

fn command_value(output: CommandOutput, redactor: &Redactor) -> Value {
    let mut fields = BTreeMap::new();
    let stdout = redactor.redact(&output.stdout);
    let stderr = redactor.redact(&output.stderr);
    fields.insert("exit_code".into(), Value::Number(output.exit_code as f64));
    fields.insert("output".into(), Value::Text(format!("{stdout}{stderr}")));
    fields.insert("stdout".into(), Value::Text(stdout));
    fields.insert("stderr".into(), Value::Text(stderr));
    Value::Object(fields)
}

fn changed_value(names: Vec<String>) -> Value {
    let mut fields = BTreeMap::new();
    fields.insert("count".into(), Value::Number(names.len() as f64));
    fields.insert(
        "containers".into(),
        Value::List(names.into_iter().map(Value::Text).collect()),
    );
    Value::Object(fields)
}

fn selection(
    name: Option<&Template>,
    labels: &indexmap::IndexMap<String, String>,
    state: Option<ContainerState>,
    ctx: &RunContext<'_>,
) -> Result<Selection, BackendError> {
    let name = match ctx.resolver.resolve_opt(name)? {
        Some(text) => Some(compile_regex(&text).map_err(BackendError::Config)?),
        None => None,
    };
    Ok(Selection {
        name,
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        state: state.map(|s| s.to_string()),
    })
}

/// The (name, parked name) pairs a recreate captured.
/// Where the ledger of a copy step is.
fn ledger_path(step: &Step, captured: Option<&Captured>, ctx: &RunContext<'_>) -> PathBuf {
    match captured {
        Some(Captured::Copy { ledger }) => ctx.run_dir.join(ledger),
        _ => ctx.run_dir.join(format!("copy-{}.ledger", step.id)),
    }
}

/// Containers a recreate found stopped (they stay stopped when put back).
fn stopped_before(captured: Option<&Captured>) -> Vec<String> {
    match captured {
        Some(Captured::Recreated { stopped, .. }) => stopped.clone(),
        _ => Vec::new(),
    }
}

fn recreated(captured: Option<&Captured>) -> Vec<(String, String)> {
    match captured {
        Some(Captured::Recreated { containers, .. }) => containers.clone(),
        _ => Vec::new(),
    }
}

fn changed_names(captured: Option<&Captured>) -> Vec<String> {
    match captured {
        Some(Captured::Changed { names }) => names.clone(),
        _ => Vec::new(),
    }
}

impl LiveRunner {
    async fn docker(
        &self,
        step: &Step,
        ctx: &RunContext<'_>,
    ) -> Result<DockerBackend, BackendError> {
        self.connections
            .docker(step.target.as_deref(), &ctx.resolver)
            .await
    }

    /// The source and the target of a replication step.
    async fn pair(
        &self,
        step: &Step,
        source: &str,
        ctx: &RunContext<'_>,
    ) -> Result<(RedisBackend, RedisBackend), BackendError> {
        let target = self.redis_target(step)?;
        Ok((
            self.connections.redis(source, &ctx.resolver).await?,
            self.connections.redis(target, &ctx.resolver).await?,
        ))
    }

    /// A Redis target that answers a PING within 2 s, or `None`.
    async fn reachable(&self, target: &str, ctx: &RunContext<'_>) -> Option<RedisBackend> {
        let redis = tokio::time::timeout(
            Duration::from_secs(3),
            self.connections.redis(target, &ctx.resolver),
        )
        .await
        .ok()?
        .ok()?;
        match tokio::time::timeout(Duration::from_secs(2), redis.ping()).await {
            Ok(Ok(_)) => Some(redis),
            _ => None,
        }
    }

    fn redis_target<'s>(&self, step: &'s Step) -> Result<&'s str, BackendError> {
        step.target.as_deref().ok_or_else(|| {
            BackendError::Config(format!("`{}` has no redis target", step.action.name()))
        })
    }

    async fn capture_inner(
        &self,
        step: &Step,
        ctx: &RunContext<'_>,
    ) -> Result<Option<Captured>, BackendError> {
        Ok(match &step.action {
            Action::DockerRecreate(p) => {
                let docker = self.docker(step, ctx).await?;
                let names = docker
                    .matching_names(&selection(p.name.as_ref(), &p.labels, p.state, ctx)?)
                    .await?;
                let mut stopped = Vec::new();
                for name in &names {
                    if !docker.is_running(name).await? {
                        stopped.push(name.clone());
                    }
                }
                Some(Captured::Recreated {
                    containers: docker.park_plan(&names).await?,
                    stopped,
                })
            }
            Action::DockerStop(p) => {
                let docker = self.docker(step, ctx).await?;
                let mut sel = selection(p.name.as_ref(), &p.labels, p.state, ctx)?;
                sel.state = Some("running".into());
                Some(Captured::Changed {
                    names: docker.matching_names(&sel).await?,
                })
            }
            Action::DockerStart(p) => {
                let docker = self.docker(step, ctx).await?;
                let names = docker
                    .matching_names(&selection(p.name.as_ref(), &p.labels, p.state, ctx)?)
                    .await?;
                let mut stopped = Vec::new();
                for name in names {
                    if !docker.is_running(&name).await? {
                        stopped.push(name);
                    }
                }
                Some(Captured::Changed { names: stopped })
            }
            Action::DockerRun(p) if !p.rm => {
                let name = match ctx.resolver.resolve_opt(p.name.as_ref())? {
                    Some(name) => name,
                    None => format!(
                        "redis-move-{}-{}",
                        step.id,
                        jiff::Timestamp::now().as_second()
                    ),
                };
                Some(Captured::Created { name })
            }
            Action::RedisReplicate(p) => {
                let (source, target) = self.pair(step, &p.source.value, ctx).await?;
                let (source, target) = replication::capture(&source, &target).await?;
                Some(Captured::Replication { source, target })
            }
            Action::RedisPromote(p) => {
                let (source, target) = self.pair(step, &p.source.value, ctx).await?;
                let (source, target) = replication::capture(&source, &target).await?;
                Some(Captured::Replication { source, target })
            }
            Action::RedisCopy(_) => Some(Captured::Copy {
                ledger: format!("copy-{}.ledger", step.id),
            }),
            Action::RedisConfigSet(p) => {
                let redis = self
                    .connections
                    .redis(self.redis_target(step)?, &ctx.resolver)
                    .await?;
                let previous = redis.config_get(&p.parameter).await?.as_text();
                Some(Captured::ConfigValue {
                    parameter: p.parameter.clone(),
                    previous,
                })
            }
            _ => None,
        })
    }

    async fn perform_inner(
        &self,
        step: &Step,
        captured: Option<&Captured>,
        ctx: &RunContext<'_>,
    ) -> Result<Value, BackendError> {
        let r = &ctx.resolver;
        match &step.action {
            action
                if action.params().effect() == Effect::ReadOnly
                    && !matches!(
                        action,
                        Action::DockerRun(_)
                            | Action::Shell(_)
                            | Action::DockerExec(_)
                            | Action::RedisCommand(_)
                            | Action::RedisVerify(_)
                    ) =>
            {
                let probe_ctx = ProbeContext {
                    connections: &self.connections,
                    resolver: super::resolve::Resolver {
                        secrets: r.secrets,
                        steps: r.steps,
                    },
                    redactor: ctx.redactor,
                    run_started: ctx.run_started,
                };
                probe(action, step.target.as_deref(), step.timeout, &probe_ctx).await
            }
            Action::Wait(w) => {
                let total = w.duration.0;
                let end = tokio::time::Instant::now() + total;
                loop {
                    let left = end.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Ok(Value::Null);
                    }
                    ctx.progress(
                        &step.id,
                        format!("waiting {}", crate::runbook::units::format_duration(total)),
                        Some(left),
                    );
                    tokio::time::sleep(left.min(Duration::from_secs(1))).await;
                }
            }
            Action::DockerStop(p) => {
                let docker = self.docker(step, ctx).await?;
                let names = match captured {
                    Some(Captured::Changed { names }) => names.clone(),
                    _ => {
                        docker
                            .matching_names(&selection(p.name.as_ref(), &p.labels, p.state, ctx)?)
                            .await?
                    }
                };
                docker.stop(&names, p.timeout.map(|t| t.0)).await?;
                Ok(changed_value(names))
            }
            Action::DockerStart(p) => {
                let docker = self.docker(step, ctx).await?;
                let names = docker
                    .matching_names(&selection(p.name.as_ref(), &p.labels, p.state, ctx)?)
                    .await?;
                docker.start(&names).await?;
                Ok(changed_value(names))
            }
            Action::DockerRestart(p) => {
                let docker = self.docker(step, ctx).await?;
                let names = docker
                    .matching_names(&selection(p.name.as_ref(), &p.labels, p.state, ctx)?)
                    .await?;
                docker.restart(&names, p.timeout.map(|t| t.0)).await?;
                Ok(changed_value(names))
            }
            Action::DockerRecreate(p) => {
                let docker = self.docker(step, ctx).await?;
                let env = r.resolve_map(&p.env)?;
                let image = r.resolve_opt(p.image.as_ref())?;
                let plan = recreated(captured);
                if plan.is_empty() {
                    return Err(BackendError::Command("no container matches".into()));
                }
                let changed = docker
                    .recreate_all(&plan, &env, image.as_deref(), p.timeout.map(|t| t.0))
                    .await?;
                Ok(changed_value(changed))
            }
            Action::DockerRemove(p) => {
                let docker = self.docker(step, ctx).await?;
                let names = docker
                    .matching_names(&selection(p.name.as_ref(), &p.labels, p.state, ctx)?)
                    .await?;
                docker.remove(&names, p.force).await?;
                Ok(changed_value(names))
            }
            Action::DockerRemoveVolume(p) => {
                let docker = self.docker(step, ctx).await?;
                docker.remove_volume(&r.resolve(&p.name)?, p.force).await?;
                Ok(Value::Null)
            }
            Action::DockerExec(p) => {
                let docker = self.docker(step, ctx).await?;
                let env: Vec<String> = r
                    .resolve_map(&p.env)?
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let output = docker
                    .exec(
                        &r.resolve(&p.container)?,
                        &r.resolve_all(&p.cmd)?,
                        &env,
                        p.user.as_deref(),
                        p.workdir.as_deref(),
                    )
                    .await?;
                Ok(command_value(output, ctx.redactor))
            }
            Action::DockerRun(p) => {
                let docker = self.docker(step, ctx).await?;
                let name = match captured {
                    Some(Captured::Created { name }) => name.clone(),
                    _ => format!(
                        "redis-move-{}-{}",
                        step.id,
                        jiff::Timestamp::now().as_millisecond()
                    ),
                };
                if !p.rm
                    && docker
                        .matching_names(&Selection {
                            name: Some(
                                compile_regex(&format!("^{}$", regex::escape(&name)))
                                    .map_err(BackendError::Config)?,
                            ),
                            ..Default::default()
                        })
                        .await?
                        .len()
                        == 1
                {
                    // Created by an earlier, interrupted attempt: make sure it runs.
                    docker.start(std::slice::from_ref(&name)).await?;
                } else {
                    let spec = RunSpec {
                        name: name.clone(),
                        image: r.resolve(&p.image)?,
                        cmd: r.resolve_all(&p.cmd)?,
                        env: r
                            .resolve_map(&p.env)?
                            .into_iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect(),
                        volumes: r.resolve_all(&p.volumes)?,
                        ports: p.ports.clone(),
                        restart: p.restart.map(|x| x.to_string()),
                        healthcheck: match &p.healthcheck {
                            Some(h) => Some(HealthSpec {
                                test: r.resolve_all(&h.test)?,
                                interval: h.interval.map(|d| d.0),
                                timeout: h.timeout.map(|d| d.0),
                                retries: h.retries,
                                start_period: h.start_period.map(|d| d.0),
                            }),
                            None => None,
                        },
                        networks: p.networks.clone(),
                        labels: p
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<HashMap<_, _>>(),
                        files: p
                            .files
                            .iter()
                            .map(|(path, content)| Ok((path.clone(), r.resolve(content)?)))
                            .collect::<Result<_, BackendError>>()?,
                        pull: format!("{:?}", p.pull).to_lowercase(),
                    };
                    if let Some(output) = docker.run(&spec, p.rm).await? {
                        return Ok(command_value(output, ctx.redactor));
                    }
                }
                let containers = docker
                    .containers(
                        &Selection {
                            name: Some(
                                compile_regex(&format!("^{}$", regex::escape(&name)))
                                    .map_err(BackendError::Config)?,
                            ),
                            ..Default::default()
                        },
                        ctx.redactor,
                    )
                    .await?;
                Ok(match containers {
                    Value::List(mut items) if !items.is_empty() => items.remove(0),
                    other => other,
                })
            }
            Action::RedisCommand(p) => {
                let redis = self.connections.redis(self.redis_target(step)?, r).await?;
                redis.command(&r.resolve_all(&p.args)?).await
            }
            Action::RedisConfigSet(p) => {
                let redis = self.connections.redis(self.redis_target(step)?, r).await?;
                redis
                    .config_set(&p.parameter, &r.resolve(&p.value)?)
                    .await?;
                redis.config_get(&p.parameter).await
            }
            Action::RedisReplicate(p) => {
                let (source, target) = self.pair(step, &p.source.value, ctx).await?;
                let address = match r.resolve_opt(p.source_address.as_ref())? {
                    Some(address) => address,
                    None => source.address.clone().ok_or_else(|| BackendError::Config("give `source_address` (host:port of the source as the target reaches it)".into()))?,
                };
                let (source_settings, target_settings) = match captured {
                    Some(Captured::Replication { source, target }) => {
                        (source.clone(), target.clone())
                    }
                    _ => replication::capture(&source, &target).await?,
                };
                let timeout = p.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(3600));
                let progress = |message: String, remaining: Option<Duration>| {
                    ctx.progress(&step.id, message, remaining)
                };
                replication::replicate(
                    &source,
                    &target,
                    &address,
                    p.tune,
                    (&source_settings, &target_settings),
                    timeout,
                    &progress,
                )
                .await
            }
            Action::RedisPromote(p) => {
                let (source, target) = self.pair(step, &p.source.value, ctx).await?;
                let reverse = match (p.reverse, r.resolve_opt(p.target_address.as_ref())?) {
                    (false, _) => None,
                    (true, Some(address)) => Some(address),
                    (true, None) => Some(target.address.clone().ok_or_else(|| BackendError::Config("give `target_address` (host:port of the target as the source reaches it)".into()))?),
                };
                let timeout = p.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(300));
                let progress = |message: String, remaining: Option<Duration>| {
                    ctx.progress(&step.id, message, remaining)
                };
                replication::promote(&source, &target, reverse.as_deref(), timeout, &progress).await
            }
            Action::RedisCopy(p) => {
                let plan = copy::CopyPlan {
                    pattern: match &p.pattern {
                        Some(pattern) => r.resolve(pattern)?,
                        None => "*".into(),
                    },
                    key_type: p.key_type.map(|t| t.to_string()),
                    rename: copy::KeyRename::of(p.rename.as_ref())?,
                    existing: p.existing,
                    batch: p.batch.map_or(copy::DEFAULT_BATCH, |b| b.max(1) as usize),
                    chunk_above: match p.chunk_above {
                        Some(size) if size.0 == 0 => None,
                        Some(size) => Some(size.0),
                        None => Some(copy::DEFAULT_CHUNK_ABOVE),
                    },
                };
                let connections = p
                    .connections
                    .map_or(copy::DEFAULT_CONNECTIONS, |c| c.clamp(1, 64) as usize);
                let target = self.redis_target(step)?;
                let sources = self
                    .connections
                    .redis_pool(&p.source.value, r, connections)
                    .await?;
                let targets = self.connections.redis_pool(target, r, connections).await?;
                let progress = |p: &copy::CopyProgress| ctx.progress(&step.id, p.line(), None);
                copy::copy(
                    &sources,
                    &targets,
                    &plan,
                    &ledger_path(step, captured, ctx),
                    ctx.cancel,
                    &progress,
                )
                .await
            }
            Action::RedisVerify(p) => {
                let (source, target) = self.pair(step, &p.source.value, ctx).await?;
                let plan = verify::VerifyPlan::of(p, r)?;
                let progress = |checked: u64, total: u64| {
                    ctx.progress(&step.id, format!("{checked} of {total} keys checked"), None)
                };
                verify::verify(&source, &target, &plan, &progress).await
            }
            Action::RedisDelete(p) => {
                let target = self.connections.redis(self.redis_target(step)?, r).await?;
                let progress =
                    |deleted: u64| ctx.progress(&step.id, format!("{deleted} keys deleted"), None);
                cleanup::delete(
                    &target,
                    &r.resolve(&p.pattern)?,
                    p.key_type.map(|t| t.to_string()).as_deref(),
                    p.rate,
                    ctx.cancel,
                    &progress,
                )
                .await
            }
            Action::Shell(p) => {
                let env = r.resolve_map(&p.env)?;
                let cwd = match r.resolve_opt(p.cwd.as_ref())? {
                    Some(dir) => self.connections.base_dir().join(dir),
                    None => self.connections.base_dir().to_path_buf(),
                };
                let cwd = if cwd.as_os_str().is_empty() {
                    std::path::PathBuf::from(".")
                } else {
                    cwd
                };
                let limit = step.timeout.unwrap_or(super::step::DEFAULT_STEP_TIMEOUT);
                let shell_name = p.shell.clone().unwrap_or_else(|| "sh".into());
                let script = p.script.as_deref().map(|s| (shell_name.as_str(), s));
                let output =
                    shell::run(&r.resolve_all(&p.argv)?, script, &env, &cwd, limit).await?;
                Ok(command_value(output, ctx.redactor))
            }
            Action::Http(p) => {
                let request = net::HttpRequest {
                    method: format!("{:?}", p.method).to_uppercase(),
                    url: r.resolve(&p.url)?,
                    headers: r.resolve_map(&p.headers)?,
                    body: r.resolve_opt(p.body.as_ref())?,
                    status: p.status,
                    ca: None,
                    insecure: p.tls.as_ref().is_some_and(|t| t.insecure),
                    timeout: step.timeout.unwrap_or(Duration::from_secs(30)),
                };
                net::http(&request).await
            }
            other => Err(BackendError::Config(format!(
                "`{}` is not supported by this version of redis-move",
                other.name()
            ))),
        }
    }

    async fn undo_inner(
        &self,
        step: &Step,
        captured: Option<&Captured>,
        ctx: &RunContext<'_>,
    ) -> Result<Value, BackendError> {
        match &step.action {
            Action::DockerRecreate(p) => {
                let docker = self.docker(step, ctx).await?;
                let restored = docker
                    .restore_all(
                        &recreated(captured),
                        &stopped_before(captured),
                        p.timeout.map(|t| t.0),
                    )
                    .await?;
                Ok(changed_value(restored))
            }
            Action::DockerStop(_) => {
                let docker = self.docker(step, ctx).await?;
                let names = changed_names(captured);
                docker.start(&names).await?;
                Ok(changed_value(names))
            }
            Action::DockerStart(_) => {
                let docker = self.docker(step, ctx).await?;
                let names = changed_names(captured);
                docker.stop(&names, None).await?;
                Ok(changed_value(names))
            }
            Action::DockerRun(_) => {
                let docker = self.docker(step, ctx).await?;
                let Some(Captured::Created { name }) = captured else {
                    return Ok(Value::Null);
                };
                docker.remove(std::slice::from_ref(name), true).await?;
                Ok(changed_value(vec![name.clone()]))
            }
            Action::RedisConfigSet(_) => {
                let Some(Captured::ConfigValue {
                    parameter,
                    previous,
                }) = captured
                else {
                    return Err(BackendError::Unexpected(
                        "the previous value was not captured".into(),
                    ));
                };
                let redis = self
                    .connections
                    .redis(self.redis_target(step)?, &ctx.resolver)
                    .await?;
                redis
                    .command(&[
                        "CONFIG".into(),
                        "SET".into(),
                        parameter.clone(),
                        previous.clone(),
                    ])
                    .await
            }
            Action::RedisReplicate(p) => {
                let Some(Captured::Replication { source, target }) = captured else {
                    return Ok(Value::Null);
                };
                let source_backend = self.reachable(&p.source.value, ctx).await;
                let target_backend = match step.target.as_deref() {
                    Some(t) => self.reachable(t, ctx).await,
                    None => None,
                };
                let note = replication::undo_replicate(
                    source_backend.as_ref(),
                    target_backend.as_ref(),
                    source,
                    target,
                )
                .await?;
                Ok(Value::Text(note))
            }
            Action::RedisPromote(p) => {
                let source = self
                    .connections
                    .redis(&p.source.value, &ctx.resolver)
                    .await?;
                let target = match step.target.as_deref() {
                    Some(t) => self.reachable(t, ctx).await,
                    None => None,
                };
                let source_address = match ctx.resolver.resolve_opt(p.source_address.as_ref())? {
                    Some(address) => Some(address),
                    None => source.address.clone(),
                };
                let settings = match captured {
                    Some(Captured::Replication { source, .. }) => source.clone(),
                    _ => Vec::new(),
                };
                let timeout = p.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(60));
                let progress = |message: String, remaining: Option<Duration>| {
                    ctx.progress(&step.id, message, remaining)
                };
                let note = replication::undo_promote(
                    &source,
                    target.as_ref(),
                    source_address.as_deref(),
                    p.reverse,
                    &settings,
                    timeout,
                    &progress,
                )
                .await?;
                Ok(Value::Text(note))
            }
            Action::RedisCopy(p) => {
                let target = self
                    .connections
                    .redis(self.redis_target(step)?, &ctx.resolver)
                    .await?;
                let source = self.reachable(&p.source.value, ctx).await;
                copy::undo(&target, source.as_ref(), &ledger_path(step, captured, ctx)).await
            }
            other => Err(BackendError::Config(format!(
                "`{}` has no built-in rollback",
                other.name()
            ))),
        }
    }
}

impl ActionRunner for LiveRunner {
    fn discard<'a>(
        &'a self,
        step: &'a Step,
        captured: &'a Captured,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            if let (Action::DockerRecreate(_), Captured::Recreated { containers, .. }) =
                (&step.action, captured)
            {
                let docker = self.docker(step, ctx).await?;
                let parked: Vec<String> = containers
                    .iter()
                    .map(|(_, parked)| parked.clone())
                    .collect();
                docker.remove(&parked, true).await?;
            }
            Ok(())
        })
    }

    fn capture<'a>(
        &'a self,
        step: &'a Step,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Option<Captured>, BackendError>> {
        Box::pin(self.capture_inner(step, ctx))
    }

    fn perform<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, BackendError>> {
        Box::pin(self.perform_inner(step, captured, ctx))
    }

    fn undo<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, BackendError>> {
        Box::pin(self.undo_inner(step, captured, ctx))
    }

    fn check_target<'a>(
        &'a self,
        target: &'a str,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let check = async {
                match self.connections.kind(target) {
                    Some(crate::runbook::action::TargetKind::Redis) => self
                        .connections
                        .redis(target, &ctx.resolver)
                        .await?
                        .ping()
                        .await
                        .map(|_| ()),
                    Some(crate::runbook::action::TargetKind::Docker) => {
                        self.connections
                            .docker(Some(target), &ctx.resolver)
                            .await?
                            .ping()
                            .await
                    }
                    None => Err(BackendError::Config(format!("unknown target `{target}`"))),
                }
            };
            tokio::time::timeout(Duration::from_secs(10), check)
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::Timeout(format!(
                        "`{target}` did not answer within 10s"
                    )))
                })
        })
    }
}
