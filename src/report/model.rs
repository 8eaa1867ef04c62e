//! The report of a run, built from its journal and runbook; `report.json` is this,
//! serialized, and `report.md` renders it.

use serde::Serialize;

use crate::exec::journal::{
    CheckRecord, GateRecord, Journal, PreflightRecord, RollbackRecord, RunStatus, SeriesPoint,
    StepStatus, TriggerRecord,
};
use crate::runbook::Runbook;

/// A run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Run id.
    pub run_id: String,
    /// Runbook name.
    pub runbook: String,
    /// Runbook title.
    pub title: Option<String>,
    /// Runbook file.
    pub path: String,
    /// Its SHA-256 at the start of the run.
    pub sha256: String,
    /// Who ran it.
    pub operator: String,
    /// When it started.
    pub started_at: jiff::Timestamp,
    /// When it ended.
    pub finished_at: Option<jiff::Timestamp>,
    /// Final status.
    pub status: RunStatus,
    /// Why it ended that way.
    pub reason: String,
    /// Phases in order.
    pub phases: Vec<ReportPhase>,
    /// Gate decisions.
    pub gates: Vec<GateRecord>,
    /// Triggers that fired (or would have).
    pub triggers: Vec<TriggerRecord>,
    /// What the pre-flight found of each data-movement step's servers.
    pub preflight: Vec<PreflightRecord>,
    /// Rollback actions.
    pub rollback: Vec<RollbackRecord>,
    /// Rollback steps (with their checks), when a rollback ran.
    pub rollback_steps: Vec<ReportStep>,
    /// The sign-off sheet: a row per phase.
    pub signoff: Vec<SignoffRow>,
    /// Each trigger's values over the run, for its chart.
    pub series: Vec<ReportSeries>,
}

/// A trigger's values over the run.
#[derive(Clone, Debug, Serialize)]
pub struct ReportSeries {
    /// The trigger.
    pub trigger: String,
    /// Its title, or its condition.
    pub label: String,
    /// The number its condition compares with, when it is one (bytes, seconds).
    pub threshold: Option<f64>,
    /// Whether the values are sizes (bytes).
    pub bytes: bool,
    /// The probes.
    pub points: Vec<SeriesPoint>,
}

/// A phase in the report.
#[derive(Clone, Debug, Serialize)]
pub struct ReportPhase {
    /// Id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Steps.
    pub steps: Vec<ReportStep>,
}

/// A step in the report.
#[derive(Clone, Debug, Serialize)]
pub struct ReportStep {
    /// Id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// The operation, in words.
    pub operation: String,
    /// Status.
    pub status: StepStatus,
    /// Attempts.
    pub attempts: u32,
    /// Started.
    pub started_at: Option<jiff::Timestamp>,
    /// Ended.
    pub finished_at: Option<jiff::Timestamp>,
    /// Its value, in words.
    pub value: Option<String>,
    /// Details.
    pub detail: String,
    /// Its checks.
    pub checks: Vec<CheckRecord>,
}

/// A row of the sign-off sheet.
#[derive(Clone, Debug, Serialize)]
pub struct SignoffRow {
    /// The milestone (a phase's title).
    pub milestone: String,
    /// When it was reached.
    pub time: Option<jiff::Timestamp>,
    /// Who confirmed it (the gate that let the run in, or the operator).
    pub confirmed_by: String,
    /// Whether it was reached.
    pub done: bool,
}

fn step_report(
    id: &str,
    title: Option<String>,
    operation: String,
    journal: &Journal,
) -> Option<ReportStep> {
    let record = journal.steps.get(id)?;
    Some(ReportStep {
        id: id.to_owned(),
        title,
        operation,
        status: record.status,
        attempts: record.attempts,
        started_at: record.started_at,
        finished_at: record.finished_at,
        value: record.value.as_ref().map(|v| {
            let text = v.to_string();
            if text.chars().count() > 120 {
                format!("{}...", text.chars().take(117).collect::<String>())
            } else {
                text
            }
        }),
        detail: record.detail.clone(),
        checks: record.checks.clone(),
    })
}

