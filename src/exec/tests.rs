//! Engine tests with a fake runner and a scripted operator: ordering, retries, failure
//! handling, gates, resume and rollback, without any I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::engine::{self, JournalHandle, RunOptions, RunOutcome, Shared};
use super::event::RunEvent;
use super::journal::{GateDecision, RunStatus, StepStatus};
use super::operator::{Answer, DecisionRequest, Operator};
use crate::actions::resolve::Secrets;
use crate::actions::{ActionError, ActionRunner, Captured, RunContext};
use crate::backend::BackendError;
use crate::redact::Redactor;
use crate::runbook::model::Step;
use crate::runbook::{Runbook, SourceFile, load_source};
use crate::value::Value;

#[derive(Default)]
struct FakeRunner {
    /// Per step id: results to return, in order (then the last one again).
    script: Mutex<HashMap<String, VecDeque<Result<Value, ActionError>>>>,
    calls: Mutex<Vec<String>>,
    running: Mutex<usize>,
    max_running: Mutex<usize>,
    delay: Duration,
    /// Per step id: how long its action takes.
    slow: Mutex<HashMap<String, Duration>>,
    /// Per step id: its value as a function of the (tokio) time since the runner was made.
    ramps: Mutex<HashMap<String, Ramp>>,
    made: Mutex<Option<tokio::time::Instant>>,
}

type Ramp = Box<dyn Fn(Duration) -> f64 + Send + Sync>;

impl FakeRunner {
    fn with(script: &[(&str, Vec<Result<Value, ActionError>>)]) -> Arc<Self> {
        let runner = FakeRunner::default();
        for (id, results) in script {
            runner
                .script
                .lock()
                .unwrap()
                .insert((*id).to_owned(), results.iter().cloned().collect());
        }
        Arc::new(runner)
    }

    fn slow(self: Arc<Self>, id: &str, took: Duration) -> Arc<Self> {
        self.slow.lock().unwrap().insert(id.to_owned(), took);
        self
    }

    /// `id` answers `f(time since now)`.
    fn ramp(
        self: Arc<Self>,
        id: &str,
        f: impl Fn(Duration) -> f64 + Send + Sync + 'static,
    ) -> Arc<Self> {
        self.made
            .lock()
            .unwrap()
            .get_or_insert_with(tokio::time::Instant::now);
        self.ramps
            .lock()
            .unwrap()
            .insert(id.to_owned(), Box::new(f));
        self
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl ActionRunner for FakeRunner {
    fn capture<'a>(
        &'a self,
        step: &'a Step,
        _: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Option<Captured>, ActionError>> {
        Box::pin(async move {
            Ok(Some(Captured::Changed {
                names: vec![step.id.clone()],
            }))
        })
    }

    fn perform<'a>(
        &'a self,
        step: &'a Step,
        _: Option<&'a Captured>,
        _: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(format!("perform {}", step.id));
            {
                let mut running = self.running.lock().unwrap();
                *running += 1;
                let mut max = self.max_running.lock().unwrap();
                *max = (*max).max(*running);
            }
            let slow = self.slow.lock().unwrap().get(&step.id).copied();
            tokio::time::sleep(slow.unwrap_or(self.delay)).await;
            *self.running.lock().unwrap() -= 1;
            if let Some(ramp) = self.ramps.lock().unwrap().get(&step.id) {
                let made = self.made.lock().unwrap().expect("set with the ramp");
                return Ok(Value::Number(ramp(made.elapsed())));
            }
            let mut script = self.script.lock().unwrap();
            match script.get_mut(&step.id) {
                Some(queue) if queue.len() > 1 => queue.pop_front().unwrap(),
                Some(queue) => queue.front().cloned().unwrap_or(Ok(Value::Null)),
                None => Ok(Value::Number(1.0)),
            }
        })
    }

    fn check_target<'a>(
        &'a self,
        target: &'a str,
        _: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async move {
            if target.contains("dead") {
                Err(BackendError::Unreachable(format!("{target} is down")).into())
            } else {
                Ok(())
            }
        })
    }

    fn undo<'a>(
        &'a self,
        step: &'a Step,
        _: Option<&'a Captured>,
        _: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, ActionError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("undo {}", step.id));
            if step.id.contains("undo-fails") {
                Err(BackendError::Command("cannot undo".into()).into())
            } else {
                Ok(Value::Null)
            }
        })
    }
}

