//! The plan: exactly what a run will do, in the order it will do it, built from a
//! validated runbook without touching any system. `redis-move plan` (and `run
//! --dry-run`) print it; `plan --out` saves it with the runbook's SHA-256 so that a run
//! can refuse a runbook that changed after review.

pub mod diagram;
pub mod graph;
mod render;

use serde::Serialize;

use crate::runbook::action::{Action, TargetKind, Verification};
use crate::runbook::model::{Baseline, FireCondition, Phase, Runbook, Step, StepRollback, Trigger};
use crate::runbook::spec::{OnFailure, RetrySpec, TargetSpec};
use crate::runbook::units::format_duration;
use crate::runbook::vars::VarOrigin;
use graph::PhaseGraph;

pub use render::{render_json, render_text};

/// Version of the plan file format.
pub const PLAN_FORMAT: u32 = 1;

/// A dry-run plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Plan file format version.
    pub format: u32,
    /// Which runbook, exactly.
    pub runbook: PlanRunbook,
    /// Vars as resolved (secrets masked), with where each value came from.
    pub vars: Vec<PlanVar>,
    /// Targets and their endpoints (passwords masked).
    pub targets: Vec<PlanTarget>,
    /// Phases in run order.
    pub phases: Vec<PlanPhase>,
    /// Rollback triggers.
    pub triggers: Vec<PlanTrigger>,
    /// What a rollback runs.
    pub rollback: PlanRollback,
    /// Counts.
    pub summary: PlanSummary,
}

/// The runbook a plan was made from.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRunbook {
    /// Machine name.
    pub name: String,
    /// Title.
    pub title: Option<String>,
    /// The file.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// A var in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanVar {
    /// Name.
    pub name: String,
    /// Value, secrets masked.
    pub value: String,
    /// `runbook`, `--var` or `vars file PATH`.
    pub origin: String,
}

/// A target in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanTarget {
    /// Name.
    pub name: String,
    /// `docker` or `redis`.
    pub kind: TargetKind,
    /// Endpoint, passwords masked.
    pub endpoint: String,
    /// With `plan --check`, for a Redis target: what it is and what it allows, as it
    /// answered (or why it did not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

/// A phase in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanPhase {
    /// Id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// `sequential`, `parallel` or `parallel, at most N at once`.
    pub mode: String,
    /// What a failing step does.
    pub on_failure: OnFailure,
    /// Steps in run order.
    pub steps: Vec<PlanStep>,
    /// The phase's own rollback steps.
    pub rollback: Vec<PlanStep>,
}

/// A step in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanStep {
    /// Id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Action name (`docker.recreate`).
    pub action: &'static str,
    /// The operation, exactly (`docker vps01: recreate containers matching ...`).
    pub operation: String,
    /// How a dry run vouches for it.
    pub verification: Verification,
    /// The check on its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Polling condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Retry policy, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Time limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Steps it waits for (besides the previous one in a sequential phase).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Skipped when this probe says the effect is in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_if: Option<String>,
    /// How it is undone.
    pub rollback: PlanStepRollback,
    /// What its failure does.
    pub on_failure: OnFailure,
    /// Shown when it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The result of running it against the live systems (`plan --check`, verified
    /// steps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<LiveCheck>,
}

/// What `plan --check` found for one step.
#[derive(Clone, Debug, Serialize)]
pub struct LiveCheck {
    /// The outcome.
    pub status: LiveStatus,
    /// The measured value (secrets masked), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why it passed or failed, or why it was not run.
    pub detail: String,
}

/// The outcome of a live check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveStatus {
    /// The probe ran and its expectation holds (or it has none).
    Passed,
    /// The probe ran and its expectation does not hold.
    Failed,
    /// The probe could not run (unreachable, timeout, refused).
    Error,
    /// Not run (a secret or an earlier value is missing).
    Skipped,
}

impl std::fmt::Display for LiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LiveStatus::Passed => "passed",
            LiveStatus::Failed => "FAILED",
            LiveStatus::Error => "ERROR",
            LiveStatus::Skipped => "skipped",
        })
    }
}

/// How a step is undone, in the plan.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlanStepRollback {
    /// It changes nothing.
    NotNeeded,
    /// Built in.
    Builtin {
        /// What the built-in inverse does.
        operation: String,
    },
    /// Explicit steps.
    Steps {
        /// The steps.
        steps: Vec<PlanStep>,
    },
    /// `rollback: none`.
    Declined,
    /// Nothing undoes it.
    Missing,
}

