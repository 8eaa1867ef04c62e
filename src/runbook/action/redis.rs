//! Parameters of the `redis.*` actions.

use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{ActionParams, Effect, Inverse, Shape, TargetKind};
use crate::runbook::de::Spanned;
use crate::runbook::expect::check_regex;
use crate::runbook::template::Template;
use crate::runbook::units::{RunbookDuration, RunbookSize};

/// A Redis data type, for `TYPE` filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisType {
    /// Strings.
    String,
    /// Lists.
    List,
    /// Sets.
    Set,
    /// Sorted sets.
    Zset,
    /// Hashes.
    Hash,
    /// Streams.
    Stream,
}

impl fmt::Display for RedisType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

macro_rules! target_only {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize, JsonSchema)]
        #[schemars(deny_unknown_fields)]
        pub struct $name {
            /// The Redis target (may be left out when the runbook has one Redis target).
            #[serde(default)]
            pub target: Option<Spanned<String>>,
        }
    };
}

macro_rules! redis_target {
    () => {
        fn target(&self) -> Option<&Spanned<String>> {
            self.target.as_ref()
        }
        fn target_kind(&self) -> Option<TargetKind> {
            Some(TargetKind::Redis)
        }
    };
}

target_only! {
    /// `redis.ping`: the value is the round-trip latency.
    PingParams
}

impl ActionParams for PingParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Duration
    }
    fn describe(&self) -> String {
        "PING (value: latency)".into()
    }
}

/// `redis.info`: one INFO field as a typed value.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InfoParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// `section.field` (`memory.used_memory`) or a field (`evicted_keys`); derived:
    /// `stats.keyspace_hit_ratio` (hits / (hits + misses)), `keyspace.db0.keys`,
    /// `errorstats.OOM` (error replies of that kind; 0 when none), `stats.rejected_calls`
    /// and `stats.failed_calls` (summed over the commands), `commandstats.set.calls`.
    pub field: String,
    /// On a cluster, how the primaries' values make one (default `sum`).
    #[serde(default)]
    pub nodes: Nodes,
}

/// How the values of a cluster's primaries make the value of `redis.info` and
/// `redis.dbsize` (one server is one node).
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Nodes {
    /// Numbers summed (keys, memory in all); anything else the value they share.
    #[default]
    Sum,
    /// The largest number: the node nearest a per-node limit (memory, clients).
    Max,
    /// The smallest number.
    Min,
    /// Each primary's value, by its `host:port`.
    Each,
}

impl InfoParams {
    /// The section (if given) and field.
    pub fn section_and_field(&self) -> (Option<&str>, &str) {
        match self.field.split_once('.') {
            Some((section, field)) => (Some(section), field),
            None => (None, self.field.as_str()),
        }
    }
}

impl ActionParams for InfoParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        let (_, field) = self.section_and_field();
        if self.nodes == Nodes::Each {
            Shape::Any
        } else if field.ends_with("_human")
            || field.ends_with("_policy")
            || field.ends_with("_status")
        {
            Shape::Text
        } else if field.contains("memory") || field.ends_with("_bytes") {
            Shape::Bytes
        } else {
            Shape::Any
        }
    }
    fn describe(&self) -> String {
        let (section, field) = self.section_and_field();
        match section {
            Some(section) => format!("INFO {section} -> {field}"),
            None => format!("INFO -> {field}"),
        }
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        if self.field.trim().is_empty() || self.field.split('.').any(str::is_empty) {
            vec![(
                "field",
                format!("`{}` is not `section.field` or `field`", self.field),
            )]
        } else {
            Vec::new()
        }
    }
}

/// `redis.dbsize`: the number of keys.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DbsizeParams {
    /// The Redis target (may be left out when the runbook has one Redis target).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// On a cluster, how the primaries' key counts make one (default `sum`).
    #[serde(default)]
    pub nodes: Nodes,
}

impl ActionParams for DbsizeParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        match self.nodes {
            Nodes::Each => Shape::Any,
            _ => Shape::Number,
        }
    }
    fn describe(&self) -> String {
        "DBSIZE".into()
    }
}

target_only! {
    /// `redis.cluster_check`: a Redis Cluster's health, failing unless the cluster says
    /// `cluster_state:ok`, serves all 16384 slots, has no node failing and no slot
    /// being migrated. The value holds each measure (`state`, `slots_ok`,
    /// `slots_uncovered`, `primaries`, `replicas`, `failing`, `migrating`).
    ClusterCheckParams
}

impl ActionParams for ClusterCheckParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("state", Shape::Text),
            ("slots_assigned", Shape::Number),
            ("slots_ok", Shape::Number),
            ("slots_uncovered", Shape::Number),
            ("primaries", Shape::Number),
            ("replicas", Shape::Number),
            ("failing", Shape::List(&Shape::Text)),
            ("migrating", Shape::List(&Shape::Text)),
            ("asked", Shape::Text),
        ])
    }
    fn describe(&self) -> String {
        "check the cluster: state ok, every slot served, no node failing, no slot migrating".into()
    }
}

/// `redis.scan_count`: count keys matching a pattern with SCAN (never KEYS).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScanCountParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Glob pattern (`bull:*:wait`).
    #[serde(rename = "match")]
    pub pattern: Template,
    /// Only keys of this type.
    #[serde(default, rename = "type")]
    pub key_type: Option<RedisType>,
    /// SCAN's COUNT hint (default 1000).
    #[serde(default)]
    pub count: Option<u32>,
}

