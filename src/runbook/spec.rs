//! The runbook file format as serde types: what the YAML says, before references are
//! resolved. The JSON Schema (`redis-move schema`) is generated from these same types,
//! so the schema and the parser cannot drift apart.

use std::fmt;
use std::sync::LazyLock;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::action::{ACTION_NAMES, Action, ActionSeed, GateParams};
use super::de::{Lenient, Spanned, SpannedSeed};
use super::expect::Expect;
use super::template::Template;
use super::units::RunbookDuration;

/// A runbook file.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(title = "redis-move runbook")]
pub struct RunbookSpec {
    /// Format version; always `1`.
    #[serde(default)]
    #[schemars(required)]
    pub version: Option<Spanned<u32>>,
    /// Short machine name (`vps01-to-vps`): names the state directory and reports.
    #[serde(default)]
    #[schemars(required)]
    pub name: Option<Spanned<String>>,
    /// Human title shown in plans and reports.
    #[serde(default)]
    pub title: Option<String>,
    /// Longer description.
    #[serde(default)]
    pub description: Option<String>,
    /// Variables: `${vars.NAME}`. Overridable with `--var NAME=VALUE` or `--vars-file`.
    #[serde(default)]
    pub vars: IndexMap<String, VarValue>,
    /// Secrets, read at run time from the environment or a file: `${secrets.NAME}`.
    /// Their values are never shown, logged or stored.
    #[serde(default)]
    pub secrets: IndexMap<String, Lenient<Spanned<SecretSource>>>,
    /// The systems the runbook acts on: Docker Engines and Redis servers.
    #[serde(default)]
    pub targets: IndexMap<String, Lenient<Spanned<TargetSpec>>>,
    /// Phases, run in order; each is a barrier.
    #[serde(default)]
    #[schemars(required)]
    pub phases: Option<Spanned<Vec<Lenient<Spanned<PhaseSpec>>>>>,
    /// Rollback triggers watched while the run is inside their window.
    #[serde(default)]
    pub triggers: Vec<Lenient<Spanned<TriggerSpec>>>,
    /// Steps run last when the run rolls back, after every step's own rollback.
    #[serde(default)]
    pub rollback: Vec<Lenient<Spanned<StepSpec>>>,
    /// The run lock, shared across machines: a lease in a Redis the runbook names (the
    /// lock in the state directory keeps apart only runs that share that directory).
    #[serde(default)]
    pub lock: Option<Spanned<LockSpec>>,
    /// Who is told what happens: webhooks called on the run's events (never blocking
    /// or failing the run; deliveries recorded in the journal).
    #[serde(default)]
    pub notify: Vec<Spanned<NotifySpec>>,
}

/// A webhook told of the run's events.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// The URL POSTed to (`${secrets.NAME}` for one that is a secret, as Slack's are).
    pub webhook: Template,
    /// The body: `json` (default: the event as an object) or `slack` (`{"text": ...}`,
    /// for Slack's and compatible incoming webhooks).
    #[serde(default)]
    pub format: NotifyFormat,
    /// Only these events (default: every one).
    #[serde(default)]
    pub events: Vec<NotifyEvent>,
    /// How long one delivery may take (default 5s); a failed one is tried twice more.
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
}

/// The body a webhook gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// The event as a JSON object (`event`, `runbook`, `run_id`, `step`, `text`, ...).
    #[default]
    Json,
    /// `{"text": "..."}`: Slack and compatible incoming webhooks.
    Slack,
}

/// The run's events a webhook can be told of.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A run (or resume) started.
    RunStarted,
    /// A gate or manual step waits for a decision.
    GateWaiting,
    /// A rollback trigger fired.
    TriggerFired,
    /// A rollback started.
    RollbackStarted,
    /// A rollback ended (cleanly or not).
    RollbackFinished,
    /// The run ended.
    RunFinished,
}

