//! The engine: runs a validated runbook phase by phase (phases are barriers), the steps
//! of a phase as their graph allows (concurrently up to a limit), stops at gates, rolls
//! back on failure when the runbook says so, and keeps the journal current. It emits
//! [`RunEvent`]s and never prints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::event::{EventSender, RunEvent};
use super::journal::{
    GateDecision, GateRecord, Journal, JournalError, JournalWriter, RunStatus, StepRecord,
    StepStatus,
};
use super::operator::{Answer, DecisionRequest, Operator, Question};
use super::step::{self, StepEnd};
use super::trigger::{self, Fired, Progress};
use crate::actions::ActionRunner;
use crate::actions::resolve::Secrets;
use crate::plan::graph::PhaseGraph;
use crate::redact::Redactor;
use crate::runbook::action::{Action, Effect};
use crate::runbook::model::{Runbook, Step};
use crate::runbook::spec::OnFailure;
use crate::runbook::template::Template;
use crate::value::Value;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every step finished.
    Succeeded,
    /// A step failed; resumable.
    Failed {
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
    /// Waiting for a decision nobody could give now; resumable.
    StoppedAtGate {
        /// The gate or manual step.
        gate: String,
    },
    /// A gate said no-go (without rollback).
    NoGo {
        /// The gate.
        gate: String,
    },
    /// Interrupted; resumable.
    Interrupted,
    /// Rolled back completely.
    RolledBack {
        /// Why the rollback started.
        reason: String,
    },
    /// The rollback did not undo everything: manual action needed.
    RollbackFailed {
        /// What was not undone.
        reason: String,
    },
    /// The run could not go on safely (the journal cannot be written).
    Aborted {
        /// Why.
        reason: String,
    },
}

impl RunOutcome {
    /// The journal status of this outcome.
    pub fn status(&self) -> RunStatus {
        match self {
            RunOutcome::Succeeded => RunStatus::Succeeded,
            RunOutcome::Failed { .. } | RunOutcome::Aborted { .. } => RunStatus::Failed,
            RunOutcome::StoppedAtGate { .. } => RunStatus::StoppedAtGate,
            RunOutcome::NoGo { .. } => RunStatus::NoGo,
            RunOutcome::Interrupted => RunStatus::Interrupted,
            RunOutcome::RolledBack { .. } => RunStatus::RolledBack,
            RunOutcome::RollbackFailed { .. } => RunStatus::RollbackFailed,
        }
    }

    /// Why, in a sentence.
    pub fn reason(&self) -> String {
        match self {
            RunOutcome::Succeeded => "every step finished".into(),
            RunOutcome::Failed { step, reason } => format!("step `{step}` failed: {reason}"),
            RunOutcome::StoppedAtGate { gate } => {
                format!("stopped at `{gate}`: waiting for a decision")
            }
            RunOutcome::NoGo { gate } => format!("`{gate}`: no-go"),
            RunOutcome::Interrupted => "interrupted".into(),
            RunOutcome::RolledBack { reason } => format!("rolled back: {reason}"),
            RunOutcome::RollbackFailed { reason } => format!("rollback incomplete: {reason}"),
            RunOutcome::Aborted { reason } => reason.clone(),
        }
    }
}

/// The journal of the run being executed: in memory, written to disk when it matters
/// (and at least every few hundred milliseconds while anything changes).
pub struct JournalHandle {
    path: PathBuf,
    /// The journal and its version (bumped by every change).
    journal: Mutex<(Journal, u64)>,
    /// Held while writing: the writer and the last version written. Writes are
    /// serialized, so an older state can never overwrite a newer one.
    writer: Mutex<(JournalWriter, u64)>,
    error: Mutex<Option<String>>,
    redactor: Redactor,
}