struct ScriptedOperator(Mutex<VecDeque<Answer>>);

impl ScriptedOperator {
    fn new(answers: Vec<Answer>) -> Arc<Self> {
        Arc::new(ScriptedOperator(Mutex::new(answers.into())))
    }
}

impl Operator for ScriptedOperator {
    fn decide<'a>(&'a self, _: &'a DecisionRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            self.0
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Answer::Unavailable)
        })
    }
}

fn go() -> Answer {
    Answer::Decided {
        decision: GateDecision::Go,
        who: "tester".into(),
        how: "test".into(),
        signoffs: vec![],
    }
}

fn runbook(yaml: &str) -> Arc<Runbook> {
    let loaded = load_source(SourceFile::new("engine-test.yaml", yaml), &[]);
    let errors: Vec<_> = loaded
        .diagnostics
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect();
    Arc::new(loaded.runbook.unwrap_or_else(|| panic!("{errors:?}")))
}

struct Harness {
    journal: Arc<JournalHandle>,
    /// The events of the last run.
    events: Mutex<Vec<RunEvent>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(rb: &Runbook) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(JournalHandle::new(
            dir.path().join("journal.json"),
            engine::new_journal(rb, "test-run"),
        ));
        Harness {
            journal,
            events: Default::default(),
            _dir: dir,
        }
    }

    async fn run(
        &self,
        rb: &Arc<Runbook>,
        runner: Arc<FakeRunner>,
        operator: Arc<dyn Operator>,
        options: RunOptions,
    ) -> RunOutcome {
        let (events, mut emitted) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(
            rb.clone(),
            runner,
            operator,
            self.journal.clone(),
            events,
            CancellationToken::new(),
            Arc::new(Secrets::default()),
            Arc::new(Redactor::default()),
        ));
        let outcome = engine::run(shared, options).await;
        let mut kept = self.events.lock().unwrap();
        kept.clear();
        while let Ok(event) = emitted.try_recv() {
            kept.push(event);
        }
        outcome
    }

    fn status(&self, id: &str) -> StepStatus {
        self.journal.read(|j| j.steps[id].status)
    }
}

const STEPS: &str = "version: 1\nname: t\nphases:\n  - id: one\n    steps:\n      - { id: a, shell: { argv: [a] }, rollback: none }\n      - { id: b, shell: { argv: [b] }, rollback: none }\n  - id: two\n    steps:\n      - { id: c, shell: { argv: [c], read_only: true }, expect: { exit_code: 0 } }\n";

#[tokio::test]
async fn phases_and_steps_run_in_order_and_values_are_recorded() {
    let rb = runbook(STEPS);
    let h = Harness::new(&rb);
    let mut ok = std::collections::BTreeMap::new();
    ok.insert("exit_code".to_owned(), Value::Number(0.0));
    let runner = FakeRunner::with(&[("c", vec![Ok(Value::Object(ok))])]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(runner.calls(), ["perform a", "perform b", "perform c"]);
    assert_eq!(h.status("c"), StepStatus::Succeeded);
    let journal = super::journal::read(h.journal.path()).unwrap();
    assert_eq!(journal.status, RunStatus::Succeeded);
    assert_eq!(journal.steps["c"].checks.len(), 1);
    assert!(journal.steps["c"].checks[0].passed);
}

#[tokio::test]
async fn retries_recover_and_say_so() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: p\n    steps:\n      - { id: flaky, tcp: { address: \"h:1\" }, retry: { attempts: 3, interval: 10ms } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "flaky",
        vec![
            Err(ActionError::from(BackendError::Unreachable("no".into()))),
            Err(ActionError::from(BackendError::Unreachable("no".into()))),
            Ok(Value::Duration(Duration::from_millis(3))),
        ],
    )]);
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(h.status("flaky"), StepStatus::Recovered);
    assert_eq!(h.journal.read(|j| j.steps["flaky"].attempts), 3);
}