impl ActionParams for ScanCountParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Number
    }
    fn describe(&self) -> String {
        let mut out = format!("count keys matching `{}` with SCAN", self.pattern.display());
        if let Some(t) = self.key_type {
            out.push_str(&format!(" (type {t})"));
        }
        out
    }
}

/// Commands that change data or server state: refused under `read_only: true`.
const WRITE_COMMANDS: &[&str] = &[
    "APPEND",
    "BGREWRITEAOF",
    "BGSAVE",
    "BLMOVE",
    "BLPOP",
    "BRPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "COPY",
    "DECR",
    "DECRBY",
    "DEL",
    "EVAL",
    "EVALSHA",
    "EXPIRE",
    "EXPIREAT",
    "FCALL",
    "FLUSHALL",
    "FLUSHDB",
    "GETDEL",
    "GETEX",
    "GETSET",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HMSET",
    "HSET",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINSERT",
    "LMOVE",
    "LPOP",
    "LPUSH",
    "LPUSHX",
    "LREM",
    "LSET",
    "LTRIM",
    "MIGRATE",
    "MOVE",
    "MSET",
    "MSETNX",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PSETEX",
    "PUBLISH",
    "RENAME",
    "RENAMENX",
    "REPLICAOF",
    "RESTORE",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SADD",
    "SAVE",
    "SDIFFSTORE",
    "SET",
    "SETEX",
    "SETNX",
    "SETRANGE",
    "SHUTDOWN",
    "SINTERSTORE",
    "SLAVEOF",
    "SMOVE",
    "SPOP",
    "SREM",
    "SUNIONSTORE",
    "SWAPDB",
    "UNLINK",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP",
    "XTRIM",
    "ZADD",
    "ZDIFFSTORE",
    "ZINCRBY",
    "ZINTERSTORE",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANGESTORE",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZUNIONSTORE",
];

/// `redis.command`: any command; the value is the reply.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CommandParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The command and its arguments (`[LLEN, "bull:ocr:wait"]`).
    pub args: Vec<Template>,
    /// Declares that the command changes nothing.
    #[serde(default)]
    pub read_only: bool,
}

impl CommandParams {
    fn command_name(&self) -> String {
        self.args
            .first()
            .map(|a| a.display().to_ascii_uppercase())
            .unwrap_or_default()
    }
}

impl ActionParams for CommandParams {
    redis_target!();
    fn effect(&self) -> Effect {
        if self.read_only {
            Effect::ReadOnly
        } else {
            Effect::Mutating
        }
    }
    fn shape(&self) -> Shape {
        Shape::Any
    }
    fn describe(&self) -> String {
        let mut args: Vec<String> = self.args.iter().map(Template::display).collect();
        // AUTH and CONFIG SET requirepass/masterauth carry passwords even when written
        // literally.
        let name = self.command_name();
        let secret_from = match name.as_str() {
            "AUTH" => 1,
            "CONFIG"
                if args.get(2).is_some_and(|p| {
                    p.eq_ignore_ascii_case("requirepass") || p.eq_ignore_ascii_case("masterauth")
                }) =>
            {
                3
            }
            _ => args.len(),
        };
        for arg in args.iter_mut().skip(secret_from) {
            *arg = "****".into();
        }
        args.join(" ")
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let name = self.command_name();
        if self.args.is_empty() {
            return vec![(
                "args",
                "`args` is empty: give the command and its arguments".into(),
            )];
        }
        let writes = WRITE_COMMANDS.contains(&name.as_str())
            || (name == "CONFIG"
                && self
                    .args
                    .get(1)
                    .is_some_and(|a| !a.display().eq_ignore_ascii_case("GET")));
        if self.read_only && writes {
            return vec![(
                "read_only",
                format!("`{name}` changes data; it cannot be `read_only`"),
            )];
        }
        Vec::new()
    }
}

/// `redis.config_get`: a configuration parameter's value.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConfigGetParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The parameter (`maxmemory-policy`).
    pub parameter: String,
}

impl ActionParams for ConfigGetParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        if self.parameter == "maxmemory" {
            Shape::Bytes
        } else {
            Shape::Any
        }
    }
    fn describe(&self) -> String {
        format!("CONFIG GET {}", self.parameter)
    }
}

/// `redis.config_set`: set a parameter; the previous value is captured for rollback.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConfigSetParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The parameter.
    pub parameter: String,
    /// The new value.
    pub value: Template,
}

impl ActionParams for ConfigSetParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin("restore the previous value")
    }
    fn shape(&self) -> Shape {
        Shape::Text
    }
    fn describe(&self) -> String {
        let secret_parameter = ["requirepass", "masterauth"].contains(&self.parameter.as_str());
        let value = if secret_parameter {
            "****".to_owned()
        } else {
            self.value.display()
        };
        format!("CONFIG SET {} {value}", self.parameter)
    }
}

/// `redis.failover`: move a Sentinel-managed primary to a chosen replica, losing no
/// acknowledged write: the replica gets the best `replica-priority` (the others a worse
/// one, until the end), the primary's writes are paused until the replica has every one
/// and then refused (a fence), `SENTINEL FAILOVER` is asked, and the step ends when every
/// Sentinel reports the new primary and the old one is its replica. Rollback fails back
/// the same way.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FailoverParams {
    /// The Redis target (one with `sentinel:`).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The replica to promote, `host:port` as the Sentinels know it.
    pub to: Template,
    /// Longest write pause while the replica catches up (default 10s; half of it spent
    /// waiting gives up, nothing changed).
    #[serde(default)]
    pub pause: Option<RunbookDuration>,
    /// Time limit of the whole failover (default 2min: a Sentinel reads a replica's
    /// priority every 10s).
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
}

