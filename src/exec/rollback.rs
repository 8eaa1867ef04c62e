//! Rollback: undo every completed or partly completed change in reverse completion
//! order (a phase's own `rollback:` once its steps are undone), then the runbook's
//! `rollback:` steps. What was and was not undone is journaled step by step, so an
//! interrupted rollback resumes where it stopped.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::engine::{RunOutcome, Shared};
use super::event::RunEvent;
use super::journal::{RollbackRecord, StepRecord, StepStatus};
use super::step::{self, StepEnd};
use crate::runbook::action::Effect;
use crate::runbook::model::{Step, StepRollback};
use crate::runbook::spec::RollbackScope;

fn record(shared: &Shared, step: &str, operation: String, status: &str, detail: String) {
    let record = RollbackRecord {
        step: step.to_owned(),
        operation: shared.redactor.redact(&operation),
        status: status.to_owned(),
        detail: shared.redactor.redact(&detail),
        at: jiff::Timestamp::now(),
    };
    shared.journal.update(|j| j.rollback.push(record.clone()));
    shared.persist();
    shared.emit(RunEvent::RollbackAction { record });
}

fn set_status(shared: &Shared, id: &str, status: StepStatus) {
    shared.journal.update(|j| {
        if let Some(r) = j.steps.get_mut(id) {
            r.status = status;
        }
    });
}

/// Runs rollback steps (explicit ones, or the runbook's), each journaled under its own
/// id; those already done by an earlier, interrupted rollback are not run again.
async fn run_steps(shared: &Arc<Shared>, steps: &[Step], phase: &str, owner: Option<&str>) -> bool {
    let mut ok = true;
    for rollback_step in steps {
        let done = shared.journal.update(|j| {
            if !j.steps.contains_key(&rollback_step.id) {
                j.steps
                    .insert(rollback_step.id.clone(), StepRecord::pending(phase));
            }
            j.steps[&rollback_step.id].status.is_done()
        });
        if done {
            continue;
        }
        let end = step::execute(shared.clone(), rollback_step.clone()).await;
        let detail = shared.journal.read(|j| {
            j.steps
                .get(&rollback_step.id)
                .map(|r| r.detail.clone())
                .unwrap_or_default()
        });
        let operation = shared.operation(rollback_step);
        let id = owner.unwrap_or(&rollback_step.id);
        match end {
            StepEnd::Done(_) => record(shared, id, operation, "done", detail),
            other => {
                ok = false;
                let why = match other {
                    StepEnd::Failed(reason) => reason,
                    StepEnd::Undecided => "waiting for the operator".into(),
                    _ => "did not finish".into(),
                };
                record(shared, id, operation, "failed", why);
            }
        }
    }
    ok
}

/// The phase a rollback starting now is limited to: the phase the run is in (the last
/// one with a step that started), when it says `rollback_scope: phase`.
pub fn scope_of(shared: &Shared) -> Option<String> {
    let current = shared.runbook.phases.iter().rev().find(|phase| {
        phase.steps.iter().any(|s| {
            shared.journal.read(|j| {
                j.steps
                    .get(&s.id)
                    .is_some_and(|r| !matches!(r.status, StepStatus::Pending | StepStatus::Skipped))
            })
        })
    })?;
    (current.rollback_scope == RollbackScope::Phase).then(|| current.id.clone())
}

