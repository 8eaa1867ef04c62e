//! One step, start to end: gate or manual decision, `skip_if`, capture before acting,
//! attempts with `retry`, polling with `until`, checks, the value it records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::{RecordedValues, Shared};
use super::event::RunEvent;
use super::journal::{CheckRecord, GateDecision, GateRecord, StepStatus};
use super::operator::{Answer, DecisionRequest, Question};
use crate::actions::resolve::Resolver;
use crate::actions::{ActionError, Captured, RunContext};
use crate::runbook::action::{Action, Effect, GateFallback};
use crate::runbook::expect::Expect;
use crate::runbook::model::Step;
use crate::runbook::units::format_duration;
use crate::value::Value;

pub use crate::actions::runner::DEFAULT_STEP_TIMEOUT;
/// Time limit of a data-movement step (copy, verify, delete) that sets none.
pub const LONG_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How a step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepEnd {
    /// Done (succeeded, recovered or skipped).
    Done(StepStatus),
    /// Failed, with why.
    Failed(String),
    /// A gate or manual step could not be decided now.
    Undecided,
    /// A gate said no-go (or a manual step was aborted); `true` to roll back.
    NoGo {
        /// Roll back rather than just stop.
        rollback: bool,
    },
    /// The run was interrupted while the step ran.
    Interrupted,
}

/// Runs `step` (a step of a phase, or a rollback step).
pub async fn execute(shared: Arc<Shared>, step: Step) -> StepEnd {
    let started = Instant::now();
    shared.emit(RunEvent::StepStarted {
        step: step.id.clone(),
        title: step.title.clone(),
        operation: shared.operation(&step),
    });
    let end = match &step.action {
        Action::Gate(_) | Action::Manual(_) => decide(&shared, &step).await,
        _ => match unprotected(&shared, &step) {
            Some(reason) => StepEnd::Failed(reason),
            None => match fenced(&shared, &step).await {
                Some(end) => end,
                None => act(&shared, &step).await,
            },
        },
    };
    let (status, detail) = match &end {
        StepEnd::Done(status) => (
            *status,
            shared.journal.read(|j| {
                j.steps
                    .get(&step.id)
                    .map(|r| r.detail.clone())
                    .unwrap_or_default()
            }),
        ),
        StepEnd::Failed(reason) => (StepStatus::Failed, reason.clone()),
        StepEnd::Undecided => (StepStatus::Pending, "waiting for a decision".to_owned()),
        StepEnd::NoGo { .. } => (StepStatus::Failed, "no-go".to_owned()),
        StepEnd::Interrupted => (StepStatus::Running, "interrupted".to_owned()),
    };
    shared.journal.update(|j| {
        if let Some(record) = j.steps.get_mut(&step.id) {
            match &end {
                StepEnd::Done(s) => {
                    j.complete(&step.id, *s);
                }
                StepEnd::Failed(reason) => {
                    record.status = StepStatus::Failed;
                    record.detail = reason.clone();
                    record.finished_at = Some(jiff::Timestamp::now());
                }
                StepEnd::Undecided => record.status = StepStatus::Pending,
                StepEnd::NoGo { .. } => {
                    record.status = StepStatus::Failed;
                    record.detail = "no-go".into();
                }
                StepEnd::Interrupted => {}
            }
        }
    });
    if step.action.params().effect() == Effect::Mutating || !matches!(end, StepEnd::Done(_)) {
        shared.persist();
    }
    let value = shared.value_text(&step.id);
    let hint = matches!(end, StepEnd::Failed(_))
        .then(|| step.hint.clone())
        .flatten();
    shared.emit(RunEvent::StepFinished {
        step: step.id.clone(),
        status,
        value,
        detail: shared.redactor.redact(&detail),
        elapsed: started.elapsed(),
        hint,
    });
    end
}