impl ActionParams for FailoverParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin("fail back to the primary before, the same way")
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("from", Shape::Text),
            ("to", Shape::Text),
            ("paused", Shape::Duration),
            ("sentinels", Shape::Number),
        ])
    }
    fn describe(&self) -> String {
        format!(
            "fail over to {} through Sentinel (writes paused until it has every one, then fenced)",
            self.to.display()
        )
    }
}

/// `redis.replicate`: make the target a replica of the source and wait for the full
/// sync.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReplicateParams {
    /// The Redis that becomes a replica (the new server).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The Redis to copy from (the old server).
    pub source: Spanned<String>,
    /// `host:port` of the source as the target reaches it, when it differs from the
    /// address redis-move uses.
    #[serde(default)]
    pub source_address: Option<Template>,
    /// Tune both servers for a fast sync (diskless, no delay) and restore the settings
    /// afterwards (default true).
    #[serde(default = "yes")]
    pub tune: bool,
    /// How long the full sync may take.
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
}

fn yes() -> bool {
    true
}

impl ActionParams for ReplicateParams {
    redis_target!();
    fn other_targets(&self) -> Vec<&Spanned<String>> {
        vec![&self.source]
    }
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin("stop replicating (REPLICAOF NO ONE) and restore the tuned settings")
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("master_link_status", Shape::Text),
            ("lag_bytes", Shape::Bytes),
            ("keys", Shape::Number),
            ("sync_duration", Shape::Duration),
        ])
    }
    fn describe(&self) -> String {
        format!(
            "REPLICAOF `{}`{} and wait for the full sync{}",
            self.source.value,
            if self.tune {
                " (tuned for the sync, settings restored after)"
            } else {
                ""
            },
            self.timeout
                .map(|t| format!(" (up to {t})"))
                .unwrap_or_default()
        )
    }
}

/// `redis.promote`: once writers have stopped, wait until the replica's offset matches
/// the source, then `REPLICAOF NO ONE`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PromoteParams {
    /// The replica to promote.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Its primary (to compare offsets).
    pub source: Spanned<String>,
    /// Then make the old primary a replica of the promoted one, so that a rollback
    /// loses no write made after the cutover.
    #[serde(default)]
    pub reverse: bool,
    /// `host:port` of the target as the source reaches it (for `reverse`).
    #[serde(default)]
    pub target_address: Option<Template>,
    /// `host:port` of the source as the target reaches it (for the rollback, which makes
    /// the target a replica again).
    #[serde(default)]
    pub source_address: Option<Template>,
    /// Hold writers off on the old primary while the replica catches up (`CLIENT PAUSE
    /// WRITE`, then a fence), so that no acknowledged write is lost (default true).
    /// `false` promotes as soon as offsets match, which is only safe once every writer
    /// has stopped.
    #[serde(default = "yes")]
    pub drain: bool,
    /// How long writers may be paused (default 5s). The drain must finish within half
    /// of it, or nothing is switched.
    #[serde(default)]
    pub pause: Option<RunbookDuration>,
    /// How long the whole promotion may take (default 5min).
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
}

impl PromoteParams {
    /// The pause budget of the drain; `None` when the step does not drain.
    pub fn drain_budget(&self) -> Option<std::time::Duration> {
        self.drain.then(|| {
            self.pause
                .map_or(std::time::Duration::from_secs(5), |p| p.0)
        })
    }
}

impl ActionParams for PromoteParams {
    redis_target!();
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(pause) = self.pause {
            if pause.0 < std::time::Duration::from_millis(100) {
                problems.push((
                    "pause",
                    format!("`pause: {pause}` leaves no time to drain: give at least 100ms"),
                ));
            }
            // Should redis-move die mid-drain, writers wait out the whole pause.
            if pause.0 > std::time::Duration::from_secs(600) {
                problems.push((
                    "pause",
                    format!("`pause: {pause}` would leave writers waiting that long if redis-move died mid-drain: give at most 10min"),
                ));
            }
            if let Some(timeout) = self.timeout
                && pause.0 > timeout.0
            {
                problems.push((
                    "pause",
                    format!("`pause: {pause}` is longer than the step's `timeout: {timeout}`"),
                ));
            }
            if !self.drain {
                problems.push((
                    "pause",
                    "`pause` has no effect with `drain: false`".to_owned(),
                ));
            }
        }
        problems
    }
    fn other_targets(&self) -> Vec<&Spanned<String>> {
        vec![&self.source]
    }
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        if self.reverse {
            Inverse::Builtin(
                "wait for the reverse replica to catch up, promote the source back, replicate from it again",
            )
        } else {
            Inverse::Builtin("make the target a replica of the source again")
        }
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("offset", Shape::Number),
            ("lag_bytes", Shape::Bytes),
            ("drained", Shape::Bool),
            ("hold", Shape::Text),
            ("held", Shape::Duration),
            ("budget", Shape::Duration),
            ("rejected_writes", Shape::Number),
            ("old_primary", Shape::Text),
            ("resync", Shape::Text),
            ("note", Shape::Text),
        ])
    }
    fn describe(&self) -> String {
        let mut out = match self.drain_budget() {
            Some(budget) => format!(
                "pause writes on `{}` (up to {}), wait until offsets match, fence it, then REPLICAOF NO ONE",
                self.source.value,
                crate::runbook::units::format_duration(budget)
            ),
            None => format!(
                "wait until offsets match `{}` (writers must be stopped), then REPLICAOF NO ONE",
                self.source.value
            ),
        };
        if self.reverse {
            out.push_str(&format!(
                "; then `{}` replicates from the target (reverse replication)",
                self.source.value
            ));
        } else if self.drain {
            out.push_str(&format!(
                "; `{}` stays fenced (it refuses writes)",
                self.source.value
            ));
        }
        out
    }
}

