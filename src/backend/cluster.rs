//! Redis Cluster: the slot map, and commands routed by the slot of their keys.
//!
//! A cluster target is a [`RedisBackend`] whose commands go through a [`Cluster`]: each
//! command is sent to the primary that owns its key's slot (pipelines are split per
//! node and their replies put back in order), `MOVED` refreshes the slot map and sends
//! the command again, `ASK` sends it once to the importing node after `ASKING`, and a
//! node that cannot be reached (a primary killed, its replica not yet promoted) makes
//! the router refresh the map and try again until the cluster settles or `settle`
//! runs out. SCAN walks every primary in turn behind one cursor.
//!
//! Every change of the slot map the router sees is counted ([`Cluster::changes`]): a
//! copy that saw one checks its work again, since a primary that died may have taken
//! acknowledged writes with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::BackendError;
use super::command_keys::CommandKeys;
use super::redis::{RedisBackend, RedisEndpoint, to_value};
use crate::value::Value;

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// Bits of a cluster SCAN cursor that hold the node's own cursor; the bits above hold
/// the first slot of the shard being scanned, plus one.
const NODE_CURSOR_BITS: u32 = 49;

/// How a runbook's cluster target is reached.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// More `host:port` addresses to ask for the slot map when the URL's is down.
    pub seeds: Vec<String>,
    /// How long a command waits for the cluster to settle (a failover, a slot moving)
    /// before it fails.
    pub settle: Duration,
}

/// Default of [`ClusterSettings::settle`]: longer than a failover with Redis's default
/// `cluster-node-timeout` (15 s) takes.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(45);

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first `{`
/// and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        },
        None => key,
    };
    crc16(hashed) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A short hash tag for every slot: a key that starts with `{tag}` lands in that slot
/// (temporary keys are put beside the key they belong to this way).
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS];
        let mut missing = SLOTS;
        let mut n: u64 = 0;
        while missing > 0 {
            let tag = format!("{n:x}");
            let slot = usize::from(crc16(tag.as_bytes()) % SLOTS as u16);
            if tags[slot].is_empty() {
                tags[slot] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[usize::from(slot) % SLOTS]
}

/// The primary that serves some slot ranges, and its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// `host:port` of the primary.
    pub primary: String,
    /// `host:port` of each replica.
    pub replicas: Vec<String>,
    /// The slot ranges it serves (inclusive).
    pub ranges: Vec<(u16, u16)>,
}

impl Shard {
    /// Its lowest slot (what a SCAN cursor names it by).
    pub fn first_slot(&self) -> u16 {
        self.ranges.iter().map(|r| r.0).min().unwrap_or(0)
    }
}

/// Which primary serves each slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// The shards, by their lowest slot.
    pub shards: Vec<Shard>,
    owners: Vec<Option<u16>>,
}

