//! What each action does against the live systems: Docker, Redis, the shell and the
//! network. The run loop ([`crate::exec`]) drives actions through [`ActionRunner`] and
//! knows nothing of how they are done; actions resolve the runbook's templates into
//! plain values and hand those to the backends ([`crate::backend`]), which know nothing
//! of templates.
//!
//! One file per action family: [`docker`], [`redis`] (single-server commands),
//! [`replication`], [`copy`], [`verify`], [`delete`], [`local`] (wait, shell, HTTP, TCP,
//! assert). [`live`] dispatches a step to its family; [`probe`] runs the read-only
//! actions for `plan --check`, triggers and `skip_if`.

pub mod act;
pub mod captured;
pub mod compat;
pub mod connections;
pub mod copy;
pub mod delete;
pub mod docker;
pub mod failover;
pub mod live;
pub mod local;
pub mod probe;
pub mod redis;
pub mod replication;
pub mod resolve;
pub mod runner;
pub mod snapshot;
pub mod sync;
pub mod vault;
pub mod verify;

pub use captured::Captured;
pub use runner::{ActionError, ActionRunner, Preflight, Progress, RunContext};