/// The number a trigger's condition compares its values with (its threshold, else its
/// probe's expectation), and whether it is a size.
fn threshold_of(trigger: &crate::runbook::model::Trigger) -> (Option<f64>, bool) {
    use crate::runbook::expect::{Expect, Operand};
    use crate::runbook::units::Quantity;
    let expect = match &trigger.fire {
        crate::runbook::model::FireCondition::Threshold(e) => Some(e),
        _ => trigger.probe.expect.as_ref(),
    };
    match expect {
        Some(Expect::Compare {
            operand: Operand::Known(quantity),
            ..
        }) => match quantity {
            Quantity::Number(n) => (Some(*n), false),
            Quantity::Size(b) => (Some(*b), true),
            Quantity::Duration(d) => (Some(d.as_secs_f64()), false),
            _ => (None, false),
        },
        _ => (None, false),
    }
}

/// Every rollback step a runbook defines: steps' own, phases', the runbook's.
fn rollback_definitions(runbook: &Runbook) -> Vec<&crate::runbook::model::Step> {
    let mut out = Vec::new();
    for phase in &runbook.phases {
        for step in &phase.steps {
            if let crate::runbook::model::StepRollback::Steps(steps) = &step.rollback {
                out.extend(steps);
            }
        }
        out.extend(&phase.rollback);
    }
    out.extend(&runbook.rollback);
    out
}

impl Report {
    /// The report of `journal` (titles and operations from `runbook`).
    pub fn build(journal: &Journal, runbook: &Runbook) -> Report {
        let mut signoff = Vec::new();
        let mut last_confirmation = journal.operator.clone();
        let mut phases = Vec::new();
        for phase in &runbook.phases {
            let steps: Vec<ReportStep> = phase
                .steps
                .iter()
                .filter_map(|s| {
                    step_report(&s.id, s.title.clone(), crate::plan::operation(s), journal)
                })
                .collect();
            if let Some(gate) = journal
                .gates
                .iter()
                .rev()
                .find(|g| phase.steps.iter().any(|s| s.id == g.gate))
            {
                last_confirmation = match gate.signoffs.is_empty() {
                    true => gate.who.clone(),
                    false => gate
                        .signoffs
                        .iter()
                        .map(|s| format!("{} ({})", s.who, s.role))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
            }
            let done = !steps.is_empty()
                && steps.iter().all(|s| {
                    matches!(
                        s.status,
                        StepStatus::Succeeded | StepStatus::Recovered | StepStatus::Skipped
                    )
                });
            signoff.push(SignoffRow {
                milestone: phase.title.clone().unwrap_or_else(|| phase.id.clone()),
                time: done
                    .then(|| steps.iter().filter_map(|s| s.finished_at).max())
                    .flatten(),
                confirmed_by: if done {
                    last_confirmation.clone()
                } else {
                    String::new()
                },
                done,
            });
            phases.push(ReportPhase {
                id: phase.id.clone(),
                title: phase.title.clone(),
                steps,
            });
        }
        let mut rollback_steps = Vec::new();
        for step in rollback_definitions(runbook) {
            if journal
                .steps
                .get(&step.id)
                .is_some_and(|r| r.phase == "rollback" && r.status != StepStatus::Pending)
                && let Some(report) = step_report(
                    &step.id,
                    step.title.clone(),
                    crate::plan::operation(step),
                    journal,
                )
            {
                rollback_steps.push(report);
            }
        }
        let series = runbook
            .triggers
            .iter()
            .filter_map(|t| {
                let points = journal.trigger_series.get(&t.id)?.clone();
                let (threshold, bytes) = threshold_of(t);
                Some(ReportSeries {
                    trigger: t.id.clone(),
                    label: t.title.clone().unwrap_or_else(|| t.id.clone()),
                    threshold,
                    bytes,
                    points,
                })
            })
            .collect();
        Report {
            series,
            run_id: journal.run_id.clone(),
            runbook: journal.runbook.clone(),
            title: runbook.title.clone(),
            path: journal.path.clone(),
            sha256: journal.sha256.clone(),
            operator: journal.operator.clone(),
            started_at: journal.started_at,
            finished_at: journal.finished_at,
            status: journal.status,
            reason: journal.reason.clone(),
            phases,
            gates: journal.gates.clone(),
            triggers: journal.triggers.clone(),
            preflight: journal.preflight.clone(),
            rollback: journal.rollback.clone(),
            rollback_steps,
            signoff,
        }
    }
}
