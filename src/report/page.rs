//! The live page of a run (`run --serve`, `redis-move serve`): a static shell and its
//! script, embedded in the binary (nothing is fetched from elsewhere), and the state
//! they show, built from the run's journal and its event log: phases and steps with
//! their state and duration, the gate the run waits at with its evidence and sign-offs,
//! each trigger's values against its threshold, and the log tail. The text comes from
//! the journal and the event log, which hold it redacted; the whole state passes the
//! output sink's redaction again before it leaves.

use std::fmt::Write;

use serde::Serialize;
use serde_json::json;

use super::events::LoggedEvent;
use super::html::{Span, chart, clock, color, esc, status_name};
use super::model::Report;
use crate::exec::event::{Measure, RunEvent};
use crate::exec::journal::{RunStatus, Signoff, StepStatus};
use crate::runbook::units::format_elapsed;

/// Lines of the log tail the page shows.
pub const LOG_LINES: usize = 60;

/// The gate (or manual step) a run waits at.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingGate {
    /// Its id.
    pub id: String,
    /// A manual step ("done?") rather than a go/no-go gate.
    pub manual: bool,
    /// The question or instruction.
    pub question: String,
    /// The checks since the previous gate, one line each.
    pub evidence: Vec<String>,
    /// The named sign-offs a "go" needs.
    pub roles: Vec<String>,
    /// The sign-offs given so far.
    pub signed: Vec<Signoff>,
    /// Since when it waits.
    pub since: jiff::Timestamp,
    /// The run stopped there (no process waits): a decision is used by `resume`.
    pub stopped: bool,
}

impl WaitingGate {
    /// The roles still to sign.
    pub fn unsigned(&self) -> Vec<&str> {
        self.roles
            .iter()
            .filter(|r| !self.signed.iter().any(|s| &s.role == *r))
            .map(String::as_str)
            .collect()
    }
}

/// Whether the run can still move (a process runs it, or it waits for `resume`).
fn open(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Running
            | RunStatus::RollingBack
            | RunStatus::StoppedAtGate
            | RunStatus::Interrupted
    )
}

/// Whether no process runs it now (a decision waits for `resume`).
fn stopped(status: RunStatus) -> bool {
    matches!(status, RunStatus::StoppedAtGate | RunStatus::Interrupted)
}

/// The gate the run waits at: the last one opened and not decided since, while the
/// run is open (a run stopped at it waits for `resume`). Gates decided without anyone
/// (`--yes`, `--approve`) never wait. `events` holds at least the gate and run events.
pub fn waiting_gate(report: &Report, events: &[LoggedEvent]) -> Option<WaitingGate> {
    if !open(report.status) {
        return None;
    }
    let mut waiting: Option<WaitingGate> = None;
    for logged in events {
        match &logged.event {
            RunEvent::GateOpened {
                gate,
                question,
                evidence,
                automatic,
                manual,
                signoffs,
            } => {
                waiting = (!automatic).then(|| WaitingGate {
                    id: gate.clone(),
                    manual: *manual,
                    question: question.clone(),
                    evidence: evidence.clone(),
                    roles: signoffs.clone(),
                    signed: Vec::new(),
                    since: logged.at,
                    stopped: stopped(report.status),
                });
            }
            RunEvent::GateDecided { gate, .. }
                if waiting.as_ref().is_some_and(|w| &w.id == gate) =>
            {
                waiting = None;
            }
            RunEvent::RunFinished { status, .. } if *status == RunStatus::StoppedAtGate => {}
            RunEvent::RunFinished { .. } | RunEvent::RunStarted { .. } => waiting = None,
            _ => {}
        }
    }
    waiting
}

fn millis(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

fn status_word(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::StoppedAtGate => "stopped at a gate",
        RunStatus::NoGo => "no-go",
        RunStatus::Interrupted => "interrupted",
        RunStatus::RollingBack => "rolling back",
        RunStatus::RolledBack => "rolled back",
        RunStatus::RollbackFailed => "ROLLBACK FAILED",
    }
}

fn run_color(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "#1565c0",
        RunStatus::Succeeded => "#2e7d32",
        RunStatus::RolledBack | RunStatus::RollingBack => "#6a1b9a",
        RunStatus::StoppedAtGate => "#f9a825",
        _ => "#c62828",
    }
}

