//! A local Sentinel setup: a primary and two replicas (redis-server processes on
//! loopback ports) watched by three Sentinels (`redis-server --sentinel`), as its users
//! run one; stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisServer;
use crate::redis::{redis_server_binary, which};

/// The name the Sentinels monitor the primary under.
pub const MASTER: &str = "mymaster";

/// Three Sentinels watching a primary and two replicas.
pub struct LocalSentinels {
    /// The data nodes: the first primary at the start, then its two replicas.
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<(u16, Child, tempfile::TempDir)>,
}

impl LocalSentinels {
    /// Starts the data nodes and the Sentinels, and waits until every Sentinel knows the
    /// two replicas and the two other Sentinels.
    pub fn start() -> LocalSentinels {
        let primary = RedisServer::start();
        let port = primary.port.to_string();
        let mut nodes = vec![primary];
        for _ in 0..2 {
            nodes.push(RedisServer::start_with(
                None,
                &["--replicaof", "127.0.0.1", &port],
            ));
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let sentinel_port = crate::free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {sentinel_port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nsentinel monitor {MASTER} 127.0.0.1 {port} 2\nsentinel down-after-milliseconds {MASTER} 2000\nsentinel failover-timeout {MASTER} 10000\n",
                    dir.path().display()
                ),
            )
            .expect("sentinel.conf");
            let child = Command::new(redis_server_binary())
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel starts");
            sentinels.push((sentinel_port, child, dir));
        }
        let setup = LocalSentinels { nodes, sentinels };
        let start = Instant::now();
        while !setup.sentinels.iter().all(|(p, _, _)| {
            let replicas = sentinel_cli(*p, &["SENTINEL", "REPLICAS", MASTER]);
            let others = sentinel_cli(*p, &["SENTINEL", "SENTINELS", MASTER]);
            let lines: Vec<&str> = replicas.lines().collect();
            let linked = lines
                .windows(2)
                .filter(|w| w[0] == "master-link-status" && w[1] == "ok")
                .count();
            linked == 2 && others.matches("runid").count() == 2
        }) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the Sentinels did not discover each other and the replicas"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        setup
    }

    /// `host:port` of each Sentinel.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(p, _, _)| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The primary each Sentinel reports.
    pub fn reported_primaries(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(p, _, _)| {
                sentinel_cli(*p, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
                    .lines()
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .collect()
    }

    /// The data node on `address` (`127.0.0.1:PORT`).
    pub fn node(&self, address: &str) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| format!("127.0.0.1:{}", n.port) == address)
            .unwrap_or_else(|| panic!("no data node at {address}"))
    }

    /// `redis://` URLs of the data nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

fn sentinel_cli(port: u16, args: &[&str]) -> String {
    Command::new(which("redis-cli").expect("redis-cli"))
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for LocalSentinels {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