/// A trigger in the plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanTrigger {
    /// Id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// When it is watched, in words.
    pub window: String,
    /// The probe operation.
    pub probe: String,
    /// What healthy looks like, if the probe says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<String>,
    /// Probe interval.
    pub every: String,
    /// Probe time limit.
    pub timeout: String,
    /// The fire condition, in words.
    pub condition: String,
    /// `rollback` or `pause`.
    pub action: String,
    /// `enforce` or `shadow`.
    pub mode: String,
    /// What no data and probe errors mean.
    pub on_no_data: String,
    /// What a probe error means.
    pub on_error: String,
}

/// What a rollback runs, in order.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRollback {
    /// When a rollback starts.
    pub when: Vec<String>,
    /// Mutating steps with their undo, in the reverse of declared order (at run time:
    /// the reverse of completion order, only for steps that ran).
    pub undo: Vec<PlanUndo>,
    /// Runbook-level steps run last.
    pub steps: Vec<PlanStep>,
}

/// One entry of the rollback plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlanUndo {
    /// The step being undone (or `phase PHASE` for a phase's own rollback).
    pub step: String,
    /// How.
    pub rollback: PlanStepRollback,
}

/// Counts of the plan.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlanSummary {
    /// Phases.
    pub phases: usize,
    /// Steps (gates included).
    pub steps: usize,
    /// Read-only probes.
    pub verified: usize,
    /// Changes described, not performed.
    pub simulated: usize,
    /// Outside redis-move's view.
    pub unverifiable: usize,
    /// Gates.
    pub gates: usize,
    /// Triggers.
    pub triggers: usize,
    /// Mutating steps nothing undoes.
    pub without_rollback: usize,
    /// `plan --check` results: passed, failed, error, skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<[usize; 4]>,
}

/// Builds the plan of a validated runbook.
pub fn build(runbook: &Runbook) -> Plan {
    let mut summary = PlanSummary {
        phases: runbook.phases.len(),
        triggers: runbook.triggers.len(),
        ..PlanSummary::default()
    };
    let phases: Vec<PlanPhase> = runbook
        .phases
        .iter()
        .map(|phase| plan_phase(phase, &mut summary))
        .collect();
    Plan {
        format: PLAN_FORMAT,
        runbook: PlanRunbook {
            name: runbook.name.clone(),
            title: runbook.title.clone(),
            path: runbook.source.name(),
            sha256: runbook.sha256.clone(),
        },
        vars: runbook
            .vars
            .iter()
            .map(|(name, var)| PlanVar {
                name: name.clone(),
                value: var.value.display(),
                origin: match &var.origin {
                    VarOrigin::Runbook => "runbook".into(),
                    VarOrigin::CommandLine => "--var".into(),
                    VarOrigin::VarsFile(path) => format!("vars file {path}"),
                },
            })
            .collect(),
        targets: runbook
            .targets
            .values()
            .map(|t| PlanTarget {
                name: t.name.clone(),
                kind: t.kind,
                endpoint: endpoint(&t.spec),
                live: None,
            })
            .collect(),
        rollback: plan_rollback(runbook),
        triggers: runbook.triggers.iter().map(plan_trigger).collect(),
        phases,
        summary,
    }
}

fn endpoint(spec: &TargetSpec) -> String {
    match spec {
        TargetSpec::Docker(docker) => {
            let host = match (&docker.host, &docker.context) {
                (Some(host), _) => host.value.display(),
                (None, Some(context)) => format!("Docker context `{}`", context.value),
                (None, None) => "DOCKER_HOST, the Docker CLI's context, or the local socket".into(),
            };
            if docker.tls.is_some() {
                format!("{host} (TLS)")
            } else {
                host
            }
        }
        TargetSpec::Redis(redis) => {
            let mut out = redis.url.value.display();
            if let Some(via) = &redis.via {
                out.push_str(&format!(" as host `{}` sees it", via.value));
            }
            let mut extras = Vec::new();
            if redis.password.is_some() {
                extras.push("password ****".to_owned());
            }
            if let Some(db) = redis.db {
                extras.push(format!("db {db}"));
            }
            if let Some(t) = redis.timeout {
                extras.push(format!("timeout {t}"));
            }
            if !extras.is_empty() {
                out.push_str(&format!(" ({})", extras.join(", ")));
            }
            out
        }
    }
}

