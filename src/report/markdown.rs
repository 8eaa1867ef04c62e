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

/// Text for a table cell: one line, no column break, and nothing GitHub would render as
/// HTML or a link (`<tag`, `](`): a name or a Redis value is shown as written.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            '<' if chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || matches!(n, '/' | '!' | '?')) =>
            {
                out.push_str("&lt;")
            }
            ']' if chars.peek() == Some(&'(') => out.push_str("]\\"),
            c => out.push(c),
        }
    }
    out
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
/// `text` as one line of plain words: Mermaid's task names may not hold `:`, `#` or
/// `;`, and a newline or a backtick would end the block (the rest would be raw Markdown).
fn mermaid_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_.,()/+='".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The run as a Mermaid Gantt chart (GitHub renders it): a section per phase with its
/// steps (failed ones `crit`), gate decisions and trigger firings as milestones, the
/// rollback's steps in a section of their own. report.html draws the same in SVG.
fn mermaid_timeline(out: &mut String, report: &Report) {
    let name = mermaid_name;
    let at = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let mut lines = Vec::new();
    let mut n = 0;
    for phase in report
        .phases
        .iter()
        .map(|p| (p.title.clone().unwrap_or_else(|| p.id.clone()), &p.steps))
        .chain(std::iter::once((
            "rollback steps".to_owned(),
            &report.rollback_steps,
        )))
    {
        let (title, steps) = phase;
        let started: Vec<_> = steps.iter().filter(|s| s.started_at.is_some()).collect();
        if started.is_empty() {
            continue;
        }
        lines.push(format!("    section {}", name(&title)));
        for step in started {
            n += 1;
            let start = step.started_at.unwrap_or(report.started_at);
            let end = step.finished_at.unwrap_or(start).max(start);
            // At least a second, or Mermaid draws nothing.
            let seconds = end.duration_since(start).as_secs_f64().round().max(1.0) as u64;
            let tag = match step.status {
                crate::exec::journal::StepStatus::Failed
                | crate::exec::journal::StepStatus::CompensationFailed => "crit, ",
                crate::exec::journal::StepStatus::Succeeded
                | crate::exec::journal::StepStatus::Recovered
                | crate::exec::journal::StepStatus::Compensated => "done, ",
                _ => "active, ",
            };
            lines.push(format!(
                "    {} :{tag}t{n}, {}, {seconds}s",
                name(&step.id),
                at(start)
            ));
        }
    }
    let mut marks = Vec::new();
    for gate in &report.gates {
        n += 1;
        marks.push(format!(
            "    gate {} {:?} :milestone, t{n}, {}, 0s",
            name(&gate.gate),
            gate.decision,
            at(gate.at)
        ));
    }
    for fired in &report.triggers {
        n += 1;
        // Only a firing that acted is critical (not a shadow trigger's, not a question).
        let (tag, note) = if fired.outcome.starts_with("shadow") {
            ("", " (shadow)")
        } else if fired.outcome.contains("rollback") || fired.outcome.contains("rolled back") {
            ("crit, ", "")
        } else {
            ("", "")
        };
        marks.push(format!(
            "    trigger {}{note} :{tag}milestone, t{n}, {}, 0s",
            name(&fired.trigger),
            at(fired.at)
        ));
    }
    if !marks.is_empty() {
        lines.push("    section gates and triggers".into());
        lines.extend(marks);
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Timeline\n");
    let _ = writeln!(
        out,
        "```mermaid\ngantt\n    dateFormat YYYY-MM-DDTHH:mm:ss\n    axisFormat %H:%M:%S"
    );
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "```\n\nTimes in UTC; `report.html` beside this file draws the timeline and each trigger's values over time."
    );
}

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
    mermaid_timeline(&mut out, report);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_renders_no_html_and_no_link() {
        assert_eq!(
            cell("[click](javascript:alert(1)) <a href=//evil>x</a> | < 1 GiB"),
            "[click]\\(javascript:alert(1)) &lt;a href=//evil>x&lt;/a> \\| < 1 GiB"
        );
    }

    #[test]
    fn a_mermaid_name_is_one_line_of_plain_words() {
        let hostile = "Cutover\n```\n\n# Injected: <a href=\"javascript:x\">%%;</a>";
        let name = mermaid_name(hostile);
        assert_eq!(name, "Cutover Injected a href= javascript x /a");
        for c in ['\n', '`', ':', '#', ';', '%', '<', '>', '"'] {
            assert!(!name.contains(c), "{c:?} in {name}");
        }
    }
}
