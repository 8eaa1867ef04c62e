//! Redis Sentinel: the current primary of a monitored master, and a failover to a chosen
//! replica that loses no acknowledged write.
//!
//! `SENTINEL FAILOVER` alone promotes a replica that may lag the primary (the writes it
//! had not received are lost), and the `FAILOVER` command cannot be used under Sentinel
//! (Sentinel fails over again). So [`failover`] drains first: the chosen replica is given
//! the best `replica-priority` (the others a worse one) and the Sentinels are waited for
//! until they see it, the primary's writes are paused (`CLIENT PAUSE WRITE`) until the
//! replica's offset equals the primary's, and only then is `SENTINEL FAILOVER` asked; a
//! write paused meanwhile is never acknowledged (Sentinel disconnects its client when it
//! turns the old primary into a replica). Then every Sentinel must report the new
//! primary, the pause is lifted and the priorities put back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::BackendError;
use super::redis::{RedisBackend, RedisEndpoint, to_value};
use crate::value::Value;

/// How a runbook's Sentinel-managed target is reached.
#[derive(Clone, Debug)]
pub struct SentinelSettings {
    /// `host:port` of each Sentinel.
    pub addresses: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub master: String,
    /// The Sentinels' password (`requirepass` of the Sentinels), if any.
    pub password: Option<String>,
}

/// The priority the chosen replica gets (lower wins; 0 would never be promoted).
const CHOSEN_PRIORITY: &str = "1";
/// The priority the other replicas get meanwhile.
const OTHER_PRIORITY: &str = "1000";
/// `min-replicas-to-write` that no primary can satisfy: every write refused.
const FENCE: &str = "1000000";

/// The Sentinels of one master, those that answer.
pub struct Sentinels {
    settings: SentinelSettings,
    connections: Vec<(String, RedisBackend)>,
}

/// One replica as a Sentinel sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaView {
    /// `ip:port`.
    pub address: String,
    /// Sentinel's flags (`slave`, `s_down`, `disconnected`...).
    pub flags: String,
    /// Its `replica-priority` as last read.
    pub priority: String,
    /// `ok` when its link to the primary is up.
    pub link: String,
    /// Its replication offset.
    pub offset: i64,
}

impl Sentinels {
    /// Connects to every Sentinel of `settings` that answers (at least one must).
    pub async fn connect(
        settings: &SentinelSettings,
        timeout: Duration,
    ) -> Result<Sentinels, BackendError> {
        let mut connections = Vec::new();
        let mut last_error = None;
        for address in &settings.addresses {
            super::cluster::check_address(address)?;
            let mut endpoint = RedisEndpoint::new(format!("redis://{address}"));
            endpoint.password = settings.password.clone();
            endpoint.timeout = timeout;
            endpoint.connect_timeout = timeout;
            match RedisBackend::connect_node(&endpoint).await {
                Ok(connection) => connections.push((address.clone(), connection)),
                Err(e) => last_error = Some(format!("{address}: {e}")),
            }
        }
        if connections.is_empty() {
            return Err(BackendError::Unreachable(format!(
                "no Sentinel of `{}` answers ({})",
                settings.master,
                last_error.unwrap_or_default()
            )));
        }
        Ok(Sentinels {
            settings: settings.clone(),
            connections,
        })
    }

    /// How many Sentinels answer.
    pub fn answering(&self) -> usize {
        self.connections.len()
    }

    async fn ask(connection: &RedisBackend, args: &[&str]) -> Result<redis::Value, BackendError> {
        let mut cmd = redis::cmd("SENTINEL");
        for arg in args {
            cmd.arg(*arg);
        }
        connection.raw_node(&cmd).await
    }

    /// The primary each Sentinel reports (`host:port`), by Sentinel.
    pub async fn primaries(&self) -> Vec<(String, Result<String, BackendError>)> {
        let mut out = Vec::new();
        for (address, connection) in &self.connections {
            let reply = Self::ask(
                connection,
                &["GET-MASTER-ADDR-BY-NAME", &self.settings.master],
            )
            .await
            .and_then(|reply| match to_value(reply) {
                Value::List(parts) if parts.len() == 2 => {
                    Ok(format!("{}:{}", parts[0].as_text(), parts[1].as_text()))
                }
                _ => Err(BackendError::Command(format!(
                    "the Sentinel does not monitor `{}`",
                    self.settings.master
                ))),
            });
            out.push((address.clone(), reply));
        }
        out
    }

    /// The primary the first Sentinel that knows reports.
    pub async fn primary(&self) -> Result<String, BackendError> {
        let mut last = None;
        for (_, reply) in self.primaries().await {
            match reply {
                Ok(primary) => return Ok(primary),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Unreachable("no Sentinel answers".into())))
    }

    /// `SENTINEL CKQUORUM` of every Sentinel: `Err` unless one says the quorum and the
    /// majority needed to authorize a failover are reachable.
    pub async fn quorum(&self) -> Result<String, BackendError> {
        let mut said = Vec::new();
        for (address, connection) in &self.connections {
            match Self::ask(connection, &["CKQUORUM", &self.settings.master]).await {
                Ok(reply) => return Ok(format!("{address}: {}", to_value(reply).as_text())),
                Err(e) => said.push(format!("{address}: {e}")),
            }
        }
        Err(BackendError::Command(format!(
            "the Sentinels cannot authorize a failover: {}",
            said.join("; ")
        )))
    }