/// How `redis.copy` renames keys.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rename {
    /// Prefix to replace (`job:`).
    #[serde(default)]
    pub from: Option<String>,
    /// Its replacement (`step:`).
    #[serde(default)]
    pub to: Option<String>,
    /// A regex on the whole key (instead of `from`).
    #[serde(default)]
    pub regex: Option<String>,
    /// The replacement for `regex`, with `$1` groups.
    #[serde(default)]
    pub replace: Option<String>,
}

impl Rename {
    fn check(&self) -> Vec<(&'static str, String)> {
        match (&self.from, &self.to, &self.regex, &self.replace) {
            (Some(_), Some(_), None, None) => Vec::new(),
            (None, None, Some(regex), Some(_)) => check_regex(regex)
                .err()
                .map(|e| ("rename", e))
                .into_iter()
                .collect(),
            _ => vec![(
                "rename",
                "`rename` takes `from` + `to` (prefix) or `regex` + `replace`".into(),
            )],
        }
    }

    fn describe(&self) -> String {
        match (&self.from, &self.to, &self.regex, &self.replace) {
            (Some(from), Some(to), _, _) => format!("renaming `{from}*` -> `{to}*`"),
            (_, _, Some(regex), Some(replace)) => format!("renaming /{regex}/ -> `{replace}`"),
            _ => String::new(),
        }
    }
}

/// What `redis.copy` does with a key that already exists on the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExistingKeys {
    /// Leave it and count it (default).
    #[default]
    Skip,
    /// Overwrite it.
    Replace,
    /// Stop the copy.
    Fail,
    /// Merge the source's content into it: a set, hash or sorted set gets the members
    /// or fields it lacks (the target's value wins for a field or score both have); a
    /// list gets the source's elements it lacks, appended in order; a string or stream
    /// keeps the target's value. Its value before is kept for the rollback.
    Merge,
}

/// What a renaming copy (or its verification) does with key names stored inside
/// values: BullMQ keeps them in a flow child's `parentKey`, `parent.queueKey` and
/// `opts.parent.queue`, and in a parent's `:dependencies`, `:processed`, `:failed` and
/// `:unsuccessful` keys. Copied as they are, they still name the old keys, and a flow
/// parent never finishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum References {
    /// Stop the copy, naming the first keys that hold such references (default).
    #[default]
    Refuse,
    /// Rename the references as the keys they name are renamed (the values are written
    /// as commands instead of RESTORE); `redis.verify` with the same setting expects them
    /// so.
    Rewrite,
    /// Copy the values unchanged.
    Keep,
}

/// The most connections a copy opens to each side.
pub const MAX_COPY_CONNECTIONS: u32 = 64;

/// `redis.copy`: copy keys from source to target (SCAN, pipelined DUMP/RESTORE).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CopyParams {
    /// Where keys are read (never modified).
    pub source: Spanned<String>,
    /// Where keys are written (may be the source itself when renaming).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Glob pattern of keys to copy (default `*`).
    #[serde(default, rename = "match")]
    pub pattern: Option<Template>,
    /// Only keys of this type.
    #[serde(default, rename = "type")]
    pub key_type: Option<RedisType>,
    /// Rename keys on the way.
    #[serde(default)]
    pub rename: Option<Rename>,
    /// Keys that already exist on the target.
    #[serde(default)]
    pub existing: ExistingKeys,
    /// With `rename`: key names stored inside values (BullMQ's flows).
    #[serde(default)]
    pub references: References,
    /// Keys per pipelined batch (default 1000).
    #[serde(default)]
    pub batch: Option<u32>,
    /// Connections to each server (default 4).
    #[serde(default)]
    pub connections: Option<u32>,
    /// Keys larger than this are copied in chunks with type-specific commands.
    #[serde(default)]
    pub chunk_above: Option<RunbookSize>,
}