#[tokio::test]
async fn a_failed_expectation_stops_the_run_and_resume_continues_there() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: p\n    steps:\n      - { id: first, tcp: { address: \"h:1\" } }\n      - { id: depth, redis.dbsize: {}, expect: \"< 10\" }\n      - { id: last, tcp: { address: \"h:1\" } }\ntargets:\n  r: { redis: { url: \"redis://h\" } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "depth",
        vec![Ok(Value::Number(50.0)), Ok(Value::Number(5.0))],
    )]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::Failed { step, reason } if step == "depth" && reason.contains("50 < 10") || reason.contains("expected")),
        "{outcome:?}"
    );
    assert_eq!(h.status("last"), StepStatus::Pending);
    // Resume: `first` is not run again.
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(
        runner.calls(),
        [
            "perform first",
            "perform depth",
            "perform depth",
            "perform last"
        ]
    );
}

#[tokio::test]
async fn a_gate_without_a_decision_stops_and_resume_with_approval_goes_on() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: pre\n    steps:\n      - { id: probe, tcp: { address: \"h:1\" } }\n  - id: go\n    gate: { question: \"Go?\" }\n  - id: after\n    steps:\n      - { id: change, shell: { argv: [x] }, rollback: none }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![Answer::Unavailable]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::StoppedAtGate { gate: "go".into() });
    assert_eq!(h.journal.read(|j| j.status), RunStatus::StoppedAtGate);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![go()]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(runner.calls(), ["perform probe", "perform change"]);
    let gates = h.journal.read(|j| j.gates.clone());
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].who, "tester");
}

#[tokio::test]
async fn failure_under_rollback_undoes_completed_changes_in_reverse_order() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: cut\n    on_failure: rollback\n    steps:\n      - { id: stop, docker.stop: { name: w } }\n      - { id: conf, redis.config_set: { parameter: maxmemory, value: 1gb } }\n      - { id: flag, shell: { argv: [on] }, rollback: { shell: { argv: [off] } } }\n      - { id: boom, tcp: { address: \"h:1\" } }\ntargets:\n  r: { redis: { url: \"redis://h\" } }\n  d: { docker: {} }\nrollback:\n  - { id: verify, tcp: { address: \"h:2\" } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "boom",
        vec![Err(ActionError::from(BackendError::Unreachable(
            "down".into(),
        )))],
    )]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(outcome, RunOutcome::RolledBack { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        runner.calls(),
        [
            "perform stop",
            "perform conf",
            "perform flag",
            "perform boom",
            "perform flag.rollback",
            "undo conf",
            "undo stop",
            "perform verify"
        ]
    );
    assert_eq!(h.status("stop"), StepStatus::Compensated);
    assert_eq!(h.journal.read(|j| j.status), RunStatus::RolledBack);
}

/// Seed 004's phases each have their own rollback: a failure in `copy` undoes the copy,
/// not the dual-write phase before it; the runbook's whole-run rollback steps do not run.
/// By hand, `rollback` undoes everything.
#[tokio::test]
async fn a_phase_scoped_rollback_undoes_only_its_phase() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: dual-write\n    rollback_scope: phase\n    on_failure: rollback\n    steps:\n      - { id: flag-on, redis.config_set: { parameter: maxmemory, value: 1gb } }\n  - id: copy\n    rollback_scope: phase\n    on_failure: rollback\n    steps:\n      - { id: copied, redis.config_set: { parameter: maxmemory, value: 2gb } }\n      - { id: boom, tcp: { address: \"h:1\" } }\ntargets:\n  r: { redis: { url: \"redis://h\" } }\nrollback:\n  - { id: verify, tcp: { address: \"h:2\" } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "boom",
        vec![Err(ActionError::from(BackendError::Unreachable(
            "down".into(),
        )))],
    )]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("phase `copy` rolled back")),
        "{outcome:?}"
    );
    assert_eq!(
        runner.calls(),
        [
            "perform flag-on",
            "perform copied",
            "perform boom",
            "undo copied"
        ]
    );
    assert_eq!(h.status("flag-on"), StepStatus::Succeeded);
    assert_eq!(h.status("copied"), StepStatus::Compensated);
    assert_eq!(
        h.journal.read(|j| j.rollback_phase.clone()).as_deref(),
        Some("copy")
    );
}

