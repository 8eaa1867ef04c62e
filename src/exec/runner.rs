//! The seam between the engine and the systems it acts on. The engine drives steps
//! through [`ActionRunner`]; the real implementation talks to Docker, Redis and the
//! shell, tests can use a fake.

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::event::{EventSender, RunEvent};
use super::journal::Captured;
use super::resolve::Resolver;
use crate::backend::BackendError;
use crate::redact::Redactor;
use crate::runbook::model::Step;
use crate::value::Value;

/// What an action sees while it runs.
pub struct RunContext<'a> {
    /// Resolves templates (secrets, env, step values).
    pub resolver: Resolver<'a>,
    /// Masks secrets in anything kept or shown.
    pub redactor: &'a Redactor,
    /// When the run started.
    pub run_started: jiff::Timestamp,
    /// Where progress goes (countdowns, polling).
    pub events: &'a EventSender,
    /// Cancelled when the run is interrupted or rolls back.
    pub cancel: &'a CancellationToken,
    /// The run's directory, where actions keep files of their own (a copy's ledger).
    pub run_dir: &'a std::path::Path,
}

impl RunContext<'_> {
    /// Reports progress of `step`.
    pub fn progress(
        &self,
        step: &str,
        message: impl Into<String>,
        remaining: Option<std::time::Duration>,
    ) {
        let _ = self.events.send(RunEvent::StepProgress {
            step: step.to_owned(),
            message: message.into(),
            remaining,
        });
    }
}

/// Performs actions.
pub trait ActionRunner: Send + Sync {
    /// Captures what the step's rollback needs, before the step changes anything. The
    /// engine journals it (fsynced) before calling [`ActionRunner::perform`].
    fn capture<'a>(
        &'a self,
        step: &'a Step,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Option<Captured>, BackendError>>;

    /// Performs the step's action; its value.
    fn perform<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, BackendError>>;

    /// Drops what a step kept only for its rollback, once the run succeeded (the parked
    /// originals of recreated containers).
    fn discard<'a>(
        &'a self,
        _step: &'a Step,
        _captured: &'a Captured,
        _ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    /// Checks that a target answers (before a phase whose rollback would return to it).
    fn check_target<'a>(
        &'a self,
        target: &'a str,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Undoes the step with its built-in inverse, from what it captured.
    fn undo<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, BackendError>>;
}