impl ActionParams for CopyParams {
    redis_target!();
    fn other_targets(&self) -> Vec<&Spanned<String>> {
        vec![&self.source]
    }
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin(
            "delete exactly the keys this copy created, put back those it replaced, take out what it merged",
        )
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("copied", Shape::Number),
            ("created", Shape::Number),
            ("replaced", Shape::Number),
            ("skipped", Shape::Number),
            ("vanished", Shape::Number),
            ("chunked", Shape::Number),
            ("bytes", Shape::Bytes),
            ("keys_per_second", Shape::Number),
            // Into or out of a cluster: the keys checked again after the pass, and
            // those copied again (lost with a primary that died).
            ("rechecked", Shape::Number),
            ("recopied", Shape::Number),
        ])
    }
    fn describe(&self) -> String {
        let pattern = self
            .pattern
            .as_ref()
            .map(Template::display)
            .unwrap_or_else(|| "*".into());
        let mut out = format!(
            "copy keys matching `{pattern}` from `{}`",
            self.source.value
        );
        if let Some(rename) = &self.rename {
            out.push_str(&format!(", {}", rename.describe()));
        }
        out.push_str(&format!(
            ", existing keys: {}",
            format!("{:?}", self.existing).to_lowercase()
        ));
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = self.rename.as_ref().map(Rename::check).unwrap_or_default();
        if self.batch == Some(0) {
            problems.push(("batch", "`batch` must be at least 1 key".into()));
        }
        if let Some(n) = self.connections
            && !(1..=MAX_COPY_CONNECTIONS).contains(&n)
        {
            problems.push((
                "connections",
                format!(
                    "`connections` must be from 1 to {MAX_COPY_CONNECTIONS} (per side), not {n}"
                ),
            ));
        }
        let same_server = self
            .target
            .as_ref()
            .is_some_and(|t| t.value == self.source.value);
        if same_server && self.rename.is_none() {
            problems.push((
                "rename",
                "copying a server onto itself needs `rename:`".into(),
            ));
        }
        problems
    }
}

/// One family of keys a `redis.sync` moves: a glob of their source names and how they
/// are renamed.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SyncKeys {
    /// Glob pattern of the keys (their names on the source).
    #[serde(rename = "match")]
    pub pattern: Template,
    /// Rename them on the way.
    #[serde(default)]
    pub rename: Option<Rename>,
}

/// What `redis.sync` does with a key that already exists on the target and is not its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncExisting {
    /// Stop the sync, naming the key (default).
    #[default]
    Fail,
    /// Overwrite it; its value before is kept for the rollback.
    Replace,
}

/// How `redis.sync` writes the keys of its full sync to the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncLoad {
    /// One `RESTORE` per key (commands for an older target): any target (default).
    #[default]
    Restore,
    /// The target syncs from redis-move as its replica and loads an RDB of the renamed
    /// keys at its own speed, then is told `REPLICAOF NO ONE`: only for an empty target
    /// that reaches redis-move (`listen`, `announce`) and reads the source's RDB version.
    Replication,
}

/// `redis.sync`: follow the source as a replica (PSYNC): its RDB, then its stream of
/// writes, applied to the target with a key filter and a rename, in the background
/// until a `redis.sync_stop` drains and stops it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SyncParams {
    /// The server followed (never modified).
    pub source: Spanned<String>,
    /// Where keys are written (may be the source itself when renaming).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Glob pattern of the keys (when the sync moves one family of keys).
    #[serde(default, rename = "match")]
    pub pattern: Option<Template>,
    /// Rename them on the way (with `match`).
    #[serde(default)]
    pub rename: Option<Rename>,
    /// Several families of keys, each with its rename (instead of `match`): the first
    /// whose pattern matches a key takes it.
    #[serde(default)]
    pub keys: Vec<SyncKeys>,
    /// The source database whose keys move (default: the source target's own).
    #[serde(default)]
    pub db: Option<u64>,
    /// A key that already exists on the target.
    #[serde(default)]
    pub existing: SyncExisting,
    /// How the full sync's keys reach the target.
    #[serde(default)]
    pub load: SyncLoad,
    /// With `load: replication`: where redis-move listens for the target
    /// (`127.0.0.1:0` by default: a free port on loopback).
    #[serde(default)]
    pub listen: Option<Template>,
    /// With `load: replication`: the `host:port` the target connects to (default: the
    /// listening address).
    #[serde(default)]
    pub announce: Option<Template>,
}

impl SyncParams {
    /// The families of keys, `match`/`rename` or `keys` (`*` when neither is given).
    pub fn families(&self) -> Vec<(Option<&Template>, Option<&Rename>)> {
        if self.keys.is_empty() {
            vec![(self.pattern.as_ref(), self.rename.as_ref())]
        } else {
            self.keys
                .iter()
                .map(|k| (Some(&k.pattern), k.rename.as_ref()))
                .collect()
        }
    }

    /// Whether it renames any key.
    pub fn renames(&self) -> bool {
        self.families().iter().any(|(_, rename)| rename.is_some())
    }
}

impl ActionParams for SyncParams {
    redis_target!();
    fn other_targets(&self) -> Vec<&Spanned<String>> {
        vec![&self.source]
    }
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::Builtin(
            "stop the sync, delete exactly the keys it created, put back those it replaced",
        )
    }
    fn shape(&self) -> Shape {
        Shape::Object(SYNC_FIELDS)
    }
    fn describe(&self) -> String {
        let families: Vec<String> = self
            .families()
            .iter()
            .map(|(pattern, rename)| {
                let pattern = pattern.map(Template::display).unwrap_or_else(|| "*".into());
                match rename {
                    Some(rename) => format!("`{pattern}` {}", rename.describe()),
                    None => format!("`{pattern}`"),
                }
            })
            .collect();
        format!(
            "follow `{}` as a replica (PSYNC): its RDB, then its writes, for keys {}, in the background until a redis.sync_stop; existing keys: {}",
            self.source.value,
            families.join(", "),
            format!("{:?}", self.existing).to_lowercase()
        )
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems: Vec<(&'static str, String)> = self
            .families()
            .iter()
            .filter_map(|(_, rename)| *rename)
            .flat_map(Rename::check)
            .collect();
        if !self.keys.is_empty() && (self.pattern.is_some() || self.rename.is_some()) {
            problems.push((
                "keys",
                "give the keys either as `match` (+ `rename`) or as a `keys:` list, not both"
                    .into(),
            ));
        }
        let same_server = self
            .target
            .as_ref()
            .is_some_and(|t| t.value == self.source.value);
        if same_server && self.families().iter().any(|(_, rename)| rename.is_none()) {
            problems.push((
                "rename",
                "syncing a server onto itself needs a `rename:` for every family of keys".into(),
            ));
        }
        if self.load == SyncLoad::Replication && same_server {
            problems.push((
                "load",
                "`load: replication` makes the target a replica of redis-move (its whole dataset replaced): not for a sync onto its own source".into(),
            ));
        }
        if self.load != SyncLoad::Replication && (self.listen.is_some() || self.announce.is_some())
        {
            problems.push((
                "listen",
                "`listen` and `announce` are for `load: replication` only".into(),
            ));
        }
        problems
    }
}

