//! The local sandbox: the two hosts of seeds 000/001 on this machine, to rehearse
//! `runbooks/vps01-to-vps.yaml` (with `runbooks/vars/vps01-to-vps.sandbox.yaml`) before the
//! real cutover, and to test it end to end. VPS-01 is the local Docker Engine; VPS is a
//! second engine ([`crate::engine`]) that redis-move reaches only over SSH, through a
//! sandbox sshd on `127.0.0.1:16322` whose sessions use that engine. Each host has its
//! own `fiskai-sandbox` network; a host's containers reach the other host's published
//! ports at their network's gateway (this machine), as two VPSs reach each other's
//! published ports at their addresses.
//!
//! `up` builds its images locally (nothing is pulled), starts `fiskai-redis` (AOF on,
//! `maxmemory 2gb`, `allkeys-lru` as in seed 001) filled with BullMQ-shaped queues, and
//! 14 `fiskai-worker-<name>` containers consuming them, and `fiskai-app`, the
//! application: a producer that keeps enqueueing jobs through the cutover and the
//! rollback, writing to whichever of the two Redis takes writes, and logging each job a
//! server acknowledged. The VPS side is empty: the runbook provisions `fiskai-redis-vps`
//! there.
//! Everything the sandbox or the runbook creates carries the label
//! `redis-move-sandbox=true`; `down` removes exactly that (and the sandbox's network,
//! volumes and image tags).

use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::dataset;
use crate::docker::redis_image;
use crate::engine::{EngineSpec, SecondEngine};
use crate::ssh::{SshServer, SshServerOptions};
use crate::topology::{docker_cli, worker_image};

/// The label on everything the sandbox (and the runbook in the sandbox) creates.
pub const LABEL: &str = "redis-move-sandbox=true";
/// The sandbox's network (one on each host).
pub const NETWORK: &str = "fiskai-sandbox";
/// The network's subnet on VPS-01 (the local engine), and its gateway: where VPS-01's
/// containers reach the VPS's published ports.
pub const VPS01_SUBNET: (&str, &str) = ("10.213.250.0/24", "10.213.250.1");
/// The network's subnet on VPS (the second engine), and its gateway: where the VPS's
/// containers reach VPS-01's published ports.
pub const VPS_SUBNET: (&str, &str) = ("10.213.251.0/24", "10.213.251.1");
/// Where the sandbox keeps what it starts (the VPS engine, sshd, keys).
pub const STATE_DIR: &str = "/tmp/fiskai-sandbox";
/// The port of the sandbox's sshd on 127.0.0.1 (the VPS host's SSH).
pub const SSH_PORT: u16 = 16322;
/// The bridge of the VPS engine's default network, and its address.
const VPS_BRIDGE: (&str, &str) = ("fiskai-vps0", "10.213.252.1/24");
/// The source Redis container.
pub const SOURCE: &str = "fiskai-redis";
/// The application's container: the producer.
pub const APP: &str = "fiskai-app";
/// A BullMQ consumer that the workers' name selection does not cover (`forgotten_consumer`).
pub const FORGOTTEN: &str = "fiskai-reporter";
/// The port of the source on 127.0.0.1.
pub const SOURCE_PORT: u16 = 16379;
/// The port the runbook publishes the new Redis on, at VPS-01's gateway address.
pub const TARGET_PORT: u16 = 16380;
/// Where the new Redis is reached (from VPS-01's containers, the VPS host and here).
pub const TARGET_ADDRESS: &str = "10.213.250.1:16380";
/// The tag of the Redis image the runbook runs (`vars.redis_image`).
pub const REDIS_IMAGE: &str = "fiskai-sandbox/redis:7";
/// The tag of the worker image (`fiskai-worker`, as the pre-flight looks for it).
pub const WORKER_IMAGE: &str = "fiskai-worker:sandbox";
/// Volumes the sandbox and the runbook use.
pub const VOLUMES: [&str; 2] = ["fiskai-sandbox-redis-data", "fiskai-sandbox-redis-vps-data"];
/// The 14 workers of seed 001, one queue each.
pub const WORKERS: [&str; 14] = [
    "orchestrator",
    "extractor",
    "ocr",
    "composer",
    "reviewer",
    "sentinel",
    "classifier",
    "indexer",
    "notifier",
    "scheduler",
    "archiver",
    "validator",
    "enricher",
    "reporter",
];

