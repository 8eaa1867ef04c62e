//! The `docker.*` actions: containers selected by name regex, labels and state; stop,
//! start, restart, recreate (the original parked until the run succeeds), remove, run,
//! exec; and the read-only ones (containers, logs, images, volumes, wait_healthy).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::act::{Act, command_value};
use super::captured::Captured;
use super::probe::ProbeContext;
use super::resolve::Resolver;
use super::runner::ActionError;
use crate::backend::docker::Selection;
use crate::backend::docker::change::{HealthSpec, RunSpec};
use crate::runbook::action::{Action, ContainerState, LogSince};
use crate::runbook::expect::compile_regex;
use crate::runbook::template::Template;
use crate::value::Value;

fn changed_value(names: Vec<String>) -> Value {
    let mut fields = BTreeMap::new();
    fields.insert("count".into(), Value::Number(names.len() as f64));
    fields.insert(
        "containers".into(),
        Value::List(names.into_iter().map(Value::Text).collect()),
    );
    Value::Object(fields)
}

fn regex(
    template: Option<&Template>,
    resolver: &Resolver<'_>,
) -> Result<Option<regex::Regex>, ActionError> {
    match resolver.resolve_opt(template)? {
        Some(text) => Ok(Some(compile_regex(&text).map_err(ActionError::config)?)),
        None => Ok(None),
    }
}

/// The containers a step selects.
fn selection(
    name: Option<&Template>,
    labels: &indexmap::IndexMap<String, String>,
    state: Option<ContainerState>,
    resolver: &Resolver<'_>,
) -> Result<Selection, ActionError> {
    Ok(Selection {
        name: regex(name, resolver)?,
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        state: state.map(|s| s.to_string()),
    })
}

/// The containers a mutating step selects; refused when, once its templates are
/// resolved, it would take every container of the engine (no labels, and a `name` that
/// is empty or matches every name) and the step does not say `all: true`.
fn guarded_selection(
    name: Option<&Template>,
    labels: &indexmap::IndexMap<String, String>,
    state: Option<ContainerState>,
    all: bool,
    resolver: &Resolver<'_>,
) -> Result<Selection, ActionError> {
    let selection = selection(name, labels, state, resolver)?;
    let every = selection.labels.is_empty()
        && selection
            .name
            .as_ref()
            .is_none_or(crate::runbook::action::matches_every_name);
    if every && !all {
        let shown = match &selection.name {
            Some(regex) => format!("`name` resolved to `{}`", regex.as_str()),
            None => "no `name` and no `labels`".to_owned(),
        };
        return Err(ActionError::config(format!(
            "refused: the selection would take every container of the engine ({shown}); check the vars, or say `all: true` if that is meant"
        )));
    }
    Ok(selection)
}

/// The guarded selection of a mutating Docker action (`None` for other actions).
fn selection_of(
    action: &Action,
    resolver: &Resolver<'_>,
) -> Option<Result<Selection, ActionError>> {
    let (name, labels, state, all) = match action {
        Action::DockerStop(p) => (p.name.as_ref(), &p.labels, p.state, p.all),
        Action::DockerStart(p) => (p.name.as_ref(), &p.labels, p.state, p.all),
        Action::DockerRestart(p) => (p.name.as_ref(), &p.labels, p.state, p.all),
        Action::DockerRecreate(p) => (p.name.as_ref(), &p.labels, p.state, p.all),
        Action::DockerRemove(p) => (p.name.as_ref(), &p.labels, p.state, false),
        _ => return None,
    };
    Some(guarded_selection(name, labels, state, all, resolver))
}

/// The guarded selection of the step's mutating Docker action.
fn selected(act: &Act<'_>) -> Result<Selection, ActionError> {
    selection_of(&act.step.action, act.resolver())
        .unwrap_or_else(|| Err(ActionError::config("not a container selection")))
}

/// Exactly the container called `name`.
fn exactly(name: &str) -> Result<Selection, ActionError> {
    Ok(Selection {
        name: Some(
            compile_regex(&format!("^{}$", regex::escape(name))).map_err(ActionError::config)?,
        ),
        ..Default::default()
    })
}

