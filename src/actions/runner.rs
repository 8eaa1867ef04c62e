//! The seam between the run loop and the systems it acts on. The loop drives steps
//! through [`ActionRunner`] and hands each action a [`RunContext`]; the real
//! implementation ([`super::live::LiveRunner`]) talks to Docker, Redis and the shell,
//! and the loop's tests use a fake.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::captured::Captured;
use super::resolve::{ResolveError, Resolver};
use crate::backend::BackendError;
use crate::redact::Redactor;
use crate::runbook::model::Step;
use crate::value::Value;

/// A step with no time limit of its own (and whose action has none) gets this one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Why an action could not be done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A template could not be resolved (missing secret, unset variable).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The system could not do it, or the runbook's settings cannot work.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ActionError {
    /// The runbook's settings cannot work (a bad pattern, a missing parameter).
    pub fn config(message: impl Into<String>) -> Self {
        ActionError::Backend(BackendError::Config(message.into()))
    }

    /// The action did not finish within its time limit.
    pub fn timeout(message: impl Into<String>) -> Self {
        ActionError::Backend(BackendError::Timeout(message.into()))
    }
}

/// What the pre-flight of a run found for one step, before anything changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    /// The step.
    pub step: String,
    /// Whether its servers fit it; `None`: they could not be asked yet (the step checks
    /// again right before it acts).
    pub passed: Option<bool>,
    /// What was found, and what to do about a failure.
    pub detail: String,
}

/// Where an action reports its progress (countdowns, polling, keys copied).
pub trait Progress: Send + Sync {
    /// Reports `message` about `step`, with the time left when there is a limit.
    fn report(
        &self,
        step: &str,
        message: String,
        remaining: Option<Duration>,
        measure: Option<crate::exec::event::Measure>,
    );
}

/// What an action sees while it runs.
pub struct RunContext<'a> {
    /// Resolves templates (secrets, env, step values).
    pub resolver: Resolver<'a>,
    /// Masks secrets in anything kept or shown.
    pub redactor: &'a Redactor,
    /// When the run started.
    pub run_started: jiff::Timestamp,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
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
        measure: Option<crate::exec::event::Measure>,
    ) {
        self.progress
            .report(step, message.into(), remaining, measure);
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
    ) -> BoxFuture<'a, Result<Option<Captured>, ActionError>>;

    /// Performs the step's action; its value.
    fn perform<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, ActionError>>;

    /// Drops what a step kept only for its rollback, once the run succeeded (the parked
    /// originals of recreated containers).
    fn discard<'a>(
        &'a self,
        _step: &'a Step,
        _captured: &'a Captured,
        _ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async { Ok(()) })
    }

    /// On a resume, starts again what a step done earlier left running in the
    /// background (a sync): what it did, or `None` when it has nothing to resume.
    fn resume<'a>(
        &'a self,
        _step: &'a Step,
        _captured: Option<&'a Captured>,
        _ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Option<String>, ActionError>> {
        Box::pin(async { Ok(None) })
    }

    /// Checks, before anything changes, that the servers of each of `steps` fit it
    /// (versions, permissions, capacity). Steps that need nothing are left out.
    fn preflight<'a>(
        &'a self,
        _steps: &'a [Step],
        _ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Vec<Preflight>> {
        Box::pin(async { Vec::new() })
    }

    /// Checks that a target answers (before a phase whose rollback would return to it).
    fn check_target<'a>(
        &'a self,
        target: &'a str,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<(), ActionError>>;

    /// Undoes the step with its built-in inverse, from what it captured.
    fn undo<'a>(
        &'a self,
        step: &'a Step,
        captured: Option<&'a Captured>,
        ctx: &'a RunContext<'a>,
    ) -> BoxFuture<'a, Result<Value, ActionError>>;
}