/// How to start the sandbox.
#[derive(Clone, Debug)]
pub struct Options {
    /// Jobs loaded into the source, over the 14 queues.
    pub jobs: usize,
    /// Milliseconds each job takes a worker.
    pub job_ms: u64,
    /// Plant seed 000's first failure: a worker running from a `/src` bind mount.
    pub src_mount: bool,
    /// Plant the second: a worker whose logs say "Cannot find module".
    pub module_error: bool,
    /// The second, but only once the worker is moved to the new Redis (the cutover
    /// exposes it): the trigger must roll back.
    pub module_error_after_cutover: bool,
    /// A worker that runs but never connects (its REDIS_URL names no host).
    pub unconnected_worker: bool,
    /// A worker that sends a wrong password to the new Redis (a stale secret): it logs
    /// `WRONGPASS` after the cutover and keeps running.
    pub wrong_password_after_cutover: bool,
    /// A BullMQ consumer outside the workers' name selection (`fiskai-reporter`), left
    /// connected to the old Redis by the cutover.
    pub forgotten_consumer: bool,
    /// Also load seed 004's `job:*` keys (for `runbooks/job-keys-to-step-keys.yaml`).
    pub job_keys: bool,
    /// Jobs the application enqueues a second (0: no application).
    pub produce: u32,
    /// The password of the new Redis (the runbook's `REDIS_PASSWORD`), so that the
    /// application can write to it once it is the primary.
    pub password: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 140_000,
            job_ms: 20,
            src_mount: false,
            module_error: false,
            module_error_after_cutover: false,
            unconnected_worker: false,
            wrong_password_after_cutover: false,
            forgotten_consumer: false,
            job_keys: false,
            produce: 20,
            password: std::env::var("REDIS_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        }
    }
}

