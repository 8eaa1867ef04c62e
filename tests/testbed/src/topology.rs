//! A small migration topology in containers, for fault-injection tests (and the seed of
//! the sandbox): a source Redis and a target Redis on a private network, and workers
//! that consume a queue from whichever Redis their `REDIS_URL` names.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::docker::{ContainerGuard, TestImage, image_of, redis_image};
use crate::unique_name;

/// Runs the docker CLI; its trimmed stdout.
pub fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The worker binary (`rmtest-worker`), built (or brought up to date: a stale binary
/// would test the sandbox with an older worker) once per test process.
pub fn worker_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_worker).clone()
}

fn build_worker() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(|p| {
            if p.ends_with("deps") {
                p.parent()
            } else {
                Some(p)
            }
        })
        .expect("target dir")
        .to_path_buf();
    let binary = profile_dir.join("rmtest-worker");
    let release = profile_dir.ends_with("release");
    let mut args = vec!["build", "--workspace", "--bin", "rmtest-worker"];
    if release {
        args.push("--release");
    }
    let status = Command::new(env!("CARGO"))
        .args(&args)
        .status()
        .expect("cargo builds the worker");
    assert!(status.success(), "building rmtest-worker failed");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

/// The worker image: `rmtest-worker` at `/usr/local/bin/worker`, with its libraries.
pub async fn worker_image(docker: &Docker) -> TestImage {
    image_of(
        docker,
        "rmtest/worker",
        &[(worker_binary(), PathBuf::from("/usr/local/bin/worker"))],
    )
    .await
}

/// A Redis in a container, reachable from the host on a published port.
#[derive(Clone, Debug)]
pub struct RedisNode {
    /// Container name (also its host name on the network).
    pub name: String,
    /// Port published on 127.0.0.1.
    pub port: u16,
}

impl RedisNode {
    /// `redis://127.0.0.1:<port>`, from the host.
    pub fn host_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://<name>:6379`, from the network.
    pub fn network_url(&self) -> String {
        format!("redis://{}:6379", self.name)
    }

    /// `redis-cli` against it, from the host.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(crate::redis::which("redis-cli").expect("redis-cli"))
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until it answers PING.
    pub fn wait_ready(&self) {
        let start = Instant::now();
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Source and target Redis, workers on the source, a private network; all removed on
/// drop.
pub struct Topology {
    /// The prefix of every name in it.
    pub prefix: String,
    /// The network.
    pub network: String,
    /// The Redis the workers use at first.
    pub source: RedisNode,
    /// The Redis they are moved to.
    pub target: RedisNode,
    /// Worker container names.
    pub workers: Vec<String>,
    /// Images used.
    pub redis_image: TestImage,
    /// The worker image.
    pub worker_image: TestImage,
    guard: ContainerGuard,
}

impl Topology {
    /// Starts it: two Redis containers and `workers` workers consuming `jobs` from the
    /// source.
    pub async fn start(docker: &Docker, workers: usize) -> Topology {
        Topology::start_with_queue(docker, workers, "jobs").await
    }

    /// [`Topology::start`] with the workers' `QUEUE` (`bull:<name>`: BullMQ's lists).
    pub async fn start_with_queue(docker: &Docker, workers: usize, queue: &str) -> Topology {
        let redis_image = redis_image(docker).await;
        let worker_image = worker_image(docker).await;
        // Every name starts with this topology's own prefix, so that concurrent
        // topologies never match each other's patterns.
        let prefix = unique_name("t");
        let network = format!("{prefix}-net");
        docker_cli(&["network", "create", &network]);
        let mut guard = ContainerGuard::new(Vec::new());
        let start_redis = |role: &str, guard: &mut ContainerGuard| {
            let name = format!("{prefix}-{role}");
            guard.add(name.clone());
            docker_cli(&[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                &network,
                "-p",
                "127.0.0.1::6379",
                &redis_image.reference,
                "/usr/bin/redis-server",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]);
            let mapping = docker_cli(&["port", &name, "6379/tcp"]);
            let port = mapping
                .lines()
                .next()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("published port");
            let node = RedisNode { name, port };
            node.wait_ready();
            node
        };
        let source = start_redis("source", &mut guard);
        let target = start_redis("target", &mut guard);
        let mut names = Vec::new();
        for i in 0..workers {
            let name = format!("{prefix}-worker{i}");
            guard.add(name.clone());
            docker_cli(&[
                "run",
                "-d",
                // The worker stops on SIGTERM (tini forwards it), as Node workers do.
                "--init",
                "--name",
                &name,
                "--network",
                &network,
                "--label",
                "rmtest=worker",
                "-e",
                &format!("REDIS_URL={}", source.network_url()),
                "-e",
                &format!("WORKER_NAME={name}"),
                "-e",
                &format!("QUEUE={queue}"),
                &worker_image.reference,
                "/usr/local/bin/worker",
            ]);
            names.push(name);
        }
        Topology {
            prefix,
            network,
            source,
            target,
            workers: names,
            redis_image,
            worker_image,
            guard,
        }
    }

    /// A regex matching exactly this topology's workers.
    pub fn worker_pattern(&self) -> String {
        format!("^{}-worker[0-9]+$", self.prefix)
    }

    /// Also remove this container on drop.
    pub fn adopt(&mut self, name: &str) {
        self.guard.add(name.to_owned());
    }

    /// Pushes jobs `from..to` onto `jobs:wait` of `node`.
    pub fn enqueue(node: &RedisNode, from: u32, to: u32) {
        let ids: Vec<String> = (from..to).map(|i| format!("job-{i}")).collect();
        for chunk in ids.chunks(200) {
            let mut args = vec!["RPUSH", "jobs:wait"];
            args.extend(chunk.iter().map(String::as_str));
            node.cli(&args);
        }
    }

    /// Waits until `jobs:done` of `node` has at least `count` members.
    pub fn wait_done(node: &RedisNode, count: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if node
                .cli(&["SCARD", "jobs:done"])
                .parse::<usize>()
                .unwrap_or(0)
                >= count
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        drop(std::mem::replace(
            &mut self.guard,
            ContainerGuard::new(Vec::new()),
        ));
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}
