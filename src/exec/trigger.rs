//! Rollback triggers: read-only probes watched while the run is inside their window,
//! and the conditions that fire them (a threshold, failing for a while, an increase
//! within a sliding window, a rate against a baseline, N failures in a row), with
//! explicit handling of errors and missing data.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::Shared;
use super::event::RunEvent;
use super::journal::{BaselineRecord, SampleRecord, SeriesPoint, StepStatus, TriggerRecord};
use crate::actions::RunContext;
use crate::actions::resolve::{Resolver, value_at};
use crate::runbook::expect::{Expect, NoResolver, Operand};
use crate::runbook::model::{Baseline, FireCondition, Step, Trigger};
use crate::runbook::spec::{DataPolicy, FireAction, TriggerMode};
use crate::runbook::units::{Quantity, format_duration, format_number};
use crate::value::Value;

/// Samples kept for the journal.
const KEPT_SAMPLES: usize = 12;

/// Where the run is, for windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// The phase running now.
    pub phase: Option<String>,
    /// The run moved past its steps (finished, stopped or rolling back).
    pub over: bool,
}

/// A trigger fired; the engine decides what happens.
#[derive(Debug)]
pub struct Fired {
    /// The trigger.
    pub trigger: String,
    /// Why.
    pub reason: String,
    /// Ask the operator first (action `pause`, or an inconclusive probe).
    pub ask: bool,
    /// What to journal (its outcome is set by the engine).
    pub record: TriggerRecord,
    /// Answer `true` to keep watching (the operator chose to continue).
    pub reply: oneshot::Sender<bool>,
}

/// One probe result, reduced to what the conditions need.
#[derive(Clone, Debug)]
enum Sample {
    Value { value: Value, healthy: bool },
    Error(String),
    NoData,
}

#[derive(Clone, Debug)]
struct Taken {
    at: Instant,
    wall: jiff::Timestamp,
    sample: Sample,
    bad: bool,
}

enum Verdict {
    Quiet,
    Fire(String),
    Inconclusive(String),
    /// The trigger cannot be judged for the rest of the run (no baseline from before its
    /// step): asked once; continuing stops watching it.
    Unwatchable(String),
}