/// The fields of a sync's value (its step's value and `redis.sync_status`).
pub const SYNC_FIELDS: &[(&str, Shape)] = &[
    ("state", Shape::Text),
    ("start", Shape::Text),
    ("lag_bytes", Shape::Bytes),
    ("lag_seconds", Shape::Duration),
    ("keys", Shape::Number),
    ("replaced", Shape::Number),
    ("commands", Shape::Number),
    ("skipped", Shape::Number),
    ("offset", Shape::Number),
    ("error", Shape::Text),
];

/// `redis.sync_status`: how a running `redis.sync` is doing (lag, keys, commands), for
/// checks, `until` and triggers.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SyncStatusParams {
    /// The `redis.sync` step.
    pub sync: Spanned<String>,
}

impl ActionParams for SyncStatusParams {
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Object(SYNC_FIELDS)
    }
    fn describe(&self) -> String {
        format!(
            "the state of sync `{}` (lag, keys, commands applied)",
            self.sync.value
        )
    }
}

/// `redis.sync_stop`: drain a running `redis.sync` (every write the source acknowledged
/// so far applied) and stop it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SyncStopParams {
    /// The `redis.sync` step.
    pub sync: Spanned<String>,
    /// Hold writers off on the source while the sync catches up (`CLIENT PAUSE WRITE`,
    /// then a fence: later writes are refused with `NOREPLICAS`), for writers that
    /// cannot be stopped. Only when source and target are different servers; without
    /// it, stop the writers first.
    #[serde(default)]
    pub pause: Option<RunbookDuration>,
    /// How long the drain may take (default 5min).
    #[serde(default)]
    pub timeout: Option<RunbookDuration>,
}

impl ActionParams for SyncStopParams {
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        if self.pause.is_some() {
            Inverse::Builtin("lift the fence on the source")
        } else {
            Inverse::NotNeeded
        }
    }
    fn shape(&self) -> Shape {
        Shape::Object(SYNC_FIELDS)
    }
    fn describe(&self) -> String {
        match self.pause {
            Some(pause) => format!(
                "pause writes on the source of sync `{}` (up to {pause}), wait until every write is applied, fence the source, stop the sync",
                self.sync.value
            ),
            None => format!(
                "wait until sync `{}` has applied every write the source has taken (writers must be stopped), then stop it",
                self.sync.value
            ),
        }
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(pause) = self.pause {
            if pause.0 < std::time::Duration::from_millis(100) {
                problems.push((
                    "pause",
                    format!("`pause: {pause}` leaves no time to drain: give at least 100ms"),
                ));
            }
            if pause.0 > std::time::Duration::from_secs(600) {
                problems.push((
                    "pause",
                    format!("`pause: {pause}` would leave writers waiting that long if redis-move died mid-drain: give at most 10min"),
                ));
            }
        }
        problems
    }
}

/// How `redis.verify` compares values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DigestMode {
    /// `DEBUG DIGEST-VALUE` where allowed, else client-side hashing (default).
    #[default]
    Auto,
    /// Only `DEBUG DIGEST-VALUE`.
    Debug,
    /// Only client-side canonical hashing.
    Client,
}

/// `redis.verify`: compare keys of source and target.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct VerifyParams {
    /// The reference.
    pub source: Spanned<String>,
    /// The copy.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Glob pattern of keys (default `*`).
    #[serde(default, rename = "match")]
    pub pattern: Option<Template>,
    /// The rename the copy applied.
    #[serde(default)]
    pub rename: Option<Rename>,
    /// The `references` setting of the copy: with `rewrite`, a value holding key names
    /// is expected with the renamed names.
    #[serde(default)]
    pub references: References,
    /// Check this many keys at random (default: all).
    #[serde(default)]
    pub sample: Option<u64>,
    /// Allowed difference between TTLs (default 2s).
    #[serde(default)]
    pub ttl_tolerance: Option<RunbookDuration>,
    /// How values are compared.
    #[serde(default)]
    pub digest: DigestMode,
    /// The target holds at least the source's content (after a copy with `existing:
    /// merge`): every member, field, element or sorted-set member of a source key is in
    /// its target key (values and scores may differ where the merge kept the target's);
    /// strings and streams need only exist with the same type; TTLs are not compared.
    #[serde(default)]
    pub contains: bool,
}