/// A run lock held as a lease in Redis: `SET key holder NX PX ttl`, renewed while the
/// run lives, with a fencing token checked before every change.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// The Redis target that holds the lease: one every operator's machine reaches (it
    /// may be one the runbook moves, or another).
    pub redis: Spanned<String>,
    /// The lease's key (default `redis-move:lock:<runbook name>`).
    #[serde(default)]
    pub key: Option<String>,
    /// How long the lease outlives its holder (default 30s; renewed every third of it).
    #[serde(default)]
    pub ttl: Option<RunbookDuration>,
}

/// The value of a var: a string, number or boolean.
#[derive(Clone, Debug, PartialEq)]
pub struct VarValue(pub String);

impl<'de> Deserialize<'de> for VarValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct VarVisitor;
        impl Visitor<'_> for VarVisitor {
            type Value = VarValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, s: &str) -> Result<VarValue, E> {
                Ok(VarValue(s.to_owned()))
            }
            fn visit_i64<E>(self, i: i64) -> Result<VarValue, E> {
                Ok(VarValue(i.to_string()))
            }
            fn visit_u64<E>(self, i: u64) -> Result<VarValue, E> {
                Ok(VarValue(i.to_string()))
            }
            fn visit_f64<E>(self, f: f64) -> Result<VarValue, E> {
                Ok(VarValue(f.to_string()))
            }
            fn visit_bool<E>(self, b: bool) -> Result<VarValue, E> {
                Ok(VarValue(b.to_string()))
            }
        }
        d.deserialize_any(VarVisitor)
    }
}

impl JsonSchema for VarValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VarValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "A var's value; may reference other vars, secrets and env."
        })
    }
}

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable (`{ env: REDIS_PASSWORD }`).
    Env(String),
    /// A file whose content (trailing newline removed) is the secret (`{ file: /run/secrets/pw }`).
    File(String),
}

/// A system the runbook acts on.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetSpec {
    /// A Docker Engine.
    Docker(DockerTargetSpec),
    /// A Redis server.
    Redis(RedisTargetSpec),
}

/// A Docker Engine endpoint.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DockerTargetSpec {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `ssh://user@host[:port]`;
    /// default: `DOCKER_HOST`, else the Docker context (`context`, `DOCKER_CONTEXT`, the
    /// CLI's current one), else the local socket.
    #[serde(default)]
    pub host: Option<Spanned<Template>>,
    /// A Docker context (as `docker context ls` lists them) to take the host and TLS
    /// files from, when `host` is not given.
    #[serde(default)]
    pub context: Option<Spanned<String>>,
    /// Key, known hosts and connect timeout of an `ssh://` host (default: ssh's own,
    /// `~/.ssh/config` and the agent included; the host key is always checked).
    #[serde(default)]
    pub ssh: Option<DockerSsh>,
    /// Client certificates for `tcp://` with TLS (default: `DOCKER_CERT_PATH` when
    /// `DOCKER_TLS_VERIFY` is set).
    #[serde(default)]
    pub tls: Option<DockerTls>,
    /// Timeout of one API request (default 120s).
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
}

/// SSH settings of a Docker target.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(expecting = "SSH settings: `{ identity: FILE, known_hosts: FILE, connect_timeout: 15s }`")]
pub struct DockerSsh {
    /// Private key file to offer (a key with a passphrase must be in the ssh-agent
    /// instead: redis-move never asks for one).
    #[serde(default)]
    pub identity: Option<Template>,
    /// known_hosts file holding the host's key (default: `~/.ssh/known_hosts`).
    #[serde(default)]
    pub known_hosts: Option<Template>,
    /// Time limit of opening the connection (default 15s).
    #[serde(default)]
    pub connect_timeout: Option<RunbookDuration>,
}

/// TLS files of a Docker endpoint.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DockerTls {
    /// CA certificate (PEM).
    pub ca: Template,
    /// Client certificate (PEM).
    pub cert: Template,
    /// Client key (PEM).
    pub key: Template,
}