/// The memory of one trigger while its window is open.
#[derive(Default)]
struct State {
    history: VecDeque<Taken>,
    bad_since: Option<Instant>,
    consecutive: u32,
    opened_at: Option<Instant>,
    baseline: Option<f64>,
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => Some(*n),
        Value::Duration(d) => Some(d.as_secs_f64()),
        Value::List(items) => Some(items.len() as f64),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

/// `current - earlier`, leaf by leaf for objects.
fn delta(current: &Value, earlier: &Value) -> Value {
    match (current, earlier) {
        (Value::Object(a), Value::Object(b)) => Value::Object(
            a.iter()
                .map(|(k, v)| (k.clone(), b.get(k).map_or(Value::Null, |e| delta(v, e))))
                .collect(),
        ),
        _ => match (number(current), number(earlier)) {
            (Some(a), Some(b)) => Value::Number(a - b),
            _ => Value::Null,
        },
    }
}

fn ratio_test(expect: &Expect) -> Option<(crate::runbook::units::CompareOp, f64)> {
    match expect {
        Expect::Compare {
            op,
            operand: Operand::Known(Quantity::Ratio(r)),
            ..
        } => Some((*op, *r)),
        _ => None,
    }
}

fn describe_sample(sample: &Sample) -> String {
    match sample {
        Sample::Value { value, .. } => {
            let text = value.to_string();
            if text.chars().count() > 240 {
                format!("{}...", text.chars().take(237).collect::<String>())
            } else {
                text
            }
        }
        Sample::Error(e) => format!("error: {e}"),
        Sample::NoData => "no data".into(),
    }
}

impl State {
    /// Takes a sample into account; what the trigger says now.
    fn evaluate(
        &mut self,
        trigger: &Trigger,
        sample: Sample,
        resolver: &Resolver<'_>,
        measured: Option<&BaselineRecord>,
    ) -> Verdict {
        let now = Instant::now();
        let policy_bad = |policy: DataPolicy, what: &str| -> Result<Option<bool>, String> {
            match policy {
                DataPolicy::Fail => Ok(Some(true)),
                DataPolicy::Ignore => Ok(None),
                DataPolicy::Inconclusive => Err(what.to_owned()),
            }
        };
        let classified = match &sample {
            Sample::Error(e) => policy_bad(trigger.on_error, &format!("the probe failed: {e}")),
            Sample::NoData => policy_bad(trigger.on_no_data, "the probe returned no data"),
            Sample::Value { value, healthy } => Ok(Some(match &trigger.fire {
                FireCondition::Threshold(expect) => expect.check(value, &NoResolver).passed,
                FireCondition::FailingFor(_) | FireCondition::Consecutive(_) => !healthy,
                FireCondition::Increase { .. } | FireCondition::Rate { .. } => false,
            })),
        };
        let bad = match classified {
            Err(why) => return Verdict::Inconclusive(why),
            Ok(None) => return Verdict::Quiet,
            Ok(Some(bad)) => bad,
        };
        self.history.push_back(Taken {
            at: now,
            wall: jiff::Timestamp::now(),
            sample: sample.clone(),
            bad,
        });
        if bad {
            self.bad_since.get_or_insert(now);
            self.consecutive += 1;
        } else {
            self.bad_since = None;
            self.consecutive = 0;
        }
        let horizon = match &trigger.fire {
            FireCondition::Increase { within, .. } => *within,
            FireCondition::Rate {
                baseline: Baseline::Measured(d),
                ..
            } => (*d).max(Duration::from_secs(1)) * 2,
            FireCondition::Rate { .. } => Duration::from_secs(120),
            _ => Duration::from_secs(3600),
        };
        while self.history.len() > KEPT_SAMPLES
            && self
                .history
                .front()
                .is_some_and(|t| now.duration_since(t.at) > horizon)
        {
            self.history.pop_front();
        }
        let shown = describe_sample(&sample);
        match &trigger.fire {
            FireCondition::Threshold(expect) if bad => match &sample {
                Sample::Value { .. } => Verdict::Fire(format!("value {shown} matches `{expect}`")),
                _ => Verdict::Fire(shown),
            },
            FireCondition::FailingFor(d) => match self.bad_since {
                Some(since) if now.duration_since(since) >= *d => Verdict::Fire(format!(
                    "failing for {} (last: {shown})",
                    format_duration(now.duration_since(since))
                )),
                _ => Verdict::Quiet,
            },
            FireCondition::Consecutive(n) if self.consecutive >= *n => Verdict::Fire(format!(
                "{} failing probes in a row (last: {shown})",
                self.consecutive
            )),
            FireCondition::Increase { by, within } => {
                let Sample::Value { value, .. } = &sample else {
                    return Verdict::Quiet;
                };
                let Some(oldest) = self
                    .history
                    .iter()
                    .find(|t| now.duration_since(t.at) <= *within)
                else {
                    return Verdict::Quiet;
                };
                let Sample::Value { value: earlier, .. } = &oldest.sample else {
                    return Verdict::Quiet;
                };
                let grown = delta(value, earlier);
                let outcome = by.check(&grown, &NoResolver);
                if outcome.passed {
                    Verdict::Fire(format!(
                        "grew by {grown} within {} ({})",
                        format_duration(now.duration_since(oldest.at)),
                        outcome.detail
                    ))
                } else {
                    Verdict::Quiet
                }
            }
            FireCondition::Rate {
                ratio,
                baseline,
                floor,
            } => {
                let Sample::Value { value, .. } = &sample else {
                    return Verdict::Quiet;
                };
                let Some(current) = number(value) else {
                    return Verdict::Inconclusive(format!(
                        "`rate` needs a number, the probe gave {}",
                        value.kind_name()
                    ));
                };
                let opened = self.opened_at.unwrap_or(now);
                let (window, base) = match baseline {
                    Baseline::Recorded(template) => {
                        if self.baseline.is_none() {
                            match resolver
                                .resolve(template)
                                .ok()
                                .and_then(|t| t.trim().parse::<f64>().ok())
                            {
                                Some(b) => self.baseline = Some(b),
                                None => {
                                    return Verdict::Inconclusive(format!(
                                        "the baseline `{}` has no value",
                                        template.display()
                                    ));
                                }
                            }
                        }
                        (Duration::from_secs(60), self.baseline)
                    }
                    Baseline::Measured(d) => {
                        if self.baseline.is_none() && now.duration_since(opened) >= *d {
                            let first = self.history.iter().find_map(|t| match &t.sample {
                                Sample::Value { value, .. } => number(value).map(|n| (t.at, n)),
                                _ => None,
                            });
                            if let Some((at, start)) = first {
                                let seconds = now.duration_since(at).as_secs_f64().max(0.001);
                                self.baseline = Some((current - start) / seconds);
                            }
                        }
                        (*d, self.baseline)
                    }
                    Baseline::Before { step, window, .. } => match measured {
                        // The step has not started: the baseline is still being measured.
                        None => return Verdict::Quiet,
                        Some(record) => match record.rate {
                            Some(rate) => (*window, Some(rate)),
                            None => {
                                return Verdict::Unwatchable(format!(
                                    "no baseline from before step `{step}`: {}",
                                    record.note
                                ));
                            }
                        },
                    },
                };
                let Some(base) = base else {
                    return Verdict::Quiet;
                };
                let Some((at, earlier)) = self
                    .history
                    .iter()
                    .find(|t| now.duration_since(t.at) <= window)
                    .and_then(|t| match &t.sample {
                        Sample::Value { value, .. } => number(value).map(|n| (t.at, n)),
                        _ => None,
                    })
                else {
                    return Verdict::Quiet;
                };
                let seconds = now.duration_since(at).as_secs_f64();
                // The current rate needs half a baseline window of samples: a burst over
                // a second or two is not a rate.
                if seconds < window.as_secs_f64() / 2.0 {
                    return Verdict::Quiet;
                }
                let rate = (current - earlier) / seconds;
                let times = rate / base.max(*floor);
                match ratio_test(ratio) {
                    Some((op, r))
                        if op.holds(times.partial_cmp(&r).unwrap_or(std::cmp::Ordering::Less)) =>
                    {
                        Verdict::Fire(format!(
                            "growing {}/s, {}x the baseline {}/s",
                            format_number((rate * 100.0).round() / 100.0),
                            format_number((times * 10.0).round() / 10.0),
                            format_number((base * 100.0).round() / 100.0)
                        ))
                    }
                    _ => Verdict::Quiet,
                }
            }
            _ => Verdict::Quiet,
        }
    }

