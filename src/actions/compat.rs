//! Compatibility and capacity of the two servers of a data-movement step, checked before
//! anything changes: by `plan --check`, at the start of a run (for the pairs that
//! answer then), and by each `redis.replicate`, `redis.promote` and `redis.copy` right
//! before it acts.
//!
//! The receiver of an RDB stream or a DUMP payload must read the sender's RDB format: a
//! replica cannot load a newer primary's full sync, RESTORE refuses a newer payload,
//! and reverse replication (the lossless rollback of a promote) needs the old primary to
//! read the new one's format. The drain of a promote needs `CLIENT PAUSE ... WRITE`
//! (Redis 6.2+) or at least `CONFIG SET` for the fence. A full sync needs the target to
//! have the memory for the source's dataset.

use std::collections::BTreeMap;

use super::connections::Connections;
use super::resolve::Resolver;
use super::runner::ActionError;
use crate::backend::BackendError;
use crate::backend::redis::RedisBackend;
use crate::runbook::action::Action;
use crate::runbook::model::Step;
use crate::runbook::units::format_size;
use crate::value::Value;

/// Headroom a target needs above the source's `used_memory` for a full sync.
const MEMORY_HEADROOM: f64 = 1.1;

/// What the Docker Engine says of the host a Redis runs on (its target names its
/// container).
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    /// The host's memory (Engine info `MemTotal`).
    pub memory: f64,
    /// Free bytes of the server's data directory (`df` in its container), when known.
    pub disk_free: Option<f64>,
    /// The data directory.
    pub dir: String,
}

/// Reads the host facts of a Redis running in `container`.
pub async fn host_facts(
    docker: &crate::backend::docker::DockerBackend,
    container: &str,
    redis: &RedisBackend,
) -> Result<HostFacts, BackendError> {
    let memory = docker.host_memory().await?;
    let dir = redis
        .config_text("dir")
        .await
        .unwrap_or_else(|_| "/data".into());
    let df = docker
        .exec(
            container,
            &["df".into(), "-Pk".into(), dir.clone()],
            &[],
            None,
            None,
        )
        .await
        // A container that does not exist (a typo) is an error, not a disk left unchecked.
        .map_err(|e| BackendError::Command(format!("container `{container}`: {e}")))?;
    let disk_free = Some(df).filter(|o| o.exit_code == 0).and_then(|o| {
        let line = o.stdout.lines().nth(1)?.to_owned();
        let kb: f64 = line.split_whitespace().nth(3)?.parse().ok()?;
        Some(kb * 1024.0)
    });
    Ok(HostFacts {
        memory,
        disk_free,
        dir,
    })
}

/// What redis-move learns of one server before a data-movement step.
#[derive(Clone, Debug, Default)]
pub struct ServerFacts {
    /// `redis` or `valkey`.
    pub flavor: String,
    /// Its version (`7.0.15`).
    pub version: String,
    /// The RDB format version it writes (and the newest it reads), when known.
    pub rdb: Option<u32>,
    /// `used_memory`.
    pub used_memory: f64,
    /// `maxmemory` (0: none).
    pub maxmemory: f64,
    /// `total_system_memory` of its host (0: not reported).
    pub system_memory: f64,
    /// Whether CONFIG GET is allowed.
    pub config: bool,
    /// Whether DEBUG DIGEST-VALUE is allowed.
    pub debug: bool,
    /// Whether the server knows PSYNC (renamed or disabled on some services).
    pub psync: bool,
    /// Whether the server knows CLIENT (for CLIENT PAUSE).
    pub client: bool,
    /// AOF on, and the RDB save points, as CONFIG GET says (when allowed).
    pub persistence: String,
    /// What it is: `standalone`, `replica of HOST:PORT`, `cluster of N shards`, or
    /// `a cluster node` (reached as one server: keys of other slots answer MOVED).
    pub kind: String,
}