impl JournalHandle {
    /// The directory the journal is in (the run's directory).
    pub fn directory(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A handle writing to `path`.
    pub fn new(path: PathBuf, journal: Journal) -> Self {
        JournalHandle::with_redactor(path, journal, Redactor::default())
    }

    /// A handle writing to `path` that masks `redactor`'s secrets (and URL passwords)
    /// in everything it writes: the last line of defence that keeps secrets out of the
    /// state directory, whatever a step captured.
    pub fn with_redactor(path: PathBuf, journal: Journal, redactor: Redactor) -> Self {
        JournalHandle {
            writer: Mutex::new((JournalWriter::new(path.clone()), 0)),
            path,
            journal: Mutex::new((journal, 1)),
            error: Mutex::new(None),
            redactor,
        }
    }

    /// Where it is written.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Journal, u64)> {
        self.journal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the journal (written later or at the next [`JournalHandle::persist`]).
    pub fn update<R>(&self, f: impl FnOnce(&mut Journal) -> R) -> R {
        let mut guard = self.lock();
        let result = f(&mut guard.0);
        guard.0.updated_at = jiff::Timestamp::now();
        guard.1 += 1;
        result
    }

    /// Reads the journal.
    pub fn read<R>(&self, f: impl FnOnce(&Journal) -> R) -> R {
        f(&self.lock().0)
    }

    /// Writes it now (fsynced: a line of changes appended to the log, or a snapshot) if
    /// it changed since the last write.
    pub fn persist(&self) -> Result<(), JournalError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, version) = {
            let mut guard = self.lock();
            if guard.1 <= writer.1 {
                return Ok(());
            }
            // String values are masked, never the document's structure (a secret such
            // as `true` or `p` would otherwise rename fields and break the journal).
            let pending = writer
                .0
                .prepare(&mut guard.0, |value| self.redactor.redact_json(value));
            (pending, guard.1)
        };
        match writer.0.write(pending) {
            Ok(()) => {
                writer.1 = version;
                Ok(())
            }
            Err(e) => {
                *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The last write error, if the journal cannot be written.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The values steps recorded, shared with the step tasks (see
/// [`Shared::recorded_values`]).
#[derive(Clone)]
pub struct RecordedValues(Arc<Mutex<HashMap<String, Value>>>);

impl crate::actions::resolve::StepValues for RecordedValues {
    fn value(&self, id: &str) -> Option<Value> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// What a run checks before each change: that it still holds its lock (a lease in Redis,
/// which another run may take over once it expired).
pub trait Fence: Send + Sync {
    /// `Err(why)` when the run no longer holds its lock.
    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>>;
}

/// What the step tasks share.
pub struct Shared {
    /// Checked before every change: the run still holds its lock.
    fence: Option<Arc<dyn Fence>>,
    /// The runbook.
    pub runbook: Arc<Runbook>,
    /// Performs actions.
    pub runner: Arc<dyn ActionRunner>,
    /// Makes decisions.
    pub operator: Arc<dyn Operator>,
    /// The journal.
    pub journal: Arc<JournalHandle>,
    /// Events out.
    pub events: EventSender,
    /// Cancelled on interruption.
    pub cancel: CancellationToken,
    /// Secret values.
    pub secrets: Arc<Secrets>,
    /// Masks secrets.
    pub redactor: Arc<Redactor>,
    /// When the run (first) started.
    pub started: jiff::Timestamp,
    values: Arc<Mutex<HashMap<String, Value>>>,
}

impl Shared {
    /// Shared state for a run.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of a run, assembled once"
    )]
    pub fn new(
        runbook: Arc<Runbook>,
        runner: Arc<dyn ActionRunner>,
        operator: Arc<dyn Operator>,
        journal: Arc<JournalHandle>,
        events: EventSender,
        cancel: CancellationToken,
        secrets: Arc<Secrets>,
        redactor: Arc<Redactor>,
    ) -> Self {
        // Values recorded before a resume come back from the journal (secrets masked).
        let values = journal.read(|j| {
            j.steps
                .iter()
                .filter_map(|(id, r)| r.value.clone().map(|v| (id.clone(), v)))
                .collect::<HashMap<_, _>>()
        });
        let started = journal.read(|j| j.started_at);
        Shared {
            fence: None,
            runbook,
            runner,
            operator,
            journal,
            events,
            cancel,
            secrets,
            redactor,
            started,
            values: Arc::new(Mutex::new(values)),
        }
    }

    /// The same, checking `fence` before every change.
    pub fn with_fence(mut self, fence: Arc<dyn Fence>) -> Shared {
        self.fence = Some(fence);
        self
    }

    /// `Some(why)` when the run no longer holds its lock (its lease expired and another
    /// run took it): it must change nothing more.
    pub async fn fenced(&self) -> Option<String> {
        self.fence.as_ref()?.check().await.err()
    }

    /// The same run with another cancellation token (a rollback is not cut short by the
    /// interruption that may have caused it).
    pub fn with_cancel(&self, cancel: CancellationToken) -> Shared {
        Shared {
            fence: self.fence.clone(),
            runbook: self.runbook.clone(),
            runner: self.runner.clone(),
            operator: self.operator.clone(),
            journal: self.journal.clone(),
            events: self.events.clone(),
            cancel,
            secrets: self.secrets.clone(),
            redactor: self.redactor.clone(),
            started: self.started,
            values: self.values.clone(),
        }
    }

    /// Sends an event (a closed channel is fine: nobody listens).
    pub fn emit(&self, event: RunEvent) {
        let _ = self.events.send(event);
    }

    /// Writes the journal now.
    pub fn persist(&self) {
        let _ = self.journal.persist();
    }

    /// The step's operation in words, secrets masked.
    pub fn operation(&self, step: &Step) -> String {
        self.redactor.redact(&crate::plan::operation(step))
    }

    /// A template for display: secrets masked.
    pub fn display(&self, template: &Template) -> String {
        self.redactor.redact(&template.display())
    }

    /// The values recorded so far, read as they are when a template is resolved (a
    /// step only refers to steps it runs after). Cheap: no copy of the values, so that
    /// a step costs the same at the end of a long run as at its start.
    pub fn recorded_values(&self) -> RecordedValues {
        RecordedValues(self.values.clone())
    }

    /// Records a step's value (kept in memory as is, journaled with secrets masked).
    pub fn record_value(&self, id: &str, value: Value) {
        let masked = redact_value(&value, &self.redactor);
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), value);
        self.journal.update(|j| {
            if let Some(r) = j.steps.get_mut(id) {
                r.value = Some(masked);
            }
        });
    }

    /// A step's value in words (masked), for events.
    pub fn value_text(&self, id: &str) -> Option<String> {
        let value = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .filter(|v| *v != Value::Null)?;
        let text = self
            .redactor
            .redact(&value.to_string())
            .replace('\n', "\\n");
        Some(if text.chars().count() > 120 {
            format!("{}...", text.chars().take(117).collect::<String>())
        } else {
            text
        })
    }

    /// The checks made since the last gate decision, one line each.
    pub fn evidence(&self) -> Vec<String> {
        self.journal.read(|j| {
            let since = j.gates.last().map(|g| g.at);
            let mut checks: Vec<(jiff::Timestamp, String)> = j
                .steps
                .iter()
                .flat_map(|(id, r)| r.checks.iter().map(move |c| (id, c)))
                .filter(|(_, c)| since.is_none_or(|s| c.at > s))
                .map(|(id, c)| {
                    (
                        c.at,
                        format!(
                            "{} {id}: {} (expected {})",
                            if c.passed { "PASS" } else { "FAIL" },
                            c.measured,
                            c.criterion
                        ),
                    )
                })
                .collect();
            checks.sort();
            checks.into_iter().map(|(_, line)| line).collect()
        })
    }
}

/// A value with secrets masked in every text.
pub fn redact_value(value: &Value, redactor: &Redactor) -> Value {
    match value {
        Value::Text(t) => Value::Text(redactor.redact(t)),
        Value::List(items) => {
            Value::List(items.iter().map(|v| redact_value(v, redactor)).collect())
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), redact_value(v, redactor)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Steps run at once in a parallel phase without its own limit.
    pub concurrency: usize,
    /// Start at this step (earlier steps are skipped).
    pub from_step: Option<String>,
    /// Re-run mutating steps that were interrupted mid-way (their effect is unknown).
    pub rerun_interrupted: bool,
}

/// Whether re-running an interrupted step is safe: built-in actions that converge to
/// the same state (recreating with the env a container already has is a no-op).
pub fn rerun_safe(action: &Action) -> bool {
    match action.params().effect() {
        Effect::ReadOnly | Effect::Wait | Effect::Operator => true,
        Effect::Mutating => matches!(
            action,
            Action::DockerStop(_)
                | Action::DockerStart(_)
                | Action::DockerRestart(_)
                | Action::DockerRecreate(_)
                | Action::DockerRemove(_)
                | Action::DockerRemoveVolume(_)
                | Action::DockerRun(_)
                | Action::RedisConfigSet(_)
                // A copy resumes from its ledger; a delete deletes what is left.
                | Action::RedisCopy(_)
                // A sync continues from its marker and ledger.
                | Action::RedisSync(_)
                | Action::RedisDelete(_)
                // Another snapshot replaces the one that was cut short.
                | Action::RedisSnapshot(_)
        ),
    }
}

/// A hash of what a step does (its operation, checks and rollback as the plan shows
/// them), to tell whether a runbook changed in a step already done.
pub fn fingerprint(step: &Step) -> String {
    let planned = crate::plan::build_step(step);
    crate::runbook::hex_sha256(
        serde_json::to_string(&planned)
            .unwrap_or_default()
            .as_bytes(),
    )[..16]
        .to_owned()
}

/// Steps done in `journal` whose definition changed in `runbook`.
pub fn changed_done_steps(journal: &Journal, runbook: &Runbook) -> Vec<String> {
    runbook
        .steps()
        .filter_map(|(_, step)| {
            let record = journal.steps.get(&step.id)?;
            (record.status.is_done()
                && !record.fingerprint.is_empty()
                && record.fingerprint != fingerprint(step))
            .then(|| step.id.clone())
        })
        .collect()
}

/// A fresh journal for `runbook`.
pub fn new_journal(runbook: &Runbook, run_id: &str) -> Journal {
    let mut steps = std::collections::BTreeMap::new();
    for (phase, step) in runbook.steps() {
        let mut record = StepRecord::pending(&phase.id);
        record.fingerprint = fingerprint(step);
        steps.insert(step.id.clone(), record);
    }
    let now = jiff::Timestamp::now();
    Journal {
        format: super::journal::JOURNAL_FORMAT,
        run_id: run_id.to_owned(),
        runbook: runbook.name.clone(),
        path: runbook.source.name(),
        source: std::fs::canonicalize(&runbook.source.path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| runbook.source.name()),
        overrides: Vec::new(),
        sha256: runbook.sha256.clone(),
        vars: runbook
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.value.display()))
            .collect(),
        operator: super::journal::operator(),
        pid: std::process::id(),
        status: RunStatus::Running,
        reason: String::new(),
        started_at: now,
        updated_at: now,
        finished_at: None,
        steps: steps.into(),
        gates: Vec::new(),
        rollback: Vec::new(),
        triggers: Vec::new(),
        preflight: Vec::new(),
        notifications: Vec::new(),
        trigger_series: Default::default(),
        baselines: Default::default(),
        rollback_phase: None,
        completed_count: 0,
        generation: 0,
    }
}

