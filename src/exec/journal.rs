//! The run journal, kept so that a failed, interrupted or killed run can be resumed from
//! exactly where it stopped, and rolled back from what it captured.
//!
//! On disk it is a snapshot, `journal.json` (written atomically: temp file, fsync,
//! rename), and a log beside it, `journal.log`, to which each write appends one JSON line
//! with only what changed since the previous one (the step records touched, the run's
//! own fields, new rollback and pre-flight records), fsynced. A write therefore costs
//! the same at the 10,000th step as at the first. The log is folded into a new snapshot
//! when it has grown as large as the snapshot, and when the run stops (so a finished
//! run's `journal.json` is complete on its own). [`read`] applies the log to the
//! snapshot; a torn last line (a crash during the append) is ignored: the engine had
//! not gone on before it was fsynced.
//!
//! Writes are coalesced for read-only progress, but a change that matters after a crash
//! (a mutating step about to act, its captured before-state, a gate decision, the end of
//! the run) is written and fsynced before the run goes on.

use std::collections::{BTreeMap, BTreeSet};
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

/// Points kept per trigger in [`Journal::trigger_series`].
pub const SERIES_POINTS: usize = 1000;

/// One probe of a trigger, for its chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// When.
    pub at: jiff::Timestamp,
    /// The value as a number (none: an error, no data, or not a number).
    pub value: Option<f64>,
    /// Whether it counted against the trigger.
    pub bad: bool,
}

impl Journal {
    /// Adds a point to trigger `trigger`'s series, halving the series' resolution
    /// when it is full.
    pub fn add_point(&mut self, trigger: &str, point: SeriesPoint) {
        let series = self.trigger_series.entry(trigger.to_owned()).or_default();
        series.push(point);
        if series.len() > SERIES_POINTS {
            let mut keep = false;
            series.retain(|p| {
                keep = !keep;
                keep || p.bad
            });
        }
    }
}

/// One webhook delivery of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// The event (`gate_waiting`, ...).
    pub event: String,
    /// The webhook, as `scheme://host[:port]` (its path may be a secret).
    pub webhook: String,
    /// Whether it was delivered (a 2xx answer).
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// The last answer or error.
    pub detail: String,
    /// When it ended.
    pub at: jiff::Timestamp,
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
    pub steps: StepMap,
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
    /// Each trigger's probe values over the run, for the report's charts (at most
    /// [`SERIES_POINTS`] a trigger: older points are thinned).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trigger_series: BTreeMap<String, Vec<SeriesPoint>>,
    /// Webhook deliveries of the run's events (`notify:`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationRecord>,
    /// Counter for `completed_seq`.
    #[serde(default)]
    pub completed_count: u64,
    /// Which snapshot this is: lines of `journal.log` written after another snapshot are
    /// not applied to it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The step records of a journal, by step id. Reading goes through `Deref`; every
/// mutable access marks the record changed, so that the next write appends only the
/// records that changed.
#[derive(Clone, Debug, Default)]
pub struct StepMap {
    records: BTreeMap<String, StepRecord>,
    changed: BTreeSet<String>,
}

impl StepMap {
    /// The record of `id`, to change (marked changed).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut StepRecord> {
        let record = self.records.get_mut(id)?;
        self.changed.insert(id.to_owned());
        Some(record)
    }

    /// Adds or replaces the record of `id` (marked changed).
    pub fn insert(&mut self, id: String, record: StepRecord) {
        self.changed.insert(id.clone());
        self.records.insert(id, record);
    }

    /// The ids changed since the last call, forgetting them.
    fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
    }
}

impl std::ops::Deref for StepMap {
    type Target = BTreeMap<String, StepRecord>;
    fn deref(&self) -> &Self::Target {
        &self.records
    }
}

impl PartialEq for StepMap {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

impl From<BTreeMap<String, StepRecord>> for StepMap {
    fn from(records: BTreeMap<String, StepRecord>) -> Self {
        let changed = records.keys().cloned().collect();
        StepMap { records, changed }
    }
}

impl Serialize for StepMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.records.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StepMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(StepMap {
            records: BTreeMap::deserialize(deserializer)?,
            changed: BTreeSet::new(),
        })
    }
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

/// The log of changes written after the snapshot `journal`.
pub fn log_path(journal: &Path) -> PathBuf {
    journal.with_extension("log")
}

/// The fields of a journal that a log line carries as additions (`{from, add}`), not
/// whole: they only grow, and a long rollback would otherwise rewrite them every step.
const APPENDED: [&str; 2] = ["rollback", "preflight"];