fn plan_phase(phase: &Phase, summary: &mut PlanSummary) -> PlanPhase {
    let graph = PhaseGraph::of_phase(phase);
    let steps = graph
        .order
        .iter()
        .map(|&i| {
            let step = &phase.steps[i];
            summary.steps += 1;
            match step.action.verification() {
                Verification::Verified => summary.verified += 1,
                Verification::Simulated => summary.simulated += 1,
                Verification::Unverifiable => summary.unverifiable += 1,
            }
            if matches!(step.action, Action::Gate(_)) {
                summary.gates += 1;
            }
            if matches!(step.rollback, StepRollback::Missing) {
                summary.without_rollback += 1;
            }
            plan_step(step)
        })
        .collect();
    PlanPhase {
        id: phase.id.clone(),
        title: phase.title.clone(),
        mode: match phase.parallel {
            None if phase.steps.len() == 1 && matches!(phase.steps[0].action, Action::Gate(_)) => {
                "gate".into()
            }
            None => "sequential".into(),
            Some(0) => "parallel".into(),
            Some(n) => format!("parallel, at most {n} at once"),
        },
        on_failure: phase.on_failure,
        steps,
        rollback: phase.rollback.iter().map(plan_step).collect(),
    }
}

/// The one-line operation of a step: `docker vps01: recreate ...`.
pub fn operation(step: &Step) -> String {
    let params = step.action.params();
    let what = params.describe();
    match (params.target_kind(), &step.target) {
        (Some(kind), Some(target)) => format!("{kind} {target}: {what}"),
        (Some(TargetKind::Docker), None) => format!("docker (DOCKER_HOST): {what}"),
        (Some(kind), None) => format!("{kind}: {what}"),
        (None, _) => format!("{}: {what}", step.action.name()),
    }
}

fn describe_retry(retry: &RetrySpec) -> String {
    let interval = retry
        .interval
        .map(|i| i.0)
        .unwrap_or(std::time::Duration::from_secs(1));
    let mut out = format!(
        "{} attempts, {} apart",
        retry.attempts,
        format_duration(interval)
    );
    if let Some(backoff) = retry.backoff.filter(|b| *b != 1.0) {
        out.push_str(&format!(", x{backoff} each time"));
    }
    if let Some(max) = retry.max_interval {
        out.push_str(&format!(", at most {max}"));
    }
    out
}

/// The plan of one step.
pub fn build_step(step: &Step) -> PlanStep {
    plan_step(step)
}

fn plan_step(step: &Step) -> PlanStep {
    PlanStep {
        id: step.id.clone(),
        title: step.title.clone(),
        action: step.action.name(),
        operation: operation(step),
        verification: step.action.verification(),
        expect: step.expect.as_ref().map(ToString::to_string),
        until: step.until.as_ref().map(|u| {
            let every = step
                .interval
                .map(format_duration)
                .unwrap_or_else(|| "1s".into());
            format!("{u} (polled every {every})")
        }),
        retry: step.retry.as_ref().map(describe_retry),
        timeout: step.timeout.map(format_duration),
        needs: step.needs.clone(),
        skip_if: step.skip_if.as_ref().map(|probe| {
            let check = probe
                .expect
                .as_ref()
                .map(|e| format!(" is {e}"))
                .unwrap_or_default();
            format!("{}{check}", operation(probe))
        }),
        rollback: plan_step_rollback(&step.rollback),
        on_failure: step.on_failure,
        hint: step.hint.clone(),
        check: None,
    }
}

fn plan_step_rollback(rollback: &StepRollback) -> PlanStepRollback {
    match rollback {
        StepRollback::NotNeeded => PlanStepRollback::NotNeeded,
        StepRollback::Builtin(text) => PlanStepRollback::Builtin {
            operation: (*text).to_owned(),
        },
        StepRollback::Steps(steps) => PlanStepRollback::Steps {
            steps: steps.iter().map(plan_step).collect(),
        },
        StepRollback::Declined => PlanStepRollback::Declined,
        StepRollback::Missing => PlanStepRollback::Missing,
    }
}

