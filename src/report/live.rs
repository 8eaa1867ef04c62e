//! Live reporters: progress bars on a terminal, plain timestamped lines otherwise, JSON
//! lines for machines. Each consumes the engine's events on a task of its own.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::exec::event::{Measure, MeasureUnit, RunEvent};
use crate::exec::journal::{GateDecision, StepStatus};
use crate::runbook::units::format_duration;

/// How a run shows its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveFormat {
    /// Spinners and countdowns (a terminal).
    Progress,
    /// Plain timestamped lines (logs, CI).
    Plain,
    /// One JSON object per event on stdout.
    Json,
}

/// Consumes events until the channel closes.
pub fn spawn(
    format: LiveFormat,
    mut events: UnboundedReceiver<RunEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reporter: Box<dyn Reporter + Send> = match format {
            LiveFormat::Progress => Box::new(Progress::new()),
            LiveFormat::Plain => Box::new(Plain),
            LiveFormat::Json => Box::new(Json),
        };
        while let Some(event) = events.recv().await {
            reporter.handle(&event);
        }
        reporter.finish();
    })
}

trait Reporter {
    fn handle(&mut self, event: &RunEvent);
    fn finish(&mut self) {}
}

fn status_word(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "ok",
        StepStatus::Recovered => "ok (after retries)",
        StepStatus::Skipped => "skipped",
        StepStatus::Failed => "FAILED",
        StepStatus::Pending => "waiting",
        StepStatus::Running => "interrupted",
        StepStatus::Compensated => "rolled back",
        StepStatus::CompensationFailed => "ROLLBACK FAILED",
    }
}

/// One line of text per event (shared by the plain and progress reporters, and the
/// live page's log).
pub(crate) fn line(event: &RunEvent) -> Option<String> {
    Some(match event {
        RunEvent::RunStarted {
            run_id,
            runbook,
            resumed,
            steps,
        } => {
            format!(
                "{} run {run_id} of {runbook} ({steps} steps)",
                if *resumed { "resuming" } else { "starting" }
            )
        }
        RunEvent::PhaseStarted {
            phase,
            title,
            index,
            total,
        } => {
            let title = title
                .as_deref()
                .map(|t| format!(" — {t}"))
                .unwrap_or_default();
            format!("phase {index}/{total} {phase}{title}")
        }
        RunEvent::StepStarted {
            step, operation, ..
        } => format!("  start {step}: {operation}"),
        RunEvent::StepProgress {
            step,
            message,
            remaining,
            ..
        } => {
            let left = remaining
                .map(|r| format!(" ({} left)", format_duration(round(r))))
                .unwrap_or_default();
            format!("  ... {step}: {message}{left}")
        }
        RunEvent::Preflight {
            step,
            passed,
            detail,
        } => format!(
            "  pre-flight {step}: {} {detail}",
            match passed {
                Some(true) => "OK",
                Some(false) => "FAIL",
                None => "LATER",
            }
        ),
        RunEvent::Check { step, check } => format!(
            "  check {step}: {} {} — measured {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.criterion,
            check.measured
        ),
        RunEvent::StepFinished {
            step,
            status,
            value,
            detail,
            elapsed,
            hint,
        } => {
            let mut text = format!(
                "  {} {step} ({})",
                status_word(*status),
                format_duration(round(*elapsed))
            );
            if let Some(value) = value.as_ref().filter(|_| *status != StepStatus::Failed) {
                text.push_str(&format!(" value {value}"));
            }
            if !detail.is_empty() && *status != StepStatus::Succeeded {
                text.push_str(&format!(": {detail}"));
            }
            if let Some(hint) = hint {
                text.push_str(&format!("\n    hint: {hint}"));
            }
            text
        }
        RunEvent::GateOpened { gate, question, .. } => format!("GATE {gate}: {question}"),
        RunEvent::GateDecided {
            gate,
            decision,
            who,
            how,
        } => format!(
            "gate {gate}: {} by {who} ({how})",
            if *decision == GateDecision::Go {
                "GO"
            } else {
                "NO-GO"
            }
        ),
        RunEvent::TriggerFired {
            trigger,
            condition,
            reason,
            outcome,
        } => {
            format!("TRIGGER {trigger} fired ({condition}): {reason} — {outcome}")
        }
        RunEvent::BaselineMeasured { trigger, detail } => {
            format!("trigger {trigger}: baseline {detail}")
        }
        RunEvent::RollbackTargetDown { phase, detail } => {
            format!("phase {phase} cannot start: a rollback target does not answer: {detail}")
        }
        RunEvent::RollbackStarted { reason } => format!("ROLLBACK: {reason}"),
        RunEvent::RollbackAction { record } => {
            let detail = if record.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", record.detail)
            };
            format!(
                "  undo {}: {} — {}{detail}",
                record.step, record.operation, record.status
            )
        }
        RunEvent::RunFinished {
            status,
            reason,
            journal,
        } => {
            format!(
                "run finished: {} ({reason})\n  journal: {}",
                crate::report::markdown::status_text(*status),
                journal.display()
            )
        }
    })
}

