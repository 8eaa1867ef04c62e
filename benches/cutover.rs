//! `scripts/bench-cutover` (`cargo bench --bench cutover`): the workers' downtime during
//! the cutover, redis-move against the ways its users do it by hand, on the 14 sandbox
//! workers in the same run. Downtime, as the README defines it: the first worker stopped
//! (the Docker Engine's first `kill` event for a worker, read from `docker events`) ->
//! all 14 running with the new REDIS_URL and consuming from the new Redis (each queue's
//! completed count grows there).
//!   - redis-move: `docker.recreate` of `^fiskai-worker-` with the new REDIS_URL (stops
//!     in parallel with a grace period, keeps every other setting and the original for a
//!     rollback, starts);
//!   - docker-cli: a hand-written script, as an operator would write it: `docker stop`
//!     of the 14 (the CLI stops them in parallel), `docker rm`, then 14 `docker run -d` in
//!     parallel with the new REDIS_URL;
//!   - compose: `docker-compose down`, then `up -d` with the new REDIS_URL (seed 001);
//!   - the floor: the same operations straight through the Engine API, in parallel, in
//!     this process (inspect, stop, remove, create, start): what any tool must pay.
//!
//! Median of 5 each (`BENCH_RUNS`). Ends with the line
//! `cutover: redis-move A s, compose B s, docker-cli C s, ratio R`, R against the fastest
//! peer (target R <= 0.7 against compose, <= 1 against the script).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis_move_testbed::sandbox::{self, Options, WORKERS};
use redis_move_testbed::topology::docker_cli;

const TARGET: &str = "fiskai-bench-target";
const TARGET_PORT: u16 = 16381;