impl ServerFacts {
    fn name(&self) -> String {
        match self.rdb {
            Some(rdb) => format!(
                "{} {} (RDB {rdb}, {})",
                self.flavor, self.version, self.kind
            ),
            None => format!(
                "{} {} (RDB version unknown, {})",
                self.flavor, self.version, self.kind
            ),
        }
    }

    /// A node of a cluster that the runbook reaches as one server.
    fn undeclared_cluster_node(&self) -> bool {
        self.kind == UNDECLARED_CLUSTER_NODE
    }

    /// Whether `CLIENT PAUSE ... WRITE` exists (Redis 6.2+, Valkey) and CLIENT is not
    /// renamed away.
    pub fn pause_write(&self) -> bool {
        self.client && (self.flavor == "valkey" || version_at_least(&self.version, (6, 2)))
    }
}

fn version_at_least(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// The RDB format version a server of `flavor` and `version` writes.
pub fn rdb_version(flavor: &str, version: &str) -> Option<u32> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next().flatten().unwrap_or(0));
    if flavor == "valkey" {
        return match major {
            7 | 8 => Some(11),
            _ => None,
        };
    }
    Some(match (major, minor) {
        (0..=2, _) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5, _) | (6, _) => 9,
        (7, 0..=1) => 10,
        (7, 2..=3) => 11,
        (7, _) | (8, _) => 12,
        _ => return None,
    })
}

fn number(sections: &BTreeMap<String, BTreeMap<String, Value>>, section: &str, field: &str) -> f64 {
    match sections.get(section).and_then(|s| s.get(field)) {
        Some(Value::Number(n)) => *n,
        Some(other) => other.as_text().parse().unwrap_or(0.0),
        None => 0.0,
    }
}

/// Whether `redis` knows the command `name` (not renamed or disabled).
async fn knows(redis: &RedisBackend, name: &str) -> bool {
    match redis.raw(redis::cmd("COMMAND").arg("INFO").arg(name)).await {
        Ok(redis::Value::Array(items)) => items.first().is_some_and(|i| *i != redis::Value::Nil),
        _ => false,
    }
}

/// [`ServerFacts::kind`] of a cluster node reached as one server.
const UNDECLARED_CLUSTER_NODE: &str = "a cluster node";

/// What `redis` is, from its INFO (and its router, for a cluster target).
fn kind_of(redis: &RedisBackend, info: &BTreeMap<String, BTreeMap<String, Value>>) -> String {
    if let Some(cluster) = redis.cluster() {
        let map = cluster.slot_map();
        return format!(
            "cluster of {} shards, {} nodes",
            map.shards.len(),
            cluster.all_nodes().len()
        );
    }
    if number(info, "cluster", "cluster_enabled") == 1.0 {
        return UNDECLARED_CLUSTER_NODE.into();
    }
    let replication = info.get("replication");
    let field = |name: &str| {
        replication
            .and_then(|r| r.get(name))
            .map(Value::as_text)
            .unwrap_or_default()
    };
    match field("role").as_str() {
        "slave" => format!(
            "replica of {}:{}",
            field("master_host"),
            field("master_port")
        ),
        _ => "standalone".into(),
    }
}

