//! `redis.snapshot`: a verified point-in-time copy of a server's dataset, taken before
//! the point of no return (a promote with reverse replication makes the old primary
//! throw its dataset away to follow the new one).
//!
//! The RDB comes over the replication protocol (`SYNC`, so the server's disk need not
//! be reachable) or from a `BGSAVE` (read from the server's disk or, through the Docker
//! Engine API, from its container). It is written to `<to>/<step>-<time>.rdb` with its
//! size, SHA-256 and RDB version in the value, and, verified, optionally copied into a
//! container's directory (a volume on another host) through the Engine API. Verification loads it into a throwaway
//! `redis-server` on a unix socket (the RDB checksum is checked as it loads), then
//! compares the key counts per type and a sample of keys (type, TTL, value) with the
//! source.
//!
//! Restoring from it: stop the server, put the file in its `dir` as its `dbfilename`
//! (with `appendonly no`, or `BGREWRITEAOF` once it is back), start it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::act::Act;
use super::runner::ActionError;
use super::verify::{VerifyPlan, verify};
use crate::backend::BackendError;
use crate::backend::rdb::{self, RdbFile};
use crate::backend::redis::{RedisBackend, RedisEndpoint};
use crate::runbook::action::{DigestMode, SnapshotMethod, SnapshotParams};
use crate::runbook::units::{Percent, format_duration, format_size};
use crate::value::Value;

/// Keys compared with the source when the step sets no `sample`.
const DEFAULT_SAMPLE: u64 = 1000;

/// Takes, stores and (unless told otherwise) verifies the snapshot.
pub async fn perform(act: &Act<'_>, p: &SnapshotParams) -> Result<Value, ActionError> {
    let started = Instant::now();
    let r = act.resolver();
    let target = act.redis_target()?;
    let redis = act.target_redis().await?;
    let dir = act.connections.base_dir().join(r.resolve(&p.to)?);
    std::fs::create_dir_all(&dir)
        .map_err(|e| BackendError::Local(format!("cannot create `{}`: {e}", dir.display())))?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let file = dir.join(format!("{}-{stamp}.rdb", act.step.id));
    let partial = dir.join(format!(".{}-{stamp}.rdb.partial", act.step.id));
    let taken = match p.method {
        SnapshotMethod::Replication => {
            let endpoint = act.connections.endpoint_of(target, r).await?;
            let progress = |bytes: u64, total: Option<u64>| {
                act.progress(
                    match total {
                        Some(total) => format!(
                            "receiving the RDB: {} of {}",
                            format_size(bytes as f64),
                            format_size(total as f64)
                        ),
                        None => format!("receiving the RDB: {}", format_size(bytes as f64)),
                    },
                    None,
                )
            };
            rdb::receive(&endpoint, &partial, &progress).await
        }
        SnapshotMethod::Bgsave => bgsave_file(act, p, &redis, &partial).await,
    };
    let taken = match taken {
        Ok(taken) => taken,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, &file)
        .map_err(|e| BackendError::Local(format!("cannot write `{}`: {e}", file.display())))?;
    let mut fields = BTreeMap::new();
    fields.insert("file".to_owned(), Value::Text(file.display().to_string()));
    fields.insert("bytes".to_owned(), Value::Number(taken.bytes as f64));
    fields.insert("sha256".to_owned(), Value::Text(taken.sha256.clone()));
    fields.insert(
        "rdb_version".to_owned(),
        Value::Number(f64::from(taken.version)),
    );
    fields.insert(
        "method".to_owned(),
        Value::Text(
            match p.method {
                SnapshotMethod::Replication => "replication",
                SnapshotMethod::Bgsave => "bgsave",
            }
            .into(),
        ),
    );
    fields.insert("verified".to_owned(), Value::Bool(false));
    if p.verify {
        act.progress(
            format!(
                "verifying {} ({})",
                file.display(),
                format_size(taken.bytes as f64)
            ),
            None,
        );
        let allowed = p.max_changed.unwrap_or(Percent(0.0));
        let checked = verify_file(
            &file,
            &redis,
            p.sample.unwrap_or(DEFAULT_SAMPLE),
            allowed,
            started.elapsed(),
        )
        .await?;
        if !checked.beyond.is_empty() {
            return Err(BackendError::Command(format!(
                "the snapshot `{}` differs from the source beyond the {allowed} allowed: {}",
                file.display(),
                checked.beyond.join("; ")
            ))
            .into());
        }
        let changed = checked.changed;
        fields.insert("verified".to_owned(), Value::Bool(true));
        fields.insert("keys".to_owned(), Value::Number(checked.keys as f64));
        fields.insert(
            "source_keys".to_owned(),
            Value::Number(checked.source_keys as f64),
        );
        fields.insert("sampled".to_owned(), Value::Number(checked.sampled as f64));
        fields.insert("changed".to_owned(), Value::Number(changed as f64));
    }
    if let Some(copy) = &p.copy_to {
        let docker = act
            .connections
            .docker(copy.docker.as_ref().map(|d| d.value.as_str()), r)
            .await?;
        let container = r.resolve(&copy.container)?;
        let dir = r.resolve(&copy.path)?;
        act.progress(
            format!("copying the snapshot into `{container}:{dir}`"),
            None,
        );
        let placed = docker.copy_file_in(&container, &dir, &file).await?;
        fields.insert(
            "copied_to".to_owned(),
            Value::Text(format!("{container}:{placed}")),
        );
    }
    fields.insert("duration".to_owned(), Value::Duration(started.elapsed()));
    Ok(Value::Object(fields))
}

