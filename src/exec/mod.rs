//! Running actions against live systems.

pub mod preflight;
pub mod probe;
pub mod resolve;