/// The (name, parked name) pairs a recreate captured.
fn recreated(captured: Option<&Captured>) -> Vec<(String, String)> {
    match captured {
        Some(Captured::Recreated { containers, .. }) => containers.clone(),
        _ => Vec::new(),
    }
}

/// Containers a recreate found stopped (they stay stopped when put back).
fn stopped_before(captured: Option<&Captured>) -> Vec<String> {
    match captured {
        Some(Captured::Recreated { stopped, .. }) => stopped.clone(),
        _ => Vec::new(),
    }
}

fn changed_names(captured: Option<&Captured>) -> Vec<String> {
    match captured {
        Some(Captured::Changed { names }) => names.clone(),
        _ => Vec::new(),
    }
}

/// What a mutating Docker action captures before acting.
pub async fn capture(act: &Act<'_>) -> Result<Option<Captured>, ActionError> {
    let r = act.resolver();
    Ok(match &act.step.action {
        Action::DockerRecreate(_) => {
            let sel = selected(act)?;
            let docker = act.docker().await?;
            let names = docker.matching_names(&sel).await?;
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
        Action::DockerStop(_) => {
            let mut sel = selected(act)?;
            let docker = act.docker().await?;
            sel.state = Some("running".into());
            Some(Captured::Changed {
                names: docker.matching_names(&sel).await?,
            })
        }
        Action::DockerStart(_) => {
            let sel = selected(act)?;
            let docker = act.docker().await?;
            let names = docker.matching_names(&sel).await?;
            let mut stopped = Vec::new();
            for name in names {
                if !docker.is_running(&name).await? {
                    stopped.push(name);
                }
            }
            Some(Captured::Changed { names: stopped })
        }
        Action::DockerRun(p) if !p.rm => {
            let name = match r.resolve_opt(p.name.as_ref())? {
                Some(name) => name,
                None => format!(
                    "redis-move-{}-{}",
                    act.step.id,
                    jiff::Timestamp::now().as_second()
                ),
            };
            Some(Captured::Created { name })
        }
        _ => None,
    })
}

/// Performs a mutating Docker action (and `docker.exec`, `docker.run`).
pub async fn perform(act: &Act<'_>) -> Result<Value, ActionError> {
    let r = act.resolver();
    let docker = act.docker().await?;
    match &act.step.action {
        Action::DockerStop(p) => {
            let names = match act.captured {
                Some(Captured::Changed { names }) => names.clone(),
                _ => docker.matching_names(&selected(act)?).await?,
            };
            docker.stop(&names, p.timeout.map(|t| t.0)).await?;
            Ok(changed_value(names))
        }
        Action::DockerStart(_) => {
            let names = docker.matching_names(&selected(act)?).await?;
            docker.start(&names).await?;
            Ok(changed_value(names))
        }
        Action::DockerRestart(p) => {
            let names = docker.matching_names(&selected(act)?).await?;
            docker.restart(&names, p.timeout.map(|t| t.0)).await?;
            Ok(changed_value(names))
        }
        Action::DockerRecreate(p) => {
            let env = r.resolve_map(&p.env)?;
            let image = r.resolve_opt(p.image.as_ref())?;
            let plan = recreated(act.captured);
            if plan.is_empty() {
                return Err(
                    crate::backend::BackendError::Command("no container matches".into()).into(),
                );
            }
            let changed = docker
                .recreate_all(&plan, &env, image.as_deref(), p.timeout.map(|t| t.0))
                .await?;
            Ok(changed_value(changed))
        }
        Action::DockerRemove(p) => {
            let names = docker.matching_names(&selected(act)?).await?;
            docker.remove(&names, p.force).await?;
            Ok(changed_value(names))
        }
        Action::DockerRemoveVolume(p) => {
            docker.remove_volume(&r.resolve(&p.name)?, p.force).await?;
            Ok(Value::Null)
        }
        Action::DockerExec(p) => {
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
            Ok(command_value(output, act.ctx.redactor))
        }
        Action::DockerRun(p) => {
            let name = match act.captured {
                Some(Captured::Created { name }) => name.clone(),
                _ => format!(
                    "redis-move-{}-{}",
                    act.step.id,
                    jiff::Timestamp::now().as_millisecond()
                ),
            };
            if !p.rm && docker.matching_names(&exactly(&name)?).await?.len() == 1 {
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
                        .collect::<Result<_, ActionError>>()?,
                    pull: format!("{:?}", p.pull).to_lowercase(),
                };
                if let Some(output) = docker.run(&spec, p.rm).await? {
                    return Ok(command_value(output, act.ctx.redactor));
                }
            }
            let containers = docker
                .containers(&exactly(&name)?, act.ctx.redactor)
                .await?;
            Ok(match containers {
                Value::List(mut items) if !items.is_empty() => items.remove(0),
                other => other,
            })
        }
        other => Err(ActionError::config(format!(
            "`{}` is not a mutating docker action",
            other.name()
        ))),
    }
}