/// Runs (or resumes) the run whose journal `shared` holds.
pub async fn run(shared: Arc<Shared>, options: RunOptions) -> RunOutcome {
    let resumed = shared
        .journal
        .read(|j| j.completed_count > 0 || !j.gates.is_empty());
    let rolling_back = shared.journal.read(|j| j.status == RunStatus::RollingBack);
    shared.journal.update(|j| {
        j.pid = std::process::id();
        if !rolling_back {
            j.status = RunStatus::Running;
            j.reason.clear();
        }
    });
    shared.persist();
    let flusher = {
        let journal = shared.journal.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tick.tick().await;
                let _ = journal.persist();
            }
        })
    };
    let total: usize = shared.runbook.phases.iter().map(|p| p.steps.len()).sum();
    shared.emit(RunEvent::RunStarted {
        run_id: shared.journal.read(|j| j.run_id.clone()),
        runbook: shared.runbook.name.clone(),
        resumed,
        steps: total,
    });
    let outcome = if rolling_back {
        let reason = shared.journal.read(|j| j.reason.clone());
        // `redis-move rollback` sets this reason; otherwise an interrupted rollback goes on.
        let reason = if reason.starts_with("rolled back by hand") {
            reason
        } else {
            format!("continuing the interrupted rollback ({reason})")
        };
        super::rollback::roll_back(&shared, reason).await
    } else {
        if let Some(from) = &options.from_step {
            skip_before(&shared, from);
        }
        if resumed {
            resume_background(&shared).await;
        }
        forward(&shared, &options).await
    };
    flusher.abort();
    if outcome == RunOutcome::Succeeded {
        discard_captures(&shared).await;
    }
    finish(&shared, outcome)
}

