//! Test support for redis-move, shared by its tests (and later its sandbox): real
//! `redis-server` processes on free loopback ports, and Docker images built locally from
//! Debian's `redis-server` binary and its libraries (no registry can be reached).
//!
//! Everything it creates carries the `rmtest-` prefix and is removed when its guard is
//! dropped, also when a test fails.

pub mod browser;
pub mod cluster;
pub mod dataset;
pub mod docker;
pub mod engine;
pub mod http;
pub mod managed;
pub mod producer;
pub mod python;
pub mod redis;
pub mod sandbox;
pub mod scenario;
pub mod sentinel;
pub mod ssh;
pub mod tls;
pub mod topology;
pub mod workspace;

pub use cluster::LocalCluster;
pub use docker::{ContainerGuard, TestImage, engine};
pub use redis::RedisServer;
pub use workspace::Workspace;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this process and call: `rmtest-<pid>-<n>-<what>`.
pub fn unique_name(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "rmtest-{}-{}-{what}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
