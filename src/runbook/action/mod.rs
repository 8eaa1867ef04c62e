//! The actions a step can perform, their parameters, and what the plan needs to know
//! about each: which kind of target it talks to, whether it changes anything, how it is
//! undone, what value it yields, and how to describe it in one line.

mod docker;
mod local;
mod redis;

use std::fmt;

use schemars::{Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer};

pub use docker::*;
pub use local::*;
pub use redis::*;

use super::de::Spanned;

/// The kind of system a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A Docker Engine.
    Docker,
    /// A Redis server.
    Redis,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Docker => "docker",
            TargetKind::Redis => "redis",
        })
    }
}

/// What running an action does to the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Only reads.
    ReadOnly,
    /// Changes something.
    Mutating,
    /// Asks the operator (manual steps, gates).
    Operator,
    /// Only waits.
    Wait,
}

/// How a plan can vouch for a step before the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// A read-only probe: `plan --check` runs it against the live systems.
    Verified,
    /// A change that a dry run describes but never performs.
    Simulated,
    /// Outside redis-move's view (manual steps, shell commands, gates).
    Unverifiable,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verification::Verified => "verified",
            Verification::Simulated => "simulated",
            Verification::Unverifiable => "unverifiable",
        })
    }
}

/// How a step is undone when the run rolls back and the step has no `rollback:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inverse {
    /// It changes nothing that needs undoing.
    NotNeeded,
    /// redis-move undoes it from the state it captured before acting.
    Builtin(&'static str),
    /// It cannot be undone automatically: write a `rollback:` (or `rollback: none`).
    Missing,
}

/// The shape of the value an action yields, so that `expect` can be checked before the
/// run (a field that does not exist, a size compared with a latency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Unknown until run time.
    Any,
    /// No value.
    Nothing,
    /// A plain number.
    Number,
    /// A number of bytes.
    Bytes,
    /// A duration.
    Duration,
    /// A point in time.
    Timestamp,
    /// Text.
    Text,
    /// A boolean.
    Bool,
    /// A list of items of one shape.
    List(&'static Shape),
    /// Named fields.
    Object(&'static [(&'static str, Shape)]),
}

/// What every action's parameters tell the planner.
pub trait ActionParams {
    /// The `target:` field, if the action has one.
    fn target(&self) -> Option<&Spanned<String>> {
        None
    }
    /// The kind of target the action needs, if any.
    fn target_kind(&self) -> Option<TargetKind> {
        None
    }
    /// Other targets the action names (the `source:` of a copy).
    fn other_targets(&self) -> Vec<&Spanned<String>> {
        Vec::new()
    }
    /// Docker targets the action names besides its own target (where a snapshot's
    /// server runs).
    fn docker_targets(&self) -> Vec<&Spanned<String>> {
        Vec::new()
    }
    /// What it does to the world.
    fn effect(&self) -> Effect;
    /// How it is undone without an explicit `rollback:`.
    fn inverse(&self) -> Inverse {
        match self.effect() {
            Effect::Mutating | Effect::Operator => Inverse::Missing,
            Effect::ReadOnly | Effect::Wait => Inverse::NotNeeded,
        }
    }
    /// What value it yields.
    fn shape(&self) -> Shape;
    /// One line saying exactly what it will do (secrets masked).
    fn describe(&self) -> String;
    /// Problems that only show once the parameters are read (mutually exclusive fields,
    /// bad regexes). Each is (field name, message).
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

macro_rules! actions {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($params:ty), )*) => {
        /// One action, with its parameters.
        #[derive(Clone, Debug)]
        pub enum Action {
            $( $(#[$doc])* $variant(Box<$params>), )*
        }

        /// Every action name, as written in a runbook.
        pub const ACTION_NAMES: &[&str] = &[$($name),*];

        impl Action {
            /// The name as written in a runbook (`docker.recreate`).
            pub fn name(&self) -> &'static str {
                match self { $( Action::$variant(_) => $name, )* }
            }

            /// The planner's view of the parameters.
            pub fn params(&self) -> &dyn ActionParams {
                match self { $( Action::$variant(p) => &**p, )* }
            }

            fn deserialize_named<'de, D: Deserializer<'de>>(
                name: &str,
                deserializer: D,
            ) -> Result<Action, D::Error> {
                match name {
                    $( $name => <$params>::deserialize(deserializer).map(|p| Action::$variant(Box::new(p))), )*
                    _ => Err(serde::de::Error::custom(format!("unknown action `{name}`"))),
                }
            }

            /// The JSON Schema of each action's parameters.
            pub fn schemas(generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
                vec![ $( ($name, generator.subschema_for::<$params>()), )* ]
            }
        }
    };
}