/// On a resume, what done steps left running in the background (a sync) starts again;
/// a failure is reported, and the steps that need it fail with it.
async fn resume_background(shared: &Arc<Shared>) {
    let done: Vec<(Step, Option<crate::actions::Captured>)> = shared
        .runbook
        .steps()
        .filter_map(|(_, step)| {
            shared.journal.read(|j| {
                let record = j.steps.get(&step.id)?;
                record
                    .status
                    .is_done()
                    .then(|| (step.clone(), record.captured.clone()))
            })
        })
        .collect();
    let values = shared.recorded_values();
    let ctx = step::context(shared, &values);
    for (step, captured) in done {
        let message = match shared.runner.resume(&step, captured.as_ref(), &ctx).await {
            Ok(None) => continue,
            Ok(Some(line)) => line,
            Err(e) => format!(
                "could not be resumed: {}",
                shared.redactor.redact(&e.to_string())
            ),
        };
        shared.emit(RunEvent::StepProgress {
            step: step.id.clone(),
            message,
            remaining: None,
            measure: None,
        });
    }
}

/// After a successful run, what steps kept only for a rollback goes (the parked
/// originals of recreated containers). A failure is reported, not fatal.
async fn discard_captures(shared: &Arc<Shared>) {
    let steps: Vec<(Step, crate::actions::Captured)> = shared
        .runbook
        .steps()
        .filter_map(|(_, step)| {
            shared
                .journal
                .read(|j| j.steps.get(&step.id).and_then(|r| r.captured.clone()))
                .map(|c| (step.clone(), c))
        })
        .collect();
    let values = shared.recorded_values();
    let ctx = step::context(shared, &values);
    for (step, captured) in steps {
        if let Err(e) = shared.runner.discard(&step, &captured, &ctx).await {
            shared.emit(RunEvent::StepProgress {
                step: step.id.clone(),
                message: format!(
                    "could not remove what was kept for a rollback: {}",
                    shared.redactor.redact(&e.to_string())
                ),
                remaining: None,
                measure: None,
            });
        }
    }
}