/// Reads a journal: its snapshot with the lines of its log applied.
pub fn read(path: &Path) -> Result<Journal, JournalError> {
    let corrupt = |path: &Path, message: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(path, e.to_string()))?;
    let generation = value
        .get("generation")
        .and_then(|g| g.as_u64())
        .unwrap_or(0);
    let log = log_path(path);
    match std::fs::read_to_string(&log) {
        Ok(lines) => {
            for (number, line) in lines.split_inclusive('\n').enumerate() {
                if !line.ends_with('\n') {
                    break; // torn by a crash before its fsync: the run had not gone on
                }
                let change: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| corrupt(&log, format!("line {}: {e}", number + 1)))?;
                if change.get("g").and_then(|g| g.as_u64()) == Some(generation) {
                    apply_change(&mut value, change)
                        .map_err(|e| corrupt(&log, format!("line {}: {e}", number + 1)))?;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(JournalError::Io { path: log, source }),
    }
    let journal: Journal =
        serde_json::from_value(value).map_err(|e| corrupt(path, e.to_string()))?;
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

/// The field written in snapshots only (see `header_of`).
const SNAPSHOT_ONLY: &str = "trigger_series";

/// Applies one line of the log to the journal as JSON.
fn apply_change(journal: &mut serde_json::Value, change: serde_json::Value) -> Result<(), String> {
    let serde_json::Value::Object(mut change) = change else {
        return Err("not an object".into());
    };
    let serde_json::Value::Object(fields) = journal else {
        return Err("the snapshot is not an object".into());
    };
    if let Some(serde_json::Value::Object(header)) = change.remove("header") {
        // The run's own fields are written whole: an emptied one is absent, not stale.
        fields.retain(|k, _| {
            k == "steps"
                || k == "generation"
                || k == SNAPSHOT_ONLY
                || APPENDED.contains(&k.as_str())
        });
        fields.extend(header);
    }
    if let Some(serde_json::Value::Object(steps)) = change.remove("steps") {
        let records = fields
            .entry("steps")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        let serde_json::Value::Object(records) = records else {
            return Err("`steps` is not an object".into());
        };
        records.extend(steps);
    }
    for name in APPENDED {
        let Some(added) = change.remove(name) else {
            continue;
        };
        let from = added.get("from").and_then(|f| f.as_u64()).unwrap_or(0) as usize;
        let Some(serde_json::Value::Array(add)) = added.get("add").cloned() else {
            return Err(format!("`{name}` without `add`"));
        };
        let list = fields
            .entry(name)
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        let serde_json::Value::Array(list) = list else {
            return Err(format!("`{name}` is not a list"));
        };
        list.truncate(from);
        list.extend(add);
    }
    Ok(())
}

/// Writes a journal as a snapshot plus a log of changes (see the module documentation).
/// The caller serializes writes and passes the journal under its lock to
/// [`JournalWriter::prepare`], then writes outside it.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    /// The open log; `None` until the first snapshot (and after a failed write), which
    /// makes the next write a snapshot.
    log: Option<std::fs::File>,
    generation: u64,
    /// The run's own fields as last written.
    header: String,
    appended: [usize; 2],
    log_bytes: u64,
    snapshot_bytes: u64,
}

/// Bytes ready to be written by [`JournalWriter::write`].
#[derive(Debug)]
pub enum PendingWrite {
    /// A whole new snapshot (the log is emptied after it).
    Snapshot(Vec<u8>),
    /// One line for the log.
    Append(Vec<u8>),
}

/// The log is folded into a snapshot once it is larger than this and than the snapshot.
const MIN_LOG_BEFORE_SNAPSHOT: u64 = 256 * 1024;

impl JournalWriter {
    /// A writer for the journal at `path`; its first write is a snapshot.
    pub fn new(path: PathBuf) -> Self {
        JournalWriter {
            path,
            log: None,
            generation: 0,
            header: String::new(),
            appended: [0, 0],
            log_bytes: 0,
            snapshot_bytes: 0,
        }
    }

    /// What to write for `journal`, masked by `mask`: a log line with what changed, or
    /// a snapshot when one is due (first write, a large log, a run that stopped).
    pub fn prepare(
        &mut self,
        journal: &mut Journal,
        mask: impl Fn(&serde_json::Value) -> serde_json::Value,
    ) -> PendingWrite {
        let stopped = !matches!(journal.status, RunStatus::Running | RunStatus::RollingBack);
        let due = self.log.is_none()
            || stopped
            || self.log_bytes > self.snapshot_bytes.max(MIN_LOG_BEFORE_SNAPSHOT);
        let changed = journal.steps.take_changed();
        if due {
            self.generation = self.generation.max(journal.generation) + 1;
            journal.generation = self.generation;
            let value = serde_json::to_value(&*journal).unwrap_or_default();
            let mut bytes = serde_json::to_vec_pretty(&mask(&value)).unwrap_or_default();
            bytes.push(b'\n');
            self.header = header_of(journal).to_string();
            self.appended = [journal.rollback.len(), journal.preflight.len()];
            return PendingWrite::Snapshot(bytes);
        }
        let mut line = serde_json::Map::new();
        line.insert("g".into(), self.generation.into());
        let header = header_of(journal);
        let header_text = header.to_string();
        if header_text != self.header {
            line.insert("header".into(), header);
            self.header = header_text;
        }
        if !changed.is_empty() {
            let steps: serde_json::Map<String, serde_json::Value> = changed
                .into_iter()
                .filter_map(|id| {
                    let record = serde_json::to_value(journal.steps.get(&id)?).ok()?;
                    Some((id, record))
                })
                .collect();
            line.insert("steps".into(), steps.into());
        }
        let lists = [
            serde_json::to_value(&journal.rollback),
            serde_json::to_value(&journal.preflight),
        ];
        for (i, list) in lists.into_iter().enumerate() {
            let Ok(serde_json::Value::Array(items)) = list else {
                continue;
            };
            if items.len() != self.appended[i] {
                let from = self.appended[i].min(items.len());
                let add = items[from..].to_vec();
                line.insert(
                    APPENDED[i].into(),
                    serde_json::json!({ "from": from, "add": add }),
                );
                self.appended[i] = items.len();
            }
        }
        let mut bytes =
            serde_json::to_vec(&mask(&serde_json::Value::Object(line))).unwrap_or_default();
        bytes.push(b'\n');
        PendingWrite::Append(bytes)
    }

    /// Writes what [`JournalWriter::prepare`] gave, fsynced. After a failure the next
    /// write is a whole snapshot.
    pub fn write(&mut self, pending: PendingWrite) -> Result<(), JournalError> {
        let result = self.write_inner(pending);
        if result.is_err() {
            self.log = None;
        }
        result
    }

    fn write_inner(&mut self, pending: PendingWrite) -> Result<(), JournalError> {
        let log_path = log_path(&self.path);
        let io = |source| JournalError::Io {
            path: log_path.clone(),
            source,
        };
        match pending {
            PendingWrite::Snapshot(bytes) => {
                write_bytes(&self.path, &bytes)?;
                self.snapshot_bytes = bytes.len() as u64;
                // Lines left from the previous snapshot are of another generation: a
                // crash before this truncation leaves them ignored.
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let log = options.open(&log_path).map_err(io)?;
                log.set_len(0).map_err(io)?;
                log.sync_all().map_err(io)?;
                if let Some(dir) = self.path.parent()
                    && let Ok(dir) = std::fs::File::open(dir)
                {
                    let _ = dir.sync_all();
                }
                self.log = Some(log);
                self.log_bytes = 0;
            }
            PendingWrite::Append(bytes) => {
                let Some(log) = self.log.as_mut() else {
                    return Err(io(std::io::Error::other("the log is not open")));
                };
                log.write_all(&bytes).map_err(io)?;
                log.sync_data().map_err(io)?;
                self.log_bytes += bytes.len() as u64;
            }
        }
        Ok(())
    }
}

/// The run's own fields: the journal without its step records and appended lists.
fn header_of(journal: &mut Journal) -> serde_json::Value {
    let steps = std::mem::take(&mut journal.steps);
    let rollback = std::mem::take(&mut journal.rollback);
    let preflight = std::mem::take(&mut journal.preflight);
    // Every probe adds a point: the series go into snapshots only (the one written
    // when the run stops has them all), not into each line of the log.
    let series = std::mem::take(&mut journal.trigger_series);
    let mut value = serde_json::to_value(&*journal).unwrap_or_default();
    journal.steps = steps;
    journal.rollback = rollback;
    journal.preflight = preflight;
    journal.trigger_series = series;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.remove("steps");
        fields.remove("generation");
        fields.remove(SNAPSHOT_ONLY);
        for name in APPENDED {
            fields.remove(name);
        }
    }
    value
}