/// Rolls the run back: everything it did, or only the phase the journal names
/// (`rollback_phase`). `reason` says why (a trigger, a failed step, a no-go).
pub async fn roll_back(shared: &Arc<Shared>, reason: String) -> RunOutcome {
    // A run whose lock another run took over undoes nothing: the holder decides.
    if let Some(why) = shared.fenced().await {
        tracing::error!("rollback refused: {why}");
        shared.emit(RunEvent::RollbackStarted {
            reason: shared
                .redactor
                .redact(&format!("refused before it changed anything: {why}")),
        });
        return RunOutcome::Interrupted;
    }
    // The interruption that may have caused the rollback must not cut it short.
    let shared = Arc::new(shared.with_cancel(CancellationToken::new()));
    shared.journal.update(|j| {
        j.status = super::journal::RunStatus::RollingBack;
        j.reason = shared.redactor.redact(&reason);
    });
    shared.persist();
    let scope = shared.journal.read(|j| j.rollback_phase.clone());
    shared.emit(RunEvent::RollbackStarted {
        reason: shared.redactor.redact(&match &scope {
            Some(phase) => format!("{reason} (undoing phase `{phase}` only)"),
            None => reason.clone(),
        }),
    });

    let mut not_undone: Vec<String> = Vec::new();
    let phases = shared.runbook.phases.clone();
    for phase in phases
        .iter()
        .rev()
        .filter(|p| scope.as_ref().is_none_or(|s| *s == p.id))
    {
        // Steps that acted, most recent first: those still running or failed mid-way
        // (no completion number) before the completed ones.
        let mut acted: Vec<(u64, jiff::Timestamp, &Step)> = phase
            .steps
            .iter()
            .filter_map(|s| {
                shared.journal.read(|j| {
                    let r = j.steps.get(&s.id)?;
                    let acted = matches!(
                        r.status,
                        StepStatus::Succeeded
                            | StepStatus::Recovered
                            | StepStatus::Running
                            | StepStatus::CompensationFailed
                    ) || (r.status == StepStatus::Failed && r.captured.is_some());
                    acted.then(|| {
                        (
                            r.completed_seq.unwrap_or(u64::MAX),
                            r.started_at.unwrap_or(j.started_at),
                            s,
                        )
                    })
                })
            })
            .filter(|(_, _, s)| {
                s.action.params().effect() == Effect::Mutating
                    || matches!(s.rollback, StepRollback::Steps(_))
            })
            .collect();
        if acted.is_empty() {
            continue;
        }
        acted.sort_by_key(|a| std::cmp::Reverse((a.0, a.1)));
        for (_, _, step) in acted {
            let operation = crate::plan::operation(step);
            match &step.rollback {
                StepRollback::NotNeeded => {}
                StepRollback::Declined => {
                    record(
                        &shared,
                        &step.id,
                        "nothing to undo (rollback: none)".into(),
                        "done",
                        String::new(),
                    );
                    set_status(&shared, &step.id, StepStatus::Compensated);
                }
                StepRollback::Missing => {
                    record(
                        &shared,
                        &step.id,
                        operation.clone(),
                        "not-undone",
                        "this change has no rollback: undo it by hand".into(),
                    );
                    not_undone.push(format!("`{}` ({operation})", step.id));
                }
                StepRollback::Builtin(text) => {
                    let captured = shared
                        .journal
                        .read(|j| j.steps.get(&step.id).and_then(|r| r.captured.clone()));
                    if let Some(why) = shared.fenced().await {
                        tracing::error!(step = %step.id, "rollback stopped: {why}");
                        return RunOutcome::Interrupted;
                    }
                    let values = shared.recorded_values();
                    let ctx = step::context(&shared, &values);
                    match shared.runner.undo(step, captured.as_ref(), &ctx).await {
                        Ok(_) => {
                            record(&shared, &step.id, (*text).to_owned(), "done", String::new());
                            set_status(&shared, &step.id, StepStatus::Compensated);
                        }
                        Err(e) => {
                            record(
                                &shared,
                                &step.id,
                                (*text).to_owned(),
                                "failed",
                                e.to_string(),
                            );
                            set_status(&shared, &step.id, StepStatus::CompensationFailed);
                            not_undone.push(format!(
                                "`{}` ({text}: {})",
                                step.id,
                                shared.redactor.redact(&e.to_string())
                            ));
                        }
                    }
                }
                StepRollback::Steps(steps) => {
                    if run_steps(&shared, steps, "rollback", Some(&step.id)).await {
                        set_status(&shared, &step.id, StepStatus::Compensated);
                    } else {
                        set_status(&shared, &step.id, StepStatus::CompensationFailed);
                        not_undone.push(format!("`{}` (its rollback steps failed)", step.id));
                    }
                }
            }
        }
        if !phase.rollback.is_empty()
            && !run_steps(
                &shared,
                &phase.rollback,
                "rollback",
                Some(&format!("phase {}", phase.id)),
            )
            .await
        {
            not_undone.push(format!("phase `{}` (its rollback steps failed)", phase.id));
        }
    }
    // The runbook's own rollback steps verify a whole-run rollback.
    if scope.is_none() {
        let rollback_steps = shared.runbook.rollback.clone();
        if !run_steps(&shared, &rollback_steps, "rollback", None).await {
            not_undone.push("the runbook's rollback steps".into());
        }
    }
    let reason = match &scope {
        Some(phase) => {
            format!("{reason} (phase `{phase}` rolled back; the phases before it stay in effect)")
        }
        None => reason,
    };
    if not_undone.is_empty() {
        RunOutcome::RolledBack { reason }
    } else {
        RunOutcome::RollbackFailed {
            reason: format!("{reason}; not undone: {}", not_undone.join(", ")),
        }
    }
}