fn skip_before(shared: &Shared, from: &str) {
    let order: Vec<String> = shared
        .runbook
        .phases
        .iter()
        .flat_map(|p| {
            PhaseGraph::of_phase(p)
                .order
                .into_iter()
                .map(move |i| p.steps[i].id.clone())
        })
        .collect();
    let Some(position) = order.iter().position(|id| id == from) else {
        return;
    };
    shared.journal.update(|j| {
        for id in &order[..position] {
            if let Some(r) = j.steps.get_mut(id)
                && !r.status.is_done()
            {
                r.status = StepStatus::Skipped;
                r.detail = format!("before --from {from}");
            }
        }
    });
}

fn finish(shared: &Shared, outcome: RunOutcome) -> RunOutcome {
    shared.journal.update(|j| {
        j.status = outcome.status();
        j.reason = shared.redactor.redact(&outcome.reason());
        if matches!(
            outcome,
            RunOutcome::Succeeded
                | RunOutcome::RolledBack { .. }
                | RunOutcome::RollbackFailed { .. }
                | RunOutcome::NoGo { .. }
        ) {
            j.finished_at = Some(jiff::Timestamp::now());
        }
    });
    let written = shared.journal.persist();
    let outcome = match (written, outcome) {
        (Err(e), RunOutcome::Succeeded) => RunOutcome::Aborted {
            reason: format!("the journal could not be written: {e}"),
        },
        (_, outcome) => outcome,
    };
    shared.emit(RunEvent::RunFinished {
        status: outcome.status(),
        reason: shared.redactor.redact(&outcome.reason()),
        journal: shared.journal.path().to_path_buf(),
    });
    outcome
}

enum PhaseEnd {
    Done,
    Stop(RunOutcome),
    Rollback(String),
}