/// BGSAVE, wait for it, then copy the server's RDB file into `out`.
async fn bgsave_file(
    act: &Act<'_>,
    p: &SnapshotParams,
    redis: &RedisBackend,
    out: &Path,
) -> Result<RdbFile, BackendError> {
    // Which save is ours: Redis 7 counts saves (`rdb_saves`); before it, LASTSAVE (in
    // seconds) must move, so the save starts in a later second than the last one.
    let saves_before = saves(redis).await?;
    let before = lastsave(redis).await?;
    if saves_before.is_none() {
        while jiff::Timestamp::now().as_second() <= before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    loop {
        match redis.command(&["BGSAVE".into()]).await {
            Ok(_) => break,
            // One already running started before this step: wait, then save again.
            Err(BackendError::Command(msg)) if msg.contains("already in progress") => {
                act.progress("waiting for the BGSAVE in progress to end", None);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        let persistence = redis
            .info_sections(Some("persistence"))
            .await?
            .remove("persistence")
            .unwrap_or_default();
        let field = |name: &str| {
            persistence
                .get(name)
                .map(Value::as_text)
                .unwrap_or_default()
        };
        let running = field("rdb_bgsave_in_progress") != "0";
        let ours_done = match saves_before {
            Some(n) => field("rdb_saves").parse::<u64>().is_ok_and(|now| now > n),
            None => lastsave(redis).await? > before,
        };
        if !running && (ours_done || field("rdb_last_bgsave_status") == "err") {
            let status = field("rdb_last_bgsave_status");
            if status != "ok" {
                return Err(BackendError::Command(format!(
                    "BGSAVE failed (rdb_last_bgsave_status:{status}): see the server's log"
                )));
            }
            break;
        }
        act.progress("BGSAVE in progress", None);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = act.resolver();
    let path = match r
        .resolve_opt(p.path.as_ref())
        .map_err(|e| BackendError::Config(e.to_string()))?
    {
        Some(path) => path,
        None => {
            let dir = redis.config_text("dir").await.map_err(|e| {
                BackendError::Config(format!(
                    "CONFIG GET dir was refused ({e}): give `path:` (the RDB file on the server)"
                ))
            })?;
            let name = redis.config_text("dbfilename").await?;
            format!("{}/{name}", dir.trim_end_matches('/'))
        }
    };
    match &p.container {
        Some(container) => {
            let docker = act
                .connections
                .docker(container.docker.as_ref().map(|d| d.value.as_str()), r)
                .await
                .map_err(|e| BackendError::Config(e.to_string()))?;
            let name = r
                .resolve(&container.name)
                .map_err(|e| BackendError::Config(e.to_string()))?;
            act.progress(format!("copying {path} out of `{name}`"), None);
            docker.copy_file_out(&name, &path, out).await?;
        }
        None => {
            tokio::fs::copy(&path, out).await.map_err(|e| {
                BackendError::Local(format!(
                    "cannot read the server's RDB `{path}` ({e}): is the server on this machine? Give `container:` when it runs in one"
                ))
            })?;
        }
    }
    rdb::inspect(out).await
}

/// Saves the server has made since it started (`rdb_saves`, Redis 7+).
async fn saves(redis: &RedisBackend) -> Result<Option<u64>, BackendError> {
    let sections = redis.info_sections(Some("persistence")).await?;
    Ok(sections
        .get("persistence")
        .and_then(|p| p.get("rdb_saves"))
        .and_then(|v| v.as_text().parse().ok()))
}

async fn lastsave(redis: &RedisBackend) -> Result<i64, BackendError> {
    match redis.command(&["LASTSAVE".into()]).await? {
        Value::Number(n) => Ok(n as i64),
        other => Err(BackendError::Unexpected(format!(
            "LASTSAVE answered {other}"
        ))),
    }
}

/// What the verification of a snapshot found.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    /// Keys in the snapshot.
    pub keys: u64,
    /// Keys on the source now.
    pub source_keys: u64,
    /// Keys compared one by one.
    pub sampled: u64,
    /// How the snapshot and the source differ beyond the share allowed, in words.
    pub beyond: Vec<String>,
    /// How many differences in all: keys per type counted apart, plus compared keys that
    /// differ.
    pub changed: u64,
}

/// The `redis-server` that loads snapshots: `REDIS_MOVE_REDIS_SERVER`, else the one on
/// `PATH`.
fn local_redis_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_MOVE_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("redis-server"))
        .find(|p| p.is_file())
}

/// Loads the RDB `file` into a throwaway `redis-server` and compares it with `source`:
/// key counts per type and `sample` keys (type, TTL, value) in the source's database,
/// and key counts in every other database; differences beyond the
/// share `allowed` (of all keys for the counts, of the sample) are listed in
/// [`Checked::beyond`]. A file that does not load (truncated, corrupted: its checksum is
/// checked) is an error. `age` is how long ago the snapshot was taken (TTLs may have
/// run down that much since).
pub async fn verify_file(
    file: &Path,
    source: &RedisBackend,
    sample: u64,
    allowed: Percent,
    age: Duration,
) -> Result<Checked, ActionError> {
    let version = rdb::inspect(file).await?.version;
    let binary = local_redis_server().ok_or_else(|| {
        ActionError::config(
            "verifying a snapshot needs a redis-server where redis-move runs (apt-get install redis-server, or REDIS_MOVE_REDIS_SERVER); or give `verify: false`",
        )
    })?;
    let reads = local_rdb_version(&binary).await;
    if let Some(reads) = reads
        && reads < version
    {
        return Err(ActionError::config(format!(
            "the local redis-server ({}) reads RDB {reads} at most, and the snapshot is RDB {version}: install a redis-server of the source's version (REDIS_MOVE_REDIS_SERVER) or give `verify: false`",
            binary.display()
        )));
    }
    let dir = tempfile::tempdir()
        .map_err(|e| BackendError::Local(format!("cannot create a temporary directory: {e}")))?;
    let loaded = dir.path().join("snapshot.rdb");
    if std::fs::hard_link(file, &loaded).is_err() {
        std::fs::copy(file, &loaded)
            .map_err(|e| BackendError::Local(format!("cannot copy the snapshot: {e}")))?;
    }
    let socket = dir.path().join("redis.sock");
    let log = dir.path().join("redis.log");
    let mut server = tokio::process::Command::new(&binary)
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--unixsocket")
        .arg(&socket)
        .args(["--unixsocketperm", "700", "--dbfilename", "snapshot.rdb"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ActionError::config(format!("cannot start {}: {e}", binary.display())))?;
    let mut endpoint = RedisEndpoint::new(format!("unix://{}", socket.display()));
    endpoint.db = u32::try_from(source.db).ok().filter(|db| *db > 0);
    let spawned = std::time::Instant::now();
    let snapshot = loop {
        // redis-server opens its socket before it loads the data.
        if !socket.exists() && spawned.elapsed() > Duration::from_secs(60) {
            return Err(BackendError::Command(format!(
                "{} did not open its socket within 60s",
                binary.display()
            ))
            .into());
        }
        if let Ok(Some(status)) = server.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let why: Vec<&str> = tail
                .lines()
                .filter(|l| {
                    l.contains('#')
                        || l.contains("Bad")
                        || l.contains("Wrong")
                        || l.contains("Short")
                })
                .collect();
            return Err(BackendError::Command(format!(
                "the snapshot does not load into redis-server ({status}): {}",
                why.join(" | ")
            ))
            .into());
        }
        if socket.exists()
            && let Ok(redis) = RedisBackend::connect(&endpoint).await
            && redis.ping().await.is_ok()
        {
            break redis;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every other database: keys counted on both sides (INFO keyspace).
    let (all_mine, all_theirs) = tokio::try_join!(
        snapshot.info_sections(Some("keyspace")),
        source.info_sections(Some("keyspace"))
    )?;
    let keys_per_db =
        |sections: &BTreeMap<String, BTreeMap<String, Value>>| -> BTreeMap<String, u64> {
            sections
                .get("keyspace")
                .map(|k| {
                    k.iter()
                        .map(|(db, v)| {
                            let keys = match v.field("keys") {
                                Some(Value::Number(n)) => *n as u64,
                                _ => 0,
                            };
                            (db.clone(), keys)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
    let (dbs_mine, dbs_theirs) = (keys_per_db(&all_mine), keys_per_db(&all_theirs));
    let own_db = format!("db{}", source.db);
    let mut other_dbs = Vec::new();
    let mut other_changed = 0u64;
    let mut other_total = 0u64;
    let names: std::collections::BTreeSet<&String> =
        dbs_mine.keys().chain(dbs_theirs.keys()).collect();
    for db in names.into_iter().filter(|db| **db != own_db) {
        let (a, b) = (
            dbs_mine.get(db).copied().unwrap_or(0),
            dbs_theirs.get(db).copied().unwrap_or(0),
        );
        other_total += b;
        if a != b {
            other_changed += a.abs_diff(b);
            other_dbs.push(format!(
                "{a} keys in {db} of the snapshot, {b} on the source"
            ));
        }
    }
    let (mine, theirs) = tokio::try_join!(type_counts(&snapshot), type_counts(source))?;
    let mut checked = Checked {
        keys: mine.values().sum(),
        source_keys: theirs.values().sum(),
        ..Default::default()
    };
    let types: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
    let mut counted_apart = Vec::new();
    for key_type in types {
        let (a, b) = (
            mine.get(key_type).copied().unwrap_or(0),
            theirs.get(key_type).copied().unwrap_or(0),
        );
        if a != b {
            checked.changed += a.abs_diff(b);
            counted_apart.push(format!(
                "{a} {key_type} keys in the snapshot, {b} on the source"
            ));
        }
    }
    // Writers create and drop keys of every type; the share is of all keys.
    if checked.changed > allowed.of(checked.source_keys) {
        checked.beyond.extend(counted_apart);
    }
    checked.changed += other_changed;
    if other_changed > allowed.of(other_total) {
        checked.beyond.extend(other_dbs);
    }
    let plan = VerifyPlan {
        pattern: "*".into(),
        rename: None,
        sample: Some(sample),
        ttl_tolerance: age + Duration::from_secs(2),
        digest: DigestMode::Client,
        contains: false,
        references: Default::default(),
    };
    let compared = verify(&snapshot, source, &plan, &|_, _| {}).await?;
    let number = |name: &str| match compared.field(name) {
        Some(Value::Number(n)) => *n as u64,
        _ => 0,
    };
    checked.sampled = number("checked");
    let different = number("missing") + number("mismatched");
    if different > 0 {
        checked.changed += different;
    }
    if different > allowed.of(checked.sampled) {
        checked.beyond.push(format!(
            "{different} of {} compared keys differ",
            checked.sampled
        ));
        if let Some(Value::List(items)) = compared.field("mismatches") {
            checked.beyond.extend(
                items
                    .iter()
                    .take(5)
                    .map(|i| format!("{} (snapshot vs source)", i.as_text())),
            );
        }
    }
    let _ = server.kill().await;
    tracing::debug!(file = %file.display(), took = %format_duration(age), "snapshot verified");
    Ok(checked)
}

/// Keys per type, with SCAN and pipelined TYPE.
async fn type_counts(redis: &RedisBackend) -> Result<BTreeMap<String, u64>, BackendError> {
    let mut counts = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys) = redis.scan_page(cursor, "*", None, 1000).await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("TYPE").arg(key);
            }
            for reply in redis.pipeline(pipe).await? {
                let key_type = crate::backend::keyspace::reply_text(&reply);
                if key_type != "none" {
                    *counts.entry(key_type).or_insert(0) += 1;
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(counts);
        }
    }
}

/// The newest RDB version the `redis-server` at `binary` reads.
async fn local_rdb_version(binary: &Path) -> Option<u32> {
    let out = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    super::compat::rdb_version("redis", version)
}