    /// The replicas the first Sentinel that answers knows.
    pub async fn replicas(&self) -> Result<Vec<ReplicaView>, BackendError> {
        let (_, connection) = &self.connections[0];
        Self::replicas_of(connection, &self.settings.master).await
    }

    async fn replicas_of(
        connection: &RedisBackend,
        master: &str,
    ) -> Result<Vec<ReplicaView>, BackendError> {
        let reply = to_value(Self::ask(connection, &["REPLICAS", master]).await?);
        let Value::List(replicas) = reply else {
            return Err(BackendError::Unexpected(
                "SENTINEL REPLICAS answered no list".into(),
            ));
        };
        Ok(replicas
            .iter()
            .map(|replica| {
                let fields: BTreeMap<String, String> = match replica {
                    Value::List(items) => items
                        .chunks(2)
                        .filter_map(|pair| Some((pair.first()?.as_text(), pair.get(1)?.as_text())))
                        .collect(),
                    Value::Object(map) => {
                        map.iter().map(|(k, v)| (k.clone(), v.as_text())).collect()
                    }
                    _ => BTreeMap::new(),
                };
                let get = |name: &str| fields.get(name).cloned().unwrap_or_default();
                ReplicaView {
                    address: format!("{}:{}", get("ip"), get("port")),
                    flags: get("flags"),
                    priority: get("slave-priority"),
                    link: get("master-link-status"),
                    offset: get("slave-repl-offset").parse().unwrap_or(0),
                }
            })
            .collect())
    }