fn plan_rollback(runbook: &Runbook) -> PlanRollback {
    let mut when = vec!["a trigger fires (unless it is in shadow mode or pauses)".to_owned()];
    let rollback_phases: Vec<&str> = runbook
        .phases
        .iter()
        .filter(|p| {
            p.on_failure == OnFailure::Rollback
                || p.steps.iter().any(|s| s.on_failure == OnFailure::Rollback)
        })
        .map(|p| p.id.as_str())
        .collect();
    if !rollback_phases.is_empty() {
        when.push(format!(
            "a step fails in phase {} (on_failure: rollback)",
            rollback_phases.join(", ")
        ));
    }
    for (_, step) in runbook.steps() {
        if let Action::Gate(gate) = &step.action {
            if gate.on_no_go == crate::runbook::action::GateFallback::Rollback {
                when.push(format!("gate `{}` gets no-go", step.id));
            }
            if gate.timeout.is_some()
                && gate.on_timeout == crate::runbook::action::GateFallback::Rollback
            {
                when.push(format!("gate `{}` times out", step.id));
            }
        }
    }
    let scoped: Vec<&str> = runbook
        .phases
        .iter()
        .filter(|p| p.rollback_scope == crate::runbook::spec::RollbackScope::Phase)
        .map(|p| p.id.as_str())
        .collect();
    if !scoped.is_empty() {
        when.push(format!(
            "(a rollback that starts in phase {} undoes that phase only: rollback_scope: phase)",
            scoped.join(", ")
        ));
    }
    when.push(
        "`redis-move rollback RUN` is run by hand (it undoes everything the run did)".to_owned(),
    );
    let mut undo = Vec::new();
    for phase in runbook.phases.iter().rev() {
        for step in phase.steps.iter().rev() {
            if !matches!(step.rollback, StepRollback::NotNeeded) {
                undo.push(PlanUndo {
                    step: step.id.clone(),
                    rollback: plan_step_rollback(&step.rollback),
                });
            }
        }
        // A phase's own rollback runs once its steps are undone.
        if !phase.rollback.is_empty() {
            undo.push(PlanUndo {
                step: format!("phase {}", phase.id),
                rollback: PlanStepRollback::Steps {
                    steps: phase.rollback.iter().map(plan_step).collect(),
                },
            });
        }
    }
    PlanRollback {
        when,
        undo,
        steps: runbook.rollback.iter().map(plan_step).collect(),
    }
}

fn describe_window(trigger: &Trigger) -> String {
    let w = &trigger.window;
    let mut parts = Vec::new();
    if !w.phases.is_empty() {
        parts.push(format!("during {}", w.phases.join(", ")));
    }
    if let Some(from) = &w.from {
        parts.push(format!("from after `{from}`"));
    }
    if let Some(until) = &w.until {
        parts.push(format!("until after `{until}`"));
    }
    if let Some(d) = w.duration {
        parts.push(format!("for {} once open", format_duration(d)));
    }
    if parts.is_empty() {
        "the whole run".into()
    } else {
        parts.join(", ")
    }
}

fn describe_condition(trigger: &Trigger) -> String {
    match &trigger.fire {
        FireCondition::Threshold(e) => format!("value {e}"),
        FireCondition::FailingFor(d) => format!("probe failing for {}", format_duration(*d)),
        FireCondition::Increase { by, within } => {
            format!("increase {by} within {}", format_duration(*within))
        }
        FireCondition::Rate {
            ratio, baseline, ..
        } => match baseline {
            Baseline::Recorded(t) => format!("growth rate {ratio} the baseline {}", t.display()),
            Baseline::Measured(d) => format!(
                "growth rate {ratio} the rate measured in the first {}",
                format_duration(*d)
            ),
            Baseline::Before {
                step,
                window,
                probe,
            } => format!(
                "growth rate {ratio} the rate of the {} before step `{step}`{}",
                format_duration(*window),
                probe
                    .as_ref()
                    .map(|p| format!(" ({})", p.action.params().describe()))
                    .unwrap_or_default()
            ),
        },
        FireCondition::Consecutive(n) => format!("{n} failing probes in a row"),
    }
}

fn plan_trigger(trigger: &Trigger) -> PlanTrigger {
    let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    PlanTrigger {
        id: trigger.id.clone(),
        title: trigger.title.clone(),
        window: describe_window(trigger),
        probe: operation(&trigger.probe),
        healthy: trigger.probe.expect.as_ref().map(ToString::to_string),
        every: format_duration(trigger.every),
        timeout: format_duration(trigger.timeout),
        condition: describe_condition(trigger),
        action: lower(&trigger.action),
        mode: lower(&trigger.mode),
        on_no_data: lower(&trigger.on_no_data),
        on_error: lower(&trigger.on_error),
    }
}