/// Before the first change of a run (or of a resume): checks that the servers of every
/// data-movement step still to run fit it (versions, permissions, capacity). A step
/// whose servers do not stops the run before anything more changes; one whose servers
/// do not answer yet is checked again right before it acts.
async fn preflight(shared: &Arc<Shared>) -> Option<RunOutcome> {
    let steps: Vec<Step> = shared.journal.read(|j| {
        shared
            .runbook
            .phases
            .iter()
            .flat_map(|p| p.steps.iter())
            .filter(|s| {
                j.steps.get(&s.id).is_some_and(|r| {
                    matches!(r.status, StepStatus::Pending | StepStatus::Failed)
                        && r.captured.is_none()
                })
            })
            .cloned()
            .collect()
    });
    let values = shared.recorded_values();
    let ctx = step::context(shared, &values);
    let found = shared.runner.preflight(&steps, &ctx).await;
    let mut failed = None;
    for finding in found {
        let detail = shared.redactor.redact(&finding.detail);
        shared.emit(RunEvent::Preflight {
            step: finding.step.clone(),
            passed: finding.passed,
            detail: detail.clone(),
        });
        let record = super::journal::PreflightRecord {
            step: finding.step.clone(),
            passed: finding.passed,
            detail: detail.clone(),
            at: jiff::Timestamp::now(),
        };
        let passed = finding.passed != Some(false);
        shared.journal.update(|j| {
            j.preflight.push(record);
            if !passed && let Some(r) = j.steps.get_mut(&finding.step) {
                r.status = StepStatus::Failed;
                r.detail = format!("pre-flight: {detail}");
            }
        });
        if !passed && failed.is_none() {
            failed = Some(RunOutcome::Failed {
                step: finding.step,
                reason: format!("pre-flight, nothing was changed: {detail}"),
            });
        }
    }
    shared.persist();
    failed
}

async fn forward(shared: &Arc<Shared>, options: &RunOptions) -> RunOutcome {
    if let Some(outcome) = preflight(shared).await {
        return outcome;
    }
    let (progress, watching) = watch::channel(Progress::default());
    let stop_triggers = CancellationToken::new();
    let mut fires = trigger::spawn(shared.clone(), watching, stop_triggers.clone());
    let end = forward_phases(shared, options, &progress, &mut fires).await;
    let _ = progress.send(Progress {
        phase: None,
        over: true,
    });
    stop_triggers.cancel();
    match end {
        PhaseEnd::Done => RunOutcome::Succeeded,
        PhaseEnd::Stop(outcome) => outcome,
        PhaseEnd::Rollback(reason) => {
            let scope = super::rollback::scope_of(shared);
            shared.journal.update(|j| {
                j.status = RunStatus::RollingBack;
                j.reason = reason.clone();
                j.rollback_phase = scope;
            });
            shared.persist();
            super::rollback::roll_back(shared, reason).await
        }
    }
}

async fn forward_phases(
    shared: &Arc<Shared>,
    options: &RunOptions,
    progress: &watch::Sender<Progress>,
    fires: &mut mpsc::UnboundedReceiver<Fired>,
) -> PhaseEnd {
    let phases = shared.runbook.phases.clone();
    let total = phases.len();
    for (index, phase) in phases.iter().enumerate() {
        while let Ok(fired) = fires.try_recv() {
            if let Some(end) = on_fire(shared, fired).await {
                return end;
            }
        }
        let (all_done, none_started) = shared.journal.read(|j| {
            let records: Vec<_> = phase
                .steps
                .iter()
                .filter_map(|s| j.steps.get(&s.id))
                .collect();
            (
                records.iter().all(|r| r.status.is_done()),
                records.iter().all(|r| r.status == StepStatus::Pending),
            )
        });
        if all_done {
            continue;
        }
        if none_started && let Some(end) = check_rollback_targets(shared, phase).await {
            return end;
        }
        let _ = progress.send(Progress {
            phase: Some(phase.id.clone()),
            over: false,
        });
        shared.emit(RunEvent::PhaseStarted {
            phase: phase.id.clone(),
            title: phase.title.clone(),
            index: index + 1,
            total,
        });
        match run_phase(shared, phase, options, fires).await {
            PhaseEnd::Done => {}
            end => return end,
        }
    }
    // A trigger that fired inside its window while the last steps finished still counts.
    while let Ok(fired) = fires.try_recv() {
        if let Some(end) = on_fire(shared, fired).await {
            return end;
        }
    }
    PhaseEnd::Done
}

