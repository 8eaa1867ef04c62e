//! The local sandbox: the VPS-01 side of seeds 000/001 on one Docker Engine, to rehearse
//! `runbooks/vps01-to-vps.yaml` (with `runbooks/vars/vps01-to-vps.sandbox.yaml`) before the
//! real cutover, and to test it end to end.
//!
//! `up` builds its images locally (nothing is pulled), starts `fiskai-redis` (AOF on,
//! `maxmemory 2gb`, `allkeys-lru` as in seed 001) filled with BullMQ-shaped queues, and
//! 14 `fiskai-worker-<name>` containers consuming them, and `fiskai-app`, the
//! application: a producer that keeps enqueueing jobs through the cutover and the
//! rollback, writing to whichever of the two Redis takes writes, and logging each job a
//! server acknowledged. The VPS side is empty: the runbook provisions `fiskai-redis-vps`.
//! Everything the sandbox or the runbook creates carries the label
//! `redis-move-sandbox=true`; `down` removes exactly that (and the sandbox's network,
//! volumes and image tags).

use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::dataset;
use crate::docker::redis_image;
use crate::topology::{docker_cli, worker_image};

/// The label on everything the sandbox (and the runbook in the sandbox) creates.
pub const LABEL: &str = "redis-move-sandbox=true";
/// The sandbox's network (VPS-01 and VPS share one engine here).
pub const NETWORK: &str = "fiskai-sandbox";
/// The source Redis container.
pub const SOURCE: &str = "fiskai-redis";
/// The application's container: the producer.
pub const APP: &str = "fiskai-app";
/// A BullMQ consumer that the workers' name selection does not cover (`forgotten_consumer`).
pub const FORGOTTEN: &str = "fiskai-reporter";
/// The port of the source on 127.0.0.1.
pub const SOURCE_PORT: u16 = 16379;
/// The port the runbook publishes the new Redis on (127.0.0.1).
pub const TARGET_PORT: u16 = 16380;
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

/// The container name of worker `name`.
pub fn worker_name(name: &str) -> String {
    format!("fiskai-worker-{name}")
}

/// Starts the sandbox (after removing a previous one).
pub async fn up(docker: &Docker, options: &Options) {
    down();
    let redis = redis_image(docker).await;
    let worker = worker_image(docker).await;
    docker_cli(&["tag", &redis.reference, REDIS_IMAGE]);
    docker_cli(&["tag", &worker.reference, WORKER_IMAGE]);
    // Its own network when one is left (`down` could not remove it): reused.
    if !docker_quiet(&["network", "inspect", NETWORK]) {
        docker_cli(&["network", "create", "--label", LABEL, NETWORK]);
    }
    for volume in VOLUMES {
        docker_cli(&["volume", "create", "--label", LABEL, volume]);
    }
    let publish = format!("127.0.0.1:{SOURCE_PORT}:6379");
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
        let container = worker_name(name);
        let redis_url = if options.unconnected_worker && i == 3 {
            "redis://fiskai-redis-gone:6379"
        } else {
            "redis://fiskai-redis:6379"
        };
        let env = [
            format!("REDIS_URL={redis_url}"),
            format!("QUEUE=bull:{name}"),
            format!("WORKER_NAME={container}"),
            format!("JOB_MS={}", options.job_ms),
        ];
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
        for e in &env {
            args.push("-e".into());
            args.push(e.clone());
        }
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
            args.push("FAIL_MODULE_WHEN_URL=fiskai-redis-vps".into());
        }
        if options.wrong_password_after_cutover && i == 4 {
            args.push("-e".into());
            args.push("BAD_PASSWORD_WHEN_URL=fiskai-redis-vps".into());
        }
        args.push(WORKER_IMAGE.into());
        args.push("/usr/local/bin/worker".into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_cli(&refs);
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
            Some(pw) => format!("redis://:{pw}@fiskai-redis-vps:6379"),
            None => "redis://fiskai-redis-vps:6379".to_owned(),
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

/// Which sandbox Redis is a primary now, and its URL from the host: the new one when it
/// exists and is a primary (after a cutover), else the old one.
pub fn primary_url() -> Option<(&'static str, String)> {
    let new = match std::env::var("REDIS_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{TARGET_PORT}"),
        None => format!("redis://127.0.0.1:{TARGET_PORT}"),
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
/// tags of the sandbox; nothing else. Safe to run when nothing is there.
pub fn down() {
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

/// The sandbox's containers with their state, one per line.
pub fn status() -> String {
    Command::new("docker")
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
        .unwrap_or_default()
}

/// Every job of the 14 queues, wherever it is (wait, active, completed, failed,
/// delayed), counted on the Redis at `url`: a cutover must not change it.
pub fn job_count(url: &str) -> usize {
    let mut con = dataset::connect(url);
    WORKERS
        .iter()
        .map(|name| {
            let q = format!("bull:{name}");
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
            wait + active + completed + failed + delayed
        })
        .sum()
}