/// `user@host` of this process.
pub fn operator() -> String {
    if let Some(name) = OPERATOR.get() {
        return name.clone();
    }
    if let Some(name) = std::env::var("REDIS_MOVE_OPERATOR")
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        return name.trim().to_owned();
    }
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", hostname())
}

/// The name `--operator` gave, for the whole process.
static OPERATOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records who runs redis-move (`--operator`): [`operator`] answers it from then on.
pub fn set_operator(name: &str) {
    let _ = OPERATOR.set(name.to_owned());
}

/// Whether [`operator`] knows who runs redis-move (not `unknown@host`).
pub fn operator_known() -> bool {
    !operator().starts_with("unknown@")
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
            steps: steps.into(),
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
            notifications: vec![],
            trigger_series: Default::default(),
            baselines: BTreeMap::new(),
            rollback_phase: None,
            completed_count: 0,
            generation: 0,
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

    /// Writes `journal` through `writer` with no masking.
    fn write(writer: &mut JournalWriter, journal: &mut Journal) -> usize {
        let pending = writer.prepare(journal, |v| v.clone());
        let size = match &pending {
            PendingWrite::Snapshot(b) | PendingWrite::Append(b) => b.len(),
        };
        writer.write(pending).unwrap();
        size
    }

    #[test]
    fn changes_are_appended_and_read_back_onto_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut journal = sample();
        journal.reason = "stopped at a gate".into();
        let mut writer = JournalWriter::new(path.clone());
        write(&mut writer, &mut journal);
        // A field emptied (skipped when serialized), a step changed, a step added, a
        // rollback record, a trigger changed in place.
        journal.reason.clear();
        journal.steps.get_mut("switch").unwrap().attempts = 3;
        journal.complete("switch", StepStatus::Succeeded);
        journal
            .steps
            .insert("undo".into(), StepRecord::pending("rollback"));
        journal.rollback.push(RollbackRecord {
            step: "switch".into(),
            operation: "op".into(),
            status: "done".into(),
            detail: String::new(),
            at: jiff::Timestamp::now(),
        });
        write(&mut writer, &mut journal);
        journal.gates[0].who = "changed@vm".into();
        write(&mut writer, &mut journal);
        assert!(std::fs::metadata(log_path(&path)).unwrap().len() > 0);
        let mut expected = journal.clone();
        expected.generation = 1;
        assert_eq!(read(&path).unwrap(), expected);
        assert_eq!(read(&path).unwrap().reason, "");

        // A run that stops folds the log into the snapshot.
        journal.status = RunStatus::Failed;
        assert!(matches!(
            writer.prepare(&mut journal, |v| v.clone()),
            PendingWrite::Snapshot(_)
        ));
    }

    #[test]
    fn a_write_costs_the_same_at_every_size_of_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut sizes = Vec::new();
        for steps in [10, 10_000] {
            let path = dir.path().join(format!("{steps}/journal.json"));
            let mut journal = sample();
            for i in 0..steps {
                journal
                    .steps
                    .insert(format!("s{i:05}"), StepRecord::pending("p"));
            }
            let mut writer = JournalWriter::new(path.clone());
            write(&mut writer, &mut journal);
            journal.steps.get_mut("s00007").unwrap().status = StepStatus::Running;
            sizes.push(write(&mut writer, &mut journal));
            assert_eq!(
                read(&path).unwrap().steps["s00007"].status,
                StepStatus::Running
            );
        }
        assert_eq!(sizes[0], sizes[1], "a line holds only what changed");
    }

    #[test]
    fn a_torn_last_line_and_lines_of_an_older_snapshot_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let mut journal = sample();
        let mut writer = JournalWriter::new(path.clone());
        write(&mut writer, &mut journal);
        journal.steps.get_mut("switch").unwrap().attempts = 5;
        write(&mut writer, &mut journal);
        let line = std::fs::read_to_string(log_path(&path)).unwrap();
        // A crash in the middle of the next append.
        let torn = format!("{line}{}", &line[..line.len() / 2]);
        std::fs::write(log_path(&path), &torn).unwrap();
        assert_eq!(read(&path).unwrap().steps["switch"].attempts, 5);
        // A crash after the next snapshot but before the log was emptied.
        journal.steps.get_mut("switch").unwrap().attempts = 1;
        let mut snapshot = journal.clone();
        snapshot.generation = 2;
        write_atomically(&path, &snapshot).unwrap();
        std::fs::write(log_path(&path), &line).unwrap();
        assert_eq!(read(&path).unwrap().steps["switch"].attempts, 1);
        // A complete line that is not JSON is corruption, named by its line.
        std::fs::write(log_path(&path), "{\"g\": 2, \n").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(
            error.contains("journal.log") && error.contains("line 1"),
            "{error}"
        );
    }
}