/// Before a change: a run whose lock another run took over stops here, the step not
/// begun (its holder resumes it), with the reason in the step's record.
async fn fenced(shared: &Shared, step: &Step) -> Option<StepEnd> {
    if step.action.params().effect() != Effect::Mutating {
        return None;
    }
    let why = shared.fenced().await?;
    let why = format!("refused before it changed anything: {why}");
    tracing::error!(step = %step.id, "{why}");
    shared.journal.update(|j| {
        if let Some(r) = j.steps.get_mut(&step.id) {
            r.detail = shared.redactor.redact(&why);
        }
    });
    shared.emit(RunEvent::StepProgress {
        step: step.id.clone(),
        message: shared.redactor.redact(&why),
        remaining: None,
        measure: None,
    });
    shared.cancel.cancel();
    Some(StepEnd::Interrupted)
}

/// Tells everyone watching (the terminal, the live page, webhooks) that the run waits
/// for `request` to be decided.
pub(super) fn announce(shared: &Shared, request: &DecisionRequest) {
    let (question, manual, signoffs) = match &request.question {
        Question::Gate { question, signoffs } => (question.clone(), false, signoffs.clone()),
        Question::Manual { instruction, .. } => (instruction.clone(), true, Vec::new()),
    };
    shared.emit(RunEvent::GateOpened {
        gate: request.id.clone(),
        question,
        evidence: request.evidence.clone(),
        automatic: shared.operator.decides_alone(&request.id),
        manual,
        signoffs,
    });
}

async fn decide(shared: &Shared, step: &Step) -> StepEnd {
    let (question, timeout, on_timeout, on_no_go) = match &step.action {
        Action::Gate(gate) => (
            Question::Gate {
                question: shared.display(&gate.question),
                signoffs: gate.signoffs.clone(),
            },
            gate.timeout.map(|t| t.0),
            gate.on_timeout,
            gate.on_no_go,
        ),
        Action::Manual(manual) => (
            Question::Manual {
                instruction: shared.display(&manual.instruction),
                by: manual.by.clone(),
            },
            step.timeout,
            GateFallback::Abort,
            GateFallback::Abort,
        ),
        _ => return StepEnd::Failed("not a decision".into()),
    };
    shared.journal.update(|j| {
        if let Some(r) = j.steps.get_mut(&step.id) {
            r.status = StepStatus::Running;
            r.started_at.get_or_insert(jiff::Timestamp::now());
        }
    });
    let request = DecisionRequest {
        id: step.id.clone(),
        question,
        evidence: shared.evidence(),
        timeout,
    };
    announce(shared, &request);
    let answer = tokio::select! {
        answer = shared.operator.decide(&request) => answer,
        _ = shared.cancel.cancelled() => return StepEnd::Interrupted,
    };
    match answer {
        Answer::Decided {
            decision,
            who,
            how,
            signoffs,
        } => {
            shared.journal.update(|j| {
                j.gates.push(GateRecord {
                    gate: step.id.clone(),
                    decision,
                    who: who.clone(),
                    how: how.clone(),
                    at: jiff::Timestamp::now(),
                    signoffs,
                });
                if let Some(r) = j.steps.get_mut(&step.id) {
                    r.detail = format!(
                        "{} by {who} ({how})",
                        if decision == GateDecision::Go {
                            "go"
                        } else {
                            "no-go"
                        }
                    );
                }
            });
            shared.persist();
            shared.emit(RunEvent::GateDecided {
                gate: step.id.clone(),
                decision,
                who,
                how,
            });
            match decision {
                GateDecision::Go => StepEnd::Done(StepStatus::Succeeded),
                GateDecision::NoGo => StepEnd::NoGo {
                    rollback: on_no_go == GateFallback::Rollback,
                },
            }
        }
        Answer::Unavailable => StepEnd::Undecided,
        Answer::TimedOut => {
            let limit = timeout.map(format_duration).unwrap_or_default();
            shared.journal.update(|j| {
                j.gates.push(GateRecord {
                    gate: step.id.clone(),
                    decision: GateDecision::NoGo,
                    who: "redis-move".into(),
                    how: format!("timeout after {limit}"),
                    at: jiff::Timestamp::now(),
                    signoffs: Vec::new(),
                })
            });
            StepEnd::NoGo {
                rollback: on_timeout == GateFallback::Rollback,
            }
        }
    }
}

