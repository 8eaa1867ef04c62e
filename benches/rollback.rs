//! `scripts/bench-rollback` (`cargo bench --bench rollback`): the rollback scenario of the
//! fault-injection tests, ten times, with 14 workers and a producer enqueueing 200 jobs
//! a second through everything: a replicated cutover with reverse replication and a
//! drained promote, the target killed during the watch. Ends with the line
//! `rollback: detect median A s max B s; rollback median C s max D s; jobs lost N; in flight M`
//! (detection: kill -> trigger fired; rollback: fired -> every worker has finished a job
//! on the source again; lost: acknowledged jobs not queued, active or completed on the
//! source at the end; in flight: jobs acknowledged between the kill and the workers'
//! return). Targets: detection <= probe interval (1 s) + 1 s, rollback < 10 s, 0 jobs
//! lost. `BENCH_RUNS` and `BENCH_WORKERS` change the defaults (10, 14).

use std::time::Duration;

use redis_move_testbed::{docker, scenario};

fn median_and_max(mut values: Vec<Duration>) -> (f64, f64) {
    values.sort();
    let median = values[values.len() / 2].as_secs_f64();
    let max = values.last().map_or(0.0, Duration::as_secs_f64);
    (median, max)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and a benchmark is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/rollback.rs: a benchmark; run it with scripts/bench-rollback");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(14);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let Some(engine) = docker::engine().await else {
            eprintln!("bench-rollback: needs a Docker Engine");
            std::process::exit(2);
        };
        let (mut detections, mut rollbacks, mut lost, mut in_flight) =
            (Vec::new(), Vec::new(), 0, 0);
        let (mut acknowledged, mut rejected) = (0, 0);
        for run in 1..=runs {
            let s = scenario::target_killed_during_the_watch(&engine, workers).await;
            if s.exit_code != 3 {
                eprintln!("run {run}: exit {} instead of 3\n{}", s.exit_code, s.stderr);
                std::process::exit(1);
            }
            println!(
                "run {run}/{runs}: detected in {:.2} s, all {workers} workers back on the source {:.2} s later; {} jobs acknowledged and confirmed on a replica ({} while the target was down), {} writes refused, {} unconfirmed, {} lost",
                s.detection.as_secs_f64(),
                s.rollback.as_secs_f64(),
                s.acknowledged,
                s.in_flight,
                s.rejected,
                s.unconfirmed,
                s.lost
            );
            if run == 1 {
                // Where the rollback spends its time, from the journal.
                let journal = s.workspace.journal().unwrap_or_default();
                let fired: Option<jiff::Timestamp> = journal["triggers"][0]["at"]
                    .as_str()
                    .and_then(|t| t.parse().ok());
                for record in journal["rollback"].as_array().into_iter().flatten() {
                    let at: Option<jiff::Timestamp> =
                        record["at"].as_str().and_then(|t| t.parse().ok());
                    if let (Some(fired), Some(at)) = (fired, at) {
                        println!(
                            "  +{:.2} s  {} {} ({})",
                            at.duration_since(fired).as_secs_f64(),
                            record["status"].as_str().unwrap_or(""),
                            record["step"].as_str().unwrap_or(""),
                            record["operation"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            detections.push(s.detection);
            rollbacks.push(s.rollback);
            lost += s.lost;
            in_flight += s.in_flight;
            acknowledged += s.acknowledged;
            rejected += s.rejected;
        }
        let (detect_median, detect_max) = median_and_max(detections);
        let (rollback_median, rollback_max) = median_and_max(rollbacks);
        println!(
            "targets: detection {:.2} of 2 s (max), rollback {:.2} of 10 s (max)",
            detect_max / 2.0,
            rollback_max / 10.0
        );
        println!(
            "producer: {acknowledged} jobs acknowledged, {rejected} writes refused (READONLY/NOREPLICAS/unreachable), over {runs} runs"
        );
        println!(
            "rollback: detect median {detect_median:.2} s max {detect_max:.2} s; rollback median {rollback_median:.2} s max {rollback_max:.2} s; jobs lost {lost}; in flight {in_flight}"
        );
    });
}