/// Before a phase whose rollback would return to some targets, checks they answer; if
/// not, the run stops at a gate unless the operator goes on anyway.
async fn check_rollback_targets(
    shared: &Arc<Shared>,
    phase: &crate::runbook::model::Phase,
) -> Option<PhaseEnd> {
    let values = shared.recorded_values();
    let ctx = step::context(shared, &values);
    let mut down = Vec::new();
    for target in &phase.rollback_targets {
        if let Err(e) = shared.runner.check_target(target, &ctx).await {
            down.push(format!(
                "`{target}`: {}",
                shared.redactor.redact(&e.to_string())
            ));
        }
    }
    if down.is_empty() {
        return None;
    }
    let detail = down.join("; ");
    shared.emit(RunEvent::RollbackTargetDown {
        phase: phase.id.clone(),
        detail: detail.clone(),
    });
    let gate = format!("{}.rollback-targets", phase.id);
    let request = DecisionRequest {
        id: gate.clone(),
        question: Question::Gate {
            question: format!(
                "A rollback of phase `{}` would return to targets that do not answer ({detail}). Start it anyway?",
                phase.id
            ),
            signoffs: Vec::new(),
        },
        evidence: shared.evidence(),
        timeout: None,
    };
    step::announce(shared, &request);
    match shared.operator.decide(&request).await {
        Answer::Decided {
            decision: GateDecision::Go,
            who,
            how,
            signoffs,
        } => {
            shared.journal.update(|j| {
                j.gates.push(GateRecord {
                    gate: gate.clone(),
                    decision: GateDecision::Go,
                    who: who.clone(),
                    how: how.clone(),
                    at: jiff::Timestamp::now(),
                    signoffs,
                })
            });
            shared.emit(RunEvent::GateDecided {
                gate,
                decision: GateDecision::Go,
                who,
                how,
            });
            None
        }
        _ => Some(PhaseEnd::Stop(RunOutcome::StoppedAtGate { gate })),
    }
}

/// What the run does about a fired trigger: roll back, or ask first.
async fn on_fire(shared: &Arc<Shared>, fired: Fired) -> Option<PhaseEnd> {
    let reason = format!(
        "trigger `{}` fired: {}",
        fired.trigger,
        shared.redactor.redact(&fired.reason)
    );
    if fired.ask {
        trigger::record_fired(shared, fired.record.clone(), "paused: asking the operator");
        let request = DecisionRequest {
            id: format!("trigger-{}", fired.trigger),
            question: Question::Gate {
                question: format!(
                    "{reason}. Roll back now? (go: roll back; no-go: continue the run)"
                ),
                signoffs: Vec::new(),
            },
            evidence: shared.evidence(),
            timeout: None,
        };
        step::announce(shared, &request);
        let answer = shared.operator.decide(&request).await;
        if let Answer::Decided {
            decision, who, how, ..
        } = &answer
        {
            shared.emit(RunEvent::GateDecided {
                gate: request.id.clone(),
                decision: *decision,
                who: who.clone(),
                how: how.clone(),
            });
        }
        // Without anybody to ask, roll back.
        if let Answer::Decided {
            decision: GateDecision::NoGo,
            ..
        } = answer
        {
            set_trigger_outcome(shared, &fired.trigger, "paused: the operator continued");
            let _ = fired.reply.send(true);
            return None;
        }
        set_trigger_outcome(shared, &fired.trigger, "paused: rolled back");
    } else {
        trigger::record_fired(shared, fired.record, "rollback");
    }
    let _ = fired.reply.send(false);
    shared.cancel.cancel();
    Some(PhaseEnd::Rollback(reason))
}

fn set_trigger_outcome(shared: &Shared, trigger: &str, outcome: &str) {
    shared.journal.update(|j| {
        if let Some(record) = j.triggers.iter_mut().rev().find(|t| t.trigger == trigger) {
            record.outcome = outcome.to_owned();
        }
    });
    shared.persist();
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Waiting,
    Running,
    Finished,
}

