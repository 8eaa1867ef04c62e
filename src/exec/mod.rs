//! Running actions against live systems.

pub mod cleanup;
pub mod copy;
pub mod engine;
pub mod event;
pub mod journal;
pub mod live;
pub mod operator;
pub mod preflight;
pub mod probe;
pub mod replication;
pub mod resolve;
pub mod rollback;
pub mod runner;
pub mod state;
pub mod step;
pub mod trigger;
pub mod verify;

#[cfg(test)]
mod tests;