/// Builds the context of one action from the shared state and the recorded values.
pub fn context<'a>(shared: &'a Shared, values: &'a RecordedValues) -> RunContext<'a> {
    RunContext {
        resolver: Resolver {
            secrets: &shared.secrets,
            steps: values,
        },
        redactor: &shared.redactor,
        run_started: shared.started,
        progress: &shared.events,
        cancel: &shared.cancel,
        run_dir: shared.journal.directory(),
    }
}

/// Why a delete must not run: its `backup:` step did not succeed in this run (it
/// failed under `on_failure: continue`, was skipped, or never ran).
fn unprotected(shared: &Shared, step: &Step) -> Option<String> {
    let Action::RedisDelete(p) = &step.action else {
        return None;
    };
    let backup = p.backup.as_ref()?;
    let status = shared
        .journal
        .read(|j| j.steps.get(&backup.value).map(|r| r.status));
    match status {
        Some(StepStatus::Succeeded | StepStatus::Recovered) => None,
        other => Some(format!(
            "refusing to delete: its backup step `{}` {}; nothing was deleted",
            backup.value,
            match other {
                Some(StepStatus::Failed) => "failed".to_owned(),
                Some(StepStatus::Skipped) =>
                    "was skipped (it backed nothing up in this run)".to_owned(),
                Some(StepStatus::Pending) | None => "has not run".to_owned(),
                Some(s) => format!("is {s:?}").to_lowercase(),
            }
        )),
    }
}

async fn act(shared: &Shared, step: &Step) -> StepEnd {
    let values = shared.recorded_values();
    let ctx = context(shared, &values);
    let mutating = step.action.params().effect() == Effect::Mutating;

    if let Some(probe) = &step.skip_if {
        match shared.runner.perform(probe, None, &ctx).await {
            Ok(value) => {
                let held = probe
                    .expect
                    .as_ref()
                    .map(|e| e.check(&value, &ctx.resolver));
                if let Some(outcome) = held.filter(|o| o.passed) {
                    shared.journal.update(|j| {
                        if let Some(r) = j.steps.get_mut(&step.id) {
                            r.detail = format!(
                                "skipped: already in place ({})",
                                shared.redactor.redact(&outcome.detail)
                            );
                        }
                    });
                    return StepEnd::Done(StepStatus::Skipped);
                }
            }
            Err(e) => shared.emit(RunEvent::StepProgress {
                step: step.id.clone(),
                message: format!(
                    "skip_if probe failed ({}); running the step",
                    shared.redactor.redact(&e.to_string())
                ),
                remaining: None,
                measure: None,
            }),
        }
    }

    let captured = shared.journal.update(|j| {
        let record = j.steps.get_mut(&step.id)?;
        record.status = StepStatus::Running;
        record.started_at.get_or_insert(jiff::Timestamp::now());
        record.captured.clone()
    });
    // A mutating step is journaled as started, with its before-state, before it acts.
    let captured = if mutating && captured.is_none() {
        match shared.runner.capture(step, &ctx).await {
            Ok(captured) => {
                shared.journal.update(|j| {
                    if let Some(r) = j.steps.get_mut(&step.id) {
                        r.captured = captured.clone();
                    }
                });
                captured
            }
            Err(e) => {
                return StepEnd::Failed(format!(
                    "could not capture the state before acting: {}",
                    shared.redactor.redact(&e.to_string())
                ));
            }
        }
    } else {
        captured
    };
    if mutating {
        shared.persist();
    }

    match &step.until {
        Some(until) => poll(shared, step, until, captured.as_ref(), &ctx).await,
        None => attempts(shared, step, captured.as_ref(), &ctx).await,
    }
}