fn docker_quiet(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn vps_engine_dir() -> std::path::PathBuf {
    std::path::Path::new(STATE_DIR).join("vps-engine")
}

fn ssh_dir() -> std::path::PathBuf {
    std::path::Path::new(STATE_DIR).join("ssh")
}

/// The VPS host's engine, when it runs.
pub fn vps_engine() -> Option<SecondEngine> {
    SecondEngine::attach(&vps_engine_dir(), VPS_BRIDGE.0)
}

/// `docker` on the VPS host's engine (the sandbox must be up); its output.
pub fn vps_docker(args: &[&str]) -> String {
    vps_engine()
        .expect("the sandbox's VPS engine runs")
        .docker(args)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Why the two-host sandbox cannot run here, if it cannot (a second engine needs root
/// and dockerd; the VPS host's SSH needs sshd).
pub fn unavailable() -> Option<String> {
    crate::engine::unavailable().or_else(|| {
        (!std::path::Path::new("/usr/sbin/sshd").exists())
            .then(|| "sshd is not installed (openssh-server)".to_owned())
    })
}

/// Starts the VPS host: its engine (with the sandbox's images and network) and its sshd.
async fn vps_up() -> SecondEngine {
    let engine = SecondEngine::start(&EngineSpec {
        dir: vps_engine_dir(),
        bridge: VPS_BRIDGE.0.into(),
        bridge_address: VPS_BRIDGE.1.into(),
        tcp: None,
        tls: None,
    })
    .unwrap_or_else(|e| panic!("the VPS engine: {e}"));
    let client = engine.client();
    let redis = redis_image(&client).await;
    engine
        .docker(&["tag", &redis.reference, REDIS_IMAGE])
        .unwrap_or_else(|e| panic!("{e}"));
    if engine.docker(&["network", "inspect", NETWORK]).is_err() {
        engine
            .docker(&[
                "network",
                "create",
                "--label",
                LABEL,
                "--subnet",
                VPS_SUBNET.0,
                "--gateway",
                VPS_SUBNET.1,
                NETWORK,
            ])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The VPS host's SSH: its sessions use the VPS engine. Detached, like the engine.
    let _ssh = SshServer::start(SshServerOptions {
        docker_host: Some(engine.host.clone()),
        dir: Some(ssh_dir()),
        port: Some(SSH_PORT),
        detached: true,
    })
    .expect("sshd");
    engine
}

/// The container name of worker `name`.
pub fn worker_name(name: &str) -> String {
    format!("fiskai-worker-{name}")
}

/// Starts the sandbox (after removing a previous one).
pub async fn up(docker: &Docker, options: &Options) {
    down();
    if let Some(why) = unavailable() {
        panic!("the sandbox's VPS host cannot run here: {why}");
    }
    // The VPS side first: VPS-01's Redis publishes on the gateway of its network.
    let _vps = vps_up().await;
    let redis = redis_image(docker).await;
    let worker = worker_image(docker).await;
    docker_cli(&["tag", &redis.reference, REDIS_IMAGE]);
    docker_cli(&["tag", &worker.reference, WORKER_IMAGE]);
    // Its own network when one is left (`down` could not remove it): reused.
    if !docker_quiet(&["network", "inspect", NETWORK]) {
        docker_cli(&[
            "network",
            "create",
            "--label",
            LABEL,
            "--subnet",
            VPS01_SUBNET.0,
            "--gateway",
            VPS01_SUBNET.1,
            NETWORK,
        ]);
    }
    docker_cli(&["volume", "create", "--label", LABEL, VOLUMES[0]]);
    let publish = format!("127.0.0.1:{SOURCE_PORT}:6379");
    // Where the VPS's containers reach VPS-01's Redis (replication, both ways).
    let publish_to_vps = format!("{}:{SOURCE_PORT}:6379", VPS_SUBNET.1);
    let data = format!("{}:/data", VOLUMES[0]);
    docker_cli(&[
        "run",
        "-d",
        "--name",
        SOURCE,
        "--label",
        LABEL,
        "--network",
        NETWORK,
        "-p",
        &publish,
        "-p",
        &publish_to_vps,
        "-v",
        &data,
        "--restart",
        "unless-stopped",
        REDIS_IMAGE,
        "/usr/bin/redis-server",
        "--dir",
        "/data",
        "--appendonly",
        "yes",
        "--maxmemory",
        "2gb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--protected-mode",
        "no",
    ]);
    let url = format!("redis://127.0.0.1:{SOURCE_PORT}");
    let start = Instant::now();
    let mut con = loop {
        if let Ok(mut con) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection())
            && redis::cmd("PING").query::<String>(&mut con).is_ok()
        {
            break con;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{SOURCE} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let queues: Vec<String> = WORKERS.iter().map(|w| (*w).to_owned()).collect();
    dataset::load_bullmq_queues(&mut con, &queues, options.jobs);
    if options.job_keys {
        dataset::load_job_keys(&mut con, 3000);
    }
    // A development bind mount of the sources, as the seed's workers had: `.../src`.
    let src_dir = std::env::temp_dir().join("fiskai-sandbox").join("src");
    let _ = std::fs::create_dir_all(&src_dir);
    for (i, name) in WORKERS.iter().enumerate() {
        let redis_url = if options.unconnected_worker && i == 3 {
            "redis://fiskai-redis-gone:6379"
        } else {
            "redis://fiskai-redis:6379"
        };
        let mut args = worker_args(name, redis_url, &format!("bull:{name}"), options.job_ms);
        if options.src_mount && i == 0 {
            args.push("-v".into());
            args.push(format!("{}:/app/src", src_dir.display()));
        }
        if options.module_error && i == 1 {
            args.push("-e".into());
            args.push("FAIL_MODULE=1".into());
        }
        if options.module_error_after_cutover && i == 2 {
            args.push("-e".into());
            args.push(format!("FAIL_MODULE_WHEN_URL={TARGET_ADDRESS}"));
        }
        if options.wrong_password_after_cutover && i == 4 {
            args.push("-e".into());
            args.push(format!("BAD_PASSWORD_WHEN_URL={TARGET_ADDRESS}"));
        }
        run_worker(args);
    }
    if options.forgotten_consumer {
        docker_cli(&[
            "run",
            "-d",
            "--init",
            "--name",
            FORGOTTEN,
            "--label",
            LABEL,
            "--network",
            NETWORK,
            "-e",
            "REDIS_URL=redis://fiskai-redis:6379",
            "-e",
            "QUEUE=bull:reports",
            "-e",
            &format!("WORKER_NAME={FORGOTTEN}"),
            WORKER_IMAGE,
            "/usr/local/bin/worker",
        ]);
    }
    if options.produce > 0 {
        let new = match &options.password {
            Some(pw) => format!("redis://:{pw}@{TARGET_ADDRESS}"),
            None => format!("redis://{TARGET_ADDRESS}"),
        };
        docker_cli(&[
            "run",
            "-d",
            "--init",
            "--name",
            APP,
            "--label",
            LABEL,
            "--network",
            NETWORK,
            "-e",
            "ROLE=producer",
            "-e",
            &format!("REDIS_URLS=redis://{SOURCE}:6379,{new}"),
            "-e",
            &format!("QUEUES={}", WORKERS.join(",")),
            "-e",
            &format!("RATE={}", options.produce),
            WORKER_IMAGE,
            "/usr/local/bin/worker",
        ]);
    }
}

/// `docker run` arguments of worker `name` on `queue` of the Redis at `redis_url`, up to
/// the image (more options may follow).
fn worker_args(name: &str, redis_url: &str, queue: &str, job_ms: u64) -> Vec<String> {
    let container = worker_name(name);
    let mut args: Vec<String> = [
        // --init: the worker stops on SIGTERM, as Node workers do.
        "run",
        "-d",
        "--init",
        "--name",
        &container,
        "--label",
        LABEL,
        "--label",
        "app=fiskai-worker",
        "--network",
        NETWORK,
        "--restart",
        "unless-stopped",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for e in [
        format!("REDIS_URL={redis_url}"),
        format!("QUEUE={queue}"),
        format!("WORKER_NAME={container}"),
        format!("JOB_MS={job_ms}"),
    ] {
        args.push("-e".into());
        args.push(e);
    }
    args
}

/// Starts a worker from [`worker_args`] and the options after them.
fn run_worker(mut args: Vec<String>) {
    args.push(WORKER_IMAGE.into());
    args.push("/usr/local/bin/worker".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_cli(&refs);
}

/// The addresses of the sandbox's Redis Cluster nodes on its network (reached from
/// this machine too): 3 primaries, then a replica for each.
pub const CLUSTER_NODES: [&str; 6] = [
    "10.213.250.201:6379",
    "10.213.250.202:6379",
    "10.213.250.203:6379",
    "10.213.250.204:6379",
    "10.213.250.205:6379",
    "10.213.250.206:6379",
];

/// The URL of the sandbox's cluster (its first node, a seed).
pub fn cluster_url() -> String {
    format!("redis://{}", CLUSTER_NODES[0])
}

/// Starts the sandbox's Redis Cluster beside a running sandbox (the target of
/// `runbooks/queue-to-cluster.yaml`): six cluster-mode containers `fiskai-cluster-N` on
/// the sandbox's network, joined with `redis-cli --cluster create`; returns once every
/// node sees every slot served.
pub async fn cluster_up(docker: &Docker) {
    assert!(
        docker_quiet(&["network", "inspect", NETWORK]),
        "the sandbox is not up (scripts/sandbox up first)"
    );
    let redis = redis_image(docker).await;
    docker_cli(&["tag", &redis.reference, REDIS_IMAGE]);
    for (i, address) in CLUSTER_NODES.iter().enumerate() {
        let name = format!("fiskai-cluster-{}", i + 1);
        let (ip, _) = address.split_once(':').expect("ip:port");
        docker_quiet(&["rm", "-f", &name]);
        docker_cli(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            LABEL,
            "--network",
            NETWORK,
            "--ip",
            ip,
            REDIS_IMAGE,
            "/usr/bin/redis-server",
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "2000",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
    }
    let addresses: Vec<String> = CLUSTER_NODES.iter().map(|a| (*a).to_owned()).collect();
    let start = Instant::now();
    while !addresses
        .iter()
        .all(|a| crate::cluster::cli_at(a, &["PING"]).trim() == "PONG")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the cluster's containers did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::cluster::create(&addresses, 1);
    crate::cluster::wait_ok_at(&addresses, Duration::from_secs(60));
}

/// Starts every worker again on the cluster, on its queue under the `{bull}` prefix:
/// what the cutover step of `runbooks/queue-to-cluster.yaml` asks the operator to do.
pub fn workers_to_cluster(job_ms: u64) {
    for name in WORKERS {
        docker_quiet(&["rm", "-f", &worker_name(name)]);
        run_worker(worker_args(
            name,
            &cluster_url(),
            &format!("{{bull}}:{name}"),
            job_ms,
        ));
    }
}

/// Stops every worker (they disconnect: no writer is left on the source).
pub fn stop_workers() {
    for name in WORKERS {
        docker_quiet(&["stop", "-t", "2", &worker_name(name)]);
    }
}

/// Which sandbox Redis is a primary now, and its URL from the host: the new one when it
/// exists and is a primary (after a cutover), else the old one.
pub fn primary_url() -> Option<(&'static str, String)> {
    let new = match std::env::var("REDIS_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(pw) => format!("redis://:{pw}@{TARGET_ADDRESS}"),
        None => format!("redis://{TARGET_ADDRESS}"),
    };
    let old = format!("redis://127.0.0.1:{SOURCE_PORT}");
    [("fiskai-redis-vps", new), (SOURCE, old)]
        .into_iter()
        .find(|(_, url)| {
            redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c))
            .is_ok_and(|role| {
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
            })
        })
}

/// What the application saw: the jobs a server acknowledged (queue, id) and how many
/// writes were refused. Stops the application first, so that nothing changes after.
pub fn stop_app() -> (Vec<(String, String)>, usize) {
    docker_quiet(&["stop", "-t", "2", APP]);
    let logs = Command::new("docker")
        .args(["logs", APP])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let acked = logs
        .lines()
        .filter_map(|l| l.strip_prefix("acked "))
        .filter_map(|l| l.split_once(' '))
        .map(|(q, id)| (q.to_owned(), id.to_owned()))
        .collect();
    let rejected = logs.lines().filter(|l| l.starts_with("rejected ")).count();
    (acked, rejected)
}

/// The acknowledged jobs of `acked` that the Redis at `url` does not hold in any state
/// (wait, active, completed, failed, delayed): what the move lost.
pub fn missing_jobs(url: &str, acked: &[(String, String)]) -> Vec<String> {
    let mut con = dataset::connect(url);
    let mut held = std::collections::HashSet::new();
    for name in WORKERS {
        let q = format!("bull:{name}");
        let mut pipe = redis::pipe();
        for list in ["wait", "active"] {
            pipe.cmd("LRANGE").arg(format!("{q}:{list}")).arg(0).arg(-1);
        }
        for set in ["completed", "failed", "delayed"] {
            pipe.cmd("ZRANGE").arg(format!("{q}:{set}")).arg(0).arg(-1);
        }
        let states: Vec<Vec<String>> = pipe.query(&mut con).expect("queues");
        for id in states.into_iter().flatten() {
            held.insert((name.to_string(), id));
        }
    }
    acked
        .iter()
        .filter(|(q, id)| !held.contains(&(q.clone(), id.clone())))
        .map(|(q, id)| format!("{q}:{id}"))
        .collect()
}

/// Removes every container labelled [`LABEL`], the network, the volumes and the image
/// tags of the sandbox on the local engine, stops the VPS host (its engine with all it
/// holds, its bridge, its sshd) and removes their files; nothing else. Safe to run when
/// nothing is there.
pub fn down() {
    crate::ssh::stop_detached(&ssh_dir());
    let _ = std::fs::remove_dir_all(ssh_dir());
    match vps_engine() {
        Some(engine) => engine.stop(),
        None => {
            // Not running: what a crash may have left (bridge, files).
            let _ = Command::new("ip")
                .args(["link", "delete", VPS_BRIDGE.0])
                .output();
            let _ = std::fs::remove_dir_all(vps_engine_dir());
        }
    }
    crate::engine::delete_orphan_bridges(VPS_SUBNET.1);
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={LABEL}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(&ids);
        docker_quiet(&args);
    }
    // Endpoints left behind (seen on Docker 20.10 after a container was parked, renamed
    // and restored) would keep the network from being removed: disconnect them first.
    for endpoint in stale_endpoints() {
        docker_quiet(&["network", "disconnect", "-f", NETWORK, &endpoint]);
    }
    docker_quiet(&["network", "rm", NETWORK]);
    for volume in VOLUMES {
        docker_quiet(&["volume", "rm", volume]);
    }
    docker_quiet(&["rmi", REDIS_IMAGE]);
    docker_quiet(&["rmi", WORKER_IMAGE]);
}

/// Endpoints on the sandbox's network whose container no longer exists under that
/// name (stale), by endpoint name.
pub fn stale_endpoints() -> Vec<String> {
    let endpoints = Command::new("docker")
        .args([
            "network",
            "inspect",
            NETWORK,
            "--format",
            "{{range .Containers}}{{.Name}}\n{{end}}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let existing = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let existing: std::collections::HashSet<&str> = existing.lines().collect();
    endpoints
        .lines()
        .filter(|e| !e.is_empty() && !existing.contains(e))
        .map(str::to_owned)
        .collect()
}

/// The sandbox's containers with their state, one per line (the VPS host's after
/// VPS-01's).
pub fn status() -> String {
    let vps = vps_engine()
        .and_then(|e| {
            e.docker(&["ps", "-a", "--format", "{{.Names}}\t{{.Status}}"])
                .ok()
        })
        .map_or("VPS engine: not running\n".to_owned(), |list| {
            format!("VPS engine ({}):\n{list}\n", vps_engine_dir().display())
        });
    let vps01 = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            "{{.Names}}\t{{.Status}}",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!("VPS-01 engine (local):\n{vps01}{vps}")
}

/// Every job of the 14 queues, wherever it is (wait, active, completed, failed,
/// delayed), counted on the Redis at `url`: a cutover must not change it.
pub fn job_count(url: &str) -> usize {
    queue_counts(url, "bull")
        .iter()
        .map(|c| c.iter().sum::<usize>())
        .sum()
}

/// Each queue's jobs under `prefix` on the Redis at `url`: (wait, active, completed,
/// failed, delayed).
pub fn queue_counts(url: &str, prefix: &str) -> Vec<[usize; 5]> {
    let mut con = dataset::connect(url);
    WORKERS
        .iter()
        .map(|name| {
            let q = format!("{prefix}:{name}");
            let (wait, active, completed, failed, delayed): (usize, usize, usize, usize, usize) =
                redis::pipe()
                    .cmd("LLEN")
                    .arg(format!("{q}:wait"))
                    .cmd("LLEN")
                    .arg(format!("{q}:active"))
                    .cmd("ZCARD")
                    .arg(format!("{q}:completed"))
                    .cmd("ZCARD")
                    .arg(format!("{q}:failed"))
                    .cmd("ZCARD")
                    .arg(format!("{q}:delayed"))
                    .query(&mut con)
                    .expect("queue depths");
            [wait, active, completed, failed, delayed]
        })
        .collect()
}