    fn samples(&self, redactor: &crate::redact::Redactor) -> Vec<SampleRecord> {
        self.history
            .iter()
            .rev()
            .take(KEPT_SAMPLES)
            .rev()
            .map(|t| SampleRecord {
                at: t.wall,
                value: redactor.redact(&describe_sample(&t.sample)),
                bad: t.bad,
            })
            .collect()
    }

    /// When to take the next sample: the interval, or sooner when a `failing_for`
    /// deadline comes first (so it fires on time).
    fn next_delay(&self, trigger: &Trigger) -> Duration {
        match (&trigger.fire, self.bad_since) {
            (FireCondition::FailingFor(d), Some(since)) => {
                let left = (*d).saturating_sub(Instant::now().duration_since(since));
                trigger.every.min(left.max(Duration::from_millis(50)))
            }
            _ => trigger.every,
        }
    }
}

/// Whether `trigger`'s window is open now.
fn window_open(
    shared: &Shared,
    trigger: &Trigger,
    progress: &Progress,
    opened: Option<Instant>,
) -> bool {
    if progress.over {
        return false;
    }
    let w = &trigger.window;
    let done = |id: &str| {
        shared
            .journal
            .read(|j| j.steps.get(id).is_some_and(|r| r.status.is_done()))
    };
    let in_phase = w.phases.is_empty()
        || progress
            .phase
            .as_ref()
            .is_some_and(|p| w.phases.contains(p));
    let after_from = w.from.as_deref().is_none_or(done);
    let before_until = w.until.as_deref().is_none_or(|u| !done(u));
    let within = match (w.duration, opened) {
        (Some(d), Some(at)) => Instant::now().duration_since(at) < d,
        _ => true,
    };
    in_phase && after_from && before_until && within && progress.phase.is_some()
}

/// Starts watching every trigger; fired ones come out of the returned receiver.
pub fn spawn(
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    stop: CancellationToken,
) -> mpsc::UnboundedReceiver<Fired> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for trigger in shared.runbook.triggers.clone() {
        if let FireCondition::Rate {
            baseline: Baseline::Before { step, window, .. },
            ..
        } = &trigger.fire
        {
            let (shared, trigger, progress, stop) = (
                shared.clone(),
                trigger.clone(),
                progress.clone(),
                stop.clone(),
            );
            let (step, window) = (step.clone(), *window);
            tokio::spawn(async move {
                tokio::select! {
                    _ = measure_baseline(&shared, &trigger, &step, window, progress) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        let shared = shared.clone();
        let progress = progress.clone();
        let sender = sender.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = watch_one(shared, trigger, progress, sender) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    receiver
}

async fn probe(shared: &Shared, trigger: &Trigger) -> Sample {
    probe_with(shared, trigger, &trigger.probe).await
}

/// Takes one sample with `action` (the trigger's probe, or its baseline probe).
async fn probe_with(shared: &Shared, trigger: &Trigger, action: &Step) -> Sample {
    let values = shared.recorded_values();
    let never = CancellationToken::new();
    let ctx = RunContext {
        resolver: Resolver {
            secrets: &shared.secrets,
            steps: &values,
        },
        redactor: &shared.redactor,
        run_started: shared.started,
        progress: &shared.events,
        cancel: &never,
        run_dir: shared.journal.directory(),
    };
    // A probe that hangs (a paused server) counts as failing.
    match tokio::time::timeout(trigger.timeout, shared.runner.perform(action, None, &ctx)).await {
        Err(_) => Sample::Error(format!(
            "no answer within {}",
            format_duration(trigger.timeout)
        )),
        Ok(Err(e)) => Sample::Error(shared.redactor.redact(&e.to_string())),
        Ok(Ok(value)) => {
            let healthy = action
                .expect
                .as_ref()
                .is_none_or(|e| e.check(&value, &ctx.resolver).passed);
            let selected = if trigger.field.is_empty() {
                Some(&value)
            } else {
                value_at(&value, &trigger.field)
            };
            match selected {
                None | Some(Value::Null) => Sample::NoData,
                Some(v) => Sample::Value {
                    value: v.clone(),
                    healthy,
                },
            }
        }
    }
}

/// Samples `trigger`'s probe from the start of the run until `step` starts, and journals
/// the rate over the last `window` before it: the normal rate a `baseline_before`
/// trigger compares with. A resumed run keeps the baseline its first process measured.
async fn measure_baseline(
    shared: &Shared,
    trigger: &Trigger,
    step: &str,
    window: Duration,
    progress: watch::Receiver<Progress>,
) {
    if shared
        .journal
        .read(|j| j.baselines.contains_key(&trigger.id))
    {
        return;
    }
    let started = || {
        shared.journal.read(|j| {
            j.steps
                .get(step)
                .is_some_and(|r| r.status != StepStatus::Pending)
        })
    };
    let mut samples: VecDeque<(Instant, f64)> = VecDeque::new();
    let mut problem = String::new();
    let mut taken = 0usize;
    let resumed_past = started();
    while !resumed_past && !started() {
        if progress.borrow().over {
            return;
        }
        taken += 1;
        let action = match &trigger.fire {
            FireCondition::Rate {
                baseline:
                    Baseline::Before {
                        probe: Some(probe), ..
                    },
                ..
            } => probe,
            _ => &trigger.probe,
        };
        match probe_with(shared, trigger, action).await {
            Sample::Value { value, .. } => match number(&value) {
                Some(n) => samples.push_back((Instant::now(), n)),
                None => problem = format!("the probe gave {}, not a number", value.kind_name()),
            },
            Sample::Error(e) => problem = format!("the probe failed: {e}"),
            Sample::NoData => problem = "the probe returned no data".into(),
        }
        // Keep the samples of the last `window`, and the one just before it so that the
        // measurement spans the whole window.
        while samples.len() > 2
            && samples
                .back()
                .zip(samples.get(1))
                .is_some_and(|(last, second)| last.0.duration_since(second.0) >= window)
        {
            samples.pop_front();
        }
        // Wake up soon after the step starts, not a whole interval later.
        let next = Instant::now() + trigger.every;
        while Instant::now() < next && !started() && !progress.borrow().over {
            tokio::time::sleep(Duration::from_millis(100).min(trigger.every)).await;
        }
    }
    let record = baseline_record(step, window, &samples, taken, resumed_past, &problem);
    let detail = match record.rate {
        Some(rate) => format!(
            "{}/s over the {} before `{step}` ({} samples){}",
            format_number((rate * 1000.0).round() / 1000.0),
            format_duration(Duration::from_secs_f64(record.seconds.round())),
            record.samples,
            if record.note.is_empty() {
                String::new()
            } else {
                format!("; {}", record.note)
            }
        ),
        None => format!("none: {}", record.note),
    };
    shared
        .journal
        .update(|j| j.baselines.insert(trigger.id.clone(), record));
    shared.persist();
    shared.emit(RunEvent::BaselineMeasured {
        trigger: trigger.id.clone(),
        detail: shared.redactor.redact(&detail),
    });
}

/// The rate over the samples kept before a step, or why there is none.
fn baseline_record(
    step: &str,
    window: Duration,
    samples: &VecDeque<(Instant, f64)>,
    taken: usize,
    resumed_past: bool,
    problem: &str,
) -> BaselineRecord {
    let mut record = BaselineRecord {
        before: step.to_owned(),
        rate: None,
        seconds: 0.0,
        samples: samples.len(),
        at: jiff::Timestamp::now(),
        note: String::new(),
    };
    match (samples.front(), samples.back()) {
        (Some(first), Some(last)) if samples.len() >= 2 => {
            let seconds = last.0.duration_since(first.0).as_secs_f64().max(0.001);
            record.seconds = seconds;
            record.rate = Some((last.1 - first.1) / seconds);
            if seconds < window.as_secs_f64() * 0.9 {
                record.note = format!(
                    "the run reached `{step}` {} after it started, less than the {} asked for",
                    format_duration(Duration::from_secs_f64(seconds.round())),
                    format_duration(window)
                );
            }
        }
        _ if resumed_past => {
            record.note = format!(
                "the run was resumed after `{step}` had started, and no earlier process measured it"
            );
        }
        _ => {
            record.note = format!(
                "{} usable sample(s) of {taken} before `{step}` started{}",
                samples.len(),
                if problem.is_empty() {
                    String::new()
                } else {
                    format!(" ({problem})")
                }
            );
        }
    }
    record
}

fn condition(trigger: &Trigger) -> String {
    match &trigger.fire {
        FireCondition::Threshold(e) => format!("value {e}"),
        FireCondition::FailingFor(d) => format!("failing for {}", format_duration(*d)),
        FireCondition::Increase { by, within } => {
            format!("increase {by} within {}", format_duration(*within))
        }
        FireCondition::Rate { ratio, .. } => format!("growth {ratio} the baseline"),
        FireCondition::Consecutive(n) => format!("{n} failures in a row"),
    }
}

async fn watch_one(
    shared: Arc<Shared>,
    trigger: Trigger,
    mut progress: watch::Receiver<Progress>,
    sender: mpsc::UnboundedSender<Fired>,
) {
    loop {
        // Wait for the window to open.
        let opened = loop {
            let now = progress.borrow().clone();
            if now.over {
                return;
            }
            if window_open(&shared, &trigger, &now, None) {
                break Instant::now();
            }
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        };
        let mut state = State {
            opened_at: Some(opened),
            ..State::default()
        };
        loop {
            if !window_open(&shared, &trigger, &progress.borrow().clone(), Some(opened)) {
                break;
            }
            let sample = probe(&shared, &trigger).await;
            let values = shared.recorded_values();
            let resolver = Resolver {
                secrets: &shared.secrets,
                steps: &values,
            };
            let measured = shared
                .journal
                .read(|j| j.baselines.get(&trigger.id).cloned());
            let verdict = state.evaluate(&trigger, sample, &resolver, measured.as_ref());
            if let Some(taken) = state.history.back() {
                let point = SeriesPoint {
                    at: taken.wall,
                    value: match &taken.sample {
                        Sample::Value { value, .. } => number(value),
                        _ => None,
                    },
                    bad: taken.bad,
                };
                shared
                    .journal
                    .update(|j| j.add_point(&trigger.id, point.clone()));
            }
            let mut unwatchable = false;
            let (reason, inconclusive) = match verdict {
                Verdict::Quiet => {
                    tokio::time::sleep(state.next_delay(&trigger)).await;
                    continue;
                }
                Verdict::Fire(reason) => (reason, false),
                Verdict::Inconclusive(reason) => (format!("inconclusive: {reason}"), true),
                Verdict::Unwatchable(reason) => {
                    unwatchable = true;
                    (
                        format!("inconclusive: {reason}; continuing stops watching this trigger"),
                        true,
                    )
                }
            };
            if trigger.mode == TriggerMode::Shadow && !inconclusive {
                record(
                    &shared,
                    &trigger,
                    &reason,
                    "shadow: would have fired",
                    &state,
                );
                state = State {
                    opened_at: Some(opened),
                    ..State::default()
                };
                tokio::time::sleep(trigger.every).await;
                continue;
            }
            let ask = inconclusive || trigger.action == FireAction::Pause;
            let (reply, answer) = oneshot::channel();
            let record = TriggerRecord {
                trigger: trigger.id.clone(),
                condition: condition(&trigger),
                reason: shared.redactor.redact(&reason),
                at: jiff::Timestamp::now(),
                outcome: String::new(),
                samples: state.samples(&shared.redactor),
            };
            if sender
                .send(Fired {
                    trigger: trigger.id.clone(),
                    reason,
                    ask,
                    record,
                    reply,
                })
                .is_err()
            {
                return;
            }
            match answer.await {
                Ok(true) if unwatchable => return,
                Ok(true) => {
                    state = State {
                        opened_at: Some(opened),
                        ..State::default()
                    };
                    tokio::time::sleep(trigger.every).await;
                }
                _ => return,
            }
        }
        // The window closed; a later phase may open it again.
    }
}

fn record(shared: &Shared, trigger: &Trigger, reason: &str, outcome: &str, state: &State) {
    let samples = state.samples(&shared.redactor);
    shared.journal.update(|j| {
        j.triggers.push(TriggerRecord {
            trigger: trigger.id.clone(),
            condition: condition(trigger),
            reason: shared.redactor.redact(reason),
            at: jiff::Timestamp::now(),
            outcome: outcome.to_owned(),
            samples,
        })
    });
    shared.emit(RunEvent::TriggerFired {
        trigger: trigger.id.clone(),
        condition: condition(trigger),
        reason: shared.redactor.redact(reason),
        outcome: outcome.to_owned(),
    });
}

/// Journals a fired trigger with what came of it, and tells the reporters.
pub fn record_fired(shared: &Shared, mut record: TriggerRecord, outcome: &str) {
    record.outcome = outcome.to_owned();
    shared.emit(RunEvent::TriggerFired {
        trigger: record.trigger.clone(),
        condition: record.condition.clone(),
        reason: record.reason.clone(),
        outcome: outcome.to_owned(),
    });
    shared.journal.update(|j| j.triggers.push(record));
    shared.persist();
}
