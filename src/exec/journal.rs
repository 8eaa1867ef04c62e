//! The run journal: one JSON file per run, rewritten atomically (temp file, fsync,
//! rename) so that a failed, interrupted or killed run can be resumed from exactly
//! where it stopped, and rolled back from what it captured.
//!
//! Writes are coalesced for read-only progress, but a change that matters after a crash
//! (a mutating step about to act, its captured before-state, a gate decision, the end of
//! the run) is written and fsynced before the run goes on.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::actions::Captured;
use crate::value::Value;

/// Version of the journal format; a journal of another version is refused.
pub const JOURNAL_FORMAT: u32 = 1;

/// The status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are being executed.
    Running,
    /// Every step finished.
    Succeeded,
    /// A step failed; the run can be resumed.
    Failed,
    /// Stopped at a gate or manual step waiting for a decision; resumable.
    StoppedAtGate,
    /// A gate said no-go.
    NoGo,
    /// Interrupted (SIGINT, or the process died); resumable.
    Interrupted,
    /// Rolling back.
    RollingBack,
    /// Rolled back completely.
    RolledBack,
    /// A rollback step failed: manual action needed.
    RollbackFailed,
}

/// The status of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started (for a mutating step: it may have acted partly).
    Running,
    /// Done at the first attempt.
    Succeeded,
    /// Done after retries.
    Recovered,
    /// Not run: its `skip_if` said the effect is in place, or its phase was skipped.
    Skipped,
    /// Failed.
    Failed,
    /// Undone by a rollback.
    Compensated,
    /// Its undo failed.
    CompensationFailed,
}

impl StepStatus {
    /// Whether the step is finished and need not run again.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Recovered | StepStatus::Skipped
        )
    }
}

/// What the pre-flight of a run found for one step's servers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreflightRecord {
    /// The step.
    pub step: String,
    /// Whether they fit it; `None`: they did not answer yet (checked again before the
    /// step acts).
    pub passed: Option<bool>,
    /// What was found (secrets masked).
    pub detail: String,
    /// When.
    pub at: jiff::Timestamp,
}

/// One check made by a step (or a rollback step), for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// The criterion (`< 8 GiB`).
    pub criterion: String,
    /// The measured value, secrets masked.
    pub measured: String,
    /// Whether it held.
    pub passed: bool,
    /// Why.
    pub detail: String,
    /// When.
    pub at: jiff::Timestamp,
}

/// The journal of one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its phase.
    pub phase: String,
    /// Its status.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    /// The value it recorded (secrets masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Its checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRecord>,
    /// What it captured before acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<Captured>,
    /// The order in which steps finished (for rollback in reverse completion order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_seq: Option<u64>,
    /// A hash of what the step does, to notice a runbook changed under a resume.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
}

impl StepRecord {
    /// A step not started yet.
    pub fn pending(phase: &str) -> Self {
        StepRecord {
            phase: phase.to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            value: None,
            detail: String::new(),
            checks: Vec::new(),
            captured: None,
            completed_seq: None,
            fingerprint: String::new(),
        }
    }
}

/// A gate's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// The gate (step id).
    pub gate: String,
    /// `go` or `no-go`.
    pub decision: GateDecision,
    /// Who decided (`user@host`, or a sign-off name).
    pub who: String,
    /// How (`terminal`, `--approve`, `--yes`, `approve command`, `timeout`).
    pub how: String,
    /// When.
    pub at: jiff::Timestamp,
    /// Named sign-offs given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signoffs: Vec<Signoff>,
}

/// A named sign-off at a gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signoff {
    /// The role (`admin`).
    pub role: String,
    /// Who signed.
    pub who: String,
    /// When.
    pub at: jiff::Timestamp,
}

/// A gate decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateDecision {
    /// Go on.
    Go,
    /// Stop.
    NoGo,
}

/// One rollback action, for the journal and the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// The step being undone (or a rollback step's id).
    pub step: String,
    /// What was done.
    pub operation: String,
    /// `done`, `failed`, `not-undone` (no rollback).
    pub status: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// When.
    pub at: jiff::Timestamp,
}

/// One sample a trigger's probe took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// When.
    pub at: jiff::Timestamp,
    /// The value (secrets masked), or the error.
    pub value: String,
    /// Whether the sample counted against the trigger.
    pub bad: bool,
}

/// A trigger that fired (or, in shadow mode, would have).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The trigger.
    pub trigger: String,
    /// Its condition, in words.
    pub condition: String,
    /// Why it fired, with the observed values.
    pub reason: String,
    /// When.
    pub at: jiff::Timestamp,
    /// `rollback`, `paused: rolled back`, `paused: continued`, `shadow: would have fired`.
    pub outcome: String,
    /// The samples that made it fire (the latest ones).
    pub samples: Vec<SampleRecord>,
}

