//! Plan rendering: a deterministic text listing for people, JSON for tools and for
//! `plan --out`.

use std::fmt::Write as _;

use super::{Plan, PlanStep, PlanStepRollback};

/// The plan as text.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let title = plan
        .runbook
        .title
        .as_deref()
        .map(|t| format!(" — {t}"))
        .unwrap_or_default();
    let _ = writeln!(out, "Plan for {}{title}", plan.runbook.name);
    let _ = writeln!(
        out,
        "runbook {} (sha256 {})",
        plan.runbook.path, plan.runbook.sha256
    );
    let _ = writeln!(
        out,
        "Dry run: nothing below is performed; `verified` steps are read-only probes, `simulated` steps are changes, `unverifiable` steps are outside redis-move's view."
    );

    if !plan.vars.is_empty() {
        let _ = writeln!(out, "\nVars");
        let width = plan.vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for var in &plan.vars {
            let origin = if var.origin == "runbook" {
                String::new()
            } else {
                format!("  (from {})", var.origin)
            };
            let _ = writeln!(out, "  {:width$}  {}{origin}", var.name, var.value);
        }
    }
    if !plan.targets.is_empty() {
        let _ = writeln!(out, "\nTargets");
        let width = plan.targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for target in &plan.targets {
            let _ = writeln!(
                out,
                "  {:width$}  {:6}  {}",
                target.name,
                target.kind.to_string(),
                target.endpoint
            );
            if let Some(live) = &target.live {
                let _ = writeln!(out, "  {:width$}  live:   {live}", "");
            }
        }
    }

    let total = plan.phases.len();
    let mut number = 0;
    for (i, phase) in plan.phases.iter().enumerate() {
        let title = phase
            .title
            .as_deref()
            .map(|t| format!(" — {t}"))
            .unwrap_or_default();
        let on_failure = format!("{:?}", phase.on_failure).to_lowercase();
        let _ = writeln!(
            out,
            "\nPhase {}/{total} {}{title}  [{}, on failure: {on_failure}]",
            i + 1,
            phase.id,
            phase.mode
        );
        for step in &phase.steps {
            number += 1;
            write_step(&mut out, step, &format!("{number}."), "  ");
            if step.on_failure != phase.on_failure {
                let on_failure = format!("{:?}", step.on_failure).to_lowercase();
                let _ = writeln!(out, "     on failure: {on_failure}");
            }
        }
        if !phase.rollback.is_empty() {
            let _ = writeln!(out, "  phase rollback:");
            for step in &phase.rollback {
                write_step(&mut out, step, "-", "    ");
            }
        }
    }

    if !plan.triggers.is_empty() {
        let _ = writeln!(out, "\nTriggers");
        for t in &plan.triggers {
            let title = t
                .title
                .as_deref()
                .map(|t| format!(" — {t}"))
                .unwrap_or_default();
            let shadow = if t.mode == "shadow" {
                " [shadow: records only]"
            } else {
                ""
            };
            let _ = writeln!(out, "  {}{title}{shadow}", t.id);
            let _ = writeln!(out, "      window: {}", t.window);
            let healthy = t
                .healthy
                .as_deref()
                .map(|h| format!(" (healthy: {h})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "      probe every {} (timeout {}): {}{healthy}",
                t.every, t.timeout, t.probe
            );
            let _ = writeln!(out, "      fires when: {} -> {}", t.condition, t.action);
            if t.on_no_data != "fail" || t.on_error != "fail" {
                let _ = writeln!(
                    out,
                    "      no data: {}; probe error: {}",
                    t.on_no_data, t.on_error
                );
            }
        }
    }

    let _ = writeln!(out, "\nRollback plan");
    let _ = writeln!(out, "  starts when: {}", plan.rollback.when.join("; "));
    let _ = writeln!(out, "  undoes completed steps, most recent first:");
    if plan.rollback.undo.is_empty() {
        let _ = writeln!(out, "    (no step changes anything)");
    }
    for undo in &plan.rollback.undo {
        match &undo.rollback {
            PlanStepRollback::Builtin { operation } => {
                let _ = writeln!(out, "    {}: {operation} (built in)", undo.step);
            }
            PlanStepRollback::Steps { steps } => {
                let _ = writeln!(out, "    {}:", undo.step);
                for step in steps {
                    write_step(&mut out, step, "-", "      ");
                }
            }
            PlanStepRollback::Declined => {
                let _ = writeln!(out, "    {}: nothing (rollback: none)", undo.step);
            }
            PlanStepRollback::Missing => {
                let _ = writeln!(
                    out,
                    "    {}: NOT UNDONE — no rollback for this change",
                    undo.step
                );
            }
            PlanStepRollback::NotNeeded => {}
        }
    }
    if !plan.rollback.steps.is_empty() {
        let _ = writeln!(out, "  then the runbook's rollback steps:");
        for step in &plan.rollback.steps {
            write_step(&mut out, step, "-", "    ");
        }
    }

    let s = &plan.summary;
    let _ = writeln!(
        out,
        "\nSummary: {} steps in {} phases ({} verified, {} simulated, {} unverifiable), {} gate{}, {} trigger{}{}",
        s.steps,
        s.phases,
        s.verified,
        s.simulated,
        s.unverifiable,
        s.gates,
        if s.gates == 1 { "" } else { "s" },
        s.triggers,
        if s.triggers == 1 { "" } else { "s" },
        if s.without_rollback > 0 {
            format!(
                ", {} change{} without rollback",
                s.without_rollback,
                if s.without_rollback == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    );
    if let Some([passed, failed, errors, skipped]) = s.live {
        let _ = writeln!(
            out,
            "Live check: {passed} passed, {failed} failed, {errors} could not run, {skipped} skipped"
        );
    }
    out
}

fn write_step(out: &mut String, step: &PlanStep, marker: &str, indent: &str) {
    let title = step
        .title
        .as_deref()
        .map(|t| format!(" — {t}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{indent}{marker} {}{title}  [{}]",
        step.id, step.verification
    );
    let pad = format!("{indent}   ");
    let _ = writeln!(out, "{pad}{}", step.operation);
    if !step.needs.is_empty() {
        let _ = writeln!(out, "{pad}after: {}", step.needs.join(", "));
    }
    if let Some(skip) = &step.skip_if {
        let _ = writeln!(out, "{pad}skipped if: {skip}");
    }
    if let Some(expect) = &step.expect {
        let _ = writeln!(out, "{pad}expect: {expect}");
    }
    if let Some(until) = &step.until {
        let _ = writeln!(out, "{pad}until: {until}");
    }
    if let Some(retry) = &step.retry {
        let _ = writeln!(out, "{pad}retry: {retry}");
    }
    if let Some(timeout) = &step.timeout {
        let _ = writeln!(out, "{pad}timeout: {timeout}");
    }
    match &step.rollback {
        PlanStepRollback::Builtin { operation } => {
            let _ = writeln!(out, "{pad}rollback: {operation}");
        }
        PlanStepRollback::Steps { steps } => {
            for rollback in steps {
                let _ = writeln!(out, "{pad}rollback: {}", rollback.operation);
            }
        }
        PlanStepRollback::Declined => {
            let _ = writeln!(out, "{pad}rollback: none");
        }
        PlanStepRollback::Missing => {
            let _ = writeln!(out, "{pad}rollback: MISSING (this change is not undone)");
        }
        PlanStepRollback::NotNeeded => {}
    }
    if let Some(hint) = &step.hint {
        let _ = writeln!(out, "{pad}hint: {hint}");
    }
    if let Some(check) = &step.check {
        let value = check
            .value
            .as_deref()
            .map(|v| format!(" — value {v}"))
            .unwrap_or_default();
        let _ = writeln!(out, "{pad}check: {}{value}; {}", check.status, check.detail);
    }
}

/// The plan as pretty JSON.
pub fn render_json(plan: &Plan) -> String {
    let mut out =
        serde_json::to_string_pretty(plan).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    out.push('\n');
    out
}