/// A delete whose backup step failed (the phase goes on after failures) is refused.
#[tokio::test]
async fn a_delete_whose_backup_failed_does_not_run() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: cleanup\n    on_failure: continue\n    steps:\n      - { id: backup, redis.snapshot: { to: backups } }\n      - { id: delete, redis.delete: { match: \"job:*\", backup: backup }, rollback: none }\ntargets:\n  r: { redis: { url: \"redis://h\" } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "backup",
        vec![Err(ActionError::from(BackendError::Command(
            "disk full".into(),
        )))],
    )]);
    h.run(
        &rb,
        runner.clone(),
        ScriptedOperator::new(vec![]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(runner.calls(), ["perform backup"], "the delete never ran");
    assert_eq!(h.status("delete"), StepStatus::Failed);
    let detail = h.journal.read(|j| j.steps["delete"].detail.clone());
    assert!(detail.contains("backup step `backup` failed"), "{detail}");
}

#[tokio::test]
async fn a_failing_undo_is_a_failed_rollback() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: cut\n    on_failure: rollback\n    steps:\n      - { id: stop-undo-fails, docker.stop: { name: w } }\n      - { id: boom, tcp: { address: \"h:1\" } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "boom",
        vec![Err(ActionError::from(BackendError::Unreachable(
            "down".into(),
        )))],
    )]);
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RollbackFailed { reason } if reason.contains("stop-undo-fails")),
        "{outcome:?}"
    );
    assert_eq!(h.status("stop-undo-fails"), StepStatus::CompensationFailed);
    let records = h.journal.read(|j| j.rollback.clone());
    assert_eq!(records[0].status, "failed");
}

#[tokio::test]
async fn parallel_phases_respect_needs_and_the_limit() {
    let mut yaml = String::from(
        "version: 1\nname: t\nphases:\n  - id: p\n    parallel: 3\n    steps:\n      - { id: base, tcp: { address: \"h:1\" } }\n",
    );
    for i in 0..8 {
        yaml.push_str(&format!(
            "      - {{ id: s{i}, tcp: {{ address: \"h:1\" }}, needs: [base] }}\n"
        ));
    }
    let rb = runbook(&yaml);
    let h = Harness::new(&rb);
    let runner = Arc::new(FakeRunner {
        delay: Duration::from_millis(20),
        ..FakeRunner::default()
    });
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions {
                concurrency: 8,
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(runner.calls()[0], "perform base");
    assert_eq!(*runner.max_running.lock().unwrap(), 3);
}

#[tokio::test]
async fn an_interrupted_unsafe_change_is_not_rerun_blindly() {
    let rb = runbook(
        "version: 1\nname: t\nphases:\n  - id: p\n    steps:\n      - { id: migrate, shell: { argv: [migrate] }, rollback: none }\n",
    );
    let h = Harness::new(&rb);
    h.journal
        .update(|j| j.steps.get_mut("migrate").unwrap().status = StepStatus::Running);
    let runner = FakeRunner::with(&[]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::Failed { step, reason } if step == "migrate" && reason.contains("interrupted")),
        "{outcome:?}"
    );
    assert!(runner.calls().is_empty());
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions {
                rerun_interrupted: true,
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
}

#[tokio::test]
async fn until_polls_until_the_value_holds() {
    let rb = runbook(
        "version: 1\nname: t\ntargets:\n  r: { redis: { url: \"redis://h\" } }\nphases:\n  - id: p\n    steps:\n      - { id: clients, redis.dbsize: {}, until: \"> 2\", timeout: 5s, interval: 10ms }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "clients",
        vec![
            Ok(Value::Number(0.0)),
            Ok(Value::Number(1.0)),
            Ok(Value::Number(3.0)),
        ],
    )]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(runner.calls().len(), 3);
}

#[test]
fn concurrent_writers_never_leave_an_older_journal_on_disk() {
    let rb = runbook(STEPS);
    let h = Harness::new(&rb);
    std::thread::scope(|scope| {
        for t in 0..6 {
            let journal = &h.journal;
            scope.spawn(move || {
                for i in 0..100 {
                    journal.update(|j| j.completed_count = j.completed_count.max(t * 1000 + i));
                    journal.persist().unwrap();
                }
            });
        }
    });
    h.journal.update(|j| j.reason = "final".into());
    h.journal.persist().unwrap();
    let on_disk = super::journal::read(h.journal.path()).unwrap();
    assert_eq!(on_disk, h.journal.read(|j| j.clone()));
}

