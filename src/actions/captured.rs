//! What a mutating step records before it acts, so that its rollback (perhaps from
//! another process, after a resume) restores exactly that. The journal keeps it.

use serde::{Deserialize, Serialize};

/// What a step captured before acting, so that its rollback restores exactly that.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Captured {
    /// Containers a recreate replaced: each original is kept, stopped, under its
    /// parked name until the run succeeds, so that a rollback restores it exactly.
    Recreated {
        /// (name, parked name) per container.
        containers: Vec<(String, String)>,
        /// Those that were not running before the step: restored, they stay stopped.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stopped: Vec<String>,
    },
    /// The primary before a `redis.failover`, as the Sentinels knew it.
    Primary {
        /// Its `host:port`.
        address: String,
    },
    /// Containers a stop or start changed (those that were not already in the target
    /// state).
    Changed {
        /// Their names.
        names: Vec<String>,
    },
    /// A container `docker.run` created.
    Created {
        /// Its name (or id).
        name: String,
    },
    /// Replication settings of both servers before `redis.replicate` or `redis.promote`
    /// changed them.
    Replication {
        /// The source's settings.
        source: Vec<(String, String)>,
        /// The target's settings.
        target: Vec<(String, String)>,
    },
    /// The ledger of a `redis.copy`, in the run directory: the keys it created and the
    /// values it overwrote, with its checkpoints.
    Copy {
        /// Its file name.
        ledger: String,
    },
    /// The ledger and marker of a `redis.sync`, so that a resume continues it and a
    /// rollback undoes exactly what it wrote.
    Sync {
        /// The ledger's file name in the run directory.
        ledger: String,
        /// The key on the target holding the replication offset applied.
        marker: String,
    },
    /// The source's fence setting before a `redis.sync_stop` with a pause fenced it.
    SyncFence {
        /// The source's target name.
        source: String,
        /// `min-replicas-to-write` before.
        previous: String,
    },
    /// A configuration value before CONFIG SET.
    ConfigValue {
        /// The parameter.
        parameter: String,
        /// Its previous value.
        previous: String,
    },
}