impl ActionParams for VerifyParams {
    redis_target!();
    fn other_targets(&self) -> Vec<&Spanned<String>> {
        vec![&self.source]
    }
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("checked", Shape::Number),
            ("missing", Shape::Number),
            ("mismatched", Shape::Number),
            ("mismatches", Shape::List(&Shape::Text)),
        ])
    }
    fn describe(&self) -> String {
        let pattern = self
            .pattern
            .as_ref()
            .map(Template::display)
            .unwrap_or_else(|| "*".into());
        let scope = match self.sample {
            Some(n) => format!("a sample of {n} keys"),
            None => "every key".into(),
        };
        let mut out = format!(
            "verify {scope} matching `{pattern}` against `{}` (type, TTL, content digest)",
            self.source.value
        );
        if let Some(rename) = &self.rename {
            out.push_str(&format!(", {}", rename.describe()));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = self.rename.as_ref().map(Rename::check).unwrap_or_default();
        if self.sample == Some(0) {
            problems.push((
                "sample",
                "`sample: 0` checks no key; leave it out to check every key".into(),
            ));
        }
        problems
    }
}

/// `redis.queues`: BullMQ queue depths per queue.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct QueuesParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// The BullMQ key prefix (default `bull`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Only these queues (default: every queue found).
    #[serde(default)]
    pub queues: Vec<String>,
}

impl ActionParams for QueuesParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            (
                "total",
                Shape::Object(&[
                    ("waiting", Shape::Number),
                    ("active", Shape::Number),
                    ("prioritized", Shape::Number),
                    ("delayed", Shape::Number),
                    ("completed", Shape::Number),
                    ("failed", Shape::Number),
                    ("waiting_children", Shape::Number),
                    ("schedulers", Shape::Number),
                    ("depth", Shape::Number),
                    ("paused", Shape::Number),
                ]),
            ),
            ("queues", Shape::Any),
        ])
    }
    fn describe(&self) -> String {
        let prefix = self.prefix.as_deref().unwrap_or("bull");
        if self.queues.is_empty() {
            format!("BullMQ depths of every `{prefix}:*` queue")
        } else {
            format!(
                "BullMQ depths of `{prefix}` queues {}",
                self.queues.join(", ")
            )
        }
    }
}

/// `redis.delete`: delete keys matching a pattern (SCAN + UNLINK, in batches).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DeleteParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Glob pattern of keys to delete.
    #[serde(rename = "match")]
    pub pattern: Template,
    /// Only keys of this type.
    #[serde(default, rename = "type")]
    pub key_type: Option<RedisType>,
    /// The id of an earlier step that backed these keys up (required unless `force`).
    #[serde(default)]
    pub backup: Option<Spanned<String>>,
    /// Delete without a backup step.
    #[serde(default)]
    pub force: bool,
    /// Keys deleted per second at most.
    #[serde(default)]
    pub rate: Option<u32>,
}

impl ActionParams for DeleteParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[("deleted", Shape::Number)])
    }
    fn describe(&self) -> String {
        let mut out = format!(
            "delete keys matching `{}` (SCAN + UNLINK)",
            self.pattern.display()
        );
        if let Some(rate) = self.rate {
            out.push_str(&format!(", at most {rate} keys/s"));
        }
        if let Some(backup) = &self.backup {
            out.push_str(&format!(", backed up by step `{}`", backup.value));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.backup.is_none() && !self.force {
            problems.push(("backup", "`redis.delete` needs `backup: STEP` (an earlier step that backed these keys up) or `force: true`".into()));
        }
        if self.rate == Some(0) {
            problems.push((
                "rate",
                "`rate: 0` deletes nothing, ever; leave it out for no limit".into(),
            ));
        }
        problems
    }
}

/// How `redis.snapshot` gets the server's dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMethod {
    /// Over the replication protocol (`SYNC`, as `redis-cli --rdb`): works where the
    /// server's disk is out of reach (default).
    #[default]
    Replication,
    /// `BGSAVE`, then the server's RDB file is read from its disk or its container.
    Bgsave,
}

/// Where the server of a `bgsave` snapshot runs, when in a container.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SnapshotContainer {
    /// The Docker target (default: the local engine).
    #[serde(default)]
    pub docker: Option<Spanned<String>>,
    /// The container's name.
    pub name: Template,
}

/// A container directory a snapshot is also copied to (a volume mounted there keeps it).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SnapshotCopy {
    /// The Docker target (default: the local engine).
    #[serde(default)]
    pub docker: Option<Spanned<String>>,
    /// The container's name.
    pub container: Template,
    /// The directory in the container (it must exist).
    pub path: Template,
}

/// `redis.snapshot`: a verified point-in-time copy of a server's dataset, as an RDB
/// file, taken before the point of no return.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SnapshotParams {
    /// The Redis to snapshot.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// How the dataset is read (default `replication`).
    #[serde(default)]
    pub method: SnapshotMethod,
    /// The local directory the file is written to (relative to the runbook); the file is
    /// `<step id>-<UTC time>.rdb`.
    pub to: Template,
    /// With `bgsave`: the container the server runs in; its RDB is read through the
    /// Docker Engine API.
    #[serde(default)]
    pub container: Option<SnapshotContainer>,
    /// With `bgsave`: the RDB file's path on the server's host or in its container
    /// (default: CONFIG GET `dir` and `dbfilename`).
    #[serde(default)]
    pub path: Option<Template>,
    /// Also copy the verified file into a directory of a container, through the Docker
    /// Engine API (onto a volume mounted there, on another host).
    #[serde(default)]
    pub copy_to: Option<SnapshotCopy>,
    /// Load the file into a throwaway `redis-server` and compare it with the source
    /// (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// Keys of the snapshot compared with the source (default 1000).
    #[serde(default)]
    pub sample: Option<u64>,
    /// The share that may differ from the source because writers kept writing: of all
    /// keys (the per-type counts apart, summed), and of the sampled keys (default `0%`).
    #[serde(default)]
    pub max_changed: Option<crate::runbook::units::Percent>,
}