/// A Redis server.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedisTargetSpec {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `unix:///path/redis.sock`.
    pub url: Spanned<Template>,
    /// Password, when not in the URL (`${secrets.redis_password}`).
    #[serde(default)]
    pub password: Option<Template>,
    /// ACL user name, when not in the URL.
    #[serde(default)]
    pub username: Option<Template>,
    /// Database index, when not in the URL.
    #[serde(default)]
    pub db: Option<u32>,
    /// Response timeout (default 5s; Redis's client library defaults to 500ms, which
    /// cuts slow commands).
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
    /// Connect timeout (default 5s).
    #[serde(default)]
    pub connect_timeout: Option<RunbookDuration>,
    /// TLS settings for `rediss://`.
    #[serde(default)]
    pub tls: Option<RedisTls>,
    /// The container this Redis runs in, when it does: the pre-flight then reads its
    /// host's memory (Engine info) and the free disk of its data directory.
    #[serde(default)]
    pub container: Option<RedisContainer>,
    /// A Docker target whose host this Redis is reached from: the URL's address is as
    /// that host sees it (`redis://127.0.0.1:6379` on the VPS). When the Docker target is
    /// an `ssh://` host, redis-move forwards its connections through that SSH
    /// connection; when it is the local engine, it dials the address directly.
    #[serde(default)]
    pub via: Option<Spanned<String>>,
    /// The URL is a node of a Redis Cluster (`cluster: true`, or its settings): keys are
    /// read and written on the primary that serves their slot, SCAN walks every primary,
    /// and MOVED, ASK and failovers are followed.
    #[serde(default)]
    pub cluster: Option<RedisCluster>,
    /// The primary is the one these Sentinels report for `master`: redis-move asks them
    /// before each step and connects to it with the URL's credentials and TLS (the URL's
    /// host and port are not used).
    #[serde(default)]
    pub sentinel: Option<RedisSentinel>,
}

/// The Sentinels that monitor a target's primary.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinel {
    /// `host:port` of each Sentinel.
    pub addresses: Vec<Template>,
    /// The name they monitor the primary under (`sentinel monitor NAME ...`).
    pub master: Template,
    /// The Sentinels' own password (`requirepass` in sentinel.conf), if any.
    #[serde(default)]
    pub password: Option<Template>,
}

/// How a Redis Cluster target is reached.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RedisClusterFields {
    /// More nodes (`host:port`) to ask for the slot map when the URL's node is down.
    #[serde(default)]
    pub seeds: Vec<Template>,
    /// How long a command waits for the cluster to settle (a failover, a slot moving)
    /// before it fails (default 45s: longer than a failover takes with Redis's default
    /// `cluster-node-timeout` of 15s).
    #[serde(default)]
    pub settle: Option<RunbookDuration>,
}

/// `cluster: true`, or the cluster's settings.
#[derive(Clone, Debug, Default)]
pub struct RedisCluster(pub Option<RedisClusterFields>);

impl RedisCluster {
    /// The settings (`None`: `cluster: false`).
    pub fn fields(&self) -> Option<RedisClusterFields> {
        self.0.clone()
    }
}

impl<'de> Deserialize<'de> for RedisCluster {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ClusterVisitor;
        impl<'de> Visitor<'de> for ClusterVisitor {
            type Value = RedisCluster;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, or `{ seeds: [host:port, ...], settle: 45s }`")
            }
            fn visit_bool<E>(self, b: bool) -> Result<RedisCluster, E> {
                Ok(RedisCluster(b.then(RedisClusterFields::default)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RedisCluster, A::Error> {
                RedisClusterFields::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|f| RedisCluster(Some(f)))
            }
        }
        d.deserialize_any(ClusterVisitor)
    }
}

impl JsonSchema for RedisCluster {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RedisCluster".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let fields = generator.subschema_for::<RedisClusterFields>();
        schemars::json_schema!({
            "description": "`true`: the URL is a node of a Redis Cluster; or the cluster's settings.",
            "anyOf": [{ "type": "boolean" }, fields]
        })
    }
}

/// Where a Redis target runs: a container of a Docker target.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedisContainer {
    /// The Docker target (default: the local engine).
    #[serde(default)]
    pub docker: Option<Spanned<String>>,
    /// The container's name.
    pub name: Template,
}