fn with_trigger(trigger: &str) -> String {
    format!(
        "version: 1\nname: t\ntargets:\n  r: {{ redis: {{ url: \"redis://h\" }} }}\nphases:\n  - id: before\n    steps:\n      - {{ id: flag, redis.config_set: {{ parameter: maxmemory, value: 1gb }} }}\n  - id: watch\n    steps:\n      - {{ id: long, wait: {{ duration: 2s }} }}\n  - id: after\n    steps:\n      - {{ id: done, tcp: {{ address: \"h:1\" }} }}\ntriggers:\n{trigger}"
    )
}

fn journal_triggers(h: &Harness) -> Vec<super::journal::TriggerRecord> {
    h.journal.read(|j| j.triggers.clone())
}

#[tokio::test]
async fn a_threshold_trigger_fires_in_its_window_and_rolls_back() {
    let rb = runbook(&with_trigger(
        "  - { id: memory, during: [watch], probe: { redis.info: { field: memory.used_memory } }, every: 20ms, fire: { when: \"> 7gb\" } }\n",
    ));
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "memory.probe",
        vec![Ok(Value::Number(1e9)), Ok(Value::Number(9e9))],
    )])
    .slow("long", Duration::from_secs(2));
    let started = std::time::Instant::now();
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("trigger `memory` fired")),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the long step was cut short"
    );
    let fired = journal_triggers(&h);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].outcome, "rollback");
    assert!(
        fired[0]
            .samples
            .iter()
            .any(|s| s.bad && s.value.contains("9000000000"))
    );
    assert!(runner.calls().contains(&"undo flag".to_string()));
    assert_eq!(h.status("done"), StepStatus::Pending);
}

#[tokio::test]
async fn failing_for_fires_only_after_the_duration() {
    let rb = runbook(&with_trigger(
        "  - { id: down, during: [watch], probe: { redis.ping: {} }, every: 20ms, timeout: 50ms, fire: { failing_for: 150ms } }\n",
    ));
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "down.probe",
        vec![Err(ActionError::from(BackendError::Unreachable(
            "refused".into(),
        )))],
    )])
    .slow("long", Duration::from_secs(2));
    let started = std::time::Instant::now();
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(outcome, RunOutcome::RolledBack { .. }),
        "{outcome:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_millis(900),
        "{elapsed:?}"
    );
    assert!(journal_triggers(&h)[0].reason.contains("failing for"));
}

#[tokio::test]
async fn a_trigger_outside_its_window_never_fires() {
    let rb = runbook(&with_trigger(
        "  - { id: memory, during: [watch], until: flag, probe: { redis.info: { field: memory.used_memory } }, every: 20ms, fire: { when: \"> 7gb\" } }\n",
    ));
    let h = Harness::new(&rb);
    // The probe would fire, but the window closed with `flag`, before `watch` started.
    let runner = FakeRunner::with(&[("memory.probe", vec![Ok(Value::Number(9e9))])])
        .slow("long", Duration::from_millis(300));
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert!(journal_triggers(&h).is_empty());
}

#[tokio::test]
async fn shadow_triggers_only_record_and_errors_can_be_ignored() {
    let rb = runbook(&with_trigger(
        "  - { id: rehearsal, mode: shadow, during: [watch], probe: { redis.dbsize: {} }, every: 20ms, fire: { when: \"> 10\" } }\n  - { id: flaky, during: [watch], on_error: ignore, probe: { redis.ping: {} }, every: 20ms, fire: { consecutive: 1 } }\n",
    ));
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[
        ("rehearsal.probe", vec![Ok(Value::Number(50.0))]),
        (
            "flaky.probe",
            vec![Err(ActionError::from(BackendError::Timeout("slow".into())))],
        ),
    ])
    .slow("long", Duration::from_millis(200));
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    let fired = journal_triggers(&h);
    assert!(!fired.is_empty());
    assert!(
        fired
            .iter()
            .all(|t| t.trigger == "rehearsal" && t.outcome == "shadow: would have fired")
    );
}

