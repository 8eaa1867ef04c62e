//! The validated runbook: every reference resolved, every default applied. This is what
//! the planner and the executor work from; nothing downstream looks at the YAML again.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

use super::action::{Action, TargetKind};
use super::expect::Expect;
use super::source::{SourceFile, Span};
use super::spec::{
    DataPolicy, FireAction, OnFailure, RetrySpec, SecretSource, TargetSpec, TriggerMode,
};
use super::template::Template;
use super::vars::ResolvedVar;

/// A runbook that passed validation.
#[derive(Clone, Debug)]
pub struct Runbook {
    /// The file it was read from.
    pub source: Arc<SourceFile>,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Machine name.
    pub name: String,
    /// Human title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Vars after overrides and resolution.
    pub vars: IndexMap<String, ResolvedVar>,
    /// Where each secret comes from.
    pub secrets: IndexMap<String, SecretSource>,
    /// Named targets.
    pub targets: IndexMap<String, Target>,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Rollback triggers.
    pub triggers: Vec<Trigger>,
    /// Runbook-level rollback steps.
    pub rollback: Vec<Step>,
    /// The run lock as a lease in Redis, when the runbook names one.
    pub lock: Option<LeaseLock>,
    /// Webhooks told of the run's events.
    pub notify: Vec<Notify>,
}

/// A webhook told of the run's events.
#[derive(Clone, Debug)]
pub struct Notify {
    /// Its URL (secrets resolved at run time).
    pub webhook: Template,
    /// Its body's format.
    pub format: super::spec::NotifyFormat,
    /// The events it is told of (every one when empty).
    pub events: Vec<super::spec::NotifyEvent>,
    /// How long one delivery may take.
    pub timeout: Duration,
}

/// The run lock as a lease in a Redis target.
#[derive(Clone, Debug)]
pub struct LeaseLock {
    /// The Redis target holding it.
    pub target: String,
    /// The lease's key.
    pub key: String,
    /// How long it outlives its holder.
    pub ttl: Duration,
}

impl Runbook {
    /// Every step of every phase, in declared order.
    pub fn steps(&self) -> impl Iterator<Item = (&Phase, &Step)> {
        self.phases
            .iter()
            .flat_map(|phase| phase.steps.iter().map(move |step| (phase, step)))
    }

    /// The step with this id (phase steps only).
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps().map(|(_, s)| s).find(|s| s.id == id)
    }
}

/// A named target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: TargetKind,
    /// Its settings as written.
    pub spec: TargetSpec,
    /// Where it is declared.
    pub span: Span,
}

/// A phase.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Unique id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// What a failing step does.
    pub on_failure: OnFailure,
    /// `None`: steps run in declared order. `Some(0)`: concurrently without a limit
    /// other than the engine's; `Some(n)`: at most `n` at once.
    pub parallel: Option<usize>,
    /// The steps in declared order.
    pub steps: Vec<Step>,
    /// The phase's own rollback steps.
    pub rollback: Vec<Step>,
    /// Targets that must answer before the phase starts.
    pub rollback_targets: Vec<String>,
    /// What a rollback that starts in this phase undoes.
    pub rollback_scope: crate::runbook::spec::RollbackScope,
    /// Where it is declared.
    pub span: Span,
}

/// How a step is undone.
#[derive(Clone, Debug)]
pub enum StepRollback {
    /// It changes nothing.
    NotNeeded,
    /// The action's built-in inverse, described.
    Builtin(&'static str),
    /// Explicit steps.
    Steps(Vec<Step>),
    /// The author said `rollback: none`.
    Declined,
    /// Nothing undoes it (a warning was issued).
    Missing,
}

/// One step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Unique id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// What it does.
    pub action: Action,
    /// The target it acts on (`None`: a local action, or the default Docker endpoint).
    pub target: Option<String>,
    /// The check on its value.
    pub expect: Option<Expect>,
    /// Poll until this holds.
    pub until: Option<Expect>,
    /// Retries.
    pub retry: Option<RetrySpec>,
    /// Time limit of one attempt (of the polling, with `until`).
    pub timeout: Option<Duration>,
    /// Polling interval with `until`.
    pub interval: Option<Duration>,
    /// Steps of its phase that must finish first.
    pub needs: Vec<String>,
    /// How it is undone.
    pub rollback: StepRollback,
    /// Shown when it fails.
    pub hint: Option<String>,
    /// A probe that says the step's effect is already in place.
    pub skip_if: Option<Box<Step>>,
    /// What its failure does.
    pub on_failure: OnFailure,
    /// Where it is declared.
    pub span: Span,
}

/// When a trigger is watched.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// During these phases (empty: not phase-bound).
    pub phases: Vec<String>,
    /// Opens after this step.
    pub from: Option<String>,
    /// Closes after this step.
    pub until: Option<String>,
    /// Closes this long after opening.
    pub duration: Option<Duration>,
}

impl Window {
    /// Whether nothing limits the window (it is open for the whole run).
    pub fn is_unbounded(&self) -> bool {
        self.phases.is_empty()
            && self.from.is_none()
            && self.until.is_none()
            && self.duration.is_none()
    }
}

/// The baseline of a rate trigger.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// A rate recorded by an earlier step.
    Recorded(Template),
    /// Measured during this long at the start of the window.
    Measured(Duration),
    /// Measured over `window` just before `step` started (normal operation), by sampling
    /// the probe from the start of the run.
    Before {
        /// The step.
        step: String,
        /// How long a stretch before it.
        window: Duration,
        /// What to measure with, when not the trigger's probe.
        probe: Option<Box<Step>>,
    },
}

/// When a trigger fires.
#[derive(Clone, Debug)]
pub enum FireCondition {
    /// The probe value matches.
    Threshold(Expect),
    /// The probe has been failing for this long.
    FailingFor(Duration),
    /// The value grew by a matching amount within a sliding window.
    Increase {
        /// The growth test (`> 100`).
        by: Expect,
        /// The sliding window.
        within: Duration,
    },
    /// The value grows faster than a baseline by a matching ratio (`> 10x`).
    Rate {
        /// The ratio test.
        ratio: Expect,
        /// What "normal" is.
        baseline: Baseline,
        /// A baseline below this (per second) counts as this.
        floor: f64,
    },
    /// This many failing probes in a row.
    Consecutive(u32),
}

/// A rollback trigger.
#[derive(Clone, Debug)]
pub struct Trigger {
    /// Unique id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// When it is watched.
    pub window: Window,
    /// The read-only probe (its `expect`, if any, says what healthy looks like).
    pub probe: Step,
    /// Probe interval.
    pub every: Duration,
    /// Probe time limit (a hanging probe counts as failing).
    pub timeout: Duration,
    /// When it fires.
    pub fire: FireCondition,
    /// What no data means.
    pub on_no_data: DataPolicy,
    /// What a probe error means.
    pub on_error: DataPolicy,
    /// Enforce or shadow.
    pub mode: TriggerMode,
    /// What firing does.
    pub action: FireAction,
    /// Shown when it fires.
    pub hint: Option<String>,
    /// The field of the probe value the condition looks at.
    pub field: Vec<String>,
    /// Where it is declared.
    pub span: Span,
}