impl ActionParams for SnapshotParams {
    redis_target!();
    fn docker_targets(&self) -> Vec<&Spanned<String>> {
        let from = self.container.as_ref().and_then(|c| c.docker.as_ref());
        let to = self.copy_to.as_ref().and_then(|c| c.docker.as_ref());
        from.into_iter().chain(to).collect()
    }
    fn effect(&self) -> Effect {
        Effect::Mutating
    }
    fn inverse(&self) -> Inverse {
        Inverse::NotNeeded
    }
    fn shape(&self) -> Shape {
        Shape::Object(&[
            ("file", Shape::Text),
            ("copied_to", Shape::Text),
            ("bytes", Shape::Bytes),
            ("sha256", Shape::Text),
            ("rdb_version", Shape::Number),
            ("method", Shape::Text),
            ("duration", Shape::Duration),
            ("verified", Shape::Bool),
            ("keys", Shape::Number),
            ("source_keys", Shape::Number),
            ("sampled", Shape::Number),
            ("changed", Shape::Number),
        ])
    }
    fn describe(&self) -> String {
        let mut out = match self.method {
            SnapshotMethod::Replication => format!(
                "an RDB snapshot over the replication protocol into `{}`",
                self.to.display()
            ),
            SnapshotMethod::Bgsave => format!(
                "BGSAVE, then copy the RDB file into `{}`",
                self.to.display()
            ),
        };
        if let Some(copy) = &self.copy_to {
            out.push_str(&format!(
                "; copy it into `{}:{}`",
                copy.container.display(),
                copy.path.display()
            ));
        }
        if self.verify {
            out.push_str(&format!(
                "; load it into a throwaway redis-server and compare {} keys with the source",
                self.sample.unwrap_or(1000)
            ));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.method == SnapshotMethod::Replication
            && (self.container.is_some() || self.path.is_some())
        {
            problems.push((
                "method",
                "`container` and `path` are for `method: bgsave`".to_owned(),
            ));
        }
        if self.sample == Some(0) {
            problems.push((
                "sample",
                "`sample: 0` compares nothing: give at least 1, or `verify: false`".to_owned(),
            ));
        }
        if !self.verify && (self.sample.is_some() || self.max_changed.is_some()) {
            problems.push((
                "verify",
                "`sample` and `max_changed` need `verify: true`".to_owned(),
            ));
        }
        problems
    }
}

/// What `redis.clients` yields for each client.
pub static CLIENT_SHAPE: Shape = Shape::Object(&[
    ("id", Shape::Number),
    ("addr", Shape::Text),
    ("host", Shape::Text),
    ("laddr", Shape::Text),
    ("name", Shape::Text),
    ("age", Shape::Duration),
    ("idle", Shape::Duration),
    ("flags", Shape::Text),
    ("db", Shape::Number),
    ("cmd", Shape::Text),
    ("lib_name", Shape::Text),
    ("lib_ver", Shape::Text),
    ("replica", Shape::Bool),
    ("node", Shape::Text),
]);

static CLIENTS: Shape = Shape::List(&CLIENT_SHAPE);

/// `redis.clients`: the clients connected to a server (`CLIENT LIST`), without its
/// replicas and without redis-move's own connections unless asked.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClientsParams {
    /// The Redis target.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// Regex on the client's name (`CLIENT SETNAME`; BullMQ names its connections).
    #[serde(default)]
    pub name: Option<Template>,
    /// Regex on the client library's name (`CLIENT SETINFO`, Redis 7.2+).
    #[serde(default)]
    pub lib: Option<Template>,
    /// Regex on the client's address (`ip:port`).
    #[serde(default)]
    pub addr: Option<Template>,
    /// Count replicas too (default false).
    #[serde(default)]
    pub replicas: bool,
    /// Count redis-move's own connections too (default false).
    #[serde(default)]
    pub include_self: bool,
}

impl ActionParams for ClientsParams {
    redis_target!();
    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn shape(&self) -> Shape {
        CLIENTS
    }
    fn describe(&self) -> String {
        let mut filters = Vec::new();
        for (field, value) in [
            ("name", &self.name),
            ("lib", &self.lib),
            ("addr", &self.addr),
        ] {
            if let Some(v) = value {
                filters.push(format!("{field} /{}/", v.display()));
            }
        }
        let mut out = "CLIENT LIST".to_owned();
        if !filters.is_empty() {
            out.push_str(&format!(", {}", filters.join(", ")));
        }
        let mut left_out = Vec::new();
        if !self.replicas {
            left_out.push("replicas");
        }
        if !self.include_self {
            left_out.push("redis-move's own connections");
        }
        if !left_out.is_empty() {
            out.push_str(&format!(" (without {})", left_out.join(" and ")));
        }
        out
    }
    fn check(&self) -> Vec<(&'static str, String)> {
        [
            ("name", &self.name),
            ("lib", &self.lib),
            ("addr", &self.addr),
        ]
        .into_iter()
        .filter_map(|(field, value)| {
            let text = value.as_ref()?.as_literal()?;
            crate::runbook::expect::check_regex(text)
                .err()
                .map(|e| (field, e))
        })
        .collect()
    }
}