fn completed(con: &mut redis::Connection) -> Vec<u64> {
    let mut pipe = redis::pipe();
    for w in WORKERS {
        pipe.cmd("ZCARD").arg(format!("bull:{w}:completed"));
    }
    pipe.query(con).unwrap_or_else(|_| vec![0; WORKERS.len()])
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The Docker Engine's `kill` events for workers (nanoseconds since the epoch), read
/// from `docker events` in the background.
struct Kills(Arc<Mutex<Vec<i64>>>, std::process::Child);

impl Kills {
    fn watch() -> Kills {
        let mut child = Command::new("docker")
            .args([
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=kill",
                "--format",
                "{{.TimeNano}} {{.Actor.Attributes.name}}",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker events");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("its output");
        let record = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((time, name)) = line.split_once(' ')
                    && name.starts_with("fiskai-worker-")
                    && let Ok(time) = time.parse::<i64>()
                {
                    record.lock().unwrap().push(time);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300)); // subscribed before anything acts
        Kills(seen, child)
    }

    /// The first worker stopped since `since`.
    fn first_since(&self, since: i64) -> i64 {
        let seen = self.0.lock().unwrap();
        *seen
            .iter()
            .filter(|t| **t >= since)
            .min()
            .expect("no worker was stopped: the Engine sent no kill event")
    }
}

impl Drop for Kills {
    fn drop(&mut self) {
        let _ = self.1.kill();
    }
}

/// Runs one cutover (`act`), and returns the downtime in seconds: the first worker's
/// `kill` event -> every queue's completed count on the target past what it was.
fn downtime(kills: &Kills, target: &mut redis::Connection, act: impl FnOnce()) -> f64 {
    let baseline = completed(target);
    let started = now_ns();
    act();
    all_consuming(target, &baseline);
    let consuming = now_ns();
    (consuming - kills.first_since(started)) as f64 / 1e9
}

/// Waits until every queue's completed count on the target passed `baseline`.
fn all_consuming(con: &mut redis::Connection, baseline: &[u64]) {
    let start = Instant::now();
    loop {
        let now = completed(con);
        if now.iter().zip(baseline).all(|(n, b)| n > b) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "workers never consumed from the target"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn redis_move(runbook: &Path, state: &Path) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("redis-move"))
        .args(["run", "--yes", "--no-progress", "--state-dir"])
        .arg(state)
        .arg(runbook)
        .output()
        .expect("redis-move runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn switch_runbook(dir: &Path, name: &str, url: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "version: 1\nname: {name}\ntargets:\n  local: {{ docker: {{}} }}\nphases:\n  - id: cutover\n    steps:\n      - {{ id: switch, docker.recreate: {{ target: local, name: \"^fiskai-worker-\", env: {{ REDIS_URL: \"{url}\" }}, timeout: 10s }} }}\n"
        ),
    )
    .unwrap();
    path
}

fn compose(dir: &Path, url: &str, args: &[&str]) {
    let out = Command::new("docker-compose")
        .current_dir(dir)
        .env("REDIS_URL", url)
        .args(["-p", "fiskaibench"])
        .args(args)
        .output()
        .expect("docker-compose runs (apt-get install docker-compose)");
    assert!(
        out.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and a benchmark is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/cutover.rs: a benchmark; run it with scripts/bench-cutover");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let Some(engine) = runtime.block_on(redis_move_testbed::docker::engine()) else {
        eprintln!("bench-cutover: needs a Docker Engine");
        std::process::exit(2);
    };
    runtime.block_on(sandbox::up(
        &engine,
        &Options {
            jobs: 14_000,
            ..Options::default()
        },
    ));
    // The new Redis, full of waiting jobs so that every worker has work there.
    let _ = Command::new("docker").args(["rm", "-f", TARGET]).output();
    docker_cli(&[
        "run",
        "-d",
        "--name",
        TARGET,
        "--label",
        sandbox::LABEL,
        "--network",
        sandbox::NETWORK,
        "-p",
        &format!("127.0.0.1:{TARGET_PORT}:6379"),
        sandbox::REDIS_IMAGE,
        "/usr/bin/redis-server",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let mut target =
        redis_move_testbed::dataset::connect(&format!("redis://127.0.0.1:{TARGET_PORT}"));
    for w in WORKERS {
        let ids: Vec<u32> = (0..100_000).collect();
        let _: () = redis::cmd("RPUSH")
            .arg(format!("bull:{w}:wait"))
            .arg(&ids)
            .query(&mut target)
            .unwrap();
    }
    let old = "redis://fiskai-redis:6379";
    let new = format!("redis://{TARGET}:6379");
    let work = tempfile::tempdir().unwrap();
    let forward = switch_runbook(work.path(), "forward", &new);
    let back = switch_runbook(work.path(), "back", old);

    let kills = Kills::watch();
    let mut ours = Vec::new();
    for run in 1..=runs {
        let state = work.path().join(format!("state-f{run}"));
        ours.push(downtime(&kills, &mut target, || {
            redis_move(&forward, &state)
        }));
        println!("redis-move {run}/{runs}: {:.2} s", ours.last().unwrap());
        redis_move(&back, &work.path().join(format!("state-b{run}")));
    }

    // A hand-written docker CLI script, on the same workers.
    let script = work.path().join("cutover.sh");
    std::fs::write(&script, cli_script()).unwrap();
    let by_hand = |url: &str| {
        let out = Command::new("bash")
            .arg(&script)
            .arg(url)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "the docker CLI script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut cli = Vec::new();
    for run in 1..=runs {
        cli.push(downtime(&kills, &mut target, || by_hand(&new)));
        println!("docker-cli {run}/{runs}: {:.2} s", cli.last().unwrap());
        by_hand(old);
    }

    // The floor: the same operations through the Engine API, nothing else.
    let mut floor = Vec::new();
    for run in 1..=runs {
        floor.push(downtime(&kills, &mut target, || {
            runtime.block_on(engine_api_cutover(&engine, &new));
        }));
        println!(
            "Engine API floor {run}/{runs}: {:.2} s",
            floor.last().unwrap()
        );
        runtime.block_on(engine_api_cutover(&engine, old));
    }

    // The seed's way: the same 14 workers as a compose project.
    for w in WORKERS {
        let _ = Command::new("docker")
            .args(["rm", "-f", &sandbox::worker_name(w)])
            .output();
    }
    let mut file = format!(
        "version: \"2.4\"\nnetworks:\n  default:\n    external: true\n    name: {}\nservices:\n",
        sandbox::NETWORK
    );
    for w in WORKERS {
        file.push_str(&format!(
            "  {w}:\n    image: {}\n    container_name: {}\n    init: true\n    command: /usr/local/bin/worker\n    labels: [\"{}\"]\n    environment:\n      REDIS_URL: ${{REDIS_URL}}\n      QUEUE: bull:{w}\n      WORKER_NAME: {}\n      JOB_MS: \"20\"\n",
            sandbox::WORKER_IMAGE,
            sandbox::worker_name(w),
            sandbox::LABEL,
            sandbox::worker_name(w)
        ));
    }
    std::fs::write(work.path().join("docker-compose.yml"), file).unwrap();
    let mut theirs = Vec::new();
    compose(work.path(), old, &["up", "-d"]);
    for run in 1..=runs {
        theirs.push(downtime(&kills, &mut target, || {
            compose(work.path(), old, &["down"]);
            compose(work.path(), &new, &["up", "-d"]);
        }));
        println!("compose {run}/{runs}: {:.2} s", theirs.last().unwrap());
        compose(work.path(), &new, &["down"]);
        compose(work.path(), old, &["up", "-d"]);
    }
    compose(work.path(), old, &["down"]);
    sandbox::down();
    let (a, b, c, f) = (median(ours), median(theirs), median(cli), median(floor));
    println!(
        "floor: the Engine API alone {f:.2} s; redis-move spends {:.2} s more",
        a - f
    );
    println!(
        "cutover: redis-move {a:.2} s, compose {b:.2} s, docker-cli {c:.2} s, ratio {:.2}",
        a / b.min(c)
    );
}

/// The cutover an operator would script by hand with the docker CLI: `$1` is the new
/// REDIS_URL.
fn cli_script() -> String {
    let names: Vec<String> = WORKERS.iter().map(|w| sandbox::worker_name(w)).collect();
    let mut script = format!(
        "#!/usr/bin/env bash\nset -euo pipefail\nurl=$1\ndocker stop -t 10 {names} >/dev/null\ndocker rm {names} >/dev/null\n",
        names = names.join(" ")
    );
    for (w, name) in WORKERS.iter().zip(&names) {
        script.push_str(&format!(
            "docker run -d --init --name {name} --label {label} --label app=fiskai-worker --network {network} --restart unless-stopped -e REDIS_URL=\"$url\" -e QUEUE=bull:{w} -e WORKER_NAME={name} -e JOB_MS=20 {image} /usr/local/bin/worker >/dev/null &\n",
            label = sandbox::LABEL,
            network = sandbox::NETWORK,
            image = sandbox::WORKER_IMAGE,
        ));
    }
    script.push_str("wait\n");
    script
}

/// The same cutover straight through the Engine API, every operation in parallel:
/// inspect, stop (10 s grace), remove, create with the new REDIS_URL, start.
async fn engine_api_cutover(engine: &bollard::Docker, url: &str) {
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
        StartContainerOptions, StopContainerOptionsBuilder,
    };
    use futures_util::future::join_all;
    let names: Vec<String> = WORKERS.iter().map(|w| sandbox::worker_name(w)).collect();
    let inspected = join_all(
        names
            .iter()
            .map(|n| engine.inspect_container(n, None::<InspectContainerOptions>)),
    )
    .await;
    let stop = StopContainerOptionsBuilder::default().t(10).build();
    join_all(
        names
            .iter()
            .map(|n| engine.stop_container(n, Some(stop.clone()))),
    )
    .await;
    let remove = RemoveContainerOptionsBuilder::default().build();
    join_all(
        names
            .iter()
            .map(|n| engine.remove_container(n, Some(remove.clone()))),
    )
    .await;
    let created = join_all(names.iter().zip(inspected).map(|(name, found)| {
        let found = found.expect("inspect a worker");
        let mut body: bollard::models::ContainerCreateBody = serde_json::from_value(
            serde_json::to_value(found.config.expect("its config")).unwrap(),
        )
        .unwrap();
        body.host_config = found.host_config;
        body.env = body.env.map(|env| {
            env.into_iter()
                .map(|e| {
                    if e.starts_with("REDIS_URL=") {
                        format!("REDIS_URL={url}")
                    } else {
                        e
                    }
                })
                .collect()
        });
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        engine.create_container(Some(options), body)
    }))
    .await;
    for c in created {
        c.expect("create a worker");
    }
    for started in join_all(
        names
            .iter()
            .map(|n| engine.start_container(n, None::<StartContainerOptions>)),
    )
    .await
    {
        started.expect("start a worker");
    }
}