fn limit_of(step: &Step) -> Duration {
    match (&step.action, step.timeout) {
        (_, Some(t)) => t,
        (Action::Wait(w), None) => w.duration.0 + Duration::from_secs(60),
        // Actions with a time limit of their own get it, plus a margin.
        (Action::RedisReplicate(p), None) => {
            p.timeout.map_or(Duration::from_secs(3600), |t| t.0) + Duration::from_secs(60)
        }
        (Action::RedisSyncStop(p), None) => {
            p.timeout.map_or(Duration::from_secs(300), |t| t.0) + Duration::from_secs(60)
        }
        (Action::RedisPromote(p), None) => {
            p.timeout.map_or(Duration::from_secs(300), |t| t.0) + Duration::from_secs(60)
        }
        // Data movement takes as long as the data needs; `timeout:` bounds it.
        (
            Action::RedisCopy(_)
            | Action::RedisSync(_)
            | Action::RedisVerify(_)
            | Action::RedisDelete(_)
            | Action::RedisSnapshot(_),
            None,
        ) => LONG_STEP_TIMEOUT,
        (_, None) => DEFAULT_STEP_TIMEOUT,
    }
}

/// One attempt: the action within its time limit, cancellable; `again`: not the step's
/// first.
async fn attempt(
    shared: &Shared,
    step: &Step,
    captured: Option<&Captured>,
    ctx: &RunContext<'_>,
    again: bool,
) -> Option<Result<Value, ActionError>> {
    let limit = limit_of(step);
    tracing::debug!(step = %step.id, action = step.action.name(), target = ?step.target, "attempt");
    let mutating = step.action.params().effect() == Effect::Mutating;
    // Every attempt of a change (a retry, an `until` round) is one more change; the
    // first was checked before the step began (`fenced`).
    if mutating
        && again
        && let Some(why) = shared.fenced().await
    {
        let why = format!("refused before this attempt changed anything: {why}");
        tracing::error!(step = %step.id, "{why}");
        shared.emit(RunEvent::StepProgress {
            step: step.id.clone(),
            message: shared.redactor.redact(&why),
            remaining: None,
            measure: None,
        });
        shared.cancel.cancel();
        return None;
    }
    let work = tokio::time::timeout(limit, shared.runner.perform(step, captured, ctx));
    tokio::pin!(work);
    let result = tokio::select! {
        result = &mut work => result,
        _ = shared.cancel.cancelled() => {
            if !mutating {
                return None;
            }
            // A change in flight is given a moment to finish rather than cut in half.
            match tokio::time::timeout(Duration::from_secs(30), &mut work).await {
                Ok(result) => result,
                Err(_) => return None,
            }
        }
    };
    Some(match result {
        Ok(result) => result,
        Err(_) => Err(ActionError::timeout(format!(
            "`{}` took longer than {}",
            step.action.name(),
            format_duration(limit)
        ))),
    })
}

fn record_check(
    shared: &Shared,
    step: &Step,
    expect: &Expect,
    value: &Value,
    resolver: &Resolver<'_>,
) -> (bool, String) {
    let outcome = expect.check(value, resolver);
    let check = CheckRecord {
        criterion: shared.redactor.redact(&expect.to_string()),
        measured: shared
            .redactor
            .redact(&short(&expect.measured(value)))
            .replace('\n', "\\n"),
        passed: outcome.passed,
        detail: shared.redactor.redact(&outcome.detail),
        at: jiff::Timestamp::now(),
    };
    shared.journal.update(|j| {
        if let Some(r) = j.steps.get_mut(&step.id) {
            r.checks.push(check.clone());
        }
    });
    shared.emit(RunEvent::Check {
        step: step.id.clone(),
        check,
    });
    (outcome.passed, outcome.detail)
}