async fn run_phase(
    shared: &Arc<Shared>,
    phase: &crate::runbook::model::Phase,
    options: &RunOptions,
    fires: &mut mpsc::UnboundedReceiver<Fired>,
) -> PhaseEnd {
    let graph = PhaseGraph::of_phase(phase);
    let count = phase.steps.len();
    let mut slots: Vec<Slot> = phase
        .steps
        .iter()
        .map(|s| {
            if shared
                .journal
                .read(|j| j.steps.get(&s.id).is_some_and(|r| r.status.is_done()))
            {
                Slot::Finished
            } else {
                Slot::Waiting
            }
        })
        .collect();
    let limit = match phase.parallel {
        None => 1,
        Some(0) => options.concurrency.max(1),
        Some(n) => n,
    };
    let mut running: JoinSet<(usize, StepEnd)> = JoinSet::new();
    let mut stop: Option<PhaseEnd> = None;
    loop {
        if stop.is_none() {
            if shared.cancel.is_cancelled() {
                stop = Some(PhaseEnd::Stop(RunOutcome::Interrupted));
            } else if let Some(error) = shared.journal.error() {
                stop = Some(PhaseEnd::Stop(RunOutcome::Aborted {
                    reason: format!(
                        "the journal cannot be written ({error}); stopped before changing anything else"
                    ),
                }));
            }
        }
        if stop.is_none() {
            for &i in &graph.order {
                if running.len() >= limit {
                    break;
                }
                let ready = slots[i] == Slot::Waiting
                    && graph.dependencies(i).all(|d| slots[d] == Slot::Finished);
                if !ready {
                    continue;
                }
                let step = phase.steps[i].clone();
                let interrupted = shared.journal.read(|j| {
                    j.steps
                        .get(&step.id)
                        .is_some_and(|r| r.status == StepStatus::Running)
                });
                if interrupted
                    && !options.rerun_interrupted
                    && !rerun_safe(&step.action)
                    && step.skip_if.is_none()
                {
                    stop = Some(PhaseEnd::Stop(RunOutcome::Failed {
                        step: step.id.clone(),
                        reason: format!(
                            "it was interrupted while acting (`{}`), so its effect is unknown; check by hand{}, then `resume --rerun-interrupted` to run it again (or `redis-move rollback`)",
                            step.action.name(),
                            if matches!(step.action, Action::RedisPromote(_)) {
                                " (the source may still be paused, until its pause budget ends, or fenced: `min-replicas-to-write`)"
                            } else {
                                ""
                            }
                        ),
                    }));
                    break;
                }
                slots[i] = Slot::Running;
                let shared = shared.clone();
                running.spawn(async move { (i, step::execute(shared, step).await) });
            }
        }
        let joined = tokio::select! {
            joined = running.join_next(), if !running.is_empty() => joined,
            Some(fired) = fires.recv(), if stop.is_none() => {
                if let Some(end) = on_fire(shared, fired).await {
                    stop = Some(end);
                }
                continue;
            }
            else => None,
        };
        let Some(joined) = joined else { break };
        let (i, end) = match joined {
            Ok(result) => result,
            Err(e) => {
                stop.get_or_insert(PhaseEnd::Stop(RunOutcome::Aborted {
                    reason: format!("a step task failed: {e}"),
                }));
                continue;
            }
        };
        let step = &phase.steps[i];
        match end {
            StepEnd::Done(_) => slots[i] = Slot::Finished,
            StepEnd::Failed(reason) => match step.on_failure {
                OnFailure::Continue => slots[i] = Slot::Finished,
                OnFailure::Abort => {
                    stop.get_or_insert(PhaseEnd::Stop(RunOutcome::Failed {
                        step: step.id.clone(),
                        reason,
                    }));
                }
                OnFailure::Rollback => {
                    shared.cancel.cancel();
                    stop.get_or_insert(PhaseEnd::Rollback(format!(
                        "step `{}` failed: {reason}",
                        step.id
                    )));
                }
            },
            StepEnd::Undecided => {
                stop.get_or_insert(PhaseEnd::Stop(RunOutcome::StoppedAtGate {
                    gate: step.id.clone(),
                }));
            }
            StepEnd::NoGo { rollback: true } => {
                shared.cancel.cancel();
                stop.get_or_insert(PhaseEnd::Rollback(format!("`{}`: no-go", step.id)));
            }
            StepEnd::NoGo { rollback: false } => {
                stop.get_or_insert(PhaseEnd::Stop(RunOutcome::NoGo {
                    gate: step.id.clone(),
                }));
            }
            StepEnd::Interrupted => {
                stop.get_or_insert(PhaseEnd::Stop(RunOutcome::Interrupted));
            }
        }
        if stop.is_none() && slots.iter().all(|s| *s == Slot::Finished) && running.is_empty() {
            break;
        }
    }
    match stop {
        Some(end) => end,
        None if slots.iter().filter(|s| **s == Slot::Finished).count() == count => PhaseEnd::Done,
        None => PhaseEnd::Stop(RunOutcome::Aborted {
            reason: format!(
                "phase `{}` could not schedule its remaining steps",
                phase.id
            ),
        }),
    }
}