/// Reads what the checks need from `redis`.
pub async fn facts(redis: &RedisBackend) -> Result<ServerFacts, BackendError> {
    let info = redis.info_sections(None).await?;
    let (flavor, version) = crate::backend::redis::server_version_of(&info);
    let config = redis.config_text("maxmemory").await.is_ok();
    let persistence = if config {
        let aof = redis.config_text("appendonly").await.unwrap_or_default();
        let save = redis.config_text("save").await.unwrap_or_default();
        format!("appendonly {aof}, save \"{save}\"")
    } else {
        format!(
            "aof_enabled {}",
            number(&info, "persistence", "aof_enabled")
        )
    };
    let debug = redis
        .raw(
            redis::cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg("redis-move:probe"),
        )
        .await
        .is_ok();
    // Known, and allowed to this user: a service may keep the command but refuse it
    // (ACLs), and REPLCONF is refused with it. REPLCONF capa only notes a capability of
    // this connection.
    let psync = knows(redis, "PSYNC").await
        && redis
            .raw(redis::cmd("REPLCONF").arg("capa").arg("psync2"))
            .await
            .is_ok();
    let client = knows(redis, "CLIENT").await;
    Ok(ServerFacts {
        kind: kind_of(redis, &info),
        rdb: rdb_version(&flavor, &version),
        flavor,
        version,
        used_memory: number(&info, "memory", "used_memory"),
        maxmemory: number(&info, "memory", "maxmemory"),
        system_memory: number(&info, "memory", "total_system_memory"),
        config,
        debug,
        psync,
        client,
        persistence,
    })
}

/// What a server is, its version, and which actions and strategies it allows: the
/// capability line `plan --check` prints per Redis target. `sentinel`: the target is
/// behind Sentinel.
pub fn capabilities(facts: &ServerFacts, sentinel: bool) -> String {
    let mut allows: Vec<&str> = vec!["redis.copy", "redis.verify", "redis.delete", "probes"];
    let mut refuses: Vec<String> = Vec::new();
    if facts.kind.starts_with("cluster of") {
        allows.extend([
            "redis.cluster_check",
            "redis.sync into it (a transaction per slot) and out of it (a stream per shard)",
        ]);
        refuses.push(
            "redis.replicate, redis.promote, redis.snapshot (one server on each side)".into(),
        );
    } else if facts.undeclared_cluster_node() {
        refuses.push("everything until declared `cluster: true`".into());
    } else if facts.psync {
        allows.extend(["redis.replicate", "redis.sync", "redis.snapshot"]);
    } else {
        refuses.push(
            "redis.replicate, redis.sync, redis.snapshot (no PSYNC/REPLCONF here: use redis.copy)"
                .into(),
        );
    }
    if sentinel {
        allows.push("redis.failover");
    }
    let mut notes = vec![if facts.pause_write() {
        "writes drained with CLIENT PAUSE WRITE".to_owned()
    } else {
        "no CLIENT PAUSE WRITE: a promote fences writes with CONFIG only".to_owned()
    }];
    notes.push(if facts.debug {
        "DEBUG DIGEST-VALUE allowed".to_owned()
    } else {
        "values compared by redis-move's digest (DEBUG refused)".to_owned()
    });
    if !facts.config {
        notes.push("CONFIG refused".into());
    }
    let mut line = format!("{}; allows {}", facts.name(), allows.join(", "));
    if !refuses.is_empty() {
        line.push_str(&format!("; refuses {}", refuses.join("; ")));
    }
    format!("{line}; {}", notes.join(", "))
}

/// One finding about a pair of servers.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// What was checked (`target reads the source's RDB`).
    pub check: &'static str,
    /// Whether it holds; `None`: it could not be told.
    pub passed: Option<bool>,
    /// What was seen, and what to do about a failure.
    pub detail: String,
}

fn finding(check: &'static str, passed: Option<bool>, detail: String) -> Finding {
    Finding {
        check,
        passed,
        detail,
    }
}

/// Whether `receiver` reads what `sender` writes.
fn reads(receiver: &ServerFacts, sender: &ServerFacts) -> Option<bool> {
    Some(receiver.rdb? >= sender.rdb?)
}