/// TLS settings of a Redis target.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RedisTls {
    /// CA certificate to trust (PEM); default: the system roots.
    #[serde(default)]
    pub ca: Option<Template>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub cert: Option<Template>,
    /// Client key (PEM) for mutual TLS.
    #[serde(default)]
    pub key: Option<Template>,
    /// Accept any certificate (test setups only).
    #[serde(default)]
    pub insecure: bool,
}

/// What happens when a step of a phase fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop the run; it can be resumed (default).
    #[default]
    Abort,
    /// Record the failure and go on.
    Continue,
    /// Roll back everything done so far.
    Rollback,
}

/// Whether the steps of a phase run one after another or concurrently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parallel(pub Option<usize>);

impl<'de> Deserialize<'de> for Parallel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParallelVisitor;
        impl Visitor<'_> for ParallelVisitor {
            type Value = Parallel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false` or the number of steps run at once")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Parallel, E> {
                Ok(Parallel(if b { Some(0) } else { None }))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Parallel, E> {
                match n {
                    1 => Ok(Parallel(None)),
                    2..=1024 => Ok(Parallel(Some(n as usize))),
                    _ => Err(E::custom("`parallel` must be between 1 and 1024")),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Parallel, E> {
                self.visit_i64(n.min(i64::MAX as u64) as i64)
            }
        }
        d.deserialize_any(ParallelVisitor)
    }
}

impl JsonSchema for Parallel {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Parallel".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "false (default): steps run in declared order. true: steps run concurrently, ordered only by `needs`. A number: at most that many at once.",
            "anyOf": [{ "type": "boolean" }, { "type": "integer", "minimum": 1, "maximum": 1024 }]
        })
    }
}

/// A phase: a titled group of steps (or a single gate); phases run in order.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PhaseSpec {
    /// Unique id (`cutover`).
    pub id: Spanned<String>,
    /// Title shown in the plan and the report.
    #[serde(default)]
    pub title: Option<String>,
    /// Longer description.
    #[serde(default)]
    pub description: Option<String>,
    /// What a failing step does (default `abort`).
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// Run steps concurrently (see `Parallel`).
    #[serde(default)]
    pub parallel: Option<Parallel>,
    /// The steps, in declared order.
    #[serde(default)]
    pub steps: Vec<Lenient<Spanned<StepSpec>>>,
    /// A phase that is only a go/no-go gate.
    #[serde(default)]
    pub gate: Option<Spanned<GateParams>>,
    /// Steps that undo this phase, run after its steps' own rollbacks.
    #[serde(default)]
    pub rollback: Vec<Lenient<Spanned<StepSpec>>>,
    /// Targets a rollback would return to (the old Redis, the old host): checked before
    /// the phase starts; if one does not answer, the run stops at a gate (you cannot roll
    /// back to a dead source).
    #[serde(default)]
    pub rollback_targets: Vec<Spanned<String>>,
    /// What a rollback during this phase undoes: `run` (default: everything the run did,
    /// newest first) or `phase` (only this phase: the earlier phases stay in effect, as
    /// in a migration whose phases each have their own rollback).
    #[serde(default)]
    pub rollback_scope: RollbackScope,
}

/// What a rollback undoes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackScope {
    /// Everything the run did.
    #[default]
    Run,
    /// Only the phase where the rollback started.
    Phase,
}

/// How often to try a step again when it fails.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total attempts, the first included (>= 2).
    pub attempts: u32,
    /// Wait between attempts (default 1s).
    #[serde(default)]
    pub interval: Option<RunbookDuration>,
    /// Multiply the wait by this after each attempt (default 1: fixed interval).
    #[serde(default)]
    pub backoff: Option<f64>,
    /// Upper bound of the wait.
    #[serde(default)]
    pub max_interval: Option<RunbookDuration>,
}

/// The `rollback:` of a step: `none`, one step, or a list of steps.
#[derive(Clone, Debug)]
pub enum RollbackSpec {
    /// `rollback: none` — nothing to undo (silences the warning).
    Nothing,
    /// Steps to run instead of the built-in inverse.
    Steps(Vec<Spanned<StepSpec>>),
}

impl<'de> Deserialize<'de> for RollbackSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RollbackVisitor;
        impl<'de> Visitor<'de> for RollbackVisitor {
            type Value = RollbackSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none`, a step (`{ docker.start: {...} }`) or a list of steps")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RollbackSpec, E> {
                if s == "none" {
                    Ok(RollbackSpec::Nothing)
                } else {
                    Err(E::custom(format!(
                        "`rollback: {s}`: write `none`, a step or a list of steps"
                    )))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RollbackSpec, A::Error> {
                let step = StepSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RollbackSpec::Steps(vec![Spanned::unspanned(step)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RollbackSpec, A::Error> {
                let mut steps = Vec::new();
                while let Some(step) = seq.next_element()? {
                    steps.push(step);
                }
                Ok(RollbackSpec::Steps(steps))
            }
        }
        d.deserialize_any(RollbackVisitor)
    }
}

impl JsonSchema for RollbackSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rollback".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let step = generator.subschema_for::<StepSpec>();
        schemars::json_schema!({
            "description": "How to undo the step: `none`, one step, or a list of steps (ids optional). Without it, redis-move uses the action's built-in inverse where there is one.",
            "anyOf": [{ "const": "none" }, step, { "type": "array", "items": step }]
        })
    }
}

