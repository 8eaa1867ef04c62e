//! A local Redis Cluster: cluster-mode `redis-server` processes on loopback ports, joined
//! by `redis-cli --cluster create` (as its users build one), with the faults the tests
//! need: a primary killed (its replica takes over), slots moved with
//! `redis-cli --cluster reshard`, a slot range left unserved.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisServer;
use crate::redis::which;

/// A running cluster of `primaries` shards with `replicas` replicas each; stopped on drop.
pub struct LocalCluster {
    /// Every node, the primaries first (as `--cluster create` was given them).
    pub nodes: Vec<RedisServer>,
    /// Nodes killed by [`LocalCluster::kill_primary_of_slot`] (their ports).
    pub killed: Vec<u16>,
}

/// A loopback port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = crate::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl LocalCluster {
    /// Starts and joins the cluster; returns once every node sees `cluster_state:ok`.
    /// `cluster-node-timeout` is 1 s, so a killed primary is replaced within seconds.
    pub fn start(primaries: usize, replicas: usize) -> LocalCluster {
        let count = primaries * (1 + replicas);
        let mut nodes = Vec::new();
        while nodes.len() < count {
            let port = cluster_port();
            let server = std::panic::catch_unwind(|| {
                RedisServer::start_at(
                    port,
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            });
            if let Ok(server) = server {
                nodes.push(server);
            }
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        create(&addresses, replicas);
        let cluster = LocalCluster {
            nodes,
            killed: Vec::new(),
        };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// `127.0.0.1:PORT` of every node.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// `redis://127.0.0.1:PORT` of the first node (a seed).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The nodes still running.
    pub fn alive(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| !self.killed.contains(&n.port))
    }

    /// Waits until every node still running reports `cluster_state:ok` and agrees on
    /// who serves every slot.
    pub fn wait_ok(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let ok = self.alive().all(|n| {
                n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && n.cli(&["CLUSTER", "INFO"])
                        .contains("cluster_slots_ok:16384")
            });
            let maps: Vec<String> = self
                .alive()
                .map(|n| self.slot_owners_seen_by(n.port))
                .collect();
            if ok && maps.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the cluster did not settle within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn slot_owners_seen_by(&self, port: u16) -> String {
        let node = self.nodes.iter().find(|n| n.port == port).expect("node");
        let mut lines: Vec<String> = node
            .cli(&["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", parts[1], parts[8..].join(" "))
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// The port of the primary serving `slot`, as the cluster sees it now.
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        self.try_primary_of_slot(slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// The port of the primary serving `slot`, if one does.
    pub fn try_primary_of_slot(&self, slot: u16) -> Option<u16> {
        let node = self.alive().next().expect("a node");
        owner_of(&node.cli(&["CLUSTER", "NODES"]), slot).map(|address| port_of(&address))
    }

    /// The node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        let node = self.nodes.iter().find(|n| n.port == port).expect("node");
        node.cli(&["CLUSTER", "MYID"]).trim().to_owned()
    }

    /// Kills (SIGKILL) the primary serving `slot` and waits until its replica took
    /// over; returns the killed port.
    pub fn kill_primary_of_slot(&mut self, slot: u16) -> u16 {
        self.kill_primary_of_slot_losing_writes(slot, Duration::ZERO)
    }

    /// Kills the primary serving `slot` after its replica stopped receiving its writes
    /// for `behind` (frozen, while the primary acknowledges writes on its own), so that
    /// the replica that takes over has lost what the primary acknowledged meanwhile;
    /// returns the killed port once the replica took over.
    pub fn kill_primary_of_slot_losing_writes(&mut self, slot: u16, behind: Duration) -> u16 {
        let port = self.primary_of_slot(slot);
        let id = self.node_id(port);
        let replica_port = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .expect("node")
            .cli(&["CLUSTER", "NODES"])
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|parts| parts[2].contains("slave") && parts[3] == id)
            .map(|parts| port_of(parts[1]))
            .expect("the primary has a replica");
        let replica = self
            .nodes
            .iter()
            .find(|n| n.port == replica_port)
            .expect("replica");
        replica.freeze(true);
        if !behind.is_zero() {
            // Cut off, not only frozen: writes would wait in its socket otherwise.
            self.nodes
                .iter()
                .find(|n| n.port == port)
                .expect("node")
                .cli(&["CLIENT", "KILL", "TYPE", "replica"]);
            std::thread::sleep(behind);
        }
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("node");
        node.kill();
        self.killed.push(port);
        self.nodes
            .iter()
            .find(|n| n.port == replica_port)
            .expect("replica")
            .freeze(false);
        let start = Instant::now();
        while self.try_primary_of_slot(slot).is_none_or(|p| p == port) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no replica took over slot {slot} from {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        port
    }

    /// Moves `slots` slots from the primary on `from` to the one on `to`, keys and all,
    /// with `redis-cli --cluster reshard` (MIGRATE in batches, as operators do it).
    pub fn reshard(&self, from: u16, to: u16, slots: u32) -> String {
        let seed = self.alive().next().expect("a node").port;
        cli_output(&[
            "--cluster".into(),
            "reshard".into(),
            format!("127.0.0.1:{seed}"),
            "--cluster-from".into(),
            self.node_id(from),
            "--cluster-to".into(),
            self.node_id(to),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
            "--cluster-pipeline".into(),
            "10".into(),
        ])
    }

    /// Removes slots `first..=last` from whichever node serves them (on every node), so
    /// that the cluster no longer covers them.
    pub fn drop_slots(&self, first: u16, last: u16) {
        let range: Vec<String> = (first..=last).map(|s| s.to_string()).collect();
        for node in self.alive() {
            let mut args = vec!["CLUSTER", "DELSLOTS"];
            args.extend(range.iter().map(String::as_str));
            let _ = node.cli(&args);
        }
    }

    /// Every key matching `pattern` of every primary with its state (see
    /// [`crate::dataset::snapshot`]).
    pub fn snapshot(
        &self,
        pattern: &str,
    ) -> std::collections::BTreeMap<Vec<u8>, crate::dataset::KeyState> {
        let mut all = std::collections::BTreeMap::new();
        for node in self.primaries() {
            let mut con = crate::dataset::connect(&node.url());
            all.extend(crate::dataset::snapshot(&mut con, pattern));
        }
        all
    }

    /// The primaries still running.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        self.alive()
            .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Keys in every primary, summed.
    pub fn dbsize(&self) -> u64 {
        self.primaries()
            .into_iter()
            .map(|n| n.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap_or(0))
            .sum()
    }
}

/// The slot of `key` (CRC16 of its hash tag, as the cluster computes it).
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The `host:port` of the primary serving `slot` in `CLUSTER NODES` output `nodes`.
fn owner_of(nodes: &str, slot: u16) -> Option<String> {
    for line in nodes.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 8 || !parts[2].contains("master") || parts[2].contains("fail") {
            continue;
        }
        for range in &parts[8..] {
            if range.starts_with('[') {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (u16, u16) = (a.parse().unwrap(), b.parse().unwrap());
            if (a..=b).contains(&slot) {
                return parts[1].split('@').next().map(str::to_owned);
            }
        }
    }
    None
}

/// Joins the cluster-mode servers at `addresses` (`host:port`) into a cluster with
/// `replicas` replicas per primary (`redis-cli --cluster create`, as its users build
/// one); the first `addresses.len() / (1 + replicas)` become the primaries.
pub fn create(addresses: &[String], replicas: usize) {
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(addresses.iter().cloned());
    args.extend([
        "--cluster-replicas".into(),
        replicas.to_string(),
        "--cluster-yes".into(),
    ]);
    let out = cli_output(&args);
    assert!(
        out.contains("All 16384 slots covered"),
        "redis-cli --cluster create failed:\n{out}"
    );
}

/// `redis-cli -h HOST -p PORT ARGS...` against the node at `address`; its output.
pub fn cli_at(address: &str, args: &[&str]) -> String {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let mut all: Vec<String> = vec!["-h".into(), host.into(), "-p".into(), port.into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    cli_output(&all)
}

/// The `host:port` of the primary serving `slot`, as the node at `address` sees it.
pub fn primary_of_slot_at(address: &str, slot: u16) -> Option<String> {
    owner_of(&cli_at(address, &["CLUSTER", "NODES"]), slot)
}

/// Waits until every node at `addresses` reports `cluster_state:ok` with every slot
/// served.
pub fn wait_ok_at(addresses: &[String], limit: Duration) {
    let start = Instant::now();
    while !addresses.iter().all(|a| {
        let info = cli_at(a, &["CLUSTER", "INFO"]);
        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
    }) {
        assert!(
            start.elapsed() < limit,
            "the cluster at {addresses:?} did not settle within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn port_of(address: &str) -> u16 {
    address
        .split('@')
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port@bus")
}

fn cli_output(args: &[String]) -> String {
    let out = Command::new(which("redis-cli").expect("redis-cli"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