/// What the step's action needs of its source and target, judged from their facts (and
/// the target's host, when its container is known).
pub fn judge(
    action: &Action,
    source: &ServerFacts,
    target: &ServerFacts,
    host: Option<&HostFacts>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let formats = format!("source {}, target {}", source.name(), target.name());
    for (side, facts) in [("source", source), ("target", target)] {
        if facts.undeclared_cluster_node() {
            findings.push(finding(
                "each server is reached as what it is",
                Some(false),
                format!(
                    "the {side} is a node of a Redis Cluster, reached as one server: keys of the other nodes' slots would answer MOVED; declare it with `cluster: true`"
                ),
            ));
        }
    }
    match action {
        Action::RedisReplicate(_) => {
            let ok = reads(target, source);
            findings.push(finding(
                "the target reads the source's RDB",
                ok,
                match ok {
                    Some(false) => format!(
                        "{formats}: the target cannot load the source's full sync; give the target the source's version or newer"
                    ),
                    _ => formats.clone(),
                },
            ));
            findings.push(finding(
                "PSYNC is available on the source",
                Some(source.psync),
                if source.psync {
                    "the source knows PSYNC".into()
                } else {
                    "the source does not offer PSYNC (a managed service?): use `redis.copy` instead"
                        .into()
                },
            ));
            findings.push(finding(
                "CONFIG is allowed on both",
                Some(source.config && target.config),
                if source.config && target.config {
                    "CONFIG GET answers on both".into()
                } else {
                    "CONFIG is refused on one of them: the replica's credentials and the sync tuning need CONFIG SET".into()
                },
            ));
            let need = source.used_memory * MEMORY_HEADROOM;
            if target.maxmemory > 0.0 {
                findings.push(finding(
                    "the target's maxmemory holds the dataset",
                    Some(target.maxmemory >= need),
                    format!(
                        "target maxmemory {}, source used_memory {} (+10%: {})",
                        format_size(target.maxmemory),
                        format_size(source.used_memory),
                        format_size(need)
                    ),
                ));
            }
            if target.system_memory > 0.0 {
                findings.push(finding(
                    "the target's host has the memory",
                    Some(target.system_memory >= need),
                    format!(
                        "target host memory {}, source used_memory {} (+10%: {})",
                        format_size(target.system_memory),
                        format_size(source.used_memory),
                        format_size(need)
                    ),
                ));
            }
            match host {
                Some(host) => {
                    findings.push(finding(
                        "the target's Docker host has the memory",
                        Some(host.memory == 0.0 || host.memory >= need),
                        format!(
                            "Engine MemTotal {}, source used_memory {} (+10%: {})",
                            format_size(host.memory),
                            format_size(source.used_memory),
                            format_size(need)
                        ),
                    ));
                    findings.push(finding(
                        "the target's data directory has the disk",
                        host.disk_free.map(|free| free >= need),
                        match host.disk_free {
                            Some(free) => format!(
                                "{} free in `{}`, source used_memory {} (+10%: {})",
                                format_size(free),
                                host.dir,
                                format_size(source.used_memory),
                                format_size(need)
                            ),
                            None => format!("`df` gave nothing for `{}` in the container", host.dir),
                        },
                    ));
                }
                None => findings.push(finding(
                    "the target's data directory has the disk",
                    None,
                    "not checked: give the target's `container:` to check its host's memory and free disk".into(),
                )),
            }
            findings.push(finding(
                "persistence side by side",
                Some(true),
                format!(
                    "source: {}; target: {}",
                    source.persistence, target.persistence
                ),
            ));
        }
        Action::RedisPromote(p) => {
            if p.reverse {
                let ok = reads(source, target);
                findings.push(finding(
                    "the source reads the target's RDB (reverse replication)",
                    ok,
                    match ok {
                        Some(false) => format!(
                            "{formats}: the old primary cannot follow the new one, so a rollback would lose the writes made after the cutover; run the same version on both (pin the target's image)"
                        ),
                        _ => formats.clone(),
                    },
                ));
            }
            if p.drain {
                let hold = if source.pause_write() {
                    Some(true)
                } else {
                    Some(source.config)
                };
                findings.push(finding(
                    "writers can be held off on the source",
                    hold,
                    if source.pause_write() && source.config {
                        "CLIENT PAUSE WRITE (writers wait), then the fence (CONFIG SET)".into()
                    } else if source.pause_write() {
                        "CLIENT PAUSE WRITE is available but CONFIG is refused: the fence will fail; stop every writer and give `drain: false`".into()
                    } else if source.config {
                        format!(
                            "{} {} offers no CLIENT PAUSE WRITE: writers will be refused (NOREPLICAS) during the drain instead of waiting",
                            source.flavor, source.version
                        )
                    } else {
                        "neither CLIENT PAUSE WRITE nor CONFIG SET: stop every writer and give `drain: false`".into()
                    },
                ));
                if source.pause_write() && !source.config {
                    findings.last_mut().expect("just pushed").passed = Some(false);
                }
            }
        }
        Action::RedisSync(_) | Action::RedisCopy(_) => {
            if matches!(action, Action::RedisSync(_)) {
                findings.push(finding(
                    "the source lets redis-move follow it as a replica (PSYNC)",
                    Some(source.psync),
                    if source.psync {
                        "PSYNC and REPLCONF are allowed".into()
                    } else {
                        "the source refuses PSYNC or REPLCONF (a managed service, or an ACL): use `redis.copy` instead, with the writers stopped".into()
                    },
                ));
            }
            // Both write the source's values with RESTORE; the sync writes them as
            // commands to an older target.
            let ok = reads(target, source);
            if matches!(action, Action::RedisSync(_)) {
                findings.push(finding(
                    "the target takes the source's values",
                    Some(true),
                    match ok {
                        Some(false) => format!(
                            "{formats}: the target refuses the source's DUMP payloads, so values are written as commands (RPUSH, HSET, XADD...; slower than RESTORE)"
                        ),
                        _ => formats.clone(),
                    },
                ));
            } else {
                findings.push(finding(
                    "the target reads the source's DUMP payloads",
                    ok,
                    match ok {
                        Some(false) => format!(
                            "{formats}: RESTORE will refuse the source's payloads; give the target the source's version or newer, or use `redis.sync`, which writes values as commands to an older target"
                        ),
                        _ => formats.clone(),
                    },
                ));
            }
        }
        Action::RedisVerify(_) => {
            findings.push(finding(
                "how values are compared",
                Some(true),
                if source.debug && target.debug {
                    "DEBUG DIGEST-VALUE on both servers".into()
                } else {
                    "DEBUG is not allowed on both: a digest computed by redis-move (slower)".into()
                },
            ));
        }
        _ => {}
    }
    findings
}

