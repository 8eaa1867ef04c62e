//! What a run reports as it goes. The engine emits these and never prints; reporters
//! (progress bars, plain lines, JSON lines, the final report) decide how they look.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::journal::{CheckRecord, GateDecision, RollbackRecord, RunStatus, StepStatus};

/// One thing that happened in a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run started (or resumed).
    RunStarted {
        /// Run id.
        run_id: String,
        /// Runbook name.
        runbook: String,
        /// Whether this continues an earlier run.
        resumed: bool,
        /// Steps in the run.
        steps: usize,
    },
    /// A phase started.
    PhaseStarted {
        /// Phase id.
        phase: String,
        /// Title.
        title: Option<String>,
        /// 1-based position.
        index: usize,
        /// Number of phases.
        total: usize,
    },
    /// A step started.
    StepStarted {
        /// Step id.
        step: String,
        /// Title.
        title: Option<String>,
        /// The operation, in words (secrets masked).
        operation: String,
    },
    /// Something for the operator to see while a step runs (a countdown, a retry).
    StepProgress {
        /// Step id.
        step: String,
        /// What is going on.
        message: String,
        /// Time left, for countdowns.
        remaining: Option<Duration>,
        /// How far along, in the step's own measure (keys, bytes, seconds), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        measure: Option<Measure>,
    },
    /// A check was made.
    Check {
        /// Step id.
        step: String,
        /// The check.
        check: CheckRecord,
    },
    /// The pre-flight of a run judged a step's servers, before anything changed.
    Preflight {
        /// Step id.
        step: String,
        /// Whether they fit it; `None`: not known yet (checked again before it acts).
        passed: Option<bool>,
        /// What was found.
        detail: String,
    },
    /// A step ended.
    StepFinished {
        /// Step id.
        step: String,
        /// How.
        status: StepStatus,
        /// Its value, in words (secrets masked).
        value: Option<String>,
        /// Details (why it failed, why it was skipped).
        detail: String,
        /// How long it took.
        elapsed: Duration,
        /// Shown on failure.
        hint: Option<String>,
    },
    /// The run waits for a decision.
    GateOpened {
        /// Gate (or manual step) id.
        gate: String,
        /// The question or instruction.
        question: String,
        /// The checks since the previous gate, one line each (`PASS step: ...`).
        evidence: Vec<String>,
        /// It is decided at once, without asking anyone (`--yes`, `--approve`).
        automatic: bool,
        /// A manual step ("done?") rather than a go/no-go gate.
        #[serde(default)]
        manual: bool,
        /// The named sign-offs a "go" needs (roles), in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        signoffs: Vec<String>,
    },
    /// A gate was decided.
    GateDecided {
        /// Gate id.
        gate: String,
        /// The decision.
        decision: GateDecision,
        /// Who.
        who: String,
        /// How.
        how: String,
    },
    /// A trigger fired (or would have, in shadow mode).
    TriggerFired {
        /// The trigger.
        trigger: String,
        /// Its condition.
        condition: String,
        /// Why, with the observed values.
        reason: String,
        /// What happens now.
        outcome: String,
    },
    /// A trigger's baseline was measured before its step (`baseline_before`).
    BaselineMeasured {
        /// The trigger.
        trigger: String,
        /// The baseline in words (or why there is none).
        detail: String,
    },
    /// A phase cannot start because a target a rollback would return to does not answer.
    RollbackTargetDown {
        /// The phase.
        phase: String,
        /// The target and why.
        detail: String,
    },
    /// A rollback started.
    RollbackStarted {
        /// Why.
        reason: String,
    },
    /// One rollback action ended.
    RollbackAction {
        /// What was done.
        record: RollbackRecord,
    },
    /// The run ended.
    RunFinished {
        /// Final status.
        status: RunStatus,
        /// Why it ended that way.
        reason: String,
        /// The journal.
        journal: PathBuf,
    },
}

/// How far along a long step is: `done` of `total` in `unit`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Done so far.
    pub done: f64,
    /// All there is to do.
    pub total: f64,
    /// What is counted.
    pub unit: MeasureUnit,
}

impl Measure {
    /// `done` of `total` `unit`s (`total` at least `done`, and above zero).
    pub fn of(done: f64, total: f64, unit: MeasureUnit) -> Measure {
        Measure {
            done: done.max(0.0),
            total: total.max(done).max(f64::MIN_POSITIVE),
            unit,
        }
    }

    /// The time a countdown of `total` has used, with `remaining` left.
    pub fn time(total: Duration, remaining: Duration) -> Measure {
        let total = total.as_secs_f64();
        Measure::of(
            total - remaining.as_secs_f64().min(total),
            total,
            MeasureUnit::Seconds,
        )
    }

    /// Done, between 0 and 1.
    pub fn fraction(&self) -> f64 {
        (self.done / self.total).clamp(0.0, 1.0)
    }
}

/// What a [`Measure`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureUnit {
    /// Keys.
    Keys,
    /// Bytes.
    Bytes,
    /// Seconds of a wait or a time limit.
    Seconds,
}

/// Where events go.
pub type EventSender = tokio::sync::mpsc::UnboundedSender<RunEvent>;

impl crate::actions::Progress for EventSender {
    fn report(
        &self,
        step: &str,
        message: String,
        remaining: Option<Duration>,
        measure: Option<Measure>,
    ) {
        let _ = self.send(RunEvent::StepProgress {
            step: step.to_owned(),
            message,
            remaining,
            measure,
        });
    }
}