fn short(text: &str) -> String {
    if text.chars().count() > 200 {
        format!("{}...", text.chars().take(197).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// An action's failure in a sentence, including a non-zero exit code or a verification
/// that found differences, when the step has no `expect` to judge it.
fn command_failure(step: &Step, value: &Value) -> Option<String> {
    if step.expect.is_some() || step.until.is_some() {
        return None;
    }
    if matches!(step.action, Action::RedisVerify(_)) {
        return crate::actions::verify::failure(value);
    }
    match value.field("exit_code") {
        Some(Value::Number(code)) if *code != 0.0 => {
            let output = value
                .field("output")
                .map(Value::as_text)
                .unwrap_or_default();
            let tail: String = output
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            Some(format!("exited with code {code}: {tail}"))
        }
        _ => None,
    }
}

async fn attempts(
    shared: &Shared,
    step: &Step,
    captured: Option<&Captured>,
    ctx: &RunContext<'_>,
) -> StepEnd {
    let max = step.retry.as_ref().map_or(1, |r| r.attempts.max(1));
    let mut wait = step
        .retry
        .as_ref()
        .and_then(|r| r.interval)
        .map_or(Duration::from_secs(1), |i| i.0);
    let mut last_error = String::new();
    for n in 1..=max {
        shared.journal.update(|j| {
            if let Some(r) = j.steps.get_mut(&step.id) {
                r.attempts += 1;
            }
        });
        let Some(result) = attempt(shared, step, captured, ctx, n > 1).await else {
            return StepEnd::Interrupted;
        };
        let failure = match result {
            Ok(value) => {
                let failure = match &step.expect {
                    Some(expect) => {
                        let (passed, detail) =
                            record_check(shared, step, expect, &value, &ctx.resolver);
                        (!passed).then(|| format!("expected {expect}: {detail}"))
                    }
                    None => command_failure(step, &value),
                };
                shared.record_value(&step.id, value);
                match failure {
                    None => {
                        return StepEnd::Done(if n > 1 {
                            StepStatus::Recovered
                        } else {
                            StepStatus::Succeeded
                        });
                    }
                    Some(f) => f,
                }
            }
            Err(e) => e.to_string(),
        };
        last_error = shared.redactor.redact(&failure);
        if n < max {
            shared.emit(RunEvent::StepProgress {
                step: step.id.clone(),
                message: format!(
                    "attempt {n}/{max} failed: {last_error}; retrying in {}",
                    format_duration(wait)
                ),
                remaining: Some(wait),
                measure: None,
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shared.cancel.cancelled() => return StepEnd::Interrupted,
            }
            if let Some(retry) = &step.retry {
                let next = wait.mul_f64(retry.backoff.unwrap_or(1.0));
                wait = retry.max_interval.map_or(next, |m| next.min(m.0));
            }
        }
    }
    let attempts = if max > 1 {
        format!(" (after {max} attempts)")
    } else {
        String::new()
    };
    StepEnd::Failed(format!("{last_error}{attempts}"))
}

async fn poll(
    shared: &Shared,
    step: &Step,
    until: &Expect,
    captured: Option<&Captured>,
    ctx: &RunContext<'_>,
) -> StepEnd {
    let limit = step.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT);
    let interval = step.interval.unwrap_or(Duration::from_secs(1));
    let deadline = Instant::now() + limit;
    let mut last;
    let mut polls = 0u32;
    loop {
        polls += 1;
        let Some(result) = attempt(shared, step, captured, ctx, polls > 1).await else {
            return StepEnd::Interrupted;
        };
        match result {
            Ok(value) => {
                let outcome = until.check(&value, &ctx.resolver);
                last = shared.redactor.redact(&outcome.detail);
                if outcome.passed || Instant::now() >= deadline {
                    record_check(shared, step, until, &value, &ctx.resolver);
                    shared.record_value(&step.id, value);
                    shared.journal.update(|j| {
                        if let Some(r) = j.steps.get_mut(&step.id) {
                            r.attempts = polls;
                        }
                    });
                    if outcome.passed {
                        return StepEnd::Done(StepStatus::Succeeded);
                    }
                    return StepEnd::Failed(format!(
                        "still not {until} after {}: {last}",
                        format_duration(limit)
                    ));
                }
            }
            Err(e) => last = shared.redactor.redact(&e.to_string()),
        }
        if Instant::now() >= deadline {
            return StepEnd::Failed(format!(
                "still not {until} after {}: {last}",
                format_duration(limit)
            ));
        }
        shared.emit(RunEvent::StepProgress {
            step: step.id.clone(),
            message: format!("waiting until {until} (now: {last})"),
            remaining: Some(deadline.saturating_duration_since(Instant::now())),
            measure: Some(crate::exec::event::Measure::time(
                limit,
                deadline.saturating_duration_since(Instant::now()),
            )),
        });
        tokio::select! {
            _ = tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))) => {}
            _ = shared.cancel.cancelled() => return StepEnd::Interrupted,
        }
    }
}
