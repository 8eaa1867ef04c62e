//! redis-move turns a Redis migration runbook (YAML) into a program: it validates the
//! runbook, previews exactly what a run will do, and (with the executor) runs it against
//! Docker and Redis with checks, go/no-go gates and automatic rollback.
//!
//! Data flows one way: YAML -> [`runbook::Runbook`] -> [`plan::Plan`] -> output.

pub mod actions;
pub mod backend;
pub mod cli;
pub mod exec;
pub mod init;
pub mod plan;
pub mod redact;
pub mod report;
pub mod run;
pub mod runbook;
pub mod value;

pub use run::main;