actions! {
    /// List containers matching a filter.
    "docker.containers" => DockerContainers(ContainersParams),
    /// Read container logs, keeping lines that match.
    "docker.logs" => DockerLogs(LogsParams),
    /// Run a command in a running container.
    "docker.exec" => DockerExec(ExecParams),
    /// Create and start a container (or run a one-off with `rm: true`).
    "docker.run" => DockerRun(RunParams),
    /// List images.
    "docker.images" => DockerImages(ImagesParams),
    /// List volumes.
    "docker.volumes" => DockerVolumes(VolumesParams),
    /// Remove a volume.
    "docker.remove_volume" => DockerRemoveVolume(RemoveVolumeParams),
    /// Stop containers.
    "docker.stop" => DockerStop(StopParams),
    /// Start containers.
    "docker.start" => DockerStart(StartParams),
    /// Restart containers.
    "docker.restart" => DockerRestart(RestartParams),
    /// Recreate containers with a changed environment and/or image.
    "docker.recreate" => DockerRecreate(RecreateParams),
    /// Remove containers.
    "docker.remove" => DockerRemove(RemoveParams),
    /// Wait until containers report healthy.
    "docker.wait_healthy" => DockerWaitHealthy(WaitHealthyParams),
    /// PING; the value is the latency.
    "redis.ping" => RedisPing(PingParams),
    /// An INFO field.
    "redis.info" => RedisInfo(InfoParams),
    /// DBSIZE.
    "redis.dbsize" => RedisDbsize(DbsizeParams),
    /// A Redis Cluster's health: state, slots, failing nodes, migrations.
    "redis.cluster_check" => RedisClusterCheck(ClusterCheckParams),
    /// Count keys matching a pattern with SCAN.
    "redis.scan_count" => RedisScanCount(ScanCountParams),
    /// Any Redis command.
    "redis.command" => RedisCommand(CommandParams),
    /// CONFIG GET.
    "redis.config_get" => RedisConfigGet(ConfigGetParams),
    /// CONFIG SET, remembering the previous value.
    "redis.config_set" => RedisConfigSet(ConfigSetParams),
    /// Move a Sentinel-managed primary to a chosen replica, losing no write.
    "redis.failover" => RedisFailover(FailoverParams),
    /// Make the target a replica of the source and wait for the full sync.
    "redis.replicate" => RedisReplicate(ReplicateParams),
    /// Promote a replica once its offset matches the source.
    "redis.promote" => RedisPromote(PromoteParams),
    /// Copy keys (filtered, renamed) from source to target.
    "redis.copy" => RedisCopy(CopyParams),
    /// Follow the source as a replica, applying its keys and writes to the target.
    "redis.sync" => RedisSync(SyncParams),
    /// The lag and counters of a running sync.
    "redis.sync_status" => RedisSyncStatus(SyncStatusParams),
    /// Drain a running sync and stop it.
    "redis.sync_stop" => RedisSyncStop(SyncStopParams),
    /// Compare keys of source and target.
    "redis.verify" => RedisVerify(VerifyParams),
    /// BullMQ queue depths.
    "redis.queues" => RedisQueues(QueuesParams),
    /// The clients connected (CLIENT LIST), filtered.
    "redis.clients" => RedisClients(ClientsParams),
    /// Delete keys matching a pattern, in batches.
    "redis.delete" => RedisDelete(DeleteParams),
    /// A verified point-in-time RDB file of a server.
    "redis.snapshot" => RedisSnapshot(SnapshotParams),
    /// Run a local command or script.
    "shell" => Shell(ShellParams),
    /// An HTTP request.
    "http" => Http(HttpParams),
    /// Connect to a TCP port; the value is the connect latency.
    "tcp" => Tcp(TcpParams),
    /// Check a value without any I/O.
    "assert" => Assert(AssertParams),
    /// Wait for a duration.
    "wait" => Wait(WaitParams),
    /// An instruction the operator confirms done.
    "manual" => Manual(ManualParams),
    /// A go/no-go decision.
    "gate" => Gate(GateParams),
}

impl Action {
    /// How a dry run can vouch for this action.
    pub fn verification(&self) -> Verification {
        match self {
            Action::Shell(_) | Action::Manual(_) | Action::Gate(_) => Verification::Unverifiable,
            // Before the copy it checks, a verification can only fail: the dry run
            // leaves it to the run.
            Action::RedisVerify(_) => Verification::Simulated,
            // A sync's state exists only while the run runs it.
            Action::RedisSyncStatus(_) => Verification::Simulated,
            _ => match self.params().effect() {
                Effect::ReadOnly => Verification::Verified,
                _ => Verification::Simulated,
            },
        }
    }
}

/// Reads the parameters of the action called `name` (a step's action key).
pub struct ActionSeed<'a>(pub &'a str);

impl<'de> DeserializeSeed<'de> for ActionSeed<'_> {
    type Value = Action;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Action, D::Error> {
        Action::deserialize_named(self.0, deserializer)
    }
}

/// `a=b, c=d` from a map, values masked by their display form.
pub(crate) fn describe_env(env: &indexmap::IndexMap<String, super::template::Template>) -> String {
    env.iter()
        .map(|(k, v)| format!("{k}={}", v.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Describes a container selection: `containers matching /re/ (state running, label a=b)`.
pub(crate) fn describe_selection(
    name: Option<&super::template::Template>,
    labels: &indexmap::IndexMap<String, String>,
    state: Option<ContainerState>,
) -> String {
    let mut out = match name {
        Some(name) => format!("containers matching /{}/", name.display()),
        None => "all containers".to_owned(),
    };
    let mut filters = Vec::new();
    if let Some(state) = state {
        filters.push(format!("state {state}"));
    }
    for (k, v) in labels {
        filters.push(format!("label {k}={v}"));
    }
    if !filters.is_empty() {
        out.push_str(&format!(" ({})", filters.join(", ")));
    }
    out
}