/// The findings in one line; whether any failed.
pub fn summary(findings: &[Finding]) -> (bool, String) {
    let failed: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.passed == Some(false))
        .collect();
    if failed.is_empty() {
        let parts: Vec<String> = findings
            .iter()
            .map(|f| match f.passed {
                None => format!("{}: cannot tell ({})", f.check, f.detail),
                _ => f.detail.clone(),
            })
            .collect();
        (false, format!("compatible: {}", parts.join("; ")))
    } else {
        (
            true,
            failed
                .iter()
                .map(|f| format!("{}: no ({})", f.check, f.detail))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// The findings for a step whose two servers answer; an error when one does not.
pub async fn check_pair(
    action: &Action,
    source: &RedisBackend,
    target: &RedisBackend,
    host: Option<&HostFacts>,
) -> Result<Vec<Finding>, ActionError> {
    let (source, target) = tokio::try_join!(facts(source), facts(target))?;
    Ok(judge(action, &source, &target, host))
}

/// The compatibility of a data-movement step's servers, checked now: whether a check
/// failed, and the findings in a line. `None` for other steps; an error when a server
/// does not answer.
pub async fn check_step(
    connections: &Connections,
    step: &Step,
    resolver: &Resolver<'_>,
) -> Option<Result<(bool, String), ActionError>> {
    let source = source_of(&step.action)?;
    let target = step.target.as_deref()?;
    Some(
        async {
            let source = connections.redis(source, resolver).await?;
            let target_redis = connections.redis(target, resolver).await?;
            let host = match connections.container_of(target, resolver).await? {
                Some((docker, container)) if matches!(step.action, Action::RedisReplicate(_)) => {
                    Some(host_facts(&docker, &container, &target_redis).await?)
                }
                _ => None,
            };
            let findings = check_pair(&step.action, &source, &target_redis, host.as_ref()).await?;
            Ok(summary(&findings))
        }
        .await,
    )
}

/// The source of a data-movement step (`None` for other actions).
pub fn source_of(action: &Action) -> Option<&str> {
    match action {
        Action::RedisReplicate(p) => Some(&p.source.value),
        Action::RedisPromote(p) => Some(&p.source.value),
        Action::RedisCopy(p) => Some(&p.source.value),
        Action::RedisSync(p) => Some(&p.source.value),
        Action::RedisVerify(p) => Some(&p.source.value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_versions_of_known_releases() {
        assert_eq!(rdb_version("redis", "6.2.14"), Some(9));
        assert_eq!(rdb_version("redis", "7.0.15"), Some(10));
        assert_eq!(rdb_version("redis", "7.2.4"), Some(11));
        assert_eq!(rdb_version("redis", "7.4.1"), Some(12));
        assert_eq!(rdb_version("valkey", "8.0.1"), Some(11));
        assert_eq!(rdb_version("redis", "99.0.0"), None);
        assert_eq!(rdb_version("redis", ""), None);
    }

    fn server(version: &str) -> ServerFacts {
        ServerFacts {
            flavor: "redis".into(),
            version: version.into(),
            rdb: rdb_version("redis", version),
            config: true,
            psync: true,
            client: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_newer_target_breaks_reverse_replication_and_an_older_one_the_sync() {
        let runbook = crate::runbook::load_source(
            crate::runbook::SourceFile::new(
            "t.yaml",
            "version: 1\nname: t\ntargets:\n  a: { redis: { url: \"redis://h:1\" } }\n  b: { redis: { url: \"redis://h:2\" } }\nphases:\n  - id: p\n    steps:\n      - { id: r, redis.replicate: { target: b, source: a } }\n      - { id: p, redis.promote: { target: b, source: a, reverse: true } }\n",
            ),
            &[],
        )
        .runbook
        .expect("valid");
        let replicate = &runbook.step("r").unwrap().action;
        let promote = &runbook.step("p").unwrap().action;
        let (old, new) = (server("7.0.15"), server("7.4.1"));
        let (failed, why) = summary(&judge(promote, &old, &new, None));
        assert!(failed, "{why}");
        assert!(why.contains("cannot follow the new one"), "{why}");
        assert!(!summary(&judge(replicate, &old, &new, None)).0);
        let (failed, why) = summary(&judge(replicate, &new, &old, None));
        assert!(failed && why.contains("cannot load"), "{why}");
        assert!(!summary(&judge(promote, &old, &server("7.0.11"), None)).0);
        // Capacity: a host or a disk too small for the source's dataset fails.
        let big = ServerFacts {
            used_memory: 4e9,
            ..server("7.0.15")
        };
        let host = |memory: f64, disk: Option<f64>| HostFacts {
            memory,
            disk_free: disk,
            dir: "/data".into(),
        };
        let target = server("7.0.15");
        let fits = judge(replicate, &big, &target, Some(&host(16e9, Some(100e9))));
        assert!(!summary(&fits).0, "{fits:?}");
        let (failed, why) = summary(&judge(
            replicate,
            &big,
            &target,
            Some(&host(16e9, Some(1e9))),
        ));
        assert!(failed && why.contains("has the disk"), "{why}");
        let (failed, why) = summary(&judge(
            replicate,
            &big,
            &target,
            Some(&host(2e9, Some(100e9))),
        ));
        assert!(failed && why.contains("has the memory"), "{why}");
    }
}
