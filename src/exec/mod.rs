//! The run loop: phases and steps in order, retries, checks, gates, triggers, rollback
//! order and the journal. What each action does against live systems is
//! [`crate::actions`]'s; the loop drives it through [`crate::actions::ActionRunner`].

pub mod engine;
pub mod event;
pub mod journal;
pub mod operator;
pub mod preflight;
pub mod rollback;
pub mod state;
pub mod step;
pub mod trigger;

#[cfg(test)]
mod tests;
