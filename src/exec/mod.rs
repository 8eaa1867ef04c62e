//! Running actions against live systems.

pub mod journal;
pub mod preflight;
pub mod probe;
pub mod resolve;
pub mod state;