/// A rate baseline measured before a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineRecord {
    /// The step it was measured before.
    pub before: String,
    /// Units per second; `None` when it could not be measured (see `note`).
    pub rate: Option<f64>,
    /// Seconds between the first and the last sample used.
    pub seconds: f64,
    /// Samples used.
    pub samples: usize,
    /// When the step started (the end of the measurement).
    pub at: jiff::Timestamp,
    /// Why there is no rate, or what limited it (a run started less than the window
    /// before the step).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// The whole journal of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub format: u32,
    /// The run id.
    pub run_id: String,
    /// The runbook's name.
    pub runbook: String,
    /// The runbook file, as given.
    pub path: String,
    /// The runbook file, absolute (to reload it on resume).
    #[serde(default)]
    pub source: String,
    /// `--var`/`--vars-file` overrides of the run (URL passwords masked; a masked one
    /// must be given again on resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<(String, String)>,
    /// SHA-256 of the runbook file when the run started.
    pub sha256: String,
    /// Vars as resolved (secrets masked).
    pub vars: BTreeMap<String, String>,
    /// Who runs it (`user@host`).
    pub operator: String,
    /// The process that wrote it last.
    pub pid: u32,
    /// Status.
    pub status: RunStatus,
    /// Why it stopped (for failed, stopped and interrupted runs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Started.
    pub started_at: jiff::Timestamp,
    /// Last written.
    pub updated_at: jiff::Timestamp,
    /// Ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    /// Per step, by id.
    pub steps: BTreeMap<String, StepRecord>,
    /// Gate decisions, in order.
    #[serde(default)]
    pub gates: Vec<GateRecord>,
    /// Rollback actions, in order.
    #[serde(default)]
    pub rollback: Vec<RollbackRecord>,
    /// Triggers that fired (or would have, in shadow mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerRecord>,
    /// The phase a rollback is limited to (`rollback_scope: phase`); none: the whole run.
    /// Kept so that an interrupted rollback continues with the same scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_phase: Option<String>,
    /// Rate baselines measured before a step (`baseline_before`), by trigger: kept so that
    /// a resumed run compares with the rate of normal operation, not of the cutover.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baselines: BTreeMap<String, BaselineRecord>,
    /// What the pre-flight found of each data-movement step's servers, before anything
    /// changed (latest first check per step; a resume adds its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<PreflightRecord>,
    /// Counter for `completed_seq`.
    #[serde(default)]
    pub completed_count: u64,
}

impl Journal {
    /// Marks `step` finished now with `status`, giving it the next completion number.
    pub fn complete(&mut self, step: &str, status: StepStatus) {
        self.completed_count += 1;
        let seq = self.completed_count;
        if let Some(record) = self.steps.get_mut(step) {
            record.status = status;
            record.finished_at = Some(jiff::Timestamp::now());
            record.completed_seq = Some(seq);
        }
    }
}

/// Errors reading or writing a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O.
    #[error("journal `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a journal, or a corrupt one.
    #[error("journal `{path}` cannot be read: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Writes `journal` to `path` atomically: a temp file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_atomically(path: &Path, journal: &Journal) -> Result<(), JournalError> {
    let mut bytes = serde_json::to_vec_pretty(journal).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_bytes(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, directory fsync).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    temp.write_all(bytes).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads a journal.
pub fn read(path: &Path) -> Result<Journal, JournalError> {
    let text = std::fs::read_to_string(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let journal: Journal = serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if journal.format != JOURNAL_FORMAT {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "format {} (this redis-move reads {JOURNAL_FORMAT})",
                journal.format
            ),
        });
    }
    Ok(journal)
}

/// `user@host` of this process.
pub fn operator() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", hostname())
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Journal {
        let mut steps = BTreeMap::new();
        let mut record = StepRecord::pending("cutover");
        record.status = StepStatus::Running;
        record.value = Some(Value::Number(14.0));
        record.captured = Some(Captured::ConfigValue {
            parameter: "maxmemory".into(),
            previous: "0".into(),
        });
        steps.insert("switch".to_owned(), record);
        Journal {
            format: JOURNAL_FORMAT,
            run_id: "r1".into(),
            runbook: "x".into(),
            path: "x.yaml".into(),
            source: "/tmp/x.yaml".into(),
            overrides: vec![],
            sha256: "ab".into(),
            vars: BTreeMap::new(),
            operator: operator(),
            pid: 1,
            status: RunStatus::Running,
            reason: String::new(),
            started_at: jiff::Timestamp::now(),
            updated_at: jiff::Timestamp::now(),
            finished_at: None,
            steps,
            gates: vec![GateRecord {
                gate: "go".into(),
                decision: GateDecision::Go,
                who: "ops@vm".into(),
                how: "--approve".into(),
                at: jiff::Timestamp::now(),
                signoffs: vec![],
            }],
            rollback: vec![],
            triggers: vec![],
            preflight: vec![],
            baselines: BTreeMap::new(),
            rollback_phase: None,
            completed_count: 0,
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/r1/journal.json");
        let mut journal = sample();
        journal.complete("switch", StepStatus::Succeeded);
        write_atomically(&path, &journal).unwrap();
        assert_eq!(read(&path).unwrap(), journal);
        assert_eq!(journal.steps["switch"].completed_seq, Some(1));
    }

    #[test]
    fn other_formats_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut journal = sample();
        journal.format = 99;
        write_atomically(&path, &journal).unwrap();
        assert!(matches!(read(&path), Err(JournalError::Corrupt { .. })));
        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(read(&path), Err(JournalError::Corrupt { .. })));
    }
}
