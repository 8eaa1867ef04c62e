//! `report.md`: the go/no-go checklist, filled in — per phase every check with its
//! operation, criterion, measured value, result and time; gates with decision, who and
//! when; rollback actions; the sign-off sheet; the final status.

use std::fmt::Write as _;

use super::model::{Report, ReportStep};
use crate::exec::journal::{GateDecision, RunStatus, StepStatus};

fn time(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn status_mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "✅ passed",
        StepStatus::Recovered => "✅ passed after retries",
        StepStatus::Skipped => "⏭ skipped",
        StepStatus::Failed => "❌ FAILED",
        StepStatus::Pending => "☐ not run",
        StepStatus::Running => "⚠ interrupted",
        StepStatus::Compensated => "↩ rolled back",
        StepStatus::CompensationFailed => "❌ ROLLBACK FAILED",
    }
}

fn step_rows(out: &mut String, steps: &[ReportStep]) {
    let _ = writeln!(
        out,
        "| # | Check | Operation | Criterion | Measured | Result | Time |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for (i, step) in steps.iter().enumerate() {
        let name = match &step.title {
            Some(title) => format!("{title} (`{}`)", step.id),
            None => format!("`{}`", step.id),
        };
        let (criterion, measured) = match step.checks.last() {
            Some(check) => (check.criterion.clone(), check.measured.clone()),
            None => (String::new(), step.value.clone().unwrap_or_default()),
        };
        let mut result = match step.status {
            StepStatus::Succeeded if step.checks.is_empty() => "✅ done".to_owned(),
            other => status_mark(other).to_owned(),
        };
        if !step.detail.is_empty() && step.status != StepStatus::Succeeded {
            result.push_str(&format!(": {}", step.detail));
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            cell(&name),
            cell(&step.operation),
            cell(&criterion),
            cell(&measured),
            cell(&result),
            time(step.finished_at)
        );
    }
}

/// Renders the report as Markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = report
        .title
        .clone()
        .unwrap_or_else(|| report.runbook.clone());
    let _ = writeln!(out, "# {title}: run report\n");
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| Run | `{}` |", report.run_id);
    let _ = writeln!(
        out,
        "| Runbook | `{}` (sha256 `{}`) |",
        report.path,
        &report.sha256[..report.sha256.len().min(16)]
    );
    let _ = writeln!(out, "| Operator | {} |", report.operator);
    let _ = writeln!(out, "| Started | {} |", time(Some(report.started_at)));
    let _ = writeln!(out, "| Finished | {} |", time(report.finished_at));
    let _ = writeln!(out, "| Status | **{}** |", status_text(report.status));
    if !report.reason.is_empty() {
        let _ = writeln!(out, "| Reason | {} |", cell(&report.reason));
    }
    if !report.preflight.is_empty() {
        let _ = writeln!(out, "\n## Pre-flight: the servers of each data movement\n");
        let _ = writeln!(out, "| Step | Result | Found | When |");
        let _ = writeln!(out, "| --- | --- | --- | --- |");
        for p in &report.preflight {
            let result = match p.passed {
                Some(true) => "✅ fit",
                Some(false) => "❌ do not fit",
                None => "⏳ checked before the step",
            };
            let _ = writeln!(
                out,
                "| `{}` | {result} | {} | {} |",
                p.step,
                cell(&p.detail),
                time(Some(p.at))
            );
        }
    }
    for phase in &report.phases {
        let _ = writeln!(
            out,
            "\n## {}\n",
            phase.title.clone().unwrap_or_else(|| phase.id.clone())
        );
        step_rows(&mut out, &phase.steps);
    }
    if !report.gates.is_empty() {
        let _ = writeln!(out, "\n## Gates\n");
        let _ = writeln!(out, "| Gate | Decision | Who | How | When | Sign-offs |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        for gate in &report.gates {
            let signoffs: Vec<String> = gate
                .signoffs
                .iter()
                .map(|s| format!("{}: {}", s.role, s.who))
                .collect();
            let decision = if gate.decision == GateDecision::Go {
                "GO"
            } else {
                "NO-GO"
            };
            let _ = writeln!(
                out,
                "| `{}` | {decision} | {} | {} | {} | {} |",
                gate.gate,
                cell(&gate.who),
                cell(&gate.how),
                time(Some(gate.at)),
                cell(&signoffs.join(", "))
            );
        }
    }
    if !report.triggers.is_empty() {
        let _ = writeln!(out, "\n## Rollback triggers\n");
        let _ = writeln!(
            out,
            "| Trigger | Condition | Fired because | When | Outcome |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for t in &report.triggers {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                t.trigger,
                cell(&t.condition),
                cell(&t.reason),
                time(Some(t.at)),
                cell(&t.outcome)
            );
        }
        for t in &report.triggers {
            let samples: Vec<String> = t
                .samples
                .iter()
                .map(|s| {
                    format!(
                        "{} {}{}",
                        s.at.strftime("%H:%M:%S%.3f"),
                        s.value,
                        if s.bad { " ✗" } else { "" }
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "\nSamples of `{}`: {}",
                t.trigger,
                cell(&samples.join("; "))
            );
        }
    }
    if !report.rollback.is_empty() {
        let _ = writeln!(out, "\n## Rollback\n");
        let _ = writeln!(out, "| Step | Action | Result | Details | When |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for action in &report.rollback {
            let result = match action.status.as_str() {
                "done" => "✅ done",
                "failed" => "❌ FAILED",
                _ => "⚠ NOT UNDONE",
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {result} | {} | {} |",
                action.step,
                cell(&action.operation),
                cell(&action.detail),
                time(Some(action.at))
            );
        }
        if !report.rollback_steps.is_empty() {
            let _ = writeln!(out, "\n### Rollback verification\n");
            step_rows(&mut out, &report.rollback_steps);
        }
    }
    let _ = writeln!(out, "\n## Final sign-off\n");
    let _ = writeln!(out, "| Milestone | Time | Confirmed by |");
    let _ = writeln!(out, "| --- | --- | --- |");
    for row in &report.signoff {
        let mark = if row.done { "☑" } else { "☐" };
        let _ = writeln!(
            out,
            "| {mark} {} | {} | {} |",
            cell(&row.milestone),
            time(row.time),
            cell(&row.confirmed_by)
        );
    }
    let complete = report.status == RunStatus::Succeeded;
    let rolled_back = matches!(
        report.status,
        RunStatus::RolledBack | RunStatus::RollbackFailed
    );
    let _ = writeln!(
        out,
        "\n**Migration complete:** {} Yes {} No{}",
        if complete { "☑" } else { "☐" },
        if complete { "☐" } else { "☑" },
        if rolled_back { " (rolled back)" } else { "" }
    );
    out
}

/// The status in words.
pub fn status_text(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed (resumable)",
        RunStatus::StoppedAtGate => "stopped at a gate (resumable)",
        RunStatus::NoGo => "no-go",
        RunStatus::Interrupted => "interrupted (resumable)",
        RunStatus::RollingBack => "rolling back",
        RunStatus::RolledBack => "rolled back",
        RunStatus::RollbackFailed => "ROLLBACK FAILED: manual action needed",
    }
}