impl SlotMap {
    /// The map from a `CLUSTER SLOTS` reply; `asked` is the node that answered (a node
    /// with an empty address in the reply is that one).
    pub fn from_cluster_slots(reply: &redis::Value, asked: &str) -> Result<SlotMap, BackendError> {
        let bad = || BackendError::Unexpected("CLUSTER SLOTS answered an unknown shape".into());
        let redis::Value::Array(entries) = reply else {
            return Err(bad());
        };
        let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
        let address = |node: &redis::Value| -> Result<String, BackendError> {
            let redis::Value::Array(parts) = node else {
                return Err(bad());
            };
            let host = parts.first().map(|h| to_value(h.clone()).as_text());
            let port = parts.get(1).and_then(super::keyspace::reply_int);
            match (host, port) {
                (Some(host), Some(port)) => {
                    let host = if host.is_empty() || host == "?" {
                        asked_host.to_owned()
                    } else {
                        host
                    };
                    Ok(if host.contains(':') && !host.starts_with('[') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    })
                }
                _ => Err(bad()),
            }
        };
        let mut by_primary: BTreeMap<String, Shard> = BTreeMap::new();
        for entry in entries {
            let redis::Value::Array(parts) = entry else {
                return Err(bad());
            };
            let (Some(start), Some(end), Some(primary)) = (
                parts.first().and_then(super::keyspace::reply_int),
                parts.get(1).and_then(super::keyspace::reply_int),
                parts.get(2),
            ) else {
                return Err(bad());
            };
            if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
                return Err(bad());
            }
            let primary = address(primary)?;
            let replicas = parts[3..].iter().map(address).collect::<Result<_, _>>()?;
            let shard = by_primary.entry(primary.clone()).or_insert_with(|| Shard {
                primary,
                replicas,
                ranges: Vec::new(),
            });
            shard.ranges.push((start as u16, end as u16));
        }
        let mut shards: Vec<Shard> = by_primary.into_values().collect();
        for shard in &mut shards {
            shard.ranges.sort_unstable();
        }
        shards.sort_by_key(Shard::first_slot);
        let mut owners = vec![None; SLOTS];
        for (i, shard) in shards.iter().enumerate() {
            for &(start, end) in &shard.ranges {
                for owner in &mut owners[usize::from(start)..=usize::from(end)] {
                    *owner = Some(i as u16);
                }
            }
        }
        Ok(SlotMap { shards, owners })
    }

    /// The shard serving `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&Shard> {
        self.owners
            .get(usize::from(slot))
            .copied()
            .flatten()
            .map(|i| &self.shards[usize::from(i)])
    }

    /// How many slots no shard serves.
    pub fn uncovered(&self) -> usize {
        self.owners.iter().filter(|o| o.is_none()).count()
    }

    /// The shard whose lowest slot is the smallest above `slot` (`None`: the first).
    fn shard_after(&self, slot: Option<u16>) -> Option<&Shard> {
        self.shards
            .iter()
            .find(|s| slot.is_none_or(|slot| s.first_slot() > slot))
    }
}

/// What became of one command of a routed batch.
enum Outcome {
    /// Its reply.
    Done(redis::Value),
    /// Send it again: to this node after ASKING, or wherever the map now says.
    Again(Option<String>),
}

/// What a reply that sends the command elsewhere says: `MOVED` (wherever the map says
/// now), `ASK` (that node, once), or wait (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`,
/// `MASTERDOWN`); `None` for any other reply.
fn redirect(reply: &redis::Value) -> Option<Outcome> {
    let redis::Value::ServerError(e) = reply else {
        return None;
    };
    match (e.code(), e.details()) {
        ("MOVED", _) => Some(Outcome::Again(None)),
        ("ASK", Some(detail)) => Some(Outcome::Again(
            detail.split_whitespace().nth(1).map(str::to_owned),
        )),
        ("TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN", _) => Some(Outcome::Again(None)),
        _ => None,
    }
}

/// The router of one cluster target: its slot map, a connection per node, and the
/// key positions of each command (from the server's `COMMAND`).
pub struct Cluster {
    template: RedisEndpoint,
    seeds: Vec<String>,
    settle: Duration,
    nodes: tokio::sync::Mutex<HashMap<String, RedisBackend>>,
    map: RwLock<Arc<SlotMap>>,
    keys: CommandKeys,
    /// Commands that may write (flag `write` or `may_replicate`, lowercase): never sent
    /// twice.
    writes: std::collections::HashSet<String>,
    /// Slot-map changes seen since the connection was made.
    changes: AtomicU64,
    /// Serializes refreshes of the map.
    refreshing: tokio::sync::Mutex<()>,
    /// For each shard a SCAN is walking (by its lowest slot), the node it walks.
    scanning: std::sync::Mutex<HashMap<u16, String>>,
}

