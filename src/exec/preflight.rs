//! `plan --check`: run the plan's read-only probes against the live systems, in plan
//! order, and attach what they measured to the plan. Nothing is changed: only steps
//! labelled `verified` run.

use std::collections::HashMap;

use crate::actions::ActionError;
use crate::actions::compat;
use crate::actions::connections::Connections;
use crate::actions::probe::{ProbeContext, probe};
use crate::actions::resolve::{ResolveError, Resolver, Secrets};
use crate::plan::{LiveCheck, LiveStatus, Plan, PlanStep};
use crate::runbook::action::{Action, Verification};
use crate::runbook::model::{Runbook, Step};
use crate::value::Value;

/// Runs every verified step of `plan` and records its outcome in the plan.
pub async fn check(runbook: &Runbook, plan: &mut Plan) {
    crate::backend::install_crypto_provider();
    let base_dir = runbook
        .source
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let secrets = Secrets::load(&runbook.secrets, &base_dir);
    let redactor = secrets.redactor_for(runbook);
    let connections = Connections::new(runbook);
    let mut values: HashMap<String, Value> = HashMap::new();
    let started = jiff::Timestamp::now();
    // What each Redis target is and allows, as it answers now.
    for target in &mut plan.targets {
        if target.kind != crate::runbook::action::TargetKind::Redis {
            continue;
        }
        let resolver = Resolver {
            secrets: &secrets,
            steps: &values,
        };
        let sentinel = matches!(
            runbook.targets.get(&target.name).map(|t| &t.spec),
            Some(crate::runbook::spec::TargetSpec::Redis(r)) if r.sentinel.is_some()
        );
        let live = match connections.redis(&target.name, &resolver).await {
            Ok(redis) => match compat::facts(&redis).await {
                Ok(facts) => compat::capabilities(&facts, sentinel),
                Err(e) => format!("cannot tell: {e}"),
            },
            Err(e) => format!("does not answer: {e}"),
        };
        target.live = Some(redactor.redact(&live));
    }
    let mut counts = [0usize; 4];
    let mut simulated_before = 0usize;
    for phase in &mut plan.phases {
        for planned in &mut phase.steps {
            let Some(step) = runbook.step(&planned.id) else {
                continue;
            };
            let ctx = ProbeContext {
                connections: &connections,
                resolver: Resolver {
                    secrets: &secrets,
                    steps: &values,
                },
                redactor: &redactor,
                run_started: started,
            };
            if planned.verification != Verification::Verified {
                if planned.verification == Verification::Simulated && planned.action != "wait" {
                    simulated_before += 1;
                }
                if let Some(check) = estimate(step, &ctx).await {
                    // Servers that cannot do what the step needs fail the check; servers
                    // that do not answer yet (not provisioned) do not.
                    if check.status == LiveStatus::Failed {
                        counts[1] += 1;
                    }
                    attach(planned, check, &redactor);
                }
                continue;
            }
            let (check, value) = check_step(step, &ctx, simulated_before).await;
            counts[match check.status {
                LiveStatus::Passed => 0,
                LiveStatus::Failed => 1,
                LiveStatus::Error => 2,
                LiveStatus::Skipped => 3,
            }] += 1;
            if let Some(value) = value {
                values.insert(step.id.clone(), value);
            }
            attach(planned, check, &redactor);
        }
    }
    plan.summary.live = Some(counts);
}