/// One step: an action plus how to check, retry and undo it.
#[derive(Clone, Debug, Default)]
pub struct StepSpec {
    /// Unique id (required except inside `rollback:`, `skip_if:` and `probe:`).
    pub id: Option<Spanned<String>>,
    /// Title shown in the plan and the report.
    pub title: Option<String>,
    /// The action (its key's value position).
    pub action: Option<Spanned<Action>>,
    /// What the value must look like.
    pub expect: Option<Spanned<Expect>>,
    /// Poll until the value looks like this (with `timeout` and `interval`).
    pub until: Option<Spanned<Expect>>,
    /// Retries on failure.
    pub retry: Option<Spanned<RetrySpec>>,
    /// Time limit of one attempt (or of the whole `until` polling).
    pub timeout: Option<RunbookDuration>,
    /// Polling interval for `until` (default 1s).
    pub interval: Option<RunbookDuration>,
    /// Steps of the same phase that must finish first.
    pub needs: Vec<Spanned<String>>,
    /// How to undo this step.
    pub rollback: Option<Spanned<RollbackSpec>>,
    /// Shown when the step fails (what to check, how to fix).
    pub hint: Option<String>,
    /// A read-only probe: when its expectation holds, the step's effect is already in
    /// place and the step is skipped.
    pub skip_if: Option<Box<Spanned<StepSpec>>>,
    /// Overrides the phase's `on_failure` for this step.
    pub on_failure: Option<OnFailure>,
}

/// The fields a step has besides its action.
pub const STEP_FIELDS: &[&str] = &[
    "id",
    "title",
    "expect",
    "until",
    "retry",
    "timeout",
    "interval",
    "needs",
    "rollback",
    "hint",
    "skip_if",
    "on_failure",
];

static STEP_KEYS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| STEP_FIELDS.iter().chain(ACTION_NAMES).copied().collect());

