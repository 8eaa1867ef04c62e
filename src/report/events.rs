//! `events.jsonl`: every event of a run, one JSON object a line, beside its journal.
//! The live page reads its log tail and the gate a run waits at from it, in the process
//! that runs the runbook and in `redis-move serve` alike. Text is redacted before it is
//! written, like every other sink.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exec::event::RunEvent;
use crate::redact::Redactor;

/// One event as the log keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// When it happened.
    pub at: jiff::Timestamp,
    /// The line a plain log shows for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The event.
    pub event: RunEvent,
}

/// Appends the events of a run to its `events.jsonl`.
pub struct EventLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    redactor: Redactor,
    /// When each running step's progress was last logged.
    progress: std::collections::HashMap<String, jiff::Timestamp>,
}

impl EventLog {
    /// The log at `path` (created at the first event; appended to on resume).
    pub fn new(path: PathBuf, redactor: Redactor) -> EventLog {
        EventLog {
            path,
            file: None,
            redactor,
            progress: Default::default(),
        }
    }

    /// Appends `event`. A log that cannot be written is a loss for the live page only:
    /// the run goes on (its journal is what `resume` needs).
    pub fn append(&mut self, event: &RunEvent) {
        let now = jiff::Timestamp::now();
        let mut text = super::live::line(event);
        match event {
            // A step's progress: its first report with its line; then at most one a
            // second (the page shows the latest in the step's row), in the log tail
            // only when it is a note rather than a tick of a countdown or a bar.
            RunEvent::StepProgress {
                step,
                remaining,
                measure,
                ..
            } => match self.progress.get(step) {
                None => {
                    self.progress.insert(step.clone(), now);
                }
                Some(last) if now.duration_since(*last).as_secs_f64() < 1.0 => return,
                Some(_) => {
                    self.progress.insert(step.clone(), now);
                    if remaining.is_some() || measure.is_some() {
                        text = None;
                    }
                }
            },
            RunEvent::StepFinished { step, .. } => {
                self.progress.remove(step);
            }
            _ => {}
        }
        let logged = LoggedEvent {
            at: now,
            text,
            event: event.clone(),
        };
        let Ok(value) = serde_json::to_value(&logged) else {
            return;
        };
        let value = crate::redact::at_sink_value(&self.redactor.redact_json(&value));
        if self.file.is_none() {
            // Names and addresses: readable by its owner only, like the journal.
            let mut open = std::fs::OpenOptions::new();
            open.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
            self.file = open.open(&self.path).ok();
        }
        if let Some(file) = &mut self.file {
            let mut line = value.to_string();
            line.push('\n');
            if file.write_all(line.as_bytes()).is_err() {
                self.file = None;
            }
        }
    }
}

/// The events of a log that decide which gate a run waits at (gates opened and decided,
/// runs started and finished), read as the log grows: a gate opened hours and thousands
/// of progress lines ago is still found.
#[derive(Default)]
pub struct GateEvents {
    offset: u64,
    partial: Vec<u8>,
    kept: Vec<LoggedEvent>,
}

impl GateEvents {
    /// Reads what was appended to `path` since the last call; the events kept so far
    /// (from the latest start of the run).
    pub fn update(&mut self, path: &Path) -> &[LoggedEvent] {
        if let Ok(mut file) = std::fs::File::open(path) {
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            if length < self.offset {
                // A new log: read it from its start.
                *self = GateEvents::default();
            }
            let mut bytes = Vec::new();
            if file.seek(SeekFrom::Start(self.offset)).is_ok()
                && file.read_to_end(&mut bytes).is_ok()
            {
                self.offset += bytes.len() as u64;
                self.partial.extend_from_slice(&bytes);
                let complete = self
                    .partial
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| i + 1);
                if let Some(end) = complete {
                    let lines: Vec<u8> = self.partial.drain(..end).collect();
                    for line in String::from_utf8_lossy(&lines).lines() {
                        if !(line.contains(r#""event":"gate_"#)
                            || line.contains(r#""event":"run_"#))
                        {
                            continue;
                        }
                        let Ok(logged) = serde_json::from_str::<LoggedEvent>(line) else {
                            continue;
                        };
                        if matches!(logged.event, RunEvent::RunStarted { .. }) {
                            self.kept.clear();
                        }
                        self.kept.push(logged);
                    }
                    if self.kept.len() > 4000 {
                        self.kept.drain(..2000);
                    }
                }
            }
        }
        &self.kept
    }
}

/// The last events of the log at `path` (at most `limit`, read from its last MiB);
/// none when there is no log yet. Lines that do not parse (a line being written) are
/// left out.
pub fn tail(path: &Path, limit: usize) -> Vec<LoggedEvent> {
    const WINDOW: u64 = 1 << 20;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(WINDOW);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The window starts mid-line.
        lines.remove(0);
    }
    let mut events: Vec<LoggedEvent> = lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(limit)
        .collect();
    events.reverse();
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_redacted_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut redactor = Redactor::default();
        redactor.add("Hunter2-Secret");
        let mut log = EventLog::new(path.clone(), redactor);
        for i in 0..5 {
            log.append(&RunEvent::StepProgress {
                step: format!("s{i}"),
                message: format!("auth with Hunter2-Secret at redis://:pw{i}@h:1"),
                remaining: None,
                measure: None,
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("Hunter2-Secret"), "{text}");
        assert!(!text.contains(":pw3@"), "{text}");
        let last = tail(&path, 2);
        assert_eq!(last.len(), 2);
        let steps: Vec<String> = last
            .iter()
            .map(|e| match &e.event {
                RunEvent::StepProgress { step, .. } => step.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(steps, ["s3", "s4"]);
        assert!(tail(&dir.path().join("none"), 5).is_empty());
    }

    #[test]
    fn a_step_s_ticks_are_kept_once_a_second_and_only_its_first_in_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::new(path.clone(), Redactor::default());
        let tick = |left: u64| RunEvent::StepProgress {
            step: "watch".into(),
            message: "waiting 5s".into(),
            remaining: Some(std::time::Duration::from_secs(left)),
            measure: Some(crate::exec::event::Measure::time(
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(left),
            )),
        };
        for left in [5, 4, 3] {
            log.append(&tick(left));
        }
        // Three ticks within a second: the first only, with its line.
        let kept = tail(&path, 10);
        assert_eq!(kept.len(), 1);
        assert!(
            kept[0]
                .text
                .as_deref()
                .is_some_and(|t| t.contains("waiting 5s"))
        );
        // A second later: kept, without a line of its own in the log.
        log.progress.insert(
            "watch".into(),
            jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2),
        );
        log.append(&tick(2));
        let kept = tail(&path, 10);
        assert_eq!(kept.len(), 2);
        assert!(kept[1].text.is_none());
        match &kept[1].event {
            RunEvent::StepProgress {
                measure: Some(m), ..
            } => assert!((m.fraction() - 0.6).abs() < 1e-9, "{m:?}"),
            other => panic!("{other:?}"),
        }
    }
}