#[tokio::test]
async fn a_paused_trigger_asks_and_the_operator_can_continue() {
    let rb = runbook(&with_trigger(
        "  - { id: errors, action: pause, during: [watch], probe: { redis.dbsize: {} }, every: 20ms, fire: { when: \"> 10\" } }\n",
    ));
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[(
        "errors.probe",
        vec![Ok(Value::Number(50.0)), Ok(Value::Number(1.0))],
    )])
    .slow("long", Duration::from_millis(300));
    let no_go = Answer::Decided {
        decision: GateDecision::NoGo,
        who: "tester".into(),
        how: "test".into(),
        signoffs: vec![],
    };
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![no_go]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert_eq!(
        journal_triggers(&h)[0].outcome,
        "paused: the operator continued"
    );
    // The question was announced (the live page and webhooks show it), and its answer.
    let events = h.events.lock().unwrap();
    assert!(
        events.iter().any(|e| matches!(e, RunEvent::GateOpened { gate, automatic: false, .. } if gate == "trigger-errors")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, RunEvent::GateDecided { gate, decision: GateDecision::NoGo, .. } if gate == "trigger-errors")),
        "{events:?}"
    );
}

#[tokio::test]
async fn increase_within_a_window_fires() {
    let rb = runbook(&with_trigger(
        "  - { id: failures, during: [watch], probe: { redis.queues: {} }, every: 20ms, fire: { increase: { total: { failed: \"> 100\" } }, within: 5min } }\n",
    ));
    let h = Harness::new(&rb);
    let queues = |failed: f64| {
        let mut total = std::collections::BTreeMap::new();
        total.insert("failed".to_owned(), Value::Number(failed));
        let mut value = std::collections::BTreeMap::new();
        value.insert("total".to_owned(), Value::Object(total));
        Ok(Value::Object(value))
    };
    let runner = FakeRunner::with(&[(
        "failures.probe",
        vec![queues(10.0), queues(50.0), queues(200.0)],
    )])
    .slow("long", Duration::from_secs(2));
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("grew by")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn rate_against_a_measured_baseline_fires() {
    let rb = runbook(&with_trigger(
        "  - { id: growth, during: [watch], probe: { redis.dbsize: {} }, every: 20ms, fire: { rate: \"> 10x\", baseline_window: 100ms } }\n",
    ));
    let h = Harness::new(&rb);
    // Slow growth first (baseline), then a jump.
    let mut values: Vec<Result<Value, ActionError>> = (0..8)
        .map(|i| Ok(Value::Number(1000.0 + i as f64)))
        .collect();
    values.extend((1..20).map(|i| Ok(Value::Number(1010.0 + 500.0 * i as f64))));
    let runner = FakeRunner::with(&[("growth.probe", values)]).slow("long", Duration::from_secs(2));
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("the baseline")),
        "{outcome:?}"
    );
}

/// A queue that grows 10/s in normal operation and 300/s once the change is made (at 2 s).
fn growth_after_the_change(rate_after: f64) -> impl Fn(Duration) -> f64 + Send + Sync {
    move |t| {
        let t = t.as_secs_f64();
        if t < 2.0 {
            10.0 * t
        } else {
            20.0 + rate_after * (t - 2.0)
        }
    }
}

fn baseline_trigger(baseline: &str) -> Arc<Runbook> {
    runbook(&format!(
        "version: 1\nname: t\ntargets:\n  r: {{ redis: {{ url: \"redis://h\" }} }}\nphases:\n  - id: before\n    steps:\n      - {{ id: normal, wait: {{ duration: 2s }} }}\n      - {{ id: change, redis.config_set: {{ parameter: maxmemory, value: 1gb }} }}\n  - id: watch\n    steps:\n      - {{ id: long, wait: {{ duration: 3s }} }}\ntriggers:\n  - {{ id: growth, during: [watch], probe: {{ redis.dbsize: {{}} }}, every: 100ms, fire: {{ rate: \"> 10x\", {baseline} }} }}\n"
    ))
}

async fn run_baseline(rb: &Arc<Runbook>, rate_after: f64) -> (Harness, RunOutcome) {
    let h = Harness::new(rb);
    let runner = FakeRunner::with(&[])
        .slow("normal", Duration::from_secs(2))
        .slow("long", Duration::from_secs(3))
        .ramp("growth.probe", growth_after_the_change(rate_after));
    let outcome = h
        .run(
            rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    (h, outcome)
}

#[tokio::test(start_paused = true)]
async fn a_baseline_measured_before_the_change_catches_growth_from_the_change_on() {
    let rb = baseline_trigger("baseline_window: 1s, baseline_before: change");
    let (h, outcome) = run_baseline(&rb, 300.0).await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("the baseline 10/s")),
        "{outcome:?}"
    );
    let baseline = h.journal.read(|j| j.baselines["growth"].clone());
    assert_eq!(baseline.before, "change");
    assert!((baseline.rate.unwrap() - 10.0).abs() < 0.5, "{baseline:?}");
    assert!(baseline.note.is_empty(), "{baseline:?}");
}

