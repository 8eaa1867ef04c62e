//! `scripts/bench-cutover` (`cargo bench --bench cutover`): the workers' downtime during
//! the cutover, redis-move against the seed's own way, on the 14 sandbox workers in the
//! same run. Downtime: the first worker stopped -> all 14 running with the new REDIS_URL
//! and consuming from the new Redis (each queue's completed count grows there).
//!   - redis-move: `docker.recreate` of `^fiskai-worker-` with the new REDIS_URL (stops
//!     in parallel with a grace period, keeps every other setting, starts);
//!   - compose: `docker-compose down`, then `up -d` with the new REDIS_URL (seed 001).
//!
//! Median of 5 each (`BENCH_RUNS`). Ends with the line
//! `cutover: redis-move A s, compose B s, ratio R` (target R <= 0.7).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

    let mut ours = Vec::new();
    for run in 1..=runs {
        let baseline = completed(&mut target);
        let start = Instant::now();
        redis_move(&forward, &work.path().join(format!("state-f{run}")));
        all_consuming(&mut target, &baseline);
        ours.push(start.elapsed().as_secs_f64());
        println!("redis-move {run}/{runs}: {:.2} s", ours.last().unwrap());
        redis_move(&back, &work.path().join(format!("state-b{run}")));
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
        let baseline = completed(&mut target);
        let start = Instant::now();
        compose(work.path(), old, &["down"]);
        compose(work.path(), &new, &["up", "-d"]);
        all_consuming(&mut target, &baseline);
        theirs.push(start.elapsed().as_secs_f64());
        println!("compose {run}/{runs}: {:.2} s", theirs.last().unwrap());
        compose(work.path(), &new, &["down"]);
        compose(work.path(), old, &["up", "-d"]);
    }
    compose(work.path(), old, &["down"]);
    sandbox::down();
    let (a, b) = (median(ours), median(theirs));
    println!(
        "cutover: redis-move {a:.2} s, compose {b:.2} s, ratio {:.2}",
        a / b
    );
}
