//! The systems redis-move acts on: Docker Engines, Redis servers, the network. Each
//! backend turns an operation into a [`Value`](crate::value::Value) or a
//! [`BackendError`]; none of them prints.

pub mod cluster;
pub mod command_keys;
pub mod docker;
pub mod keyspace;
pub mod net;
pub mod rdb;
pub mod redis;
pub mod sentinel;
pub mod shell;
pub mod ssh;

/// Why an operation could not be done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The runbook's settings cannot work (bad URL, missing file).
    #[error("{0}")]
    Config(String),
    /// The system could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The system did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The system refused or failed the operation.
    #[error("{0}")]
    Command(String),
    /// The system answered something redis-move does not understand.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A file redis-move keeps for itself (a copy's ledger) could not be used.
    #[error("{0}")]
    Local(String),
}

/// Installs the one rustls crypto provider (ring) before any TLS connection; the redis
/// crate picks none, and a second provider pulled in by another crate would panic.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