#[tokio::test(start_paused = true)]
async fn a_baseline_before_the_change_stays_quiet_when_growth_is_normal() {
    let rb = baseline_trigger("baseline_window: 1s, baseline_before: change");
    let (h, outcome) = run_baseline(&rb, 10.0).await;
    assert_eq!(outcome, RunOutcome::Succeeded);
    assert!(journal_triggers(&h).is_empty());
}

/// The same growth against a baseline measured at the start of the window (after the
/// change): the abnormal rate is taken as normal and nothing fires. This is why
/// `baseline_before` exists.
#[tokio::test(start_paused = true)]
async fn a_baseline_measured_after_the_change_takes_the_abnormal_rate_as_normal() {
    let rb = baseline_trigger("baseline_window: 1s");
    let (_, outcome) = run_baseline(&rb, 300.0).await;
    assert_eq!(outcome, RunOutcome::Succeeded);
}

/// Before the cutover the new server is a replica that fills up during the sync (a jump
/// that would pass for a huge normal rate); the baseline is read from the old server.
#[tokio::test(start_paused = true)]
async fn a_baseline_probe_measures_the_old_server_before_the_change() {
    let rb = baseline_trigger(
        "baseline_window: 1s, baseline_before: change, baseline_probe: { redis.dbsize: {} }",
    );
    let h = Harness::new(&rb);
    let on_new = |t: Duration| {
        let t = t.as_secs_f64();
        if t < 1.5 {
            0.0
        } else if t < 2.0 {
            5000.0
        } else {
            5000.0 + 300.0 * (t - 2.0)
        }
    };
    let runner = FakeRunner::with(&[])
        .slow("normal", Duration::from_secs(2))
        .slow("long", Duration::from_secs(3))
        .ramp("growth.probe", on_new)
        .ramp("growth.baseline_probe", growth_after_the_change(10.0));
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("the baseline 10/s")),
        "{outcome:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_resumed_past_the_step_has_no_baseline_and_says_so() {
    let rb = baseline_trigger("baseline_window: 1s, baseline_before: change");
    let h = Harness::new(&rb);
    for id in ["normal", "change"] {
        h.journal.update(|j| j.complete(id, StepStatus::Succeeded));
    }
    let runner = FakeRunner::with(&[])
        .slow("long", Duration::from_secs(3))
        .ramp("growth.probe", growth_after_the_change(300.0));
    // Without a terminal the operator cannot be asked: an inconclusive trigger rolls back.
    let outcome = h
        .run(
            &rb,
            runner,
            ScriptedOperator::new(vec![]),
            RunOptions::default(),
        )
        .await;
    assert!(
        matches!(&outcome, RunOutcome::RolledBack { reason } if reason.contains("no baseline from before step `change`")),
        "{outcome:?}"
    );
    let baseline = h.journal.read(|j| j.baselines["growth"].clone());
    assert_eq!(baseline.rate, None);
    assert!(
        baseline.note.contains("resumed after `change`"),
        "{baseline:?}"
    );
}

#[tokio::test]
async fn a_dead_rollback_target_stops_the_phase_at_a_gate() {
    let rb = runbook(
        "version: 1\nname: t\ntargets:\n  dead-source: { redis: { url: \"redis://h\" } }\nphases:\n  - id: cutover\n    rollback_targets: [dead-source]\n    steps:\n      - { id: change, redis.config_set: { parameter: maxmemory, value: 1gb } }\n",
    );
    let h = Harness::new(&rb);
    let runner = FakeRunner::with(&[]);
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![Answer::Unavailable]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(
        outcome,
        RunOutcome::StoppedAtGate {
            gate: "cutover.rollback-targets".into()
        }
    );
    assert!(runner.calls().is_empty(), "nothing ran");
    let outcome = h
        .run(
            &rb,
            runner.clone(),
            ScriptedOperator::new(vec![go()]),
            RunOptions::default(),
        )
        .await;
    assert_eq!(outcome, RunOutcome::Succeeded);
}