/// For a change that is not run: how many keys a copy or a delete would touch (counted
/// now with SCAN), which containers a Docker change would act on, and whether the servers of a replicate, promote, copy or verify fit
/// it (versions, permissions, capacity). Nothing is changed.
async fn estimate(step: &Step, ctx: &ProbeContext<'_>) -> Option<LiveCheck> {
    let counted = count_keys(step, ctx).await;
    let compatible = compat::check_step(ctx.connections, step, &ctx.resolver).await;
    let mut parts = Vec::new();
    let mut status = LiveStatus::Passed;
    let mut value = None;
    match counted {
        Some(Ok((n, verb))) => {
            value = Some(format!("{n} keys"));
            parts.push(format!(
                "{verb} {n} keys (counted now with SCAN; nothing was changed)"
            ));
        }
        Some(Err(e)) => {
            status = LiveStatus::Error;
            parts.push(format!("could not count the keys: {e}"));
        }
        None => {}
    }
    match crate::actions::docker::would_change(&step.action, step.target.as_deref(), ctx).await {
        Some(Ok(names)) => {
            value = Some(format!("{} containers", names.len()));
            let shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
            parts.push(format!(
                "would act on {} containers now: {}{}",
                names.len(),
                shown.join(", "),
                if names.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
        Some(Err(e)) => {
            let text = e.to_string();
            status = if text.starts_with("refused") {
                LiveStatus::Failed
            } else {
                LiveStatus::Error
            };
            parts.push(format!("could not list the containers: {text}"));
        }
        None => {}
    }
    match compatible {
        Some(Ok((failed, line))) => {
            if failed {
                status = LiveStatus::Failed;
            }
            parts.push(line);
        }
        Some(Err(e)) => {
            if status == LiveStatus::Passed {
                status = LiveStatus::Error;
            }
            parts.push(format!("could not check the servers: {e}"));
        }
        None => {}
    }
    if parts.is_empty() {
        return None;
    }
    Some(LiveCheck {
        status,
        value,
        detail: parts.join("; "),
    })
}

/// For a copy or a delete, how many keys it would touch, counted now with SCAN.
async fn count_keys(
    step: &Step,
    ctx: &ProbeContext<'_>,
) -> Option<Result<(u64, &'static str), ActionError>> {
    let (server, pattern, key_type, verb) = match &step.action {
        Action::RedisDelete(p) => (
            step.target.as_deref()?,
            Some(&p.pattern),
            p.key_type,
            "would delete",
        ),
        Action::RedisCopy(p) => (
            p.source.value.as_str(),
            p.pattern.as_ref(),
            p.key_type,
            "would copy up to",
        ),
        _ => return None,
    };
    Some(
        async {
            let pattern = match pattern {
                Some(p) => ctx.resolver.resolve(p)?,
                None => "*".into(),
            };
            let redis = ctx.connections.redis(server, &ctx.resolver).await?;
            let n = redis
                .scan_count(&pattern, key_type.map(|t| t.to_string()).as_deref(), 1000)
                .await?;
            Ok((n, verb))
        }
        .await,
    )
}

fn attach(planned: &mut PlanStep, mut check: LiveCheck, redactor: &crate::redact::Redactor) {
    check.value = check.value.map(|v| redactor.redact(&v));
    check.detail = redactor.redact(&check.detail);
    planned.check = Some(check);
}

fn shorten(text: String) -> String {
    if text.chars().count() > 160 {
        format!("{}...", text.chars().take(157).collect::<String>())
    } else {
        text
    }
}

async fn check_step(
    step: &Step,
    ctx: &ProbeContext<'_>,
    simulated_before: usize,
) -> (LiveCheck, Option<Value>) {
    let caveat = if simulated_before > 0 {
        format!(" (this check ran without the {simulated_before} change(s) planned before it)")
    } else {
        String::new()
    };
    match probe(&step.action, step.target.as_deref(), step.timeout, ctx).await {
        Ok(value) => {
            let shown = Some(shorten(value.to_string()));
            let expectation = step.expect.as_ref().or(step.until.as_ref());
            let check = match expectation {
                None => LiveCheck {
                    status: LiveStatus::Passed,
                    value: shown,
                    detail: "no expectation".into(),
                },
                Some(expect) => {
                    let outcome = expect.check(&value, &ctx.resolver);
                    LiveCheck {
                        status: if outcome.passed {
                            LiveStatus::Passed
                        } else {
                            LiveStatus::Failed
                        },
                        value: shown,
                        detail: format!(
                            "{}{}",
                            outcome.detail,
                            if outcome.passed {
                                String::new()
                            } else {
                                caveat
                            }
                        ),
                    }
                }
            };
            (check, Some(value))
        }
        Err(ActionError::Resolve(
            e @ (ResolveError::Secret(..)
            | ResolveError::Env(_)
            | ResolveError::StepValue(_)
            | ResolveError::StepField(..)),
        )) => (
            LiveCheck {
                status: LiveStatus::Skipped,
                value: None,
                detail: e.to_string(),
            },
            None,
        ),
        Err(e) => (
            LiveCheck {
                status: LiveStatus::Error,
                value: None,
                detail: format!("{e}{caveat}"),
            },
            None,
        ),
    }
}
