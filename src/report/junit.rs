//! JUnit XML of a run's checks, for CI systems: a test suite per phase, a test case per
//! step (its checks as the case's output, a failure when it failed).

use std::fmt::Write as _;

use super::model::Report;
use crate::exec::journal::StepStatus;

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the report as JUnit XML.
pub fn render(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = report.phases.iter().map(|p| p.steps.len()).sum();
    let failures: usize = report
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .filter(|s| s.status == StepStatus::Failed)
        .count();
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{total}\" failures=\"{failures}\">",
        xml(&report.runbook)
    );
    for phase in &report.phases {
        let failed = phase
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .count();
        let skipped = phase
            .steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Skipped | StepStatus::Pending))
            .count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\">",
            xml(phase.title.as_deref().unwrap_or(&phase.id)),
            phase.steps.len()
        );
        for step in &phase.steps {
            let seconds = match (step.started_at, step.finished_at) {
                (Some(a), Some(b)) => (b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0,
                _ => 0.0,
            };
            let _ = writeln!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{seconds:.3}\">",
                xml(&phase.id),
                xml(&step.id)
            );
            match step.status {
                StepStatus::Failed | StepStatus::CompensationFailed => {
                    let _ = writeln!(out, "      <failure message=\"{}\"/>", xml(&step.detail));
                }
                StepStatus::Pending | StepStatus::Skipped => {
                    let _ = writeln!(out, "      <skipped message=\"{}\"/>", xml(&step.detail));
                }
                _ => {}
            }
            if !step.checks.is_empty() {
                let lines: Vec<String> = step
                    .checks
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}: measured {} ({})",
                            if c.passed { "PASS" } else { "FAIL" },
                            c.criterion,
                            c.measured,
                            c.detail
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "      <system-out>{}</system-out>",
                    xml(&lines.join("\n"))
                );
            }
            let _ = writeln!(out, "    </testcase>");
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