    /// Waits until every answering Sentinel sees `priorities` (address -> priority) on
    /// the replicas (a Sentinel reads a replica's INFO every 10 s).
    async fn wait_priorities(
        &self,
        priorities: &BTreeMap<String, String>,
        limit: Duration,
    ) -> Result<(), BackendError> {
        let started = Instant::now();
        loop {
            let mut behind = Vec::new();
            for (address, connection) in &self.connections {
                let seen = Self::replicas_of(connection, &self.settings.master).await?;
                for (replica, priority) in priorities {
                    if !seen
                        .iter()
                        .any(|r| &r.address == replica && &r.priority == priority)
                    {
                        behind.push(format!("{address} (of {replica})"));
                    }
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(BackendError::Timeout(format!(
                    "the Sentinels did not see the new replica priorities: {}",
                    behind.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Whether a Sentinel's flags for an instance say it is down or unreachable.
fn is_down(flags: &str) -> bool {
    flags
        .split(',')
        .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
}

/// What a failover did.
#[derive(Clone, Debug)]
pub struct FailoverDone {
    /// The primary before.
    pub from: String,
    /// The primary after.
    pub to: String,
    /// How long writes were paused on the old primary.
    pub paused: Duration,
    /// Sentinels that report the new primary.
    pub agreeing: usize,
}

/// Moves the primary of `sentinels`' master to the replica `to` (`host:port` as the
/// Sentinels know it), losing no acknowledged write (see the module). `node` connects to
/// a data node by address (the target's credentials and TLS). Writes are paused at most
/// `pause`; the whole takes at most `limit`.
pub async fn failover<F, Fut>(
    sentinels: &Sentinels,
    to: &str,
    node: F,
    pause: Duration,
    limit: Duration,
) -> Result<FailoverDone, BackendError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<RedisBackend, BackendError>>,
{
    let started = Instant::now();
    let from = sentinels.primary().await?;
    if from == to {
        return Ok(FailoverDone {
            from: from.clone(),
            to: from,
            paused: Duration::ZERO,
            agreeing: sentinels.answering(),
        });
    }
    sentinels.quorum().await?;
    let replicas = sentinels.replicas().await?;
    let Some(chosen) = replicas.iter().find(|r| r.address == to) else {
        return Err(BackendError::Config(format!(
            "`{to}` is not a replica of `{}` as the Sentinels see it (they know {}); name it as they do (`announce-ip`/`replica-announce-ip` where Docker or NAT hides addresses)",
            sentinels.settings.master,
            replicas
                .iter()
                .map(|r| r.address.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    // Its own view of its link (a Sentinel's is up to 10 s old); a replica still
    // syncing (the old primary of a failover just done) is waited for.
    let chosen_node = node(to.to_owned()).await?;
    let link = wait_link_up(&chosen_node, limit.min(Duration::from_secs(30))).await;
    if is_down(&chosen.flags) || link != "up" {
        return Err(BackendError::Command(format!(
            "`{to}` cannot take over: the Sentinels see it as `{}`, and its link to the primary is `{link}`",
            chosen.flags
        )));
    }
    // Priorities: the chosen replica wins, the others cannot (their old values kept).
    let mut previous: Vec<(String, String)> = Vec::new();
    let mut wanted = BTreeMap::new();
    for replica in &replicas {
        if is_down(&replica.flags) {
            continue;
        }
        let connection = node(replica.address.clone()).await?;
        let before = connection.config_text("replica-priority").await?;
        let priority = if replica.address == to {
            CHOSEN_PRIORITY
        } else if before == "0" {
            "0"
        } else {
            OTHER_PRIORITY
        };
        connection
            .config_set_all(&[("replica-priority".into(), priority.into())])
            .await?;
        previous.push((replica.address.clone(), before));
        wanted.insert(replica.address.clone(), priority.to_owned());
    }
    let outcome = async {
        sentinels
            .wait_priorities(&wanted, limit.saturating_sub(started.elapsed()))
            .await?;
        drain_and_fail_over(sentinels, &from, to, &node, pause, limit, started).await
    }
    .await;
    // The priorities go back whatever happened.
    for (address, priority) in previous {
        if let Ok(connection) = node(address).await {
            let _ = connection
                .config_set_all(&[("replica-priority".into(), priority)])
                .await;
        }
    }
    outcome
}

/// Waits (up to `limit`) until `replica` reports its link to its primary up; its last
/// `master_link_status`.
async fn wait_link_up(replica: &RedisBackend, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let link = replica
            .replication()
            .await
            .ok()
            .and_then(|r| r.get("master_link_status").map(Value::as_text))
            .unwrap_or_default();
        if link == "up" || started.elapsed() > limit {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drain_and_fail_over<F, Fut>(
    sentinels: &Sentinels,
    from: &str,
    to: &str,
    node: &F,
    pause: Duration,
    limit: Duration,
    started: Instant,
) -> Result<FailoverDone, BackendError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<RedisBackend, BackendError>>,
{
    let primary = node(from.to_owned()).await?;
    let replica = node(to.to_owned()).await?;
    let offset = |info: BTreeMap<String, Value>| match info.get("master_repl_offset") {
        Some(Value::Number(n)) => *n as i64,
        _ => -1,
    };
    let paused_at = Instant::now();
    primary
        .raw_node(
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(pause.as_millis() as u64)
                .arg("WRITE"),
        )
        .await?;
    // Drained: the replica has every write the primary acknowledged.
    loop {
        let (theirs, ours) = (
            offset(replica.replication().await?),
            offset(primary.replication().await?),
        );
        if theirs == ours && ours >= 0 {
            break;
        }
        if paused_at.elapsed() > pause / 2 {
            let _ = primary.raw_node(redis::cmd("CLIENT").arg("UNPAUSE")).await;
            return Err(BackendError::Timeout(format!(
                "`{to}` did not catch up with the primary within half the pause (offset {theirs} of {ours}): nothing changed, writes resumed"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Fenced: from now on the old primary refuses every write (NOREPLICAS), so that no
    // write is acknowledged there whenever the pause ends, however long the Sentinels
    // take to demote it.
    let fence_before = primary.config_text("min-replicas-to-write").await?;
    primary
        .config_set_all(&[("min-replicas-to-write".into(), FENCE.into())])
        .await?;
    let paused = paused_at.elapsed();
    let _ = primary.raw_node(redis::cmd("CLIENT").arg("UNPAUSE")).await;
    let lift_fence = || async {
        let _ = primary
            .config_set_all(&[("min-replicas-to-write".into(), fence_before.clone())])
            .await;
    };
    let (_, first) = &sentinels.connections[0];
    if let Err(e) = Sentinels::ask(first, &["FAILOVER", &sentinels.settings.master]).await {
        lift_fence().await;
        return Err(e);
    }
    // Every Sentinel reports the new primary.
    let agreeing = loop {
        let reports = sentinels.primaries().await;
        let agreeing = reports
            .iter()
            .filter(|(_, p)| p.as_deref().ok() == Some(to))
            .count();
        if agreeing == reports.len() {
            break agreeing;
        }
        if started.elapsed() > limit {
            return Err(BackendError::Timeout(format!(
                "not every Sentinel reports `{to}` as the primary (the old one stays fenced: its writes are refused): {}",
                reports
                    .iter()
                    .map(|(s, p)| format!(
                        "{s}: {}",
                        p.as_ref().map_or_else(|e| e.to_string(), Clone::clone)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Once the Sentinels made the old primary a replica of the new one, its setting
    // goes back (before, it would take writes again).
    loop {
        let role = primary
            .replication()
            .await
            .ok()
            .and_then(|r| r.get("role").map(Value::as_text));
        if role.as_deref() == Some("slave") {
            break;
        }
        if started.elapsed() > limit {
            return Err(BackendError::Timeout(format!(
                "the Sentinels did not make `{from}` a replica of `{to}` (it stays fenced: its writes are refused)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lift_fence().await;
    // The step ends with the old primary in sync with the new one.
    let link = wait_link_up(&primary, limit.saturating_sub(started.elapsed())).await;
    if link != "up" {
        return Err(BackendError::Timeout(format!(
            "`{from}` is a replica of `{to}` now, but its link is `{link}`"
        )));
    }
    Ok(FailoverDone {
        from: from.to_owned(),
        to: to.to_owned(),
        paused,
        agreeing,
    })
}