impl Cluster {
    /// Connects to the cluster that `endpoint` (the URL and `seeds`) belongs to: reads
    /// its slot map and the key positions of its commands.
    pub async fn connect(
        endpoint: &RedisEndpoint,
        settings: &ClusterSettings,
    ) -> Result<Arc<Cluster>, BackendError> {
        if endpoint.db.unwrap_or(0) != 0 || endpoint.url.starts_with("unix") {
            return Err(BackendError::Config(
                "a cluster target has one database (0) and is reached over TCP".into(),
            ));
        }
        let mut template = endpoint.clone();
        template.cluster = None;
        let mut seeds = vec![endpoint.tcp_address()?];
        seeds.extend(settings.seeds.iter().cloned());
        let mut cluster = Cluster {
            template,
            seeds,
            settle: settings.settle,
            nodes: Default::default(),
            map: Default::default(),
            keys: CommandKeys::from_reply(&redis::Value::Array(Vec::new())),
            writes: Default::default(),
            changes: AtomicU64::new(0),
            refreshing: Default::default(),
            scanning: Default::default(),
        };
        cluster.refresh().await?;
        let (_, any) = cluster.any_primary().await?;
        let commands = any.raw_node(&redis::cmd("COMMAND")).await?;
        cluster.keys = CommandKeys::from_reply(&commands);
        cluster.writes = writing_commands(&commands);
        cluster.changes.store(0, Ordering::Relaxed);
        Ok(Arc::new(cluster))
    }