enum StepKey {
    Field(&'static str),
    Action(&'static str),
}

struct StepKeySeed {
    has_action: Option<&'static str>,
}

impl<'de> DeserializeSeed<'de> for StepKeySeed {
    type Value = StepKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<StepKey, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for StepKeySeed {
    type Value = StepKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a step field or an action name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<StepKey, E> {
        if let Some(field) = STEP_FIELDS.iter().find(|f| **f == key) {
            return Ok(StepKey::Field(field));
        }
        if let Some(action) = ACTION_NAMES.iter().find(|a| **a == key) {
            return match self.has_action {
                Some(first) => Err(E::custom(format!(
                    "a step has exactly one action: this step already has `{first}`, so `{key}` must go in a step of its own"
                ))),
                None => Ok(StepKey::Action(action)),
            };
        }
        let keys: &'static [&'static str] = STEP_KEYS.as_slice();
        Err(E::unknown_field(key, keys))
    }
}

impl<'de> Deserialize<'de> for StepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = StepSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a step: a map with an `id` and one action such as `redis.ping: { target: ... }`",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepSpec, A::Error> {
        let mut step = StepSpec::default();
        let mut seen: Vec<&'static str> = Vec::new();
        loop {
            let seed = StepKeySeed {
                has_action: step.action.as_ref().map(|a| a.value.name()),
            };
            let Some(key) = map.next_key_seed(seed)? else {
                break;
            };
            match key {
                StepKey::Action(name) => {
                    step.action = Some(map.next_value_seed(SpannedSeed(ActionSeed(name)))?);
                }
                StepKey::Field(field) => {
                    if seen.contains(&field) {
                        return Err(de::Error::duplicate_field(field));
                    }
                    seen.push(field);
                    match field {
                        "id" => step.id = Some(map.next_value()?),
                        "title" => step.title = Some(map.next_value()?),
                        "expect" => step.expect = Some(map.next_value()?),
                        "until" => step.until = Some(map.next_value()?),
                        "retry" => step.retry = Some(map.next_value()?),
                        "timeout" => step.timeout = Some(map.next_value()?),
                        "interval" => step.interval = Some(map.next_value()?),
                        "needs" => step.needs = map.next_value()?,
                        "rollback" => step.rollback = Some(map.next_value()?),
                        "hint" => step.hint = Some(map.next_value()?),
                        "skip_if" => step.skip_if = Some(Box::new(map.next_value()?)),
                        "on_failure" => step.on_failure = Some(map.next_value()?),
                        _ => {
                            return Err(de::Error::custom(format!(
                                "unhandled step field `{field}`"
                            )));
                        }
                    }
                }
            }
        }
        if step.action.is_none() {
            let what = step
                .id
                .as_ref()
                .map(|id| format!("step `{}`", id.value))
                .unwrap_or_else(|| "this step".to_owned());
            return Err(de::Error::custom(format!(
                "{what} has no action; add one of `redis.ping`, `docker.containers`, `shell`, `gate`, ... (see `redis-move schema`)"
            )));
        }
        Ok(step)
    }
}

impl JsonSchema for StepSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Step".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let text = generator.subschema_for::<String>();
        let expect = generator.subschema_for::<Expect>();
        let duration = generator.subschema_for::<RunbookDuration>();
        let retry = generator.subschema_for::<RetrySpec>();
        let rollback = generator.subschema_for::<RollbackSpec>();
        let on_failure = generator.subschema_for::<OnFailure>();
        let this = generator.subschema_for::<StepSpec>();
        let common = serde_json::json!({
            "id": { "type": "string", "description": "Unique step id (letters, digits, `-`, `_`)." },
            "title": text,
            "expect": expect,
            "until": expect,
            "retry": retry,
            "timeout": duration,
            "interval": duration,
            "needs": { "type": "array", "items": { "type": "string" } },
            "rollback": rollback,
            "hint": text,
            "skip_if": this,
            "on_failure": on_failure,
        });
        let variants: Vec<serde_json::Value> = Action::schemas(generator)
            .into_iter()
            .map(|(name, schema)| {
                let mut properties = common.as_object().cloned().unwrap_or_default();
                properties.insert(name.to_owned(), schema.to_value());
                serde_json::json!({
                    "type": "object",
                    "required": [name],
                    "properties": properties,
                    "additionalProperties": false
                })
            })
            .collect();
        schemars::json_schema!({
            "description": "A step: an `id`, exactly one action (`redis.ping: {...}`, `docker.recreate: {...}`, `shell: {...}`, ...), and optional expect/retry/rollback.",
            "oneOf": variants
        })
    }
}