/// Undoes a Docker action from what it captured.
pub async fn undo(act: &Act<'_>) -> Result<Value, ActionError> {
    let docker = act.docker().await?;
    match &act.step.action {
        Action::DockerRecreate(p) => {
            let restored = docker
                .restore_all(
                    &recreated(act.captured),
                    &stopped_before(act.captured),
                    p.timeout.map(|t| t.0),
                )
                .await?;
            Ok(changed_value(restored))
        }
        Action::DockerStop(_) => {
            let names = changed_names(act.captured);
            docker.start(&names).await?;
            Ok(changed_value(names))
        }
        Action::DockerStart(_) => {
            let names = changed_names(act.captured);
            docker.stop(&names, None).await?;
            Ok(changed_value(names))
        }
        Action::DockerRun(_) => {
            let Some(Captured::Created { name }) = act.captured else {
                return Ok(Value::Null);
            };
            docker.remove(std::slice::from_ref(name), true).await?;
            Ok(changed_value(vec![name.clone()]))
        }
        other => Err(ActionError::config(format!(
            "`{}` has no built-in rollback",
            other.name()
        ))),
    }
}

/// Removes the parked originals of a recreate, once the run succeeded.
pub async fn discard(act: &Act<'_>) -> Result<(), ActionError> {
    if let (Action::DockerRecreate(_), Some(Captured::Recreated { containers, .. })) =
        (&act.step.action, act.captured)
    {
        let parked: Vec<String> = containers
            .iter()
            .map(|(_, parked)| parked.clone())
            .collect();
        act.docker().await?.remove(&parked, true).await?;
    }
    Ok(())
}

/// The containers a mutating Docker step would act on now (`plan --check`); `None` for
/// other steps. Nothing is changed.
pub async fn would_change(
    action: &Action,
    target: Option<&str>,
    ctx: &ProbeContext<'_>,
) -> Option<Result<Vec<String>, ActionError>> {
    let r = &ctx.resolver;
    let selected = selection_of(action, r)?;
    Some(
        async {
            let selection = selected?;
            let docker = ctx.connections.docker(target, r).await?;
            Ok(docker.matching_names(&selection).await?)
        }
        .await,
    )
}

/// Runs a read-only Docker action.
pub async fn probe(
    action: &Action,
    target: Option<&str>,
    limit: Duration,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    let r = &ctx.resolver;
    let docker = ctx.connections.docker(target, r).await?;
    Ok(match action {
        Action::DockerContainers(p) => {
            docker
                .containers(
                    &selection(p.name.as_ref(), &p.labels, p.state, r)?,
                    ctx.redactor,
                )
                .await?
        }
        Action::DockerLogs(p) => {
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
                .await?
        }
        Action::DockerImages(p) => docker.images(regex(p.name.as_ref(), r)?.as_ref()).await?,
        Action::DockerVolumes(p) => docker.volumes(regex(p.name.as_ref(), r)?.as_ref()).await?,
        Action::DockerWaitHealthy(p) => {
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
                .await?
        }
        other => {
            return Err(ActionError::config(format!(
                "`{}` is not a read-only docker action",
                other.name()
            )));
        }
    })
}