    /// How many times the slot map changed since the connection was made.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// The current slot map.
    pub fn slot_map(&self) -> Arc<SlotMap> {
        self.map.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The connection to node `address`, made on first use.
    pub async fn node(&self, address: &str) -> Result<RedisBackend, BackendError> {
        if let Some(node) = self.nodes.lock().await.get(address) {
            return Ok(node.clone());
        }
        let mut endpoint = self.template.clone();
        endpoint.url = node_url(&self.template.url, address)?;
        let node = RedisBackend::connect_node(&endpoint).await?;
        self.nodes
            .lock()
            .await
            .insert(address.to_owned(), node.clone());
        Ok(node)
    }

    /// Each primary's address and connection.
    pub async fn primaries(&self) -> Result<Vec<(String, RedisBackend)>, BackendError> {
        let map = self.slot_map();
        let mut out = Vec::new();
        for shard in &map.shards {
            out.push((shard.primary.clone(), self.node(&shard.primary).await?));
        }
        Ok(out)
    }

    /// Every node's address, primaries and replicas.
    pub fn all_nodes(&self) -> Vec<String> {
        self.slot_map()
            .shards
            .iter()
            .flat_map(|s| std::iter::once(s.primary.clone()).chain(s.replicas.clone()))
            .collect()
    }

    async fn any_primary(&self) -> Result<(String, RedisBackend), BackendError> {
        let map = self.slot_map();
        let shard = map
            .shards
            .first()
            .ok_or_else(|| BackendError::Command("the cluster serves no slot".into()))?;
        Ok((shard.primary.clone(), self.node(&shard.primary).await?))
    }

    /// Reads the slot map again, from the first node that answers: the primaries known,
    /// then the seeds. Counts a change when it differs.
    pub async fn refresh(&self) -> Result<(), BackendError> {
        let _one = self.refreshing.lock().await;
        let known = self.slot_map();
        let mut candidates = self.all_nodes();
        candidates.extend(self.seeds.iter().cloned());
        candidates.dedup();
        let mut last_error = None;
        for address in candidates {
            let reply = match self.node(&address).await {
                Ok(node) => node.raw_node(redis::cmd("CLUSTER").arg("SLOTS")).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok(reply) => {
                    let map = SlotMap::from_cluster_slots(&reply, &address)?;
                    if map.shards.is_empty() {
                        last_error = Some(BackendError::Command(format!(
                            "{address} serves no slot: is it a cluster node?"
                        )));
                        continue;
                    }
                    if *known != map {
                        if !known.shards.is_empty() {
                            tracing::info!(
                                shards = map.shards.len(),
                                "the cluster's slot map changed"
                            );
                        }
                        self.changes.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut current) = self.map.write() {
                            *current = Arc::new(map);
                        }
                    }
                    return Ok(());
                }
                Err(BackendError::Command(e)) if e.contains("cluster support disabled") => {
                    return Err(BackendError::Config(format!(
                        "{address} is not a cluster node (cluster support disabled): drop `cluster:` from the target"
                    )));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| BackendError::Unreachable("no cluster node answered".into())))
    }

    /// How long a command waits for the cluster to settle.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// Whether `cmd` may write (unknown commands may).
    fn writes(&self, cmd: &redis::Cmd) -> bool {
        match cmd.args_iter().next() {
            Some(redis::Arg::Simple(name)) => {
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                self.writes.is_empty() || self.writes.contains(&name)
            }
            _ => true,
        }
    }

    /// The slot of a command's keys (`None`: it has none).
    fn slot_of(&self, cmd: &redis::Cmd) -> Option<u16> {
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
                _ => None,
            })
            .collect();
        let position = match self.keys.positions(&args) {
            Ok(positions) => positions.first().copied(),
            // Without key specs (a server before 7.0): the first argument.
            Err(_) if self.keys.is_empty() && args.len() > 1 => Some(1),
            Err(_) => None,
        };
        position.and_then(|p| args.get(p)).map(|key| key_slot(key))
    }

    /// Runs `cmds` where their slots live and returns one reply per command, a command
    /// the server refused as `redis::Value::ServerError`. A read whose connection broke
    /// is sent again once the cluster has settled; a write is not (it may have been
    /// applied): the batch fails, with the map refreshed for the caller's next attempt.
    pub async fn run(&self, cmds: &[&redis::Cmd]) -> Result<Vec<redis::Value>, BackendError> {
        let slots: Vec<Option<u16>> = cmds.iter().map(|c| self.slot_of(c)).collect();
        self.routed(
            &slots,
            |i| !self.writes(cmds[i]),
            |node, group| async move {
                let outcome = self.send(&node, cmds, &group).await;
                (node, group, outcome)
            },
        )
        .await
    }

    /// Sends items to the primaries of their slots (a keyless item: the first shard's),
    /// `send` making one node's pipeline of its group (an item with `true` asked after
    /// `ASKING`); one reply per item. `MOVED` refreshes the map and sends again, `ASK`
    /// goes to the importing node, `TRYAGAIN`/`CLUSTERDOWN`/`LOADING` wait. A group
    /// whose connection broke is sent again once the map shows a reachable primary when
    /// `resend(i)` allows it for each of its items, else the call fails (the items may
    /// have been applied). At most [`Cluster::settle`] in all.
    async fn routed<S, Fut>(
        &self,
        slots: &[Option<u16>],
        resend: impl Fn(usize) -> bool,
        send: S,
    ) -> Result<Vec<redis::Value>, BackendError>
    where
        S: Fn(String, Vec<(usize, bool)>) -> Fut,
        Fut: std::future::Future<
                Output = (
                    String,
                    Vec<(usize, bool)>,
                    Result<Vec<Outcome>, BackendError>,
                ),
            >,
    {
        let mut replies: Vec<Option<redis::Value>> = vec![None; slots.len()];
        let mut pending: Vec<(usize, Option<String>)> =
            (0..slots.len()).map(|i| (i, None)).collect();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut why = String::new();
        loop {
            let map = self.slot_map();
            let mut groups: BTreeMap<String, Vec<(usize, bool)>> = BTreeMap::new();
            let mut unowned = false;
            for (i, asking) in std::mem::take(&mut pending) {
                let node = match (&asking, slots[i]) {
                    (Some(node), _) => Some(node.clone()),
                    (None, Some(slot)) => map.owner(slot).map(|s| s.primary.clone()),
                    (None, None) => map.shards.first().map(|s| s.primary.clone()),
                };
                match node {
                    Some(node) => groups.entry(node).or_default().push((i, asking.is_some())),
                    None => {
                        unowned = true;
                        why = format!("slot {} is served by no node", slots[i].unwrap_or(0));
                        pending.push((i, None));
                    }
                }
            }
            let sent = futures_util::future::join_all(
                groups.into_iter().map(|(node, group)| send(node, group)),
            )
            .await;
            let mut refresh = unowned;
            for (node, group, outcome) in sent {
                match outcome {
                    Ok(outcomes) => {
                        for ((i, _), outcome) in group.into_iter().zip(outcomes) {
                            match outcome {
                                Outcome::Done(reply) => replies[i] = Some(reply),
                                Outcome::Again(asking) => {
                                    refresh |= asking.is_none();
                                    why = format!("slot {} is moving", slots[i].unwrap_or(0));
                                    pending.push((i, asking));
                                }
                            }
                        }
                    }
                    Err(e @ (BackendError::Unreachable(_) | BackendError::Timeout(_))) => {
                        if !group.iter().all(|&(i, _)| resend(i)) {
                            let _ = self.refresh().await;
                            return Err(e);
                        }
                        why = format!("{node}: {e}");
                        refresh = true;
                        pending.extend(group.into_iter().map(|(i, _)| (i, None)));
                    }
                    Err(e) => return Err(e),
                }
            }
            if pending.is_empty() {
                return Ok(replies.into_iter().map(Option::unwrap_or_default).collect());
            }
            if started.elapsed() > self.settle {
                return Err(BackendError::Unreachable(format!(
                    "the cluster did not settle within {} ({why})",
                    crate::runbook::units::format_duration(self.settle)
                )));
            }
            if refresh {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                if let Err(e) = self.refresh().await {
                    why = e.to_string();
                }
            }
        }
    }

    /// Sends the commands `group` of `cmds` to `node` in one pipeline (each asked one
    /// after `ASKING`).
    async fn send(
        &self,
        node: &str,
        cmds: &[&redis::Cmd],
        group: &[(usize, bool)],
    ) -> Result<Vec<Outcome>, BackendError> {
        let connection = self.node(node).await?;
        let mut pipe = redis::pipe();
        for &(i, asking) in group {
            if asking {
                pipe.cmd("ASKING");
            }
            pipe.add_command(cmds[i].clone());
        }
        let mut replies = connection.pipeline_node(pipe).await?.into_iter();
        let mut outcomes = Vec::with_capacity(group.len());
        for &(_, asking) in group {
            if asking {
                replies.next();
            }
            let reply = replies.next().unwrap_or_default();
            outcomes.push(redirect(&reply).unwrap_or(Outcome::Done(reply)));
        }
        Ok(outcomes)
    }

    /// Runs one transaction per entry of `transactions` (`MULTI`, its commands, `EXEC`)
    /// on the primary of its slot, pipelined per node; the reply of each `EXEC` (an
    /// array, or the error of a transaction the server refused). The commands of one
    /// transaction must all be in its slot. A transaction the cluster aborted because
    /// its slot moved or the cluster was down (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`
    /// queued) was not applied and is sent again where the slot now is. A connection
    /// that breaks fails the call: some transactions may have been applied, which the
    /// caller learns from what it wrote inside them.
    pub async fn transactions(
        &self,
        transactions: &[(u16, Vec<redis::Cmd>)],
    ) -> Result<Vec<redis::Value>, BackendError> {
        let slots: Vec<Option<u16>> = transactions.iter().map(|(slot, _)| Some(*slot)).collect();
        self.routed(
            &slots,
            |_| false,
            |node, group| async move {
                let outcome = self.send_transactions(&node, transactions, &group).await;
                (node, group, outcome)
            },
        )
        .await
    }

    /// Sends the transactions `group` of `transactions` to `node` in one pipeline (each
    /// asked one after `ASKING`, which holds through its `EXEC`).
    async fn send_transactions(
        &self,
        node: &str,
        transactions: &[(u16, Vec<redis::Cmd>)],
        group: &[(usize, bool)],
    ) -> Result<Vec<Outcome>, BackendError> {
        let connection = self.node(node).await?;
        let mut pipe = redis::pipe();
        for &(i, asking) in group {
            if asking {
                pipe.cmd("ASKING");
            }
            pipe.cmd("MULTI");
            for cmd in &transactions[i].1 {
                pipe.add_command(cmd.clone());
            }
            pipe.cmd("EXEC");
        }
        let mut replies = connection.pipeline_node(pipe).await?.into_iter();
        let mut outcomes = Vec::with_capacity(group.len());
        for &(i, asking) in group {
            // ASKING's and MULTI's replies, then one per queued command.
            for _ in 0..usize::from(asking) + 1 {
                replies.next();
            }
            let queued: Vec<redis::Value> =
                replies.by_ref().take(transactions[i].1.len()).collect();
            let exec = replies.next().unwrap_or_default();
            // Aborted because a queued command was sent elsewhere: nothing applied.
            let again = queued.iter().find_map(redirect);
            outcomes.push(match (&exec, again) {
                (redis::Value::ServerError(_), Some(again)) => again,
                _ => Outcome::Done(exec),
            });
        }
        Ok(outcomes)
    }

    /// Waits (up to `timeout` on each primary) until every primary that has a replica
    /// has its writes so far acknowledged by one of them (`WAIT 1`); whether all had.
    /// A failover promotes a replica, which then holds those writes.
    pub async fn wait_replicated(&self, timeout: Duration) -> Result<bool, BackendError> {
        let mut waits = Vec::new();
        for (_, node) in self.primaries().await? {
            waits.push(async move {
                // A primary with no replica has nothing to wait for (and nothing a
                // failover could promote). One that is disconnected counts: it may
                // come back and be promoted without the writes.
                let nodes =
                    to_value(node.raw_node(redis::cmd("CLUSTER").arg("NODES")).await?).as_text();
                if replicas_of_myself(&nodes) == 0 {
                    return Ok(true);
                }
                let acked = node
                    .raw_node(redis::cmd("WAIT").arg(1).arg(timeout.as_millis() as u64))
                    .await?;
                Ok::<_, BackendError>(matches!(acked, redis::Value::Int(n) if n >= 1))
            });
        }
        let mut all = true;
        for acked in futures_util::future::join_all(waits).await {
            all &= acked?;
        }
        Ok(all)
    }

    /// One SCAN page over the whole cluster. The cursor names the shard (by its lowest
    /// slot) and that primary's own cursor; 0 starts and ends the walk. A shard whose
    /// primary changed since its previous page is walked again from its start (SCAN may
    /// return a key twice, never miss one that stayed).
    pub async fn scan_page(
        &self,
        cursor: u64,
        pattern: &str,
        key_type: Option<&str>,
        count: u32,
    ) -> Result<(u64, Vec<Vec<u8>>), BackendError> {
        let started = Instant::now();
        loop {
            let map = self.slot_map();
            let (shard, mut node_cursor) = if cursor == 0 {
                (map.shard_after(None), 0)
            } else {
                let first = ((cursor >> NODE_CURSOR_BITS) - 1) as u16;
                let node_cursor = cursor & ((1 << NODE_CURSOR_BITS) - 1);
                match map.owner(first) {
                    Some(shard) => (Some(shard), node_cursor),
                    // That slot is served by nobody right now: wait for the map.
                    None => (None, node_cursor),
                }
            };
            let Some(shard) = shard else {
                if cursor == 0 {
                    return Ok((0, Vec::new()));
                }
                if started.elapsed() > self.settle {
                    return Err(BackendError::Unreachable(
                        "the cluster did not settle: a slot is served by no node".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.refresh().await.ok();
                continue;
            };
            let first = shard.first_slot();
            {
                let mut scanning = self
                    .scanning
                    .lock()
                    .map_err(|_| BackendError::Local("the SCAN state was poisoned".into()))?;
                let walked = scanning.insert(first, shard.primary.clone());
                if node_cursor != 0 && walked.is_some_and(|w| w != shard.primary) {
                    tracing::info!(
                        shard = first,
                        "the shard's primary changed mid-scan: walked again from its start"
                    );
                    node_cursor = 0;
                }
            }
            let node = self.node(&shard.primary).await;
            let page = match node {
                Ok(node) => node.scan_node(node_cursor, pattern, key_type, count).await,
                Err(e) => Err(e),
            };
            match page {
                Ok((next, keys)) => {
                    // Every key the node holds is reported, also of a slot being
                    // migrated to or from it (the map names one owner until the move
                    // ends; the keys already moved are only on the importing node): a
                    // key may come twice, as SCAN allows, never not at all.
                    if next >= 1 << NODE_CURSOR_BITS {
                        return Err(BackendError::Unexpected(format!(
                            "{} answered a SCAN cursor too large to carry",
                            shard.primary
                        )));
                    }
                    if next != 0 {
                        return Ok(((u64::from(first) + 1) << NODE_CURSOR_BITS | next, keys));
                    }
                    let after = map
                        .shard_after(Some(first))
                        .map_or(0, |s| (u64::from(s.first_slot()) + 1) << NODE_CURSOR_BITS);
                    return Ok((after, keys));
                }
                Err(e @ (BackendError::Unreachable(_) | BackendError::Timeout(_))) => {
                    if started.elapsed() > self.settle {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.refresh().await.ok();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `CLUSTER INFO` and `CLUSTER NODES` as the health the `redis.cluster_check`
    /// action judges: state, slots covered, failing nodes, slots in migration.
    pub async fn health(&self) -> Result<Value, BackendError> {
        self.refresh().await?;
        let (address, node) = self.any_primary().await?;
        let info = to_value(node.raw_node(redis::cmd("CLUSTER").arg("INFO")).await?).as_text();
        let nodes = to_value(node.raw_node(redis::cmd("CLUSTER").arg("NODES")).await?).as_text();
        let fields: BTreeMap<&str, &str> = info
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .collect();
        let number = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let mut failing = Vec::new();
        let mut migrating = Vec::new();
        let mut primaries = 0.0;
        let mut replicas = 0.0;
        for line in nodes.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (parts.get(1), parts.get(2)) else {
                continue;
            };
            let addr = addr.split(['@', ',']).next().unwrap_or(addr);
            if flags.split(',').any(|f| f == "fail" || f == "fail?") {
                failing.push(Value::Text(format!("{addr} ({flags})")));
            }
            if flags.contains("master") && !flags.contains("fail") {
                primaries += 1.0;
            } else if flags.contains("slave") && !flags.contains("fail") {
                replicas += 1.0;
            }
            for slot in parts.iter().skip(8).filter(|s| s.starts_with('[')) {
                migrating.push(Value::Text(format!("{addr} {slot}")));
            }
        }
        let map = self.slot_map();
        let mut out = BTreeMap::new();
        out.insert(
            "state".to_owned(),
            Value::Text(
                fields
                    .get("cluster_state")
                    .copied()
                    .unwrap_or("unknown")
                    .to_owned(),
            ),
        );
        out.insert(
            "slots_assigned".into(),
            Value::Number(number("cluster_slots_assigned")),
        );
        out.insert("slots_ok".into(), Value::Number(number("cluster_slots_ok")));
        out.insert(
            "slots_uncovered".into(),
            Value::Number(map.uncovered() as f64),
        );
        out.insert("primaries".into(), Value::Number(primaries));
        out.insert("replicas".into(), Value::Number(replicas));
        out.insert("failing".into(), Value::List(failing));
        out.insert("migrating".into(), Value::List(migrating));
        out.insert("asked".into(), Value::Text(address));
        Ok(Value::Object(out))
    }
}

/// The commands (and `container|sub` subcommands) a `COMMAND` reply flags `write` or
/// `may_replicate`, lowercase.
fn writing_commands(reply: &redis::Value) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    fn add(
        command: &redis::Value,
        container: Option<&str>,
        out: &mut std::collections::HashSet<String>,
    ) {
        let redis::Value::Array(parts) = command else {
            return;
        };
        let Some(name) = parts
            .first()
            .map(|n| to_value(n.clone()).as_text().to_ascii_lowercase())
        else {
            return;
        };
        let name = match container {
            Some(c) if !name.contains('|') => format!("{c}|{name}"),
            _ => name,
        };
        if let Some(redis::Value::Array(flags)) = parts.get(2)
            && flags.iter().any(|f| {
                let flag = to_value(f.clone()).as_text();
                flag == "write" || flag == "may_replicate"
            })
        {
            out.insert(name.clone());
        }
        if let Some(redis::Value::Array(subcommands)) = parts.get(9) {
            for sub in subcommands {
                add(sub, Some(&name), out);
            }
        }
    }
    if let redis::Value::Array(commands) = reply {
        for command in commands {
            add(command, None, &mut out);
        }
    }
    out
}

/// Refuses an address that is a URL or carries credentials (a seed or a Sentinel written
/// as `redis://:pw@host:port`), without echoing it: it may hold a password.
/// How many replicas the node that gave `CLUSTER NODES` output `nodes` has, failing
/// or not.
fn replicas_of_myself(nodes: &str) -> usize {
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|line| line.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| fields.len() > 3)
        .collect();
    let Some(me) = lines
        .iter()
        .find(|f| f[2].split(',').any(|flag| flag == "myself"))
        .map(|f| f[0])
    else {
        return 0;
    };
    lines.iter().filter(|f| f[3] == me).count()
}

pub(crate) fn check_address(address: &str) -> Result<(), BackendError> {
    if address.contains('/') || address.contains('@') {
        return Err(BackendError::Config(
            "a seed or Sentinel address is `host:port` (credentials go in the target's URL or `password`)".into(),
        ));
    }
    Ok(())
}

/// The URL of node `address`: the cluster URL's scheme and credentials, its host and port.
pub(crate) fn node_url(template: &str, address: &str) -> Result<String, BackendError> {
    let mut url = url::Url::parse(template)
        .map_err(|e| BackendError::Config(format!("invalid Redis URL: {e}")))?;
    check_address(address)?;
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| BackendError::Unexpected(format!("`{address}` is not host:port")))?;
    url.set_host(Some(host))
        .map_err(|e| BackendError::Unexpected(format!("node address `{address}`: {e}")))?;
    url.set_port(Some(port))
        .map_err(|()| BackendError::Unexpected(format!("node address `{address}`")))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag_rule() {
        // Values from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"{bull}:q:1"), key_slot(b"bull"));
    }

    #[test]
    fn a_primary_counts_its_replicas_failing_or_not() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7004@17004 slave,fail a1 0 0 1 connected
e5 127.0.0.1:7005@17005 slave b2 0 0 2 connected
";
        assert_eq!(replicas_of_myself(nodes), 2);
        assert_eq!(
            replicas_of_myself(&nodes.replace("myself,master", "master")),
            0
        );
    }

    #[test]
    fn every_slot_has_a_tag_that_lands_in_it() {
        for slot in [0u16, 1, 5460, 5461, 12182, 16383] {
            let key = format!("{{{}}}redis-move:tmp:1", slot_tag(slot));
            assert_eq!(key_slot(key.as_bytes()), slot);
        }
    }

    fn node(host: &str, port: i64) -> redis::Value {
        redis::Value::Array(vec![
            redis::Value::BulkString(host.as_bytes().to_vec()),
            redis::Value::Int(port),
        ])
    }

    #[test]
    fn the_slot_map_reads_cluster_slots() {
        let reply = redis::Value::Array(vec![
            redis::Value::Array(vec![
                redis::Value::Int(5461),
                redis::Value::Int(10922),
                node("10.0.0.2", 7001),
                node("10.0.0.5", 7004),
            ]),
            redis::Value::Array(vec![
                redis::Value::Int(0),
                redis::Value::Int(5460),
                node("", 7000),
            ]),
            redis::Value::Array(vec![
                redis::Value::Int(10923),
                redis::Value::Int(16000),
                node("10.0.0.3", 7002),
            ]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "10.0.0.1:7000").unwrap();
        assert_eq!(map.shards.len(), 3);
        assert_eq!(map.owner(0).unwrap().primary, "10.0.0.1:7000");
        assert_eq!(map.owner(5461).unwrap().replicas, vec!["10.0.0.5:7004"]);
        assert!(map.owner(16383).is_none());
        assert_eq!(map.uncovered(), 383);
        assert_eq!(map.shard_after(Some(0)).unwrap().primary, "10.0.0.2:7001");
        assert!(map.shard_after(Some(10923)).is_none());
        let bad = redis::Value::Array(vec![redis::Value::Array(vec![
            redis::Value::Int(0),
            redis::Value::Int(20000),
            node("a", 1),
        ])]);
        assert!(SlotMap::from_cluster_slots(&bad, "a:1").is_err());
    }

    #[test]
    fn node_urls_keep_scheme_and_credentials() {
        assert_eq!(
            node_url("rediss://u:p%40w@seed:7000", "10.0.0.2:7001").unwrap(),
            "rediss://u:p%40w@10.0.0.2:7001"
        );
        assert_eq!(
            node_url("redis://seed:7000", "[::1]:7001").unwrap(),
            "redis://[::1]:7001"
        );
        // A seed written as a URL with a password is refused without echoing it.
        let refused = node_url("redis://seed:7000", "redis://:Secret-9@h:1").unwrap_err();
        assert!(!refused.to_string().contains("Secret-9"), "{refused}");
    }
}