/// A rollback trigger: a read-only probe watched during a window, and the condition
/// that fires it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Unique id.
    pub id: Spanned<String>,
    /// Title shown in the plan and the report.
    #[serde(default)]
    pub title: Option<String>,
    /// Phases during which the trigger is watched.
    #[serde(default)]
    pub during: Vec<Spanned<String>>,
    /// The step after which the window opens.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// The step after which the window closes (default: end of the run).
    #[serde(default)]
    pub until: Option<Spanned<String>>,
    /// How long the window stays open once opened (`10min`: "in the first 10 minutes").
    #[serde(default, rename = "for")]
    pub window: Option<RunbookDuration>,
    /// A read-only action (with an optional `expect` saying what healthy looks like).
    pub probe: Spanned<StepSpec>,
    /// Probe interval (default 5s).
    #[serde(default)]
    pub every: Option<RunbookDuration>,
    /// Time limit of one probe; a probe that hangs longer counts as failing (default:
    /// the interval).
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
    /// When the trigger fires.
    pub fire: Spanned<FireSpec>,
    /// What a probe that returns no data means (default `fail`).
    #[serde(default)]
    pub on_no_data: Option<DataPolicy>,
    /// What a probe error means (default `fail`).
    #[serde(default)]
    pub on_error: Option<DataPolicy>,
    /// `enforce` (default) acts; `shadow` only records what would have fired.
    #[serde(default)]
    pub mode: TriggerMode,
    /// What firing does (default `rollback`).
    #[serde(default)]
    pub action: FireAction,
    /// Shown when the trigger fires.
    #[serde(default)]
    pub hint: Option<String>,
}

/// The fire condition of a trigger: exactly one of `when`, `failing_for`, `increase`,
/// `rate`, `consecutive`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FireSpec {
    /// Threshold: fire when the probe value matches (`"> 7GB"`, `{ count: "> 0" }`).
    #[serde(default)]
    pub when: Option<Expect>,
    /// Fire when the probe has been failing (error, or its `expect` not holding) for
    /// this long without interruption.
    #[serde(default)]
    pub failing_for: Option<RunbookDuration>,
    /// Fire when the value grew by this much (`"> 100"`) within `within`.
    #[serde(default)]
    pub increase: Option<Expect>,
    /// The sliding window of `increase`.
    #[serde(default)]
    pub within: Option<RunbookDuration>,
    /// Fire when the value grows this many times faster than the baseline (`"> 10x"`).
    #[serde(default)]
    pub rate: Option<Expect>,
    /// The baseline rate per second (`${steps.queue-growth.value}`).
    #[serde(default)]
    pub baseline: Option<Template>,
    /// Or: measure the baseline rate over this long, at the start of the window or, with
    /// `baseline_before`, just before that step starts.
    #[serde(default)]
    pub baseline_window: Option<RunbookDuration>,
    /// Measure the `baseline_window` just before this step starts (the normal rate,
    /// before the change), sampling the probe from the start of the run.
    #[serde(default)]
    pub baseline_before: Option<Spanned<String>>,
    /// A baseline below this rate (units per second) counts as this rate (default: one a
    /// minute), so that small noise on a flat value is not "10x faster than normal".
    #[serde(default)]
    pub baseline_floor: Option<f64>,
    /// With `baseline_before`: measure with this read-only action instead of the probe
    /// (before the cutover the traffic is on the old server; `field` applies to both).
    #[serde(default)]
    pub baseline_probe: Option<Box<Spanned<StepSpec>>>,
    /// Fire after this many failing probes in a row.
    #[serde(default)]
    pub consecutive: Option<u32>,
    /// Look at this field of the probe's value (`total.depth`) instead of the whole.
    #[serde(default)]
    pub field: Option<String>,
}

/// What a missing value or a probe error means for a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPolicy {
    /// Counts as a failing sample.
    Fail,
    /// Ignored (the sample is skipped).
    Ignore,
    /// Pauses the run at an implicit gate: the operator decides.
    Inconclusive,
}

/// Whether a trigger acts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerMode {
    /// Fires for real.
    #[default]
    Enforce,
    /// Only records what would have fired: rehearse a trigger before trusting it.
    Shadow,
}

/// What a trigger does when it fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FireAction {
    /// Roll back at once.
    #[default]
    Rollback,
    /// Ask the operator (roll back or continue); without a terminal, roll back.
    Pause,
}