fn header(report: &Report, gate: Option<&WaitingGate>) -> String {
    let title = report.title.as_deref().unwrap_or(&report.runbook);
    let (word, background) = match gate {
        Some(g) if !g.stopped => ("waiting for a decision", "#f9a825"),
        _ => (status_word(report.status), run_color(report.status)),
    };
    let elapsed = match report.finished_at {
        Some(end) => format!(
            "took {}",
            format_elapsed(end.duration_since(report.started_at).unsigned_abs())
        ),
        None => format!(
            r#"running for <span data-since="{}"></span>"#,
            millis(report.started_at)
        ),
    };
    format!(
        r#"<h1>{}</h1><p class="meta">run <code>{}</code> of <code>{}</code> by {} · started {} · {elapsed} · <span id="run-status" class="status" data-status="{}" style="background:{background}">{}</span></p>{}"#,
        esc(title),
        esc(&report.run_id),
        esc(&report.runbook),
        esc(&report.operator),
        report.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        esc(&status_name_of(report.status)),
        esc(word),
        if report.reason.is_empty() {
            String::new()
        } else {
            format!(r#"<p class="reason">{}</p>"#, esc(&report.reason))
        }
    )
}

fn status_name_of(status: RunStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The latest progress of each step, from the event log.
type Progress<'a> = std::collections::HashMap<&'a str, (&'a str, Option<Measure>)>;

fn progress_of(events: &[LoggedEvent]) -> Progress<'_> {
    let mut latest = Progress::new();
    for logged in events {
        if let RunEvent::StepProgress {
            step,
            message,
            measure,
            ..
        } = &logged.event
        {
            latest.insert(step.as_str(), (message.as_str(), *measure));
        }
    }
    latest
}

/// A running step's latest progress: a bar in its own measure, and its line.
fn progress_cell(progress: Option<&(&str, Option<Measure>)>) -> String {
    let Some((message, measure)) = progress else {
        return String::new();
    };
    let bar = measure
        .map(|m| {
            format!(
                r#"<progress max="1000" value="{:.0}"></progress> {:.0}% "#,
                m.fraction() * 1000.0,
                m.fraction() * 100.0
            )
        })
        .unwrap_or_default();
    format!(
        r#"<div class="progress">{bar}<small>{}</small></div>"#,
        esc(message)
    )
}

fn step_rows(page: &mut String, steps: &[super::model::ReportStep], progress: &Progress) {
    for step in steps {
        let took = match (step.started_at, step.finished_at, step.status) {
            (Some(s), Some(f), _) => format_elapsed(f.duration_since(s).unsigned_abs()),
            (Some(s), None, StepStatus::Running) => {
                format!(r#"<span data-since="{}"></span>"#, millis(s))
            }
            _ => String::new(),
        };
        let detail = if step.detail.is_empty() {
            String::new()
        } else {
            format!("<br><small>{}</small>", esc(&step.detail))
        };
        let _ = write!(
            page,
            r#"<tr data-step="{}" data-status="{}"><td><code>{}</code><br><small>{}</small></td><td><i class="dot" style="background:{}"></i>{}</td><td>{took}</td><td>{}{detail}</td></tr>"#,
            esc(&step.id),
            status_name(step.status),
            esc(&step.id),
            esc(step.title.as_deref().unwrap_or(&step.operation)),
            color(step.status),
            status_name(step.status),
            esc(step.value.as_deref().unwrap_or("")),
        );
        if step.status == StepStatus::Running {
            let cell = progress_cell(progress.get(step.id.as_str()));
            if !cell.is_empty() {
                // Inside the row's last cell.
                page.truncate(page.len() - "</td></tr>".len());
                let _ = write!(page, "{cell}</td></tr>");
            }
        }
    }
}

fn steps(report: &Report, events: &[LoggedEvent]) -> String {
    let progress = progress_of(events);
    let mut page = String::new();
    for phase in &report.phases {
        let _ = write!(
            page,
            r#"<h3>{}</h3><table><tr><th>Step</th><th>State</th><th>Took</th><th>Value / detail</th></tr>"#,
            match &phase.title {
                Some(title) => format!(
                    "{} <small><code>{}</code></small>",
                    esc(title),
                    esc(&phase.id)
                ),
                None => format!("<code>{}</code>", esc(&phase.id)),
            }
        );
        step_rows(&mut page, &phase.steps, &progress);
        page.push_str("</table>");
    }
    if !report.rollback_steps.is_empty() {
        page.push_str(r#"<h3>Rollback</h3><table><tr><th>Step</th><th>State</th><th>Took</th><th>Value / detail</th></tr>"#);
        step_rows(&mut page, &report.rollback_steps, &progress);
        page.push_str("</table>");
    }
    page
}

fn charts(report: &Report) -> String {
    let span = Span::of(report);
    let mut page = String::new();
    for series in &report.series {
        let _ = write!(
            page,
            r#"<figure><figcaption>{} <small><code>{}</code></small></figcaption>{}</figure>"#,
            esc(&series.label),
            esc(&series.trigger),
            chart(series, &span)
        );
    }
    page
}

fn log(events: &[LoggedEvent]) -> String {
    let lines: Vec<&LoggedEvent> = events.iter().filter(|e| e.text.is_some()).collect();
    let start = lines.len().saturating_sub(LOG_LINES);
    let mut page = String::new();
    for logged in &lines[start..] {
        let _ = write!(
            page,
            "<div><time>{}</time> {}</div>",
            clock(logged.at),
            esc(logged.text.as_deref().unwrap_or(""))
        );
    }
    page
}

/// Everything the page shows now, as the JSON object its script applies: HTML for the
/// header, steps, charts and log; the waiting gate as data (its form is the page's own,
/// so that typing in it survives updates).
pub fn state(
    report: &Report,
    events: &[LoggedEvent],
    gate: Option<&WaitingGate>,
) -> serde_json::Value {
    let value = json!({
        "run_id": report.run_id,
        "status": status_name_of(report.status),
        "ended": !open(report.status) || stopped(report.status),
        "header": header(report, gate),
        "gate": gate,
        "steps": steps(report, events),
        "charts": charts(report),
        "log": log(events),
    });
    crate::redact::at_sink_value(&value)
}

/// The page (HTML). Its script is [`SCRIPT`], served beside it.
pub const SHELL: &str = include_str!("page/index.html");

/// The page's script.
pub const SCRIPT: &str = include_str!("page/page.js");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::journal::GateDecision;

    fn logged(event: RunEvent) -> LoggedEvent {
        LoggedEvent {
            at: jiff::Timestamp::now(),
            text: None,
            event,
        }
    }

    fn opened(gate: &str, automatic: bool) -> LoggedEvent {
        logged(RunEvent::GateOpened {
            gate: gate.into(),
            question: "Cut over?".into(),
            evidence: vec!["PASS memory: 1 MiB < 1 GiB".into()],
            automatic,
            manual: false,
            signoffs: vec!["operator".into(), "admin".into()],
        })
    }

    fn decided(gate: &str) -> LoggedEvent {
        logged(RunEvent::GateDecided {
            gate: gate.into(),
            decision: GateDecision::Go,
            who: "ana".into(),
            how: "terminal".into(),
        })
    }

    fn report(status: RunStatus) -> Report {
        Report {
            run_id: "r1".into(),
            runbook: "rb".into(),
            title: None,
            path: String::new(),
            sha256: String::new(),
            operator: "ana@host".into(),
            started_at: jiff::Timestamp::now(),
            finished_at: None,
            status,
            reason: String::new(),
            phases: Vec::new(),
            gates: Vec::new(),
            triggers: Vec::new(),
            preflight: Vec::new(),
            rollback: Vec::new(),
            rollback_steps: Vec::new(),
            signoff: Vec::new(),
            series: Vec::new(),
        }
    }

    #[test]
    fn the_gate_waits_from_its_opening_until_its_decision() {
        let running = report(RunStatus::Running);
        let gate = waiting_gate(&running, &[opened("go", false)]).expect("waits");
        assert_eq!(gate.id, "go");
        assert_eq!(gate.unsigned(), ["operator", "admin"]);
        assert!(!gate.stopped);
        assert!(waiting_gate(&running, &[opened("go", false), decided("go")]).is_none());
        // Decided by `--yes`: nobody is asked.
        assert!(waiting_gate(&running, &[opened("go", true)]).is_none());
        // A finished run waits for nothing.
        assert!(waiting_gate(&report(RunStatus::Failed), &[opened("go", false)]).is_none());
        // A run stopped there (it wrote its end) waits for `resume`.
        let finished = |status| {
            logged(RunEvent::RunFinished {
                status,
                reason: String::new(),
                journal: "journal.json".into(),
            })
        };
        let stopped = waiting_gate(
            &report(RunStatus::StoppedAtGate),
            &[opened("go", false), finished(RunStatus::StoppedAtGate)],
        );
        assert!(stopped.expect("still decidable").stopped);
        assert!(
            waiting_gate(
                &report(RunStatus::Running),
                &[opened("go", false), finished(RunStatus::Failed)]
            )
            .is_none()
        );
    }

    #[test]
    fn a_running_step_shows_its_latest_progress_as_a_bar() {
        let mut r = report(RunStatus::Running);
        r.phases.push(crate::report::model::ReportPhase {
            id: "copy".into(),
            title: None,
            steps: vec![crate::report::model::ReportStep {
                id: "copy-keys".into(),
                title: None,
                operation: "redis copy".into(),
                status: StepStatus::Running,
                attempts: 1,
                started_at: Some(jiff::Timestamp::now()),
                finished_at: None,
                value: None,
                detail: String::new(),
                checks: Vec::new(),
            }],
        });
        let tick = |done: f64| {
            logged(RunEvent::StepProgress {
                step: "copy-keys".into(),
                message: format!("{done} of ~200 keys, 1500 keys/s"),
                remaining: None,
                measure: Some(Measure::of(
                    done,
                    200.0,
                    crate::exec::event::MeasureUnit::Keys,
                )),
            })
        };
        let state = state(&r, &[tick(50.0), tick(100.0)], None);
        let steps = state["steps"].as_str().unwrap();
        assert!(
            steps.contains(r#"<progress max="1000" value="500"></progress> 50%"#),
            "{steps}"
        );
        assert!(steps.contains("100 of ~200 keys, 1500 keys/s"), "{steps}");
        assert!(!steps.contains("50 of ~200"), "the latest only: {steps}");
    }

    #[test]
    fn the_state_escapes_text_and_masks_url_passwords() {
        let mut r = report(RunStatus::Running);
        r.reason = "<script>alert(1)</script> redis://:Pw-123456@h:1".into();
        let text = state(&r, &[], None).to_string();
        assert!(!text.contains("<script>"), "{text}");
        assert!(!text.contains("Pw-123456"), "{text}");
    }
}