fn round(d: Duration) -> Duration {
    if d < Duration::from_secs(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        Duration::from_secs(d.as_secs())
    }
}

struct Plain;

impl Reporter for Plain {
    fn handle(&mut self, event: &RunEvent) {
        // Countdowns would flood a log: only their first line.
        if let RunEvent::StepProgress {
            remaining: Some(_),
            message,
            ..
        } = event
            && message.starts_with("waiting ")
        {
            return;
        }
        if let Some(text) = line(event) {
            let stamp = jiff::ZonedDateTime::now().strftime("%H:%M:%S");
            let mut err = std::io::stderr().lock();
            for (i, l) in text.lines().enumerate() {
                let _ = writeln!(
                    err,
                    "{} {l}",
                    if i == 0 {
                        stamp.to_string()
                    } else {
                        "        ".into()
                    }
                );
            }
        }
    }
}

#[derive(Serialize)]
struct Stamped<'a> {
    at: jiff::Timestamp,
    #[serde(flatten)]
    event: &'a RunEvent,
}

struct Json;

impl Reporter for Json {
    fn handle(&mut self, event: &RunEvent) {
        if let Ok(text) = serde_json::to_string(&Stamped {
            at: jiff::Timestamp::now(),
            event,
        }) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }
}

struct Progress {
    multi: MultiProgress,
    spinners: HashMap<String, ProgressBar>,
    style: ProgressStyle,
    bar: ProgressStyle,
}

/// A bar's length and position for `measure`: keys and bytes as counted, time in
/// thousandths.
fn bar_units(measure: &Measure) -> (u64, u64) {
    match measure.unit {
        MeasureUnit::Keys | MeasureUnit::Bytes => {
            (measure.total.round() as u64, measure.done.round() as u64)
        }
        MeasureUnit::Seconds => (1000, (measure.fraction() * 1000.0).round() as u64),
    }
}

impl Progress {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let template = if std::env::var_os("NO_COLOR").is_some() {
            "  {spinner} {prefix} [{elapsed}] {msg}"
        } else {
            "  {spinner:.cyan} {prefix:.bold} [{elapsed}] {msg}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar_template = if std::env::var_os("NO_COLOR").is_some() {
            "  {spinner} {prefix} [{elapsed}] [{bar:24}] {percent:>3}% {msg}"
        } else {
            "  {spinner:.cyan} {prefix:.bold} [{elapsed}] [{bar:24.cyan/blue}] {percent:>3}% {msg}"
        };
        let bar = ProgressStyle::with_template(bar_template)
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        Progress {
            multi,
            spinners: HashMap::new(),
            style,
            bar,
        }
    }
}

impl Reporter for Progress {
    fn handle(&mut self, event: &RunEvent) {
        match event {
            RunEvent::StepStarted {
                step, operation, ..
            } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(self.style.clone());
                bar.set_prefix(step.clone());
                bar.set_message(operation.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.spinners.insert(step.clone(), bar);
            }
            RunEvent::StepProgress {
                step,
                message,
                remaining,
                measure,
            } => {
                if let Some(bar) = self.spinners.get(step) {
                    let left = remaining
                        .map(|r| format!(" — {} left", format_duration(round(r))))
                        .unwrap_or_default();
                    if let Some(measure) = measure {
                        // A step that knows how far along it is: a bar, in its
                        // own measure (the message says keys/s, bytes, time left).
                        if bar.length().is_none() {
                            bar.set_style(self.bar.clone());
                        }
                        let (length, position) = bar_units(measure);
                        bar.set_length(length);
                        bar.set_position(position);
                    }
                    bar.set_message(format!("{message}{left}"));
                }
            }
            RunEvent::Check { .. } => {
                if let Some(text) = line(event) {
                    let _ = self.multi.println(text);
                }
            }
            RunEvent::StepFinished { step, .. } => {
                if let Some(bar) = self.spinners.remove(step) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(text) = line(event) {
                    let _ = self.multi.println(text);
                }
            }
            other => {
                if let Some(text) = line(other) {
                    let _ = self.multi.println(text);
                }
            }
        }
    }

    fn finish(&mut self) {
        for (_, bar) in self.spinners.drain() {
            bar.finish_and_clear();
        }
    }
}
